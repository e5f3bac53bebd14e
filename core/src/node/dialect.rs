//! Connections of other [dialects](crate::dialect): their connect, their
//! frames in, and the **render pass** that turns what the node sends them
//! into their dialect's frames. The node's decisions do not know dialects:
//! they send native frames; this pass, run after every input and timeout,
//! hands a dialect connection's frames to its renderer and leaves native
//! connections' frames (and their shared `SendMany`) as they are.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;

use super::Node;
use crate::api::{Event, Output};
use crate::dialect::{compat, Dialect, DialectConn, RenderCtx};
use crate::ids::{ConnId, IdSource, SessionId, UserId};
use crate::timer::TimerKey;
use crate::wire::{DialectFrame, ServerFrame};

impl<I: IdSource> Node<I> {
    pub(super) fn on_connect_with(
        &mut self,
        now: Instant,
        conn: ConnId,
        user: UserId,
        session: SessionId,
        dialect: Dialect,
        ip: Option<IpAddr>,
    ) {
        let known = self.conns.contains_key(&conn);
        let renderer = DialectConn::new(dialect, session.clone(), user.clone());
        self.on_connect(now, conn, user, session, None, ip);
        if !known && self.conns.contains_key(&conn) {
            if let Some(r) = renderer {
                self.dialects.insert(conn, r);
            }
        }
    }

    /// A frame from an Open dialect connection: its dialect's codec decides.
    pub(super) fn on_dialect_frame(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(DialectConn::Compat(_)) = self.dialects.get(&conn) else {
            return;
        };
        let request = compat::decode_compat_frame(bytes);
        match request.answer() {
            Some(frame) => self.send(conn, ServerFrame::Dialect(frame)),
            None => {
                if let compat::CompatRequest::Ignored(reason) = request {
                    self.out
                        .push_back(Output::Event(Event::FrameIgnored { conn, reason }));
                }
            }
        }
    }

    pub(super) fn dialect_timer(&mut self, now: Instant, conn: ConnId) {
        if self.ai_sdk_timer(now, conn) {
            return;
        }
        let ctx = RenderCtx {
            now,
            wall_ms: self.wall_ms(now),
            resume_window_ms: self.config.timers.grace_ms,
            compat: &self.config.compat,
        };
        let Some(d) = self.dialects.get_mut(&conn) else {
            return;
        };
        let mut frames = Vec::new();
        d.handle_timeout(&ctx, &mut frames);
        let next = d.poll_timeout();
        // Already rendered: the render pass passes them through.
        for frame in frames {
            self.out.push_back(Output::Send {
                conn,
                frame: ServerFrame::Dialect(frame),
            });
        }
        if let Some(at) = next {
            self.timers.set(TimerKey::Dialect(conn), at);
        }
    }

    /// Renders the outputs from index `from` on for dialect connections.
    pub(super) fn render_dialects(&mut self, now: Instant, from: usize) {
        if self.dialects.is_empty() || self.out.len() <= from {
            return;
        }
        let produced: Vec<Output> = self.out.drain(from..).collect();
        let ctx = RenderCtx {
            now,
            wall_ms: self.wall_ms(now),
            resume_window_ms: self.config.timers.grace_ms,
            compat: &self.config.compat,
        };
        let mut touched = BTreeSet::new();
        let mut done = Vec::new();
        let mut frames: Vec<DialectFrame> = Vec::new();
        for output in produced {
            match output {
                Output::Send { conn, frame } => match self.dialects.get_mut(&conn) {
                    Some(d) => {
                        d.render(&ctx, &frame, &mut frames);
                        push_rendered(&mut self.out, d.send_to(conn), &mut frames);
                        if d.is_done() {
                            done.push(conn);
                        }
                        touched.insert(conn);
                    }
                    None => self.out.push_back(Output::Send { conn, frame }),
                },
                Output::SendMany { conns, frame }
                    if conns.iter().any(|c| self.dialects.contains_key(c)) =>
                {
                    let (dialect, native): (Vec<ConnId>, Vec<ConnId>) = conns
                        .into_iter()
                        .partition(|c| self.dialects.contains_key(c));
                    for conn in dialect {
                        if let Some(d) = self.dialects.get_mut(&conn) {
                            d.render(&ctx, &frame, &mut frames);
                            push_rendered(&mut self.out, d.send_to(conn), &mut frames);
                            if d.is_done() {
                                done.push(conn);
                            }
                            touched.insert(conn);
                        }
                    }
                    match native.as_slice() {
                        [] => {}
                        [conn] => self.out.push_back(Output::Send { conn: *conn, frame }),
                        _ => self.out.push_back(Output::SendMany {
                            conns: native,
                            frame,
                        }),
                    }
                }
                // A socket's request is closed by the node (its idle
                // timeout, a shutdown): it ends with an `error` on the socket.
                Output::Close { conn, code } if conn.0 & super::ai_sdk::REQUEST_CONN != 0 => {
                    if let Some(DialectConn::AiSdk(d)) = self.dialects.get_mut(&conn) {
                        let message = format!("the request was closed ({code})");
                        d.fail(crate::wire::ErrorCode::Unavailable, &message, &mut frames);
                        push_rendered(&mut self.out, d.send_to(conn), &mut frames);
                        done.push(conn);
                    }
                }
                Output::Released { conn } => {
                    if self.dialects.remove(&conn).is_some() {
                        self.timers.cancel(&TimerKey::Dialect(conn));
                        touched.remove(&conn);
                    }
                    self.out.push_back(Output::Released { conn });
                }
                other => self.out.push_back(other),
            }
        }
        // Requests that said their last frame are released (their outputs
        // need no rendering: a `Released`, store operations).
        for conn in done {
            if self.dialects.get(&conn).is_some_and(DialectConn::is_done) {
                touched.remove(&conn);
                self.release_request(now, conn);
            }
        }
        for conn in touched {
            let key = TimerKey::Dialect(conn);
            match self.dialects.get(&conn).and_then(DialectConn::poll_timeout) {
                Some(at) => self.timers.set(key, at),
                None => self.timers.cancel(&key),
            }
        }
    }
}

fn push_rendered(
    out: &mut std::collections::VecDeque<Output>,
    conn: ConnId,
    frames: &mut Vec<DialectFrame>,
) {
    for frame in frames.drain(..) {
        out.push_back(Output::Send {
            conn,
            frame: ServerFrame::Dialect(frame),
        });
    }
}
