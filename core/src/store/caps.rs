//! The store's side of the [caps](crate::caps): [`StoreOp::Admit`],
//! [`StoreOp::CapRelease`], [`StoreOp::CapKeep`], and their records in the
//! reference model.
//!
//! Every record belongs to one [`CapScope`] — a user, or a client address —
//! and an operation touches the records of one scope only (in Redis, keys
//! of one hash tag: `{u:USER}` or `{ip:ADDR}`, so a Redis Cluster keeps
//! each scope on one shard). A scope holds a [`Slots`] per [`SlotKind`] and
//! (users) the chat [`Bucket`].
//!
//! [`StoreOp::Admit`]: super::StoreOp::Admit
//! [`StoreOp::CapRelease`]: super::StoreOp::CapRelease
//! [`StoreOp::CapKeep`]: super::StoreOp::CapKeep

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Model, StoreReply};
use crate::caps::{Bucket, Cap, Rate, Slots, SLOT_RETRY_AFTER_MS};
use crate::ids::UserId;

/// Whose caps: a user's, or a client address's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "scope", content = "id", rename_all = "snake_case")]
pub enum CapScope {
    /// One user, all nodes.
    User(UserId),
    /// One client address, all nodes.
    Ip(IpAddr),
}

/// What a slot stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotKind {
    /// An open WebSocket connection.
    Connections,
    /// A streaming reply.
    Streams,
}

impl SlotKind {
    /// The cap a refusal of this kind of slot in `scope` is counted under.
    #[must_use]
    pub fn cap(self, scope: &CapScope) -> Cap {
        match (scope, self) {
            (CapScope::Ip(_), _) => Cap::IpConnections,
            (CapScope::User(_), Self::Connections) => Cap::UserConnections,
            (CapScope::User(_), Self::Streams) => Cap::UserStreams,
        }
    }

    /// The name in keys and scripts.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connections => "conns",
            Self::Streams => "streams",
        }
    }
}

/// [`StoreOp::Admit`](super::StoreOp::Admit): atomically, in `scope` —
/// purge expired slots of `kind`; refuse ([`StoreReply::Limited`]) if
/// `limit > 0` and `holder` holds none and `limit` are held; refuse if
/// `rate` is given and the bucket has no token; else take the token and
/// give `holder` a slot (when `limit > 0`) until `at_ms + ttl_ms`
/// ([`StoreReply::Admitted`]). A refusal changes nothing: a chat refused
/// for its streams keeps its token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AdmitOp {
    /// Whose caps.
    pub scope: CapScope,
    /// Which slots.
    pub kind: SlotKind,
    /// The slot's holder (unique cluster-wide: it names the node).
    pub holder: String,
    /// At most this many slots (0: no slot is taken or counted).
    pub limit: u32,
    /// Also take a token from the scope's bucket (chats).
    pub rate: Option<Rate>,
    /// How long the slot lives without a [`CapKeepOp`].
    pub ttl_ms: u64,
    /// Wall-clock time of the operation.
    pub at_ms: u64,
}

/// [`StoreOp::CapRelease`](super::StoreOp::CapRelease): `holder` gives its
/// slot back.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CapReleaseOp {
    /// Whose caps.
    pub scope: CapScope,
    /// Which slots.
    pub kind: SlotKind,
    /// The holder.
    pub holder: String,
    /// Wall-clock time of the operation.
    pub at_ms: u64,
}

/// [`StoreOp::CapKeep`](super::StoreOp::CapKeep): the node of `holders` is
/// alive — their slots (those not expired) live until `at_ms + ttl_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CapKeepOp {
    /// Whose caps.
    pub scope: CapScope,
    /// Which slots.
    pub kind: SlotKind,
    /// The holders.
    pub holders: Vec<String>,
    /// The slots' new lifetime.
    pub ttl_ms: u64,
    /// Wall-clock time of the operation.
    pub at_ms: u64,
}

/// One scope's records in the model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub(super) struct CapRecords {
    slots: BTreeMap<SlotKind, Slots>,
    bucket: Option<Bucket>,
}

impl CapRecords {
    fn is_empty(&self) -> bool {
        self.bucket.is_none() && self.slots.values().all(Slots::is_empty)
    }
}

impl Model {
    pub(super) fn admit(&mut self, op: AdmitOp) -> StoreReply {
        let AdmitOp {
            scope,
            kind,
            holder,
            limit,
            rate,
            ttl_ms,
            at_ms,
        } = op;
        let r = self.caps.entry(scope.clone()).or_default();
        let slots = r.slots.entry(kind).or_default();
        slots.purge(at_ms);
        if limit > 0 && !slots.fits(&holder, limit) {
            let reply = StoreReply::Limited {
                cap: kind.cap(&scope),
                retry_after_ms: SLOT_RETRY_AFTER_MS,
            };
            self.tidy_caps(&scope);
            return reply;
        }
        if let Some(rate) = rate {
            match rate.take(r.bucket, at_ms) {
                Ok(b) => r.bucket = Some(b),
                Err(wait) => {
                    self.tidy_caps(&scope);
                    return StoreReply::Limited {
                        cap: Cap::ChatRate,
                        retry_after_ms: wait,
                    };
                }
            }
        }
        if limit > 0 {
            slots_mut(r, kind).insert(holder, at_ms.saturating_add(ttl_ms));
        }
        self.tidy_caps(&scope);
        StoreReply::Admitted
    }

    pub(super) fn cap_release(&mut self, op: CapReleaseOp) -> StoreReply {
        if let Some(r) = self.caps.get_mut(&op.scope) {
            let slots = slots_mut(r, op.kind);
            slots.purge(op.at_ms);
            slots.release(&op.holder);
        }
        self.tidy_caps(&op.scope);
        StoreReply::Refreshed
    }

    pub(super) fn cap_keep(&mut self, op: CapKeepOp) -> StoreReply {
        if let Some(r) = self.caps.get_mut(&op.scope) {
            let slots = slots_mut(r, op.kind);
            slots.purge(op.at_ms);
            slots.keep(&op.holders, op.at_ms.saturating_add(op.ttl_ms));
        }
        self.tidy_caps(&op.scope);
        StoreReply::Refreshed
    }

    /// How many slots of `kind` `scope` holds, expired ones included (for
    /// tests and checkers).
    #[must_use]
    pub fn cap_slots(&self, scope: &CapScope, kind: SlotKind) -> usize {
        self.caps
            .get(scope)
            .and_then(|r| r.slots.get(&kind))
            .map_or(0, Slots::len)
    }

    fn tidy_caps(&mut self, scope: &CapScope) {
        if let Some(r) = self.caps.get_mut(scope) {
            r.slots.retain(|_, s| !s.is_empty());
            if r.is_empty() {
                self.caps.remove(scope);
            }
        }
    }
}

fn slots_mut(r: &mut CapRecords, kind: SlotKind) -> &mut Slots {
    r.slots.entry(kind).or_default()
}
