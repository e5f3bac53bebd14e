//! The protocol's client side: server frames read as JSON ([`Frame`]), with
//! the names of `PROTOCOL.md`, and a WebSocket client that reads and writes
//! them ([`Client`]).

use std::ops::Deref;

use async_tungstenite::tungstenite::Message;
use futures_util::StreamExt;

use crate::{json, tungstenite, DemoText, Value, Ws, T};

/// One server frame, as the JSON object it was on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame(pub Value);

impl Deref for Frame {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.0
    }
}

impl Frame {
    /// Parses a text frame; panics unless it is a JSON object whose first
    /// member is a string `type` (PROTOCOL.md: "`type` first").
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let value: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("a server frame is not JSON ({e}): {text}"));
        assert!(
            text.trim_start().starts_with("{\"type\":"),
            "`type` is not the first member: {text}"
        );
        assert!(value["type"].is_string(), "no string `type`: {text}");
        Self(value)
    }

    /// Its `type`.
    #[must_use]
    pub fn kind(&self) -> &str {
        self.0["type"].as_str().unwrap_or("")
    }

    /// Whether its `type` is `kind`.
    #[must_use]
    pub fn is(&self, kind: &str) -> bool {
        self.kind() == kind
    }

    /// The string `field`; panics if absent or not a string.
    #[must_use]
    pub fn str(&self, field: &str) -> &str {
        self.0[field]
            .as_str()
            .unwrap_or_else(|| panic!("no string `{field}` in {}", self.0))
    }

    /// The non-negative integer `field`; panics if absent or not one.
    #[must_use]
    pub fn u64(&self, field: &str) -> u64 {
        self.0[field]
            .as_u64()
            .unwrap_or_else(|| panic!("no integer `{field}` in {}", self.0))
    }

    /// The frame as a [`Chunk`], if it is a `chunk`.
    #[must_use]
    pub fn as_chunk(&self) -> Option<Chunk> {
        if !self.is("chunk") {
            return None;
        }
        Some(Chunk {
            message_id: self.str("message_id").to_owned(),
            seq: self.u64("seq"),
            from_seq: self.0.get("from_seq").and_then(Value::as_u64),
            delta: self.str("delta").to_owned(),
            ts_ns: self.0.get("ts_ns").and_then(Value::as_u64),
        })
    }
}

/// A `chunk` frame's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The reply.
    pub message_id: String,
    /// The last seq it covers.
    pub seq: u64,
    /// The first seq it covers, on a merged frame.
    pub from_seq: Option<u64>,
    /// The text.
    pub delta: String,
    /// When the producing node appended its (last) chunk, Unix epoch
    /// nanoseconds: only with `--chunk-timestamps`.
    pub ts_ns: Option<u64>,
}

impl Chunk {
    /// The first seq it covers.
    #[must_use]
    pub fn first_seq(&self) -> u64 {
        self.from_seq.unwrap_or(self.seq)
    }
}

/// The chunks among `frames`, of any reply.
#[must_use]
pub fn chunks(frames: &[Frame]) -> Vec<Chunk> {
    frames.iter().filter_map(Frame::as_chunk).collect()
}

/// The chunks of reply `message_id` among `frames`.
#[must_use]
pub fn chunks_of(frames: &[Frame], message_id: &str) -> Vec<Chunk> {
    chunks(frames)
        .into_iter()
        .filter(|c| c.message_id == message_id)
        .collect()
}

/// Checks that `chunks` continue seq `after` without a gap or a duplicate
/// (merged frames included); returns their text and the last seq.
#[must_use]
pub fn contiguous(after: u64, chunks: &[Chunk]) -> (String, u64) {
    let mut last = after;
    let mut text = String::new();
    for c in chunks {
        assert_eq!(
            c.first_seq(),
            last + 1,
            "gap or duplicate: after seq {last} came {c:?}"
        );
        assert!(c.seq >= c.first_seq(), "from_seq after seq: {c:?}");
        last = c.seq;
        text.push_str(&c.delta);
    }
    (text, last)
}

/// The one frame of type `kind` among `frames`; panics unless there is
/// exactly one.
#[must_use]
pub fn only<'a>(frames: &'a [Frame], kind: &str) -> &'a Frame {
    let found: Vec<&Frame> = frames.iter().filter(|f| f.is(kind)).collect();
    assert_eq!(found.len(), 1, "exactly one `{kind}` in {frames:#?}");
    found[0]
}

/// The index of the first frame of type `kind` among `frames`; panics if
/// there is none.
#[must_use]
pub fn position(frames: &[Frame], kind: &str) -> usize {
    frames
        .iter()
        .position(|f| f.is(kind))
        .unwrap_or_else(|| panic!("a `{kind}` in {frames:#?}"))
}

/// The first `n` chunks of the demo reply to `prompt` (of `total` chunks).
#[must_use]
pub fn demo_prefix(prompt: &str, total: u32, n: u64) -> String {
    DemoText::new(prompt, total)
        .take(usize::try_from(n).expect("a small count"))
        .collect()
}

/// A WebSocket connection to `/v1/ws`.
#[derive(Debug)]
pub struct Client {
    ws: Ws,
    /// The `hello` frame, once [`handshake`](Self::handshake) read it.
    pub hello: Option<Frame>,
    /// The `history` frame, once [`handshake`](Self::handshake) read it.
    pub history: Option<Frame>,
}

impl Client {
    pub(crate) fn new(ws: Ws) -> Self {
        Self {
            ws,
            hello: None,
            history: None,
        }
    }

    /// The underlying stream.
    pub fn ws_mut(&mut self) -> &mut Ws {
        &mut self.ws
    }

    /// Reads `hello` and `history` (the first two frames) and returns them.
    pub async fn handshake(&mut self) -> (Frame, Frame) {
        let hello = self.next_frame().await;
        assert!(hello.is("hello"), "first frame: {hello:?}");
        let history = self.next_frame().await;
        assert!(history.is("history"), "second frame: {history:?}");
        self.hello = Some(hello.clone());
        self.history = Some(history.clone());
        (hello, history)
    }

    /// The messages of the `history` frame read by the handshake.
    #[must_use]
    pub fn history_messages(&self) -> Vec<Value> {
        self.history.as_ref().expect("handshake read the history").0["messages"]
            .as_array()
            .expect("history.messages is a list")
            .clone()
    }

    /// Sends a WebSocket message.
    pub async fn send_message(&mut self, message: Message) {
        tokio::time::timeout(T, self.ws.send(message))
            .await
            .expect("send in time")
            .expect("send a WebSocket message");
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.send_message(Message::text(text.into())).await;
    }

    /// Frames up to and including the first chunk (of reply `mid`, when
    /// given) whose `seq` reaches `seq`.
    pub async fn until_seq(&mut self, mid: Option<&str>, seq: u64) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            let f = self.next_frame().await;
            let reached = f
                .as_chunk()
                .is_some_and(|c| mid.is_none_or(|m| c.message_id == m) && c.seq >= seq);
            frames.push(f);
            if reached {
                return frames;
            }
        }
    }

    /// Sends a JSON value as a text frame.
    pub async fn send_json(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    /// Sends `chat`.
    pub async fn chat(&mut self, content: &str, request_id: &str) {
        self.send_json(json!({"type": "chat", "content": content, "request_id": request_id}))
            .await;
    }

    /// Sends `cancel` for `message_id` (or, with `None`, without one).
    pub async fn cancel(&mut self, message_id: Option<&str>, request_id: &str) {
        let mut frame = json!({"type": "cancel", "request_id": request_id});
        if let Some(id) = message_id {
            frame["message_id"] = json!(id);
        }
        self.send_json(frame).await;
    }

    /// The client's end of the TCP connection.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.ws
            .get_ref()
            .get_ref()
            .local_addr()
            .expect("a connected socket's address")
    }

    /// The next WebSocket message within `wait`: `Err` when none came,
    /// `Ok(None)` when the stream ended.
    pub async fn message_within(
        &mut self,
        wait: std::time::Duration,
    ) -> Result<Option<Message>, tokio::time::error::Elapsed> {
        let next = tokio::time::timeout(wait, self.ws.next()).await?;
        Ok(next.map(|m| m.expect("read from the WebSocket")))
    }

    /// The next WebSocket message within [`T`] (`None`: the stream ended).
    pub async fn next_message(&mut self) -> Option<Message> {
        self.message_within(T)
            .await
            .unwrap_or_else(|_| panic!("no WebSocket message within {T:?}"))
    }

    /// The next protocol frame within [`T`]; skips WebSocket pings and
    /// pongs; panics on a close, a binary message or the stream's end.
    pub async fn next_frame(&mut self) -> Frame {
        loop {
            match self.next_message().await {
                Some(Message::Text(text)) => return Frame::parse(&text),
                Some(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }

    /// Frames until one of type `kind`; returns those before it and it.
    pub async fn next_of(&mut self, kind: &str) -> (Vec<Frame>, Frame) {
        let mut before = Vec::new();
        loop {
            let f = self.next_frame().await;
            if f.is(kind) {
                return (before, f);
            }
            before.push(f);
        }
    }

    /// Frames until an `end` (of any reply); returns those before it and the
    /// `end`.
    pub async fn until_end(&mut self) -> (Vec<Frame>, Frame) {
        self.next_of("end").await
    }

    /// Frames until the `end` of reply `mid`; returns those before it and
    /// the `end`.
    pub async fn until_end_of(&mut self, mid: &str) -> (Vec<Frame>, Frame) {
        let mut before = Vec::new();
        loop {
            let f = self.next_frame().await;
            if f.is("end") && f["message_id"] == mid {
                return (before, f);
            }
            before.push(f);
        }
    }

    /// Sends a `chat` and reads until its `ack`; returns the new reply's id.
    pub async fn chat_acked(&mut self, content: &str, request_id: &str) -> String {
        self.chat(content, request_id).await;
        let (_, ack) = self.next_of("ack").await;
        ack.str("message_id").to_owned()
    }

    /// Sends `ping` with `id` and reads until its `pong`; returns the frames
    /// that came before it. As the server writes a connection's frames in
    /// order, this is a barrier: whatever the server sent before it handled
    /// the ping is in the result.
    pub async fn ping(&mut self, id: &str) -> Vec<Frame> {
        self.send_json(json!({"type": "ping", "id": id})).await;
        let mut before = Vec::new();
        loop {
            let f = self.next_frame().await;
            if f.is("pong") && f["id"] == id {
                return before;
            }
            before.push(f);
        }
    }

    /// Waits a little (250 ms) for anything that should not come, then
    /// asserts with a [`ping`](Self::ping) barrier (ping `id`) that nothing
    /// but its pong came.
    pub async fn assert_nothing_more(&mut self, id: &str) {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let extra = self.ping(id).await;
        assert!(extra.is_empty(), "nothing more expected, got {extra:#?}");
    }

    /// Frames until the server closes; returns them and the close code
    /// (1005 when the close frame had none). Reads on until the stream ends,
    /// which sends the client's answer to the close, as a browser does.
    pub async fn frames_until_close(&mut self) -> (Vec<Frame>, u16) {
        self.frames_until_close_or(|_, _| String::new()).await
    }

    /// [`frames_until_close`](Self::frames_until_close), and when no message
    /// comes within [`T`], the panic says what `report` makes of the client
    /// and the frames it got before the silence.
    pub async fn frames_until_close_or(
        &mut self,
        report: impl FnOnce(&Self, &[Frame]) -> String,
    ) -> (Vec<Frame>, u16) {
        let mut frames = Vec::new();
        let code = loop {
            let Ok(message) = self.message_within(T).await else {
                panic!(
                    "no WebSocket message within {T:?} after {} frames; {}",
                    frames.len(),
                    report(self, &frames)
                );
            };
            match message {
                Some(Message::Text(text)) => frames.push(Frame::parse(&text)),
                Some(Message::Close(Some(f))) => break u16::from(f.code),
                Some(Message::Close(None)) => break 1005,
                Some(_) => {}
                None => panic!("the stream ended without a close frame after {frames:?}"),
            }
        };
        while let Ok(Some(Ok(_))) = tokio::time::timeout(T, self.ws.next()).await {}
        (frames, code)
    }

    /// Closes the connection (1000) and reads until the stream ends.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(T, self.ws.close(None)).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(T, self.ws.next()).await {}
    }
}

/// The HTTP status of a refused WebSocket upgrade; panics if it was not
/// refused with an HTTP answer.
#[must_use]
pub fn refusal_status(result: &Result<Client, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got the error {e}"),
        Ok(_) => panic!("expected an HTTP refusal, got an upgrade"),
    }
}
