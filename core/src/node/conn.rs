//! Connection transitions ([`session`](crate::session)): connect, the
//! snapshot that opens a connection, its one timer (heartbeat, idle, close),
//! frames in, close and release.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::view::ConvView;
use super::{error_frame, live_message, Node, Pending};
use crate::api::{Event, Output};
use crate::ids::{ConnId, ConvKey, IdSource, MessageId, Seq, SessionId, UserId};
use crate::session::{ConnState, ConnTimer, Connection, Cursor, Inbound, EARLY_FRAMES};
use crate::store::{PresenceJoinOp, PresenceLeaveOp, SnapshotOp, StoreOp, StoreReply, Topic};
use crate::timer::TimerKey;
use crate::wire::{
    decode_client_frame, ClientFrame, CloseCode, DecodeError, ErrorCode, FrameError, Hello,
    History, Message, MessageStatus, Pong, Presence, PresenceStatus, Role, ServerFrame,
};

impl<I: IdSource> Node<I> {
    pub(super) fn on_connect(
        &mut self,
        now: Instant,
        conn: ConnId,
        user: UserId,
        session: SessionId,
        resume: Option<(MessageId, Seq)>,
        ip: Option<IpAddr>,
    ) {
        if self.shutting_down || self.conns.contains_key(&conn) {
            // Refused: the core never holds it, so it is released at once.
            self.out.push_back(Output::Close {
                conn,
                code: CloseCode::GoingAway,
            });
            if !self.conns.contains_key(&conn) {
                self.out.push_back(Output::Released { conn });
            }
            return;
        }
        let conv = ConvKey::new(user.clone(), session);
        let view = self.convs.entry(conv.clone()).or_default();
        if view.conns.is_empty() {
            self.out
                .push_back(Output::Subscribe(Topic::Conv(conv.clone())));
        }
        view.conns.insert(conn);
        let user_conns = self.users.entry(user.clone()).or_default();
        if user_conns.is_empty() {
            self.out
                .push_back(Output::Subscribe(Topic::User(user.clone())));
        }
        user_conns.insert(conn);
        let idle_at = now + self.config.idle_timeout;
        self.conns
            .insert(conn, Connection::new(conv.clone(), resume, idle_at));
        self.timers.set(TimerKey::Conn(conn), idle_at);
        if self.admit_conn(now, conn, &user, ip) {
            return;
        }
        self.conn_admitted(now, conn);
    }

    /// Every cap admits `conn` (or none applies): its snapshot and its
    /// presence join go out.
    pub(super) fn conn_admitted(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let conv = c.conv.clone();
        let user = conv.user.clone();
        let at_ms = self.wall_ms(now);
        // Subscribed first, then read: whatever is published after the read
        // arrives as a notice, and the view merges both by seq.
        self.store(
            Pending::Snapshot(conn),
            StoreOp::Snapshot(SnapshotOp {
                conv,
                limit: self.config.history_limit,
                at_ms,
            }),
        );
        self.presence_join(at_ms, user, conn);
    }

    /// `conn` of `user` joins the user's presence in the store.
    fn presence_join(&mut self, at_ms: u64, user: UserId, conn: ConnId) {
        self.store(
            Pending::Presence(user.clone()),
            StoreOp::PresenceJoin(PresenceJoinOp {
                user,
                node: self.config.node_id.clone(),
                conn,
                at_ms,
            }),
        );
    }

    pub(super) fn conn_is_live(&self, conn: ConnId) -> bool {
        matches!(
            self.conn_state(conn),
            Some(ConnState::Open | ConnState::Handshake)
        )
    }

    /// Inbound activity moves the idle deadline. The connection's one timer
    /// is not moved: when it fires early, it re-arms itself (no timer-table
    /// work per frame).
    pub(super) fn touch(&mut self, now: Instant, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.touch(now, self.config.idle_timeout);
        }
    }

    /// The runtime reports that `conn`'s writer has taken nothing from its
    /// queue since `since`: closed with 4008 once that is the stall timeout
    /// ago (the runtime reports it again while it lasts).
    pub(super) fn on_write_stalled(&mut self, now: Instant, conn: ConnId, since: Instant) {
        let stalled = self
            .conns
            .get(&conn)
            .is_some_and(|c| c.is_stalled(now, since, self.config.stall_timeout));
        if stalled {
            self.close(now, conn, CloseCode::TooSlow);
        }
    }

    /// The runtime's look at `conn`'s queued reply text (`queued` bytes):
    /// its lag is that plus the text its cursors are behind by
    /// ([`cursor_lag`](Self::cursor_lag)); closed with 4008 when it falls
    /// further behind past the lag bound ([`Connection::lagging`]).
    pub(super) fn on_queue_lag(&mut self, now: Instant, conn: ConnId, queued: usize) {
        let lag = queued.saturating_add(self.cursor_lag(conn));
        let lagging = self
            .conns
            .get_mut(&conn)
            .is_some_and(|c| c.lagging(lag, self.config.max_lag_bytes));
        if lagging {
            self.close(now, conn, CloseCode::TooSlow);
        }
    }

    /// The reply text `conn` has not been handed yet: for each reply it
    /// watches, the text of the chunks this node could give it now beyond
    /// its cursor. It grows while the connection is blocked (its cursors keep
    /// their place) and is what it would cost to hold for it had delivery
    /// not waited.
    pub(super) fn cursor_lag(&self, conn: ConnId) -> usize {
        // Most connections watch no reply most of the time (an idle one
        // between turns): they are asked about once a look, for each of them,
        // so they cost no look-up of their conversation.
        let Some(c) = self.conns.get(&conn).filter(|c| !c.cursors.is_empty()) else {
            return 0;
        };
        let Some(view) = self.convs.get(&c.conv) else {
            return 0;
        };
        c.cursors
            .iter()
            .filter_map(|(id, cursor)| {
                let r = view.reply(id)?;
                Some(r.text_between(cursor.delivered, r.deliverable()))
            })
            .fold(0, usize::saturating_add)
    }

    /// The runtime's queue for `conn` is full: delivery stops handing it
    /// chunks until it is [writable](Self::on_writable) again.
    pub(super) fn on_write_blocked(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.blocked = true;
        }
    }

    /// `conn`'s writer drained its queue: the next step of delivery (at
    /// once, shared with every other connection that drained meanwhile)
    /// hands it what it missed.
    pub(super) fn on_writable(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !std::mem::take(&mut c.blocked) || c.state != ConnState::Open {
            return;
        }
        self.timers
            .set_earliest(TimerKey::Pump(Box::new(c.conv.clone())), now);
    }

    /// A connection's one deadline: the next of its heartbeat, its idle
    /// deadline, and (Closing) its close deadline.
    pub(super) fn conn_timer(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match c.on_timer(now, self.config.heartbeat) {
            ConnTimer::Release => self.release(now, conn),
            ConnTimer::IdleTimeout => self.close(now, conn, CloseCode::IdleTimeout),
            ConnTimer::Wait { ping, until } => {
                if ping {
                    self.out.push_back(Output::Ping { conn });
                }
                if let Some(at) = until {
                    self.timers.set(TimerKey::Conn(conn), at);
                }
            }
        }
    }

    pub(super) fn send(&mut self, conn: ConnId, frame: ServerFrame) {
        self.out.push_back(Output::Send { conn, frame });
    }

    pub(super) fn close(&mut self, now: Instant, conn: ConnId, code: CloseCode) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(close_at) = c.start_closing(now, self.config.close_timeout) else {
            return;
        };
        self.timers.set(TimerKey::Conn(conn), close_at);
        self.out.push_back(Output::Close { conn, code });
    }

    /// Closed: forget the connection entirely.
    pub(super) fn release(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.timers.cancel(&TimerKey::Conn(conn));
        if let Some(view) = self.convs.get_mut(&c.conv) {
            view.conns.remove(&conn);
        }
        self.tidy_conv(&c.conv);
        let user = c.user().clone();
        if let Some(set) = self.users.get_mut(&user) {
            set.remove(&conn);
            if set.is_empty() {
                self.users.remove(&user);
                self.out
                    .push_back(Output::Unsubscribe(Topic::User(user.clone())));
            }
        }
        let at_ms = self.wall_ms(now);
        if self.conn_caps_released(now, conn) {
            self.store(
                Pending::Presence(user.clone()),
                StoreOp::PresenceLeave(PresenceLeaveOp {
                    user,
                    node: self.config.node_id.clone(),
                    conn,
                    at_ms,
                }),
            );
        }
        self.out.push_back(Output::Released { conn });
        self.out
            .push_back(Output::Event(Event::ConnectionClosed { conn }));
    }

    /// A text frame that is not UTF-8: the stream of frames cannot be
    /// trusted past it (RFC 6455 §8.1), so `error` `bad_request` and close
    /// 1007, even during the handshake (like an oversized frame).
    pub(super) fn on_invalid_utf8(&mut self, now: Instant, conn: ConnId) {
        if self.conn_is_live(conn) {
            let e = FrameError::from(DecodeError::InvalidUtf8);
            self.send(conn, e.to_server_frame());
            self.close(now, conn, CloseCode::InvalidData);
        }
    }

    pub(super) fn on_frame(&mut self, now: Instant, conn: ConnId, frame: Inbound) {
        self.touch(now, conn);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match c.state {
            ConnState::Open => {}
            ConnState::Handshake => {
                if c.early.len() < EARLY_FRAMES {
                    c.early.push_back(frame);
                } else {
                    self.send(
                        conn,
                        error_frame(ErrorCode::RateLimited, "too many frames before hello", None),
                    );
                    self.close(now, conn, CloseCode::Policy);
                }
                return;
            }
            ConnState::Closing => return,
        }
        if self.dialects.contains_key(&conn) {
            match frame {
                Inbound::Text(bytes) => self.on_dialect_frame(conn, &bytes),
                // A dialect answers what it does not know with silence (the
                // compat page must keep its Cancel button): logged only.
                Inbound::Binary => self.out.push_back(Output::Event(Event::FrameIgnored {
                    conn,
                    reason: "binary frame",
                })),
            }
            return;
        }
        let decoded = match frame {
            Inbound::Text(bytes) => decode_client_frame(&bytes, &self.config.limits),
            Inbound::Binary => Err(DecodeError::BinaryFrame.into()),
        };
        match decoded {
            Err(e) => {
                self.send(conn, e.to_server_frame());
                if let Some(code) = e.close() {
                    self.close(now, conn, code);
                }
            }
            Ok(ClientFrame::Ping(p)) => self.send(conn, ServerFrame::Pong(Pong { id: p.id })),
            Ok(ClientFrame::Chat(chat)) => self.on_chat(now, conn, chat),
            Ok(ClientFrame::Cancel(cancel)) => self.on_cancel(now, conn, cancel, now),
            Ok(ClientFrame::Resume(r)) => self.on_resume(now, conn, r.message_id, r.after_seq),
        }
    }

    pub(super) fn on_snapshot(&mut self, now: Instant, conn: ConnId, reply: StoreReply) {
        let StoreReply::Snapshot {
            epoch,
            history,
            live,
        } = reply
        else {
            return;
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.state != ConnState::Handshake {
            return;
        }
        c.state = ConnState::Open;
        let conv = c.conv.clone();
        let mut resume = c.resume.take();
        // An AI SDK resume continues the live reply the snapshot found.
        if let Some(crate::dialect::DialectConn::AiSdk(d)) = self.dialects.get_mut(&conn) {
            resume = resume.or_else(|| d.plan_resume(live.as_ref()));
        }
        let user = conv.user.clone();
        let mut messages = history;
        // What the snapshot shows: settled messages, the live reply, and the
        // live reply's chunks so far.
        let mut shown: BTreeMap<MessageId, Seq> = BTreeMap::new();
        for m in &messages {
            shown.insert(m.message_id.clone(), m.seq);
        }
        let view = self.convs.entry(conv.clone()).or_default();
        let mut reread = Vec::new();
        let live_id = live.as_ref().map(|l| l.message_id.clone());
        // The live reply's user turn, when this snapshot is how this node
        // first learns it (its `started` notice is late): the other open
        // connections begin it below.
        let mut learned = None;
        if let Some(l) = live {
            let known = |v: &ConvView| {
                v.reply(&l.message_id)
                    .is_some_and(|r| r.user_message().is_some())
            };
            let known_before = known(view);
            let ended_here = view.on_snapshot_live(&l, &messages);
            if ended_here {
                // The snapshot was read before the reply ended here: learn
                // the end from the store.
                reread.push(l.message_id.clone());
            }
            // (A reply that ended here already began on the connections
            // that were open then.)
            if !known_before && !ended_here && known(view) {
                learned = view
                    .reply(&l.message_id)
                    .and_then(|r| r.user_message().cloned())
                    .map(|m| (l.message_id.clone(), m));
            }
            let shown_live = live_message(&l);
            shown.insert(l.message_id, shown_live.seq);
            messages.push(shown_live);
        }
        if let Some((id, _)) = &resume {
            messages.retain(|m| &m.message_id != id);
        }
        let c = self
            .conns
            .get_mut(&conn)
            .unwrap_or_else(|| unreachable!("checked above"));
        // The live reply continues from what the snapshot showed; replies the
        // snapshot shows settled are done for this connection (a late notice
        // of one begins nothing here); replies it does not show started after
        // it was read: they are announced below.
        for m in &messages {
            if m.role == Role::Assistant && m.status != MessageStatus::Streaming {
                c.mark_ended(m.message_id.clone());
            }
        }
        if let Some(live_seq) = live_id.as_ref().and_then(|id| shown.get(id)) {
            if let Some(id) = live_id.clone() {
                if resume.as_ref().is_none_or(|(rid, _)| *rid != id) {
                    c.cursors.insert(id, Cursor::at(*live_seq, false));
                }
            }
        }
        let announce: Vec<(MessageId, Message)> = view
            .announced()
            .filter(|(id, _)| !shown.contains_key(*id))
            .filter(|(id, _)| resume.as_ref().is_none_or(|(rid, _)| rid != *id))
            .map(|(id, m)| (id.clone(), m.clone()))
            .collect();
        let node_id = self.config.node_id.clone();
        let heartbeat_ms = duration_ms(self.config.heartbeat);
        self.send(
            conn,
            ServerFrame::Hello(Hello {
                protocol: 1,
                session_id: conv.session.clone(),
                user_id: user,
                connection_id: conn.to_string(),
                node_id,
                heartbeat_ms,
                resume_window_ms: self.config.timers.grace_ms,
            }),
        );
        self.send(conn, ServerFrame::History(History { messages }));
        if let Some(c) = self.conns.get_mut(&conn) {
            let ping_at = now + self.config.heartbeat;
            c.ping_at = Some(ping_at);
            self.timers
                .set(TimerKey::Conn(conn), ping_at.min(c.idle_at));
        }
        self.out
            .push_back(Output::Event(Event::ConnectionOpened { conn }));
        let _ = epoch;
        for (id, user_message) in announce {
            if let Some(c) = self.conns.get_mut(&conn) {
                if c.cursors.contains_key(&id) {
                    continue;
                }
                c.cursors.insert(id.clone(), Cursor::at(0, false));
            }
            self.send_reply_start(conn, &id, &user_message, None);
        }
        let watched: Vec<MessageId> = self
            .conns
            .get(&conn)
            .map(|c| c.cursors.keys().cloned().collect())
            .unwrap_or_default();
        for id in watched {
            self.arm_watch(now, &conv, &id);
        }
        // Before the resume, which may finish the reply here at once: the
        // cursors it gives the other connections keep it in the view.
        if let Some((id, user_message)) = learned {
            self.begin_on_open_conns(now, &conv, &id, &user_message, None, Some(conn));
        }
        if let Some((id, seq)) = resume {
            self.on_resume(now, conn, id, seq);
        }
        for id in reread {
            self.read(now, &conv, &id);
        }
        self.pump(now, &conv);
        self.ai_sdk_opened(now, conn);
        // Frames that arrived during the handshake, in order.
        let early: Vec<Inbound> = self
            .conns
            .get_mut(&conn)
            .map(|c| c.early.drain(..).collect())
            .unwrap_or_default();
        for frame in early {
            self.on_frame(now, conn, frame);
        }
    }

    /// The store answered a presence operation with `offline` while `user`
    /// has live connections on this node: it lost this node's entries (the
    /// node was cut off past their expiry, and a refresh extends only
    /// entries that still exist; or the join failed). Each of those
    /// connections joins again, and the store's `online` follows. The node
    /// checks each user at every due time a presence answer names, so a
    /// loss is found at the latest when the lost entry would have expired.
    pub(super) fn presence_rejoin(&mut self, now: Instant, user: &UserId) {
        let live: Vec<ConnId> = self
            .users
            .get(user)
            .into_iter()
            .flatten()
            .copied()
            .filter(|c| self.conn_is_live(*c))
            .collect();
        let at_ms = self.wall_ms(now);
        for conn in live {
            self.presence_join(at_ms, user.clone(), conn);
        }
    }

    /// A user's presence changed: tell each of their open connections that
    /// has not heard it yet.
    pub(super) fn on_presence(&mut self, user: &UserId, status: PresenceStatus) {
        let conns: Vec<ConnId> = self
            .users
            .get(user)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for conn in conns {
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            if c.state == ConnState::Open && c.presence_seen != status {
                c.presence_seen = status;
                self.send(
                    conn,
                    ServerFrame::Presence(Presence {
                        user_id: user.clone(),
                        status,
                    }),
                );
            }
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
