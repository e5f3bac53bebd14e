//! The per-connection outbound queue: many producers, exactly one writer.
//!
//! Every frame for a connection goes through one [`OutQueue`]; the connection's single
//! writer task [`pop`](OutQueue::pop)s and writes them, so frames of one connection are
//! never interleaved on the socket. The queue is plain synchronous code behind one
//! mutex; it never blocks on anything but that mutex and knows nothing of tokio. The
//! wake-up of the writer (a `tokio::sync::Notify`) lives with the caller: push, then
//! notify.
//!
//! # Rules
//!
//! The queue holds at most `capacity` items (counted in items, not bytes; a capacity of
//! 0 is taken as 1, since a queue that can hold nothing could never send anything).
//! [`push`](OutQueue::push) decides, under the lock, in this order:
//!
//! 1. **Closed.** After [`close`](OutQueue::close) or after an [`Item::Close`] was
//!    accepted, every push returns [`Push::Closed`] and queues nothing (another
//!    `Close` included).
//! 2. **Close is always accepted.** An [`Item::Close`] is appended even when the queue
//!    is full (it is the one item that may take the queue to `capacity + 1`) and closes
//!    the queue: [`Push::Queued`]. It is therefore always the last item that pops.
//! 3. **Room.** When fewer than `capacity` items are queued, the item is appended
//!    unchanged: [`Push::Queued`]. Nothing is merged while there is room, so a reader
//!    that keeps up sees every chunk as it was produced.
//! 4. **Full, ping.** An [`Item::Ping`] that finds the queue full is dropped:
//!    [`Push::Dropped`]. A ping carries no data, and a connection whose queue is full is
//!    not quiet, so there is nothing to heartbeat; it does not count as an overflow.
//! 5. **Full, next chunk of the tail.** A [`Chunk`] frame that continues the chunk frame
//!    at the tail of the queue (same `message_id`, its first seq is the tail's `seq + 1`)
//!    is merged into that tail frame: [`Push::Merged`]. It takes no slot.
//! 6. **Full, compaction.** Otherwise the queue is compacted: every run of *adjacent*
//!    queued chunk frames that [continue](#merging) one another becomes one frame. If
//!    that freed at least one slot, the item is appended: [`Push::Merged`].
//! 7. **Overflow.** If compaction freed nothing, the item is *not* queued and the queue
//!    is left exactly as it was: [`Push::Overflow`]. The caller reports the slow
//!    consumer to the core, which closes the connection with 4008 so the client resumes.
//!
//! [`pop`](OutQueue::pop) never blocks and returns items in the order they were
//! accepted; after [`close`](OutQueue::close) (or a `Close` item) the items already
//! queued still pop, then `None`.
//!
//! # Merging
//!
//! A chunk frame covers the seqs `first_seq()..=seq` (`from_seq..=seq` for a merged one,
//! just `seq` for a plain one). Frame `b` *continues* frame `a` when both are
//! well-formed (`first_seq() <= seq`), carry the same `message_id`, and
//! `b.first_seq() == a.seq + 1`. Merging `b` into `a` gives one frame with
//! `from_seq = Some(a.first_seq())`, `seq = b.seq` and `delta = a.delta + b.delta`, so
//! the seq numbers stay exact and the client receives exactly the same text.
//!
//! Only neighbours in the queue merge (and the incoming chunk with the tail), so a merge
//! never moves a frame past another one: not past a frame of another reply, and not
//! past an `end`, `cancel_result` or anything else of the same reply. As a consequence,
//! chunks of two replies that alternate in the queue do not merge with each other.
//!
//! [`merged_frames`](OutQueue::merged_frames) counts the frames absorbed by merging: each
//! time two chunk frames become one it grows by one, so
//! `frames popped == items accepted - merged_frames`.
//!
//! # Concurrency
//!
//! One mutex guards the whole state; every method takes it exactly once and does
//! no I/O and no wake-up while holding it. The mutex and `Arc` come from
//! `crate::sync`, so the verification crate model-checks this very file with `loom`
//! (`verification/tests/loom_queue.rs`). A poisoned mutex is recovered: the code that
//! runs under the lock cannot panic (short of allocation failure, which aborts), so the
//! state behind a poisoned lock is still consistent.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::ops::DerefMut;
use std::sync::PoisonError;

use weir_core::wire::{Chunk, CloseCode, ServerFrame};

use crate::sync::Mutex;

/// One entry of an [`OutQueue`], as the writer carries it out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Item {
    /// Send this frame as one WebSocket text message. `chunk` frames may be merged
    /// while the queue is full (see the [module docs](self)).
    Frame(ServerFrame),
    /// Send a WebSocket ping. Dropped instead of queued when the queue is full.
    Ping,
    /// Send everything queued before this, then close the WebSocket with this code.
    /// Accepted even when the queue is full (refused only once the queue is closed), and
    /// always the last item of the queue.
    Close(CloseCode),
}

/// What [`OutQueue::push`] did with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use = "an Overflow must be reported to the core as a slow consumer"]
pub enum Push {
    /// The item was appended unchanged (there was room, or it was a `Close`).
    Queued,
    /// The queue was full and merging chunk frames made room: the item was merged into
    /// the tail frame or appended after a compaction. Nothing was lost.
    Merged,
    /// The queue was full and merging freed nothing: the item was **not** queued. The
    /// caller reports the slow consumer (the core then closes with 4008).
    Overflow,
    /// The item was a ping and the queue was full: the ping was dropped. Not an
    /// error; nothing needs to be done.
    Dropped,
    /// The queue is closed ([`OutQueue::close`] or a `Close` item): the item was not
    /// queued.
    Closed,
}

impl Push {
    /// Whether the item is in the queue now (queued or merged).
    #[must_use]
    pub fn is_accepted(self) -> bool {
        matches!(self, Push::Queued | Push::Merged)
    }
}

/// The bounded outbound queue of one connection (see the [module docs](self) for the
/// rules). `Send + Sync`: share it in an `Arc` between the producers and the writer.
#[derive(Debug)]
pub struct OutQueue {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    items: VecDeque<Item>,
    capacity: usize,
    closed: bool,
    merged: u64,
}

impl OutQueue {
    /// An empty, open queue that holds at most `capacity` items (0 is taken as 1).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            state: Mutex::new(State {
                // Grows on demand (up to `capacity` items and a `Close`): an
                // idle connection's queue holds no allocation at all.
                items: VecDeque::new(),
                capacity,
                closed: false,
                merged: 0,
            }),
        }
    }

    /// Offers `item` to the queue; the result says whether it was queued, merged,
    /// dropped (a ping on a full queue), refused for lack of room ([`Push::Overflow`]),
    /// or refused because the queue is closed. See the module docs for the rules.
    pub fn push(&self, item: Item) -> Push {
        let mut state = self.lock();
        if state.closed {
            return Push::Closed;
        }
        if let Item::Close(_) = item {
            state.items.push_back(item);
            state.closed = true;
            return Push::Queued;
        }
        if state.items.len() < state.capacity {
            state.items.push_back(item);
            return Push::Queued;
        }
        let item = match item {
            Item::Ping => return Push::Dropped,
            Item::Frame(ServerFrame::Chunk(chunk)) => match state.merge_into_tail(chunk) {
                Ok(()) => return Push::Merged,
                Err(chunk) => Item::Frame(ServerFrame::Chunk(chunk)),
            },
            other => other,
        };
        if state.compact() == 0 {
            return Push::Overflow;
        }
        state.items.push_back(item);
        Push::Merged
    }

    /// Takes the oldest item, or `None` when the queue is empty. Never blocks.
    pub fn pop(&self) -> Option<Item> {
        self.lock().items.pop_front()
    }

    /// Closes the queue: every later push returns [`Push::Closed`]. Items already queued
    /// still pop. Closing twice is harmless.
    pub fn close(&self) {
        self.lock().closed = true;
    }

    /// How many items are queued (a merged frame counts once).
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether no item is queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }

    /// Whether the queue refuses pushes ([`close`](Self::close) was called or a `Close`
    /// item was accepted). Queued items may still be waiting to pop.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// How many frames were absorbed by merging since the queue was made (a metric):
    /// each time two chunk frames became one, this grew by one.
    #[must_use]
    pub fn merged_frames(&self) -> u64 {
        self.lock().merged
    }

    fn lock(&self) -> impl DerefMut<Target = State> + '_ {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Merges `chunk` into the chunk frame at the tail when it continues it; gives it
    /// back otherwise.
    fn merge_into_tail(&mut self, chunk: Chunk) -> Result<(), Chunk> {
        match self.items.back_mut() {
            Some(Item::Frame(ServerFrame::Chunk(tail))) if continues(tail, &chunk) => {
                absorb(tail, &chunk.delta, chunk.seq);
                self.merged = self.merged.saturating_add(1);
                Ok(())
            }
            _ => Err(chunk),
        }
    }

    /// Merges every run of adjacent chunk frames that continue one another into one
    /// frame, in place and in order. Returns how many frames were absorbed (the slots
    /// freed); when that is 0 the queue is unchanged.
    fn compact(&mut self) -> usize {
        let before = self.items.len();
        let items = self.items.make_contiguous();
        // `items[..=kept]` is the compacted prefix; `items[kept + 1..read]` holds
        // leftovers (frames already absorbed, or moved down by a swap), cut off below.
        let mut kept = 0;
        for read in 1..items.len() {
            let (done, rest) = items.split_at_mut(read);
            // `kept < read` always holds, and `rest` is non-empty since `read < len`.
            if let (
                Some(Item::Frame(ServerFrame::Chunk(a))),
                Some(Item::Frame(ServerFrame::Chunk(b))),
            ) = (done.get_mut(kept), rest.first_mut())
            {
                if continues(a, b) {
                    let delta = std::mem::take(&mut b.delta);
                    absorb(a, &delta, b.seq);
                    continue;
                }
            }
            kept += 1;
            items.swap(kept, read);
        }
        let after = (kept + 1).min(before);
        self.items.truncate(after);
        let freed = before - after;
        self.merged = self.merged.saturating_add(freed as u64);
        freed
    }
}

/// Whether chunk frame `b` continues `a`: same reply, both well-formed, and `b`'s first
/// seq right after `a`'s last.
fn continues(a: &Chunk, b: &Chunk) -> bool {
    a.message_id == b.message_id
        && a.first_seq() <= a.seq
        && b.first_seq() <= b.seq
        && a.seq.checked_add(1) == Some(b.first_seq())
}

/// Extends `a` (which `b` continues) by `b`'s text up to `b`'s last seq.
fn absorb(a: &mut Chunk, delta: &str, last_seq: u64) {
    a.from_seq = Some(a.first_seq());
    a.seq = last_seq;
    a.delta.push_str(delta);
}

#[cfg(test)]
mod tests {
    use weir_core::ids::MessageId;
    use weir_core::wire::{CancelResult, CancelStatus, End, ReplyStatus, Start};

    use super::*;
    use crate::sync::model;

    fn id(s: &str) -> MessageId {
        MessageId::parse(s).unwrap()
    }

    fn chunk(m: &str, seq: u64, delta: &str) -> Item {
        Item::Frame(ServerFrame::Chunk(Chunk {
            message_id: id(m),
            seq,
            delta: delta.to_owned(),
            from_seq: None,
        }))
    }

    fn merged(m: &str, from_seq: u64, seq: u64, delta: &str) -> Item {
        Item::Frame(ServerFrame::Chunk(Chunk {
            message_id: id(m),
            seq,
            delta: delta.to_owned(),
            from_seq: Some(from_seq),
        }))
    }

    fn start(m: &str) -> Item {
        Item::Frame(ServerFrame::Start(Start {
            message_id: id(m),
            reply_to: id("u1"),
        }))
    }

    fn end(m: &str, final_seq: u64) -> Item {
        Item::Frame(ServerFrame::End(End {
            message_id: id(m),
            status: ReplyStatus::Completed,
            final_seq,
            reason: None,
            usage: None,
        }))
    }

    fn cancel_result(m: &str, final_seq: u64) -> Item {
        Item::Frame(ServerFrame::CancelResult(CancelResult {
            request_id: None,
            message_id: Some(id(m)),
            status: CancelStatus::Cancelled,
            final_seq: Some(final_seq),
        }))
    }

    fn fill(q: &OutQueue, items: &[Item]) {
        for item in items {
            assert_eq!(q.push(item.clone()), Push::Queued, "{item:?}");
        }
    }

    fn drain(q: &OutQueue) -> Vec<Item> {
        std::iter::from_fn(|| q.pop()).collect()
    }

    #[test]
    fn out_queue_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<OutQueue>();
    }

    #[test]
    fn items_pop_in_push_order() {
        model(|| {
            let q = OutQueue::new(8);
            let items = [
                start("a"),
                chunk("a", 1, "x"),
                Item::Ping,
                chunk("b", 1, "y"),
                chunk("a", 2, "z"),
                end("a", 2),
            ];
            fill(&q, &items);
            assert_eq!(q.len(), items.len());
            assert_eq!(drain(&q), items);
            assert!(q.is_empty());
            assert_eq!(q.pop(), None);
            assert_eq!(q.merged_frames(), 0);
        });
    }

    #[test]
    fn nothing_merges_while_there_is_room() {
        model(|| {
            let q = OutQueue::new(3);
            fill(&q, &[chunk("a", 1, "x"), chunk("a", 2, "y")]);
            assert_eq!(drain(&q), [chunk("a", 1, "x"), chunk("a", 2, "y")]);
            assert_eq!(q.merged_frames(), 0);
        });
    }

    #[test]
    fn next_chunk_merges_into_the_tail_with_exact_seqs() {
        model(|| {
            let q = OutQueue::new(2);
            fill(&q, &[start("a"), chunk("a", 1, "he")]);
            assert_eq!(q.push(chunk("a", 2, "ll")), Push::Merged);
            assert_eq!(q.push(chunk("a", 3, "o")), Push::Merged);
            assert_eq!(q.len(), 2);
            assert_eq!(q.merged_frames(), 2);
            assert_eq!(drain(&q), [start("a"), merged("a", 1, 3, "hello")]);
        });
    }

    #[test]
    fn compaction_merges_runs_and_makes_room() {
        model(|| {
            let q = OutQueue::new(6);
            fill(
                &q,
                &[
                    chunk("a", 4, "ab"),
                    chunk("a", 5, "c"),
                    chunk("a", 6, "de"),
                    start("b"),
                    chunk("b", 1, "1"),
                    chunk("b", 2, "2"),
                ],
            );
            // Not the tail's next chunk (another reply): the queue is compacted.
            assert_eq!(q.push(start("c")), Push::Merged);
            assert_eq!(q.merged_frames(), 3);
            assert_eq!(q.len(), 4);
            assert_eq!(
                drain(&q),
                [
                    merged("a", 4, 6, "abcde"),
                    start("b"),
                    merged("b", 1, 2, "12"),
                    start("c"),
                ]
            );
        });
    }

    #[test]
    fn an_already_merged_frame_merges_again_keeping_its_first_seq() {
        model(|| {
            let q = OutQueue::new(2);
            fill(&q, &[merged("a", 1, 3, "abc"), chunk("a", 4, "d")]);
            assert_eq!(q.push(merged("a", 5, 6, "ef")), Push::Merged);
            assert_eq!(q.push(start("b")), Push::Merged);
            assert_eq!(drain(&q), [merged("a", 1, 6, "abcdef"), start("b")]);
            assert_eq!(q.merged_frames(), 2);
        });
    }

    #[test]
    fn merging_never_crosses_another_replys_frames() {
        model(|| {
            let q = OutQueue::new(3);
            let items = [chunk("a", 1, "x"), chunk("b", 1, "y"), chunk("a", 2, "z")];
            fill(&q, &items);
            // b2 does not continue the tail (a2), and no neighbours continue each other.
            assert_eq!(q.push(chunk("b", 2, "w")), Push::Overflow);
            assert_eq!(drain(&q), items);
            assert_eq!(q.merged_frames(), 0);
        });
    }

    #[test]
    fn merging_never_crosses_an_end_or_a_cancel_result_of_the_same_reply() {
        model(|| {
            let q = OutQueue::new(5);
            let items = [
                chunk("a", 1, "x"),
                end("a", 1),
                chunk("a", 2, "y"),
                cancel_result("a", 2),
                chunk("a", 3, "z"),
            ];
            fill(&q, &items);
            assert_eq!(q.push(chunk("b", 1, "w")), Push::Overflow);
            assert_eq!(
                q.push(chunk("a", 4, "v")),
                Push::Merged,
                "the tail may grow"
            );
            assert_eq!(
                drain(&q),
                [
                    chunk("a", 1, "x"),
                    end("a", 1),
                    chunk("a", 2, "y"),
                    cancel_result("a", 2),
                    merged("a", 3, 4, "zv"),
                ]
            );
        });
    }

    #[test]
    fn chunks_with_a_gap_or_another_reply_do_not_merge() {
        model(|| {
            let q = OutQueue::new(3);
            let items = [chunk("a", 1, "x"), chunk("a", 3, "y"), chunk("b", 4, "z")];
            fill(&q, &items);
            assert_eq!(q.push(chunk("a", 5, "w")), Push::Overflow);
            assert_eq!(
                q.push(chunk("b", 4, "again")),
                Push::Overflow,
                "no duplicate seq"
            );
            assert_eq!(drain(&q), items);
        });
    }

    #[test]
    fn overflow_when_nothing_is_mergeable_leaves_the_queue_unchanged() {
        model(|| {
            let q = OutQueue::new(2);
            let items = [start("a"), start("b")];
            fill(&q, &items);
            assert_eq!(q.push(chunk("a", 1, "x")), Push::Overflow);
            assert_eq!(q.push(end("a", 0)), Push::Overflow);
            assert!(!q.is_closed(), "an overflow does not close the queue");
            assert_eq!(q.len(), 2);
            assert_eq!(drain(&q), items);
            assert_eq!(
                q.push(chunk("a", 1, "x")),
                Push::Queued,
                "room again after pops"
            );
        });
    }

    #[test]
    fn a_ping_on_a_full_queue_is_dropped_not_an_overflow() {
        model(|| {
            let q = OutQueue::new(1);
            assert_eq!(q.push(Item::Ping), Push::Queued);
            assert_eq!(q.push(Item::Ping), Push::Dropped);
            assert_eq!(drain(&q), [Item::Ping]);
            assert_eq!(q.merged_frames(), 0);
        });
    }

    #[test]
    fn close_is_accepted_when_full_and_later_pushes_are_closed() {
        model(|| {
            let q = OutQueue::new(1);
            fill(&q, &[start("a")]);
            assert_eq!(q.push(Item::Close(CloseCode::TooSlow)), Push::Queued);
            assert!(q.is_closed());
            assert_eq!(q.len(), 2);
            assert_eq!(q.push(chunk("a", 1, "x")), Push::Closed);
            assert_eq!(q.push(Item::Ping), Push::Closed);
            assert_eq!(q.push(Item::Close(CloseCode::Normal)), Push::Closed);
            assert_eq!(drain(&q), [start("a"), Item::Close(CloseCode::TooSlow)]);
        });
    }

    #[test]
    fn pop_after_close_drains_then_none() {
        model(|| {
            let q = OutQueue::new(4);
            let items = [start("a"), chunk("a", 1, "x")];
            fill(&q, &items);
            q.close();
            q.close();
            assert!(q.is_closed());
            assert_eq!(q.push(chunk("a", 2, "y")), Push::Closed);
            assert_eq!(q.push(Item::Close(CloseCode::GoingAway)), Push::Closed);
            assert_eq!(drain(&q), items);
            assert_eq!(q.pop(), None);
            assert!(q.is_empty());
        });
    }

    #[test]
    fn merged_frames_counts_every_absorbed_frame() {
        model(|| {
            let q = OutQueue::new(3);
            fill(
                &q,
                &[chunk("a", 1, "a"), chunk("a", 2, "b"), chunk("a", 3, "c")],
            );
            assert_eq!(q.push(start("b")), Push::Merged); // 3 frames became 1: +2
            assert_eq!(q.merged_frames(), 2);
            assert_eq!(q.push(chunk("b", 1, "d")), Push::Queued);
            assert_eq!(q.push(chunk("b", 2, "e")), Push::Merged); // into the tail: +1
            assert_eq!(q.merged_frames(), 3);
            let popped = drain(&q);
            assert_eq!(
                popped,
                [
                    merged("a", 1, 3, "abc"),
                    start("b"),
                    merged("b", 1, 2, "de")
                ]
            );
            assert_eq!(popped.len() as u64, 6 - q.merged_frames());
        });
    }

    #[test]
    fn capacity_zero_holds_one_item() {
        model(|| {
            let q = OutQueue::new(0);
            assert_eq!(q.push(start("a")), Push::Queued);
            assert_eq!(q.push(start("b")), Push::Overflow);
            assert_eq!(drain(&q), [start("a")]);
        });
    }

    #[test]
    fn push_results_say_whether_the_item_is_in_the_queue() {
        assert!(Push::Queued.is_accepted());
        assert!(Push::Merged.is_accepted());
        assert!(!Push::Overflow.is_accepted());
        assert!(!Push::Dropped.is_accepted());
        assert!(!Push::Closed.is_accepted());
    }
}
