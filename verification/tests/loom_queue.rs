//! Loom models of the per-connection outbound queue (`runtime/src/queue.rs`, private to weir-runtime).
//!
//! # Why the queue is included by path
//!
//! The runtime's `queue.rs` takes its `Arc` and `Mutex` from `crate::sync`. This file
//! compiles that very source (`#[path = …] mod queue;`) beside its own `mod sync` that
//! re-exports `loom::sync`, so loom checks the real code — under plain `cargo test`,
//! with no flag and no feature. The alternatives break the workspace: a `loom` cargo
//! feature on a shared crate is unified across the whole build, so it would switch the
//! other crates' tests to loom types when `cargo test` builds them together; and a bare
//! `cfg(loom)` leaks into every crate of the build that knows that cfg (tokio among
//! them). See `DESIGN.md` ("Verification") and `STYLE.md` (loom).
//!
//! Because this file is the crate root, `crate::sync` inside `queue.rs` resolves to the
//! `sync` module below, and the queue's own `#[cfg(test)]` unit tests are compiled here
//! too: they run once more, each inside a (single-threaded) `loom::model`.
//!
//! # The models
//!
//! Each model is small (three threads besides the main one, at most three pushes or
//! pops each, preemption bound 3; a few thousand interleavings, well under a second) and checks, for every explored interleaving, that the items
//! popped are exactly the items whose push was accepted — each merged chunk frame
//! expanded back into the chunks it covers, with its text checked against theirs — in
//! each producer's order, with nothing lost, nothing duplicated and nothing refused
//! delivered; and that `merged_frames` counts exactly the frames merging absorbed.
//!
//! Items are what the runtime queues: `Item::Frame(Arc<Encoded>)`, a frame encoded once
//! and possibly shared with other queues (here the `Arc` is loom's and the encoded text a
//! `String`, see `mod sync`), and `Item::Merged`, a queue's own merged chunk frame. Two
//! models cover what sharing and waiting add:
//!
//! - `a_waiting_writer_is_always_woken` runs the runtime's writer loop (wait with
//!   `poll_pop`, then `pop` until empty) against two producers, then a close (a `Close`
//!   item or `close()`) racing the writer: the writer is woken only when its queue goes
//!   from empty to non-empty, and a lost wake-up would leave it parked for good, which
//!   loom reports as a deadlock;
//! - `a_frame_shared_by_two_queues_reaches_both_unchanged` pushes the same encoded
//!   frames to a queue with room and one that merges, each with its own writer: both
//!   deliver exactly, and merging never changes the shared frames or their text.
//!
//! And one the credit adds: `every_block_is_matched_by_one_drain_and_a_drained_queue_is_not_blocked`
//! races the producer's pushes (which report the queue blocked at its high-water mark)
//! against the writer's pops (which report it writable at its low-water mark): every
//! block the runtime tells the core of is followed by exactly one drain, so the core
//! never waits for a `Writable` that does not come.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use loom::thread;
use weir_core::ids::MessageId;
use weir_core::wire::{Chunk, CloseCode, ServerFrame, Start};

use queue::{Encoded, Item, OutQueue, Popped, Push};
use sync::Arc;

/// The loom counterpart of `runtime/src/sync.rs`.
mod sync {
    pub(crate) use loom::sync::{Arc, Mutex};

    /// The runtime uses tungstenite's `Utf8Bytes` (not a dependency here); the queue
    /// only makes it from a `String`, moves it and clones it.
    pub(crate) type SharedText = String;

    /// Runs a unit test of `queue.rs` as a loom model.
    pub(crate) fn model<F>(f: F)
    where
        F: Fn() + Sync + Send + 'static,
    {
        loom::model(f);
    }
}

#[path = "../../runtime/src/queue.rs"]
mod queue;

/// Explores `f` with a preemption bound of 3.
fn check<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

fn id(s: &str) -> MessageId {
    MessageId::parse(s).expect("valid message id")
}

fn plain_chunk(message_id: MessageId, seq: u64, delta: &str) -> Item {
    Item::frame(ServerFrame::Chunk(Chunk {
        message_id,
        seq,
        delta: delta.to_owned(),
        from_seq: None,
        ts_ns: None,
    }))
}

/// Chunks `1..=n` of reply `m`, with distinct texts.
fn chunks(m: &str, n: u64) -> Vec<Item> {
    (1..=n)
        .map(|seq| plain_chunk(id(m), seq, &format!("<{m}{seq}>")))
        .collect()
}

fn start(m: &str) -> Item {
    Item::frame(ServerFrame::Start(Start {
        message_id: id(m),
        reply_to: id("u1"),
    }))
}

/// Pushes `items` in order, stopping at the first `Overflow` (the runtime then
/// reports a slow consumer and the connection closes). Returns every push's result.
fn produce(q: &OutQueue, items: Vec<Item>) -> Vec<(Item, Push)> {
    let mut results = Vec::new();
    for item in items {
        let push = q.push(item.clone());
        results.push((item, push));
        if push == Push::Overflow {
            break;
        }
    }
    results
}

fn accepted(results: &[(Item, Push)]) -> Vec<Item> {
    results
        .iter()
        .filter(|(_, push)| push.is_accepted())
        .map(|(item, _)| item.clone())
        .collect()
}

fn drain(q: &OutQueue) -> Vec<Item> {
    std::iter::from_fn(|| q.pop()).collect()
}

/// The exactness check shared by the models: `popped` (in pop order) delivers each
/// producer's `accepted` items exactly once and in order, and nothing else.
fn assert_delivered_exactly(accepted: &[Vec<Item>], popped: &[Item], merged_frames: u64) {
    let total: usize = accepted.iter().map(Vec::len).sum();
    assert_eq!(
        popped.len() as u64 + merged_frames,
        total as u64,
        "merged_frames counts the frames absorbed: {popped:?}"
    );
    let deltas: HashMap<(MessageId, u64), &str> = accepted
        .iter()
        .flatten()
        .filter_map(Item::chunk)
        .map(|c| ((c.message_id.clone(), c.seq), c.delta.as_str()))
        .collect();
    let mut expanded = Vec::new();
    for item in popped {
        match item.chunk() {
            Some(c) if c.from_seq.is_some() => {
                assert!(
                    matches!(item, Item::Merged(_)),
                    "only the queue merges, into frames of its own: {item:?}"
                );
                let first = c.first_seq();
                assert!(first < c.seq, "a merged frame covers several chunks: {c:?}");
                let mut text = String::new();
                for seq in first..=c.seq {
                    let delta = deltas
                        .get(&(c.message_id.clone(), seq))
                        .expect("a merged frame covers only accepted chunks");
                    text.push_str(delta);
                    expanded.push(plain_chunk(c.message_id.clone(), seq, delta));
                }
                assert_eq!(
                    text, c.delta,
                    "merged text is the concatenation, in seq order"
                );
            }
            _ => expanded.push(item.clone()),
        }
    }
    assert_eq!(
        expanded.len(),
        total,
        "nothing lost, nothing duplicated: {popped:?}"
    );
    for items in accepted {
        let delivered: Vec<&Item> = expanded.iter().filter(|i| items.contains(i)).collect();
        assert_eq!(delivered, items.iter().collect::<Vec<_>>(), "in push order");
    }
}

#[test]
fn two_producers_and_the_writer_never_lose_or_duplicate_a_chunk() {
    static MERGED: AtomicUsize = AtomicUsize::new(0);
    static OVERFLOWED: AtomicUsize = AtomicUsize::new(0);
    check(|| {
        // Capacity 2 with six chunks in flight: tail merges, compactions and overflows.
        let q = Arc::new(OutQueue::new(2));
        let producers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|m| {
                let q = q.clone();
                let items = chunks(m, 3);
                thread::spawn(move || produce(&q, items))
            })
            .collect();
        let writer = {
            let q = q.clone();
            thread::spawn(move || {
                (0..3)
                    .filter_map(|_| {
                        assert!(q.len() <= 2, "never more than capacity");
                        q.pop()
                    })
                    .collect::<Vec<_>>()
            })
        };
        let results: Vec<_> = producers
            .into_iter()
            .map(|p| p.join().expect("producer"))
            .collect();
        let mut popped = writer.join().expect("writer");
        popped.extend(drain(&q));

        for (_, push) in results.iter().flatten() {
            assert!(
                matches!(push, Push::Queued | Push::Merged | Push::Overflow),
                "{push:?}"
            );
            match push {
                Push::Merged => MERGED.fetch_add(1, Ordering::Relaxed),
                Push::Overflow => OVERFLOWED.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
        }
        let accepted: Vec<_> = results.iter().map(|r| accepted(r)).collect();
        assert_delivered_exactly(&accepted, &popped, q.merged_frames());
        assert!(!q.is_closed());
    });
    assert!(
        MERGED.load(Ordering::Relaxed) > 0,
        "the model exercises merging"
    );
    assert!(OVERFLOWED.load(Ordering::Relaxed) > 0, "and overflow");
}

#[test]
fn close_racing_producers_rejects_everything_after_close() {
    static RACED: AtomicUsize = AtomicUsize::new(0);
    for close_item in [true, false] {
        RACED.store(0, Ordering::Relaxed);
        check(move || {
            let q = Arc::new(OutQueue::new(2));
            let producer = {
                let q = q.clone();
                thread::spawn(move || produce(&q, chunks("a", 3)))
            };
            let closer = {
                let q = q.clone();
                thread::spawn(move || {
                    if close_item {
                        // A Close is accepted whatever the queue holds.
                        assert_eq!(q.push(Item::Close(CloseCode::GoingAway)), Push::Queued);
                    } else {
                        q.close();
                    }
                })
            };
            let writer = {
                let q = q.clone();
                thread::spawn(move || q.pop())
            };
            let results = producer.join().expect("producer");
            closer.join().expect("closer");
            let mut popped: Vec<Item> = writer.join().expect("writer").into_iter().collect();
            popped.extend(drain(&q));

            // Accepted pushes form a prefix; once Closed, every later push is Closed.
            let first_closed = results
                .iter()
                .position(|(_, push)| *push == Push::Closed)
                .unwrap_or(results.len());
            assert!(
                results[..first_closed].iter().all(|(_, p)| p.is_accepted()),
                "{results:?}"
            );
            assert!(
                results[first_closed..]
                    .iter()
                    .all(|(_, p)| *p == Push::Closed),
                "{results:?}"
            );
            if first_closed > 0 && first_closed < results.len() {
                RACED.fetch_add(1, Ordering::Relaxed);
            }

            // The Close item, when pushed, pops exactly once and last.
            let close_popped: Vec<usize> = popped
                .iter()
                .enumerate()
                .filter(|(_, item)| matches!(item, Item::Close(_)))
                .map(|(i, _)| i)
                .collect();
            if close_item {
                assert_eq!(close_popped, [popped.len() - 1], "{popped:?}");
                popped.pop();
            } else {
                assert!(close_popped.is_empty(), "{popped:?}");
            }
            assert_delivered_exactly(&[accepted(&results)], &popped, q.merged_frames());

            assert!(q.is_closed());
            assert_eq!(q.push(start("late")), Push::Closed);
            assert_eq!(q.pop(), None);
        });
        assert!(
            RACED.load(Ordering::Relaxed) > 0,
            "some interleaving accepts some chunks and rejects others (close_item = {close_item})"
        );
    }
}

#[test]
fn overflow_is_reported_not_swallowed_and_a_ping_is_never_refused() {
    static OVERFLOWED: AtomicUsize = AtomicUsize::new(0);
    static PING_FIRST: AtomicUsize = AtomicUsize::new(0);
    check(|| {
        // Capacity 1: a `start` of one reply and chunks of another cannot merge; a
        // ping takes no slot and goes before the frames.
        let q = Arc::new(OutQueue::new(1));
        let frames = {
            let q = q.clone();
            thread::spawn(move || {
                let results = produce(&q, vec![start("b")]);
                assert_eq!(q.push(Item::Ping), Push::Queued, "a ping is never refused");
                results
            })
        };
        let chunker = {
            let q = q.clone();
            thread::spawn(move || produce(&q, chunks("a", 2)))
        };
        let writer = {
            let q = q.clone();
            thread::spawn(move || {
                assert!(q.len() <= 1, "never more than capacity");
                q.pop()
            })
        };
        let frame_results = frames.join().expect("frames");
        let chunk_results = chunker.join().expect("chunker");
        let mut popped: Vec<Item> = writer.join().expect("writer").into_iter().collect();
        popped.extend(drain(&q));

        for (item, push) in frame_results.iter().chain(&chunk_results) {
            match push {
                Push::Overflow => {
                    OVERFLOWED.fetch_add(1, Ordering::Relaxed);
                }
                Push::Closed => panic!("nothing closed the queue: {item:?}"),
                Push::Queued | Push::Merged => {}
            }
        }
        // The ping pops exactly once, before any frame queued when it came.
        let pings = popped.iter().filter(|i| **i == Item::Ping).count();
        assert_eq!(pings, 1, "{popped:?}");
        if popped.first() == Some(&Item::Ping) {
            PING_FIRST.fetch_add(1, Ordering::Relaxed);
        }
        popped.retain(|i| *i != Item::Ping);
        assert_delivered_exactly(
            &[accepted(&frame_results), accepted(&chunk_results)],
            &popped,
            q.merged_frames(),
        );
    });
    assert!(
        OVERFLOWED.load(Ordering::Relaxed) > 0,
        "the model exercises overflow"
    );
    assert!(
        PING_FIRST.load(Ordering::Relaxed) > 0,
        "and a ping that passes queued frames"
    );
}

/// Wakes a loom thread (a waker for `block_on`).
struct Unpark(thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `f` on this loom thread until it is ready, parking while it is pending: a
/// wake-up that never comes parks the thread for good, which loom reports as a
/// deadlock. (loom's own `block_on` needs its `futures` feature.)
/// How many times `block_on` parked, over every model: the waiting is exercised.
static PARKED: AtomicUsize = AtomicUsize::new(0);

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
        PARKED.fetch_add(1, Ordering::Relaxed);
        thread::park();
    }
}

/// The writer's loop in the runtime (`ws.rs`): wait with `poll_take`, then take
/// everything queued with `take` before waiting again; ends at a `Close` item or when
/// the queue is closed and drained. Returns what it popped, the `Close` excluded.
fn writer_loop(q: &OutQueue) -> Vec<Item> {
    let mut popped = Vec::new();
    while let Some(first) = block_on(std::future::poll_fn(|cx| q.poll_take(cx))) {
        let mut next = Some(first);
        while let Some(Popped { item, .. }) = next {
            if let Item::Close(_) = item {
                assert_eq!(q.pop(), None, "a Close is the last item");
                return popped;
            }
            popped.push(item);
            next = q.take();
        }
    }
    popped
}

#[test]
fn a_waiting_writer_is_always_woken() {
    for close_item in [true, false] {
        check(move || {
            // Capacity 2 with four chunks from two producers: the writer waits on an
            // empty queue, is woken by pushes and merges, and must see every accepted
            // item and then the end. A lost wake-up leaves it parked forever, which
            // loom reports as a deadlock.
            let q = Arc::new(OutQueue::new(2));
            let producers: Vec<_> = ["a", "b"]
                .into_iter()
                .map(|m| {
                    let q = q.clone();
                    let items = chunks(m, 2);
                    thread::spawn(move || produce(&q, items))
                })
                .collect();
            let writer = {
                let q = q.clone();
                thread::spawn(move || writer_loop(&q))
            };
            let results: Vec<_> = producers
                .into_iter()
                .map(|p| p.join().expect("producer"))
                .collect();
            if close_item {
                assert_eq!(q.push(Item::Close(CloseCode::GoingAway)), Push::Queued);
            } else {
                q.close();
            }
            let popped = writer.join().expect("writer");
            let accepted: Vec<_> = results.iter().map(|r| accepted(r)).collect();
            assert_delivered_exactly(&accepted, &popped, q.merged_frames());
            assert_eq!(q.pop(), None);
        });
    }
    assert!(
        PARKED.load(Ordering::Relaxed) > 0,
        "the model exercises a waiting writer"
    );
}

#[test]
fn a_frame_shared_by_two_queues_reaches_both_unchanged() {
    static MERGED: AtomicUsize = AtomicUsize::new(0);
    check(|| {
        // One producer (the driver) pushes the same encoded chunks to two connections:
        // one that keeps up (capacity 4) and one that merges (capacity 1), each with its
        // own writer popping concurrently.
        let frames: Vec<Arc<Encoded>> = (1..=3)
            .map(|seq| {
                Arc::new(Encoded::new(ServerFrame::Chunk(Chunk {
                    message_id: id("a"),
                    seq,
                    delta: format!("<a{seq}>"),
                    from_seq: None,
                    ts_ns: None,
                })))
            })
            .collect();
        let roomy = Arc::new(OutQueue::new(4));
        let tight = Arc::new(OutQueue::new(1));
        let writers: Vec<_> = [roomy.clone(), tight.clone()]
            .into_iter()
            .map(|q| thread::spawn(move || q.pop()))
            .collect();
        let mut results = [Vec::new(), Vec::new()];
        for frame in &frames {
            for (q, results) in [&roomy, &tight].into_iter().zip(&mut results) {
                let item = Item::Frame(frame.clone());
                let push = q.push(item.clone());
                results.push((item, push));
            }
        }
        let mut popped: Vec<Vec<Item>> = writers
            .into_iter()
            .map(|w| w.join().expect("writer").into_iter().collect())
            .collect();
        for (q, popped) in [&roomy, &tight].into_iter().zip(&mut popped) {
            popped.extend(drain(q));
        }
        for ((q, results), popped) in [&roomy, &tight].into_iter().zip(&results).zip(&popped) {
            assert!(
                results.iter().all(|(_, push)| push.is_accepted()),
                "chunks of one reply always merge: {results:?}"
            );
            assert_delivered_exactly(&[accepted(results)], popped, q.merged_frames());
        }
        assert_eq!(roomy.merged_frames(), 0, "room: nothing merges");
        if tight.merged_frames() > 0 {
            MERGED.fetch_add(1, Ordering::Relaxed);
        }
        for (seq, frame) in (1..=3).zip(&frames) {
            let c = ServerFrame::Chunk(Chunk {
                message_id: id("a"),
                seq,
                delta: format!("<a{seq}>"),
                from_seq: None,
                ts_ns: None,
            });
            assert_eq!(frame.text(), &c.encode(), "a shared frame is never changed");
            assert_eq!(frame.frame(), &c);
        }
    });
    assert!(
        MERGED.load(Ordering::Relaxed) > 0,
        "the model exercises merging"
    );
}

#[test]
fn every_block_is_matched_by_one_drain_and_a_drained_queue_is_not_blocked() {
    static REBLOCKED: AtomicUsize = AtomicUsize::new(0);
    check(|| {
        // Capacity 4: blocked at 3 items, writable again at 1. Five chunks against a
        // writer that takes three meanwhile: the queue may block, drain and block again.
        // The producer (the driver) reports each block, the writer each drain; the
        // driver forwards a drain only if the queue is not blocked again by then.
        let q = Arc::new(OutQueue::new(4));
        // What the runtime hears of the drains (the writer's notice).
        let heard = std::sync::Arc::new(AtomicUsize::new(0));
        let notices = heard.clone();
        q.set_on_writable(Box::new(move || {
            notices.fetch_add(1, Ordering::Relaxed);
        }));
        let producer = {
            let q = q.clone();
            thread::spawn(move || {
                chunks("a", 5)
                    .into_iter()
                    .map(|item| {
                        let pushed = q.offer(item);
                        assert!(pushed.push.is_accepted(), "{pushed:?}");
                        usize::from(pushed.blocked)
                    })
                    .sum::<usize>()
            })
        };
        let writer = {
            let q = q.clone();
            thread::spawn(move || {
                (0..3)
                    .filter_map(|_| q.take())
                    .map(|p| {
                        if p.writable {
                            q.notify_writable();
                        }
                        usize::from(p.writable)
                    })
                    .sum::<usize>()
            })
        };
        let blocks = producer.join().expect("producer");
        let mut drains = writer.join().expect("writer");
        drains += std::iter::from_fn(|| q.take())
            .map(|p| {
                if p.writable {
                    q.notify_writable();
                }
                usize::from(p.writable)
            })
            .sum::<usize>();
        assert_eq!(blocks, drains, "each block is drained once, in turn");
        assert_eq!(
            heard.load(Ordering::Relaxed),
            drains,
            "the runtime hears each drain once"
        );
        assert!(!q.is_blocked(), "an empty queue is writable");
        if blocks > 1 {
            REBLOCKED.fetch_add(1, Ordering::Relaxed);
        }
    });
    assert!(
        REBLOCKED.load(Ordering::Relaxed) > 0,
        "the model exercises a queue that blocks again after a drain"
    );
    // (An interleaving where the writer keeps the queue below the mark blocks
    // never; that is fine too: then nothing waits for a drain.)
}
