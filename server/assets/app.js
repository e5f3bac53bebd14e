// weir web chat: plain JavaScript, no build step. Speaks protocol version 1
// (PROTOCOL.md) over /v1/ws.
//
// What it keeps per assistant reply: its element, its status and the last
// chunk seq it has shown. That seq is what makes reconnects exact: a dropped
// connection comes back with `resume=MESSAGE_ID:SEQ` and the server continues
// at SEQ + 1. The reply in flight (id, seq, text so far) is also kept in
// sessionStorage, so a reload of the page resumes it the same way.
"use strict";

(() => {
  const BACKOFF_BASE_MS = 250;
  const BACKOFF_CAP_MS = 10000;
  const CONNECT_TIMEOUT_MS = 10000;
  const SESSION_RE = /^[A-Za-z0-9_.:-]{1,128}$/;
  const FINAL = new Set(["completed", "cancelled", "failed", "unavailable"]);

  const $ = (id) => document.getElementById(id);
  const ui = {
    connForm: $("conn-form"),
    session: $("session"),
    user: $("user"),
    token: $("token"),
    connect: $("connect"),
    status: $("status"),
    banner: $("banner"),
    log: $("log"),
    note: $("note"),
    composer: $("composer"),
    input: $("input"),
    send: $("send"),
    cancel: $("cancel"),
    presence: $("presence"),
    node: $("node"),
  };

  // ----- connection state -----
  let ws = null;
  let gen = 0; // bumps on every new socket; events of older sockets are ignored
  let connState = "idle";
  let attempt = 0; // reconnect attempts since the last `hello`
  let everOpened = false;
  let retryTimer = null;
  let connectTimer = null;
  let heartbeatTimer = null;
  let heartbeatMs = 15000;
  let lastFrameAt = 0;
  let pingId = 0;
  let ident = null; // { session, user, token }
  let connResume = null; // { id, seq } asked for on the current socket

  // ----- conversation state -----
  const replies = new Map(); // message_id -> { id, el, text, lastSeq, status }
  const users = new Map(); // user message_id -> element
  const replyOfUser = new Map(); // user message_id -> reply message_id
  // Cancels without a cancel_result yet: request_id -> { id (message_id or
  // null), frame }. Sent again after a reconnect (a cancel is idempotent).
  const cancels = new Map();
  let live = null; // id of the reply in flight (not yet ended), for resume
  let pending = null; // chat sent, no `ack` yet: { requestId, clientMessageId, content, el, cancelling }
  let idCounter = 0;

  // ----- helpers -----
  function newId(prefix) {
    idCounter += 1;
    const rnd = Math.random().toString(36).slice(2, 10);
    return `${prefix}-${Date.now().toString(36)}-${idCounter}-${rnd}`;
  }

  function isFinal(status) {
    return FINAL.has(status);
  }

  function nearBottom() {
    const l = ui.log;
    return l.scrollHeight - l.scrollTop - l.clientHeight < 80;
  }

  function keepScrolled(wasNear) {
    if (wasNear) ui.log.scrollTop = ui.log.scrollHeight;
  }

  function setState(s) {
    connState = s;
    ui.status.textContent = s;
    ui.status.dataset.state = s;
    updateButtons();
  }

  function showBanner(text, isError) {
    ui.banner.textContent = text;
    ui.banner.classList.toggle("error", Boolean(isError));
    ui.banner.hidden = false;
  }

  function hideBanner() {
    ui.banner.hidden = true;
    ui.banner.textContent = "";
  }

  let noteTimer = null;
  function showNote(text) {
    ui.note.textContent = text;
    ui.note.hidden = false;
    clearTimeout(noteTimer);
    noteTimer = setTimeout(() => {
      ui.note.hidden = true;
    }, 8000);
  }

  function updateButtons() {
    ui.send.disabled = connState !== "open";
    const r = live && replies.get(live);
    ui.cancel.disabled = !(pending || (r && !isFinal(r.status)));
  }

  // ----- in-flight reply in sessionStorage (survives a reload) -----
  function storageKey() {
    if (!ident) return null;
    const who = ident.token ? "token" : ident.user || "anonymous";
    return `weir.inflight:${who}:${ident.session}`;
  }

  function saveInflight(r) {
    const key = storageKey();
    if (!key) return;
    try {
      sessionStorage.setItem(
        key,
        JSON.stringify({ id: r.id, seq: r.lastSeq, text: r.text, status: r.status }),
      );
    } catch (_) {
      // storage full or disabled: reconnects still resume, reloads start over
    }
  }

  function clearInflight() {
    const key = storageKey();
    if (!key) return;
    try {
      sessionStorage.removeItem(key);
    } catch (_) {
      // ignore
    }
  }

  function loadInflight() {
    const key = storageKey();
    if (!key) return null;
    try {
      const v = JSON.parse(sessionStorage.getItem(key) || "null");
      if (v && typeof v.id === "string" && Number.isInteger(v.seq) && v.seq >= 0) {
        return { id: v.id, seq: v.seq, text: typeof v.text === "string" ? v.text : "", status: v.status };
      }
    } catch (_) {
      // ignore a broken entry
    }
    return null;
  }

  // ----- rendering -----
  function setStatus(r, status) {
    r.status = status;
    r.el.dataset.status = status;
    if (live === r.id && isFinal(status) && r.ended) {
      live = null;
      clearInflight();
    }
    updateButtons();
  }

  function makeAssistantEl() {
    const el = document.createElement("div");
    el.className = "msg assistant";
    return el;
  }

  function insertBeforeAnchor(el, anchor) {
    if (anchor && anchor.parentNode === ui.log) ui.log.insertBefore(el, anchor);
    else ui.log.appendChild(el);
  }

  function ensureReply(id) {
    let r = replies.get(id);
    if (r) return r;
    const el = makeAssistantEl();
    el.dataset.messageId = id;
    r = { id, el, text: "", lastSeq: 0, status: "streaming", ended: false };
    el.dataset.status = r.status;
    replies.set(id, r);
    // A reply seen before our own pending chat's ack belongs above the placeholder.
    insertBeforeAnchor(el, pending && pending.el);
    return r;
  }

  function setText(r, text) {
    r.text = text;
    r.el.textContent = text;
  }

  function addUser(id, content) {
    if (users.has(id)) return;
    const el = document.createElement("div");
    el.className = "msg user";
    el.dataset.messageId = id;
    el.textContent = content;
    users.set(id, el);
    const replyId = replyOfUser.get(id);
    const anchor = (replyId && replies.get(replyId) && replies.get(replyId).el) || (pending && pending.el);
    insertBeforeAnchor(el, anchor);
  }

  // ----- connecting -----
  function wsUrl() {
    const p = new URLSearchParams({ session_id: ident.session });
    if (ident.token) p.set("token", ident.token);
    else p.set("user_id", ident.user || "anonymous");
    connResume = null;
    const r = live && replies.get(live);
    if (r && !isFinal(r.status)) {
      connResume = { id: r.id, seq: r.lastSeq };
      p.set("resume", `${r.id}:${r.lastSeq}`);
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const host = location.host || "127.0.0.1:8080";
    return `${scheme}//${host}/v1/ws?${p}`;
  }

  function dropSocket() {
    gen += 1;
    clearTimeout(connectTimer);
    stopHeartbeat();
    if (ws) {
      const old = ws;
      ws = null;
      try {
        old.close(1000);
      } catch (_) {
        // already closed
      }
    }
  }

  function connect() {
    clearTimeout(retryTimer);
    dropSocket();
    const myGen = gen;
    setState(attempt === 0 ? "connecting" : "reconnecting");
    let sock;
    try {
      sock = new WebSocket(wsUrl());
    } catch (e) {
      showBanner(`Cannot connect: ${e.message}`, true);
      scheduleReconnect(null);
      return;
    }
    ws = sock;
    connectTimer = setTimeout(() => {
      if (myGen === gen && connState !== "open") reconnectNow();
    }, CONNECT_TIMEOUT_MS);
    sock.onmessage = (ev) => {
      if (myGen === gen) onFrame(ev.data);
    };
    sock.onclose = (ev) => {
      if (myGen === gen) onClose(ev);
    };
  }

  // Drop this socket and reconnect (to resynchronise, or when a socket hangs).
  function reconnectNow() {
    dropSocket();
    scheduleReconnect(null);
  }

  function scheduleReconnect(ev) {
    clearTimeout(retryTimer);
    attempt += 1;
    // Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(n-1))].
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt - 1, 20));
    const delay = Math.random() * ceiling;
    setState("reconnecting");
    let text = `Reconnecting… (attempt ${attempt})`;
    if (ev && ev.code === 1001) text = `Server is shutting down; reconnecting… (attempt ${attempt})`;
    if (ev && ev.code === 4008) text = `Connection fell behind; reconnecting to catch up… (attempt ${attempt})`;
    if (!everOpened && attempt >= 3) {
      text += " — if the server uses --auth token, enter a valid token and press Connect.";
    }
    showBanner(text, false);
    retryTimer = setTimeout(connect, delay);
  }

  function onClose(ev) {
    ws = null;
    clearTimeout(connectTimer);
    stopHeartbeat();
    if (ev.code === 1009) {
      // Our own frame was too large: do not send the same chat again.
      if (pending) failPending("The message is too large for this server.");
    }
    if (ev.code === 1008) {
      setState("closed");
      showBanner(
        `Closed by the server (policy${ev.reason ? `: ${ev.reason}` : ""}). Check the session and press Connect.`,
        true,
      );
      return;
    }
    scheduleReconnect(ev);
  }

  function sendFrame(frame) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  function startHeartbeat() {
    stopHeartbeat();
    const every = Math.max(1000, heartbeatMs);
    heartbeatTimer = setInterval(() => {
      // Browsers answer WebSocket pings without telling scripts, so a quiet
      // connection is checked with the JSON ping; silence means it is dead.
      if (Date.now() - lastFrameAt > every * 2 + 5000) {
        reconnectNow();
        return;
      }
      pingId += 1;
      sendFrame({ type: "ping", id: pingId });
    }, every);
  }

  function stopHeartbeat() {
    clearInterval(heartbeatTimer);
    heartbeatTimer = null;
  }

  // ----- frames from the server -----
  function onFrame(data) {
    lastFrameAt = Date.now();
    let f;
    try {
      f = JSON.parse(data);
    } catch (_) {
      return;
    }
    const wasNear = nearBottom();
    switch (f.type) {
      case "hello":
        onHello(f);
        break;
      case "history":
        onHistory(f.messages || []);
        break;
      case "user_message":
        onUserMessage(f);
        break;
      case "ack":
        onAck(f);
        break;
      case "start":
        onStart(f);
        break;
      case "chunk":
        onChunk(f);
        break;
      case "end":
        onEnd(f);
        break;
      case "cancel_result":
        onCancelResult(f);
        break;
      case "resume_unavailable":
        onResumeUnavailable(f);
        break;
      case "presence":
        ui.presence.textContent = `${f.user_id} is ${f.status} on another device`;
        break;
      case "error":
        onError(f);
        break;
      default:
        break; // pong and frames added later
    }
    keepScrolled(wasNear);
  }

  function onHello(f) {
    clearTimeout(connectTimer);
    attempt = 0;
    everOpened = true;
    if (Number.isFinite(f.heartbeat_ms) && f.heartbeat_ms > 0) heartbeatMs = f.heartbeat_ms;
    ui.node.textContent = `${f.user_id} · node ${f.node_id}`;
    hideBanner();
    setState("open");
    startHeartbeat();
  }

  function onHistory(messages) {
    // The resumed reply is left out of history: keep what we have of it.
    const keep = connResume && replies.get(connResume.id);
    ui.log.textContent = "";
    replies.clear();
    users.clear();
    const keepLive = live;
    live = null;
    for (const m of messages) {
      if (m.role === "user") {
        addUser(m.message_id, m.content);
        continue;
      }
      const r = ensureReply(m.message_id);
      setText(r, m.content || "");
      r.lastSeq = m.seq || 0;
      r.ended = m.status !== "streaming";
      setStatus(r, m.status);
      if (m.status === "streaming") {
        // Live chunks continue at seq + 1 on this connection.
        live = r.id;
        saveInflight(r);
      }
    }
    if (keep && !replies.has(keep.id)) {
      replies.set(keep.id, keep);
      ui.log.appendChild(keep.el);
      live = keep.id;
    } else if (!live && keepLive && replies.has(keepLive) && !isFinal(replies.get(keepLive).status)) {
      live = keepLive;
    }
    if (!live) clearInflight();
    if (pending) {
      ui.log.appendChild(pending.el);
      // Not acknowledged before the drop: send it again. The same
      // client_message_id never starts a second reply; the first ack comes back.
      sendFrame({
        type: "chat",
        content: pending.content,
        request_id: pending.requestId,
        client_message_id: pending.clientMessageId,
      });
    }
    for (const c of cancels.values()) sendFrame(c.frame);
    updateButtons();
    ui.log.scrollTop = ui.log.scrollHeight;
  }

  function onUserMessage(f) {
    addUser(f.message_id, f.content);
  }

  function onAck(f) {
    replyOfUser.set(f.user_message_id, f.message_id);
    if (!pending || f.request_id !== pending.requestId) return;
    const p = pending;
    pending = null;
    let r = replies.get(f.message_id);
    if (r) {
      p.el.remove();
    } else {
      p.el.dataset.messageId = f.message_id;
      r = { id: f.message_id, el: p.el, text: "", lastSeq: 0, status: "streaming", ended: false };
      replies.set(r.id, r);
    }
    if (!isFinal(r.status)) {
      setStatus(r, p.cancelling ? "cancelling" : "streaming");
      live = r.id;
      saveInflight(r);
    }
    // The user turn goes above its reply even if it arrived late.
    const u = users.get(f.user_message_id);
    if (u && u.compareDocumentPosition(r.el) & Node.DOCUMENT_POSITION_PRECEDING) {
      ui.log.insertBefore(u, r.el);
    }
    updateButtons();
  }

  function onStart(f) {
    replyOfUser.set(f.reply_to, f.message_id);
    const r = ensureReply(f.message_id);
    if (r.ended) return;
    if (r.status === "pending") setStatus(r, "streaming");
    live = r.id;
    saveInflight(r);
    updateButtons();
  }

  function onChunk(f) {
    const r = ensureReply(f.message_id);
    const seq = f.seq;
    const from = Number.isInteger(f.from_seq) ? f.from_seq : seq;
    if (!Number.isInteger(seq) || seq <= r.lastSeq) return; // already shown
    if (from !== r.lastSeq + 1) {
      // A gap, or a merged frame overlapping what we have: resynchronise
      // exactly from the last seq we showed.
      console.warn(`weir: chunk ${from}..${seq} after ${r.lastSeq}; resuming`);
      live = r.id;
      reconnectNow();
      return;
    }
    r.text += f.delta || "";
    r.el.append(f.delta || "");
    r.lastSeq = seq;
    if (!r.ended) {
      if (r.status === "pending") setStatus(r, "streaming");
      live = r.id;
      saveInflight(r);
    }
  }

  function onEnd(f) {
    const r = ensureReply(f.message_id);
    if (Number.isInteger(f.final_seq) && r.lastSeq < f.final_seq) {
      // Missing chunks before the end: ask for them (the reply is settled,
      // so the server replays them and the end again, or says it cannot).
      sendFrame({ type: "resume", message_id: r.id, after_seq: r.lastSeq });
      return;
    }
    r.ended = true;
    if (f.status === "failed") r.el.dataset.reason = f.reason || "unknown";
    if (f.usage) {
      r.el.title = `${f.usage.prompt_tokens} prompt + ${f.usage.completion_tokens} completion tokens`;
    }
    setStatus(r, f.status);
    if (live === r.id) {
      live = null;
      clearInflight();
    }
    updateButtons();
  }

  function onCancelResult(f) {
    const asked = cancels.has(f.request_id) ? cancels.get(f.request_id).id : null;
    cancels.delete(f.request_id);
    if (f.status === "not_found" || !f.message_id) {
      showNote("Nothing to cancel: no reply is in flight.");
      if (pending && pending.cancelling) {
        pending.cancelling = false;
        pending.el.dataset.status = "pending";
      }
      const r = asked && replies.get(asked);
      if (r && r.status === "cancelling") setStatus(r, "streaming");
      return;
    }
    const r = replies.get(f.message_id);
    if (!r || r.ended) return; // the end already said how it ended
    setStatus(r, f.status);
    if (Number.isInteger(f.final_seq) && r.lastSeq >= f.final_seq) {
      // Nothing of this reply follows a cancel_result here; the end may or
      // may not come (a reply cancelled before it started has none).
      r.ended = true;
      if (live === r.id) {
        live = null;
        clearInflight();
      }
    }
    updateButtons();
  }

  function onResumeUnavailable(f) {
    const r = ensureReply(f.message_id);
    r.ended = true;
    const s = f.snapshot;
    if (s && s.status !== "streaming") {
      setText(r, s.content || "");
      r.lastSeq = s.seq || 0;
      setStatus(r, s.status);
    } else {
      const why = {
        expired: "the reply can no longer be resumed (expired); reload for its final text",
        epoch_changed: "the server lost this reply's log; the text shown may be incomplete",
        unknown: "the server does not know this reply",
      }[f.reason] || `cannot resume (${f.reason})`;
      r.el.dataset.note = why;
      if (s) setText(r, s.content || r.text);
      setStatus(r, "unavailable");
    }
    if (live === r.id) {
      live = null;
      clearInflight();
    }
    updateButtons();
  }

  function failPending(text) {
    const p = pending;
    pending = null;
    p.el.remove();
    if (!ui.input.value) ui.input.value = p.content;
    showNote(text);
    updateButtons();
  }

  function onError(f) {
    const text =
      f.code === "busy"
        ? "A reply is still streaming in this conversation: wait for it or cancel it."
        : `${f.code}: ${f.message}`;
    if (pending && f.request_id && f.request_id === pending.requestId) {
      failPending(text);
      return;
    }
    if (f.request_id && cancels.has(f.request_id)) {
      const id = cancels.get(f.request_id).id;
      cancels.delete(f.request_id);
      const r = id && replies.get(id);
      if (r && r.status === "cancelling") setStatus(r, "streaming");
    }
    showNote(text);
  }

  // ----- user actions -----
  function send() {
    const content = ui.input.value;
    if (!content.trim()) return;
    if (connState !== "open") {
      showNote("Not connected yet.");
      return;
    }
    if (pending) {
      showNote("The previous message is not acknowledged yet.");
      return;
    }
    const el = makeAssistantEl();
    el.dataset.status = "pending";
    pending = {
      requestId: newId("chat"),
      clientMessageId: newId("cm"),
      content,
      el,
      cancelling: false,
    };
    ui.log.appendChild(el);
    sendFrame({
      type: "chat",
      content,
      request_id: pending.requestId,
      client_message_id: pending.clientMessageId,
    });
    ui.input.value = "";
    ui.log.scrollTop = ui.log.scrollHeight;
    updateButtons();
  }

  function cancel() {
    const requestId = newId("cancel");
    const r = live && replies.get(live);
    let frame;
    if (pending) {
      // No message id yet: the server cancels the reply our chat starts.
      pending.cancelling = true;
      pending.el.dataset.status = "cancelling";
      frame = { type: "cancel", request_id: requestId };
      cancels.set(requestId, { id: null, frame });
    } else if (r && !isFinal(r.status)) {
      setStatus(r, "cancelling");
      saveInflight(r);
      frame = { type: "cancel", message_id: r.id, request_id: requestId };
      cancels.set(requestId, { id: r.id, frame });
    } else {
      return;
    }
    sendFrame(frame); // if not open, it goes out after the reconnect's history
    updateButtons();
  }

  // ----- identity (session, user, token) -----
  function readHash() {
    let h = "";
    try {
      h = decodeURIComponent(location.hash.replace(/^#/, ""));
    } catch (_) {
      return {};
    }
    if (!h) return {};
    if (h.includes("=")) {
      const p = new URLSearchParams(h);
      return { session: p.get("session") || undefined, user: p.get("user") || undefined };
    }
    return { session: h };
  }

  function start(next) {
    if (!SESSION_RE.test(next.session)) {
      showNote("Session id: 1-128 characters of A-Z a-z 0-9 _ - . :");
      return;
    }
    ident = next;
    try {
      localStorage.setItem("weir.user", next.user);
    } catch (_) {
      // ignore
    }
    if (readHash().session !== next.session) {
      history.replaceState(null, "", `#${encodeURIComponent(next.session)}`);
    }
    dropSocket();
    clearTimeout(retryTimer);
    replies.clear();
    users.clear();
    replyOfUser.clear();
    cancels.clear();
    pending = null;
    live = null;
    ui.log.textContent = "";
    ui.presence.textContent = "";
    ui.node.textContent = "";
    attempt = 0;
    everOpened = false;
    // A reply that was streaming when this page was last left: resume it.
    const saved = loadInflight();
    if (saved) {
      const r = ensureReply(saved.id);
      setText(r, saved.text);
      r.lastSeq = saved.seq;
      setStatus(r, saved.status === "cancelling" ? "cancelling" : "streaming");
      live = r.id;
      if (r.status === "cancelling") {
        // Its cancel_result was lost with the old page: ask again (idempotent).
        const requestId = newId("cancel");
        const frame = { type: "cancel", message_id: r.id, request_id: requestId };
        cancels.set(requestId, { id: r.id, frame });
      }
    }
    connect();
  }

  function fromFields() {
    return {
      session: ui.session.value.trim() || "demo",
      user: ui.user.value.trim(),
      token: ui.token.value.trim(),
    };
  }

  ui.connForm.addEventListener("submit", (e) => {
    e.preventDefault();
    start(fromFields());
  });
  ui.composer.addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  ui.input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  ui.cancel.addEventListener("click", cancel);
  window.addEventListener("hashchange", () => {
    const h = readHash();
    if (h.session && ident && h.session !== ident.session) {
      ui.session.value = h.session;
      start(fromFields());
    }
  });
  window.addEventListener("online", () => {
    if (connState === "reconnecting") {
      clearTimeout(retryTimer);
      connect();
    }
  });

  // ----- boot -----
  const fromHash = readHash();
  let savedUser = "";
  try {
    savedUser = localStorage.getItem("weir.user") || "";
  } catch (_) {
    // ignore
  }
  ui.session.value = fromHash.session || "demo";
  ui.user.value = fromHash.user || savedUser;
  start(fromFields());
})();
