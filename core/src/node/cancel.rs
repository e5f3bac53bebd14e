//! Cancels: asking the store to decide one, carrying out its decision on
//! the views and on the reply this node produces, and answering the asker.

use std::time::Instant;

use super::{error_frame, Node, Pending};
use crate::api::{Event, Output};
use crate::ids::{ConnId, ConvKey, IdSource, MessageId, RequestId, Seq};
use crate::session::{ConnState, HeldCancelResult};
use crate::store::{StoreOp, StoreReply};
use crate::stream::CancelAnswer;
use crate::wire::{CancelResult, CancelStatus, ErrorCode, ServerFrame};

impl<I: IdSource> Node<I> {
    pub(super) fn on_cancel(
        &mut self,
        since: Instant,
        now: Instant,
        conn: ConnId,
        message_id: Option<MessageId>,
        request_id: Option<crate::ids::RequestId>,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if message_id.is_none() {
            if let Some(p) = c.pending_chat.as_mut() {
                // Cancel right after Send: the reply has no id yet; cancel it
                // as soon as it has one.
                p.cancel = Some((request_id, now));
                return;
            }
        }
        let conv = c.conv.clone();
        let at_ms = self.wall_ms(now);
        self.store(
            Pending::Cancel {
                conn,
                conv: conv.clone(),
                request_id,
                message_id: message_id.clone(),
                since,
            },
            StoreOp::Cancel {
                conv,
                message_id,
                at_ms,
            },
        );
    }

    /// The store decided a cancel of `id`: fence local delivery at
    /// `final_seq` and, if this node produces it, stop producing.
    pub(super) fn cancel_decided(
        &mut self,
        now: Instant,
        conv: &ConvKey,
        id: &MessageId,
        answer: CancelAnswer,
        final_seq: Seq,
    ) {
        if answer == CancelAnswer::Cancelled {
            if let Some(r) = self.reply_view_mut(conv, id) {
                r.fix_final(final_seq);
            }
            self.owner_cancel(now, id);
        }
    }

    pub(super) fn on_cancel_reply(
        &mut self,
        now: Instant,
        conn: ConnId,
        conv: &ConvKey,
        (request_id, since): (Option<crate::ids::RequestId>, Instant),
        reply: StoreReply,
    ) {
        let StoreReply::Cancel {
            message_id,
            answer,
            final_seq,
        } = reply
        else {
            return;
        };
        let (Some(id), Some(answer), Some(final_seq)) = (message_id, answer, final_seq) else {
            self.send_not_found(now, conn, request_id, since);
            return;
        };
        let status = CancelStatus::from(answer);
        self.cancel_decided(now, conv, &id, answer, final_seq);
        let held = HeldCancelResult {
            request_id,
            status,
            final_seq,
            since,
        };
        let cursor = self
            .conns
            .get_mut(&conn)
            .filter(|c| c.state == ConnState::Open)
            .and_then(|c| c.cursors.get_mut(&id));
        match cursor {
            Some(cursor) if cursor.delivered < final_seq => {
                cursor.held_cancel = Some(held);
                self.pump(now, conv);
            }
            _ => {
                self.send_cancel_result(now, conn, held, id);
                self.pump(now, conv);
            }
        }
    }

    /// The reply this node produces was cancelled: stop the generator, drop
    /// what it produced after the cancel, and settle.
    pub(super) fn owner_cancel(&mut self, now: Instant, id: &MessageId) {
        let Some(o) = self.owned.get_mut(id) else {
            return;
        };
        if o.is_stopped() {
            return;
        }
        if o.on_cancel() {
            self.out.push_back(Output::AbortGenerator {
                message_id: id.clone(),
            });
        }
        self.owner_flush(now, id);
    }

    /// A write of the producer was answered "cancelled at `final_seq`".
    pub(super) fn owner_told_cancelled(&mut self, now: Instant, id: &MessageId, final_seq: Seq) {
        let conv = self.owned.get(id).map(|o| o.conv().clone());
        if let Some(r) = conv.and_then(|c| self.reply_view_mut(&c, id)) {
            r.fix_final(final_seq);
        }
        self.owner_cancel(now, id);
        // Already stopped by an earlier notice: the write that just returned
        // may have been what the settle waited for.
        self.owner_flush(now, id);
    }

    /// The cancel did not reach the store: nothing was cancelled. A reply
    /// whose generator waited for this cancel starts it now.
    pub(super) fn cancel_failed(
        &mut self,
        conn: ConnId,
        request_id: Option<RequestId>,
        message_id: Option<MessageId>,
    ) {
        self.send(
            conn,
            error_frame(
                ErrorCode::Unavailable,
                "the store cannot be reached; nothing was cancelled",
                request_id,
            ),
        );
        // A reply held back for a cancel that did not happen goes on.
        let Some(message_id) = message_id else {
            return;
        };
        let Some(o) = self.owned.get_mut(&message_id) else {
            return;
        };
        if let Some(context) = o.release_deferred() {
            let conv = o.conv().clone();
            self.out.push_back(Output::StartGenerator {
                message_id,
                conv,
                context,
            });
        }
    }

    pub(super) fn send_cancel_result(
        &mut self,
        now: Instant,
        conn: ConnId,
        h: HeldCancelResult,
        id: MessageId,
    ) {
        let (status, since) = (h.status, h.since);
        self.send(conn, cancel_result(h, Some(id)));
        self.out.push_back(Output::Event(Event::CancelAnswered {
            conn,
            status,
            latency: now.saturating_duration_since(since),
        }));
    }

    pub(super) fn send_not_found(
        &mut self,
        now: Instant,
        conn: ConnId,
        request_id: Option<crate::ids::RequestId>,
        since: Instant,
    ) {
        self.send(
            conn,
            ServerFrame::CancelResult(CancelResult {
                request_id,
                message_id: None,
                status: CancelStatus::NotFound,
                final_seq: None,
            }),
        );
        self.out.push_back(Output::Event(Event::CancelAnswered {
            conn,
            status: CancelStatus::NotFound,
            latency: now.saturating_duration_since(since),
        }));
    }
}

pub(super) fn cancel_result(h: HeldCancelResult, message_id: Option<MessageId>) -> ServerFrame {
    ServerFrame::CancelResult(CancelResult {
        request_id: h.request_id,
        message_id,
        status: h.status,
        final_seq: Some(h.final_seq),
    })
}
