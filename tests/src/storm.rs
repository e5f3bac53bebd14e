//! A reconnect storm's clients, shared by the end-to-end test
//! (`tests/tests/storm.rs`) and the benchmark (`cluster_bench storm`): each
//! client opens a conversation of its own on node A (from a source address
//! of 127.0.0.x, so thousands of them never run short of ports), a
//! streaming one starts a reply there (`chat`) and follows it; when A goes
//! away (a close, 1001 on a graceful shutdown, or the connection's end when
//! A is killed) the client reconnects to node B, with
//! `resume=MESSAGE_ID:LASTSEQ` when it was following a reply, and follows
//! that reply to its `end` (or its `resume_unavailable`). What it saw, with
//! when, is its [`Follow`]; [`Follow::verdict`] checks exactly-once
//! against the reply's text in history ([`history_of`]).
//!
//! Unlike [`Client`](crate::Client), nothing here panics: a failure is
//! recorded in [`Follow::error`], so a benchmark of thousands of clients
//! counts failures instead of dying at the first one. Every wait is bounded
//! by [`StormCtx::deadline`].

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use async_tungstenite::tokio::client_async_with_config;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message;
use futures_util::StreamExt;
use tokio::net::TcpSocket;
use tokio::sync::{watch, Semaphore};
use tokio::time::{sleep, timeout, Instant};

use crate::{json, Value, Ws};

type Res<T> = Result<T, String>;

/// The source address of client `i` among `k` (127.0.0.1 ..= 127.0.0.k in
/// turn).
#[must_use]
pub fn source_ip(i: usize, k: u8) -> Ipv4Addr {
    let k = usize::from(k.max(1));
    Ipv4Addr::new(127, 0, 0, u8::try_from(1 + i % k).unwrap_or(1))
}

/// What the clients of one storm share.
#[derive(Debug)]
pub struct StormCtx {
    /// Node A (the one that goes away).
    pub a: SocketAddr,
    /// Node B (where every client reconnects).
    pub b: SocketAddr,
    /// Bounds connects at once (opening on A, and reconnecting to B): the
    /// listen backlog (`somaxconn`) is finite.
    pub gate: Semaphore,
    /// Clients connected to A (streaming ones: with their first chunk).
    pub ready: AtomicUsize,
    /// Clients resumed on B (see [`Follow::resumed_at`]).
    pub resumed: AtomicUsize,
    /// Clients done: idle ones resumed, streaming ones with their reply's
    /// `end` (or a final `resume_unavailable`), failed ones given up.
    pub done: AtomicUsize,
    /// Set once: streaming clients send their `chat`.
    pub go: watch::Receiver<bool>,
    /// Set once: every client closes and returns.
    pub stop: watch::Receiver<bool>,
    /// Nothing waits past this.
    pub deadline: Instant,
    /// Chunks a streaming client forgets before it resumes (its last spans
    /// dropped, at least this many chunks): as a client whose last frames
    /// were in flight when the connection broke, so node B replays them
    /// from the store.
    pub forget: u64,
}

impl StormCtx {
    /// A context for a storm from `a` to `b`, `concurrency` connects at a
    /// time, bounded by `limit`; returns the senders of `go` and `stop`.
    #[must_use]
    pub fn new(
        a: SocketAddr,
        b: SocketAddr,
        (concurrency, forget): (usize, u64),
        limit: Duration,
    ) -> (Self, watch::Sender<bool>, watch::Sender<bool>) {
        let (go_tx, go) = watch::channel(false);
        let (stop_tx, stop) = watch::channel(false);
        let ctx = Self {
            a,
            b,
            gate: Semaphore::new(concurrency.max(1)),
            ready: AtomicUsize::new(0),
            resumed: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            go,
            stop,
            deadline: Instant::now() + limit,
            forget,
        };
        (ctx, go_tx, stop_tx)
    }
}

/// A run of chunks one frame carried: `from..=to` and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// Its first seq (`from_seq` on a merged frame, else `seq`).
    pub from: u64,
    /// Its last seq.
    pub to: u64,
    /// Its `delta`.
    pub delta: String,
    /// Whether it came from node B (after the reconnect).
    pub on_b: bool,
}

/// What one storm client did and saw.
#[derive(Debug, Clone)]
pub struct Follow {
    /// Its conversation's `session_id` (and `user_id`: the same).
    pub session: String,
    /// Whether it started a reply on A.
    pub streaming: bool,
    /// The reply it follows (from its `ack`).
    pub message_id: Option<String>,
    /// Chunks received, in order, from both nodes.
    pub spans: Vec<Span>,
    /// The close code A sent (1001 on a graceful shutdown); `None` when the
    /// connection just ended (A was killed).
    pub close_code: Option<u16>,
    /// When it learned A was gone.
    pub closed_at: Option<Instant>,
    /// When its reconnect to B began (a connect slot taken).
    pub reconnect_at: Option<Instant>,
    /// Chunks it forgot before resuming ([`StormCtx::forget`]).
    pub forgot: u64,
    /// Connect attempts to B.
    pub attempts: u32,
    /// When B's `history` arrived.
    pub connected_at: Option<Instant>,
    /// When it was resumed: idle, at `history`; streaming, at the first
    /// frame of its reply on B (a chunk, its `end`, or
    /// `resume_unavailable`).
    pub resumed_at: Option<Instant>,
    /// Its reply's `end` (on A or on B).
    pub end: Option<Value>,
    /// When the `end` came.
    pub ended_at: Option<Instant>,
    /// A `resume_unavailable` for its reply.
    pub unavailable: Option<Value>,
    /// The first failure, if any.
    pub error: Option<String>,
    /// Counted in [`StormCtx::done`].
    pub done: bool,
}

impl Follow {
    fn new(session: String, streaming: bool) -> Self {
        Self {
            session,
            streaming,
            message_id: None,
            spans: Vec::new(),
            close_code: None,
            closed_at: None,
            reconnect_at: None,
            forgot: 0,
            attempts: 0,
            connected_at: None,
            resumed_at: None,
            end: None,
            ended_at: None,
            unavailable: None,
            error: None,
            done: false,
        }
    }

    /// The last seq received (0 before any chunk).
    #[must_use]
    pub fn last_seq(&self) -> u64 {
        self.spans.last().map_or(0, |s| s.to)
    }

    /// Checks the chunks against the reply's final text `history` (its
    /// `content` in history, `None` when history has no such reply).
    #[must_use]
    pub fn verdict(&self, history: Option<&str>) -> Verdict {
        let mut v = Verdict::default();
        let mut next = 1u64;
        let mut text = String::new();
        for s in &self.spans {
            if s.from > next {
                v.gaps += 1;
            }
            if s.from < next {
                v.duplicates += 1;
                continue;
            }
            text.push_str(&s.delta);
            next = s.to + 1;
        }
        if let Some(u) = &self.unavailable {
            // Not exact: the snapshot stands for the text.
            v.inexact = true;
            if let Some(snap) = u.get("snapshot").filter(|s| s.is_object()) {
                text = snap["content"].as_str().unwrap_or_default().to_owned();
            }
        }
        match self.end.as_ref().and_then(|e| e["final_seq"].as_u64()) {
            Some(_) if v.inexact => {}
            Some(fin) if fin >= next => v.gaps += 1,
            Some(fin) if fin + 1 < next => v.duplicates += 1,
            Some(_) => {}
            None if self.unavailable.is_none() => v.no_end = true,
            None => {}
        }
        v.mismatch = history != Some(text.as_str());
        v.text = text;
        v
    }
}

/// Exactly-once, for one streaming client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Frames that skipped seqs (or an `end` past the last chunk).
    pub gaps: u32,
    /// Frames that repeated seqs (or chunks past `final_seq`).
    pub duplicates: u32,
    /// The text received differs from the reply's text in history.
    pub mismatch: bool,
    /// No `end` came.
    pub no_end: bool,
    /// The resume was answered `resume_unavailable`.
    pub inexact: bool,
    /// The text received.
    pub text: String,
}

/// Opens a WebSocket to `addr` from `src` at `path`; reads `hello` and
/// `history` and returns `history`'s messages.
async fn connect(addr: SocketAddr, src: Ipv4Addr, path: &str) -> Res<(Ws, Vec<Value>)> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(SocketAddr::new(src.into(), 0))
        .map_err(|e| format!("bind {src}: {e}"))?;
    let stream = socket
        .connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    // A small read buffer (tungstenite's default is 128 KiB): thousands of
    // clients live in one process.
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
    let (mut ws, _) = client_async_with_config(format!("ws://{addr}{path}"), stream, Some(config))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).map_err(|e| e.to_string())?;
                match v["type"].as_str() {
                    Some("history") => {
                        return Ok((ws, v["messages"].as_array().cloned().unwrap_or_default()))
                    }
                    Some("error") => return Err(format!("weir answered {v}")),
                    _ => {}
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("closed before history".into()),
        }
    }
}

/// What a read gave.
enum Read {
    Frame(Value),
    /// A close frame (its code) or the stream's end (`None`).
    Gone(Option<u16>),
}

async fn read(ws: &mut Ws, deadline: Instant) -> Res<Read> {
    loop {
        match timeout(
            deadline.saturating_duration_since(Instant::now()),
            ws.next(),
        )
        .await
        {
            Err(_) => return Err("deadline".into()),
            Ok(Some(Ok(Message::Text(t)))) => {
                return serde_json::from_str(t.as_str())
                    .map(Read::Frame)
                    .map_err(|e| e.to_string())
            }
            Ok(Some(Ok(Message::Close(c)))) => {
                return Ok(Read::Gone(Some(c.map_or(1005, |f| u16::from(f.code)))))
            }
            Ok(Some(Ok(_))) => {}
            // A killed node: reset, or the stream's end.
            Ok(Some(Err(_)) | None) => return Ok(Read::Gone(None)),
        }
    }
}

/// Records `f` (a frame of reply `mid`, or another) into `follow`; returns
/// whether the reply is over for this client.
fn record(follow: &mut Follow, f: &Value, on_b: bool) -> bool {
    let mid = follow.message_id.as_deref().unwrap_or("");
    if f["message_id"].as_str() != Some(mid) {
        return false;
    }
    let now = Instant::now();
    if on_b && follow.resumed_at.is_none() {
        follow.resumed_at = Some(now);
    }
    match f["type"].as_str() {
        Some("chunk") => {
            let to = f["seq"].as_u64().unwrap_or(0);
            follow.spans.push(Span {
                from: f["from_seq"].as_u64().unwrap_or(to),
                to,
                delta: f["delta"].as_str().unwrap_or_default().to_owned(),
                on_b,
            });
            false
        }
        Some("end") => {
            follow.end = Some(f.clone());
            follow.ended_at = Some(now);
            true
        }
        Some("resume_unavailable") => {
            follow.unavailable = Some(f.clone());
            // A settled snapshot is the end of it; a streaming one goes on.
            f["snapshot"]["status"].as_str() != Some("streaming")
        }
        _ => false,
    }
}

/// One storm client: conversation `session` (user `session` too) from
/// `src`; see the module docs. Returns what it saw once `ctx.stop` is set
/// (or the deadline passed).
pub async fn storm_client(
    ctx: std::sync::Arc<StormCtx>,
    session: String,
    src: Ipv4Addr,
    streaming: bool,
) -> Follow {
    let mut follow = Follow::new(session, streaming);
    let result = run(&ctx, &mut follow, src).await;
    if let Err(e) = result {
        follow.error.get_or_insert(e);
    }
    if !follow.done {
        follow.done = true;
        ctx.done.fetch_add(1, Relaxed);
    }
    follow
}

async fn run(ctx: &StormCtx, follow: &mut Follow, src: Ipv4Addr) -> Res<()> {
    let query = format!("session_id={0}&user_id={0}", follow.session);
    // On A.
    let permit = ctx.gate.acquire().await.map_err(|e| e.to_string())?;
    let (mut ws, _) = connect(ctx.a, src, &format!("/v1/ws?{query}")).await?;
    drop(permit);
    if follow.streaming {
        let mut go = ctx.go.clone();
        let _ = timeout(
            ctx.deadline.saturating_duration_since(Instant::now()),
            go.wait_for(|g| *g),
        )
        .await;
        let chat = json!({"type": "chat", "content": format!("storm {}", follow.session), "request_id": "r1"});
        ws.send(Message::text(chat.to_string()))
            .await
            .map_err(|e| format!("send chat: {e}"))?;
        // Its ack, then its first chunk.
        loop {
            match read(&mut ws, ctx.deadline).await? {
                Read::Frame(f) if f["type"] == "ack" => {
                    follow.message_id = f["message_id"].as_str().map(str::to_owned);
                }
                Read::Frame(f) if f["type"] == "error" => return Err(format!("chat: {f}")),
                Read::Frame(f) => {
                    let over = record(follow, &f, false);
                    if !follow.spans.is_empty() || over {
                        break;
                    }
                }
                Read::Gone(code) => {
                    return Err(format!("A closed before the first chunk ({code:?})"))
                }
            }
        }
    }
    ctx.ready.fetch_add(1, Relaxed);
    // Following on A until it goes away.
    loop {
        match read(&mut ws, ctx.deadline).await? {
            Read::Frame(f) => {
                let _ = record(follow, &f, false);
            }
            Read::Gone(code) => {
                follow.closed_at = Some(Instant::now());
                follow.close_code = code;
                break;
            }
        }
    }
    // As a browser: the close is answered and the connection's end awaited
    // (briefly) before the reconnect.
    if follow.close_code.is_some() {
        let _ = timeout(Duration::from_secs(1), async {
            while ws.next().await.is_some() {}
        })
        .await;
    }
    drop(ws);
    // On B.
    let resume = match (&follow.message_id, &follow.end) {
        (Some(mid), None) => {
            while follow.forgot < ctx.forget {
                let Some(s) = follow.spans.pop() else { break };
                follow.forgot += s.to - s.from + 1;
            }
            format!("&resume={mid}:{}", follow.last_seq())
        }
        _ => String::new(),
    };
    let path = format!("/v1/ws?{query}{resume}");
    let permit = ctx.gate.acquire().await.map_err(|e| e.to_string())?;
    follow.reconnect_at = Some(Instant::now());
    let mut ws = loop {
        follow.attempts += 1;
        let left = ctx.deadline.saturating_duration_since(Instant::now());
        match timeout(
            left.min(Duration::from_secs(20)),
            connect(ctx.b, src, &path),
        )
        .await
        {
            Ok(Ok((ws, _))) => break ws,
            Ok(Err(e)) if Instant::now() + Duration::from_secs(1) < ctx.deadline => {
                follow
                    .error
                    .get_or_insert(format!("attempt {}: {e}", follow.attempts));
                sleep(Duration::from_millis(
                    50 * u64::from(follow.attempts.min(20)),
                ))
                .await;
            }
            Ok(Err(e)) => return Err(format!("reconnect to B: {e}")),
            Err(_) => return Err("reconnect to B: deadline".into()),
        }
    };
    drop(permit);
    // A failed attempt that was retried is not the client's failure.
    follow.error = None;
    follow.connected_at = Some(Instant::now());
    if resume.is_empty() {
        follow.resumed_at = follow.connected_at;
        ctx.resumed.fetch_add(1, Relaxed);
        follow.done = true;
        ctx.done.fetch_add(1, Relaxed);
    } else {
        let mut counted = false;
        loop {
            match read(&mut ws, ctx.deadline).await? {
                Read::Frame(f) => {
                    let over = record(follow, &f, true);
                    if !counted && follow.resumed_at.is_some() {
                        counted = true;
                        ctx.resumed.fetch_add(1, Relaxed);
                    }
                    if over {
                        follow.done = true;
                        ctx.done.fetch_add(1, Relaxed);
                        break;
                    }
                }
                Read::Gone(code) => {
                    return Err(format!("B closed the resumed connection ({code:?})"))
                }
            }
        }
    }
    // Held open (reading: pings are answered) until told to stop.
    let mut stop = ctx.stop.clone();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            () = sleep(ctx.deadline.saturating_duration_since(Instant::now())) => break,
            m = ws.next() => if m.is_none() { break },
        }
    }
    let _ = timeout(Duration::from_secs(2), ws.close(None)).await;
    Ok(())
}

/// The content and status of reply `mid` in conversation `session` (user
/// `session`), read from the `history` of a fresh connection to `addr`.
pub async fn history_of(
    addr: SocketAddr,
    src: Ipv4Addr,
    session: &str,
    mid: &str,
) -> Res<Option<(String, String)>> {
    let path = format!("/v1/ws?session_id={session}&user_id={session}");
    let (mut ws, messages) = timeout(Duration::from_secs(20), connect(addr, src, &path))
        .await
        .map_err(|_| String::from("history: deadline"))??;
    let _ = timeout(Duration::from_secs(2), ws.close(None)).await;
    Ok(messages.iter().find(|m| m["message_id"] == mid).map(|m| {
        (
            m["content"].as_str().unwrap_or_default().to_owned(),
            m["status"].as_str().unwrap_or_default().to_owned(),
        )
    }))
}
