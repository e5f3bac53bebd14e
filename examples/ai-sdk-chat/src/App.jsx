import { useChat } from "@ai-sdk/react";
import { useEffect, useMemo, useState } from "react";
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
  // How each reply that ended on this page ended (replies from the history carry their status).
  const [ended, setEnded] = useState({});
  const { messages, setMessages, sendMessage, stop, status, error } = useChat({
    id: chatId,
    transport,
    messages: history,
    // On mount: a reply still streaming is replayed from its start (replacing the text the history
    // had), then goes on live, whichever node serves it.
    resume: true,
    // weir ends a completed reply with `finish` ("stop"), a stopped one with `abort` (no finishReason).
    onFinish: ({ message, finishReason, isError }) =>
      setEnded((e) => ({ ...e, [message.id]: finishReason === "stop" ? "completed" : isError ? "failed" : "cancelled" })),
  });
  // The history showed a reply streaming, but it ended before the resume reached weir: there is
  // nothing to resume, so load the history again for its final text.
  transport.onNothingToResume = () => {
    if (history.some((m) => m.metadata?.status === "streaming")) loadMessages(chatId).then(setMessages, () => {});
  };

  const busy = status === "submitted" || status === "streaming";
  const statusOf = (m, i) =>
    m.role !== "assistant" ? undefined : busy && i === messages.length - 1 ? "streaming" : (ended[m.id] ?? m.metadata?.status);

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
