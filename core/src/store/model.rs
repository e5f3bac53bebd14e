//! The pure reference model of the store: plain maps, one method per
//! operation, no I/O. The in-memory store of a single node is this model; the
//! Redis scripts must answer exactly as it does.
//!
//! The model is `Clone + Eq + Hash`, so checkers can hash its states.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::stamps;
use super::{
    message_ids, reply_nonce, AppendOp, CancelOp, DeleteOp, Epoch, LiveReply, LocateOp, Notice,
    PresenceCheckOp, PresenceJoinOp, PresenceLeaveOp, PresenceRefreshOp, Published, ReadOp, ReapOp,
    RegisterOp, RenewOp, SettleOp, SnapshotOp, StartOp, StoreOp, StoreReply, SweepOp, Token, Topic,
};
use crate::ids::{ClientMessageId, ConvKey, MessageId, NodeId, Seq, SessionId, UserId};
use crate::presence::{PresenceTimers, UserPresence};
use crate::stream::{Outcome, StreamState, StreamTimers};
use crate::wire::{Message, MessageStatus, Role, Usage};

/// The store's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoreConfig {
    /// Lease, cancel deadline and grace window.
    pub timers: StreamTimers,
    /// Presence debounce and entry expiry.
    pub presence: PresenceTimers,
    /// How many messages a conversation's history keeps (oldest dropped).
    pub history_limit: usize,
    /// How long an idempotency key (`client_message_id`) is remembered.
    pub idempotency_ttl_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            timers: StreamTimers::default(),
            presence: PresenceTimers::default(),
            history_limit: 1000,
            idempotency_ttl_ms: 24 * 3600 * 1000,
        }
    }
}

/// One reply's record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct StreamRecord {
    reply_to: MessageId,
    owner: NodeId,
    token: Token,
    state: StreamState,
    /// The chunk log: seq `i + 1` is `deltas[i]`.
    deltas: Vec<String>,
    /// The chunks' append times ([`stamps`](super::stamps)).
    ts_ns: Vec<u64>,
    created_at_ms: u64,
    usage: Option<Usage>,
}

impl StreamRecord {
    fn last_seq(&self) -> Seq {
        self.deltas.len() as Seq
    }

    /// The text of chunks `1..=seq`.
    fn text(&self, seq: Seq) -> String {
        let n = usize::try_from(seq)
            .unwrap_or(usize::MAX)
            .min(self.deltas.len());
        self.deltas[..n].concat()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Idempotent {
    user_message_id: MessageId,
    message_id: MessageId,
    expires_at_ms: u64,
}

/// One conversation's records.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct Conv {
    history: VecDeque<Message>,
    streams: BTreeMap<MessageId, StreamRecord>,
    /// The reply that is Active or Cancelling, if any.
    live: Option<MessageId>,
    /// The most recently started reply (target of a cancel without id).
    latest: Option<MessageId>,
    idempotency: BTreeMap<ClientMessageId, Idempotent>,
    next_token: Token,
}

impl Conv {
    /// Drops what has expired by `now_ms`.
    fn purge(&mut self, now_ms: u64) {
        self.streams.retain(|_, r| !r.state.is_expired(now_ms));
        self.idempotency.retain(|_, i| i.expires_at_ms > now_ms);
    }

    fn is_empty(&self) -> bool {
        self.history.is_empty() && self.streams.is_empty() && self.idempotency.is_empty()
    }

    fn push_history(&mut self, m: Message, limit: usize) {
        self.history.push_back(m);
        while self.history.len() > limit {
            self.history.pop_front();
        }
    }

    fn find_history(&self, id: &MessageId) -> Option<Message> {
        self.history.iter().find(|m| &m.message_id == id).cloned()
    }
}

/// The reference model. See the [module docs](super).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Model {
    config: StoreConfig,
    epoch: Epoch,
    convs: BTreeMap<ConvKey, Conv>,
    presence: BTreeMap<UserId, UserPresence>,
    /// The caps' records ([`caps`](super::caps)).
    pub(super) caps: BTreeMap<super::CapScope, super::caps::CapRecords>,
    /// [`StoreOp::Register`]'s entries: (session, nonce) → (user, expiry).
    locators: BTreeMap<(SessionId, u64), (UserId, u64)>,
}

impl Model {
    /// An empty store with the given epoch.
    #[must_use]
    pub fn new(config: StoreConfig, epoch: Epoch) -> Self {
        Self {
            config,
            epoch,
            convs: BTreeMap::new(),
            presence: BTreeMap::new(),
            caps: BTreeMap::new(),
            locators: BTreeMap::new(),
        }
    }

    /// The store's settings.
    #[must_use]
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The current epoch.
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The store lost everything (a restart without persistence): all records
    /// go, and the epoch becomes `new_epoch`.
    pub fn restart(&mut self, new_epoch: Epoch) {
        self.convs.clear();
        self.presence.clear();
        self.caps.clear();
        self.locators.clear();
        self.epoch = new_epoch;
    }

    /// Applies one operation atomically: its reply, and the notices it
    /// publishes (in order).
    #[must_use = "the notices must be delivered to subscribers"]
    pub fn apply(&mut self, op: StoreOp) -> (StoreReply, Vec<Published>) {
        let mut out = Vec::new();
        let reply = match op {
            StoreOp::Snapshot(op) => self.snapshot(&op),
            StoreOp::Start(op) => self.start(op, &mut out),
            StoreOp::Append(op) => self.append(op, &mut out),
            StoreOp::Cancel(op) => self.cancel(op, &mut out),
            StoreOp::Settle(op) => self.settle(op, &mut out),
            StoreOp::Renew(op) => self.renew(&op),
            StoreOp::Reap(op) => self.reap(op, &mut out),
            StoreOp::Read(op) => self.read(&op),
            StoreOp::Sweep(op) => self.sweep(op, &mut out),
            StoreOp::PresenceJoin(op) => self.presence_join(op, &mut out),
            StoreOp::PresenceLeave(op) => self.presence_leave(op, &mut out),
            StoreOp::PresenceRefresh(op) => self.presence_refresh(op),
            StoreOp::PresenceCheck(op) => self.presence_check(op, &mut out),
            StoreOp::Admit(op) => self.admit(op),
            StoreOp::CapRelease(op) => self.cap_release(op),
            StoreOp::CapKeep(op) => self.cap_keep(op),
            StoreOp::Register(op) => self.register(op),
            StoreOp::Locate(op) => self.locate(&op),
            StoreOp::Delete(op) => self.delete(&op, &mut out),
        };
        (reply, out)
    }

    // ----- inspection (for tests and checkers) -----

    /// A reply's state and chunk log, if its record exists (expiry is not
    /// applied: pass the records through [`StoreOp::Sweep`] for that).
    #[must_use]
    pub fn stream(&self, conv: &ConvKey, id: &MessageId) -> Option<(&StreamState, &[String])> {
        let r = self.convs.get(conv)?.streams.get(id)?;
        Some((&r.state, &r.deltas))
    }

    /// Every reply record: conversation, id, state, owner, chunk count.
    pub fn streams(
        &self,
    ) -> impl Iterator<Item = (&ConvKey, &MessageId, &StreamState, &NodeId, Seq)> {
        self.convs.iter().flat_map(|(k, c)| {
            c.streams
                .iter()
                .map(move |(id, r)| (k, id, &r.state, &r.owner, r.last_seq()))
        })
    }

    /// A conversation's retained history, oldest first.
    #[must_use]
    pub fn history(&self, conv: &ConvKey) -> Vec<Message> {
        self.convs
            .get(conv)
            .map(|c| c.history.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A user's presence status and open connection count, as stored (time
    /// is not applied: see [`StoreOp::PresenceCheck`]).
    #[must_use]
    pub fn presence(&self, user: &UserId) -> (crate::wire::PresenceStatus, usize) {
        self.presence
            .get(user)
            .map_or((crate::wire::PresenceStatus::Offline, 0), |p| {
                (p.state.status(), p.entries.len())
            })
    }

    /// How many records would carry an expiry in Redis: reply records,
    /// idempotency keys, reply locators and presence records. Retained history is not
    /// counted. After every window has passed and a sweep ran, this is 0
    /// (invariant 7).
    #[must_use]
    pub fn expiring_records(&self) -> usize {
        let convs: usize = self
            .convs
            .values()
            .map(|c| c.streams.len() + c.idempotency.len())
            .sum();
        convs + self.presence.len() + self.locators.len()
    }

    // ----- operations -----

    fn conv_mut(&mut self, conv: &ConvKey, now_ms: u64) -> &mut Conv {
        let c = self.convs.entry(conv.clone()).or_default();
        c.purge(now_ms);
        c
    }

    fn tidy(&mut self, conv: &ConvKey) {
        if self.convs.get(conv).is_some_and(Conv::is_empty) {
            self.convs.remove(conv);
        }
    }

    fn missing(&self, conv: &ConvKey, id: &MessageId) -> StoreReply {
        StoreReply::Missing {
            epoch: self.epoch,
            snapshot: self.convs.get(conv).and_then(|c| c.find_history(id)),
        }
    }

    fn snapshot(&mut self, op: &SnapshotOp) -> StoreReply {
        let (conv, limit) = (&op.conv, op.limit);
        let c = self.conv_mut(conv, op.at_ms);
        let history = newest(&c.history, limit);
        let live = c.live.as_ref().and_then(|id| {
            c.streams.get(id).map(|r| LiveReply {
                message_id: id.clone(),
                reply_to: r.reply_to.clone(),
                state: r.state.clone(),
                deltas: r.deltas.clone(),
                ts_ns: stamps::slice(&r.ts_ns, 0, r.deltas.len()),
                created_at_ms: r.created_at_ms,
                owner: r.owner.clone(),
            })
        });
        let reply = StoreReply::Snapshot {
            epoch: self.epoch,
            history,
            live,
        };
        self.tidy(conv);
        reply
    }

    fn start(&mut self, op: StartOp, out: &mut Vec<Published>) -> StoreReply {
        let StartOp {
            conv,
            content,
            client_message_id,
            nonce,
            owner,
            context_limit,
            at_ms,
        } = op;
        let epoch = self.epoch;
        let config = self.config;
        let c = self.conv_mut(&conv, at_ms);
        if let Some(i) = client_message_id
            .as_ref()
            .and_then(|k| c.idempotency.get(k))
        {
            return StoreReply::Duplicate {
                user_message_id: i.user_message_id.clone(),
                message_id: i.message_id.clone(),
            };
        }
        if let Some(live) = c.live.clone() {
            // A live reply whose owner is gone does not block the conversation.
            if let Some(outcome) = reap_record(c, &live, at_ms, &config) {
                publish_settled(&conv, c, &live, outcome, config.history_limit, out);
            } else {
                return StoreReply::Busy { message_id: live };
            }
        }
        let (user_id, message_id) = message_ids(epoch, nonce);
        if c.streams.contains_key(&message_id) || c.find_history(&user_id).is_some() {
            // A repeated nonce: refuse rather than overwrite.
            return StoreReply::Busy { message_id };
        }
        c.next_token += 1;
        let token = c.next_token;
        let user_message = Message {
            message_id: user_id.clone(),
            role: Role::User,
            content,
            status: MessageStatus::Completed,
            created_at_ms: at_ms,
            seq: 0,
        };
        c.push_history(user_message.clone(), config.history_limit);
        let context = newest(&c.history, context_limit);
        c.streams.insert(
            message_id.clone(),
            StreamRecord {
                reply_to: user_id.clone(),
                owner: owner.clone(),
                token,
                state: StreamState::start(at_ms, &config.timers),
                deltas: Vec::new(),
                ts_ns: Vec::new(),
                created_at_ms: at_ms,
                usage: None,
            },
        );
        c.live = Some(message_id.clone());
        c.latest = Some(message_id.clone());
        if let Some(k) = client_message_id {
            c.idempotency.insert(
                k,
                Idempotent {
                    user_message_id: user_id,
                    message_id: message_id.clone(),
                    expires_at_ms: at_ms.saturating_add(config.idempotency_ttl_ms),
                },
            );
        }
        out.push(Published {
            topic: Topic::Conv(conv.clone()),
            notice: Notice::Started {
                conv,
                user_message: user_message.clone(),
                message_id: message_id.clone(),
                owner,
            },
        });
        StoreReply::Started {
            epoch,
            user_message,
            message_id,
            token,
            context,
        }
    }

    fn append(&mut self, op: AppendOp, out: &mut Vec<Published>) -> StoreReply {
        let AppendOp {
            conv,
            message_id: id,
            token,
            first_seq,
            deltas,
            at_ms,
            at_ns,
        } = op;
        let timers = self.config.timers;
        let c = self.conv_mut(&conv, at_ms);
        let Some(r) = c.streams.get_mut(&id) else {
            return self.missing(&conv, &id);
        };
        if r.token != token {
            return StoreReply::Fenced;
        }
        match &r.state {
            StreamState::Active { .. } => {}
            StreamState::Cancelling { final_seq, .. }
            | StreamState::Settled {
                outcome: Outcome::Cancelled,
                final_seq,
                ..
            } => {
                return StoreReply::CancelRequested {
                    final_seq: *final_seq,
                }
            }
            StreamState::Settled { .. } => return StoreReply::Fenced,
        }
        let last = r.last_seq();
        if first_seq == 0 || first_seq > last + 1 {
            return StoreReply::Gap { last_seq: last };
        }
        // Explicit seqs: the part of a retried batch that is already stored is
        // skipped, never stored twice.
        let skip = usize::try_from(last + 1 - first_seq).unwrap_or(usize::MAX);
        let fresh: Vec<String> = deltas.into_iter().skip(skip).collect();
        let _ = r.state.recv_renew(at_ms, &timers);
        if !fresh.is_empty() {
            stamps::extend(&mut r.ts_ns, r.deltas.len(), fresh.len(), at_ns);
            r.deltas.extend(fresh.iter().cloned());
            out.push(Published {
                topic: Topic::Conv(conv.clone()),
                notice: Notice::Chunks {
                    conv,
                    message_id: id,
                    first_seq: last + 1,
                    deltas: fresh,
                    ts_ns: at_ns,
                },
            });
        }
        StoreReply::Ok {
            last_seq: r.last_seq(),
        }
    }

    fn cancel(&mut self, op: CancelOp, out: &mut Vec<Published>) -> StoreReply {
        let CancelOp {
            conv,
            message_id: id,
            at_ms,
        } = op;
        let timers = self.config.timers;
        let c = self.conv_mut(&conv, at_ms);
        let target = id.or_else(|| c.live.clone().or_else(|| c.latest.clone()));
        let Some(r) = target.as_ref().and_then(|t| c.streams.get_mut(t)) else {
            self.tidy(&conv);
            return StoreReply::Cancel {
                message_id: None,
                answer: None,
                final_seq: None,
            };
        };
        let Some(target) = target else {
            unreachable!("a record was found for it")
        };
        let was_active = matches!(r.state, StreamState::Active { .. });
        let answer = r.state.recv_cancel(r.last_seq(), at_ms, &timers);
        let final_seq = r.state.final_seq();
        if was_active {
            let final_seq = r.last_seq();
            out.push(Published {
                topic: Topic::Node(r.owner.clone()),
                notice: Notice::CancelRequested {
                    conv: conv.clone(),
                    message_id: target.clone(),
                    final_seq,
                },
            });
            out.push(Published {
                topic: Topic::Conv(conv.clone()),
                notice: Notice::Cancelling {
                    conv,
                    message_id: target.clone(),
                    final_seq,
                },
            });
        }
        StoreReply::Cancel {
            message_id: Some(target),
            answer: Some(answer),
            final_seq,
        }
    }

    fn settle(&mut self, op: SettleOp, out: &mut Vec<Published>) -> StoreReply {
        let SettleOp {
            conv,
            message_id: id,
            token,
            request,
            usage,
            at_ms,
        } = op;
        let timers = self.config.timers;
        let limit = self.config.history_limit;
        let c = self.conv_mut(&conv, at_ms);
        let Some(r) = c.streams.get_mut(&id) else {
            return self.missing(&conv, &id);
        };
        if r.token != token {
            return StoreReply::Fenced;
        }
        match r.state.recv_settle(request, r.last_seq(), at_ms, &timers) {
            Some(outcome) => {
                r.usage = usage;
                publish_settled(&conv, c, &id, outcome, limit, out)
            }
            None => settled_reply(&r.state, false),
        }
    }

    fn renew(&mut self, op: &RenewOp) -> StoreReply {
        let (conv, id, token, at_ms) = (&op.conv, &op.message_id, op.token, op.at_ms);
        let timers = self.config.timers;
        let c = self.conv_mut(conv, at_ms);
        let Some(r) = c.streams.get_mut(id) else {
            return self.missing(conv, id);
        };
        if r.token != token || !r.state.recv_renew(at_ms, &timers) {
            return StoreReply::Fenced;
        }
        match r.state.final_seq() {
            Some(final_seq) => StoreReply::CancelRequested { final_seq },
            None => StoreReply::Ok {
                last_seq: r.last_seq(),
            },
        }
    }

    fn reap(&mut self, op: ReapOp, out: &mut Vec<Published>) -> StoreReply {
        let ReapOp {
            conv,
            message_id: id,
            at_ms,
        } = op;
        let config = self.config;
        let c = self.conv_mut(&conv, at_ms);
        let Some(r) = c.streams.get(&id) else {
            return self.missing(&conv, &id);
        };
        if let Some(due_ms) = r.state.reap_due_ms().filter(|due| at_ms < *due) {
            return StoreReply::NotDue { due_ms };
        }
        match reap_record(c, &id, at_ms, &config) {
            Some(outcome) => publish_settled(&conv, c, &id, outcome, config.history_limit, out),
            None => match c.streams.get(&id) {
                Some(r) => settled_reply(&r.state, false),
                None => unreachable!("the record was just found"),
            },
        }
    }

    fn read(&mut self, op: &ReadOp) -> StoreReply {
        let (conv, id, after_seq) = (&op.conv, &op.message_id, op.after_seq);
        let epoch = self.epoch;
        let c = self.conv_mut(conv, op.at_ms);
        let Some(r) = c.streams.get(id) else {
            let reply = self.missing(conv, id);
            self.tidy(conv);
            return reply;
        };
        let end = r
            .state
            .final_seq()
            .unwrap_or(r.last_seq())
            .min(r.last_seq());
        let from = usize::try_from(after_seq).unwrap_or(usize::MAX);
        let to = usize::try_from(end).unwrap_or(usize::MAX);
        let (deltas, ts_ns) = if from < to {
            (
                r.deltas[from..to].to_vec(),
                stamps::slice(&r.ts_ns, from, to),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        StoreReply::Read {
            epoch,
            state: r.state.clone(),
            deltas,
            first_seq: after_seq + 1,
            usage: r.usage,
            ts_ns,
        }
    }

    fn sweep(&mut self, op: SweepOp, out: &mut Vec<Published>) -> StoreReply {
        let SweepOp { at_ms } = op;
        let config = self.config;
        let mut reaped = Vec::new();
        for (key, c) in self.convs.iter_mut() {
            c.purge(at_ms);
            if let Some(live) = c.live.clone() {
                if let Some(outcome) = reap_record(c, &live, at_ms, &config) {
                    let _ =
                        publish_settled(key, c, &live, outcome.clone(), config.history_limit, out);
                    reaped.push((key.clone(), live, outcome));
                }
            }
        }
        self.convs.retain(|_, c| !c.is_empty());
        self.locators.retain(|_, (_, expires)| *expires > at_ms);
        let t = config.presence;
        for (user, p) in self.presence.iter_mut() {
            if let Some(status) = p.expire(at_ms, &t) {
                out.push(presence_notice(user, status));
            }
        }
        self.presence.retain(|_, p| !p.is_idle());
        StoreReply::Swept { reaped }
    }

    fn register(&mut self, op: RegisterOp) -> StoreReply {
        let RegisterOp { conv, nonce, at_ms } = op;
        let expires = at_ms.saturating_add(self.config.idempotency_ttl_ms);
        self.locators
            .insert((conv.session, nonce), (conv.user, expires));
        StoreReply::Refreshed
    }

    fn locate(&mut self, op: &LocateOp) -> StoreReply {
        let user = reply_nonce(&op.message_id).and_then(|nonce| {
            let key = (op.session.clone(), nonce);
            match self.locators.get(&key) {
                Some((user, expires)) if *expires > op.at_ms => Some(user.clone()),
                Some(_) => {
                    self.locators.remove(&key);
                    None
                }
                None => None,
            }
        });
        StoreReply::Located { user }
    }

    fn delete(&mut self, op: &DeleteOp, out: &mut Vec<Published>) -> StoreReply {
        let (conv, at_ms) = (&op.conv, op.at_ms);
        let config = self.config;
        let c = self.conv_mut(conv, at_ms);
        if let Some(live) = c.live.clone() {
            // A live reply whose owner is gone does not block the delete.
            if let Some(outcome) = reap_record(c, &live, at_ms, &config) {
                let _ = publish_settled(conv, c, &live, outcome, config.history_limit, out);
            } else {
                return StoreReply::Busy { message_id: live };
            }
        }
        let count = c.history.len() as u64;
        c.history.clear();
        c.streams.clear();
        c.latest = None;
        // Every record is gone, so no token is in use: the next reply's
        // fencing token starts again at 1 (Redis drops the meta key).
        c.next_token = 0;
        self.tidy(conv);
        StoreReply::Deleted { count }
    }

    fn presence_join(&mut self, op: PresenceJoinOp, out: &mut Vec<Published>) -> StoreReply {
        let PresenceJoinOp {
            user,
            node,
            conn,
            at_ms,
        } = op;
        let t = self.config.presence;
        let p = self.presence.entry(user.clone()).or_default();
        let _ = p.expire(at_ms, &t);
        if let Some(status) = p.join(node, conn, at_ms, &t) {
            out.push(presence_notice(&user, status));
        }
        presence_reply(p)
    }

    fn presence_leave(&mut self, op: PresenceLeaveOp, out: &mut Vec<Published>) -> StoreReply {
        let PresenceLeaveOp {
            user,
            node,
            conn,
            at_ms,
        } = op;
        let t = self.config.presence;
        let p = self.presence.entry(user.clone()).or_default();
        if let Some(status) = p.leave(&node, conn, at_ms, &t) {
            out.push(presence_notice(&user, status));
        }
        let reply = presence_reply(p);
        if p.is_idle() {
            self.presence.remove(&user);
        }
        reply
    }

    fn presence_refresh(&mut self, op: PresenceRefreshOp) -> StoreReply {
        let PresenceRefreshOp { node, users, at_ms } = op;
        let t = self.config.presence;
        for u in users {
            if let Some(p) = self.presence.get_mut(&u) {
                p.refresh(&node, at_ms, &t);
            }
        }
        StoreReply::Refreshed
    }

    fn presence_check(&mut self, op: PresenceCheckOp, out: &mut Vec<Published>) -> StoreReply {
        let PresenceCheckOp { user, at_ms } = op;
        let t = self.config.presence;
        let p = self.presence.entry(user.clone()).or_default();
        if let Some(status) = p.expire(at_ms, &t) {
            out.push(presence_notice(&user, status));
        }
        let reply = presence_reply(p);
        if p.is_idle() {
            self.presence.remove(&user);
        }
        reply
    }
}

/// Reaps `id` if due; on success the record is Settled and history written.
fn reap_record(c: &mut Conv, id: &MessageId, at_ms: u64, config: &StoreConfig) -> Option<Outcome> {
    let r = c.streams.get_mut(id)?;
    let last = r.last_seq();
    r.state.recv_reap(last, at_ms, &config.timers)
}

/// After a transition to Settled: history, the live slot, the notice, and the
/// reply.
fn publish_settled(
    conv: &ConvKey,
    c: &mut Conv,
    id: &MessageId,
    outcome: Outcome,
    history_limit: usize,
    out: &mut Vec<Published>,
) -> StoreReply {
    let Some(r) = c.streams.get(id) else {
        unreachable!("settled records exist")
    };
    let final_seq = r.state.final_seq().unwrap_or(0);
    let message = Message {
        message_id: id.clone(),
        role: Role::Assistant,
        content: r.text(final_seq),
        status: outcome.status().into(),
        created_at_ms: r.created_at_ms,
        seq: final_seq,
    };
    let usage = r.usage;
    c.push_history(message, history_limit);
    if c.live.as_ref() == Some(id) {
        c.live = None;
    }
    out.push(Published {
        topic: Topic::Conv(conv.clone()),
        notice: Notice::Settled {
            conv: conv.clone(),
            message_id: id.clone(),
            outcome: outcome.clone(),
            final_seq,
            usage,
        },
    });
    StoreReply::Settled {
        outcome,
        final_seq,
        changed: true,
    }
}

fn settled_reply(state: &StreamState, changed: bool) -> StoreReply {
    match state {
        StreamState::Settled {
            outcome, final_seq, ..
        } => StoreReply::Settled {
            outcome: outcome.clone(),
            final_seq: *final_seq,
            changed,
        },
        _ => StoreReply::Fenced,
    }
}

fn presence_notice(user: &UserId, status: crate::wire::PresenceStatus) -> Published {
    Published {
        topic: Topic::User(user.clone()),
        notice: Notice::Presence {
            user: user.clone(),
            status,
        },
    }
}

fn presence_reply(p: &UserPresence) -> StoreReply {
    StoreReply::Presence {
        status: p.state.status(),
        connections: p.entries.len() as u64,
        due_ms: p.next_due_ms(),
    }
}

fn newest(history: &VecDeque<Message>, limit: usize) -> Vec<Message> {
    let skip = history.len().saturating_sub(limit);
    history.iter().skip(skip).cloned().collect()
}
