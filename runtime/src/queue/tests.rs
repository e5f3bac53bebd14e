use std::sync::atomic::{AtomicUsize, Ordering};
// A `Waker` is made from std's `Arc`; `Arc` alone is `crate::sync`'s, which is
// loom's when `verification/tests/loom_queue.rs` compiles this file.
use std::sync::Arc as StdArc;
use std::task::Wake;

use weir_core::ids::MessageId;
use weir_core::wire::{CancelResult, CancelStatus, End, ReplyStatus, Start};

use super::*;
use crate::sync::model;

fn id(s: &str) -> MessageId {
    MessageId::parse(s).unwrap()
}

fn plain(m: &str, seq: u64, delta: &str) -> Chunk {
    Chunk {
        message_id: id(m),
        seq,
        delta: delta.to_owned(),
        from_seq: None,
        ts_ns: None,
    }
}

fn chunk(m: &str, seq: u64, delta: &str) -> Item {
    Item::frame(ServerFrame::Chunk(plain(m, seq, delta)))
}

fn merged(m: &str, from_seq: u64, seq: u64, delta: &str) -> Item {
    Item::Merged(Box::new(Chunk {
        message_id: id(m),
        seq,
        delta: delta.to_owned(),
        from_seq: Some(from_seq),
        ts_ns: None,
    }))
}

fn start(m: &str) -> Item {
    Item::frame(ServerFrame::Start(Start {
        message_id: id(m),
        reply_to: id("u1"),
    }))
}

fn end(m: &str, final_seq: u64) -> Item {
    Item::frame(ServerFrame::End(End {
        message_id: id(m),
        status: ReplyStatus::Completed,
        final_seq,
        reason: None,
        usage: None,
    }))
}

fn cancel_result(m: &str, final_seq: u64) -> Item {
    Item::frame(ServerFrame::CancelResult(CancelResult {
        request_id: None,
        message_id: Some(id(m)),
        status: CancelStatus::Cancelled,
        final_seq: Some(final_seq),
    }))
}

/// A waker that counts its wake-ups.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: StdArc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &StdArc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting_waker() -> (StdArc<CountingWaker>, Waker) {
    let count = StdArc::new(CountingWaker::default());
    (count.clone(), Waker::from(count))
}

fn wakes(count: &CountingWaker) -> usize {
    count.0.load(Ordering::SeqCst)
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
        // A frame that is already merged, as a shared frame and as the queue's own.
        let shared_merged = Item::frame(ServerFrame::Chunk(Chunk {
            from_seq: Some(1),
            ts_ns: None,
            ..plain("a", 3, "abc")
        }));
        assert_eq!(shared_merged, merged("a", 1, 3, "abc"));
        fill(&q, &[shared_merged, chunk("a", 4, "d")]);
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
fn a_ping_on_a_full_queue_is_kept_and_pops_before_the_frames() {
    model(|| {
        let q = OutQueue::new(1);
        fill(&q, &[start("a")]);
        assert_eq!(q.push(Item::Ping), Push::Queued, "not dropped when full");
        assert_eq!(q.push(Item::Ping), Push::Queued, "one ping pending");
        assert_eq!(q.len(), 1, "a ping takes no slot");
        assert_eq!(q.push(chunk("a", 1, "x")), Push::Overflow);
        assert_eq!(drain(&q), [Item::Ping, start("a")]);
        assert_eq!(q.merged_frames(), 0);
    });
}

#[test]
fn a_ping_is_not_starved_behind_merged_deltas() {
    model(|| {
        let q = OutQueue::new(2);
        fill(&q, &[start("a"), chunk("a", 1, "x")]);
        for seq in 2..=5 {
            assert_eq!(q.push(chunk("a", seq, "y")), Push::Merged);
        }
        assert_eq!(q.push(Item::Ping), Push::Queued);
        assert_eq!(q.pop(), Some(Item::Ping), "the ping goes first");
        assert_eq!(drain(&q), [start("a"), merged("a", 1, 5, "xyyyy")]);
    });
}

#[test]
fn a_closed_queue_refuses_a_ping_but_a_pending_one_still_pops() {
    model(|| {
        let q = OutQueue::new(2);
        assert_eq!(q.push(Item::Ping), Push::Queued);
        assert_eq!(q.push(Item::Close(CloseCode::TooSlow)), Push::Queued);
        assert_eq!(q.push(Item::Ping), Push::Closed);
        assert_eq!(drain(&q), [Item::Ping, Item::Close(CloseCode::TooSlow)]);
    });
}

#[test]
fn lag_counts_the_queued_chunk_text_through_merges_and_pops() {
    model(|| {
        let q = OutQueue::new(2);
        fill(&q, &[start("a"), chunk("a", 1, "abc")]);
        assert_eq!(q.lag_bytes(), 3, "only chunk text counts");
        assert_eq!(q.push(chunk("a", 2, "de")), Push::Merged);
        assert_eq!(q.lag_bytes(), 5);
        assert_eq!(q.pop(), Some(start("a")));
        assert_eq!(q.lag_bytes(), 5);
        assert_eq!(q.pop(), Some(merged("a", 1, 2, "abcde")));
        assert_eq!(q.lag_bytes(), 0);
    });
}

#[test]
fn progress_counts_pops_and_says_whether_anything_waits() {
    model(|| {
        let q = OutQueue::new(2);
        let idle = Progress {
            popped: 0,
            waiting: false,
        };
        assert_eq!(q.progress(), idle);
        assert_eq!(q.push(Item::Ping), Push::Queued);
        assert!(q.progress().waiting, "a pending ping waits");
        fill(&q, &[start("a")]);
        assert_eq!(q.pop(), Some(Item::Ping));
        assert_eq!(
            q.progress(),
            Progress {
                popped: 1,
                waiting: true
            }
        );
        assert_eq!(q.push(chunk("a", 1, "x")), Push::Queued);
        assert_eq!(q.push(chunk("a", 2, "y")), Push::Merged);
        assert_eq!(q.progress().popped, 1, "merging is not progress");
        assert_eq!(drain(&q).len(), 2);
        assert_eq!(
            q.progress(),
            Progress {
                popped: 3,
                waiting: false
            }
        );
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
fn an_encoded_frame_is_its_frames_encoding() {
    model(|| {
        let frame = ServerFrame::Chunk(plain("a", 1, "he said \"hi\"\n"));
        let encoded = Encoded::new(frame.clone());
        assert_eq!(encoded.frame(), &frame);
        assert_eq!(&encoded.text()[..], frame.encode());
    });
}

#[test]
fn merging_never_changes_a_frame_shared_with_other_queues() {
    model(|| {
        let shared: Vec<Arc<Encoded>> = (1..=3)
            .map(|seq| Arc::new(Encoded::new(ServerFrame::Chunk(plain("a", seq, "x")))))
            .collect();
        let full = OutQueue::new(1);
        let roomy = OutQueue::new(8);
        for e in &shared {
            let _ = full.push(Item::Frame(e.clone()));
            assert_eq!(roomy.push(Item::Frame(e.clone())), Push::Queued);
        }
        assert_eq!(full.merged_frames(), 2);
        assert_eq!(drain(&full), [merged("a", 1, 3, "xxx")]);
        for (seq, e) in (1..=3).zip(&shared) {
            let frame = ServerFrame::Chunk(plain("a", seq, "x"));
            assert_eq!(e.frame(), &frame, "the shared frame is unchanged");
            assert_eq!(&e.text()[..], frame.encode(), "and so is its text");
        }
        let popped = drain(&roomy);
        assert_eq!(popped.len(), 3);
        for (item, e) in popped.iter().zip(&shared) {
            match item {
                Item::Frame(got) => assert!(Arc::ptr_eq(got, e), "the very same Arc"),
                other => panic!("{other:?}"),
            }
        }
    });
}

#[test]
fn the_waiting_writer_is_woken_once_when_the_queue_gets_an_item() {
    model(|| {
        let q = OutQueue::new(2);
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(q.poll_pop(&mut cx), Poll::Pending);
        assert_eq!(q.poll_pop(&mut cx), Poll::Pending, "waiting again");
        assert_eq!(wakes(&count), 0);
        assert_eq!(q.push(start("a")), Push::Queued);
        assert_eq!(wakes(&count), 1, "empty to non-empty wakes the writer");
        assert_eq!(q.push(chunk("a", 1, "x")), Push::Queued);
        assert_eq!(q.push(chunk("a", 2, "y")), Push::Merged);
        assert_eq!(wakes(&count), 1, "the writer has not waited since");
        assert_eq!(q.poll_pop(&mut cx), Poll::Ready(Some(start("a"))));
        assert_eq!(q.pop(), Some(merged("a", 1, 2, "xy")));
        assert_eq!(q.poll_pop(&mut cx), Poll::Pending);
        assert_eq!(q.push(start("b")), Push::Queued);
        assert_eq!(q.push(start("c")), Push::Queued);
        assert_eq!(q.push(start("d")), Push::Overflow);
        assert_eq!(wakes(&count), 2);
        assert_eq!(drain(&q), [start("b"), start("c")]);
    });
}

#[test]
fn a_refused_push_does_not_wake_the_writer() {
    model(|| {
        let q = OutQueue::new(1);
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(q.poll_pop(&mut cx), Poll::Pending);
        q.close();
        assert_eq!(wakes(&count), 1, "close wakes the writer");
        assert_eq!(q.push(start("a")), Push::Closed);
        assert_eq!(wakes(&count), 1);
        assert_eq!(q.poll_pop(&mut cx), Poll::Ready(None), "closed and empty");
    });
}

#[test]
fn a_closed_queue_still_pops_its_items_then_ends() {
    model(|| {
        let q = OutQueue::new(4);
        let (_count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        fill(&q, &[start("a"), Item::Close(CloseCode::GoingAway)]);
        assert_eq!(q.poll_pop(&mut cx), Poll::Ready(Some(start("a"))));
        assert_eq!(
            q.poll_pop(&mut cx),
            Poll::Ready(Some(Item::Close(CloseCode::GoingAway)))
        );
        assert_eq!(q.poll_pop(&mut cx), Poll::Ready(None));
    });
}

#[test]
fn an_emptied_queue_releases_a_grown_buffer() {
    model(|| {
        let q = OutQueue::new(64);
        assert_eq!(q.allocated_slots(), 0, "a new queue holds no allocation");
        fill(&q, &[start("a"), start("b")]);
        assert_eq!(drain(&q).len(), 2);
        assert!(q.allocated_slots() <= IDLE_SLOTS, "a small buffer may stay");
        let burst: Vec<Item> = (1..=20).map(|seq| chunk("a", seq, "x")).collect();
        fill(&q, &burst);
        assert!(q.allocated_slots() >= 20);
        assert_eq!(q.pop(), Some(chunk("a", 1, "x")));
        assert!(q.allocated_slots() >= 19, "kept while items are queued");
        assert_eq!(drain(&q).len(), 19);
        assert_eq!(q.allocated_slots(), 0, "released once empty");
    });
}

/// Offers `item`, expecting it queued; returns whether that blocked the queue.
fn blocks(q: &OutQueue, item: Item) -> bool {
    let pushed = q.offer(item);
    assert!(pushed.push.is_accepted(), "{pushed:?}");
    pushed.blocked
}

/// Takes the next item; returns whether that unblocked the queue.
fn unblocks(q: &OutQueue) -> bool {
    q.take().expect("an item").writable
}

#[test]
fn the_push_that_reaches_the_high_water_mark_blocks_and_the_pop_to_the_low_water_mark_unblocks() {
    model(|| {
        // Capacity 8: blocked at 6 items, writable again at 2.
        let q = OutQueue::new(8);
        for seq in 1..=5 {
            assert!(!blocks(&q, chunk("a", seq, "x")), "room below the mark");
        }
        assert!(!q.is_blocked());
        assert!(blocks(&q, chunk("a", 6, "x")), "the sixth item reaches it");
        assert!(q.is_blocked());
        assert!(!blocks(&q, chunk("a", 7, "x")), "reported once");
        assert!(!blocks(&q, Item::Ping), "a ping takes no slot");
        assert!(!unblocks(&q), "the ping pops first; 7 items still wait");
        for _ in 0..4 {
            assert!(!unblocks(&q), "above the low-water mark");
        }
        assert!(q.is_blocked());
        assert!(unblocks(&q), "the pop that leaves 2 items");
        assert!(!q.is_blocked());
        assert!(!unblocks(&q), "reported once");
        assert!(!blocks(&q, chunk("a", 8, "x")));
        for seq in 9..=12 {
            let blocked = blocks(&q, chunk("a", seq, "x"));
            assert_eq!(blocked, seq == 12, "blocked again at 6 items");
        }
    });
}

#[test]
fn a_queue_of_one_blocks_with_its_item_and_unblocks_when_it_is_taken() {
    model(|| {
        let q = OutQueue::new(1);
        assert!(blocks(&q, start("a")));
        let pushed = q.offer(chunk("a", 1, "x"));
        assert_eq!(pushed.push, Push::Overflow);
        assert!(!pushed.blocked);
        assert!(unblocks(&q));
        assert_eq!(q.take(), None);
    });
}

#[test]
fn merging_past_the_mark_keeps_the_queue_blocked_until_the_writer_drains_it() {
    model(|| {
        let q = OutQueue::new(4);
        assert!(!blocks(&q, start("a")));
        assert!(!blocks(&q, chunk("a", 1, "x")));
        assert!(blocks(&q, chunk("a", 2, "y")), "3 of 4: the mark");
        assert!(!blocks(&q, chunk("a", 3, "z")));
        // Full: frames the core sent before it heard of the block merge.
        assert_eq!(q.offer(chunk("a", 4, "w")).push, Push::Merged);
        assert_eq!(q.offer(start("b")).push, Push::Merged, "compacted");
        assert!(q.is_blocked(), "compaction is not the writer's progress");
        assert_eq!(
            q.take().map(|p| (p.item, p.writable)),
            Some((start("a"), false))
        );
        assert_eq!(
            q.take().map(|p| (p.item, p.writable)),
            Some((merged("a", 1, 4, "xyzw"), true)),
            "one item left: the low-water mark"
        );
        assert_eq!(drain(&q), [start("b")]);
    });
}

#[test]
fn a_closed_queue_reports_neither_block_nor_drain() {
    model(|| {
        let q = OutQueue::new(4);
        assert!(!blocks(&q, start("a")));
        assert!(!blocks(&q, start("b")));
        assert!(
            !blocks(&q, Item::Close(CloseCode::TooSlow)),
            "closing is not blocking"
        );
        let q = OutQueue::new(4);
        for m in ["a", "b"] {
            assert!(!blocks(&q, start(m)));
        }
        assert!(blocks(&q, start("c")));
        q.close();
        assert!(
            [unblocks(&q), unblocks(&q), unblocks(&q)]
                .iter()
                .all(|w| !w),
            "nothing more will be sent"
        );
    });
}

#[test]
fn push_results_say_whether_the_item_is_in_the_queue() {
    assert!(Push::Queued.is_accepted());
    assert!(Push::Merged.is_accepted());
    assert!(!Push::Overflow.is_accepted());
    assert!(!Push::Closed.is_accepted());
}
