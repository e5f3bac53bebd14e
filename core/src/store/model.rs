//! The pure reference model of the store: plain maps, one method per
//! operation, no I/O. The in-memory store of a single node is this model; the
//! Redis scripts must answer exactly as it does.
//!
//! The model is `Clone + Eq + Hash`, so checkers can hash its states.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{Epoch, Published, StoreOp, StoreReply, Token};
use crate::ids::{ClientMessageId, ConvKey, MessageId, NodeId, Seq, SessionId, UserId};
use crate::presence::{PresenceTimers, UserPresence};
use crate::stream::{StreamState, StreamTimers};
use crate::wire::{Message, Usage};

mod conversation;
mod presence;
mod reply;

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
}

fn newest(history: &VecDeque<Message>, limit: usize) -> Vec<Message> {
    let skip = history.len().saturating_sub(limit);
    history.iter().skip(skip).cloned().collect()
}
