//! The Vercel AI SDK's chat transports (PROTOCOL.md, "AI SDK transports"):
//! `WebSocketChatTransport` (`GET /v1/ai-sdk/ws`) and the HTTP
//! `DefaultChatTransport` (`POST /v1/ai-sdk/chat`, answered with a
//! server-sent-event stream; `GET /v1/ai-sdk/chat/{id}/stream` to resume).
//!
//! **One request, one connection.** Every AI SDK request — a `send` or a
//! `resume` on the socket, a POST or a resume GET over HTTP — is served by a
//! connection of the node of its own, on the chat's conversation (a chat
//! `id` is the weir `session_id` of the authenticated user): a `send` is a
//! native `chat` on it once it is open, a `resume` is the native resume of
//! the conversation's live reply found by its snapshot
//! ([`AiSdkConn::plan_resume`]). Its renderer ([`AiSdkConn`]) turns what the
//! node sends it into UI message chunks and says when the request is
//! [done](AiSdkConn::is_done); the node then releases it. On the socket
//! these connections are the socket's *requests* (see `node/ai_sdk.rs`):
//! their frames carry the `requestId` and go out on the socket.
//!
//! **Sequence.** A reply is a fixed list of UI message chunks, so a chunk's
//! `sequence` (the SSE event `id`) is a pure function of the reply's
//! position, the same on every node and every resume:
//!
//! | sequence | UI message chunk |
//! | --- | --- |
//! | 0 | `start` (`messageId` = the weir `message_id`) |
//! | 1 | `text-start` (`id` = the `message_id`) |
//! | `seq + 1` | `text-delta` of weir chunk `seq` (1, 2, …) |
//! | `final_seq + 2` | `text-end` |
//! | `final_seq + 3` | `finish` (`finishReason: "stop"`, `messageMetadata: {usage}` when known) / `abort` (`reason: "cancelled"`) / `error` (`errorText`: the failure reason) |
//!
//! A resume after sequence `N` is the native resume after weir chunk
//! `N - 1`; the chunks at or before `N` are not sent again. Chunks are never
//! merged for these connections (the node hands them one weir chunk per
//! frame), since a merged delta would have no sequence of its own.

use serde::Serialize;
use serde_json::Value;

use crate::ids::{ClientMessageId, ConnId, MessageId, RequestId, SessionId};
use crate::store::LiveReply;
use crate::wire::http::HttpError;
use crate::wire::{DialectFrame, ErrorCode, Limits, ReplyStatus, ServerFrame, Usage};

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ask {
    /// A user turn and its reply (a `send`, a POST).
    Send {
        /// The user's text (the text parts of the last `user` message).
        content: String,
        /// The last user message's `id`, when it is a valid idempotency key.
        client_message_id: Option<ClientMessageId>,
    },
    /// The chat's streaming reply, after sequence `after` (`None`: all of it).
    Resume {
        /// The last sequence the client has.
        after: Option<u64>,
    },
}

/// Where a request's frames go and how they look.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Via {
    /// A request on an AI SDK WebSocket: JSON frames with its `requestId`,
    /// sent on the socket `socket`.
    Ws {
        /// The socket's connection.
        socket: ConnId,
        /// The client's `requestId`.
        request_id: RequestId,
    },
    /// An HTTP response: first a status frame (kind [`STATUS`]), then SSE
    /// events.
    Sse,
}

/// The kind of an SSE request's first frame: its text is the HTTP status,
/// then (for an error) a space and the JSON body: `200`, `204`,
/// `409 {"code":…}`. The runtime answers with it; the frames after it are
/// the event stream's text, as it is.
pub const STATUS: &str = "status";

/// An AI SDK HTTP request that is answered with an event stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StreamRequest {
    /// `POST /v1/ai-sdk/chat`: the raw body ([`decode_chat_body`]).
    Chat {
        /// The body.
        body: Vec<u8>,
    },
    /// `GET /v1/ai-sdk/chat/{id}/stream`.
    Resume {
        /// The chat.
        chat: SessionId,
        /// `Last-Event-ID` / `?after=N`.
        after: Option<u64>,
    },
}

/// What a client frame on the AI SDK WebSocket asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WsRequest {
    /// `send` or `resume`: a new request on chat `chat`.
    Open {
        /// The client's `requestId`.
        request_id: RequestId,
        /// The chat (the conversation).
        chat: SessionId,
        /// What it asks.
        ask: Ask,
    },
    /// `abort`: the fenced cancel of that request's reply.
    Abort {
        /// The request.
        request_id: RequestId,
    },
    /// A frame that cannot be served: answered `error` for its `requestId`
    /// when one can be read.
    Bad {
        /// The frame's `requestId`, when it has a valid one.
        request_id: Option<RequestId>,
        /// Why, for the client.
        message: String,
    },
}

/// Decodes one client frame of the AI SDK WebSocket. Never fails: what it
/// cannot serve is [`WsRequest::Bad`].
#[must_use]
pub fn decode_ws_frame(bytes: &[u8], limits: &Limits) -> WsRequest {
    let bad = |request_id, message: &str| WsRequest::Bad {
        request_id,
        message: message.to_owned(),
    };
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(bytes) else {
        return bad(None, "the frame is not a JSON object");
    };
    let request_id = obj
        .get("requestId")
        .and_then(Value::as_str)
        .and_then(|s| RequestId::parse(s.to_owned()).ok());
    let Some(kind) = obj.get("type").and_then(Value::as_str) else {
        return bad(request_id, "the frame has no type");
    };
    let Some(rid) = request_id.clone() else {
        return bad(None, "requestId is missing or not valid");
    };
    match kind {
        "abort" => WsRequest::Abort { request_id: rid },
        "send" | "resume" => {
            let chat = match chat_id(obj.get("id")) {
                Ok(c) => c,
                Err(m) => return bad(request_id, &m),
            };
            let ask = if kind == "resume" {
                match obj.get("lastSequence") {
                    None | Some(Value::Null) => Ask::Resume { after: None },
                    Some(v) => match v.as_u64() {
                        Some(n) => Ask::Resume { after: Some(n) },
                        None => return bad(request_id, "lastSequence must be a whole number"),
                    },
                }
            } else {
                match send_ask(&obj, limits) {
                    Ok(ask) => ask,
                    Err(m) => return bad(request_id, &m),
                }
            };
            WsRequest::Open {
                request_id: rid,
                chat,
                ask,
            }
        }
        _ => bad(request_id, "unknown frame type"),
    }
}

/// Decodes the body of `POST /v1/ai-sdk/chat`: `{id, messages, trigger, …}`.
pub fn decode_chat_body(body: &[u8], limits: &Limits) -> Result<(SessionId, Ask), HttpError> {
    if body.len() > limits.max_frame_bytes {
        return Err(HttpError::new(
            ErrorCode::TooLarge,
            format!("the request body exceeds {} bytes", limits.max_frame_bytes),
        ));
    }
    let bad = |m: String| HttpError::new(ErrorCode::BadRequest, m);
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return Err(bad("the body is not a JSON object".to_owned()));
    };
    let chat = chat_id(obj.get("id")).map_err(bad)?;
    let ask = send_ask(&obj, limits).map_err(bad)?;
    Ok((chat, ask))
}

fn chat_id(v: Option<&Value>) -> Result<SessionId, String> {
    let Some(id) = v.and_then(Value::as_str) else {
        return Err("id (the chat) is missing".to_owned());
    };
    SessionId::parse(id.to_owned()).map_err(|e| format!("id: {e}"))
}

/// A `send`'s user turn: the text parts of the last `user` message.
fn send_ask(obj: &serde_json::Map<String, Value>, limits: &Limits) -> Result<Ask, String> {
    match obj.get("trigger").and_then(Value::as_str) {
        None | Some("submit-message") => {}
        Some("regenerate-message") => {
            return Err(
                "regenerate-message is not supported: weir keeps every reply; \
                        send the user message again instead"
                    .to_owned(),
            )
        }
        Some(_) => return Err("unknown trigger".to_owned()),
    }
    let Some(messages) = obj.get("messages").and_then(Value::as_array) else {
        return Err("messages must be a list".to_owned());
    };
    let Some(last) = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    else {
        return Err("no user message".to_owned());
    };
    let mut text = String::new();
    for part in last
        .get("parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if part.get("type").and_then(Value::as_str) == Some("text") {
            if let Some(t) = part.get("text").and_then(Value::as_str) {
                text.push_str(t);
            }
        }
    }
    let content = text.trim();
    if content.is_empty() {
        return Err("the last user message has no text".to_owned());
    }
    if content.len() > limits.max_content_bytes {
        return Err(format!(
            "the user text is {} bytes; at most {} are accepted",
            content.len(),
            limits.max_content_bytes
        ));
    }
    let client_message_id = last
        .get("id")
        .and_then(Value::as_str)
        .and_then(|id| ClientMessageId::parse(id.to_owned()).ok());
    Ok(Ask::Send {
        content: content.to_owned(),
        client_message_id,
    })
}

/// One AI SDK request's renderer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AiSdkConn {
    via: Via,
    ask: Option<Ask>,
    /// The reply this request streams, once known.
    reply: Option<MessageId>,
    /// The last sequence sent (or the client's `lastSequence`).
    sent_through: Option<u64>,
    /// `start` (socket) or the status (HTTP) went out.
    opened: bool,
    done: bool,
}

impl AiSdkConn {
    /// The renderer of a request.
    #[must_use]
    pub fn new(via: Via, ask: Ask) -> Self {
        let sent_through = match ask {
            Ask::Resume { after } => after,
            Ask::Send { .. } => None,
        };
        Self {
            via,
            ask: Some(ask),
            reply: None,
            sent_through,
            opened: false,
            done: false,
        }
    }

    /// Where its frames go: the socket's connection, or its own.
    #[must_use]
    pub fn send_to(&self, own: ConnId) -> ConnId {
        match &self.via {
            Via::Ws { socket, .. } => *socket,
            Via::Sse => own,
        }
    }

    /// The socket it belongs to, if it is a WebSocket request.
    #[must_use]
    pub fn socket(&self) -> Option<(ConnId, &RequestId)> {
        match &self.via {
            Via::Ws { socket, request_id } => Some((*socket, request_id)),
            Via::Sse => None,
        }
    }

    /// Whether its last frame went out: the node releases it.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The reply it streams, once known.
    #[must_use]
    pub fn reply(&self) -> Option<&MessageId> {
        self.reply.as_ref()
    }

    /// At its snapshot: for a resume, the native resume of the live reply
    /// (`None` when nothing streams: the request is answered `no-active` /
    /// 204 at `hello`).
    pub fn plan_resume(&mut self, live: Option<&LiveReply>) -> Option<(MessageId, u64)> {
        let Some(Ask::Resume { after }) = self.ask else {
            return None;
        };
        let live = live?;
        self.reply = Some(live.message_id.clone());
        // Sequence N is weir chunk N - 1 (0 and 1 come before chunk 1).
        let after_seq = after.map_or(0, |n| n.saturating_sub(1));
        Some((live.message_id.clone(), after_seq))
    }

    /// Once open: the user turn to send, for a `send` (taken once).
    pub fn take_send(&mut self) -> Option<(String, Option<ClientMessageId>)> {
        match self.ask.take() {
            Some(Ask::Send {
                content,
                client_message_id,
            }) => Some((content, client_message_id)),
            other => {
                self.ask = other;
                None
            }
        }
    }

    /// Ends the request with an error (e.g. its connection is closing).
    pub fn fail(&mut self, code: ErrorCode, message: &str, out: &mut Vec<DialectFrame>) {
        if !self.done {
            self.error(code, message, out);
        }
    }

    /// Renders one native frame.
    pub fn render(&mut self, frame: &ServerFrame, out: &mut Vec<DialectFrame>) {
        if self.done {
            return;
        }
        match frame {
            ServerFrame::Hello(_) => {
                if matches!(self.ask, Some(Ask::Resume { .. })) {
                    if self.reply.is_some() {
                        self.open(out);
                    } else {
                        self.no_active(out);
                    }
                }
            }
            ServerFrame::Ack(a) if self.reply.is_none() => {
                self.reply = Some(a.message_id.clone());
                self.open(out);
            }
            ServerFrame::Start(s) if self.is_ours(&s.message_id) => self.prefix(&s.message_id, out),
            ServerFrame::Chunk(c) if self.is_ours(&c.message_id) => {
                self.prefix(&c.message_id, out);
                let id = c.message_id.as_str();
                // Never merged for these connections; should one be, its
                // text goes at its first position and the rest are empty,
                // which keeps the sequence and the whole text.
                // With `--chunk-timestamps` each delta carries its chunk's
                // `ts_ns` as provider metadata (a merged frame's only on its
                // last).
                for seq in c.first_seq()..=c.seq {
                    let delta = if seq == c.first_seq() {
                        &c.delta[..]
                    } else {
                        ""
                    };
                    let ts_ns = c.ts_ns.filter(|_| seq == c.seq);
                    self.chunk(
                        seq + 1,
                        &UiChunk::TextDelta {
                            r#type: "text-delta",
                            id,
                            delta,
                            provider_metadata: ts_ns.map(|ts_ns| Weir {
                                weir: Stamp { ts_ns },
                            }),
                        },
                        out,
                    );
                }
            }
            ServerFrame::End(e) if self.is_ours(&e.message_id) => {
                self.prefix(&e.message_id, out);
                let id = e.message_id.as_str();
                self.chunk(
                    e.final_seq + 2,
                    &UiChunk::Id {
                        r#type: "text-end",
                        id,
                    },
                    out,
                );
                let last = e.final_seq + 3;
                match e.status {
                    ReplyStatus::Completed => self.chunk(
                        last,
                        &UiChunk::Finish {
                            r#type: "finish",
                            finish_reason: "stop",
                            message_metadata: e.usage.as_ref().map(|usage| Meta { usage }),
                        },
                        out,
                    ),
                    ReplyStatus::Cancelled => self.chunk(
                        last,
                        &UiChunk::Abort {
                            r#type: "abort",
                            reason: "cancelled",
                        },
                        out,
                    ),
                    ReplyStatus::Failed => self.chunk(
                        last,
                        &UiChunk::Error {
                            r#type: "error",
                            error_text: e.reason.as_deref().unwrap_or("failed"),
                        },
                        out,
                    ),
                }
                self.finish(out);
            }
            ServerFrame::Error(e) => self.error(e.code, &e.message, out),
            ServerFrame::ResumeUnavailable(r) if self.is_ours(&r.message_id) => {
                let message = format!("the reply cannot be resumed exactly ({:?})", r.reason);
                self.error(ErrorCode::NotFound, &message, out);
            }
            _ => {}
        }
    }

    fn is_ours(&self, id: &MessageId) -> bool {
        self.reply.as_ref() == Some(id)
    }

    /// `start` on the socket; the 200 status over HTTP.
    fn open(&mut self, out: &mut Vec<DialectFrame>) {
        if self.opened {
            return;
        }
        self.opened = true;
        match &self.via {
            Via::Ws { request_id, .. } => out.push(ws_frame("start", request_id, None)),
            Via::Sse => out.push(DialectFrame::new(STATUS, "200".to_owned())),
        }
    }

    fn no_active(&mut self, out: &mut Vec<DialectFrame>) {
        self.done = true;
        match &self.via {
            Via::Ws { request_id, .. } => out.push(ws_frame("no-active", request_id, None)),
            Via::Sse => out.push(DialectFrame::new(STATUS, "204".to_owned())),
        }
    }

    /// Sequences 0 (`start`) and 1 (`text-start`), once.
    fn prefix(&mut self, id: &MessageId, out: &mut Vec<DialectFrame>) {
        self.open(out);
        let id = id.as_str();
        self.chunk(
            0,
            &UiChunk::Start {
                r#type: "start",
                message_id: id,
            },
            out,
        );
        self.chunk(
            1,
            &UiChunk::Id {
                r#type: "text-start",
                id,
            },
            out,
        );
    }

    /// The UI chunk at `sequence`, unless the client has it.
    fn chunk(&mut self, sequence: u64, chunk: &UiChunk<'_>, out: &mut Vec<DialectFrame>) {
        if self.sent_through.is_some_and(|s| sequence <= s) {
            return;
        }
        self.sent_through = Some(sequence);
        let text = match &self.via {
            Via::Ws { request_id, .. } => json(&WsChunk {
                r#type: "chunk",
                request_id,
                sequence,
                chunk,
            }),
            Via::Sse => format!("id: {sequence}\ndata: {}\n\n", json(chunk)),
        };
        out.push(DialectFrame::new("chunk", text));
    }

    /// The request's last frame: `end` / `data: [DONE]`.
    fn finish(&mut self, out: &mut Vec<DialectFrame>) {
        self.done = true;
        match &self.via {
            Via::Ws { request_id, .. } => out.push(ws_frame("end", request_id, None)),
            Via::Sse => out.push(DialectFrame::new("done", "data: [DONE]\n\n".to_owned())),
        }
    }

    fn error(&mut self, code: ErrorCode, message: &str, out: &mut Vec<DialectFrame>) {
        self.done = true;
        match &self.via {
            Via::Ws { request_id, .. } => out.push(ws_frame("error", request_id, Some(message))),
            Via::Sse if !self.opened => {
                let body = json(&HttpError::new(code, message));
                out.push(DialectFrame::new(
                    STATUS,
                    format!("{} {body}", code.http_status()),
                ));
            }
            Via::Sse => {
                let chunk = json(&UiChunk::Error {
                    r#type: "error",
                    error_text: message,
                });
                out.push(DialectFrame::new(
                    "error",
                    format!("data: {chunk}\n\ndata: [DONE]\n\n"),
                ));
            }
        }
    }
}

/// A frame of the socket answering a request: `start`, `end`, `no-active`,
/// `error` (with `errorText`).
#[must_use]
pub fn ws_frame(kind: &'static str, request_id: &RequestId, error: Option<&str>) -> DialectFrame {
    #[derive(Serialize)]
    struct Frame<'a> {
        r#type: &'static str,
        #[serde(rename = "requestId")]
        request_id: &'a RequestId,
        #[serde(rename = "errorText", skip_serializing_if = "Option::is_none")]
        error_text: Option<&'a str>,
    }
    DialectFrame::new(
        kind,
        json(&Frame {
            r#type: kind,
            request_id,
            error_text: error,
        }),
    )
}

/// An `error` for a frame whose `requestId` could not be read: the SDK
/// ignores it (it has no request to fail), but a person reading the socket
/// sees why.
#[must_use]
pub fn ws_error_without_request(message: &str) -> DialectFrame {
    DialectFrame::new(
        "error",
        json(&serde_json::json!({"type": "error", "requestId": "", "errorText": message})),
    )
}

#[derive(Serialize)]
struct WsChunk<'a> {
    r#type: &'static str,
    #[serde(rename = "requestId")]
    request_id: &'a RequestId,
    sequence: u64,
    chunk: &'a UiChunk<'a>,
}

#[derive(Serialize)]
struct Meta<'a> {
    usage: &'a Usage,
}

/// The UI message chunks weir sends.
#[derive(Serialize)]
#[serde(untagged)]
enum UiChunk<'a> {
    Start {
        r#type: &'static str,
        #[serde(rename = "messageId")]
        message_id: &'a str,
    },
    Id {
        r#type: &'static str,
        id: &'a str,
    },
    TextDelta {
        r#type: &'static str,
        id: &'a str,
        delta: &'a str,
        #[serde(rename = "providerMetadata", skip_serializing_if = "Option::is_none")]
        provider_metadata: Option<Weir>,
    },
    Finish {
        r#type: &'static str,
        #[serde(rename = "finishReason")]
        finish_reason: &'static str,
        #[serde(rename = "messageMetadata", skip_serializing_if = "Option::is_none")]
        message_metadata: Option<Meta<'a>>,
    },
    Abort {
        r#type: &'static str,
        reason: &'static str,
    },
    Error {
        r#type: &'static str,
        #[serde(rename = "errorText")]
        error_text: &'a str,
    },
}

/// `providerMetadata` of a `text-delta` under `--chunk-timestamps`:
/// `{"weir":{"ts_ns":N}}`, the producer's append time of the chunk
/// (docs/protocol-notes.md). The SDK's schema allows provider metadata on a
/// text delta (a record of records of JSON values) and keeps the last one
/// on the text part.
#[derive(Serialize)]
struct Weir {
    weir: Stamp,
}

#[derive(Serialize)]
struct Stamp {
    ts_ns: u64,
}

fn json(value: &impl Serialize) -> String {
    // Plain structs of strings and numbers: serializing cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests;
