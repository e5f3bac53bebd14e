//! Cancels: asking the store to decide one, carrying out its decision on
//! the views and on the reply this node produces, and answering the asker.
//!
//! # The life of a cancel
//!
//! A cancel is decided in one place, the store, atomically with the writes
//! it races; every node only carries the decision out. Following one from
//! the frame to the `end` (the private functions named here are in this
//! file unless said otherwise):
//!
//! 1. **The frame.** A [`cancel`](crate::wire::ClientFrame::Cancel) frame
//!    reaches `on_frame` (`conn.rs`), which calls `on_cancel`. If the
//!    connection's `chat` has no reply id yet, the cancel waits on its
//!    [`PendingChat`](crate::session) and goes out when the `Start` answers
//!    (`on_started` in `chat.rs`), the generator held back until then. The
//!    HTTP API's cancel takes the same path from `on_http` (`http.rs`).
//! 2. **[`StoreOp::Cancel`].** `send_cancel` sends it; the pending operation
//!    remembers who asked, with which `request_id`, and since when.
//! 3. **The decision.** The store applies it: the reference
//!    [`Model`](crate::store::Model) in memory, `store-redis/src/lua/store.lua`
//!    in Redis, both through the stream state machine's
//!    [`recv_cancel`](crate::stream::StreamState::recv_cancel) rules. An
//!    Active reply becomes Cancelling with `final_seq` = its last stored
//!    chunk, and from then on the store accepts no chunk of it (the fence,
//!    invariant 3); a settled one answers its outcome. The store publishes
//!    [`Notice::Cancelling`](crate::store::Notice::Cancelling) to the
//!    conversation and
//!    [`Notice::CancelRequested`](crate::store::Notice::CancelRequested) to
//!    the owner's node.
//! 4. **`on_cancel_reply`.** The asking node gets the answer (or "not
//!    found", answered at once by `send_not_found`).
//! 5. **`cancel_decided`.** Fences this node's view of the reply at
//!    `final_seq` (`ReplyView::fix_final` in `view.rs`) and, if this node
//!    produces the reply, calls `owner_cancel`. Other nodes fence on the
//!    `Cancelling` notice (`on_notice` in `view.rs`).
//! 6. **`owner_cancel`.** The producer stops: the generator is aborted
//!    ([`Output::AbortGenerator`]), deltas not yet appended are dropped, and
//!    the reply settles `cancelled` once the append in flight is answered
//!    (`Owned::on_cancel` in `owner.rs`, then `owner_flush`). An owner on
//!    another node learns of the cancel from `Notice::CancelRequested`, or
//!    — if that notice was lost — from its next append or lease renewal,
//!    answered [`StoreReply::CancelRequested`] (`owner_told_cancelled`).
//! 7. **The held `cancel_result`.** The answer to the asker waits in its
//!    cursor ([`HeldCancelResult`](crate::session)) until that connection has
//!    every chunk up to `final_seq`; `pump` (`deliver.rs`) then sends the
//!    [`cancel_result`](crate::wire::CancelResult) and reports
//!    [`Event::CancelAnswered`] with the cancel's latency.
//! 8. **`end`.** The settle's reply (`on_settle_reply` in `owner.rs`) or the
//!    `Settled` notice marks the view settled; `pump` sends
//!    [`end`](crate::wire::End) after the `cancel_result`, never before it.
//!
//! If the store is full and refuses the cancel, `cancel_failed` tells the
//! asker that nothing was cancelled; if it cannot be reached (or, on a
//! Redis Cluster, its replicas did not confirm the cancel in time), that
//! the cancel may not have taken effect and may be sent again (a cancel is
//! idempotent). Either way a generator held back for that cancel starts
//! (the store still fences it if the cancel did take effect).

use std::time::Instant;

use super::{store_error_frame, Node, Pending};
use crate::api::{Event, Output};
use crate::ids::{ConnId, ConvKey, IdSource, MessageId, RequestId, Seq};
use crate::session::{ConnState, HeldCancelResult};
use crate::store::{CancelOp, StoreError, StoreOp, StoreReply};
use crate::stream::CancelAnswer;
use crate::wire::{Cancel, CancelResult, CancelStatus, ServerFrame};

/// A cancel at the store, and who asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct CancelAsk {
    pub(super) conn: ConnId,
    pub(super) conv: ConvKey,
    pub(super) request_id: Option<RequestId>,
    /// The reply named by the cancel, if it named one.
    pub(super) message_id: Option<MessageId>,
    /// When the cancel frame arrived.
    pub(super) since: Instant,
}

impl<I: IdSource> Node<I> {
    /// A `cancel` frame from `conn`, which arrived at `since`.
    pub(super) fn on_cancel(&mut self, now: Instant, conn: ConnId, cancel: Cancel, since: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if cancel.message_id.is_none() {
            if let Some(p) = c.pending_chat.as_mut() {
                // Cancel right after Send: the reply has no id yet; cancel it
                // as soon as it has one.
                p.cancel = Some((cancel.request_id, now));
                return;
            }
        }
        let ask = CancelAsk {
            conn,
            conv: c.conv.clone(),
            request_id: cancel.request_id,
            message_id: cancel.message_id,
            since,
        };
        self.send_cancel(now, ask);
    }

    /// Asks the store to decide a cancel.
    pub(super) fn send_cancel(&mut self, now: Instant, ask: CancelAsk) {
        let at_ms = self.wall_ms(now);
        let op = StoreOp::Cancel(CancelOp {
            conv: ask.conv.clone(),
            message_id: ask.message_id.clone(),
            at_ms,
        });
        self.store(Pending::Cancel(ask), op);
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

    /// The store decided the cancel `ask`.
    pub(super) fn on_cancel_reply(&mut self, now: Instant, ask: CancelAsk, reply: StoreReply) {
        let CancelAsk {
            conn,
            conv,
            request_id,
            since,
            ..
        } = ask;
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
        self.cancel_decided(now, &conv, &id, answer, final_seq);
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
                self.pump(now, &conv);
            }
            _ => {
                self.send_cancel_result(now, conn, held, id);
                self.pump(now, &conv);
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

    /// The cancel failed: refused by a full store (nothing was cancelled),
    /// or unanswered (it may have taken effect). A reply whose generator
    /// waited for this cancel starts it now.
    pub(super) fn cancel_failed(&mut self, ask: CancelAsk, error: &StoreError) {
        let CancelAsk {
            conn,
            request_id,
            message_id,
            ..
        } = ask;
        self.send(
            conn,
            store_error_frame(
                error,
                "the store cannot be reached or did not confirm the cancel; it may not have \
                 taken effect: send it again",
                "the store is full and refuses writes: nothing was cancelled (a reply that \
                 cannot be stored ends by itself, failed store_full)",
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
        request_id: Option<RequestId>,
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
