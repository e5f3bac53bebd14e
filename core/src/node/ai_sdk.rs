//! The AI SDK transports on the node ([`ai_sdk`](crate::dialect::ai_sdk)):
//! the sockets of `/v1/ai-sdk/ws`, their requests, and the HTTP event
//! streams.
//!
//! A socket watches no conversation itself: the node keeps it here (its
//! user, its requests by `requestId`, its heartbeat and idle deadline on
//! [`TimerKey::Dialect`]) and intercepts its inputs before the connection
//! machinery sees them ([`Node::ai_sdk_input`]). Each `send` or `resume` on
//! it opens a *request*: an ordinary connection of the node on the chat's
//! conversation, with a number of the node's own ([`REQUEST_CONN`] set),
//! whose rendered frames the render pass sends on the socket. A request is
//! released once its renderer said its last frame; closing the socket
//! releases its requests, and never cancels (disconnect ≠ cancel).

use std::collections::BTreeMap;
use std::time::Instant;

use super::Node;
use crate::api::{Event, Input, Output};
use crate::dialect::ai_sdk::{self, AiSdkConn, Ask, StreamRequest, Via, WsRequest};
use crate::dialect::DialectConn;
use crate::ids::{ConnId, IdSource, RequestId, SessionId, UserId};
use crate::session::ConnState;
use crate::timer::TimerKey;
use crate::wire::{Cancel, Chat, CloseCode, DialectFrame, ServerFrame};

/// The bit that marks the connection numbers the node gives a socket's
/// requests (the runtime numbers its own connections from 1 up).
pub(super) const REQUEST_CONN: u64 = 1 << 63;

/// The most requests a socket may have open at once.
pub(super) const MAX_REQUESTS: usize = 64;

/// One AI SDK socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Socket {
    user: UserId,
    requests: BTreeMap<RequestId, ConnId>,
    idle_at: Instant,
    /// Closing since the node closed it: released at this deadline (the
    /// close timeout) if its client has not gone by then, like a native
    /// connection — a client that stopped reading may never read the close.
    closing: Option<Instant>,
    /// Its queue is full (`WriteBlocked`, not yet `Writable`): its requests,
    /// a new one included, are handed nothing.
    blocked: bool,
}

/// The node's AI SDK sockets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(super) struct Sockets {
    sockets: BTreeMap<ConnId, Socket>,
    next_request: u64,
}

impl Sockets {
    pub(super) fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }
}

impl<I: IdSource> Node<I> {
    /// An AI SDK socket was accepted for `user`.
    pub(super) fn ai_sdk_socket(&mut self, now: Instant, conn: ConnId, user: UserId) {
        if self.shutting_down || self.ai_sdk.sockets.contains_key(&conn) {
            self.out.push_back(Output::Close {
                conn,
                code: CloseCode::GoingAway,
            });
            self.out.push_back(Output::Released { conn });
            return;
        }
        self.ai_sdk.sockets.insert(
            conn,
            Socket {
                user,
                requests: BTreeMap::new(),
                idle_at: now + self.config.idle_timeout,
                closing: None,
                blocked: false,
            },
        );
        self.timers
            .set(TimerKey::Dialect(conn), now + self.config.heartbeat);
        self.out
            .push_back(Output::Event(Event::ConnectionOpened { conn }));
    }

    /// An HTTP event stream: a connection of its own on the chat.
    pub(super) fn ai_sdk_stream(
        &mut self,
        now: Instant,
        conn: ConnId,
        user: UserId,
        request: StreamRequest,
    ) {
        let (chat, ask) = match request {
            StreamRequest::Chat { body } => {
                match ai_sdk::decode_chat_body(&body, &self.config.limits) {
                    Ok(r) => r,
                    Err(e) => {
                        let body = serde_json::to_string(&e).unwrap_or_default();
                        self.send(
                            conn,
                            ServerFrame::Dialect(DialectFrame::new(
                                ai_sdk::STATUS,
                                format!("{} {body}", e.status()),
                            )),
                        );
                        self.out.push_back(Output::Released { conn });
                        return;
                    }
                }
            }
            StreamRequest::Resume { chat, after } => (chat, Ask::Resume { after }),
        };
        self.open_request(now, conn, user, chat, AiSdkConn::new(Via::Sse, ask));
    }

    fn open_request(
        &mut self,
        now: Instant,
        conn: ConnId,
        user: UserId,
        chat: SessionId,
        renderer: AiSdkConn,
    ) {
        let known = self.conns.contains_key(&conn);
        self.on_connect(now, conn, user, chat, None, None);
        if !known && self.conns.contains_key(&conn) {
            self.dialects.insert(conn, DialectConn::AiSdk(renderer));
        }
    }

    /// Takes the inputs of AI SDK sockets; hands back every other input.
    pub(super) fn ai_sdk_input(&mut self, now: Instant, input: Input) -> Option<Input> {
        if self.ai_sdk.is_empty() {
            return Some(input);
        }
        let conn = match &input {
            Input::Frame { conn, .. }
            | Input::BinaryFrame { conn }
            | Input::InvalidUtf8 { conn }
            | Input::FrameTooLarge { conn, .. }
            | Input::Activity { conn }
            | Input::SlowConsumer { conn }
            | Input::WriteStalled { conn, .. }
            | Input::QueueLag { conn, .. }
            | Input::WriteBlocked { conn }
            | Input::Writable { conn }
            | Input::Disconnected { conn } => *conn,
            Input::Shutdown => {
                let sockets: Vec<ConnId> = self.ai_sdk.sockets.keys().copied().collect();
                for socket in sockets {
                    self.close_socket(now, socket, CloseCode::GoingAway);
                }
                return Some(input);
            }
            _ => return Some(input),
        };
        if !self.ai_sdk.sockets.contains_key(&conn) {
            return Some(input);
        }
        match input {
            Input::Frame { bytes, .. } => {
                self.socket_touched(now, conn);
                self.socket_frame(now, conn, &bytes);
            }
            Input::BinaryFrame { .. } => {
                self.socket_touched(now, conn);
                self.socket_error(conn, None, "binary frames are not accepted");
            }
            Input::Activity { .. } => self.socket_touched(now, conn),
            Input::InvalidUtf8 { .. } => self.close_socket(now, conn, CloseCode::InvalidData),
            Input::FrameTooLarge { .. } => self.close_socket(now, conn, CloseCode::TooLarge),
            Input::SlowConsumer { .. } => self.close_socket(now, conn, CloseCode::TooSlow),
            Input::WriteStalled { since, .. }
                if now.saturating_duration_since(since) >= self.config.stall_timeout =>
            {
                self.close_socket(now, conn, CloseCode::TooSlow);
            }
            // The socket's queue is its requests' queue: its credit is
            // theirs, so a request that catches up never overflows it.
            Input::WriteBlocked { .. } => self.socket_blocked(now, conn, true),
            Input::Writable { .. } => self.socket_blocked(now, conn, false),
            Input::Disconnected { .. } => {
                self.close_socket(now, conn, CloseCode::Normal);
                self.release_socket(conn);
            }
            _ => {}
        }
        None
    }

    /// The socket's timer: its heartbeat and its idle deadline. `false`
    /// when `conn` is no socket.
    pub(super) fn ai_sdk_timer(&mut self, now: Instant, conn: ConnId) -> bool {
        let Some(s) = self.ai_sdk.sockets.get(&conn) else {
            return false;
        };
        if let Some(close_at) = s.closing {
            if now >= close_at {
                self.release_socket(conn);
            } else {
                self.timers.set(TimerKey::Dialect(conn), close_at);
            }
            return true;
        }
        if now >= s.idle_at {
            self.close_socket(now, conn, CloseCode::IdleTimeout);
            return true;
        }
        self.out.push_back(Output::Ping { conn });
        self.timers
            .set(TimerKey::Dialect(conn), now + self.config.heartbeat);
        true
    }

    /// Activity on the socket keeps it and its requests from idling out.
    fn socket_touched(&mut self, now: Instant, conn: ConnId) {
        let Some(s) = self.ai_sdk.sockets.get_mut(&conn) else {
            return;
        };
        s.idle_at = now + self.config.idle_timeout;
        let requests: Vec<ConnId> = s.requests.values().copied().collect();
        for r in requests {
            self.touch(now, r);
        }
    }

    fn socket_error(&mut self, conn: ConnId, request_id: Option<&RequestId>, message: &str) {
        let frame = match request_id {
            Some(rid) => ai_sdk::ws_frame("error", rid, Some(message)),
            None => ai_sdk::ws_error_without_request(message),
        };
        self.send(conn, ServerFrame::Dialect(frame));
    }

    fn socket_frame(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        let Some(s) = self.ai_sdk.sockets.get(&conn) else {
            return;
        };
        if s.closing.is_some() {
            return;
        }
        match ai_sdk::decode_ws_frame(bytes, &self.config.limits) {
            WsRequest::Bad {
                request_id,
                message,
            } => self.socket_error(conn, request_id.as_ref(), &message),
            WsRequest::Abort { request_id } => self.abort(now, conn, &request_id),
            WsRequest::Open {
                request_id,
                chat,
                ask,
            } => {
                if s.requests.contains_key(&request_id) {
                    return self.socket_error(
                        conn,
                        Some(&request_id),
                        "a request with this requestId is already open",
                    );
                }
                if s.requests.len() >= MAX_REQUESTS {
                    return self.socket_error(
                        conn,
                        Some(&request_id),
                        "too many requests open on this socket",
                    );
                }
                let user = s.user.clone();
                self.ai_sdk.next_request += 1;
                let request = ConnId(REQUEST_CONN | self.ai_sdk.next_request);
                let via = Via::Ws {
                    socket: conn,
                    request_id: request_id.clone(),
                };
                let blocked = s.blocked;
                self.open_request(now, request, user, chat, AiSdkConn::new(via, ask));
                if blocked {
                    // Its chunks wait like the socket's other requests'.
                    self.on_write_blocked(request);
                }
                if self.conns.contains_key(&request) {
                    if let Some(s) = self.ai_sdk.sockets.get_mut(&conn) {
                        s.requests.insert(request_id, request);
                    }
                }
            }
        }
    }

    /// `abort`: the fenced cancel of the request's reply. Frames of the
    /// request that still come are ignored by the client.
    fn abort(&mut self, now: Instant, socket: ConnId, request_id: &RequestId) {
        let Some(&request) = self
            .ai_sdk
            .sockets
            .get(&socket)
            .and_then(|s| s.requests.get(request_id))
        else {
            return; // already finished: nothing to stop
        };
        match self.conn_state(request) {
            Some(ConnState::Open) => {
                let message_id = match self.dialects.get(&request) {
                    Some(DialectConn::AiSdk(r)) => r.reply().cloned(),
                    _ => None,
                };
                self.on_cancel(
                    now,
                    request,
                    Cancel {
                        message_id,
                        request_id: None,
                    },
                    now,
                );
            }
            // Not open yet: its chat never went to the store.
            _ => self.release_request(now, request),
        }
    }

    /// A request connection opened: a `send` goes out as a native `chat`.
    pub(super) fn ai_sdk_opened(&mut self, now: Instant, conn: ConnId) {
        let Some(DialectConn::AiSdk(r)) = self.dialects.get_mut(&conn) else {
            return;
        };
        if let Some((content, client_message_id)) = r.take_send() {
            self.on_chat(
                now,
                conn,
                Chat {
                    content,
                    request_id: None,
                    client_message_id,
                },
            );
        }
    }

    /// Releases a request (done, aborted early, or its socket closed).
    pub(super) fn release_request(&mut self, now: Instant, conn: ConnId) {
        if let Some(DialectConn::AiSdk(r)) = self.dialects.remove(&conn) {
            if let Some((socket, rid)) = r.socket() {
                if let Some(s) = self.ai_sdk.sockets.get_mut(&socket) {
                    s.requests.remove(rid);
                }
            }
        }
        self.timers.cancel(&TimerKey::Dialect(conn));
        self.release(now, conn);
    }

    /// Closes a socket with `code` and releases its requests (their replies
    /// go on: closing never cancels).
    fn close_socket(&mut self, now: Instant, conn: ConnId, code: CloseCode) {
        let Some(s) = self.ai_sdk.sockets.get_mut(&conn) else {
            return;
        };
        let requests: Vec<ConnId> = std::mem::take(&mut s.requests).into_values().collect();
        let was_closing = s.closing.is_some();
        let close_at = now + self.config.close_timeout;
        s.closing.get_or_insert(close_at);
        for r in requests {
            self.release_request(now, r);
        }
        if !was_closing && code != CloseCode::Normal {
            self.out.push_back(Output::Close { conn, code });
            self.timers.set(TimerKey::Dialect(conn), close_at);
        }
    }

    /// Forgets a socket: its client went away, or did not read its close
    /// within the close timeout.
    fn release_socket(&mut self, conn: ConnId) {
        if self.ai_sdk.sockets.remove(&conn).is_none() {
            return;
        }
        self.timers.cancel(&TimerKey::Dialect(conn));
        self.out.push_back(Output::Released { conn });
        self.out
            .push_back(Output::Event(Event::ConnectionClosed { conn }));
    }

    /// The socket's queue filled (`blocked`) or drained: so did its
    /// requests'.
    fn socket_blocked(&mut self, now: Instant, conn: ConnId, blocked: bool) {
        let Some(s) = self.ai_sdk.sockets.get_mut(&conn) else {
            return;
        };
        s.blocked = blocked;
        let requests: Vec<ConnId> = s.requests.values().copied().collect();
        for r in requests {
            if blocked {
                self.on_write_blocked(r);
            } else {
                self.on_writable(now, r);
            }
        }
    }
}
