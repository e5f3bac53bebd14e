//! The node's part in the [caps](crate::caps): it asks the store before it
//! opens a connection or starts a chat ([`StoreOp::Admit`]), holds the slots
//! it was given, keeps them alive with its housekeeping
//! ([`StoreOp::CapKeep`], every third of their lifetime) and gives them back
//! when the connection closes or the reply ends ([`StoreOp::CapRelease`]).
//! A node that dies stops keeping its slots, and the store forgets them
//! within their lifetime (the presence entries' `entry_ttl`).
//!
//! ```text
//! connect ──► Admit(ip) ──► Admit(user) ──► snapshot + presence join (as without caps)
//!                 │              │
//!                 └── Limited ───┴──► error rate_limited (retry_after_ms), close 1008
//!
//! chat ──► Admit(user: streams slot + chat token) ──► Start ──► Started: the slot is the reply's
//!                 │                                     └────► busy / duplicate / error: slot released
//!                 └── Limited ──► error rate_limited (WebSocket) / 429 (HTTP); nothing started
//! ```
//!
//! With every cap off (the core's default) none of this runs: a connection
//! and a chat go to the store exactly as before.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{Node, Pending};
use crate::api::{Event, HttpReqId};
use crate::caps::Cap;
use crate::dialect::compat_http::CompatError;
use crate::ids::{ConnId, IdSource, MessageId, RequestId, UserId};
use crate::store::{
    AdmitOp, CapKeepOp, CapReleaseOp, CapScope, SlotKind, StartOp, StoreError, StoreOp, StoreReply,
};
use crate::wire::http::HttpError;
use crate::wire::{CloseCode, ErrorCode, ErrorFrame, ServerFrame};

/// Who waits for a chat's admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Asker {
    /// A `chat` frame on this connection.
    Conn(ConnId),
    /// An HTTP post.
    Http(HttpReqId),
    /// A `POST /api/chat` of the seed's front end (answered `{detail}`).
    Compat(HttpReqId),
}

/// What an [`StoreOp::Admit`] is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Admission {
    /// A chat: its `Start` follows once admitted.
    Chat {
        asker: Asker,
        start: Box<StartOp>,
        holder: String,
    },
    /// A connection's slot in `scope`'s count.
    Conn { conn: ConnId, scope: CapScope },
}

/// A connection's caps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ConnCaps {
    /// The scopes it holds a slot in.
    held: Vec<CapScope>,
    /// Admitted by every cap: its snapshot and presence join went out.
    admitted: bool,
}

/// The slots this node holds and what for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub(super) struct Held {
    /// Every slot held, by scope and kind: what [`StoreOp::CapKeep`] keeps.
    slots: BTreeMap<(CapScope, SlotKind), BTreeSet<String>>,
    /// Connections asked about or admitted.
    conns: BTreeMap<ConnId, ConnCaps>,
    /// The streams slots of an asker's chats whose `Start` is out, oldest
    /// first (a connection may have two out, with `client_message_id`s; any
    /// of a user's slots stands for any of their replies, so each answer
    /// takes the oldest).
    starting: BTreeMap<Asker, VecDeque<String>>,
    /// An owned reply's streams slot.
    replies: BTreeMap<MessageId, String>,
    /// When the slots were last kept.
    kept_at: Option<Instant>,
}

impl Held {
    pub(super) fn is_empty(&self) -> bool {
        self.slots.is_empty()
            && self.conns.is_empty()
            && self.starting.is_empty()
            && self.replies.is_empty()
    }
}

impl<I: IdSource> Node<I> {
    fn cap_ttl_ms(&self) -> u64 {
        self.config.presence.entry_ttl_ms
    }

    fn conn_holder(&self, conn: ConnId) -> String {
        format!("{}|{conn}", self.config.node_id)
    }

    /// On connect: whether a cap must admit `conn` first (its snapshot
    /// then waits for [`Node::conn_admitted`]).
    pub(super) fn admit_conn(
        &mut self,
        now: Instant,
        conn: ConnId,
        user: &UserId,
        ip: Option<IpAddr>,
    ) -> bool {
        let caps = self.config.caps;
        let by_ip = ip.filter(|_| caps.connections_per_ip > 0);
        if by_ip.is_none() && caps.connections_per_user == 0 {
            return false;
        }
        self.held.conns.insert(
            conn,
            ConnCaps {
                held: Vec::new(),
                admitted: false,
            },
        );
        let scope = by_ip.map_or_else(|| CapScope::User(user.clone()), CapScope::Ip);
        self.ask_conn_slot(now, conn, scope);
        true
    }

    fn ask_conn_slot(&mut self, now: Instant, conn: ConnId, scope: CapScope) {
        let limit = match scope {
            CapScope::Ip(_) => self.config.caps.connections_per_ip,
            CapScope::User(_) => self.config.caps.connections_per_user,
        };
        let op = AdmitOp {
            scope: scope.clone(),
            kind: SlotKind::Connections,
            holder: self.conn_holder(conn),
            limit,
            rate: None,
            ttl_ms: self.cap_ttl_ms(),
            at_ms: self.wall_ms(now),
        };
        self.store(
            Pending::Admit(Admission::Conn { conn, scope }),
            StoreOp::Admit(op),
        );
    }

    /// A chat (WebSocket or HTTP) that is to start with `start`: the store
    /// is asked first when a chat cap is on; else `Start` goes out now.
    pub(super) fn admit_chat(&mut self, now: Instant, asker: Asker, start: StartOp) {
        let caps = self.config.caps;
        if !caps.limit_chats() {
            return self.send_start(asker, start);
        }
        let holder = format!("{}|{:016x}", self.config.node_id, start.nonce);
        let op = AdmitOp {
            scope: CapScope::User(start.conv.user.clone()),
            kind: SlotKind::Streams,
            holder: holder.clone(),
            limit: caps.streams_per_user,
            rate: caps.chat_rate(),
            ttl_ms: self.cap_ttl_ms(),
            at_ms: self.wall_ms(now),
        };
        let admission = Admission::Chat {
            asker,
            start: Box::new(start),
            holder,
        };
        self.store(Pending::Admit(admission), StoreOp::Admit(op));
    }

    fn send_start(&mut self, asker: Asker, start: StartOp) {
        let why = match asker {
            Asker::Conn(conn) => Pending::Start(conn, start.conv.clone()),
            Asker::Http(req) => Pending::HttpStart(req, start.conv.clone()),
            Asker::Compat(req) => Pending::CompatStart(req, start.conv.clone()),
        };
        self.store(why, StoreOp::Start(start));
    }

    pub(super) fn on_admit_reply(&mut self, now: Instant, why: Admission, reply: StoreReply) {
        let limited = match reply {
            StoreReply::Admitted => None,
            StoreReply::Limited {
                cap,
                retry_after_ms,
            } => Some((cap, retry_after_ms)),
            _ => return self.on_admit_error(now, why, &StoreError::Internal("admit".into())),
        };
        match (why, limited) {
            (Admission::Conn { conn, scope }, None) => self.conn_slot_given(now, conn, scope),
            (Admission::Conn { conn, .. }, Some((cap, retry))) => {
                self.out
                    .push_back(crate::api::Output::Event(Event::RateLimited { cap }));
                if self.conn_is_live(conn) {
                    self.send(conn, rate_limited_frame(cap, retry, None));
                    self.close(now, conn, CloseCode::Policy);
                }
            }
            (
                Admission::Chat {
                    asker,
                    start,
                    holder,
                },
                None,
            ) => self.chat_admitted(now, asker, *start, holder),
            (Admission::Chat { asker, .. }, Some((cap, retry))) => {
                self.out
                    .push_back(crate::api::Output::Event(Event::RateLimited { cap }));
                self.chat_limited(now, asker, cap, retry);
            }
        }
    }

    pub(super) fn on_admit_error(&mut self, now: Instant, why: Admission, error: &StoreError) {
        match why {
            Admission::Conn { conn, .. } => {
                self.on_store_error(now, Pending::Snapshot(conn), error);
            }
            Admission::Chat {
                asker: Asker::Conn(conn),
                ..
            } => self.start_failed(conn, error),
            Admission::Chat {
                asker: Asker::Http(req),
                ..
            } => self.http_store_error(req, error),
            Admission::Chat {
                asker: Asker::Compat(req),
                ..
            } => self.compat_store_error(req, error),
        }
    }

    fn conn_slot_given(&mut self, now: Instant, conn: ConnId, scope: CapScope) {
        let holder = self.conn_holder(conn);
        let waiting = self.conn_is_live(conn);
        let Some(c) = self.held.conns.get_mut(&conn).filter(|_| waiting) else {
            // Closed meanwhile: give the slot back.
            return self.cap_release(now, scope, SlotKind::Connections, holder);
        };
        c.held.push(scope.clone());
        let next = match &scope {
            CapScope::Ip(_) if self.config.caps.connections_per_user > 0 => self
                .conns
                .get(&conn)
                .map(|c| CapScope::User(c.user().clone())),
            _ => None,
        };
        self.held
            .slots
            .entry((scope, SlotKind::Connections))
            .or_default()
            .insert(holder);
        match next {
            Some(user) => self.ask_conn_slot(now, conn, user),
            None => {
                if let Some(c) = self.held.conns.get_mut(&conn) {
                    c.admitted = true;
                }
                self.conn_admitted(now, conn);
            }
        }
    }

    /// On release: gives back the connection's slots; whether it was
    /// admitted (joined presence), which every uncapped connection is.
    pub(super) fn conn_caps_released(&mut self, now: Instant, conn: ConnId) -> bool {
        let Some(c) = self.held.conns.remove(&conn) else {
            return true;
        };
        let holder = self.conn_holder(conn);
        for scope in c.held {
            self.cap_release(now, scope, SlotKind::Connections, holder.clone());
        }
        c.admitted
    }

    fn chat_admitted(&mut self, now: Instant, asker: Asker, start: StartOp, holder: String) {
        let scope = CapScope::User(start.conv.user.clone());
        let slot = self.config.caps.streams_per_user > 0;
        let waiting = match asker {
            Asker::Conn(conn) => self
                .conns
                .get(&conn)
                .is_some_and(|c| c.pending_chat.is_some()),
            Asker::Http(_) | Asker::Compat(_) => true,
        };
        if !waiting {
            if slot {
                self.cap_release(now, scope, SlotKind::Streams, holder);
            }
            return;
        }
        if slot {
            self.held
                .slots
                .entry((scope, SlotKind::Streams))
                .or_default()
                .insert(holder.clone());
            self.held
                .starting
                .entry(asker)
                .or_default()
                .push_back(holder);
        }
        self.send_start(asker, start);
    }

    fn chat_limited(&mut self, now: Instant, asker: Asker, cap: Cap, retry_after_ms: u64) {
        match asker {
            Asker::Conn(conn) => {
                let Some(p) = self
                    .conns
                    .get_mut(&conn)
                    .and_then(|c| c.pending_chat.take())
                else {
                    return;
                };
                self.send(conn, rate_limited_frame(cap, retry_after_ms, p.request_id));
                if let Some((cancel_rid, since)) = p.cancel {
                    // The cancel was meant for the reply this chat would
                    // have started: there is none.
                    self.send_not_found(now, conn, cancel_rid, since);
                }
            }
            Asker::Http(req) => {
                let e = HttpError::rate_limited(cap_message(cap), retry_after_ms);
                self.respond_error(req, e);
            }
            Asker::Compat(req) => {
                let e = CompatError::rate_limited(cap_message(cap), retry_after_ms);
                self.compat_error(req, &e);
            }
        }
    }

    /// A chat's `Start` answered (`Ok(Some(id))`: it started reply `id`):
    /// the streams slot is the reply's now, or it is given back.
    pub(super) fn chat_start_answered(
        &mut self,
        now: Instant,
        asker: Asker,
        user: &UserId,
        started: Option<&MessageId>,
    ) {
        let Some(queue) = self.held.starting.get_mut(&asker) else {
            return;
        };
        let Some(holder) = queue.pop_front() else {
            return;
        };
        if queue.is_empty() {
            self.held.starting.remove(&asker);
        }
        match started {
            Some(id) => {
                self.held.replies.insert(id.clone(), holder);
            }
            None => self.cap_release(now, CapScope::User(user.clone()), SlotKind::Streams, holder),
        }
    }

    /// A reply this node produced is no longer its own: its streams slot
    /// goes back.
    pub(super) fn reply_slot_free(&mut self, now: Instant, id: &MessageId, user: &UserId) {
        if let Some(holder) = self.held.replies.remove(id) {
            self.cap_release(now, CapScope::User(user.clone()), SlotKind::Streams, holder);
        }
    }

    fn cap_release(&mut self, now: Instant, scope: CapScope, kind: SlotKind, holder: String) {
        let key = (scope.clone(), kind);
        if let Some(set) = self.held.slots.get_mut(&key) {
            set.remove(&holder);
            if set.is_empty() {
                self.held.slots.remove(&key);
            }
        }
        let at_ms = self.wall_ms(now);
        self.store(
            Pending::CapQuiet,
            StoreOp::CapRelease(CapReleaseOp {
                scope,
                kind,
                holder,
                at_ms,
            }),
        );
    }

    /// Housekeeping: every third of their lifetime, the slots this node
    /// holds are kept (one operation per scope and kind: each scope is its
    /// own hash tag).
    pub(super) fn keep_caps(&mut self, now: Instant) {
        let ttl = Duration::from_millis(self.cap_ttl_ms());
        if self.held.kept_at.is_some_and(|at| now < at + ttl / 3) {
            return;
        }
        self.held.kept_at = Some(now);
        let at_ms = self.wall_ms(now);
        let ttl_ms = self.cap_ttl_ms();
        let keeps: Vec<CapKeepOp> = self
            .held
            .slots
            .iter()
            .map(|((scope, kind), holders)| CapKeepOp {
                scope: scope.clone(),
                kind: *kind,
                holders: holders.iter().cloned().collect(),
                ttl_ms,
                at_ms,
            })
            .collect();
        for op in keeps {
            self.store(Pending::CapQuiet, StoreOp::CapKeep(op));
        }
    }
}

/// What a client reads when `cap` refused it.
fn cap_message(cap: Cap) -> &'static str {
    match cap {
        Cap::UserConnections => "too many open connections for this user",
        Cap::IpConnections => "too many open connections from this address",
        Cap::UserStreams => "too many replies streaming at once for this user: nothing was started",
        Cap::ChatRate => "too many chats per minute for this user: nothing was started",
    }
}

/// The `error` `rate_limited` frame for a refusal by `cap`.
pub(super) fn rate_limited_frame(
    cap: Cap,
    retry_after_ms: u64,
    request_id: Option<RequestId>,
) -> ServerFrame {
    ServerFrame::Error(ErrorFrame {
        code: ErrorCode::RateLimited,
        message: cap_message(cap).to_owned(),
        request_id,
        retry_after_ms: Some(retry_after_ms),
    })
}
