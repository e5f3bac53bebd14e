import { useChat } from "@ai-sdk/react";
import { useEffect, useMemo, useRef, useState } from "react";
import { TRANSPORT, loadMessages, makeTransport, stopReply, urlWithTransport } from "./weir.js";

/** Loads the chat's history, then shows it with useChat. */
export function App({ chatId }) {
  const [history, setHistory] = useState(null);
  const [loadError, setLoadError] = useState(null);
  useEffect(() => {
    loadMessages(chatId).then(setHistory, setLoadError);
  }, [chatId]);

  return (
    <>
      <header>
        <h1>useChat on weir</h1>
        <nav>
          {[["ws", "WebSocket"], ["http", "HTTP"]].map(([t, label]) =>
            t === TRANSPORT ? <b key={t}> {label} </b> : <a key={t} href={urlWithTransport(t)}> {label} </a>,
          )}
        </nav>
      </header>
      {loadError ? (
        <p role="alert">Could not load the chat: {loadError.message}</p>
      ) : history ? (
        <Chat chatId={chatId} history={history} />
      ) : (
        <p>Loading…</p>
      )}
    </>
  );
}

const textOf = (message) => message.parts.map((p) => (p.type === "text" ? p.text : "")).join("");

function Chat({ chatId, history }) {
  const transport = useMemo(makeTransport, []);
  // The replies that ended with `finish` on this page (the others carry weir's status).
  const [completed, setCompleted] = useState({});
  const { messages, setMessages, sendMessage, resumeStream, stop, status, error } = useChat({
    id: chatId,
    transport,
    messages: history,
    // On mount: a reply still streaming is replayed from its start (replacing the text the history
    // had), then goes on live, whichever node serves it.
    resume: true,
    onFinish: ({ message, finishReason, isAbort }) => {
      if (finishReason === "stop") setCompleted((c) => ({ ...c, [message.id]: true }));
      // Ended without `finish`: stopped (weir sent `abort`), failed, or its stream was cut
      // (weir closes a response that cannot keep up). weir's history says which.
      else if (!isAbort) settle(message.id);
    },
  });

  // A resume of a reply the history showed streaming is under way.
  const resuming = useRef(history.some((m) => m.metadata?.status === "streaming"));
  // Shows weir's history; a reply that is still streaming there is resumed.
  async function settle(id) {
    const fresh = await loadMessages(chatId).catch(() => null);
    if (!fresh) return;
    resuming.current = fresh.some((m) => m.id === id && m.metadata.status === "streaming");
    if (resuming.current) resumeStream();
    else setMessages(fresh);
  }
  // That reply ended before the resume reached weir (nothing to resume): show the history again.
  transport.onNothingToResume = () => resuming.current && settle(null);

  const busy = status === "submitted" || status === "streaming";
  const statusOf = (m, i) =>
    m.role !== "assistant"
      ? undefined
      : busy && i === messages.length - 1
        ? "streaming"
        : completed[m.id]
          ? "completed"
          : m.metadata?.status;

  async function onStop() {
    // weir's fenced stop; the reply's stream then ends by itself. If weir had nothing to stop
    // yet (or is out of reach), at least stop reading.
    if (!(await stopReply(chatId))) stop();
  }

  function onSubmit(event) {
    event.preventDefault();
    const input = event.currentTarget.elements.text;
    if (input.value.trim() === "") return;
    sendMessage({ text: input.value });
    input.value = "";
  }

  return (
    <main data-status={status}>
      <ol>
        {messages.map((m, i) => (
          <li key={m.id} data-id={m.id} data-role={m.role} data-status={statusOf(m, i)}>
            {textOf(m)}
          </li>
        ))}
      </ol>
      {error && <p role="alert">{error.message}</p>}
      <form onSubmit={onSubmit}>
        <input name="text" placeholder="Ask something" autoComplete="off" disabled={busy} />
        {busy ? (
          <button type="button" onClick={onStop}>
            Stop
          </button>
        ) : (
          <button type="submit">Send</button>
        )}
      </form>
    </main>
  );
}
