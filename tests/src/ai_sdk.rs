//! Raw clients of the AI SDK transports (PROTOCOL.md, "AI SDK
//! transports"), for what the SDK's own classes hide or cannot do: a socket
//! or a response with a small receive buffer that stops reading, the
//! `sequence` of every frame, a `Last-Event-ID` resume, the timing of each
//! chunk. The SDK's own transports are driven from Node
//! (`tests/ai-sdk/transports.mjs`).
//!
//! - [`AiSdkSocket`]: a WebSocket to `/v1/ai-sdk/ws`, with the `send` and
//!   `resume` frames of the SDK's `WebSocketChatTransport`.
//! - [`SseStream`]: `POST /v1/ai-sdk/chat` or `GET /v1/ai-sdk/chat/{id}/stream`
//!   over a TCP connection of its own, read event by event as it arrives
//!   (HTTP/1.1, chunked or not).
//!
//! Every wait is bounded by [`T`].

use std::sync::atomic::{AtomicU64, Ordering};

use async_tungstenite::tokio::client_async;
use async_tungstenite::tungstenite::Message;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::{json, Endpoint, Value, Ws, T};

/// A user message of the SDK (`UIMessage` with one text part).
#[must_use]
pub fn ui_user_message(text: &str) -> Value {
    // Its id is the turn's `client_message_id`: one of its own each time.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let id = format!("u-{}-{}-{n}", std::process::id(), crate::now_secs());
    json!({"id": id, "role": "user", "parts": [{"type": "text", "text": text}]})
}

/// The body of `POST /v1/ai-sdk/chat` that `DefaultChatTransport` sends for
/// a new user message `text` in chat `chat`.
#[must_use]
pub fn ai_sdk_chat_body(chat: &str, text: &str) -> String {
    json!({"id": chat, "messages": [ui_user_message(text)], "trigger": "submit-message"})
        .to_string()
}

/// A TCP connection to `endpoint`, with a receive buffer of `rcvbuf` bytes
/// when given (the kernel may round it).
async fn tcp(endpoint: &Endpoint, rcvbuf: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("TCP socket");
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size).expect("set SO_RCVBUF");
    }
    tokio::time::timeout(T, socket.connect(endpoint.addr()))
        .await
        .expect("TCP connect in time")
        .expect("TCP connect")
}

/// A WebSocket to `/v1/ai-sdk/ws`.
#[derive(Debug)]
pub struct AiSdkSocket {
    ws: Ws,
}

impl AiSdkSocket {
    /// Connects to `/v1/ai-sdk/ws?{query}` (e.g. `token=…`), with a receive
    /// buffer of `rcvbuf` bytes when given.
    pub async fn connect(endpoint: &Endpoint, query: &str, rcvbuf: Option<u32>) -> Self {
        let url = format!("ws://{}/v1/ai-sdk/ws?{query}", endpoint.addr());
        let stream = tcp(endpoint, rcvbuf).await;
        let (ws, _) = tokio::time::timeout(T, client_async(url, stream))
            .await
            .expect("WebSocket handshake in time")
            .expect("the AI SDK socket upgrades");
        Self { ws }
    }

    /// Sends a frame.
    pub async fn send_json(&mut self, frame: &Value) {
        tokio::time::timeout(T, self.ws.send(Message::text(frame.to_string())))
            .await
            .expect("send in time")
            .expect("send a frame");
    }

    /// `send`: a new user message `text` in chat `chat`, as request
    /// `request_id`.
    pub async fn send_chat(&mut self, request_id: &str, chat: &str, text: &str) {
        let frame = json!({
            "type": "send", "requestId": request_id, "id": chat, "trigger": "submit-message",
            "messages": [ui_user_message(text)], "headers": {}, "body": {},
        });
        self.send_json(&frame).await;
    }

    /// `resume` of chat `chat` as request `request_id`, after sequence
    /// `last_sequence` when given.
    pub async fn resume(&mut self, request_id: &str, chat: &str, last_sequence: Option<u64>) {
        let mut frame = json!({
            "type": "resume", "requestId": request_id, "id": chat, "headers": {}, "body": {},
        });
        if let Some(n) = last_sequence {
            frame["lastSequence"] = json!(n);
        }
        self.send_json(&frame).await;
    }

    /// `abort` of request `request_id`.
    pub async fn abort(&mut self, request_id: &str) {
        self.send_json(&json!({"type": "abort", "requestId": request_id}))
            .await;
    }

    /// The next WebSocket message within [`T`] (`None`: the stream ended,
    /// or it failed, e.g. reset by the server).
    pub async fn next_message(&mut self) -> Option<Message> {
        tokio::time::timeout(T, self.ws.next())
            .await
            .unwrap_or_else(|_| panic!("no message on the AI SDK socket within {T:?}"))
            .and_then(Result::ok)
    }

    /// The next frame's text; `Err(code)` at a close frame (1005 without a
    /// code, 1006 when the stream ended without one). Skips pings and pongs.
    pub async fn next_text(&mut self) -> Result<String, u16> {
        loop {
            match self.next_message().await {
                Some(Message::Text(text)) => return Ok(text.as_str().to_owned()),
                Some(Message::Close(Some(close))) => return Err(u16::from(close.code)),
                Some(Message::Close(None)) => return Err(1005),
                None => return Err(1006),
                Some(_) => {}
            }
        }
    }

    /// The next frame, parsed; panics at a close.
    pub async fn next_frame(&mut self) -> Value {
        let text = self
            .next_text()
            .await
            .unwrap_or_else(|code| panic!("the AI SDK socket closed ({code})"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// The frames of request `request_id` up to and including its `end`
    /// (or `error` / `no-active`); frames of other requests are skipped.
    pub async fn until_request_done(&mut self, request_id: &str) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            let f = self.next_frame().await;
            if f["requestId"] != request_id {
                continue;
            }
            let last = matches!(f["type"].as_str(), Some("end" | "error" | "no-active"));
            frames.push(f);
            if last {
                return frames;
            }
        }
    }

    /// Closes the socket (1000).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(T, self.ws.close(None)).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(T, self.ws.next()).await {}
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// Its `id:` (the UI chunk's sequence), if it had one.
    pub id: Option<u64>,
    /// Its `data:` (a UI chunk's JSON, or `[DONE]`).
    pub data: String,
}

impl SseEvent {
    /// The data as JSON (`Null` for `[DONE]`).
    #[must_use]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// An HTTP response read as an event stream, as its bytes arrive.
#[derive(Debug)]
pub struct SseStream {
    stream: TcpStream,
    /// Bytes read and not yet decoded (chunked framing).
    raw: Vec<u8>,
    /// Decoded body bytes not yet split into events.
    body: Vec<u8>,
    /// The response's status.
    pub status: u16,
    /// The response's head (status line and headers), as text.
    pub head: String,
    chunked: bool,
    /// Body bytes still to come (`Content-Length`), when not chunked.
    remaining: Option<usize>,
    /// The body ended (its last chunk, its length, or the connection).
    ended: bool,
    /// The body ended with its chunked terminator (not just a dropped
    /// connection).
    pub clean_end: bool,
}

impl SseStream {
    /// Sends `method path` with `headers` and `body` on a fresh connection
    /// (receive buffer `rcvbuf` when given) and reads the response's head.
    pub async fn request(
        endpoint: &Endpoint,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
        rcvbuf: Option<u32>,
    ) -> Self {
        let mut stream = tcp(endpoint, rcvbuf).await;
        let mut all = vec![("Accept", "text/event-stream")];
        all.extend_from_slice(headers);
        let req = crate::http::request_bytes(endpoint.addr(), method, path, &all, body.as_bytes());
        tokio::time::timeout(T, stream.write_all(&req))
            .await
            .expect("write the request in time")
            .expect("write the request");
        let mut s = Self {
            stream,
            raw: Vec::new(),
            body: Vec::new(),
            status: 0,
            head: String::new(),
            chunked: false,
            remaining: None,
            ended: false,
            clean_end: false,
        };
        let end = loop {
            if let Some(at) = find(&s.raw, b"\r\n\r\n") {
                break at;
            }
            assert!(s.read_more().await, "the response ended before its head");
        };
        s.head = String::from_utf8_lossy(&s.raw[..end]).into_owned();
        s.raw.drain(..end + 4);
        s.status = s
            .head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let lower = s.head.to_ascii_lowercase();
        s.chunked = lower.contains("transfer-encoding: chunked");
        s.remaining = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok());
        if !s.chunked && s.remaining.is_none() && (s.status == 204 || s.status == 304) {
            s.remaining = Some(0);
        }
        s
    }

    /// `POST /v1/ai-sdk/chat`: a new user message `text` in chat `chat`.
    pub async fn post_chat(
        endpoint: &Endpoint,
        chat: &str,
        text: &str,
        headers: &[(&str, &str)],
        rcvbuf: Option<u32>,
    ) -> Self {
        let body = ai_sdk_chat_body(chat, text);
        Self::request(endpoint, "POST", "/v1/ai-sdk/chat", headers, &body, rcvbuf).await
    }

    /// `GET /v1/ai-sdk/chat/{chat}/stream`, with `Last-Event-ID` when given.
    pub async fn resume(
        endpoint: &Endpoint,
        chat: &str,
        last_event_id: Option<u64>,
        headers: &[(&str, &str)],
    ) -> Self {
        let path = format!("/v1/ai-sdk/chat/{chat}/stream");
        let leid = last_event_id.map(|n| n.to_string());
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(n) = leid.as_deref() {
            all.push(("last-event-id", n));
        }
        Self::request(endpoint, "GET", &path, &all, "", None).await
    }

    /// Reads more bytes within [`T`]; `false` at the end of the connection
    /// (or a reset).
    async fn read_more(&mut self) -> bool {
        let mut buf = [0u8; 16 * 1024];
        match tokio::time::timeout(T, self.stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no bytes of the event stream within {T:?}"))
        {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    /// Moves what `raw` holds of the body into `body`.
    fn decode(&mut self) {
        if !self.chunked {
            let n = self
                .remaining
                .map_or(self.raw.len(), |r| r.min(self.raw.len()));
            self.body.extend(self.raw.drain(..n));
            if let Some(r) = self.remaining.as_mut() {
                *r -= n;
                if *r == 0 {
                    self.ended = true;
                    self.clean_end = true;
                }
            }
            return;
        }
        while !self.ended {
            let Some(line) = find(&self.raw, b"\r\n") else {
                return;
            };
            let size = std::str::from_utf8(&self.raw[..line])
                .ok()
                .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
                .unwrap_or_else(|| panic!("a bad chunk size line: {:?}", &self.raw[..line]));
            if self.raw.len() < line + 2 + size + 2 {
                return;
            }
            self.body
                .extend_from_slice(&self.raw[line + 2..line + 2 + size]);
            self.raw.drain(..line + 2 + size + 2);
            if size == 0 {
                self.ended = true;
                self.clean_end = true;
            }
        }
    }

    /// The next event; `None` at the end of the body (or of the
    /// connection).
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            self.decode();
            if let Some(at) = find(&self.body, b"\n\n") {
                let text = String::from_utf8_lossy(&self.body[..at]).into_owned();
                self.body.drain(..at + 2);
                let mut event = SseEvent {
                    id: None,
                    data: String::new(),
                };
                for line in text.lines() {
                    if let Some(id) = line.strip_prefix("id: ") {
                        event.id = id.trim().parse().ok();
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        event.data.push_str(data);
                    }
                }
                return Some(event);
            }
            if self.ended || !self.read_more().await {
                self.ended = true;
                return None;
            }
        }
    }

    /// Every event to the end of the body.
    pub async fn events(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(e) = self.next_event().await {
            events.push(e);
        }
        events
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
