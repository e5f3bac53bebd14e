//! The store: what must be agreed cluster-wide, as operations the core emits
//! ([`Output::Store`](crate::Output::Store)) and replies it consumes
//! ([`Input::StoreReply`](crate::Input::StoreReply)).
//!
//! Every operation is atomic. Its meaning is defined once, by the pure
//! reference model in [`model`]: the in-memory store of a single node *is*
//! that model, and the Redis store implements each operation as one script
//! whose replies must equal the model's (a differential test checks it).
//!
//! | operation | atomically does |
//! | --- | --- |
//! | [`StoreOp::Start`] | refuse (`busy`) if the conversation has a live stream whose lease holds; else add the user turn to history and record the reply Active with a lease and a fencing token; idempotent per `client_message_id` |
//! | [`StoreOp::Append`] | only if Active and the token matches: store chunks at explicit seqs (a retry cannot duplicate), renew the lease, notify the conversation; else `cancelled` / `fenced` |
//! | [`StoreOp::Cancel`] | decide per the cancel table; on Active: → Cancelling, fix `final_seq`, notify the owner node and the conversation |
//! | [`StoreOp::Settle`] | Active/Cancelling → Settled (a cancel that came first wins), write the reply to history, start the grace window |
//! | [`StoreOp::Renew`] | extend the lease; reply the state, so a lost cancel notice is noticed within one renew period |
//! | [`StoreOp::Reap`] | if the lease expired (or the cancel deadline passed) → Settled(failed `owner_lost` / cancelled) |
//! | [`StoreOp::Read`] | a reply's chunks after a seq, its state, and the store's epoch |
//! | [`StoreOp::Snapshot`] | a conversation's history and its live reply (for a new connection) |
//! | [`StoreOp::Sweep`] | reap every expired lease, drop expired records and presence entries |
//! | presence ops | connection joined / left / refreshed; user status with debounce |
//! | [`StoreOp::Admit`], [`StoreOp::CapRelease`], [`StoreOp::CapKeep`] | a user's (or a client address's) [caps](crate::caps): take a slot and/or a chat token, or refuse with `retry_after_ms`; give a slot back; keep a live node's slots |
//! | [`StoreOp::Register`], [`StoreOp::Locate`] | remember whose conversation of a session a reply (named by its `Start`'s nonce) belongs to; look it up from the session and the reply's id |
//! | [`StoreOp::Delete`] | refuse (`busy`) if a reply is live; else clear the history and drop the settled replies' records |
//!
//! Times in operations are wall-clock milliseconds chosen by the calling
//! node, so every implementation decides leases and grace windows the same
//! way (Redis scripts get the time as an argument rather than reading their
//! own clock).
//!
//! **Epoch.** The store has an epoch that changes when its data was lost (a
//! Redis restart without persistence, a flush). Message ids embed the epoch
//! they were made in ([`epoch_of`]), so a resume of a message from an older
//! epoch is answered `resume_unavailable: epoch_changed`, never with a silent
//! gap.

mod caps;
mod memory;
pub mod model;
mod op;
pub mod stamps;
#[cfg(test)]
mod tests_model;

use serde::{Deserialize, Serialize};

use crate::ids::{ConvKey, MessageId, NodeId, Seq, UserId};
use crate::stream::{CancelAnswer, Outcome, StreamState};
use crate::wire::{Message, PresenceStatus, Usage};

pub use caps::{AdmitOp, CapKeepOp, CapReleaseOp, CapScope, SlotKind};
pub use memory::{Feedback, MemoryStore};
pub use model::{Model, StoreConfig};
pub use op::{
    AppendOp, CancelOp, DeleteOp, LocateOp, PresenceCheckOp, PresenceJoinOp, PresenceLeaveOp,
    PresenceRefreshOp, ReadOp, ReapOp, RegisterOp, RenewOp, SettleOp, SnapshotOp, StartOp, StoreOp,
    SweepOp,
};

/// A fencing token: issued by [`StoreOp::Start`], required by every write of
/// the producer. A producer whose stream was reaped can never write again.
pub type Token = u64;

/// The store's epoch (see the module docs).
pub type Epoch = u64;

/// Builds the ids of a new exchange: the user turn and its reply.
///
/// Both embed the store's epoch and the caller's random nonce; the store
/// makes them so that the epoch is always the one the message was stored in.
#[must_use]
pub fn message_ids(epoch: Epoch, nonce: u64) -> (MessageId, MessageId) {
    let make = |suffix: char| {
        MessageId::parse(format!("{epoch:x}.{nonce:016x}{suffix}"))
            .unwrap_or_else(|_| unreachable!("at most 35 ASCII characters"))
    };
    (make('u'), make('r'))
}

/// The epoch a message id was made in, if it is one of ours.
#[must_use]
pub fn epoch_of(id: &MessageId) -> Option<Epoch> {
    let (epoch, rest) = id.as_str().split_once('.')?;
    if rest.len() != 17 {
        return None;
    }
    u64::from_str_radix(epoch, 16).ok()
}

/// The nonce a reply's id was made with ([`message_ids`]), if it is the id
/// of a reply of ours (not of a user turn).
#[must_use]
pub fn reply_nonce(id: &MessageId) -> Option<u64> {
    epoch_of(id)?;
    let (_, rest) = id.as_str().split_once('.')?;
    let hex = rest.strip_suffix('r')?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// The id of the user turn that reply `reply` answers: the two are made
/// together, with one nonce ([`message_ids`]). `None` if `reply` is not the
/// id of a reply of ours.
#[must_use]
pub fn user_turn_of(reply: &MessageId) -> Option<MessageId> {
    let nonce = reply_nonce(reply)?;
    let epoch = epoch_of(reply)?;
    Some(message_ids(epoch, nonce).0)
}

/// A live reply as a snapshot shows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LiveReply {
    /// The reply.
    pub message_id: MessageId,
    /// The user turn it answers.
    pub reply_to: MessageId,
    /// Its state (Active or Cancelling).
    pub state: StreamState,
    /// Chunks `1..=deltas.len()`.
    pub deltas: Vec<String>,
    /// When each chunk was appended (Unix ns; 0: not stamped), parallel to
    /// `deltas`; empty when none is ([`stamps`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ts_ns: Vec<u64>,
    /// When it started.
    pub created_at_ms: u64,
    /// The node producing it.
    pub owner: NodeId,
}

/// The reply to an operation. One variant per kind of answer; each
/// operation's docs list the variants it can return.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum StoreReply {
    /// [`StoreOp::Snapshot`]: history (oldest first) and the live reply.
    Snapshot {
        /// The store's epoch.
        epoch: Epoch,
        /// Settled messages, oldest first, at most the configured count.
        history: Vec<Message>,
        /// The reply being produced, if any.
        live: Option<LiveReply>,
    },
    /// [`StoreOp::Start`]: the reply is Active and the caller owns it.
    Started {
        /// The store's epoch.
        epoch: Epoch,
        /// The user turn, as stored.
        user_message: Message,
        /// The reply's id.
        message_id: MessageId,
        /// The producer's fencing token.
        token: Token,
        /// The newest history messages, the new user turn last: the
        /// generator's input.
        context: Vec<Message>,
    },
    /// [`StoreOp::Start`]: the idempotency key was seen before; nothing new
    /// was started. These are the original ids.
    Duplicate {
        /// The original user turn.
        user_message_id: MessageId,
        /// The original reply.
        message_id: MessageId,
    },
    /// [`StoreOp::Start`], [`StoreOp::Delete`]: another reply is live in
    /// the conversation.
    Busy {
        /// The live reply.
        message_id: MessageId,
    },
    /// [`StoreOp::Append`]: stored; the log now ends at `last_seq`.
    /// [`StoreOp::Renew`]: the lease was extended and the stream is Active.
    Ok {
        /// The last stored seq.
        last_seq: Seq,
    },
    /// [`StoreOp::Append`] with a `first_seq` beyond the log's end, or
    /// [`StoreOp::Settle`] of an Active reply with a `last_seq` beyond it:
    /// nothing was stored (the store lost writes it had acknowledged).
    Gap {
        /// The last stored seq.
        last_seq: Seq,
    },
    /// [`StoreOp::Append`], [`StoreOp::Renew`]: the stream was cancelled;
    /// stop producing and settle.
    CancelRequested {
        /// The fixed last chunk.
        final_seq: Seq,
    },
    /// A producer's write with a stale token, or on a stream that is settled
    /// (reaped) or gone: the producer must stop and write nothing more.
    Fenced,
    /// [`StoreOp::Cancel`]: the decision.
    Cancel {
        /// The reply the cancel was decided against (`None`: not found).
        message_id: Option<MessageId>,
        /// The answer, or `None` for `not_found`.
        answer: Option<CancelAnswer>,
        /// The reply's fixed last chunk (when found).
        final_seq: Option<Seq>,
    },
    /// [`StoreOp::Settle`], [`StoreOp::Reap`]: the outcome that holds now.
    /// `changed` says whether this call settled it.
    Settled {
        /// The outcome.
        outcome: Outcome,
        /// The last chunk.
        final_seq: Seq,
        /// Whether this call made the transition.
        changed: bool,
    },
    /// [`StoreOp::Reap`]: the lease still holds; nothing changed.
    NotDue {
        /// When a reap could succeed.
        due_ms: u64,
    },
    /// [`StoreOp::Read`]: the reply's record.
    Read {
        /// The store's epoch.
        epoch: Epoch,
        /// Its state.
        state: StreamState,
        /// Chunks after the requested seq (never beyond `final_seq`).
        deltas: Vec<String>,
        /// The seq of `deltas[0]`.
        first_seq: Seq,
        /// Token counts, when settled and known.
        usage: Option<Usage>,
        /// When each chunk was appended, parallel to `deltas` ([`stamps`]).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ts_ns: Vec<u64>,
    },
    /// [`StoreOp::Read`], [`StoreOp::Reap`], [`StoreOp::Settle`],
    /// [`StoreOp::Renew`]: there is no record (expired, never existed, or lost
    /// with an older epoch). `snapshot` is the final message when history
    /// still has it.
    Missing {
        /// The store's epoch.
        epoch: Epoch,
        /// The settled message, if history has it.
        snapshot: Option<Message>,
    },
    /// [`StoreOp::Sweep`]: what it reaped.
    Swept {
        /// The replies settled by this sweep.
        reaped: Vec<(ConvKey, MessageId, Outcome)>,
    },
    /// Presence operations: the user's status and open connection count.
    Presence {
        /// The status on the wire.
        status: PresenceStatus,
        /// Open connections, all nodes.
        connections: u64,
        /// When the status may next change by itself (debounce, expiry).
        due_ms: Option<u64>,
    },
    /// [`StoreOp::PresenceRefresh`], [`StoreOp::CapRelease`],
    /// [`StoreOp::CapKeep`], [`StoreOp::Register`].
    Refreshed,
    /// [`StoreOp::Admit`]: within every cap; the slot (and token) is taken.
    Admitted,
    /// [`StoreOp::Locate`]: the user whose conversation holds the reply
    /// (`None`: not registered, or its entry expired).
    Located {
        /// The user.
        user: Option<UserId>,
    },
    /// [`StoreOp::Delete`]: the history is cleared.
    Deleted {
        /// How many messages it held.
        count: u64,
    },
    /// [`StoreOp::Admit`]: over `cap`; nothing was taken.
    Limited {
        /// The cap that refused.
        cap: crate::caps::Cap,
        /// When trying again may succeed, in milliseconds.
        retry_after_ms: u64,
    },
}

/// Why a store operation has no reply.
///
/// The variants differ in what a client may be told: `Unavailable` is the
/// store's absence (the wire's `unavailable`), `Refused` is a store that is
/// there but out of room (the wire's `store_full`), `Internal` is weir's own
/// bug (the wire's `internal`), never passed off as an outage.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error, Serialize, Deserialize)]
pub enum StoreError {
    /// The store cannot be reached or did not answer in time; whether the
    /// operation took effect is unknown unless it was never sent. Retrying
    /// an [idempotent](StoreOp::is_idempotent) operation is safe.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered, and refused the operation as a whole because it
    /// has no room for writes (Redis: `OOM` at `maxmemory` under
    /// `noeviction`, `MISCONF` when it cannot persist). Nothing was changed.
    /// Retrying is pointless until the store accepts writes again; which
    /// operations a full store refuses: [`StoreOp::is_refused_when_full`].
    #[error("store refuses writes: {0}")]
    Refused(String),
    /// The store answered, but with something this node does not understand
    /// (a reply the store's script never gives, a value that does not
    /// decode): a bug, in weir or in what runs under its key prefix. The
    /// operation ran, so it may well have taken effect.
    #[error("store reply not understood (a bug): {0}")]
    Internal(String),
}

/// Where a notice is published.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "topic", content = "key", rename_all = "snake_case")]
pub enum Topic {
    /// Everything about one conversation's replies.
    Conv(ConvKey),
    /// A user's presence.
    User(UserId),
    /// Control messages for one node (cancel notices for the replies it owns).
    Node(NodeId),
}

/// A notice published by an operation (pub/sub: fast, but may be lost; the
/// store's records are the truth).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum Notice {
    /// A reply started.
    Started {
        /// The conversation.
        conv: ConvKey,
        /// The user turn.
        user_message: Message,
        /// The reply.
        message_id: MessageId,
        /// The producing node.
        owner: NodeId,
    },
    /// Chunks were stored.
    Chunks {
        /// The conversation.
        conv: ConvKey,
        /// The reply.
        message_id: MessageId,
        /// The seq of `deltas[0]`.
        first_seq: Seq,
        /// The deltas.
        deltas: Vec<String>,
        /// When they were appended (the append's `at_ns`), if stamped.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts_ns: Option<u64>,
    },
    /// A reply was cancelled; `final_seq` is fixed.
    Cancelling {
        /// The conversation.
        conv: ConvKey,
        /// The reply.
        message_id: MessageId,
        /// The fixed last chunk.
        final_seq: Seq,
    },
    /// To the owner node: stop the generator of this reply.
    CancelRequested {
        /// The conversation.
        conv: ConvKey,
        /// The reply.
        message_id: MessageId,
        /// The fixed last chunk.
        final_seq: Seq,
    },
    /// A reply settled.
    Settled {
        /// The conversation.
        conv: ConvKey,
        /// The reply.
        message_id: MessageId,
        /// The outcome.
        outcome: Outcome,
        /// The last chunk.
        final_seq: Seq,
        /// Token counts, where known.
        usage: Option<Usage>,
    },
    /// A user's presence changed.
    Presence {
        /// The user.
        user: UserId,
        /// The new status.
        status: PresenceStatus,
    },
}

/// A notice and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Published {
    /// The topic.
    pub topic: Topic,
    /// The notice.
    pub notice: Notice,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replys_user_turn_is_the_id_made_with_its_nonce() {
        let (u, r) = message_ids(0xabc, 42);
        assert_eq!(user_turn_of(&r), Some(u.clone()));
        assert_eq!(user_turn_of(&u), None, "a user turn answers nothing");
        let other = MessageId::parse("client-made").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(user_turn_of(&other), None);
    }

    #[test]
    fn message_ids_carry_their_epoch() {
        let (u, r) = message_ids(0xabc, 42);
        assert_ne!(u, r);
        assert_eq!(epoch_of(&u), Some(0xabc));
        assert_eq!(epoch_of(&r), Some(0xabc));
        assert!(r.as_str().len() <= MessageId::MAX_LEN);
        let (_, big) = message_ids(u64::MAX, u64::MAX);
        assert_eq!(epoch_of(&big), Some(u64::MAX));
        assert_eq!(
            epoch_of(&MessageId::parse("nope").unwrap_or_else(|e| panic!("{e}"))),
            None
        );
    }

    #[test]
    fn a_reply_id_gives_back_its_nonce_and_nothing_else_does() {
        let (u, r) = message_ids(0xabc, 0x0123_4567_89ab_cdef);
        assert_eq!(reply_nonce(&r), Some(0x0123_4567_89ab_cdef));
        assert_eq!(reply_nonce(&u), None, "a user turn is not a reply");
        for bad in [
            "nope",
            "x.0123456789abcdefr",
            "1.0123456789abcdeg0",
            "1.+123456789abcder",
        ] {
            let id = MessageId::parse(bad).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(reply_nonce(&id), None, "{bad}");
        }
    }
}
