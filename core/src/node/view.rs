//! Conversation views: what this node knows of each conversation its
//! connections watch — a contiguous prefix of each reply's chunks and its
//! end once known — kept up to date from notices, reads of the store's log,
//! and a watch timer per unsettled reply (invariant 6). Delivery from the
//! views to the connections is in [`deliver`](super::deliver).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use super::{watch_key, Node, Pending};
use crate::api::Output;
use crate::ids::{ConnId, ConvKey, IdSource, MessageId, Seq};
use crate::session::ConnState;
use crate::store::{stamps, LiveReply, Notice, ReadOp, ReapOp, StoreOp, StoreReply, Topic};
use crate::stream::{Outcome, StreamState};
use crate::timer::TimerKey;
use crate::wire::{Message, Usage};

/// What a node knows of one reply it shows to local connections: a prefix
/// of its chunks, and its end once known. Transitions are pure; the node
/// reads from the store when [`needs_read`](Self::needs_read) says so.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub(super) struct ReplyView {
    /// The user turn it answers, once known.
    user_message: Option<Message>,
    /// Chunks `1..=deltas.len()`, contiguous.
    deltas: Vec<String>,
    /// Their append times, parallel to `deltas` (0: unstamped), empty
    /// while none is stamped ([`stamps`](crate::store::stamps)).
    ts_ns: Vec<u64>,
    /// `text_ends[i]`: the bytes of chunks `1..=i + 1` together, so the text
    /// between two seqs (a connection's lag) is a subtraction.
    text_ends: Vec<usize>,
    /// Fixed by a cancel or by settling.
    final_seq: Option<Seq>,
    /// The outcome, once settled.
    settled: Option<(Outcome, Option<Usage>)>,
    /// A read from the store is in flight.
    reading: bool,
    /// A notice showed chunks beyond `deltas`: fill from the log.
    gap: bool,
}

impl ReplyView {
    /// How many chunks it holds (`1..=len`).
    pub(super) fn len(&self) -> Seq {
        self.deltas.len() as Seq
    }

    /// Chunk `seq`, if held.
    pub(super) fn delta(&self, seq: Seq) -> Option<&str> {
        let idx = usize::try_from(seq.checked_sub(1)?).ok()?;
        self.deltas.get(idx).map(String::as_str)
    }

    /// The bytes of text of chunks `after + 1..=upto` (those held).
    pub(super) fn text_between(&self, after: Seq, upto: Seq) -> usize {
        let end = |seq: Seq| {
            usize::try_from(seq.min(self.len()))
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| self.text_ends.get(i).copied())
                .unwrap_or(0)
        };
        end(upto).saturating_sub(end(after))
    }

    /// The last seq a connection may be given now: what is held, and never
    /// beyond `final_seq` (invariant 3).
    pub(super) fn deliverable(&self) -> Seq {
        self.final_seq.map_or(self.len(), |f| f.min(self.len()))
    }

    /// Its outcome, usage and last seq, once settled.
    pub(super) fn end(&self) -> Option<(&Outcome, Option<Usage>, Seq)> {
        let (outcome, usage) = self.settled.as_ref()?;
        Some((outcome, *usage, self.final_seq?))
    }

    /// Neither settled nor fenced by a cancel: a new chat must wait.
    pub(super) fn is_streaming(&self) -> bool {
        self.settled.is_none() && self.final_seq.is_none()
    }

    pub(super) fn is_settled(&self) -> bool {
        self.settled.is_some()
    }

    /// It is settled and every chunk and the user turn are here: a resume
    /// can be answered without the store.
    pub(super) fn is_complete(&self) -> bool {
        self.settled.is_some()
            && self.len() >= self.final_seq.unwrap_or(0)
            && self.user_message.is_some()
    }

    pub(super) fn user_message(&self) -> Option<&Message> {
        self.user_message.as_ref()
    }

    /// Records the user turn; false if it was known already (the reply was
    /// announced).
    pub(super) fn learn_user_message(&mut self, m: &Message) -> bool {
        if self.user_message.is_some() {
            return false;
        }
        self.user_message = Some(m.clone());
        true
    }

    /// When chunk `seq` was appended (chunk timestamps), if known.
    pub(super) fn stamp(&self, seq: Seq) -> Option<u64> {
        let idx = usize::try_from(seq.checked_sub(1)?).ok()?;
        stamps::at(&self.ts_ns, idx)
    }

    /// Adds chunks `first_seq..`, skipping known ones; returns false on a gap.
    #[cfg(test)]
    pub(super) fn add(&mut self, first_seq: Seq, deltas: impl IntoIterator<Item = String>) -> bool {
        self.add_stamps(first_seq, deltas, &[])
    }

    /// [`add`](Self::add) for chunks of one append, stamped `at_ns`.
    pub(super) fn add_stamped(
        &mut self,
        first_seq: Seq,
        deltas: Vec<String>,
        at_ns: Option<u64>,
    ) -> bool {
        let stamps = at_ns.map(|t| vec![t; deltas.len()]).unwrap_or_default();
        self.add_stamps(first_seq, deltas, &stamps)
    }

    /// [`add`](Self::add) with the chunks' stamps (`ts_ns[i]` of
    /// `deltas[i]`, as the store lists them).
    pub(super) fn add_stamps(
        &mut self,
        first_seq: Seq,
        deltas: impl IntoIterator<Item = String>,
        ts_ns: &[u64],
    ) -> bool {
        for (i, (seq, d)) in (first_seq..).zip(deltas).enumerate() {
            match seq.cmp(&(self.len() + 1)) {
                // Known already: skipped.
                Ordering::Less => {}
                Ordering::Equal => {
                    let t = stamps::at(ts_ns, i).unwrap_or(0);
                    if t != 0 || !self.ts_ns.is_empty() {
                        self.ts_ns.resize(self.deltas.len(), 0);
                        self.ts_ns.push(t);
                    }
                    let before = self.text_ends.last().copied().unwrap_or(0);
                    self.text_ends.push(before + d.len());
                    self.deltas.push(d);
                }
                Ordering::Greater => {
                    self.gap = true;
                    return false;
                }
            }
        }
        true
    }

    /// A cancel or a settle fixed the last chunk; the lowest known wins.
    pub(super) fn fix_final(&mut self, final_seq: Seq) {
        self.final_seq = Some(self.final_seq.map_or(final_seq, |f| f.min(final_seq)));
    }

    /// The reply settled; the first outcome heard stays.
    pub(super) fn settle(&mut self, outcome: Outcome, final_seq: Seq, usage: Option<Usage>) {
        self.fix_final(final_seq);
        self.settled.get_or_insert((outcome, usage));
    }

    /// What the store holds of the stream (from a read or a snapshot).
    pub(super) fn apply_state(&mut self, state: &StreamState, usage: Option<Usage>) {
        if let Some(f) = state.final_seq() {
            self.fix_final(f);
        }
        if let StreamState::Settled { outcome, .. } = state {
            self.settled.get_or_insert((outcome.clone(), usage));
        }
    }

    /// Whether chunks up to the known end are missing.
    pub(super) fn needs_read(&self) -> bool {
        !self.reading && (self.gap || self.final_seq.is_some_and(|f| f > self.len()))
    }

    /// Starts a read of the log: the seq to read after, or `None` while a
    /// read is already in flight.
    #[must_use]
    pub(super) fn start_read(&mut self) -> Option<Seq> {
        if self.reading {
            return None;
        }
        self.reading = true;
        self.gap = false;
        Some(self.len())
    }

    /// The read in flight was answered (or failed).
    pub(super) fn on_read_answered(&mut self) {
        self.reading = false;
    }
}

/// A conversation as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub(super) struct ConvView {
    /// The local connections that watch it.
    pub(super) conns: BTreeSet<ConnId>,
    replies: BTreeMap<MessageId, ReplyView>,
    /// Replies this view finished with, newest last (at most [`DONE_MEMORY`]):
    /// late notices about them are ignored rather than reviving them.
    done: VecDeque<MessageId>,
    /// A snapshot is being read to learn the user turn of a reply heard of
    /// without its start (`learn.rs`).
    pub(super) learning: bool,
}

/// How many finished replies a conversation view remembers.
const DONE_MEMORY: usize = 64;

impl ConvView {
    pub(super) fn is_done(&self, id: &MessageId) -> bool {
        self.done.contains(id)
    }

    pub(super) fn mark_done(&mut self, id: MessageId) {
        if !self.done.contains(&id) {
            self.done.push_back(id);
            while self.done.len() > DONE_MEMORY {
                self.done.pop_front();
            }
        }
    }

    /// The view of a reply that a notice speaks of, unless finished here.
    pub(super) fn live_reply(&mut self, id: &MessageId) -> Option<&mut ReplyView> {
        if self.is_done(id) {
            return None;
        }
        Some(self.replies.entry(id.clone()).or_default())
    }

    pub(super) fn replies(&self) -> &BTreeMap<MessageId, ReplyView> {
        &self.replies
    }

    /// The view of reply `id`, made empty if there was none.
    pub(super) fn reply_entry(&mut self, id: &MessageId) -> &mut ReplyView {
        self.replies.entry(id.clone()).or_default()
    }

    pub(super) fn remove_reply(&mut self, id: &MessageId) -> Option<ReplyView> {
        self.replies.remove(id)
    }

    pub(super) fn reply(&self, id: &MessageId) -> Option<&ReplyView> {
        self.replies.get(id)
    }

    pub(super) fn reply_mut(&mut self, id: &MessageId) -> Option<&mut ReplyView> {
        self.replies.get_mut(id)
    }

    /// Whether a reply streams in this conversation (a chat must wait).
    pub(super) fn is_streaming(&self) -> bool {
        self.replies.values().any(ReplyView::is_streaming)
    }

    /// The replies whose user turn is known, to announce to a connection.
    pub(super) fn announced(&self) -> impl Iterator<Item = (&MessageId, &Message)> {
        self.replies
            .iter()
            .filter_map(|(id, r)| r.user_message().map(|m| (id, m)))
    }

    /// A connection opened on a snapshot that showed `live` (and `history`
    /// before it): merge what it shows. Returns true if this view had
    /// already finished with that reply — the snapshot was read before the
    /// reply ended here, so the end must be read from the store.
    #[must_use]
    pub(super) fn on_snapshot_live(&mut self, live: &LiveReply, history: &[Message]) -> bool {
        let reread = self.is_done(&live.message_id);
        let r = self.replies.entry(live.message_id.clone()).or_default();
        let _ = r.add_stamps(1, live.deltas.iter().cloned(), &live.ts_ns);
        r.apply_state(&live.state, None);
        if r.user_message.is_none() {
            r.user_message = history
                .iter()
                .find(|m| m.message_id == live.reply_to)
                .cloned();
        }
        reread
    }
}

impl<I: IdSource> Node<I> {
    /// This node's view of reply `id` in `conv`, if it has one.
    pub(super) fn reply_view_mut(
        &mut self,
        conv: &ConvKey,
        id: &MessageId,
    ) -> Option<&mut ReplyView> {
        self.convs.get_mut(conv).and_then(|v| v.reply_mut(id))
    }

    /// A read did not reach the store: the watch timer tries again after
    /// `store_retry`.
    pub(super) fn read_failed(&mut self, now: Instant, conv: &ConvKey, id: &MessageId) {
        if let Some(r) = self.reply_view_mut(conv, id) {
            r.on_read_answered();
            self.timers
                .set(watch_key(conv, id), now + self.config.store_retry);
        }
        self.tidy_conv(conv);
    }

    /// Reads reply `id` from the store, after the chunks the view holds
    /// (unless a read is in flight).
    pub(super) fn read(&mut self, now: Instant, conv: &ConvKey, id: &MessageId) {
        let Some(after_seq) = self
            .reply_view_mut(conv, id)
            .and_then(ReplyView::start_read)
        else {
            return;
        };
        let at_ms = self.wall_ms(now);
        self.store(
            Pending::Read(conv.clone(), id.clone()),
            StoreOp::Read(ReadOp {
                conv: conv.clone(),
                message_id: id.clone(),
                after_seq,
                at_ms,
            }),
        );
    }

    /// A watched reply that is not settled gets re-read now and then.
    pub(super) fn arm_watch(&mut self, now: Instant, conv: &ConvKey, id: &MessageId) {
        if self.owned.contains_key(id) {
            return;
        }
        let unsettled = self
            .convs
            .get(conv)
            .and_then(|v| v.reply(id))
            .is_some_and(|r| !r.is_settled());
        let key = watch_key(conv, id);
        if unsettled {
            self.timers.set(key, now + self.config.watch_interval);
        } else {
            self.timers.cancel(&key);
        }
    }

    pub(super) fn watch_fired(&mut self, now: Instant, conv: &ConvKey, id: &MessageId) {
        if self
            .convs
            .get(conv)
            .is_some_and(|v| v.replies.contains_key(id))
        {
            self.read(now, conv, id);
        }
    }

    pub(super) fn on_read_reply(
        &mut self,
        now: Instant,
        conv: &ConvKey,
        id: &MessageId,
        reply: StoreReply,
    ) {
        let Some(r) = self.reply_view_mut(conv, id) else {
            return;
        };
        r.on_read_answered();
        match reply {
            StoreReply::Read {
                state,
                deltas,
                first_seq,
                usage,
                ts_ns,
                ..
            } => {
                let _ = r.add_stamps(first_seq, deltas, &ts_ns);
                r.apply_state(&state, usage);
                let reap_due = state.reap_due_ms();
                let wall = self.wall_ms(now);
                if reap_due.is_some_and(|due| wall >= due) && !self.owned.contains_key(id) {
                    // The owner stopped renewing: settle the reply for it.
                    self.store(
                        Pending::Reap,
                        StoreOp::Reap(ReapOp {
                            conv: conv.clone(),
                            message_id: id.clone(),
                            at_ms: wall,
                        }),
                    );
                }
                self.learn_if_unknown(now, conv, id);
                self.arm_watch(now, conv, id);
                self.pump(now, conv);
            }
            StoreReply::Missing { epoch, snapshot } => {
                self.reply_missing(now, conv, id, epoch, snapshot);
            }
            _ => {}
        }
    }

    pub(super) fn on_notice(&mut self, now: Instant, notice: Notice) {
        match notice {
            Notice::Started {
                conv,
                user_message,
                message_id,
                owner,
            } => {
                // This node's own replies are announced by the `Start` reply,
                // which carries the sender's `request_id` and comes after `ack`.
                if owner != self.config.node_id && self.convs.contains_key(&conv) {
                    self.announce(now, &conv, &message_id, &user_message, None);
                }
            }
            Notice::Chunks {
                conv,
                message_id,
                first_seq,
                deltas,
                ts_ns,
            } => {
                if let Some(r) = self
                    .convs
                    .get_mut(&conv)
                    .and_then(|v| v.live_reply(&message_id))
                {
                    let before = r.len();
                    let _ = r.add_stamped(first_seq, deltas, ts_ns);
                    // The producer's node already has these from its append:
                    // nothing new, nothing to walk.
                    let walk = r.len() > before || r.needs_read();
                    // Before the walk, which may tidy the reply away.
                    self.learn_if_unknown(now, &conv, &message_id);
                    if walk {
                        self.arm_watch(now, &conv, &message_id);
                        self.pump(now, &conv);
                    }
                }
            }
            Notice::Cancelling {
                conv,
                message_id,
                final_seq,
            } => {
                if let Some(r) = self
                    .convs
                    .get_mut(&conv)
                    .and_then(|v| v.live_reply(&message_id))
                {
                    r.fix_final(final_seq);
                    self.learn_if_unknown(now, &conv, &message_id);
                    self.pump(now, &conv);
                }
            }
            Notice::CancelRequested { message_id, .. } => self.owner_cancel(now, &message_id),
            Notice::Settled {
                conv,
                message_id,
                outcome,
                final_seq,
                usage,
            } => {
                if let Some(r) = self
                    .convs
                    .get_mut(&conv)
                    .and_then(|v| v.live_reply(&message_id))
                {
                    r.settle(outcome, final_seq, usage);
                    self.learn_if_unknown(now, &conv, &message_id);
                    self.arm_watch(now, &conv, &message_id);
                    self.pump(now, &conv);
                }
            }
            Notice::Presence { user, status } => self.on_presence(&user, status),
        }
    }

    /// Drops what a conversation view no longer needs.
    pub(super) fn tidy_conv(&mut self, conv: &ConvKey) {
        let Some(view) = self.convs.get_mut(conv) else {
            return;
        };
        let watched: BTreeSet<MessageId> = view
            .conns
            .iter()
            .filter_map(|c| self.conns.get(c))
            .flat_map(|c| c.cursors.keys().cloned())
            .collect();
        let handshaking = view.conns.iter().any(|c| {
            self.conns
                .get(c)
                .is_some_and(|c| c.state == ConnState::Handshake)
        });
        let mut dropped = Vec::new();
        view.replies.retain(|id, r| {
            // A settled reply nobody still reads is done; while a connection
            // waits for its snapshot, keep it (the snapshot may predate the end).
            // A reply heard of without its start waits for the snapshot
            // read to learn its user turn (`learn.rs`).
            let keep = r.reading
                || watched.contains(id)
                || (handshaking && r.settled.is_some())
                || (r.settled.is_none() && !view.conns.is_empty())
                || (view.learning && r.user_message.is_none());
            if !keep {
                dropped.push(id.clone());
            }
            keep
        });
        for id in dropped {
            self.timers.cancel(&watch_key(conv, &id));
            view.mark_done(id);
        }
        let view_empty = view.conns.is_empty() && !view.replies.values().any(|r| r.reading);
        if view_empty {
            let ids: Vec<MessageId> = view.replies.keys().cloned().collect();
            for id in ids {
                self.timers.cancel(&watch_key(conv, &id));
            }
            self.timers.cancel(&TimerKey::Pump(Box::new(conv.clone())));
            self.convs.remove(conv);
            self.out
                .push_back(Output::Unsubscribe(Topic::Conv(conv.clone())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;
    use crate::wire::{MessageStatus, Role};

    fn id(s: &str) -> MessageId {
        MessageId::parse(s).unwrap()
    }

    fn chunks(ds: &[&str]) -> Vec<String> {
        ds.iter().map(|d| (*d).to_owned()).collect()
    }

    fn user_turn(message_id: &str) -> Message {
        Message {
            message_id: id(message_id),
            role: Role::User,
            content: "hi".into(),
            status: MessageStatus::Completed,
            created_at_ms: 1,
            seq: 0,
        }
    }

    #[test]
    fn chunks_in_order_are_kept_and_known_ones_skipped() {
        let mut r = ReplyView::default();
        assert!(r.add(1, chunks(&["a", "b"])));
        assert!(r.add(2, chunks(&["b", "c"])), "chunk 2 again is skipped");
        assert_eq!(r.len(), 3);
        assert_eq!(r.delta(3), Some("c"));
        assert_eq!(r.delta(0), None);
        assert_eq!(r.delta(4), None);
        assert!(!r.needs_read());
    }

    #[test]
    fn unstamped_chunks_cost_no_stamps_and_the_first_stamp_pads_those_before_it() {
        let mut r = ReplyView::default();
        assert!(r.add_stamps(1, chunks(&["a", "b"]), &[]));
        assert!(r.add_stamped(3, chunks(&["c"]), None));
        assert!(r.ts_ns.is_empty(), "no stamp is held while none is known");
        assert!(r.add_stamped(4, chunks(&["d", "e"]), Some(70)));
        assert_eq!(r.ts_ns, [0, 0, 0, 70, 70]);
        assert_eq!((r.stamp(3), r.stamp(4), r.stamp(6)), (None, Some(70), None));
        assert!(r.add_stamps(6, chunks(&["f"]), &[0]));
        assert_eq!(r.ts_ns.len(), 6, "once one is known, one per chunk");
        assert_eq!(r.stamp(6), None);
    }

    #[test]
    fn the_text_between_two_seqs_counts_the_chunks_held() {
        let mut r = ReplyView::default();
        assert_eq!(r.text_between(0, 3), 0, "nothing held");
        assert!(r.add(1, chunks(&["ab", "", "cde"])));
        assert_eq!(r.text_between(0, 3), 5);
        assert_eq!(r.text_between(1, 3), 3);
        assert_eq!(r.text_between(2, 3), 3, "an empty chunk is no text");
        assert_eq!(r.text_between(3, 3), 0);
        assert_eq!(r.text_between(1, 9), 3, "only what is held");
        assert_eq!(r.text_between(3, 1), 0, "a cursor past the end");
    }

    #[test]
    fn a_gap_asks_for_a_read() {
        let mut r = ReplyView::default();
        assert!(r.add(1, chunks(&["a"])));
        assert!(!r.add(3, chunks(&["c"])), "chunk 2 is missing");
        assert_eq!(r.len(), 1, "nothing beyond the gap is kept");
        assert!(r.needs_read());
        assert_eq!(r.start_read(), Some(1), "read after what is held");
        assert!(!r.needs_read(), "the gap is being filled");
    }

    #[test]
    fn a_read_in_flight_asks_for_no_second_one() {
        let mut r = ReplyView::default();
        assert_eq!(r.start_read(), Some(0));
        assert_eq!(r.start_read(), None);
        r.fix_final(2);
        assert!(!r.needs_read(), "the read in flight will bring them");
        r.on_read_answered();
        assert!(r.needs_read());
        assert_eq!(r.start_read(), Some(0));
    }

    #[test]
    fn a_known_end_beyond_the_chunks_asks_for_a_read() {
        let mut r = ReplyView::default();
        assert!(r.add(1, chunks(&["a"])));
        r.fix_final(2);
        assert!(r.needs_read());
        assert!(r.add(2, chunks(&["b"])));
        assert!(!r.needs_read());
    }

    #[test]
    fn final_seq_only_moves_down_and_fences_delivery() {
        let mut r = ReplyView::default();
        assert!(r.add(1, chunks(&["a", "b", "c"])));
        assert_eq!(r.deliverable(), 3);
        assert!(r.is_streaming());
        r.fix_final(2);
        assert!(!r.is_streaming(), "a cancel stops a new chat waiting");
        r.fix_final(3);
        assert_eq!(
            r.deliverable(),
            2,
            "a later, higher end does not undo a cancel"
        );
    }

    #[test]
    fn the_first_outcome_heard_stays() {
        let mut r = ReplyView::default();
        r.settle(Outcome::Cancelled, 1, None);
        r.settle(Outcome::Completed, 1, None);
        assert!(r.is_settled());
        assert_eq!(r.settled, Some((Outcome::Cancelled, None)));
        let state = StreamState::Settled {
            outcome: Outcome::Completed,
            final_seq: 1,
            expires_at_ms: 0,
        };
        r.apply_state(&state, None);
        assert_eq!(r.settled, Some((Outcome::Cancelled, None)));
    }

    #[test]
    fn a_resume_needs_the_store_until_the_view_is_complete() {
        let mut r = ReplyView::default();
        assert!(!r.is_complete());
        assert!(r.add(1, chunks(&["a"])));
        r.settle(Outcome::Completed, 2, None);
        assert!(!r.is_complete(), "chunk 2 is missing");
        assert!(r.add(2, chunks(&["b"])));
        assert!(!r.is_complete(), "the user turn is unknown");
        assert!(r.learn_user_message(&user_turn("u1")));
        assert!(r.is_complete());
    }

    #[test]
    fn a_reply_is_announced_once() {
        let mut r = ReplyView::default();
        assert!(r.learn_user_message(&user_turn("u1")));
        assert!(!r.learn_user_message(&user_turn("u1")));
        assert_eq!(
            r.user_message().map(|m| m.message_id.clone()),
            Some(id("u1"))
        );
    }

    #[test]
    fn a_finished_reply_is_not_revived_by_a_late_notice() {
        let mut v = ConvView::default();
        assert!(v.live_reply(&id("r1")).is_some());
        v.replies.remove(&id("r1"));
        v.mark_done(id("r1"));
        assert!(v.live_reply(&id("r1")).is_none());
        assert!(v.reply(&id("r1")).is_none());
    }

    #[test]
    fn the_memory_of_finished_replies_forgets_the_oldest() {
        let mut v = ConvView::default();
        for i in 0..=DONE_MEMORY {
            v.mark_done(id(&format!("r{i}")));
        }
        v.mark_done(id("r1"));
        assert_eq!(v.done.len(), DONE_MEMORY, "marked twice, remembered once");
        assert!(!v.is_done(&id("r0")));
        assert!(v.is_done(&id(&format!("r{DONE_MEMORY}"))));
    }

    #[test]
    fn a_conversation_streams_while_one_reply_neither_settled_nor_cancelled() {
        let mut v = ConvView::default();
        assert!(!v.is_streaming());
        let r = v.live_reply(&id("r1")).unwrap();
        assert!(r.add(1, chunks(&["a"])));
        assert!(v.is_streaming());
        v.reply_mut(&id("r1")).unwrap().fix_final(1);
        assert!(!v.is_streaming());
    }

    #[test]
    fn a_snapshot_merges_the_live_reply_and_finds_its_user_turn() {
        let mut v = ConvView::default();
        let live = LiveReply {
            message_id: id("r1"),
            reply_to: id("u1"),
            state: StreamState::Cancelling {
                final_seq: 2,
                lease_until_ms: 10,
                deadline_ms: 10,
            },
            deltas: chunks(&["a", "b", "c"]),
            ts_ns: vec![],
            created_at_ms: 1,
            owner: NodeId::parse("n1").unwrap(),
        };
        assert!(!v.on_snapshot_live(&live, &[user_turn("u0"), user_turn("u1")]));
        let r = v.reply(&id("r1")).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r.deliverable(), 2, "the cancel's end fences it");
        assert_eq!(
            r.user_message().map(|m| m.message_id.clone()),
            Some(id("u1"))
        );
        let announced: Vec<&MessageId> = v.announced().map(|(id, _)| id).collect();
        assert_eq!(announced, [&id("r1")]);
    }

    #[test]
    fn a_snapshot_of_a_reply_finished_here_asks_to_read_its_end() {
        let mut v = ConvView::default();
        v.mark_done(id("r1"));
        let live = LiveReply {
            message_id: id("r1"),
            reply_to: id("u1"),
            state: StreamState::Active { lease_until_ms: 10 },
            deltas: vec![],
            ts_ns: vec![],
            created_at_ms: 1,
            owner: NodeId::parse("n1").unwrap(),
        };
        assert!(v.on_snapshot_live(&live, &[]));
    }
}
