//! Each operation as one call of the script (`src/lua/store.lua`): the
//! script's operation name, whose keys it touches (its hash tag), its
//! arguments, and how to read its answer. One constructor per operation,
//! taking the operation's payload whole; [`RedisStore::apply`] picks the
//! constructor, runs the call and decodes the answer.
//!
//! [`RedisStore::apply`]: crate::RedisStore::apply

use redis::Value;
use weir_core::ids::{ConvKey, MessageId, NodeId, UserId};
use weir_core::store::{
    message_ids, AppendOp, CancelOp, DeleteOp, Epoch, PresenceJoinOp, PresenceLeaveOp,
    PresenceRefreshOp, ReadOp, ReapOp, RenewOp, SettleOp, SnapshotOp, StartOp, StoreReply,
};
use weir_core::stream::{CancelAnswer, SettleRequest, StreamTimers};
use weir_core::wire::{Message, MessageStatus, Role};

use crate::decode::{
    decode_cancel, decode_delete, decode_presence, decode_read, decode_snapshot, decode_start,
    decode_write,
};
use crate::{to_json, Failure};

/// One call of the script: which operation, on whose keys, with what, and
/// how to read the answer.
#[derive(Debug)]
pub(crate) struct Call {
    /// The script's operation name (`ARGV[1]`).
    pub(crate) op: &'static str,
    pub(crate) target: Target,
    pub(crate) at_ms: u64,
    /// The operation's own arguments, after the common ones.
    pub(crate) args: Vec<String>,
    pub(crate) then: Then,
}

/// Whose keys a call touches (its hash tag).
#[derive(Debug)]
pub(crate) enum Target {
    Conv(ConvKey),
    Presence(UserId),
}

/// How to read a call's answer.
#[derive(Debug)]
pub(crate) enum Then {
    Presence,
    Snapshot,
    /// The ids and user turn the caller made; the reply's reap due time.
    Start {
        user_message: Message,
        message_id: MessageId,
        due_ms: u64,
    },
    /// Ok, gap, cancel requested, fenced, settled, not due, missing.
    Write,
    /// The cancelled reply's reap due time (its cancel deadline).
    Cancel {
        due_ms: u64,
    },
    Read {
        after_seq: u64,
    },
    /// Busy or deleted.
    Delete,
}

impl Call {
    fn conv(op: &'static str, conv: ConvKey, at_ms: u64, args: Vec<String>, then: Then) -> Self {
        Self {
            op,
            target: Target::Conv(conv),
            at_ms,
            args,
            then,
        }
    }

    fn presence(op: &'static str, user: UserId, at_ms: u64, args: Vec<String>) -> Self {
        Self {
            op,
            target: Target::Presence(user),
            at_ms,
            args,
            then: Then::Presence,
        }
    }

    pub(crate) fn presence_join(op: PresenceJoinOp) -> Self {
        let entry = format!("{}|{}", op.node, op.conn);
        Self::presence("p_join", op.user, op.at_ms, vec![entry])
    }

    pub(crate) fn presence_leave(op: PresenceLeaveOp) -> Self {
        let entry = format!("{}|{}", op.node, op.conn);
        Self::presence("p_leave", op.user, op.at_ms, vec![entry])
    }

    /// Also the sweep's, for each user due in its presence index.
    pub(crate) fn presence_check(user: UserId, at_ms: u64) -> Self {
        Self::presence("p_check", user, at_ms, Vec::new())
    }

    /// One call per user: each user's keys have their own hash tag.
    pub(crate) fn presence_refresh(op: PresenceRefreshOp) -> impl Iterator<Item = Self> {
        let PresenceRefreshOp { node, users, at_ms } = op;
        let node = node.to_string();
        users
            .into_iter()
            .map(move |user| Self::presence("p_refresh", user, at_ms, vec![node.clone()]))
    }

    pub(crate) fn snapshot(op: SnapshotOp) -> Self {
        let args = vec![op.limit.to_string()];
        Self::conv("snapshot", op.conv, op.at_ms, args, Then::Snapshot)
    }

    /// The ids and the user turn are made here, in `epoch`, so that the
    /// script stores exactly what the model would.
    pub(crate) fn start(
        op: StartOp,
        epoch: Epoch,
        timers: &StreamTimers,
        idempotency_ttl_ms: u64,
    ) -> Result<Self, Failure> {
        let (user_id, message_id) = message_ids(epoch, op.nonce);
        let user_message = Message {
            message_id: user_id.clone(),
            role: Role::User,
            content: op.content,
            status: MessageStatus::Completed,
            created_at_ms: op.at_ms,
            seq: 0,
        };
        let args = vec![
            to_json(&user_message)?,
            user_id.to_string(),
            message_id.to_string(),
            op.owner.to_string(),
            op.client_message_id
                .map(|k| k.to_string())
                .unwrap_or_default(),
            op.context_limit.to_string(),
            idempotency_ttl_ms.to_string(),
        ];
        // A started reply is due for a reap at the lease's end.
        let due_ms = op.at_ms.saturating_add(timers.lease_ttl_ms);
        let then = Then::Start {
            user_message,
            message_id,
            due_ms,
        };
        Ok(Self::conv("start", op.conv, op.at_ms, args, then))
    }

    pub(crate) fn append(op: AppendOp) -> Self {
        let mut args = vec![
            op.message_id.to_string(),
            op.token.to_string(),
            op.first_seq.to_string(),
            op.at_ns.map(|t| t.to_string()).unwrap_or_default(),
        ];
        args.extend(op.deltas);
        Self::conv("append", op.conv, op.at_ms, args, Then::Write)
    }

    /// `node_channels`: what every node's channel name starts with (the
    /// script sends the cancel request to the owner's).
    pub(crate) fn cancel(op: CancelOp, timers: &StreamTimers) -> Self {
        let args = vec![op.message_id.map(|m| m.to_string()).unwrap_or_default()];
        // A cancelled reply is due no later than its cancel deadline.
        let due_ms = op.at_ms.saturating_add(timers.cancel_deadline_ms);
        Self::conv("cancel", op.conv, op.at_ms, args, Then::Cancel { due_ms })
    }

    pub(crate) fn settle(op: SettleOp) -> Result<Self, Failure> {
        let (kind, reason) = match op.request {
            SettleRequest::Completed => ("completed", String::new()),
            SettleRequest::Failed(r) => ("failed", r),
            SettleRequest::Cancelled => ("cancelled", String::new()),
        };
        let usage = match op.usage {
            Some(u) => to_json(&u)?,
            None => String::new(),
        };
        let args = vec![
            op.message_id.to_string(),
            op.token.to_string(),
            kind.to_owned(),
            reason,
            usage,
            op.last_seq.to_string(),
        ];
        Ok(Self::conv("settle", op.conv, op.at_ms, args, Then::Write))
    }

    pub(crate) fn renew(op: RenewOp) -> Self {
        let args = vec![op.message_id.to_string(), op.token.to_string()];
        Self::conv("renew", op.conv, op.at_ms, args, Then::Write)
    }

    pub(crate) fn reap(op: ReapOp) -> Self {
        let args = vec![op.message_id.to_string()];
        Self::conv("reap", op.conv, op.at_ms, args, Then::Write)
    }

    pub(crate) fn delete(op: DeleteOp) -> Self {
        Self::conv("delete", op.conv, op.at_ms, Vec::new(), Then::Delete)
    }

    /// The sweep's reap of whatever reply is live in `conv`.
    pub(crate) fn reap_live(conv: ConvKey, at_ms: u64) -> Self {
        Self::conv("reap_live", conv, at_ms, Vec::new(), Then::Write)
    }

    pub(crate) fn read(op: ReadOp) -> Self {
        let args = vec![op.message_id.to_string(), op.after_seq.to_string()];
        let then = Then::Read {
            after_seq: op.after_seq,
        };
        Self::conv("read", op.conv, op.at_ms, args, then)
    }
}

/// A call's answer, read.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) reply: StoreReply,
    /// The reap due time for the sweep's index.
    pub(crate) due_ms: Option<u64>,
    /// The node to tell that a reply it owns is cancelled.
    pub(crate) owner: Option<NodeId>,
}

impl Then {
    /// The reply, the reap due time for the sweep's index when the call
    /// made a reply live or cancelled one, and the node to tell of a cancel.
    pub(crate) fn decode(&self, v: Value, epoch: Epoch) -> Result<Decoded, Failure> {
        let mut owner = None;
        let (reply, due_ms) = match self {
            Self::Presence => (decode_presence(v)?, None),
            Self::Snapshot => (decode_snapshot(v, epoch)?, None),
            Self::Start {
                user_message,
                message_id,
                due_ms,
            } => {
                let reply = decode_start(v, epoch, user_message.clone(), message_id.clone())?;
                let due = matches!(reply, StoreReply::Started { .. }).then_some(*due_ms);
                (reply, due)
            }
            Self::Write => (decode_write(v, epoch)?, None),
            Self::Cancel { due_ms } => {
                let (reply, tell) = decode_cancel(v)?;
                owner = tell;
                let cancelled = matches!(
                    reply,
                    StoreReply::Cancel {
                        answer: Some(CancelAnswer::Cancelled),
                        ..
                    }
                );
                (reply, cancelled.then_some(*due_ms))
            }
            Self::Read { after_seq } => (decode_read(v, epoch, *after_seq)?, None),
            Self::Delete => (decode_delete(v)?, None),
        };
        Ok(Decoded {
            reply,
            due_ms,
            owner,
        })
    }
}
