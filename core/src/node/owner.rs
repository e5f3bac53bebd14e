//! The producer: the replies this node generates, from the `chat` that
//! starts one to its settle — appends in order, one at a time, the lease kept
//! by renewals.

use std::time::Instant;

use super::{error_frame, Node, Pending};
use crate::api::{Event, GeneratorEvent, OpId, Output};
use crate::ids::{ConnId, ConvKey, IdSource, MessageId, Seq};
use crate::session::PendingChat;
use crate::store::{StoreOp, StoreReply, Token};
use crate::stream::SettleRequest;
use crate::timer::TimerKey;
use crate::wire::{Ack, ErrorCode, Message, ServerFrame, Usage};

/// A reply this node produces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Owned {
    pub(super) conv: ConvKey,
    pub(super) token: Token,
    /// The last seq the store accepted.
    pub(super) acked: Seq,
    /// Deltas not yet sent to the store.
    pub(super) queue: Vec<String>,
    /// The one append at the store: its op, first seq and deltas.
    pub(super) in_flight: Option<(OpId, Seq, Vec<String>)>,
    /// The generator ended (or was stopped): settle once flushed.
    pub(super) end: Option<(SettleRequest, Option<Usage>)>,
    pub(super) settling: Option<OpId>,
    pub(super) renewing: Option<OpId>,
    pub(super) generator_running: bool,
    /// The generator's input, kept while a cancel sent before the reply had
    /// an id is at the store: if that cancel fails, the generator starts.
    pub(super) deferred: Option<Vec<Message>>,
    /// A cancel or a fence stopped the reply: generator events are dropped.
    pub(super) stopped: bool,
}

impl<I: IdSource> Node<I> {
    pub(super) fn on_chat(&mut self, now: Instant, conn: ConnId, chat: crate::wire::Chat) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let conv = c.conv.clone();
        let busy = c.pending_chat.is_some()
            || self.convs.get(&conv).is_some_and(|v| {
                v.replies
                    .values()
                    .any(|r| r.settled.is_none() && r.final_seq.is_none())
            });
        // A repeated idempotency key must get its original ack, so only the
        // store may answer chats that carry one.
        if busy && chat.client_message_id.is_none() {
            self.send(
                conn,
                error_frame(
                    ErrorCode::Busy,
                    "a reply is still streaming in this conversation",
                    chat.request_id,
                ),
            );
            return;
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.pending_chat = Some(PendingChat {
                request_id: chat.request_id,
                cancel: None,
            });
        }
        let nonce = self.ids.next_u64();
        let at_ms = self.wall_ms(now);
        self.store(
            Pending::Start(conn, conv.clone()),
            StoreOp::Start {
                conv,
                content: chat.content,
                client_message_id: chat.client_message_id,
                nonce,
                owner: self.config.node_id.clone(),
                context_limit: self.config.context_limit,
                at_ms,
            },
        );
    }

    pub(super) fn on_started(
        &mut self,
        now: Instant,
        conn: ConnId,
        conv: ConvKey,
        reply: StoreReply,
    ) {
        let pending = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.pending_chat.take());
        let request_id = pending.as_ref().and_then(|p| p.request_id.clone());
        match reply {
            StoreReply::Started {
                user_message,
                message_id,
                token,
                context,
                ..
            } => {
                self.send(
                    conn,
                    ServerFrame::Ack(Ack {
                        request_id: request_id.clone(),
                        user_message_id: user_message.message_id.clone(),
                        message_id: message_id.clone(),
                    }),
                );
                let cancel_first = pending.as_ref().and_then(|p| p.cancel.clone());
                self.own_reply(
                    now,
                    &conv,
                    &message_id,
                    token,
                    &user_message,
                    Some((conn, request_id)),
                    cancel_first.is_some().then(|| context.clone()),
                    context,
                );
                match cancel_first {
                    None => {}
                    Some((cancel_rid, since)) => {
                        // The user cancelled before the reply had an id: the
                        // generator never starts.
                        let at_ms = self.wall_ms(now);
                        self.store(
                            Pending::Cancel {
                                conn,
                                conv: conv.clone(),
                                request_id: cancel_rid,
                                message_id: Some(message_id.clone()),
                                since,
                            },
                            StoreOp::Cancel {
                                conv,
                                message_id: Some(message_id),
                                at_ms,
                            },
                        );
                    }
                }
            }
            StoreReply::Duplicate {
                user_message_id,
                message_id,
            } => {
                self.send(
                    conn,
                    ServerFrame::Ack(Ack {
                        request_id,
                        user_message_id,
                        message_id,
                    }),
                );
                if let Some((cancel_rid, since)) = pending.and_then(|p| p.cancel) {
                    self.on_cancel(since, now, conn, None, cancel_rid);
                }
            }
            StoreReply::Busy { .. } => {
                self.send(
                    conn,
                    error_frame(
                        ErrorCode::Busy,
                        "a reply is still streaming in this conversation",
                        request_id,
                    ),
                );
                if let Some((cancel_rid, since)) = pending.and_then(|p| p.cancel) {
                    // The cancel was meant for the reply this chat would have
                    // started: there is none.
                    self.send_not_found(now, conn, cancel_rid, since);
                }
            }
            _ => {}
        }
    }

    /// This node produces reply `id` (its `Start` succeeded): record it,
    /// keep its lease, announce it to local connections, and start its
    /// generator — unless `deferred` holds the context back for a cancel that
    /// arrived before the reply had an id.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn own_reply(
        &mut self,
        now: Instant,
        conv: &ConvKey,
        id: &MessageId,
        token: Token,
        user_message: &Message,
        sender: Option<(ConnId, Option<crate::ids::RequestId>)>,
        deferred: Option<Vec<Message>>,
        context: Vec<Message>,
    ) {
        self.owned.insert(
            id.clone(),
            Owned {
                conv: conv.clone(),
                token,
                acked: 0,
                queue: Vec::new(),
                in_flight: None,
                end: None,
                settling: None,
                renewing: None,
                generator_running: deferred.is_none(),
                deferred: deferred.clone(),
                stopped: false,
            },
        );
        self.timers.set(
            TimerKey::Renew(id.clone()),
            now + self.config.renew_interval(),
        );
        if self.convs.contains_key(conv) {
            self.announce(now, conv, id, user_message, sender);
        }
        if deferred.is_none() {
            self.out.push_back(Output::StartGenerator {
                message_id: id.clone(),
                conv: conv.clone(),
                context,
            });
        }
    }

    pub(super) fn on_generator(&mut self, now: Instant, id: MessageId, event: GeneratorEvent) {
        let Some(o) = self.owned.get_mut(&id) else {
            return;
        };
        if o.stopped || o.end.is_some() {
            return;
        }
        match event {
            GeneratorEvent::Delta(d) => {
                if !d.is_empty() {
                    o.queue.push(d);
                }
            }
            GeneratorEvent::Finished { usage } => {
                o.generator_running = false;
                o.end = Some((SettleRequest::Completed, usage));
            }
            GeneratorEvent::Failed { reason, usage } => {
                o.generator_running = false;
                o.end = Some((SettleRequest::Failed(reason), usage));
            }
        }
        self.owner_flush(now, &id);
    }

    /// Sends the next append, or the settle once everything is appended.
    pub(super) fn owner_flush(&mut self, now: Instant, id: &MessageId) {
        let at_ms = self.wall_ms(now);
        let Some(o) = self.owned.get_mut(id) else {
            return;
        };
        if o.in_flight.is_some() || o.settling.is_some() {
            return;
        }
        if !o.queue.is_empty() && !o.stopped {
            let deltas = std::mem::take(&mut o.queue);
            let first_seq = o.acked + 1;
            let request = StoreOp::Append {
                conv: o.conv.clone(),
                message_id: id.clone(),
                token: o.token,
                first_seq,
                deltas: deltas.clone(),
                at_ms,
            };
            let op = self.store(Pending::Append(id.clone()), request);
            if let Some(o) = self.owned.get_mut(id) {
                o.in_flight = Some((op, first_seq, deltas));
            }
        } else if let Some((request, usage)) = o.end.clone() {
            let req = StoreOp::Settle {
                conv: o.conv.clone(),
                message_id: id.clone(),
                token: o.token,
                request,
                usage,
                at_ms,
            };
            let op = self.store(Pending::Settle(id.clone()), req);
            if let Some(o) = self.owned.get_mut(id) {
                o.settling = Some(op);
            }
        }
    }

    /// The store fenced this node off the reply (reaped, or lost).
    pub(super) fn owner_fenced(&mut self, now: Instant, id: &MessageId) {
        let Some(o) = self.owned.remove(id) else {
            return;
        };
        if o.generator_running {
            self.out.push_back(Output::AbortGenerator {
                message_id: id.clone(),
            });
        }
        self.timers.cancel(&TimerKey::Renew(id.clone()));
        self.timers.cancel(&TimerKey::OwnerRetry(id.clone()));
        // Learn the truth for local viewers.
        self.read(now, &o.conv, id);
    }

    pub(super) fn on_append_reply(
        &mut self,
        now: Instant,
        id: &MessageId,
        op: OpId,
        reply: StoreReply,
    ) {
        let Some(o) = self.owned.get_mut(id) else {
            return;
        };
        let Some((in_op, first_seq, deltas)) = o.in_flight.take() else {
            return;
        };
        debug_assert_eq!(in_op, op);
        let conv = o.conv.clone();
        match reply {
            StoreReply::Ok { last_seq } => {
                o.acked = last_seq;
                if let Some(r) = self
                    .convs
                    .get_mut(&conv)
                    .and_then(|v| v.replies.get_mut(id))
                {
                    let _ = r.add(first_seq, deltas);
                }
                self.pump(now, &conv);
                self.owner_flush(now, id);
            }
            StoreReply::CancelRequested { final_seq } => {
                self.owner_told_cancelled(now, id, final_seq);
                self.pump(now, &conv);
            }
            _ => self.owner_fenced(now, id),
        }
    }

    pub(super) fn on_settle_reply(&mut self, now: Instant, id: &MessageId, reply: StoreReply) {
        match reply {
            StoreReply::Settled {
                outcome, final_seq, ..
            } => {
                let Some(o) = self.owned.remove(id) else {
                    return;
                };
                self.timers.cancel(&TimerKey::Renew(id.clone()));
                self.timers.cancel(&TimerKey::OwnerRetry(id.clone()));
                let usage = o.end.and_then(|(_, u)| u);
                if let Some(r) = self
                    .convs
                    .get_mut(&o.conv)
                    .and_then(|v| v.replies.get_mut(id))
                {
                    r.fix_final(final_seq);
                    r.settled.get_or_insert((outcome.clone(), usage));
                }
                self.out.push_back(Output::Event(Event::ReplySettled {
                    message_id: id.clone(),
                    outcome,
                    final_seq,
                }));
                self.pump(now, &o.conv);
            }
            _ => self.owner_fenced(now, id),
        }
    }

    pub(super) fn renew(&mut self, now: Instant, id: &MessageId) {
        let at_ms = self.wall_ms(now);
        let Some(o) = self.owned.get(id) else {
            return;
        };
        let conv = &o.conv;
        self.timers.set(
            TimerKey::Renew(id.clone()),
            now + self.config.renew_interval(),
        );
        if o.renewing.is_some() || o.settling.is_some() {
            return;
        }
        let request = StoreOp::Renew {
            conv: conv.clone(),
            message_id: id.clone(),
            token: o.token,
            at_ms,
        };
        let op = self.store(Pending::Renew(id.clone()), request);
        if let Some(o) = self.owned.get_mut(id) {
            o.renewing = Some(op);
        }
    }

    pub(super) fn on_renew_reply(&mut self, now: Instant, id: &MessageId, reply: StoreReply) {
        let Some(o) = self.owned.get_mut(id) else {
            return;
        };
        o.renewing = None;
        match reply {
            StoreReply::Ok { .. } => {}
            StoreReply::CancelRequested { final_seq } => {
                // A lost cancel notice, noticed within one renew period.
                self.owner_told_cancelled(now, id, final_seq);
            }
            _ => {
                if o.settling.is_none() {
                    self.owner_fenced(now, id);
                }
            }
        }
    }
}
