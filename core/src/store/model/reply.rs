//! A reply's life in the store: start, append, cancel, settle, renew, reap
//! and the sweep, each one transition of the reply's [`StreamState`].

use super::presence::presence_notice;
use super::{newest, Conv, Idempotent, Model, StoreConfig, StreamRecord};
use crate::ids::{ConvKey, MessageId};
use crate::store::stamps;
use crate::store::{
    message_ids, AppendOp, CancelOp, Notice, Published, ReapOp, RenewOp, SettleOp, StartOp,
    StoreReply, SweepOp, Topic,
};
use crate::stream::{Outcome, StreamState};
use crate::wire::{Message, MessageStatus, Role};

impl Model {
    pub(super) fn start(&mut self, op: StartOp, out: &mut Vec<Published>) -> StoreReply {
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

    pub(super) fn append(&mut self, op: AppendOp, out: &mut Vec<Published>) -> StoreReply {
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

    pub(super) fn cancel(&mut self, op: CancelOp, out: &mut Vec<Published>) -> StoreReply {
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

    pub(super) fn settle(&mut self, op: SettleOp, out: &mut Vec<Published>) -> StoreReply {
        let SettleOp {
            conv,
            message_id: id,
            token,
            request,
            last_seq,
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
        if matches!(r.state, StreamState::Active { .. }) && r.last_seq() < last_seq {
            return StoreReply::Gap {
                last_seq: r.last_seq(),
            };
        }
        match r.state.recv_settle(request, r.last_seq(), at_ms, &timers) {
            Some(outcome) => {
                r.usage = usage;
                publish_settled(&conv, c, &id, outcome, limit, out)
            }
            None => settled_reply(&r.state, false),
        }
    }

    pub(super) fn renew(&mut self, op: &RenewOp) -> StoreReply {
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

    pub(super) fn reap(&mut self, op: ReapOp, out: &mut Vec<Published>) -> StoreReply {
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

    pub(super) fn sweep(&mut self, op: SweepOp, out: &mut Vec<Published>) -> StoreReply {
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
}

/// Reaps `id` if due; on success the record is Settled and history written.
pub(super) fn reap_record(
    c: &mut Conv,
    id: &MessageId,
    at_ms: u64,
    config: &StoreConfig,
) -> Option<Outcome> {
    let r = c.streams.get_mut(id)?;
    let last = r.last_seq();
    r.state.recv_reap(last, at_ms, &config.timers)
}

/// After a transition to Settled: history, the live slot, the notice, and the
/// reply.
pub(super) fn publish_settled(
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

pub(super) fn settled_reply(state: &StreamState, changed: bool) -> StoreReply {
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
