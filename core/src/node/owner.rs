//! The producer: the replies this node generates, from the `chat` that
//! starts one to its settle — appends in order, one at a time and each of a
//! bounded size, the lease kept by renewals.

use std::collections::VecDeque;
use std::time::Instant;

use super::{Node, Pending, SHUTDOWN, STORE_FULL, STORE_LOST};
use crate::api::{Event, GeneratorEvent, Output};
use crate::ids::{ConnId, ConvKey, IdSource, MessageId, RequestId, Seq};
use crate::store::{AppendOp, RenewOp, SettleOp, StoreOp, StoreReply, Token};
use crate::stream::SettleRequest;
use crate::timer::TimerKey;
use crate::wire::{Message, Usage};

/// A reply this node produces: the producer's own state, apart from the
/// node. Its transitions are pure; the node turns what they return into
/// store operations and outputs.
///
/// ```text
/// generating ──finished / failed / cancel / shutdown──► ending ──queue appended──► settling ──settled──► (dropped)
///   └ deltas queue up; one append at a time (`next_write`) of at most
///     `append_max_chunks` chunks and `append_max_bytes` bytes, the next one
///     once the store acked the last (`on_append_acked`)
/// ```
///
/// One append in flight, not a pipeline: the store refuses an append that
/// does not start right after its last chunk (a gap, which ends the reply
/// here), so a second append sent before the first is answered would have
/// to be taken back whenever the first fails. A bounded batch is what keeps
/// each step short (the node hands out what an ack brings in one step: a
/// backlog of 100 000 chunks appended at once kept a node busy for seconds,
/// its lease unrenewed); each round trip to the store carries up to
/// `append_max_chunks` chunks, so a fast generator costs fewer round trips,
/// not a longer wait per chunk.
///
/// The store operation of a write in flight is not kept here: the node's
/// table of pending operations already maps it to this reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Owned {
    conv: ConvKey,
    token: Token,
    /// The last seq the store accepted.
    acked: Seq,
    /// Deltas not yet sent to the store.
    queue: VecDeque<String>,
    /// The one append at the store.
    in_flight: Option<Batch>,
    /// The generator ended (or was stopped): settle once flushed.
    end: Option<(SettleRequest, Option<Usage>)>,
    /// The settle is at the store.
    settling: bool,
    /// A renewal of the lease is at the store.
    renewing: bool,
    generator_running: bool,
    /// The generator's input, kept while a cancel sent before the reply had
    /// an id is at the store: if that cancel fails, the generator starts.
    deferred: Option<Vec<Message>>,
    /// A cancel or a fence stopped the reply: generator events are dropped.
    stopped: bool,
}

/// Chunks `first_seq..` sent to the store in one append.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Batch {
    pub(super) first_seq: Seq,
    pub(super) deltas: Vec<String>,
    /// When it was sent, with chunk timestamps on
    /// ([`Owned::stamp_in_flight`]).
    pub(super) at_ns: Option<u64>,
}

/// How much one append may carry (from the node's
/// [`Config`](crate::Config)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AppendLimit {
    /// Chunks, at least one.
    pub(super) chunks: usize,
    /// Delta bytes; a single longer delta goes alone.
    pub(super) bytes: usize,
}

impl AppendLimit {
    /// How many of `queue`'s first deltas the next append takes: at least
    /// one, at most `chunks`, and no more than `bytes` in all unless the
    /// first alone is longer.
    fn take(self, queue: &VecDeque<String>) -> usize {
        let mut bytes = 0usize;
        let mut n = 0usize;
        for d in queue {
            if n > 0 && (n >= self.chunks || bytes + d.len() > self.bytes) {
                break;
            }
            bytes += d.len();
            n += 1;
        }
        n
    }
}

/// The producer's next write to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Write {
    /// Append these chunks.
    Append(Batch),
    /// Everything is appended: settle the reply.
    Settle {
        request: SettleRequest,
        /// The last seq the store acknowledged: a store that lost some of
        /// them answers a gap.
        last_seq: Seq,
        usage: Option<Usage>,
    },
}

/// A reply the store just started for this node (its `Start` succeeded).
#[derive(Debug)]
pub(super) struct NewReply {
    pub(super) conv: ConvKey,
    pub(super) message_id: MessageId,
    pub(super) token: Token,
    pub(super) user_message: Message,
    /// The generator's input.
    pub(super) context: Vec<Message>,
}

impl Owned {
    /// A reply whose generator runs now, or (`deferred`) waits with its
    /// input until a cancel that came first is decided.
    pub(super) fn new(conv: ConvKey, token: Token, deferred: Option<Vec<Message>>) -> Self {
        Self {
            conv,
            token,
            acked: 0,
            queue: VecDeque::new(),
            in_flight: None,
            end: None,
            settling: false,
            renewing: false,
            generator_running: deferred.is_none(),
            deferred,
            stopped: false,
        }
    }

    pub(super) fn conv(&self) -> &ConvKey {
        &self.conv
    }

    pub(super) fn token(&self) -> Token {
        self.token
    }

    /// Whether a generator task runs for it (and must be aborted if the
    /// reply stops).
    pub(super) fn generator_running(&self) -> bool {
        self.generator_running
    }

    /// A cancel or a fence already stopped it.
    pub(super) fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The settle is at the store.
    pub(super) fn is_settling(&self) -> bool {
        self.settling
    }

    /// Token counts the generator reported with its end.
    pub(super) fn usage(&self) -> Option<Usage> {
        self.end.as_ref().and_then(|(_, u)| *u)
    }

    /// One event of the generator. Returns false when the reply no longer
    /// takes events (stopped, or the generator already ended).
    #[must_use]
    pub(super) fn on_generator(&mut self, event: GeneratorEvent) -> bool {
        if self.stopped || self.end.is_some() {
            return false;
        }
        match event {
            GeneratorEvent::Delta(d) => self.on_delta(d),
            GeneratorEvent::Finished { usage } => {
                self.on_generator_end(SettleRequest::Completed, usage)
            }
            GeneratorEvent::Failed { reason, usage } => {
                self.on_generator_end(SettleRequest::Failed(reason), usage);
            }
        }
        true
    }

    /// More text: queued for the next append (an empty delta is no chunk).
    pub(super) fn on_delta(&mut self, delta: String) {
        if !delta.is_empty() {
            self.queue.push_back(delta);
        }
    }

    fn on_generator_end(&mut self, request: SettleRequest, usage: Option<Usage>) {
        self.generator_running = false;
        self.end = Some((request, usage));
    }

    /// The next write to send: the first queued deltas, as many as `limit`
    /// lets one append carry, or the settle once everything is appended;
    /// `None` while a write is in flight or nothing is to be written. The
    /// write is then in flight.
    #[must_use]
    pub(super) fn next_write(&mut self, limit: AppendLimit) -> Option<Write> {
        if self.in_flight.is_some() || self.settling {
            return None;
        }
        if !self.queue.is_empty() && !self.stopped {
            let n = limit.take(&self.queue);
            let batch = Batch {
                first_seq: self.acked + 1,
                deltas: self.queue.drain(..n).collect(),
                at_ns: None,
            };
            self.in_flight = Some(batch.clone());
            Some(Write::Append(batch))
        } else if let Some((request, usage)) = self.end.clone() {
            self.settling = true;
            Some(Write::Settle {
                request,
                last_seq: self.acked,
                usage,
            })
        } else {
            None
        }
    }

    /// Stamps the append in flight with the time it is sent (chunk
    /// timestamps): the store keeps it with each chunk, and this node's view
    /// gets it with the batch once acked.
    pub(super) fn stamp_in_flight(&mut self, at_ns: u64) {
        if let Some(b) = self.in_flight.as_mut() {
            b.at_ns = Some(at_ns);
        }
    }

    /// The store answered the append in flight (whatever it said): the batch
    /// it carried, or `None` if no append was in flight.
    #[must_use]
    pub(super) fn on_append_answered(&mut self) -> Option<Batch> {
        self.in_flight.take()
    }

    /// The store accepted chunks up to `last_seq`.
    pub(super) fn on_append_acked(&mut self, last_seq: Seq) {
        self.acked = last_seq;
    }

    /// The append in flight did not reach the store: its batch goes back in
    /// front of the queue, to be retried with the same seqs (which cannot
    /// duplicate a chunk).
    pub(super) fn on_append_failed(&mut self) {
        if let Some(Batch {
            first_seq, deltas, ..
        }) = self.in_flight.take()
        {
            for d in deltas.into_iter().rev() {
                self.queue.push_front(d);
            }
            debug_assert_eq!(first_seq, self.acked + 1);
        }
    }

    /// The settle did not reach the store: it is sent again.
    pub(super) fn on_settle_failed(&mut self) {
        self.settling = false;
    }

    /// The lease is due for renewal: true if a renewal should be sent (none
    /// is at the store, and the reply is not settling).
    #[must_use]
    pub(super) fn start_renew(&mut self) -> bool {
        if self.renewing || self.settling {
            return false;
        }
        self.renewing = true;
        true
    }

    /// The store answered the renewal (or could not be reached).
    pub(super) fn on_renew_answered(&mut self) {
        self.renewing = false;
    }

    /// A cancel took effect: drop what was not yet appended, settle
    /// `cancelled`. Returns whether the generator must be aborted.
    #[must_use]
    pub(super) fn on_cancel(&mut self) -> bool {
        self.stopped = true;
        self.deferred = None;
        self.queue.clear();
        self.end = Some((SettleRequest::Cancelled, None));
        std::mem::take(&mut self.generator_running)
    }

    /// The node shuts down: settle `failed(shutdown)` unless the reply
    /// already ends. Returns whether the generator must be aborted.
    #[must_use]
    pub(super) fn on_shutdown(&mut self) -> bool {
        if self.end.is_none() {
            self.end = Some((SettleRequest::Failed(SHUTDOWN.to_owned()), None));
        }
        std::mem::take(&mut self.generator_running)
    }

    /// The store refused a write of the reply for want of room (`lost`: a
    /// batch of chunks with it): the reply ends with the chunks already
    /// stored, `failed(store_full)` — unless it already ended otherwise and
    /// lost nothing, or was cancelled or failed anyway (the store decides
    /// the settle: a cancel that came first still wins). What was not
    /// appended is dropped, and generator events from now on. Returns
    /// whether the generator must be aborted.
    #[must_use]
    pub(super) fn on_refused(&mut self, lost: bool) -> bool {
        self.stop_failed(STORE_FULL, lost)
    }

    /// Stops producing: the reply ends `failed(reason)` with the chunks
    /// already stored, unless it already ended otherwise and `lost`
    /// nothing. Returns whether the generator must be aborted.
    fn stop_failed(&mut self, reason: &str, lost: bool) -> bool {
        let lost = lost || !self.queue.is_empty();
        self.stopped = true;
        self.deferred = None;
        self.queue.clear();
        let ends_well = matches!(self.end, Some((SettleRequest::Completed, _)));
        if self.end.is_none() || (ends_well && lost) {
            let usage = self.usage();
            self.end = Some((SettleRequest::Failed(reason.to_owned()), usage));
        }
        std::mem::take(&mut self.generator_running)
    }

    /// The last seq the store acknowledged.
    pub(super) fn acked(&self) -> Seq {
        self.acked
    }

    /// The store answered an append (whose chunks, `unsent`, it did not
    /// take) or the settle (no chunks) with a gap: its log ends at
    /// `last_seq`, before chunks it had acknowledged, so it lost writes (a
    /// Redis failover to a replica that had not received them). With the
    /// lost chunks (`last_seq + 1..=acked`, from this node's view) they go
    /// back in front of the queue, `unsent` after them, to be written again
    /// with the same seqs: the reply goes on
    /// exactly, and returns `false`. Without them it ends
    /// `failed(store_lost)` with what the store holds, and returns whether
    /// the generator must be aborted.
    #[must_use]
    pub(super) fn on_gap(
        &mut self,
        last_seq: Seq,
        unsent: Vec<String>,
        lost: Option<Vec<String>>,
    ) -> bool {
        self.settling = false;
        let whole =
            lost.filter(|l| last_seq + l.len() as Seq == self.acked && last_seq < self.acked);
        self.acked = last_seq;
        match whole {
            Some(lost) => {
                for d in unsent.into_iter().rev() {
                    self.queue.push_front(d);
                }
                for d in lost.into_iter().rev() {
                    self.queue.push_front(d);
                }
                false
            }
            // What the store holds is what the reply ends with: the settle
            // that follows asks no more (or it would meet the gap again).
            None => self.stop_failed(STORE_LOST, true),
        }
    }

    /// The cancel that held the generator back failed: its input, to start
    /// it now (`None` if nothing was held back, or the reply was stopped).
    #[must_use]
    pub(super) fn release_deferred(&mut self) -> Option<Vec<Message>> {
        if self.stopped {
            return None;
        }
        let context = self.deferred.take()?;
        self.generator_running = true;
        Some(context)
    }
}

impl<I: IdSource> Node<I> {
    /// This node produces `reply` (its `Start` succeeded): record it, keep
    /// its lease, announce it to local connections, and start its generator —
    /// unless `defer_generator`: a cancel arrived before the reply had an id,
    /// and the generator's input is held until that cancel is decided.
    pub(super) fn own_reply(
        &mut self,
        now: Instant,
        reply: NewReply,
        sender: Option<(ConnId, Option<RequestId>)>,
        defer_generator: bool,
    ) {
        let NewReply {
            conv,
            message_id: id,
            token,
            user_message,
            context,
        } = reply;
        let (deferred, context) = if defer_generator {
            (Some(context), None)
        } else {
            (None, Some(context))
        };
        self.owned
            .insert(id.clone(), Owned::new(conv.clone(), token, deferred));
        self.timers.set(
            TimerKey::Renew(id.clone()),
            now + self.config.renew_interval(),
        );
        if self.convs.contains_key(&conv) {
            self.announce(now, &conv, &id, &user_message, sender);
        }
        if let Some(context) = context {
            self.out.push_back(Output::StartGenerator {
                message_id: id,
                conv,
                context,
            });
        }
    }

    pub(super) fn on_generator(&mut self, now: Instant, id: MessageId, event: GeneratorEvent) {
        let Some(o) = self.owned.get_mut(&id) else {
            return;
        };
        if o.on_generator(event) {
            self.owner_flush(now, &id);
        }
    }

    /// Sends the next append, or the settle once everything is appended.
    pub(super) fn owner_flush(&mut self, now: Instant, id: &MessageId) {
        let at_ms = self.wall_ms(now);
        let (stamped, at_ns) = (self.config.chunk_timestamps, self.wall_ns(now));
        let limit = AppendLimit {
            chunks: self.config.append_max_chunks,
            bytes: self.config.append_max_bytes,
        };
        let Some(o) = self.owned.get_mut(id) else {
            return;
        };
        let Some(mut write) = o.next_write(limit) else {
            return;
        };
        if let Write::Append(batch) = &mut write {
            if stamped {
                batch.at_ns = Some(at_ns);
                o.stamp_in_flight(at_ns);
            }
        }
        let (conv, token, message_id) = (o.conv.clone(), o.token, id.clone());
        match write {
            Write::Append(Batch {
                first_seq,
                deltas,
                at_ns,
            }) => self.store(
                Pending::Append(id.clone()),
                StoreOp::Append(AppendOp {
                    conv,
                    message_id,
                    token,
                    first_seq,
                    deltas,
                    at_ms,
                    at_ns,
                }),
            ),
            Write::Settle {
                request,
                last_seq,
                usage,
            } => self.store(
                Pending::Settle(id.clone()),
                StoreOp::Settle(SettleOp {
                    conv,
                    message_id,
                    token,
                    request,
                    last_seq,
                    usage,
                    at_ms,
                }),
            ),
        };
    }

    /// The store fenced this node off the reply (reaped, or lost).
    pub(super) fn owner_fenced(&mut self, now: Instant, id: &MessageId) {
        let Some(o) = self.owned.remove(id) else {
            return;
        };
        self.reply_slot_free(now, id, &o.conv().user);
        if o.generator_running() {
            self.out.push_back(Output::AbortGenerator {
                message_id: id.clone(),
            });
        }
        self.timers.cancel(&TimerKey::Renew(id.clone()));
        self.timers.cancel(&TimerKey::OwnerRetry(id.clone()));
        // Learn the truth for local viewers.
        self.read(now, o.conv(), id);
    }

    pub(super) fn on_append_reply(&mut self, now: Instant, id: &MessageId, reply: StoreReply) {
        let Some(o) = self.owned.get_mut(id) else {
            return;
        };
        let Some(batch) = o.on_append_answered() else {
            return;
        };
        let conv = o.conv().clone();
        match reply {
            StoreReply::Ok { last_seq } => {
                o.on_append_acked(last_seq);
                if let Some(r) = self.reply_view_mut(&conv, id) {
                    let _ = r.add_stamped(batch.first_seq, batch.deltas, batch.at_ns);
                }
                self.pump(now, &conv);
                self.owner_flush(now, id);
            }
            StoreReply::CancelRequested { final_seq } => {
                self.owner_told_cancelled(now, id, final_seq);
                self.pump(now, &conv);
            }
            StoreReply::Gap { last_seq } => self.owner_gap(now, id, last_seq, batch.deltas),
            _ => self.owner_fenced(now, id),
        }
    }

    /// The store lost chunks it had acknowledged (its log ends at
    /// `last_seq`): they are written again from this node's view of the
    /// reply, `unsent` (the chunks of the append the store answered) after
    /// them, or the reply ends `failed(store_lost)` where the view no longer
    /// holds them.
    fn owner_gap(&mut self, now: Instant, id: &MessageId, last_seq: Seq, unsent: Vec<String>) {
        let Some(o) = self.owned.get(id) else {
            return;
        };
        let (conv, acked) = (o.conv().clone(), o.acked());
        let lost = self.reply_view_mut(&conv, id).and_then(|r| {
            (last_seq + 1..=acked)
                .map(|seq| r.delta(seq).map(str::to_owned))
                .collect::<Option<Vec<String>>>()
        });
        let Some(o) = self.owned.get_mut(id) else {
            return;
        };
        if o.on_gap(last_seq, unsent, lost) {
            self.out.push_back(Output::AbortGenerator {
                message_id: id.clone(),
            });
        }
        self.owner_flush(now, id);
    }

    pub(super) fn on_settle_reply(&mut self, now: Instant, id: &MessageId, reply: StoreReply) {
        match reply {
            StoreReply::Settled {
                outcome, final_seq, ..
            } => {
                let Some(o) = self.owned.remove(id) else {
                    return;
                };
                self.reply_slot_free(now, id, &o.conv().user);
                self.timers.cancel(&TimerKey::Renew(id.clone()));
                self.timers.cancel(&TimerKey::OwnerRetry(id.clone()));
                if let Some(r) = self.reply_view_mut(o.conv(), id) {
                    r.settle(outcome.clone(), final_seq, o.usage());
                }
                self.out.push_back(Output::Event(Event::ReplySettled {
                    message_id: id.clone(),
                    outcome,
                    final_seq,
                }));
                self.pump(now, o.conv());
            }
            // Acknowledged chunks were lost (a failover): written again
            // first, then the settle goes out once more.
            // (A settle carries no chunks of its own.)
            StoreReply::Gap { last_seq } => self.owner_gap(now, id, last_seq, Vec::new()),
            _ => self.owner_fenced(now, id),
        }
    }

    /// The renew timer: keep the lease of reply `id`.
    pub(super) fn renew(&mut self, now: Instant, id: &MessageId) {
        let at_ms = self.wall_ms(now);
        let Some(o) = self.owned.get_mut(id) else {
            return;
        };
        self.timers.set(
            TimerKey::Renew(id.clone()),
            now + self.config.renew_interval(),
        );
        if !o.start_renew() {
            return;
        }
        let request = StoreOp::Renew(RenewOp {
            conv: o.conv().clone(),
            message_id: id.clone(),
            token: o.token(),
            at_ms,
        });
        self.store(Pending::Renew(id.clone()), request);
    }

    pub(super) fn on_renew_reply(&mut self, now: Instant, id: &MessageId, reply: StoreReply) {
        let Some(o) = self.owned.get_mut(id) else {
            return;
        };
        o.on_renew_answered();
        match reply {
            StoreReply::Ok { .. } => {}
            StoreReply::CancelRequested { final_seq } => {
                // A lost cancel notice, noticed within one renew period.
                self.owner_told_cancelled(now, id, final_seq);
            }
            _ => {
                if !o.is_settling() {
                    self.owner_fenced(now, id);
                }
            }
        }
    }

    /// An append did not reach the store: its batch is retried after
    /// `store_retry`.
    pub(super) fn append_failed(&mut self, now: Instant, id: MessageId) {
        if let Some(o) = self.owned.get_mut(&id) {
            o.on_append_failed();
            let key = TimerKey::OwnerRetry(id);
            self.timers.set(key, now + self.config.store_retry);
        }
    }

    /// A settle did not reach the store: it is retried after `store_retry`.
    pub(super) fn settle_failed(&mut self, now: Instant, id: MessageId) {
        if let Some(o) = self.owned.get_mut(&id) {
            o.on_settle_failed();
            let key = TimerKey::OwnerRetry(id);
            self.timers.set(key, now + self.config.store_retry);
        }
    }

    /// The store refused the reply's append (`append`) or renewal for want
    /// of room: the reply ends, `failed(store_full)`, at once. The settle
    /// goes out when no append is in flight; a full store still takes it.
    pub(super) fn owner_refused(&mut self, now: Instant, id: &MessageId, append: bool) {
        let Some(o) = self.owned.get_mut(id) else {
            return;
        };
        let lost = if append {
            // The refused batch: nothing of it was stored.
            o.on_append_answered().is_some()
        } else {
            o.on_renew_answered();
            false
        };
        if o.on_refused(lost) {
            self.out.push_back(Output::AbortGenerator {
                message_id: id.clone(),
            });
        }
        self.timers.cancel(&TimerKey::OwnerRetry(id.clone()));
        self.owner_flush(now, id);
    }

    /// A renewal did not reach the store: the next renew timer tries again.
    pub(super) fn renew_failed(&mut self, id: &MessageId) {
        if let Some(o) = self.owned.get_mut(id) {
            o.on_renew_answered();
        }
    }
}

#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod tests;
