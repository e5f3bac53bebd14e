// What the page needs from weir besides useChat: where weir is, which of the
// SDK's stock transports to use, the chat's history, and weir's stop route.
import { DefaultChatTransport, WebSocketChatTransport, generateId } from "ai";

const query = new URLSearchParams(location.search);

/** weir's base URL: `?weir=…`, else VITE_WEIR_URL at build time. Start weir with `--cors-origin` naming this page's origin. */
export const WEIR = (query.get("weir") || import.meta.env.VITE_WEIR_URL || "http://127.0.0.1:8080").replace(/\/+$/, "");

/** `?transport=http`: the SDK's DefaultChatTransport (POST + server-sent events); else its WebSocketChatTransport. */
export const TRANSPORT = query.get("transport") === "http" ? "http" : "ws";

// A weir token (`--auth token`); your app gets it from its login. Without one,
// weir under `--auth none` serves the user `anonymous`.
const TOKEN = query.get("token") || "";
const auth = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};

/** The chat `id` (weir's session_id) from `?chat=…`; a new chat's id goes into the URL, so a reload finds it again. */
export function chatIdFromUrl() {
  let id = query.get("chat");
  if (!id) {
    id = generateId();
    query.set("chat", id);
    history.replaceState(null, "", `?${query}`);
  }
  return id;
}

/** This page's URL with `?transport=` set to `transport` (the toggle). */
export function urlWithTransport(transport) {
  const q = new URLSearchParams(query);
  q.set("transport", transport);
  return `?${q}`;
}

/** The SDK's stock transport on weir; its `onNothingToResume` is called when useChat's resume finds no reply streaming. */
export function makeTransport() {
  const transport =
    TRANSPORT === "http"
      ? new DefaultChatTransport({ api: `${WEIR}/v1/ai-sdk/chat`, headers: auth })
      : new WebSocketChatTransport({ url: `${WEIR.replace(/^http/, "ws")}/v1/ai-sdk/ws`, params: TOKEN ? { token: TOKEN } : {} });
  const reconnect = transport.reconnectToStream.bind(transport);
  transport.reconnectToStream = async (options) => {
    const stream = await reconnect(options);
    if (stream == null) transport.onNothingToResume?.();
    return stream;
  };
  return transport;
}

/**
 * The chat so far, as useChat's messages (useChat loads no history itself).
 * A reply still streaming comes with the text it has so far (`metadata.status`
 * "streaming"): useChat's resume then replays it from its start and replaces it.
 */
export async function loadMessages(chatId) {
  const r = await fetch(`${WEIR}/v1/sessions/${encodeURIComponent(chatId)}/messages`, { headers: auth });
  if (!r.ok) throw new Error(`GET history: HTTP ${r.status}`);
  const { messages } = await r.json();
  return messages.map((m) => ({
    id: m.message_id,
    role: m.role,
    parts: [{ type: "text", text: m.content }],
    metadata: { status: m.status },
  }));
}

/**
 * weir's fenced stop (any node, either transport): weir cuts the reply and
 * ends its stream itself (`text-end`, `abort`), so the page ends on exactly
 * the text weir keeps. True when weir answered (200: cancelled, or already
 * completed or failed); false when nothing was streaming yet or weir is out
 * of reach.
 */
export async function stopReply(chatId) {
  try {
    const r = await fetch(`${WEIR}/v1/ai-sdk/chat/${encodeURIComponent(chatId)}/stop`, { method: "POST", headers: auth });
    return r.ok;
  } catch {
    return false;
  }
}
