//! The node: one weir process's decisions, as a sans-IO state machine.
//!
//! A [`Node`] holds the node's connections ([`session`](crate::session)), its
//! views of the conversations they watch, and the replies it produces. It
//! talks to the store only through [`Output::Store`] / [`Input::StoreReply`]
//! and [`Input::Notice`], and to generators through
//! [`Output::StartGenerator`] / [`Input::Generator`].
//!
//! Method kinds, as in quinn-proto: getters (`conn_state`, `is_drained`, …),
//! inputs (`handle_input`, `handle_timeout`), and outputs (`poll_output`,
//! `poll_timeout`). Extra polls and extra `handle_timeout` calls are harmless.
//!
//! How the invariants are kept, in one place:
//! - **Fence (3).** A chunk reaches a connection only after the store
//!   accepted it (the producer delivers on the append's reply, other nodes on
//!   the notice or a read). The store accepts no chunk once a cancel fixed
//!   `final_seq`, so no delivered chunk lies beyond it. A `cancel_result` is
//!   held on the asking connection until that connection has every chunk up
//!   to `final_seq`; `end` is held behind it.
//! - **Order (4).** Each connection has a cursor per reply and is given
//!   exactly the next seq; views hold chunks contiguously from 1 and fill a
//!   gap from the store's log before going on.
//! - **Liveness (6).** Every unsettled reply a connection watches has a watch
//!   timer that re-reads it and reaps it when its owner's lease has run out;
//!   housekeeping sweeps the whole store for replies nobody watches.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::api::{Event, GeneratorEvent, HttpReqId, Input, OpId, Output};

mod http;
use crate::config::Config;
use crate::ids::{ConnId, ConvKey, IdSource, MessageId, SeededIds, Seq, UserId};
use crate::session::{ConnState, Connection, Cursor, HeldCancelResult, PendingChat, EARLY_FRAMES};
use crate::store::{
    epoch_of, AppendOp, CancelOp, LiveReply, Notice, PresenceCheckOp, PresenceJoinOp,
    PresenceLeaveOp, PresenceRefreshOp, ReadOp, ReapOp, RenewOp, SettleOp, SnapshotOp, StartOp,
    StoreError, StoreOp, StoreReply, SweepOp, Token, Topic,
};
use crate::stream::{CancelAnswer, Outcome, SettleRequest, StreamState};
use crate::timer::{TimerKey, Timers};
use crate::wire::{
    decode_client_frame, Ack, CancelResult, CancelStatus, Chunk, ClientFrame, CloseCode, End,
    ErrorCode, ErrorFrame, Hello, History, Message, MessageStatus, Pong, Presence,
    ResumeUnavailable, ResumeUnavailableReason, Role, ServerFrame, Start, Usage, UserMessage,
};

/// Reason on `end` when the store lost a reply (its epoch changed).
pub const STORE_LOST: &str = "store_lost";
/// Reason on `end` for replies stopped by a node shutdown.
pub const SHUTDOWN: &str = "shutdown";

/// What a node knows of one reply it shows to local connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct ReplyView {
    /// The user turn it answers, once known.
    user_message: Option<Message>,
    /// Chunks `1..=deltas.len()`, contiguous.
    deltas: Vec<String>,
    /// Fixed by a cancel or by settling.
    final_seq: Option<Seq>,
    /// The outcome, once settled.
    settled: Option<(Outcome, Option<Usage>)>,
    /// A read from the store is in flight.
    reading: bool,
    /// A notice showed chunks beyond `deltas`: fill from the log.
    gap: bool,
}

impl ReplyView {
    fn len(&self) -> Seq {
        self.deltas.len() as Seq
    }

    /// Adds chunks `first_seq..`, skipping known ones; returns false on a gap.
    fn add(&mut self, first_seq: Seq, deltas: impl IntoIterator<Item = String>) -> bool {
        for (seq, d) in (first_seq..).zip(deltas) {
            if seq == self.len() + 1 {
                self.deltas.push(d);
            } else if seq > self.len() + 1 {
                self.gap = true;
                return false;
            }
        }
        true
    }

    fn fix_final(&mut self, final_seq: Seq) {
        self.final_seq = Some(self.final_seq.map_or(final_seq, |f| f.min(final_seq)));
    }

    fn apply_state(&mut self, state: &StreamState, usage: Option<Usage>) {
        if let Some(f) = state.final_seq() {
            self.fix_final(f);
        }
        if let StreamState::Settled { outcome, .. } = state {
            self.settled.get_or_insert((outcome.clone(), usage));
        }
    }

    /// Whether chunks up to the known end are missing.
    fn needs_read(&self) -> bool {
        !self.reading && (self.gap || self.final_seq.is_some_and(|f| f > self.len()))
    }
}

/// A conversation as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct ConvView {
    conns: BTreeSet<ConnId>,
    replies: BTreeMap<MessageId, ReplyView>,
    /// Replies this view finished with, newest last (at most [`DONE_MEMORY`]):
    /// late notices about them are ignored rather than reviving them.
    done: VecDeque<MessageId>,
}

/// How many finished replies a conversation view remembers.
const DONE_MEMORY: usize = 64;

/// What a client is told when the store answered something this node does
/// not understand ([`StoreError::Internal`]): a bug, and unlike an outage the
/// operation ran, so it may have taken effect.
const STORE_BUG: &str = "the store answered something this server does not understand (a bug); \
                         the request may or may not have taken effect";

impl ConvView {
    fn is_done(&self, id: &MessageId) -> bool {
        self.done.contains(id)
    }

    fn mark_done(&mut self, id: MessageId) {
        if !self.done.contains(&id) {
            self.done.push_back(id);
            while self.done.len() > DONE_MEMORY {
                self.done.pop_front();
            }
        }
    }

    /// The view of a reply that a notice speaks of, unless finished here.
    fn live_reply(&mut self, id: &MessageId) -> Option<&mut ReplyView> {
        if self.is_done(id) {
            return None;
        }
        Some(self.replies.entry(id.clone()).or_default())
    }
}

/// A reply this node produces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Owned {
    conv: ConvKey,
    token: Token,
    /// The last seq the store accepted.
    acked: Seq,
    /// Deltas not yet sent to the store.
    queue: Vec<String>,
    /// The one append at the store: its op, first seq and deltas.
    in_flight: Option<(OpId, Seq, Vec<String>)>,
    /// The generator ended (or was stopped): settle once flushed.
    end: Option<(SettleRequest, Option<Usage>)>,
    settling: Option<OpId>,
    renewing: Option<OpId>,
    generator_running: bool,
    /// The generator's input, kept while a cancel sent before the reply had
    /// an id is at the store: if that cancel fails, the generator starts.
    deferred: Option<Vec<Message>>,
    /// A cancel or a fence stopped the reply: generator events are dropped.
    stopped: bool,
}

/// What an operation's reply is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Pending {
    Snapshot(ConnId),
    Start(ConnId, ConvKey),
    Cancel {
        conn: ConnId,
        conv: ConvKey,
        request_id: Option<crate::ids::RequestId>,
        /// The reply named by the cancel, if it named one.
        message_id: Option<MessageId>,
        /// When the cancel frame arrived.
        since: Instant,
    },
    Append(MessageId),
    Settle(MessageId),
    Renew(MessageId),
    Read(ConvKey, MessageId),
    Reap,
    Housekeeping,
    Presence(UserId),
    HttpStart(HttpReqId, ConvKey),
    HttpCancel(HttpReqId, ConvKey, Option<MessageId>),
    HttpList(HttpReqId, crate::ids::SessionId),
    HttpPresence(HttpReqId, UserId),
}

/// One weir node. See the [crate docs](crate) for the run loop.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Node<I = SeededIds> {
    config: Config,
    ids: I,
    /// `(monotonic, wall ms)` at the last wall-clock anchor.
    anchor: (Instant, u64),
    conns: BTreeMap<ConnId, Connection>,
    conn_users: BTreeMap<ConnId, UserId>,
    users: BTreeMap<UserId, BTreeSet<ConnId>>,
    convs: BTreeMap<ConvKey, ConvView>,
    owned: BTreeMap<MessageId, Owned>,
    pending: BTreeMap<OpId, Pending>,
    next_op: u64,
    timers: Timers,
    out: VecDeque<Output>,
    shutting_down: bool,
}

impl<I: IdSource> Node<I> {
    /// A node that starts at monotonic `now`, when the wall clock reads
    /// `unix_ms`. Its first outputs subscribe to its control topic.
    pub fn new(config: Config, ids: I, now: Instant, unix_ms: u64) -> Self {
        let mut node = Self {
            anchor: (now, unix_ms),
            ids,
            conns: BTreeMap::new(),
            conn_users: BTreeMap::new(),
            users: BTreeMap::new(),
            convs: BTreeMap::new(),
            owned: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_op: 0,
            timers: Timers::default(),
            out: VecDeque::new(),
            shutting_down: false,
            config,
        };
        node.out
            .push_back(Output::Subscribe(Topic::Node(node.config.node_id.clone())));
        node.timers
            .set(TimerKey::Housekeeping, now + node.config.housekeeping);
        node
    }

    // ----- getters -----

    /// The node's settings.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A connection's state; `None` once Closed (released) or never known.
    #[must_use]
    pub fn conn_state(&self, conn: ConnId) -> Option<ConnState> {
        self.conns.get(&conn).map(|c| c.state)
    }

    /// How many connections the node holds.
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// The replies this node produces right now.
    pub fn owned_replies(&self) -> impl Iterator<Item = &MessageId> {
        self.owned.keys()
    }

    /// Whether the node holds any per-conversation, per-reply or
    /// per-connection state, or awaits a store reply for one (invariant 7
    /// asks for none once everything closed and every window passed).
    #[must_use]
    pub fn holds_state(&self) -> bool {
        !(self.conns.is_empty()
            && self.users.is_empty()
            && self.convs.is_empty()
            && self.owned.is_empty()
            && self
                .pending
                .values()
                .all(|p| matches!(p, Pending::Housekeeping | Pending::Reap))
            && self
                .timers
                .keys()
                .all(|k| matches!(k, TimerKey::Housekeeping)))
    }

    /// After [`Input::Shutdown`]: whether every connection is released and
    /// every reply this node produced is settled, so the process may exit.
    #[must_use]
    pub fn is_drained(&self) -> bool {
        self.shutting_down && self.conns.is_empty() && self.owned.is_empty()
    }

    /// The wall-clock time at `now`, in Unix milliseconds.
    #[must_use]
    pub fn wall_ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.anchor.0);
        self.anchor.1 + u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    }

    // ----- outputs -----

    /// The next thing to do, if any. Drain it after every input and timeout.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The earliest deadline: call [`Node::handle_timeout`] then.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ----- inputs -----

    /// Feeds one input at monotonic time `now`.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Connect {
                conn,
                user,
                session,
                resume,
            } => self.on_connect(now, conn, user, session, resume),
            Input::Frame { conn, bytes } => self.on_frame(now, conn, bytes),
            Input::FrameTooLarge { conn, len } => {
                let limit = self.config.limits.max_frame_bytes;
                if self.conn_is_live(conn) {
                    self.send(
                        conn,
                        error_frame(
                            ErrorCode::TooLarge,
                            format!("frame of {len} bytes exceeds {limit}"),
                            None,
                        ),
                    );
                    self.close(now, conn, CloseCode::TooLarge);
                }
            }
            Input::Activity { conn } => self.touch(now, conn),
            Input::SlowConsumer { conn } => self.close(now, conn, CloseCode::TooSlow),
            Input::Disconnected { conn } => self.release(now, conn),
            Input::StoreReply { op, result } => self.on_store_reply(now, op, result),
            Input::Notice(n) => self.on_notice(now, n),
            Input::Generator { message_id, event } => self.on_generator(now, message_id, event),
            Input::Http { req, user, request } => self.on_http(now, req, user, request),
            Input::WallClock { unix_ms } => self.anchor = (now, unix_ms),
            Input::Shutdown => self.on_shutdown(now),
        }
    }

    /// Fires every deadline due at `now`, each once, earliest first.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(key) = self.timers.pop_due(now) {
            match key {
                TimerKey::Conn(conn) => self.conn_timer(now, conn),
                TimerKey::Renew(id) => self.renew(now, &id),
                TimerKey::OwnerRetry(id) => self.owner_flush(now, &id),
                TimerKey::Watch(w) => {
                    let (conv, id) = *w;
                    self.watch_fired(now, &conv, &id);
                }
                TimerKey::Presence(user) => {
                    let at_ms = self.wall_ms(now);
                    self.store(
                        Pending::Presence(user.clone()),
                        StoreOp::PresenceCheck(PresenceCheckOp { user, at_ms }),
                    );
                }
                TimerKey::Housekeeping => self.housekeeping(now),
            }
        }
    }

    // ----- connections -----

    fn on_connect(
        &mut self,
        now: Instant,
        conn: ConnId,
        user: UserId,
        session: crate::ids::SessionId,
        resume: Option<(MessageId, Seq)>,
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
        self.conn_users.insert(conn, user.clone());
        let idle_at = now + self.config.idle_timeout;
        self.conns
            .insert(conn, Connection::new(conv.clone(), resume, idle_at));
        self.timers.set(TimerKey::Conn(conn), idle_at);
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

    fn conn_is_live(&self, conn: ConnId) -> bool {
        matches!(
            self.conn_state(conn),
            Some(ConnState::Open | ConnState::Handshake)
        )
    }

    /// Inbound activity moves the idle deadline. The connection's one timer
    /// is not moved: when it fires early, it re-arms itself (no timer-table
    /// work per frame).
    fn touch(&mut self, now: Instant, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.state != ConnState::Closing {
                c.idle_at = now + self.config.idle_timeout;
            }
        }
    }

    /// A connection's one deadline: the next of its heartbeat, its idle
    /// deadline, and (Closing) its close deadline.
    fn conn_timer(&mut self, now: Instant, conn: ConnId) {
        let heartbeat = self.config.heartbeat;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match c.state {
            ConnState::Closing => {
                if c.close_at.is_some_and(|at| now >= at) {
                    self.release(now, conn);
                } else if let Some(at) = c.close_at {
                    self.timers.set(TimerKey::Conn(conn), at);
                }
            }
            ConnState::Handshake | ConnState::Open => {
                if now >= c.idle_at {
                    self.close(now, conn, CloseCode::IdleTimeout);
                    return;
                }
                if c.ping_at.is_some_and(|at| now >= at) {
                    c.ping_at = Some(now + heartbeat);
                    self.out.push_back(Output::Ping { conn });
                }
                let next = c.ping_at.map_or(c.idle_at, |p| p.min(c.idle_at));
                self.timers.set(TimerKey::Conn(conn), next);
            }
        }
    }

    fn send(&mut self, conn: ConnId, frame: ServerFrame) {
        self.out.push_back(Output::Send { conn, frame });
    }

    fn close(&mut self, now: Instant, conn: ConnId, code: CloseCode) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.state == ConnState::Closing {
            return;
        }
        c.state = ConnState::Closing;
        c.early.clear();
        let close_at = now + self.config.close_timeout;
        c.close_at = Some(close_at);
        self.timers.set(TimerKey::Conn(conn), close_at);
        self.out.push_back(Output::Close { conn, code });
    }

    /// Closed: forget the connection entirely.
    fn release(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.timers.cancel(&TimerKey::Conn(conn));
        if let Some(view) = self.convs.get_mut(&c.conv) {
            view.conns.remove(&conn);
        }
        self.tidy_conv(&c.conv);
        if let Some(user) = self.conn_users.remove(&conn) {
            if let Some(set) = self.users.get_mut(&user) {
                set.remove(&conn);
                if set.is_empty() {
                    self.users.remove(&user);
                    self.out
                        .push_back(Output::Unsubscribe(Topic::User(user.clone())));
                }
            }
            let at_ms = self.wall_ms(now);
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

    /// Drops what a conversation view no longer needs.
    fn tidy_conv(&mut self, conv: &ConvKey) {
        let Some(view) = self.convs.get_mut(conv) else {
            return;
        };
        let watched: BTreeSet<MessageId> = view
            .conns
            .iter()
            .filter_map(|c| self.conns.get(c))
            .flat_map(|c| c.cursors.keys().cloned())
            .collect();
        let handshaking = view.conns.iter().any(|c| {
            self.conns
                .get(c)
                .is_some_and(|c| c.state == ConnState::Handshake)
        });
        let mut dropped = Vec::new();
        view.replies.retain(|id, r| {
            // A settled reply nobody still reads is done; while a connection
            // waits for its snapshot, keep it (the snapshot may predate the end).
            let keep = r.reading
                || watched.contains(id)
                || (handshaking && r.settled.is_some())
                || (r.settled.is_none() && !view.conns.is_empty());
            if !keep {
                dropped.push(id.clone());
            }
            keep
        });
        for id in dropped {
            self.timers.cancel(&watch_key(conv, &id));
            view.mark_done(id);
        }
        let view_empty = view.conns.is_empty() && !view.replies.values().any(|r| r.reading);
        if view_empty {
            let ids: Vec<MessageId> = view.replies.keys().cloned().collect();
            for id in ids {
                self.timers.cancel(&watch_key(conv, &id));
            }
            self.convs.remove(conv);
            self.out
                .push_back(Output::Unsubscribe(Topic::Conv(conv.clone())));
        }
    }

    fn on_frame(&mut self, now: Instant, conn: ConnId, bytes: Vec<u8>) {
        self.touch(now, conn);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match c.state {
            ConnState::Open => {}
            ConnState::Handshake => {
                if c.early.len() < EARLY_FRAMES {
                    c.early.push_back(bytes);
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
        match decode_client_frame(&bytes, &self.config.limits) {
            Err(e) => {
                self.send(conn, e.to_server_frame());
                if let Some(code) = e.close() {
                    self.close(now, conn, code);
                }
            }
            Ok(ClientFrame::Ping(p)) => self.send(conn, ServerFrame::Pong(Pong { id: p.id })),
            Ok(ClientFrame::Chat(chat)) => self.on_chat(now, conn, chat),
            Ok(ClientFrame::Cancel(cancel)) => {
                self.on_cancel(now, now, conn, cancel.message_id, cancel.request_id)
            }
            Ok(ClientFrame::Resume(r)) => self.on_resume(now, conn, r.message_id, r.after_seq),
        }
    }

    fn on_chat(&mut self, now: Instant, conn: ConnId, chat: crate::wire::Chat) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let conv = c.conv.clone();
        let busy = c.pending_chat.is_some()
            || self.convs.get(&conv).is_some_and(|v| {
                v.replies
                    .values()
                    .any(|r| r.settled.is_none() && r.final_seq.is_none())
            });
        // A repeated idempotency key must get its original ack, so only the
        // store may answer chats that carry one.
        if busy && chat.client_message_id.is_none() {
            self.send(
                conn,
                error_frame(
                    ErrorCode::Busy,
                    "a reply is still streaming in this conversation",
                    chat.request_id,
                ),
            );
            return;
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.pending_chat = Some(PendingChat {
                request_id: chat.request_id,
                cancel: None,
            });
        }
        let nonce = self.ids.next_u64();
        let at_ms = self.wall_ms(now);
        self.store(
            Pending::Start(conn, conv.clone()),
            StoreOp::Start(StartOp {
                conv,
                content: chat.content,
                client_message_id: chat.client_message_id,
                nonce,
                owner: self.config.node_id.clone(),
                context_limit: self.config.context_limit,
                at_ms,
            }),
        );
    }

    fn on_cancel(
        &mut self,
        since: Instant,
        now: Instant,
        conn: ConnId,
        message_id: Option<MessageId>,
        request_id: Option<crate::ids::RequestId>,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if message_id.is_none() {
            if let Some(p) = c.pending_chat.as_mut() {
                // Cancel right after Send: the reply has no id yet; cancel it
                // as soon as it has one.
                p.cancel = Some((request_id, now));
                return;
            }
        }
        let conv = c.conv.clone();
        let at_ms = self.wall_ms(now);
        self.store(
            Pending::Cancel {
                conn,
                conv: conv.clone(),
                request_id,
                message_id: message_id.clone(),
                since,
            },
            StoreOp::Cancel(CancelOp {
                conv,
                message_id,
                at_ms,
            }),
        );
    }

    fn on_resume(&mut self, now: Instant, conn: ConnId, id: MessageId, after_seq: Seq) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let conv = c.conv.clone();
        c.cursors.insert(id.clone(), Cursor::at(after_seq, true));
        let view = self.convs.entry(conv.clone()).or_default();
        let r = view.replies.entry(id.clone()).or_default();
        if r.settled.is_none() || r.len() < r.final_seq.unwrap_or(0) || r.user_message.is_none() {
            // What this node knows may be behind: read the truth.
            self.read(now, &conv, &id);
        } else {
            self.pump(now, &conv);
        }
    }

    // ----- delivery -----

    /// Gives every open connection of `conv` what it can have now, in order.
    fn pump(&mut self, now: Instant, conv: &ConvKey) {
        let Some(view) = self.convs.get_mut(conv) else {
            return;
        };
        // Chunks are grouped by (reply, seq): a chunk going to many
        // connections is one `SendMany` with one copy of its delta. Each
        // connection's chunks still go out in seq order, and its other frames
        // (`cancel_result`, `end`) after all of them.
        let mut chunks: BTreeMap<(&MessageId, Seq), Vec<ConnId>> = BTreeMap::new();
        let mut tails = Vec::new();
        let mut resumed = Vec::new();
        let mut answered = Vec::new();
        let mut any_ended = false;
        for conn_id in &view.conns {
            let Some(c) = self.conns.get_mut(conn_id) else {
                continue;
            };
            if c.state != ConnState::Open {
                continue;
            }
            let mut ended = Vec::new();
            for (id, cursor) in c.cursors.iter_mut() {
                let Some((id, r)) = view.replies.get_key_value(id) else {
                    continue;
                };
                let limit = r.final_seq.map_or(r.len(), |f| f.min(r.len()));
                while cursor.delivered < limit {
                    cursor.delivered += 1;
                    chunks
                        .entry((id, cursor.delivered))
                        .or_default()
                        .push(*conn_id);
                }
                if let Some(h) = cursor.held_cancel.as_ref() {
                    if cursor.delivered >= h.final_seq {
                        let h = cursor.held_cancel.take();
                        if let Some(h) = h {
                            answered.push((*conn_id, h.status, h.since));
                            tails.push((*conn_id, cancel_result(h, Some(id.clone()))));
                        }
                    }
                }
                if let (Some((outcome, usage)), Some(final_seq)) = (&r.settled, r.final_seq) {
                    if cursor.held_cancel.is_none() && cursor.delivered >= final_seq {
                        tails.push((
                            *conn_id,
                            ServerFrame::End(End {
                                message_id: id.clone(),
                                status: outcome.status(),
                                final_seq,
                                reason: outcome.reason().map(str::to_owned),
                                usage: *usage,
                            }),
                        ));
                        if cursor.resumed {
                            resumed.push(*conn_id);
                        }
                        ended.push(id.clone());
                    }
                }
            }
            any_ended |= !ended.is_empty();
            for id in ended {
                c.cursors.remove(&id);
                c.mark_ended(id);
            }
        }
        for ((id, seq), conns) in chunks {
            let idx = usize::try_from(seq - 1).unwrap_or(usize::MAX);
            let delta = view
                .replies
                .get(id)
                .and_then(|r| r.deltas.get(idx))
                .cloned()
                .unwrap_or_default();
            let frame = ServerFrame::Chunk(Chunk {
                message_id: id.clone(),
                seq,
                delta,
                from_seq: None,
            });
            match conns.as_slice() {
                [conn] => self.out.push_back(Output::Send { conn: *conn, frame }),
                _ => self.out.push_back(Output::SendMany { conns, frame }),
            }
        }
        let needs_read: Vec<MessageId> = view
            .replies
            .iter()
            .filter(|(_, r)| r.needs_read())
            .map(|(id, _)| id.clone())
            .collect();
        let settled_any = view.replies.values().any(|r| r.settled.is_some());
        for (conn, frame) in tails {
            self.send(conn, frame);
        }
        for (conn, status, since) in answered {
            self.out.push_back(Output::Event(Event::CancelAnswered {
                conn,
                status,
                latency: now.saturating_duration_since(since),
            }));
        }
        for conn in resumed {
            self.out
                .push_back(Output::Event(Event::Resumed { conn, exact: true }));
        }
        for id in needs_read {
            self.read(now, conv, &id);
        }
        // Tidying walks every connection's cursors: only when something
        // could have become droppable.
        if any_ended || settled_any {
            self.tidy_conv(conv);
        }
    }

    fn read(&mut self, now: Instant, conv: &ConvKey, id: &MessageId) {
        let Some(r) = self.convs.get_mut(conv).and_then(|v| v.replies.get_mut(id)) else {
            return;
        };
        if r.reading {
            return;
        }
        r.reading = true;
        r.gap = false;
        let after_seq = r.len();
        let at_ms = self.wall_ms(now);
        self.store(
            Pending::Read(conv.clone(), id.clone()),
            StoreOp::Read(ReadOp {
                conv: conv.clone(),
                message_id: id.clone(),
                after_seq,
                at_ms,
            }),
        );
    }

    /// A watched reply that is not settled gets re-read now and then.
    fn arm_watch(&mut self, now: Instant, conv: &ConvKey, id: &MessageId) {
        if self.owned.contains_key(id) {
            return;
        }
        let unsettled = self
            .convs
            .get(conv)
            .and_then(|v| v.replies.get(id))
            .is_some_and(|r| r.settled.is_none());
        let key = watch_key(conv, id);
        if unsettled {
            self.timers.set(key, now + self.config.watch_interval);
        } else {
            self.timers.cancel(&key);
        }
    }

    fn watch_fired(&mut self, now: Instant, conv: &ConvKey, id: &MessageId) {
        if self
            .convs
            .get(conv)
            .is_some_and(|v| v.replies.contains_key(id))
        {
            self.read(now, conv, id);
        }
    }

    /// A new reply appeared in `conv`: every open connection gets its user
    /// turn and `start`, and a cursor.
    fn announce(
        &mut self,
        now: Instant,
        conv: &ConvKey,
        id: &MessageId,
        user_message: &Message,
        sender: Option<(ConnId, Option<crate::ids::RequestId>)>,
    ) {
        let Some(r) = self.convs.get_mut(conv).and_then(|v| v.live_reply(id)) else {
            return;
        };
        if r.user_message.is_some() {
            return;
        }
        r.user_message = Some(user_message.clone());
        let conns: Vec<ConnId> = self
            .convs
            .get(conv)
            .map(|v| v.conns.iter().copied().collect())
            .unwrap_or_default();
        for conn in conns {
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            // A late `started` notice must not begin again what this
            // connection already finished (e.g. by a resume, which needs no
            // `start`).
            if c.state != ConnState::Open || c.cursors.contains_key(id) || c.ended.contains(id) {
                continue;
            }
            c.cursors.insert(id.clone(), Cursor::at(0, false));
            let request_id = match &sender {
                Some((s, rid)) if *s == conn => rid.clone(),
                _ => None,
            };
            self.send_reply_start(conn, id, user_message, request_id);
        }
        self.arm_watch(now, conv, id);
        self.pump(now, conv);
    }

    /// A reply begins on a connection: its user turn, then `start`.
    fn send_reply_start(
        &mut self,
        conn: ConnId,
        id: &MessageId,
        user_message: &Message,
        request_id: Option<crate::ids::RequestId>,
    ) {
        self.send(
            conn,
            ServerFrame::UserMessage(UserMessage {
                message_id: user_message.message_id.clone(),
                content: user_message.content.clone(),
                created_at_ms: user_message.created_at_ms,
                request_id,
            }),
        );
        self.send(
            conn,
            ServerFrame::Start(Start {
                message_id: id.clone(),
                reply_to: user_message.message_id.clone(),
            }),
        );
    }

    // ----- store replies -----

    fn store(&mut self, why: Pending, request: StoreOp) -> OpId {
        self.next_op += 1;
        let op = OpId(self.next_op);
        self.pending.insert(op, why);
        self.out.push_back(Output::Store { op, request });
        op
    }

    fn on_store_reply(&mut self, now: Instant, op: OpId, result: Result<StoreReply, StoreError>) {
        let Some(why) = self.pending.remove(&op) else {
            return;
        };
        let reply = match result {
            Ok(reply) => reply,
            Err(error) => {
                let event = match &error {
                    StoreError::Unavailable(_) => Event::StoreUnavailable { op },
                    StoreError::Internal(reason) => Event::StoreInternal {
                        op,
                        reason: reason.clone(),
                    },
                };
                self.out.push_back(Output::Event(event));
                self.on_store_error(now, why, &error);
                return;
            }
        };
        match why {
            Pending::Snapshot(conn) => self.on_snapshot(now, conn, reply),
            Pending::Start(conn, conv) => self.on_started(now, conn, conv, reply),
            Pending::Cancel {
                conn,
                conv,
                request_id,
                since,
                ..
            } => self.on_cancel_reply(now, conn, &conv, (request_id, since), reply),
            Pending::Append(id) => self.on_append_reply(now, &id, op, reply),
            Pending::Settle(id) => self.on_settle_reply(now, &id, reply),
            Pending::Renew(id) => self.on_renew_reply(now, &id, reply),
            Pending::Read(conv, id) => self.on_read_reply(now, &conv, &id, reply),
            Pending::Reap | Pending::Housekeeping => {}
            Pending::HttpStart(req, conv) => self.on_http_started(now, req, conv, reply),
            Pending::HttpCancel(req, conv, asked) => {
                self.on_http_cancel(now, req, &conv, asked, reply)
            }
            Pending::HttpList(req, session) => self.on_http_list(req, session, reply),
            Pending::HttpPresence(req, user) => self.on_http_presence(req, user, reply),
            Pending::Presence(user) => {
                if let StoreReply::Presence {
                    due_ms: Some(due), ..
                } = reply
                {
                    let at = self.mono(now, due);
                    self.timers.set_earliest(TimerKey::Presence(user), at);
                }
            }
        }
    }

    /// Monotonic time for wall-clock `unix_ms`.
    fn mono(&self, now: Instant, unix_ms: u64) -> Instant {
        let wall_now = self.wall_ms(now);
        now + Duration::from_millis(unix_ms.saturating_sub(wall_now))
    }

    /// A store operation failed. The node's own state recovers the same way
    /// whatever the error (retries, a held reply going on); what the client
    /// is told differs: `unavailable` with what did not happen when the store
    /// could not be reached, `internal` ([`STORE_BUG`]) when it answered
    /// something this node does not understand.
    fn on_store_error(&mut self, now: Instant, why: Pending, error: &StoreError) {
        let failed = |msg: &str, rid| match error {
            StoreError::Unavailable(_) => error_frame(ErrorCode::Unavailable, msg, rid),
            StoreError::Internal(_) => error_frame(ErrorCode::Internal, STORE_BUG, rid),
        };
        match why {
            Pending::Snapshot(conn) => {
                self.send(conn, failed("the store cannot be reached", None));
                self.close(now, conn, CloseCode::GoingAway);
            }
            Pending::Start(conn, _) => {
                if let Some(p) = self
                    .conns
                    .get_mut(&conn)
                    .and_then(|c| c.pending_chat.take())
                {
                    self.send(
                        conn,
                        failed(
                            // A request that timed out may still be carried
                            // out once the store is back: say so, and let the
                            // client retry with its `client_message_id`.
                            "the store cannot be reached; the message may not have been stored \
                             (retry with the same client_message_id to find out)",
                            p.request_id,
                        ),
                    );
                    if let Some((cancel_rid, _)) = p.cancel {
                        self.send(
                            conn,
                            failed("the store cannot be reached; nothing to cancel", cancel_rid),
                        );
                    }
                }
            }
            Pending::Cancel {
                conn,
                request_id,
                message_id,
                ..
            } => {
                self.send(
                    conn,
                    failed(
                        "the store cannot be reached; nothing was cancelled",
                        request_id,
                    ),
                );
                // A reply held back for a cancel that did not happen goes on.
                let deferred = message_id
                    .as_ref()
                    .and_then(|id| self.owned.get_mut(id))
                    .filter(|o| !o.stopped)
                    .and_then(|o| {
                        let context = o.deferred.take()?;
                        o.generator_running = true;
                        Some((o.conv.clone(), context))
                    });
                if let (Some((conv, context)), Some(message_id)) = (deferred, message_id) {
                    self.out.push_back(Output::StartGenerator {
                        message_id,
                        conv,
                        context,
                    });
                }
            }
            Pending::Append(id) => {
                if let Some(o) = self.owned.get_mut(&id) {
                    // Keep the batch: a retry with the same seqs cannot duplicate.
                    if let Some((_, first, deltas)) = o.in_flight.take() {
                        let mut q = deltas;
                        q.append(&mut o.queue);
                        o.queue = q;
                        debug_assert_eq!(first, o.acked + 1);
                    }
                    let key = TimerKey::OwnerRetry(id);
                    self.timers.set(key, now + self.config.store_retry);
                }
            }
            Pending::Settle(id) => {
                if let Some(o) = self.owned.get_mut(&id) {
                    o.settling = None;
                    let key = TimerKey::OwnerRetry(id);
                    self.timers.set(key, now + self.config.store_retry);
                }
            }
            Pending::Renew(id) => {
                if let Some(o) = self.owned.get_mut(&id) {
                    o.renewing = None;
                }
            }
            Pending::Read(conv, id) => {
                if let Some(r) = self
                    .convs
                    .get_mut(&conv)
                    .and_then(|v| v.replies.get_mut(&id))
                {
                    r.reading = false;
                    self.timers
                        .set(watch_key(&conv, &id), now + self.config.store_retry);
                }
                self.tidy_conv(&conv);
            }
            Pending::HttpStart(req, _)
            | Pending::HttpCancel(req, _, _)
            | Pending::HttpList(req, _)
            | Pending::HttpPresence(req, _) => self.http_store_error(req, error),
            Pending::Reap | Pending::Housekeeping | Pending::Presence(_) => {}
        }
    }

    fn on_snapshot(&mut self, now: Instant, conn: ConnId, reply: StoreReply) {
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
        let resume = c.resume.take();
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
        if let Some(l) = live {
            if view.is_done(&l.message_id) {
                // The snapshot was read before the reply ended here: learn
                // the end from the store.
                reread.push(l.message_id.clone());
            }
            let r = view.replies.entry(l.message_id.clone()).or_default();
            let _ = r.add(1, l.deltas.iter().cloned());
            r.apply_state(&l.state, None);
            if r.user_message.is_none() {
                r.user_message = messages
                    .iter()
                    .find(|m| m.message_id == l.reply_to)
                    .cloned();
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
        // snapshot shows settled are done for this connection; replies it
        // does not show started after it was read: they are announced below.
        if let Some(live_seq) = live_id.as_ref().and_then(|id| shown.get(id)) {
            if let Some(id) = live_id.clone() {
                if resume.as_ref().is_none_or(|(rid, _)| *rid != id) {
                    c.cursors.insert(id, Cursor::at(*live_seq, false));
                }
            }
        }
        let announce: Vec<(MessageId, Message)> = view
            .replies
            .iter()
            .filter(|(id, _)| !shown.contains_key(*id))
            .filter(|(id, _)| resume.as_ref().is_none_or(|(rid, _)| rid != *id))
            .filter_map(|(id, r)| r.user_message.clone().map(|m| (id.clone(), m)))
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
        if let Some((id, seq)) = resume {
            self.on_resume(now, conn, id, seq);
        }
        for id in reread {
            self.read(now, &conv, &id);
        }
        self.pump(now, &conv);
        // Frames that arrived during the handshake, in order.
        let early: Vec<Vec<u8>> = self
            .conns
            .get_mut(&conn)
            .map(|c| c.early.drain(..).collect())
            .unwrap_or_default();
        for bytes in early {
            self.on_frame(now, conn, bytes);
        }
    }

    /// This node produces reply `id` (its `Start` succeeded): record it,
    /// keep its lease, announce it to local connections, and start its
    /// generator — unless `deferred` holds the context back for a cancel that
    /// arrived before the reply had an id.
    #[allow(clippy::too_many_arguments)]
    fn own_reply(
        &mut self,
        now: Instant,
        conv: &ConvKey,
        id: &MessageId,
        token: Token,
        user_message: &Message,
        sender: Option<(ConnId, Option<crate::ids::RequestId>)>,
        deferred: Option<Vec<Message>>,
        context: Vec<Message>,
    ) {
        self.owned.insert(
            id.clone(),
            Owned {
                conv: conv.clone(),
                token,
                acked: 0,
                queue: Vec::new(),
                in_flight: None,
                end: None,
                settling: None,
                renewing: None,
                generator_running: deferred.is_none(),
                deferred: deferred.clone(),
                stopped: false,
            },
        );
        self.timers.set(
            TimerKey::Renew(id.clone()),
            now + self.config.renew_interval(),
        );
        if self.convs.contains_key(conv) {
            self.announce(now, conv, id, user_message, sender);
        }
        if deferred.is_none() {
            self.out.push_back(Output::StartGenerator {
                message_id: id.clone(),
                conv: conv.clone(),
                context,
            });
        }
    }

    /// The store decided a cancel of `id`: fence local delivery at
    /// `final_seq` and, if this node produces it, stop producing.
    fn cancel_decided(
        &mut self,
        now: Instant,
        conv: &ConvKey,
        id: &MessageId,
        answer: CancelAnswer,
        final_seq: Seq,
    ) {
        if answer == CancelAnswer::Cancelled {
            if let Some(r) = self.convs.get_mut(conv).and_then(|v| v.replies.get_mut(id)) {
                r.fix_final(final_seq);
            }
            self.owner_cancel(now, id);
        }
    }

    fn on_started(&mut self, now: Instant, conn: ConnId, conv: ConvKey, reply: StoreReply) {
        let pending = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.pending_chat.take());
        let request_id = pending.as_ref().and_then(|p| p.request_id.clone());
        match reply {
            StoreReply::Started {
                user_message,
                message_id,
                token,
                context,
                ..
            } => {
                self.send(
                    conn,
                    ServerFrame::Ack(Ack {
                        request_id: request_id.clone(),
                        user_message_id: user_message.message_id.clone(),
                        message_id: message_id.clone(),
                    }),
                );
                let cancel_first = pending.as_ref().and_then(|p| p.cancel.clone());
                self.own_reply(
                    now,
                    &conv,
                    &message_id,
                    token,
                    &user_message,
                    Some((conn, request_id)),
                    cancel_first.is_some().then(|| context.clone()),
                    context,
                );
                match cancel_first {
                    None => {}
                    Some((cancel_rid, since)) => {
                        // The user cancelled before the reply had an id: the
                        // generator never starts.
                        let at_ms = self.wall_ms(now);
                        self.store(
                            Pending::Cancel {
                                conn,
                                conv: conv.clone(),
                                request_id: cancel_rid,
                                message_id: Some(message_id.clone()),
                                since,
                            },
                            StoreOp::Cancel(CancelOp {
                                conv,
                                message_id: Some(message_id),
                                at_ms,
                            }),
                        );
                    }
                }
            }
            StoreReply::Duplicate {
                user_message_id,
                message_id,
            } => {
                self.send(
                    conn,
                    ServerFrame::Ack(Ack {
                        request_id,
                        user_message_id,
                        message_id,
                    }),
                );
                if let Some((cancel_rid, since)) = pending.and_then(|p| p.cancel) {
                    self.on_cancel(since, now, conn, None, cancel_rid);
                }
            }
            StoreReply::Busy { .. } => {
                self.send(
                    conn,
                    error_frame(
                        ErrorCode::Busy,
                        "a reply is still streaming in this conversation",
                        request_id,
                    ),
                );
                if let Some((cancel_rid, since)) = pending.and_then(|p| p.cancel) {
                    // The cancel was meant for the reply this chat would have
                    // started: there is none.
                    self.send_not_found(now, conn, cancel_rid, since);
                }
            }
            _ => {}
        }
    }

    fn send_cancel_result(
        &mut self,
        now: Instant,
        conn: ConnId,
        h: HeldCancelResult,
        id: MessageId,
    ) {
        let (status, since) = (h.status, h.since);
        self.send(conn, cancel_result(h, Some(id)));
        self.out.push_back(Output::Event(Event::CancelAnswered {
            conn,
            status,
            latency: now.saturating_duration_since(since),
        }));
    }

    fn send_not_found(
        &mut self,
        now: Instant,
        conn: ConnId,
        request_id: Option<crate::ids::RequestId>,
        since: Instant,
    ) {
        self.send(
            conn,
            ServerFrame::CancelResult(CancelResult {
                request_id,
                message_id: None,
                status: CancelStatus::NotFound,
                final_seq: None,
            }),
        );
        self.out.push_back(Output::Event(Event::CancelAnswered {
            conn,
            status: CancelStatus::NotFound,
            latency: now.saturating_duration_since(since),
        }));
    }

    fn on_cancel_reply(
        &mut self,
        now: Instant,
        conn: ConnId,
        conv: &ConvKey,
        (request_id, since): (Option<crate::ids::RequestId>, Instant),
        reply: StoreReply,
    ) {
        let StoreReply::Cancel {
            message_id,
            answer,
            final_seq,
        } = reply
        else {
            return;
        };
        let (Some(id), Some(answer), Some(final_seq)) = (message_id, answer, final_seq) else {
            self.send_not_found(now, conn, request_id, since);
            return;
        };
        let status = CancelStatus::from(answer);
        self.cancel_decided(now, conv, &id, answer, final_seq);
        let held = HeldCancelResult {
            request_id,
            status,
            final_seq,
            since,
        };
        let cursor = self
            .conns
            .get_mut(&conn)
            .filter(|c| c.state == ConnState::Open)
            .and_then(|c| c.cursors.get_mut(&id));
        match cursor {
            Some(cursor) if cursor.delivered < final_seq => {
                cursor.held_cancel = Some(held);
                self.pump(now, conv);
            }
            _ => {
                self.send_cancel_result(now, conn, held, id);
                self.pump(now, conv);
            }
        }
    }

    fn on_read_reply(&mut self, now: Instant, conv: &ConvKey, id: &MessageId, reply: StoreReply) {
        let Some(r) = self.convs.get_mut(conv).and_then(|v| v.replies.get_mut(id)) else {
            return;
        };
        r.reading = false;
        match reply {
            StoreReply::Read {
                state,
                deltas,
                first_seq,
                usage,
                ..
            } => {
                let _ = r.add(first_seq, deltas);
                r.apply_state(&state, usage);
                let reap_due = state.reap_due_ms();
                let wall = self.wall_ms(now);
                if reap_due.is_some_and(|due| wall >= due) && !self.owned.contains_key(id) {
                    // The owner stopped renewing: settle the reply for it.
                    self.store(
                        Pending::Reap,
                        StoreOp::Reap(ReapOp {
                            conv: conv.clone(),
                            message_id: id.clone(),
                            at_ms: wall,
                        }),
                    );
                }
                self.arm_watch(now, conv, id);
                self.pump(now, conv);
            }
            StoreReply::Missing { epoch, snapshot } => {
                self.reply_missing(now, conv, id, epoch, snapshot);
            }
            _ => {}
        }
    }

    /// The store has no record of a reply this node shows.
    fn reply_missing(
        &mut self,
        now: Instant,
        conv: &ConvKey,
        id: &MessageId,
        epoch: crate::store::Epoch,
        snapshot: Option<Message>,
    ) {
        let Some(view) = self.convs.get_mut(conv) else {
            return;
        };
        let r = view.replies.remove(id).unwrap_or_default();
        // Finished here: a late notice about it must not bring it back.
        view.mark_done(id.clone());
        self.timers.cancel(&watch_key(conv, id));
        let conns: Vec<ConnId> = view.conns.iter().copied().collect();
        for conn in conns {
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            let Some(cursor) = c.cursors.remove(id) else {
                continue;
            };
            let frame = if cursor.resumed && r.user_message.is_none() {
                let reason = if epoch_of(id).is_some_and(|e| e != epoch) {
                    ResumeUnavailableReason::EpochChanged
                } else if snapshot.is_some() {
                    ResumeUnavailableReason::Expired
                } else {
                    ResumeUnavailableReason::Unknown
                };
                self.out
                    .push_back(Output::Event(Event::Resumed { conn, exact: false }));
                ServerFrame::ResumeUnavailable(ResumeUnavailable {
                    message_id: id.clone(),
                    reason,
                    snapshot: snapshot.clone(),
                })
            } else {
                // It had started here: it gets its one `end`.
                let (status, final_seq, reason) = match &snapshot {
                    Some(m) if m.status != MessageStatus::Streaming => (
                        match m.status {
                            MessageStatus::Cancelled => crate::wire::ReplyStatus::Cancelled,
                            MessageStatus::Failed => crate::wire::ReplyStatus::Failed,
                            _ => crate::wire::ReplyStatus::Completed,
                        },
                        cursor.delivered,
                        None,
                    ),
                    _ => (
                        crate::wire::ReplyStatus::Failed,
                        cursor.delivered,
                        Some(STORE_LOST.to_owned()),
                    ),
                };
                if let Some(h) = cursor.held_cancel {
                    self.send_cancel_result(now, conn, h, id.clone());
                }
                ServerFrame::End(End {
                    message_id: id.clone(),
                    status,
                    final_seq,
                    reason,
                    usage: None,
                })
            };
            self.send(conn, frame);
        }
        self.tidy_conv(conv);
        let _ = now;
    }

    // ----- notices -----

    fn on_notice(&mut self, now: Instant, notice: Notice) {
        match notice {
            Notice::Started {
                conv,
                user_message,
                message_id,
                owner,
            } => {
                // This node's own replies are announced by the `Start` reply,
                // which carries the sender's `request_id` and comes after `ack`.
                if owner != self.config.node_id && self.convs.contains_key(&conv) {
                    self.announce(now, &conv, &message_id, &user_message, None);
                }
            }
            Notice::Chunks {
                conv,
                message_id,
                first_seq,
                deltas,
            } => {
                if let Some(r) = self
                    .convs
                    .get_mut(&conv)
                    .and_then(|v| v.live_reply(&message_id))
                {
                    let before = r.len();
                    let _ = r.add(first_seq, deltas);
                    // The producer's node already has these from its append:
                    // nothing new, nothing to walk.
                    if r.len() > before || r.needs_read() {
                        self.arm_watch(now, &conv, &message_id);
                        self.pump(now, &conv);
                    }
                }
            }
            Notice::Cancelling {
                conv,
                message_id,
                final_seq,
            } => {
                if let Some(r) = self
                    .convs
                    .get_mut(&conv)
                    .and_then(|v| v.replies.get_mut(&message_id))
                {
                    r.fix_final(final_seq);
                    self.pump(now, &conv);
                }
            }
            Notice::CancelRequested { message_id, .. } => self.owner_cancel(now, &message_id),
            Notice::Settled {
                conv,
                message_id,
                outcome,
                final_seq,
                usage,
            } => {
                if let Some(r) = self
                    .convs
                    .get_mut(&conv)
                    .and_then(|v| v.live_reply(&message_id))
                {
                    r.fix_final(final_seq);
                    r.settled.get_or_insert((outcome, usage));
                    self.arm_watch(now, &conv, &message_id);
                    self.pump(now, &conv);
                }
            }
            Notice::Presence { user, status } => {
                let conns: Vec<ConnId> = self
                    .users
                    .get(&user)
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
    }

    // ----- producing -----

    fn on_generator(&mut self, now: Instant, id: MessageId, event: GeneratorEvent) {
        let Some(o) = self.owned.get_mut(&id) else {
            return;
        };
        if o.stopped || o.end.is_some() {
            return;
        }
        match event {
            GeneratorEvent::Delta(d) => {
                if !d.is_empty() {
                    o.queue.push(d);
                }
            }
            GeneratorEvent::Finished { usage } => {
                o.generator_running = false;
                o.end = Some((SettleRequest::Completed, usage));
            }
            GeneratorEvent::Failed { reason, usage } => {
                o.generator_running = false;
                o.end = Some((SettleRequest::Failed(reason), usage));
            }
        }
        self.owner_flush(now, &id);
    }

    /// Sends the next append, or the settle once everything is appended.
    fn owner_flush(&mut self, now: Instant, id: &MessageId) {
        let at_ms = self.wall_ms(now);
        let Some(o) = self.owned.get_mut(id) else {
            return;
        };
        if o.in_flight.is_some() || o.settling.is_some() {
            return;
        }
        if !o.queue.is_empty() && !o.stopped {
            let deltas = std::mem::take(&mut o.queue);
            let first_seq = o.acked + 1;
            let request = StoreOp::Append(AppendOp {
                conv: o.conv.clone(),
                message_id: id.clone(),
                token: o.token,
                first_seq,
                deltas: deltas.clone(),
                at_ms,
            });
            let op = self.store(Pending::Append(id.clone()), request);
            if let Some(o) = self.owned.get_mut(id) {
                o.in_flight = Some((op, first_seq, deltas));
            }
        } else if let Some((request, usage)) = o.end.clone() {
            let req = StoreOp::Settle(SettleOp {
                conv: o.conv.clone(),
                message_id: id.clone(),
                token: o.token,
                request,
                usage,
                at_ms,
            });
            let op = self.store(Pending::Settle(id.clone()), req);
            if let Some(o) = self.owned.get_mut(id) {
                o.settling = Some(op);
            }
        }
    }

    /// The reply this node produces was cancelled: stop the generator, drop
    /// what it produced after the cancel, and settle.
    fn owner_cancel(&mut self, now: Instant, id: &MessageId) {
        let Some(o) = self.owned.get_mut(id) else {
            return;
        };
        if o.stopped {
            return;
        }
        o.stopped = true;
        o.deferred = None;
        o.queue.clear();
        o.end = Some((SettleRequest::Cancelled, None));
        if std::mem::take(&mut o.generator_running) {
            self.out.push_back(Output::AbortGenerator {
                message_id: id.clone(),
            });
        }
        self.owner_flush(now, id);
    }

    /// A write of the producer was answered "cancelled at `final_seq`".
    fn owner_told_cancelled(&mut self, now: Instant, id: &MessageId, final_seq: Seq) {
        let conv = self.owned.get(id).map(|o| o.conv.clone());
        if let Some(r) = conv
            .and_then(|c| self.convs.get_mut(&c))
            .and_then(|v| v.replies.get_mut(id))
        {
            r.fix_final(final_seq);
        }
        self.owner_cancel(now, id);
        // Already stopped by an earlier notice: the write that just returned
        // may have been what the settle waited for.
        self.owner_flush(now, id);
    }

    /// The store fenced this node off the reply (reaped, or lost).
    fn owner_fenced(&mut self, now: Instant, id: &MessageId) {
        let Some(o) = self.owned.remove(id) else {
            return;
        };
        if o.generator_running {
            self.out.push_back(Output::AbortGenerator {
                message_id: id.clone(),
            });
        }
        self.timers.cancel(&TimerKey::Renew(id.clone()));
        self.timers.cancel(&TimerKey::OwnerRetry(id.clone()));
        // Learn the truth for local viewers.
        self.read(now, &o.conv, id);
    }

    fn on_append_reply(&mut self, now: Instant, id: &MessageId, op: OpId, reply: StoreReply) {
        let Some(o) = self.owned.get_mut(id) else {
            return;
        };
        let Some((in_op, first_seq, deltas)) = o.in_flight.take() else {
            return;
        };
        debug_assert_eq!(in_op, op);
        let conv = o.conv.clone();
        match reply {
            StoreReply::Ok { last_seq } => {
                o.acked = last_seq;
                if let Some(r) = self
                    .convs
                    .get_mut(&conv)
                    .and_then(|v| v.replies.get_mut(id))
                {
                    let _ = r.add(first_seq, deltas);
                }
                self.pump(now, &conv);
                self.owner_flush(now, id);
            }
            StoreReply::CancelRequested { final_seq } => {
                self.owner_told_cancelled(now, id, final_seq);
                self.pump(now, &conv);
            }
            _ => self.owner_fenced(now, id),
        }
    }

    fn on_settle_reply(&mut self, now: Instant, id: &MessageId, reply: StoreReply) {
        match reply {
            StoreReply::Settled {
                outcome, final_seq, ..
            } => {
                let Some(o) = self.owned.remove(id) else {
                    return;
                };
                self.timers.cancel(&TimerKey::Renew(id.clone()));
                self.timers.cancel(&TimerKey::OwnerRetry(id.clone()));
                let usage = o.end.and_then(|(_, u)| u);
                if let Some(r) = self
                    .convs
                    .get_mut(&o.conv)
                    .and_then(|v| v.replies.get_mut(id))
                {
                    r.fix_final(final_seq);
                    r.settled.get_or_insert((outcome.clone(), usage));
                }
                self.out.push_back(Output::Event(Event::ReplySettled {
                    message_id: id.clone(),
                    outcome,
                    final_seq,
                }));
                self.pump(now, &o.conv);
            }
            _ => self.owner_fenced(now, id),
        }
    }

    fn renew(&mut self, now: Instant, id: &MessageId) {
        let at_ms = self.wall_ms(now);
        let Some(o) = self.owned.get(id) else {
            return;
        };
        let conv = &o.conv;
        self.timers.set(
            TimerKey::Renew(id.clone()),
            now + self.config.renew_interval(),
        );
        if o.renewing.is_some() || o.settling.is_some() {
            return;
        }
        let request = StoreOp::Renew(RenewOp {
            conv: conv.clone(),
            message_id: id.clone(),
            token: o.token,
            at_ms,
        });
        let op = self.store(Pending::Renew(id.clone()), request);
        if let Some(o) = self.owned.get_mut(id) {
            o.renewing = Some(op);
        }
    }

    fn on_renew_reply(&mut self, now: Instant, id: &MessageId, reply: StoreReply) {
        let Some(o) = self.owned.get_mut(id) else {
            return;
        };
        o.renewing = None;
        match reply {
            StoreReply::Ok { .. } => {}
            StoreReply::CancelRequested { final_seq } => {
                // A lost cancel notice, noticed within one renew period.
                self.owner_told_cancelled(now, id, final_seq);
            }
            _ => {
                if o.settling.is_none() {
                    self.owner_fenced(now, id);
                }
            }
        }
    }

    // ----- node-wide -----

    fn housekeeping(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        self.timers
            .set(TimerKey::Housekeeping, now + self.config.housekeeping);
        let at_ms = self.wall_ms(now);
        if !self.pending.values().any(|p| *p == Pending::Housekeeping) {
            self.store(Pending::Housekeeping, StoreOp::Sweep(SweepOp { at_ms }));
            if !self.users.is_empty() {
                self.store(
                    Pending::Housekeeping,
                    StoreOp::PresenceRefresh(PresenceRefreshOp {
                        node: self.config.node_id.clone(),
                        users: self.users.keys().cloned().collect(),
                        at_ms,
                    }),
                );
            }
        }
    }

    fn on_shutdown(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.timers.cancel(&TimerKey::Housekeeping);
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.close(now, conn, CloseCode::GoingAway);
        }
        let owned: Vec<MessageId> = self.owned.keys().cloned().collect();
        for id in owned {
            if let Some(o) = self.owned.get_mut(&id) {
                if o.end.is_none() {
                    o.end = Some((SettleRequest::Failed(SHUTDOWN.to_owned()), None));
                }
                if std::mem::take(&mut o.generator_running) {
                    self.out.push_back(Output::AbortGenerator {
                        message_id: id.clone(),
                    });
                }
            }
            self.owner_flush(now, &id);
        }
    }
}

fn error_frame(
    code: ErrorCode,
    message: impl Into<String>,
    request_id: Option<crate::ids::RequestId>,
) -> ServerFrame {
    ServerFrame::Error(ErrorFrame {
        code,
        message: message.into(),
        request_id,
    })
}

fn cancel_result(h: HeldCancelResult, message_id: Option<MessageId>) -> ServerFrame {
    ServerFrame::CancelResult(CancelResult {
        request_id: h.request_id,
        message_id,
        status: h.status,
        final_seq: Some(h.final_seq),
    })
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A live reply as a `Message` with status `streaming`: `content` holds
/// chunks `1..=seq`.
fn live_message(live: &LiveReply) -> Message {
    Message {
        message_id: live.message_id.clone(),
        role: Role::Assistant,
        content: live.deltas.concat(),
        status: MessageStatus::Streaming,
        created_at_ms: live.created_at_ms,
        seq: live.deltas.len() as Seq,
    }
}

fn watch_key(conv: &ConvKey, id: &MessageId) -> TimerKey {
    TimerKey::Watch(Box::new((conv.clone(), id.clone())))
}
