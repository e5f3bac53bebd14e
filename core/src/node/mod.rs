//! The node: one weir process's decisions, as a sans-IO state machine.
//!
//! A [`Node`] holds the node's connections ([`session`](crate::session)), its
//! views of the conversations they watch, and the replies it produces. It
//! talks to the store only through [`Output::Store`] / [`Input::StoreReply`]
//! and [`Input::Notice`], and to generators through
//! [`Output::StartGenerator`] / [`Input::Generator`].
//!
//! The node's sub-machines, each in its own file beside this one (which keeps
//! [`Node`], the two dispatches `handle_input` / `handle_timeout`, and the
//! routing of store replies to the operation that asked):
//!
//! | file | what it holds |
//! | --- | --- |
//! | `conn.rs` | connection transitions, on the record and pure timer transitions of [`session`](crate::session): connect, the snapshot that opens a connection, the heartbeat / idle / close timer, frames in, close, release, presence |
//! | `view.rs` | conversation views (`ReplyView`, `ConvView`) and keeping them true: notices, reads of the log, the watch timer |
//! | `deliver.rs` | delivery from the views to the connections (`pump`), in order and fenced, at most `fanout_slice` chunk deliveries per step |
//! | `chat.rs` | a `chat`: the store's `Start`, the `ack`, and the reply it begins |
//! | `owner.rs` | the producer (`Owned`): appends one at a time and of bounded size, the settle, the lease |
//! | [`cancel`] | [the life of a cancel](cancel): where it is decided and how it is carried out |
//! | `http.rs` | the HTTP API, on the same store operations |
//! | `dialect.rs` | connections of other [dialects](crate::dialect): their frames in, the render pass over the outputs |
//! | `ai_sdk.rs` | the AI SDK sockets and their requests, the HTTP event streams ([`ai_sdk`](crate::dialect::ai_sdk)) |
//!
//! ## Where the node is tested, and what it asks of a runtime
//!
//! The node's behaviour is tested in `verification/` (proptests against a
//! reference model, exhaustive exploration, seeded simulation, scenarios,
//! the HTTP API) and by the unit tests in the files of its sub-machines: the
//! pure state types (`ReplyView` and `ConvView` in `view.rs`, `Owned` in
//! `owner.rs`) and the machines it drives ([`session`](crate::session),
//! [`stream`](crate::stream), [`presence`](crate::presence), `timer`).
//!
//! The node's guarantees hold only if the runtime that carries out its
//! outputs keeps [the runtime's contract](Output#the-runtimes-contract), in
//! [`Output`]'s docs: outputs carried out in the order they are polled, a
//! `Subscribe` in effect before the next `Store`, a monotonic `now`.
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

use crate::api::{Event, HttpReqId, Input, OpId, Output};
use crate::config::Config;
use crate::ids::{
    ConnId, ConvKey, IdSource, MessageId, RequestId, SeededIds, Seq, SessionId, UserId,
};
use crate::session::{ConnState, Connection, Inbound};
use crate::store::{
    LiveReply, PresenceCheckOp, PresenceRefreshOp, StartOp, StoreError, StoreOp, StoreReply,
    SweepOp, Topic,
};
use crate::timer::{TimerKey, Timers};
use crate::wire::{
    CloseCode, ErrorCode, ErrorFrame, Message, MessageStatus, PresenceStatus, Role, ServerFrame,
};

mod ai_sdk;
pub mod cancel;
mod caps;
mod chat;
mod compat_http;
mod conn;
mod deliver;
mod dialect;
mod http;
mod learn;
mod owner;
#[cfg(test)]
mod rig;
mod view;

use cancel::CancelAsk;
use owner::Owned;
use view::ConvView;

/// Reason on `end` when the store lost a reply (its epoch changed).
pub const STORE_LOST: &str = "store_lost";
/// Reason on `end` for replies stopped by a node shutdown.
pub const SHUTDOWN: &str = "shutdown";
/// Reason on `end` for a reply whose chunks the store refused for want of
/// room ([`StoreError::Refused`]): it ends with the chunks stored before.
pub const STORE_FULL: &str = "store_full";

/// What an operation's reply is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Pending {
    Snapshot(ConnId),
    Start(ConnId, ConvKey),
    Cancel(CancelAsk),
    Append(MessageId),
    Settle(MessageId),
    Renew(MessageId),
    Read(ConvKey, MessageId),
    /// A snapshot read to learn the user turn of a reply heard of without
    /// its start ([`learn`](self::learn)).
    Learn(ConvKey),
    Reap,
    Housekeeping,
    Presence(UserId),
    HttpStart(HttpReqId, ConvKey),
    HttpCancel(HttpReqId, ConvKey, Option<MessageId>),
    HttpList(HttpReqId, SessionId),
    HttpPresence(HttpReqId, UserId),
    /// A cap's decision ([`caps`](self::caps)).
    Admit(caps::Admission),
    /// A cap's slot released or kept: nothing waits for the answer.
    CapQuiet,
    CompatStart(HttpReqId, ConvKey),
    /// A `POST /api/chat`'s reply registered before its `Start`.
    CompatRegister(HttpReqId, Box<StartOp>),
    /// A `POST /api/cancel` (no user) looking up the reply's conversation.
    CompatLocate(HttpReqId, SessionId, MessageId),
    CompatCancel(HttpReqId, ConvKey, MessageId),
    CompatHistory(HttpReqId, ConvKey),
    CompatDelete(HttpReqId, ConvKey),
}

/// One weir node. See the [crate docs](crate) for the run loop.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Node<I = SeededIds> {
    config: Config,
    ids: I,
    /// `(monotonic, wall ns)` at the last wall-clock anchor.
    anchor: (Instant, u64),
    conns: BTreeMap<ConnId, Connection>,
    users: BTreeMap<UserId, BTreeSet<ConnId>>,
    convs: BTreeMap<ConvKey, ConvView>,
    owned: BTreeMap<MessageId, Owned>,
    pending: BTreeMap<OpId, Pending>,
    next_op: u64,
    timers: Timers,
    out: VecDeque<Output>,
    shutting_down: bool,
    /// When this node last refreshed its users' presence entries.
    presence_refreshed: Option<Instant>,
    /// The caps' slots this node holds.
    held: caps::Held,
    /// The renderer of each connection that speaks another dialect.
    dialects: BTreeMap<ConnId, crate::dialect::DialectConn>,
    /// The AI SDK sockets (`ai_sdk.rs`).
    ai_sdk: ai_sdk::Sockets,
}

impl<I: IdSource> Node<I> {
    /// A node that starts at monotonic `now`, when the wall clock reads
    /// `unix_ms`. Its first outputs subscribe to its control topic.
    pub fn new(config: Config, ids: I, now: Instant, unix_ms: u64) -> Self {
        let mut node = Self {
            anchor: (now, unix_ms.saturating_mul(1_000_000)),
            ids,
            conns: BTreeMap::new(),
            users: BTreeMap::new(),
            convs: BTreeMap::new(),
            owned: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_op: 0,
            timers: Timers::default(),
            out: VecDeque::new(),
            shutting_down: false,
            presence_refreshed: None,
            held: caps::Held::default(),
            dialects: BTreeMap::new(),
            ai_sdk: ai_sdk::Sockets::default(),
            config,
        };
        node.out
            .push_back(Output::Subscribe(Topic::Node(node.config.node_id.clone())));
        node.timers
            .set(TimerKey::Housekeeping, now + node.config.housekeeping);
        node
    }

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
            && self.held.is_empty()
            && self.dialects.is_empty()
            && self.ai_sdk.is_empty()
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
        self.wall_ns(now) / 1_000_000
    }

    /// The wall-clock time at `now`, in Unix nanoseconds (as precise as the
    /// last anchor: [`Input::WallClockNs`] is, [`Input::WallClock`] is to
    /// the millisecond).
    #[must_use]
    pub fn wall_ns(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.anchor.0);
        self.anchor
            .1
            .saturating_add(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
    }

    /// The next thing to do, if any. Drain it after every input and timeout.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The earliest deadline: call [`Node::handle_timeout`] then.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Feeds one input at monotonic time `now`.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        let from = self.out.len();
        self.dispatch(now, input);
        self.render_dialects(now, from);
    }

    fn dispatch(&mut self, now: Instant, input: Input) {
        let Some(input) = self.ai_sdk_input(now, input) else {
            return;
        };
        match input {
            Input::ConnectWith {
                conn,
                user,
                dialect: crate::dialect::Dialect::AiSdkWs,
                ..
            } => self.ai_sdk_socket(now, conn, user),
            Input::AiSdkStream {
                conn,
                user,
                request,
            } => self.ai_sdk_stream(now, conn, user, request),
            Input::ConnectWith {
                conn,
                user,
                session,
                dialect,
                ip,
            } => self.on_connect_with(now, conn, user, session, dialect, ip),
            Input::Connect {
                conn,
                user,
                session,
                resume,
                ip,
            } => self.on_connect(now, conn, user, session, resume, ip),
            Input::Frame { conn, bytes } => self.on_frame(now, conn, Inbound::Text(bytes)),
            Input::BinaryFrame { conn } => self.on_frame(now, conn, Inbound::Binary),
            Input::InvalidUtf8 { conn } => self.on_invalid_utf8(now, conn),
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
            Input::WriteStalled { conn, since } => self.on_write_stalled(now, conn, since),
            Input::QueueLag { conn, bytes } => self.on_queue_lag(now, conn, bytes),
            Input::WriteBlocked { conn } => self.on_write_blocked(conn),
            Input::Writable { conn } => self.on_writable(now, conn),
            Input::Disconnected { conn } => self.release(now, conn),
            Input::StoreReply { op, result } => self.on_store_reply(now, op, result),
            Input::Notice(n) => self.on_notice(now, n),
            Input::Generator { message_id, event } => self.on_generator(now, message_id, event),
            Input::Http { req, user, request } => self.on_http(now, req, user, request),
            Input::WallClock { unix_ms } => {
                self.anchor = (now, unix_ms.saturating_mul(1_000_000));
            }
            Input::WallClockNs { unix_ns } => self.anchor = (now, unix_ns),
            Input::Shutdown => self.on_shutdown(now),
        }
    }

    /// Fires every deadline due at `now`, each once, earliest first. A
    /// delivery that goes on (the last step handed out its share of a
    /// conversation's chunks) runs after the others, and one that this call
    /// re-arms fires on the next call, not in this one: each call does a
    /// bounded amount of work.
    pub fn handle_timeout(&mut self, now: Instant) {
        let from = self.out.len();
        self.fire_timers(now);
        self.render_dialects(now, from);
    }

    fn fire_timers(&mut self, now: Instant) {
        let mut pumps = Vec::new();
        while let Some(key) = self.timers.pop_due(now) {
            match key {
                TimerKey::Conn(conn) => self.conn_timer(now, conn),
                TimerKey::Renew(id) => self.renew(now, &id),
                TimerKey::OwnerRetry(id) => self.owner_flush(now, &id),
                TimerKey::Learn(conv) => self.learn_again(now, &conv),
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
                TimerKey::Pump(conv) => pumps.push(conv),
                TimerKey::Dialect(conn) => self.dialect_timer(now, conn),
            }
        }
        for conv in pumps {
            self.pump(now, &conv);
        }
    }

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
        // A chat's streams slot follows its `Start`'s answer.
        let asker = match &why {
            Pending::Start(conn, conv) => Some((caps::Asker::Conn(*conn), conv)),
            Pending::HttpStart(req, conv) => Some((caps::Asker::Http(*req), conv)),
            Pending::CompatStart(req, conv) => Some((caps::Asker::Compat(*req), conv)),
            _ => None,
        };
        if let Some((asker, conv)) = asker {
            let started = match &result {
                Ok(StoreReply::Started { message_id, .. }) => Some(message_id),
                _ => None,
            };
            let user = conv.user.clone();
            self.chat_start_answered(now, asker, &user, started);
        }
        let reply = match result {
            Ok(reply) => reply,
            Err(error) => {
                let event = match &error {
                    StoreError::Unavailable(_) => Event::StoreUnavailable { op },
                    StoreError::Refused(reason) => Event::StoreRefused {
                        op,
                        reason: reason.clone(),
                    },
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
            Pending::Cancel(ask) => self.on_cancel_reply(now, ask, reply),
            Pending::Append(id) => self.on_append_reply(now, &id, reply),
            Pending::Settle(id) => self.on_settle_reply(now, &id, reply),
            Pending::Renew(id) => self.on_renew_reply(now, &id, reply),
            Pending::Read(conv, id) => self.on_read_reply(now, &conv, &id, reply),
            Pending::Learn(conv) => self.on_learn_reply(now, &conv, reply),
            Pending::Reap | Pending::Housekeeping | Pending::CapQuiet => {}
            Pending::Admit(why) => self.on_admit_reply(now, why, reply),
            Pending::HttpStart(req, conv) => self.on_http_started(now, req, conv, reply),
            Pending::HttpCancel(req, conv, asked) => {
                self.on_http_cancel(now, req, &conv, asked, reply)
            }
            Pending::HttpList(req, session) => self.on_http_list(req, session, reply),
            Pending::HttpPresence(req, user) => self.on_http_presence(req, user, reply),
            Pending::CompatStart(req, conv) => self.on_compat_started(now, req, conv, reply),
            Pending::CompatCancel(req, conv, asked) => {
                self.on_compat_cancel_reply(now, req, &conv, asked, reply)
            }
            Pending::CompatHistory(req, conv) => self.on_compat_history_reply(req, &conv, reply),
            Pending::CompatRegister(req, start) => {
                self.on_compat_registered(now, req, *start, &reply);
            }
            Pending::CompatLocate(req, session, id) => {
                self.on_compat_located(now, req, session, id, reply);
            }
            Pending::CompatDelete(req, conv) => self.on_compat_deleted(req, &conv, &reply),
            Pending::Presence(user) => {
                if let StoreReply::Presence { status, due_ms, .. } = reply {
                    if status == PresenceStatus::Offline {
                        self.presence_rejoin(now, &user);
                    }
                    if let Some(due) = due_ms {
                        let at = self.mono(now, due);
                        self.timers.set_earliest(TimerKey::Presence(user), at);
                    }
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
    /// whatever the error (retries, a held reply going on) — except that a
    /// producer's write refused for want of room ends its reply
    /// (`owner_refused`); what the client is told differs
    /// ([`store_error_frame`]).
    fn on_store_error(&mut self, now: Instant, why: Pending, error: &StoreError) {
        match why {
            Pending::Snapshot(conn) => {
                self.send(
                    conn,
                    store_error_frame(
                        error,
                        "the store cannot be reached",
                        "the store refuses writes (it is full)",
                        None,
                    ),
                );
                self.close(now, conn, CloseCode::GoingAway);
            }
            Pending::Start(conn, _) => self.start_failed(conn, error),
            Pending::Cancel(ask) => self.cancel_failed(ask, error),
            Pending::Append(id) if matches!(error, StoreError::Refused(_)) => {
                self.owner_refused(now, &id, true);
            }
            Pending::Renew(id) if matches!(error, StoreError::Refused(_)) => {
                self.owner_refused(now, &id, false);
            }
            Pending::Append(id) => self.append_failed(now, id),
            Pending::Settle(id) => self.settle_failed(now, id),
            Pending::Renew(id) => self.renew_failed(&id),
            Pending::Read(conv, id) => self.read_failed(now, &conv, &id),
            Pending::Learn(conv) => self.learn_failed(now, conv),
            Pending::HttpStart(req, _)
            | Pending::HttpCancel(req, _, _)
            | Pending::HttpList(req, _)
            | Pending::HttpPresence(req, _) => self.http_store_error(req, error),
            Pending::Admit(why) => self.on_admit_error(now, why, error),
            Pending::CompatStart(req, _)
            | Pending::CompatRegister(req, _)
            | Pending::CompatLocate(req, _, _)
            | Pending::CompatCancel(req, _, _)
            | Pending::CompatHistory(req, _)
            | Pending::CompatDelete(req, _) => self.compat_store_error(req, error),
            // A presence join, leave or check that did not reach the store:
            // a check after `store_retry` (again until one is answered)
            // moves the user's presence on, and an `offline` it finds while
            // the user is connected here joins their connections again.
            Pending::Presence(user) => self
                .timers
                .set_earliest(TimerKey::Presence(user), now + self.config.store_retry),
            Pending::Reap | Pending::Housekeeping | Pending::CapQuiet => {}
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        self.timers
            .set(TimerKey::Housekeeping, now + self.config.housekeeping);
        let at_ms = self.wall_ms(now);
        self.keep_caps(now);
        if !self.pending.values().any(|p| *p == Pending::Housekeeping) {
            self.store(Pending::Housekeeping, StoreOp::Sweep(SweepOp { at_ms }));
            // A third of an entry's lifetime apart, not every housekeeping:
            // the refresh is one store call per user, so with 20 000 users
            // on a node every 2 s it was 10 000 calls a second to keep
            // entries that live 30 s.
            let every = Duration::from_millis(self.config.presence.entry_ttl_ms / 3);
            let due = self
                .presence_refreshed
                .is_none_or(|t| now.saturating_duration_since(t) >= every);
            if !self.users.is_empty() && due {
                self.presence_refreshed = Some(now);
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
            if self.owned.get_mut(&id).is_some_and(Owned::on_shutdown) {
                self.out.push_back(Output::AbortGenerator {
                    message_id: id.clone(),
                });
            }
            self.owner_flush(now, &id);
        }
    }
}

/// What a client is told when the store answered something this node does
/// not understand ([`StoreError::Internal`]): a bug, and unlike an outage the
/// operation ran, so it may have taken effect.
pub(super) const STORE_BUG: &str = "the store answered something this server does not understand \
                                    (a bug); the request may or may not have taken effect";

/// The error frame for a failed store operation: `unavailable` with
/// `unavailable` (what did not happen) when the store could not be reached,
/// `store_full` with `refused` when it refused the operation for want of
/// room, `internal` with [`STORE_BUG`] when it answered something this node
/// does not understand.
pub(super) fn store_error_frame(
    error: &StoreError,
    unavailable: &str,
    refused: &str,
    request_id: Option<RequestId>,
) -> ServerFrame {
    match error {
        StoreError::Unavailable(_) => error_frame(ErrorCode::Unavailable, unavailable, request_id),
        StoreError::Refused(_) => error_frame(ErrorCode::StoreFull, refused, request_id),
        StoreError::Internal(_) => error_frame(ErrorCode::Internal, STORE_BUG, request_id),
    }
}

pub(super) fn error_frame(
    code: ErrorCode,
    message: impl Into<String>,
    request_id: Option<RequestId>,
) -> ServerFrame {
    ServerFrame::Error(ErrorFrame {
        code,
        message: message.into(),
        request_id,
        retry_after_ms: None,
    })
}

/// A live reply as a `Message` with status `streaming`: `content` holds
/// chunks `1..=seq`.
pub(super) fn live_message(live: &LiveReply) -> Message {
    Message {
        message_id: live.message_id.clone(),
        role: Role::Assistant,
        content: live.deltas.concat(),
        status: MessageStatus::Streaming,
        created_at_ms: live.created_at_ms,
        seq: live.deltas.len() as Seq,
    }
}

pub(super) fn watch_key(conv: &ConvKey, id: &MessageId) -> TimerKey {
    TimerKey::Watch(Box::new((conv.clone(), id.clone())))
}
