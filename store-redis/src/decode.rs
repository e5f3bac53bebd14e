//! Reading the script's replies: arrays of strings, integers, nils (Lua's
//! `false`) and nested arrays, into [`StoreReply`]s. Anything the script
//! never returns is a [`Failure::Protocol`] (a bug, told to clients as
//! `internal`).

use redis::Value;
use weir_core::ids::{MessageId, NodeId};
use weir_core::store::{Epoch, LiveReply, StoreReply};
use weir_core::stream::{CancelAnswer, Outcome, StreamState};
use weir_core::wire::{Message, PresenceStatus, Usage};

use crate::Failure;

/// The fields of one reply array, read front to back.
pub(crate) struct Fields(std::vec::IntoIter<Value>);

fn bad(what: &str, v: &Value) -> Failure {
    Failure::Protocol(format!("expected {what}, got {v:?}"))
}

impl Fields {
    pub(crate) fn reply(v: Value) -> Result<Self, Failure> {
        match v {
            Value::Array(items) => Ok(Self(items.into_iter())),
            other => Err(bad("an array", &other)),
        }
    }

    fn next(&mut self) -> Value {
        self.0.next().unwrap_or(Value::Nil)
    }

    pub(crate) fn tag_str(&mut self) -> Result<String, Failure> {
        self.str()
    }

    pub(crate) fn tag(&mut self, want: &str) -> Result<(), Failure> {
        let got = self.str()?;
        if got == want {
            Ok(())
        } else {
            Err(Failure::Protocol(format!("expected {want}, got {got}")))
        }
    }

    pub(crate) fn opt_str(&mut self) -> Result<Option<String>, Failure> {
        match self.next() {
            Value::Nil => Ok(None),
            Value::BulkString(b) => String::from_utf8(b)
                .map(Some)
                .map_err(|e| Failure::Protocol(e.to_string())),
            Value::SimpleString(s) => Ok(Some(s)),
            Value::Int(n) => Ok(Some(n.to_string())),
            other => Err(bad("a string", &other)),
        }
    }

    pub(crate) fn str(&mut self) -> Result<String, Failure> {
        self.opt_str()?
            .ok_or_else(|| Failure::Protocol("a string was nil".into()))
    }

    pub(crate) fn opt_u64(&mut self) -> Result<Option<u64>, Failure> {
        match self.next() {
            Value::Nil => Ok(None),
            Value::Int(n) => u64::try_from(n)
                .map(Some)
                .map_err(|_| Failure::Protocol(format!("negative number {n}"))),
            Value::BulkString(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or_else(|| Failure::Protocol("a number was not one".into())),
            other => Err(bad("a number", &other)),
        }
    }

    pub(crate) fn u64(&mut self) -> Result<u64, Failure> {
        self.opt_u64()?
            .ok_or_else(|| Failure::Protocol("a number was nil".into()))
    }

    pub(crate) fn message_id(&mut self) -> Result<MessageId, Failure> {
        MessageId::parse(self.str()?).map_err(|e| Failure::Protocol(e.to_string()))
    }

    /// `outcome`, then `reason` (nil unless failed).
    pub(crate) fn outcome(&mut self) -> Result<Outcome, Failure> {
        let outcome = self.str()?;
        let reason = self.opt_str()?;
        outcome_of(&outcome, reason)
    }

    pub(crate) fn opt_array(&mut self) -> Result<Option<Self>, Failure> {
        match self.next() {
            Value::Nil => Ok(None),
            Value::Array(items) => Ok(Some(Self(items.into_iter()))),
            other => Err(bad("an array", &other)),
        }
    }

    fn array(&mut self) -> Result<Self, Failure> {
        self.opt_array()?
            .ok_or_else(|| Failure::Protocol("an array was nil".into()))
    }

    pub(crate) fn strings(&mut self) -> Result<Vec<String>, Failure> {
        let mut a = self.array()?;
        let mut out = Vec::with_capacity(a.0.len());
        while a.0.len() > 0 {
            out.push(a.str()?);
        }
        Ok(out)
    }

    /// A trailing list of chunk stamps (`false`/absent: none is stamped).
    pub(crate) fn stamps(&mut self) -> Result<Vec<u64>, Failure> {
        let Some(mut a) = self.opt_array()? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(a.0.len());
        while a.0.len() > 0 {
            out.push(a.u64()?);
        }
        Ok(out)
    }

    /// An array of messages as JSON.
    pub(crate) fn messages(&mut self) -> Result<Vec<Message>, Failure> {
        self.strings()?
            .iter()
            .map(|s| serde_json::from_str(s).map_err(|e| Failure::Protocol(e.to_string())))
            .collect()
    }

    pub(crate) fn state(&mut self) -> Result<StreamState, Failure> {
        state_of(self.array()?)
    }
}

pub(crate) fn decode_presence(v: Value) -> Result<StoreReply, Failure> {
    let mut f = Fields::reply(v)?;
    f.tag("presence")?;
    let status = match f.str()?.as_str() {
        "online" => PresenceStatus::Online,
        "offline" => PresenceStatus::Offline,
        s => return Err(Failure::Protocol(format!("presence status {s}"))),
    };
    Ok(StoreReply::Presence {
        status,
        connections: f.u64()?,
        due_ms: f.opt_u64()?,
    })
}

pub(crate) fn decode_snapshot(v: Value, epoch: Epoch) -> Result<StoreReply, Failure> {
    let mut f = Fields::reply(v)?;
    f.tag("snapshot")?;
    let history = f.messages()?;
    let live = match f.opt_array()? {
        None => None,
        Some(mut l) => Some(LiveReply {
            message_id: l.message_id()?,
            reply_to: l.message_id()?,
            state: l.state()?,
            deltas: l.strings()?,
            created_at_ms: l.u64()?,
            owner: NodeId::parse(l.str()?).map_err(|e| Failure::Protocol(e.to_string()))?,
            ts_ns: l.stamps()?,
        }),
    };
    Ok(StoreReply::Snapshot {
        epoch,
        history,
        live,
    })
}

pub(crate) fn decode_start(
    v: Value,
    epoch: Epoch,
    user_message: Message,
    message_id: MessageId,
) -> Result<StoreReply, Failure> {
    let mut f = Fields::reply(v)?;
    Ok(match f.tag_str()?.as_str() {
        "started" => StoreReply::Started {
            epoch,
            user_message,
            message_id,
            token: f.u64()?,
            context: f.messages()?,
        },
        "duplicate" => StoreReply::Duplicate {
            user_message_id: f.message_id()?,
            message_id: f.message_id()?,
        },
        "busy" => StoreReply::Busy {
            message_id: f.message_id()?,
        },
        t => return Err(Failure::Protocol(format!("start: {t}"))),
    })
}

/// The reply, and the owner of a reply the cancel made `Cancelling` (its
/// node is told on its own channel, by the caller).
pub(crate) fn decode_cancel(v: Value) -> Result<(StoreReply, Option<NodeId>), Failure> {
    let mut f = Fields::reply(v)?;
    f.tag("cancel")?;
    let message_id = f.opt_str()?.map(MessageId::parse).transpose();
    let message_id = message_id.map_err(|e| Failure::Protocol(e.to_string()))?;
    let answer = match f.opt_str()?.as_deref() {
        None => None,
        Some("cancelled") => Some(CancelAnswer::Cancelled),
        Some("completed") => Some(CancelAnswer::Completed),
        Some("failed") => Some(CancelAnswer::Failed),
        Some(a) => return Err(Failure::Protocol(format!("cancel answer {a}"))),
    };
    let reply = StoreReply::Cancel {
        message_id,
        answer,
        final_seq: f.opt_u64()?,
    };
    // The owner to tell, when the cancel made an Active reply Cancelling.
    let owner = f.opt_str()?.map(NodeId::parse).transpose();
    let owner = owner.map_err(|e| Failure::Protocol(format!("cancel owner: {e}")))?;
    Ok((reply, owner))
}

/// The reply of delete: busy (a live reply) or deleted (how many messages).
pub(crate) fn decode_delete(v: Value) -> Result<StoreReply, Failure> {
    let mut f = Fields::reply(v)?;
    Ok(match f.tag_str()?.as_str() {
        "busy" => StoreReply::Busy {
            message_id: f.message_id()?,
        },
        "deleted" => StoreReply::Deleted { count: f.u64()? },
        other => return Err(Failure::Protocol(format!("delete: {other}"))),
    })
}

/// Replies of the producer's writes and of reap: ok, gap, cancel_requested,
/// fenced, settled, not_due, missing.
pub(crate) fn decode_write(v: Value, epoch: Epoch) -> Result<StoreReply, Failure> {
    let mut f = Fields::reply(v)?;
    Ok(match f.tag_str()?.as_str() {
        "ok" => StoreReply::Ok { last_seq: f.u64()? },
        "gap" => StoreReply::Gap { last_seq: f.u64()? },
        "cancel_requested" => StoreReply::CancelRequested {
            final_seq: f.u64()?,
        },
        "fenced" => StoreReply::Fenced,
        "settled" => StoreReply::Settled {
            outcome: f.outcome()?,
            final_seq: f.u64()?,
            changed: f.u64()? == 1,
        },
        "not_due" => StoreReply::NotDue { due_ms: f.u64()? },
        "missing" => missing(&mut f, epoch)?,
        t => return Err(Failure::Protocol(format!("write: {t}"))),
    })
}

fn missing(f: &mut Fields, epoch: Epoch) -> Result<StoreReply, Failure> {
    let snapshot = match f.opt_str()? {
        None => None,
        Some(json) => {
            Some(serde_json::from_str(&json).map_err(|e| Failure::Protocol(e.to_string()))?)
        }
    };
    Ok(StoreReply::Missing { epoch, snapshot })
}

pub(crate) fn decode_read(v: Value, epoch: Epoch, after_seq: u64) -> Result<StoreReply, Failure> {
    let mut f = Fields::reply(v)?;
    match f.tag_str()?.as_str() {
        "read" => {
            let state = f.state()?;
            let deltas = f.strings()?;
            let usage: Option<Usage> = match f.opt_str()? {
                None => None,
                Some(json) => Some(
                    serde_json::from_str(&json).map_err(|e| Failure::Protocol(e.to_string()))?,
                ),
            };
            Ok(StoreReply::Read {
                epoch,
                state,
                deltas,
                first_seq: after_seq + 1,
                usage,
                ts_ns: f.stamps()?,
            })
        }
        "missing" => missing(&mut f, epoch),
        t => Err(Failure::Protocol(format!("read: {t}"))),
    }
}

/// Builds the [`Outcome`] of `outcome`/`reason` fields.
fn outcome_of(outcome: &str, reason: Option<String>) -> Result<Outcome, Failure> {
    Ok(match outcome {
        "completed" => Outcome::Completed,
        "cancelled" => Outcome::Cancelled,
        "failed" => Outcome::Failed(reason.unwrap_or_default()),
        o => return Err(Failure::Protocol(format!("outcome {o}"))),
    })
}

/// Builds a [`StreamState`] from the script's `state_of` array.
fn state_of(mut s: Fields) -> Result<StreamState, Failure> {
    let st = s.str()?;
    let lease = s.opt_u64()?;
    let final_seq = s.opt_u64()?;
    let deadline = s.opt_u64()?;
    let outcome = s.opt_str()?;
    let reason = s.opt_str()?;
    let expires = s.opt_u64()?;
    let need = |v: Option<u64>, what: &str| {
        v.ok_or_else(|| Failure::Protocol(format!("state {st} without {what}")))
    };
    Ok(match st.as_str() {
        "a" => StreamState::Active {
            lease_until_ms: need(lease, "lease")?,
        },
        "c" => StreamState::Cancelling {
            final_seq: need(final_seq, "final")?,
            lease_until_ms: need(lease, "lease")?,
            deadline_ms: need(deadline, "deadline")?,
        },
        "s" => StreamState::Settled {
            outcome: outcome_of(&outcome.unwrap_or_default(), reason)?,
            final_seq: need(final_seq, "final")?,
            expires_at_ms: need(expires, "expires")?,
        },
        _ => return Err(Failure::Protocol(format!("state {st}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::BulkString(v.as_bytes().to_vec())
    }

    #[test]
    fn a_write_reply_decodes_as_the_model_answers() {
        let ok = Value::Array(vec![s("ok"), Value::Int(3)]);
        assert_eq!(decode_write(ok, 1).unwrap(), StoreReply::Ok { last_seq: 3 });
        let settled = Value::Array(vec![
            s("settled"),
            s("failed"),
            s("owner_lost"),
            Value::Int(2),
            Value::Int(1),
        ]);
        assert_eq!(
            decode_write(settled, 1).unwrap(),
            StoreReply::Settled {
                outcome: Outcome::Failed("owner_lost".into()),
                final_seq: 2,
                changed: true,
            }
        );
    }

    #[test]
    fn a_reply_the_script_never_gives_is_a_protocol_failure() {
        let unknown = Value::Array(vec![s("surprise"), Value::Int(1)]);
        assert!(
            matches!(decode_write(unknown, 1), Err(Failure::Protocol(m)) if m.contains("surprise"))
        );
        let not_an_array = Value::Int(1);
        assert!(matches!(
            decode_presence(not_an_array),
            Err(Failure::Protocol(_))
        ));
        let bad_status = Value::Array(vec![s("presence"), s("away"), Value::Int(0), Value::Nil]);
        assert!(matches!(
            decode_presence(bad_status),
            Err(Failure::Protocol(_))
        ));
    }
}
