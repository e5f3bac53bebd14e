// Drives the Vercel AI SDK's own chat transports (the `ai` package, pinned
// in package-lock.json) against real weir processes, for
// tests/tests/ai_sdk.rs. Usage:
//
//   node transports.mjs SCENARIO http://A [http://B]
//
// B is a second node on the same store (two-node scenarios). Prints `ok
// SCENARIO` and exits 0, or prints what went wrong and exits 1.

import { WebSocketChatTransport, DefaultChatTransport } from "ai";
import WebSocket from "ws";

const [scenario, baseA, baseB = baseA] = process.argv.slice(2);
const wsUrl = (base) => base.replace(/^http/, "ws") + "/v1/ai-sdk/ws";
const apiUrl = (base) => base + "/v1/ai-sdk/chat";
let chatSerial = 0;
const newChat = (what) => `ai-${what}-${process.pid}-${Date.now()}-${chatSerial++}`;

function fail(message) {
  throw new Error(message);
}
function assertEq(actual, expected, what) {
  if (actual !== expected) {
    fail(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function userMessage(text) {
  return { id: `u-${Date.now()}-${Math.random().toString(36).slice(2)}`, role: "user", parts: [{ type: "text", text }] };
}

function wsTransport(base) {
  return new WebSocketChatTransport({ url: wsUrl(base), webSocket: WebSocket });
}
function httpTransport(base) {
  return new DefaultChatTransport({ api: apiUrl(base) });
}

async function send(transport, chatId, text, abortSignal) {
  return transport.sendMessages({
    chatId,
    messages: [userMessage(text)],
    trigger: "submit-message",
    messageId: undefined,
    abortSignal,
  });
}

/// Reads UI chunks; `until(chunk, chunks)` may stop early (the reader is
/// released, the stream left open).
async function read(stream, until = () => false) {
  const chunks = [];
  const reader = stream.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    chunks.push(value);
    if (until(value, chunks)) break;
  }
  reader.releaseLock();
  return chunks;
}
const textOf = (chunks) =>
  chunks.filter((c) => c.type === "text-delta").map((c) => c.delta).join("");
const deltas = (chunks) => chunks.filter((c) => c.type === "text-delta").length;

/// The chat's messages as weir's HTTP API holds them (as the user of
/// `headers`' token, if any).
async function history(base, chatId, headers = {}) {
  const r = await fetch(`${base}/v1/sessions/${chatId}/messages`, { headers });
  assertEq(r.status, 200, "history status");
  return (await r.json()).messages;
}
async function lastReply(base, chatId, settled = true, headers = {}) {
  for (let i = 0; i < 200; i++) {
    const m = (await history(base, chatId, headers)).filter((m) => m.role === "assistant").at(-1);
    if (m && (!settled || m.status !== "streaming")) return m;
    await sleep(50);
  }
  fail(`no settled reply in ${chatId}`);
}

/// A raw client of the socket protocol, for what the SDK's class hides
/// (lastSequence, the frames after an abort, bad frames).
class RawSocket {
  static async open(base, query = "") {
    const s = new RawSocket();
    s.ws = new WebSocket(wsUrl(base) + query);
    s.frames = [];
    s.waiters = [];
    s.ws.on("message", (data) => {
      s.frames.push(JSON.parse(data.toString()));
      for (const w of s.waiters.splice(0)) w();
    });
    await new Promise((ok, err) => {
      s.ws.once("open", ok);
      s.ws.once("error", err);
    });
    return s;
  }
  send(frame) {
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }
  /// Waits until `pred(frames)` holds (10 s at most).
  async until(pred, what) {
    const deadline = Date.now() + 10_000;
    while (!pred(this.frames)) {
      if (Date.now() > deadline) fail(`raw socket: timed out waiting for ${what}; frames: ${JSON.stringify(this.frames.slice(-5))}`);
      await new Promise((r) => {
        this.waiters.push(r);
        setTimeout(r, 100);
      });
    }
  }
  of(requestId) {
    return this.frames.filter((f) => f.requestId === requestId);
  }
  close() {
    this.ws.close();
  }
}

const scenarios = {
  // A reply streams over the socket and assembles to the text weir holds.
  async ws_reply_assembles() {
    const t = wsTransport(baseA);
    const chat = newChat("ws");
    const chunks = await read(await send(t, chat, "hello over the socket"));
    const reply = await lastReply(baseA, chat);
    assertEq(chunks[0].type, "start", "first chunk");
    assertEq(chunks[0].messageId, reply.message_id, "start.messageId");
    assertEq(chunks.at(-1).type, "finish", "last chunk");
    assertEq(reply.status, "completed", "history status");
    assertEq(textOf(chunks), reply.content, "assembled text");
    t.close();
  },

  // The SDK's stop (its abort signal) is weir's fenced cancel; a raw
  // client sees no text-delta after the request's end, and its text is
  // exactly what history holds.
  async ws_stop_fences() {
    const t = wsTransport(baseA);
    const chat = newChat("stop");
    const abort = new AbortController();
    const stream = await send(t, chat, "stop me", abort.signal);
    const got = await read(stream, (_, all) => deltas(all) >= 3);
    abort.abort();
    const reply = await lastReply(baseA, chat);
    assertEq(reply.status, "cancelled", "history status after the SDK's stop");
    if (!reply.content.startsWith(textOf(got))) fail("history does not begin with what was read");
    t.close();

    const raw = await RawSocket.open(baseA);
    const chat2 = newChat("stop-raw");
    raw.send({ type: "send", requestId: "r1", id: chat2, trigger: "submit-message", messages: [userMessage("stop me raw")], headers: {}, body: {} });
    await raw.until((f) => f.filter((x) => x.requestId === "r1" && x.type === "chunk" && x.chunk.type === "text-delta").length >= 3, "3 deltas");
    raw.send({ type: "abort", requestId: "r1" });
    await raw.until((f) => f.some((x) => x.requestId === "r1" && x.type === "end"), "end");
    const frames = raw.of("r1");
    const end = frames.findIndex((x) => x.type === "end");
    assertEq(end, frames.length - 1, "end is the request's last frame");
    const ui = frames.filter((x) => x.type === "chunk").map((x) => x.chunk);
    assertEq(ui.at(-1).type, "abort", "last UI chunk");
    const seqs = frames.filter((x) => x.type === "chunk").map((x) => x.sequence);
    seqs.forEach((s, i) => assertEq(s, i, "sequence without gaps"));
    const r2 = await lastReply(baseA, chat2);
    assertEq(r2.status, "cancelled", "history status");
    assertEq(textOf(ui), r2.content, "text up to the fence");
    await sleep(300);
    assertEq(raw.of("r1").length, frames.length, "nothing after end");
    raw.close();
  },

  // reconnectToStream: null when idle; mid-reply, from a fresh transport,
  // the whole reply (the SDK sends no lastSequence); with a remembered
  // lastSequence (raw), exactly the chunks after it.
  async ws_resume_exact() {
    const chat = newChat("resume");
    const idle = await wsTransport(baseA).reconnectToStream({ chatId: chat });
    assertEq(idle, null, "reconnect when idle");
    const producer = wsTransport(baseA);
    const first = await read(await send(producer, chat, "resume me"), (_, all) => deltas(all) >= 5);
    const fresh = wsTransport(baseB);
    const resumed = await fresh.reconnectToStream({ chatId: chat });
    if (resumed == null) fail("reconnect mid-reply returned null");
    const raw = await RawSocket.open(baseB);
    const after = 4; // the client has start, text-start and deltas 1..=2
    raw.send({ type: "resume", requestId: "q1", id: chat, lastSequence: after, headers: {}, body: {} });
    const all = await read(resumed);
    const reply = await lastReply(baseA, chat);
    assertEq(reply.status, "completed", "history status");
    assertEq(textOf(all), reply.content, "resumed from a fresh transport: whole text");
    assertEq(all[0].type, "start", "a resume without lastSequence starts at 0");
    await raw.until((f) => f.some((x) => x.requestId === "q1" && x.type === "end"), "raw resume end");
    const frames = raw.of("q1").filter((x) => x.type === "chunk");
    assertEq(raw.of("q1")[0].type, "start", "resume found a streaming reply");
    frames.forEach((f, i) => assertEq(f.sequence, after + 1 + i, "sequence after lastSequence"));
    const before = all.slice(0, after + 1);
    assertEq(textOf(before) + textOf(frames.map((f) => f.chunk)), reply.content, "remainder is exact");
    void first;
    producer.close();
    fresh.close();
    raw.close();
  },

  // Two chats on one socket, interleaved.
  async ws_two_chats_one_socket() {
    const t = wsTransport(baseA);
    const [a, b] = [newChat("two-a"), newChat("two-b")];
    const [ca, cb] = await Promise.all([
      send(t, a, "first chat").then((s) => read(s)),
      send(t, b, "second chat").then((s) => read(s)),
    ]);
    assertEq(textOf(ca), (await lastReply(baseA, a)).content, "chat a");
    assertEq(textOf(cb), (await lastReply(baseA, b)).content, "chat b");
    t.close();
  },

  // A send into a chat with a streaming reply fails (busy); the first
  // reply is untouched.
  async ws_busy() {
    const t = wsTransport(baseA);
    const chat = newChat("busy");
    const firstStream = await send(t, chat, "first");
    const head = await read(firstStream, (_, all) => deltas(all) >= 2);
    let busy = null;
    try {
      await read(await send(t, chat, "second"));
    } catch (e) {
      busy = e;
    }
    if (busy == null) fail("the second send did not fail");
    if (!/stream/i.test(busy.message)) fail(`busy error says: ${busy.message}`);
    const rest = await read(firstStream);
    const reply = await lastReply(baseA, chat);
    assertEq(reply.status, "completed", "first reply status");
    assertEq(textOf(head) + textOf(rest), reply.content, "first reply text");
    t.close();
  },

  // Bad frames get `error` for their requestId; the socket stays usable.
  async ws_bad_frames() {
    const raw = await RawSocket.open(baseA);
    raw.send("not json");
    raw.send({ type: "launch", requestId: "b1" });
    raw.send({ type: "send", requestId: "b2", id: "bad id!", messages: [], headers: {}, body: {} });
    raw.send({ type: "send", requestId: "b3", id: newChat("regen"), trigger: "regenerate-message", messageId: "m", messages: [userMessage("x")], headers: {}, body: {} });
    await raw.until((f) => ["b1", "b2", "b3"].every((r) => f.some((x) => x.requestId === r && x.type === "error")), "errors");
    const chat = newChat("after-bad");
    raw.send({ type: "send", requestId: "g1", id: chat, trigger: "submit-message", messages: [userMessage("still works")], headers: {}, body: {} });
    await raw.until((f) => f.some((x) => x.requestId === "g1" && x.type === "end"), "good request end");
    const text = textOf(raw.of("g1").filter((x) => x.type === "chunk").map((x) => x.chunk));
    assertEq(text, (await lastReply(baseA, chat)).content, "text after bad frames");
    raw.close();
  },

  // The HTTP transport: a POST answered with the event stream.
  async http_reply_assembles() {
    const t = httpTransport(baseA);
    const chat = newChat("http");
    const chunks = await read(await send(t, chat, "hello over http"));
    const reply = await lastReply(baseA, chat);
    assertEq(chunks.at(-1).type, "finish", "last chunk");
    assertEq(textOf(chunks), reply.content, "assembled text");
  },

  // Resume over HTTP: null (204) when idle; the whole reply from a fresh
  // transport; exactly the events after Last-Event-ID; on node B.
  async http_resume_exact() {
    const chat = newChat("http-resume");
    assertEq(await httpTransport(baseB).reconnectToStream({ chatId: chat }), null, "reconnect when idle");
    const first = await send(httpTransport(baseA), chat, "resume me over http");
    const head = await read(first, (_, all) => deltas(all) >= 5);
    const whole = await read(await httpTransport(baseB).reconnectToStream({ chatId: chat }));
    const reply = await lastReply(baseA, chat);
    assertEq(textOf(whole), reply.content, "resume from a fresh transport");
    void head;
    // Settled now: nothing streams.
    const r = await fetch(`${apiUrl(baseB)}/${chat}/stream`, { headers: { "Last-Event-ID": "3" } });
    assertEq(r.status, 204, "resume after the end");
  },

  // Last-Event-ID: exactly the events after it, mid-reply, on node B.
  async http_last_event_id() {
    const chat = newChat("http-leid");
    const first = await send(httpTransport(baseA), chat, "exact over http");
    await read(first, (_, all) => deltas(all) >= 3);
    const r = await fetch(`${apiUrl(baseB)}/${chat}/stream`, { headers: { "Last-Event-ID": "4" } });
    assertEq(r.status, 200, "resume status");
    assertEq(r.headers.get("x-vercel-ai-ui-message-stream"), "v1", "stream header");
    const text = await r.text();
    const ids = [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
    ids.forEach((id, i) => assertEq(id, 5 + i, "event ids after Last-Event-ID"));
    if (!text.trimEnd().endsWith("data: [DONE]")) fail("stream does not end with [DONE]");
    const events = [...text.matchAll(/^data: (\{.*\})$/gm)].map((m) => JSON.parse(m[1]));
    const reply = await lastReply(baseA, chat);
    // Deltas 1..=3 are sequences 2..=4.
    const head = reply.content.length - textOf(events).length;
    if (head < 0 || !reply.content.endsWith(textOf(events))) fail("remainder is not the reply's tail");
  },

  // The stop route is the fenced cancel, whichever node it reaches.
  async http_stop_on_other_node() {
    const chat = newChat("http-stop");
    const stream = await send(httpTransport(baseA), chat, "stop me over http");
    const head = await read(stream, (_, all) => deltas(all) >= 3);
    const r = await fetch(`${apiUrl(baseB)}/${chat}/stop`, { method: "POST" });
    assertEq(r.status, 200, "stop status");
    const body = await r.json();
    assertEq(body.status, "cancelled", "stop answer");
    const rest = await read(stream);
    const reply = await lastReply(baseA, chat);
    assertEq(reply.status, "cancelled", "history status");
    assertEq(textOf(head) + textOf(rest), reply.content, "no text after the fence");
    assertEq(rest.at(-1).type, "abort", "last chunk");
  },

  // Under token auth (tokens of users A and B in WEIR_TEST_TOKEN_A and
  // _B), B's chat of the same id as A's is another conversation: B's resume
  // is null (HTTP: 204; socket: no-active), B's stop stops nothing of A's,
  // B's send is not busy (it starts B's own reply), and A's reply completes
  // with its full text.
  async other_users_chat() {
    const [tokenA, tokenB] = [process.env.WEIR_TEST_TOKEN_A, process.env.WEIR_TEST_TOKEN_B];
    if (!tokenA || !tokenB) fail("WEIR_TEST_TOKEN_A and WEIR_TEST_TOKEN_B are needed");
    const auth = (token) => ({ Authorization: `Bearer ${token}` });
    const chat = newChat("owner");
    const a = new DefaultChatTransport({ api: apiUrl(baseA), headers: auth(tokenA) });
    const stream = await send(a, chat, "only mine");
    const head = await read(stream, (_, all) => deltas(all) >= 3);

    const bHttp = new DefaultChatTransport({ api: apiUrl(baseB), headers: auth(tokenB) });
    assertEq(await bHttp.reconnectToStream({ chatId: chat }), null, "B's reconnectToStream over HTTP");
    const resume = await fetch(`${apiUrl(baseB)}/${chat}/stream`, { headers: auth(tokenB) });
    assertEq(resume.status, 204, "B's resume status");
    const bWs = new WebSocketChatTransport({ url: wsUrl(baseB), webSocket: WebSocket, params: { token: tokenB } });
    assertEq(await bWs.reconnectToStream({ chatId: chat }), null, "B's reconnectToStream over the socket");
    const raw = await RawSocket.open(baseB, `?token=${tokenB}`);
    raw.send({ type: "resume", requestId: "q1", id: chat, headers: {}, body: {} });
    await raw.until((f) => f.some((x) => x.requestId === "q1"), "B's raw resume answer");
    assertEq(raw.of("q1")[0].type, "no-active", "B's raw resume");
    raw.close();

    const stop = await fetch(`${apiUrl(baseB)}/${chat}/stop`, { method: "POST", headers: auth(tokenB) });
    const stopBody = await stop.text();
    if (stop.status === 200 && JSON.parse(stopBody).status === "cancelled") fail(`B's stop cancelled something: ${stopBody}`);

    // B's send into "the same" chat is B's own conversation: not busy.
    const own = await read(await send(bWs, chat, "mine too"));
    assertEq(own.at(-1).type, "finish", "B's own reply");
    const bReply = await lastReply(baseB, chat, true, auth(tokenB));
    assertEq(textOf(own), bReply.content, "B's own reply text");
    bWs.close();

    const rest = await read(stream);
    assertEq(rest.at(-1).type, "finish", "A's reply ends with finish, not abort");
    const reply = await lastReply(baseA, chat, true, auth(tokenA));
    assertEq(reply.status, "completed", "A's reply status");
    assertEq(textOf(head) + textOf(rest), reply.content, "A's full text");
    if (reply.content === bReply.content) fail("A and B got the same reply");
    const aMessages = (await history(baseA, chat, auth(tokenA))).map((m) => m.content);
    if (aMessages.includes("mine too")) fail("B's turn is in A's conversation");
  },

  // A busy chat answers the POST with 409.
  async http_busy() {
    const chat = newChat("http-busy");
    const first = await send(httpTransport(baseA), chat, "first");
    await read(first, (_, all) => deltas(all) >= 1);
    const r = await fetch(apiUrl(baseA), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ id: chat, messages: [userMessage("second")], trigger: "submit-message" }),
    });
    assertEq(r.status, 409, "busy status");
    await read(first);
    assertEq((await lastReply(baseA, chat)).status, "completed", "first reply");
  },
};

const run = scenarios[scenario];
if (!run) {
  console.error(`unknown scenario ${scenario}; known: ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
const timer = setTimeout(() => {
  console.error(`${scenario}: gave up after 60 s`);
  process.exit(1);
}, 60_000);
try {
  await run();
  clearTimeout(timer);
  console.log(`ok ${scenario}`);
  process.exit(0);
} catch (e) {
  console.error(`FAILED ${scenario}: ${e.stack ?? e}`);
  process.exit(1);
}
