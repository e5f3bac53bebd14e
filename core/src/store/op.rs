//! The operations: [`StoreOp`], one variant per operation, each carrying its
//! own payload struct. A store handles an operation by matching the variant
//! once and passing the payload whole to the function that carries it out
//! ([`Model`](super::Model)'s methods, the Redis store's plan), so adding a
//! field touches the struct and the code that reads it, nothing else.
//!
//! Every payload has `at_ms`: the wall-clock time of the operation, chosen
//! by the calling node (see the [module docs](super)).

use serde::{Deserialize, Serialize};

use super::{AdmitOp, CapKeepOp, CapReleaseOp, Token};
use crate::ids::{ClientMessageId, ConnId, ConvKey, MessageId, NodeId, Seq, SessionId, UserId};
use crate::stream::SettleRequest;
use crate::wire::Usage;

/// An operation on the store. See the table in the [module docs](super).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum StoreOp {
    /// A new connection's view: history and the live reply.
    Snapshot(SnapshotOp),
    /// A user turn and the start of its reply.
    Start(StartOp),
    /// Chunks `first_seq ..` of a reply.
    Append(AppendOp),
    /// A cancel, of one reply or (without id) of the latest one.
    Cancel(CancelOp),
    /// The producer ends a reply.
    Settle(SettleOp),
    /// The producer extends its lease.
    Renew(RenewOp),
    /// Any node asks to settle a reply whose owner is gone.
    Reap(ReapOp),
    /// A reply's chunks after `after_seq`, and its state.
    Read(ReadOp),
    /// Reap every expired lease, drop expired records and presence entries.
    Sweep(SweepOp),
    /// A connection of `user` opened on `node`.
    PresenceJoin(PresenceJoinOp),
    /// A connection of `user` closed on `node`.
    PresenceLeave(PresenceLeaveOp),
    /// `node` is alive: extend the entries of `users`' connections on it.
    PresenceRefresh(PresenceRefreshOp),
    /// Move a user's presence on with time (debounce, expiry) and read it.
    PresenceCheck(PresenceCheckOp),
    /// Take a cap's slot and/or chat token, or refuse.
    Admit(AdmitOp),
    /// Give a cap's slot back.
    CapRelease(CapReleaseOp),
    /// Keep a live node's slots.
    CapKeep(CapKeepOp),
    /// Remember whose conversation the reply a `Start` with `nonce` makes
    /// belongs to, so that it can be found from its session and id alone.
    Register(RegisterOp),
    /// The user whose conversation of `session` holds a registered reply.
    Locate(LocateOp),
    /// Clear a conversation's history (refused while a reply is live).
    Delete(DeleteOp),
}

impl StoreOp {
    /// The conversation the operation is about, if one.
    #[must_use]
    pub fn conv(&self) -> Option<&ConvKey> {
        match self {
            Self::Snapshot(SnapshotOp { conv, .. })
            | Self::Start(StartOp { conv, .. })
            | Self::Append(AppendOp { conv, .. })
            | Self::Cancel(CancelOp { conv, .. })
            | Self::Settle(SettleOp { conv, .. })
            | Self::Renew(RenewOp { conv, .. })
            | Self::Reap(ReapOp { conv, .. })
            | Self::Read(ReadOp { conv, .. })
            | Self::Delete(DeleteOp { conv, .. }) => Some(conv),
            Self::Sweep(_)
            | Self::PresenceJoin(_)
            | Self::PresenceLeave(_)
            | Self::PresenceRefresh(_)
            | Self::PresenceCheck(_)
            | Self::Admit(_)
            | Self::CapRelease(_)
            | Self::CapKeep(_)
            | Self::Register(_)
            | Self::Locate(_) => None,
        }
    }

    /// Whether a store that has no room for writes refuses this operation
    /// ([`StoreError::Refused`](super::StoreError::Refused)): those that
    /// grow the stored data with what users send or generators produce — a
    /// new exchange (`Start`), a reply's chunks (`Append`) — and `Cancel`, so
    /// that a full store answers every request that would change a
    /// conversation the same way (a reply that is streaming ends by itself
    /// at its next append). Every other operation only ends, keeps or reads
    /// what is stored, and a full store still carries it out: a reply can
    /// always be settled and reaped, a lease renewed, a conversation read,
    /// a presence entry kept. `Register` grows it too (it precedes a
    /// `Start`, which a full store would refuse anyway); `Delete` frees room.
    #[must_use]
    pub fn is_refused_when_full(&self) -> bool {
        matches!(
            self,
            Self::Start(_) | Self::Append(_) | Self::Cancel(_) | Self::Register(_)
        )
    }

    /// Whether retrying the operation after an unknown outcome (a timeout)
    /// is safe. Everything is, except `Start` without an idempotency key.
    #[must_use]
    pub fn is_idempotent(&self) -> bool {
        !matches!(
            self,
            Self::Start(StartOp {
                client_message_id: None,
                ..
            })
        )
    }
}

/// [`StoreOp::Snapshot`]: a new connection's view — history and the live
/// reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotOp {
    /// The conversation.
    pub conv: ConvKey,
    /// At most this many history messages (the newest).
    pub limit: usize,
    /// Wall-clock time of the operation.
    pub at_ms: u64,
}

/// [`StoreOp::Start`]: a user turn and the start of its reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StartOp {
    /// The conversation.
    pub conv: ConvKey,
    /// The user's text (already validated).
    pub content: String,
    /// The idempotency key, if the client sent one.
    pub client_message_id: Option<ClientMessageId>,
    /// Random bits for the new message ids.
    pub nonce: u64,
    /// The node that will produce the reply.
    pub owner: NodeId,
    /// At most this many history messages go to the generator.
    pub context_limit: usize,
    /// Wall-clock time of the operation (the user turn's `created_at_ms`).
    pub at_ms: u64,
}

/// [`StoreOp::Append`]: chunks `first_seq ..` of a reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AppendOp {
    /// The conversation.
    pub conv: ConvKey,
    /// The reply.
    pub message_id: MessageId,
    /// The producer's fencing token.
    pub token: Token,
    /// The seq of the first delta.
    pub first_seq: Seq,
    /// The deltas, in seq order (at least one).
    pub deltas: Vec<String>,
    /// Wall-clock time of the operation.
    pub at_ms: u64,
    /// With [`Config::chunk_timestamps`](crate::Config::chunk_timestamps):
    /// the same time in Unix nanoseconds, stored with each chunk (a retried
    /// batch keeps the stamps of the chunks already stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ns: Option<u64>,
}

/// [`StoreOp::Cancel`]: a cancel, of one reply or (without id) of the
/// latest one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CancelOp {
    /// The conversation.
    pub conv: ConvKey,
    /// The reply, or `None` for the conversation's latest reply.
    pub message_id: Option<MessageId>,
    /// Wall-clock time of the operation.
    pub at_ms: u64,
}

/// [`StoreOp::Settle`]: the producer ends a reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SettleOp {
    /// The conversation.
    pub conv: ConvKey,
    /// The reply.
    pub message_id: MessageId,
    /// The producer's fencing token.
    pub token: Token,
    /// What the producer asks for.
    pub request: SettleRequest,
    /// The last seq the store acknowledged to the producer. A store whose
    /// log of the still streaming reply ends before it lost acknowledged
    /// writes (a Redis failover to a replica that had not received them)
    /// and answers [`StoreReply::Gap`] instead of settling short.
    pub last_seq: Seq,
    /// Token counts, where known.
    pub usage: Option<Usage>,
    /// Wall-clock time of the operation.
    pub at_ms: u64,
}

/// [`StoreOp::Renew`]: the producer extends its lease.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RenewOp {
    /// The conversation.
    pub conv: ConvKey,
    /// The reply.
    pub message_id: MessageId,
    /// The producer's fencing token.
    pub token: Token,
    /// Wall-clock time of the operation.
    pub at_ms: u64,
}

/// [`StoreOp::Reap`]: any node asks to settle a reply whose owner is gone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReapOp {
    /// The conversation.
    pub conv: ConvKey,
    /// The reply.
    pub message_id: MessageId,
    /// Wall-clock time of the operation.
    pub at_ms: u64,
}

/// [`StoreOp::Read`]: a reply's chunks after `after_seq`, and its state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReadOp {
    /// The conversation.
    pub conv: ConvKey,
    /// The reply.
    pub message_id: MessageId,
    /// Chunks with a greater seq are returned.
    pub after_seq: Seq,
    /// Wall-clock time of the operation.
    pub at_ms: u64,
}

/// [`StoreOp::Sweep`]: reap every expired lease, drop expired records and
/// presence entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SweepOp {
    /// Wall-clock time of the operation.
    pub at_ms: u64,
}

/// [`StoreOp::PresenceJoin`]: a connection of `user` opened on `node`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PresenceJoinOp {
    /// The user.
    pub user: UserId,
    /// The node holding the connection.
    pub node: NodeId,
    /// The connection.
    pub conn: ConnId,
    /// Wall-clock time of the operation.
    pub at_ms: u64,
}

/// [`StoreOp::PresenceLeave`]: a connection of `user` closed on `node`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PresenceLeaveOp {
    /// The user.
    pub user: UserId,
    /// The node holding the connection.
    pub node: NodeId,
    /// The connection.
    pub conn: ConnId,
    /// Wall-clock time of the operation.
    pub at_ms: u64,
}

/// [`StoreOp::PresenceRefresh`]: `node` is alive — extend the entries of
/// `users`' connections on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PresenceRefreshOp {
    /// The node.
    pub node: NodeId,
    /// The users with connections on the node.
    pub users: Vec<UserId>,
    /// Wall-clock time of the operation.
    pub at_ms: u64,
}

/// [`StoreOp::PresenceCheck`]: move a user's presence on with time
/// (debounce, expiry) and read it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PresenceCheckOp {
    /// The user.
    pub user: UserId,
    /// Wall-clock time of the operation.
    pub at_ms: u64,
}

/// [`StoreOp::Register`]: the reply that a [`StartOp`] with `nonce` in
/// `conv` will make is `conv.user`'s — so that a request that names only
/// the session and the reply's id (the seed front end's `POST /api/cancel`,
/// which carries no user) finds its conversation on any node.
///
/// Sent before that `Start`, so the reply is findable before anyone can
/// see its id. The entry lives for the store's idempotency window
/// ([`StoreConfig::idempotency_ttl_ms`](super::StoreConfig)); under Redis
/// Cluster its key has its own hash tag (`{x:SESSION/NONCE}`), one slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RegisterOp {
    /// The conversation the reply will belong to.
    pub conv: ConvKey,
    /// The nonce the `Start` will carry.
    pub nonce: u64,
    /// Wall-clock time of the operation.
    pub at_ms: u64,
}

/// [`StoreOp::Locate`]: whose conversation of `session` a registered reply
/// belongs to (`StoreReply::Located`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LocateOp {
    /// The session the request named.
    pub session: SessionId,
    /// The reply's id.
    pub message_id: MessageId,
    /// Wall-clock time of the operation.
    pub at_ms: u64,
}

/// [`StoreOp::Delete`]: clear a conversation's history and drop its settled
/// replies' records (their text and logs), unless a reply is live
/// (`StoreReply::Busy`; a live reply whose owner is gone is reaped first,
/// as `Start` does). Idempotency keys and the fencing counter stay.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeleteOp {
    /// The conversation.
    pub conv: ConvKey,
    /// Wall-clock time of the operation.
    pub at_ms: u64,
}
