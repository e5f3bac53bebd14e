//! Loom models of the per-connection outbound queue (`weir_runtime_tokio::queue`).
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

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use loom::thread;
use weir_core::ids::MessageId;
use weir_core::wire::{Chunk, CloseCode, ServerFrame, Start};

use queue::{Item, OutQueue, Push};
use sync::Arc;

/// The loom counterpart of `runtime-tokio/src/sync.rs`.
mod sync {
    pub(crate) use loom::sync::{Arc, Mutex};

    /// Runs a unit test of `queue.rs` as a loom model.
    pub(crate) fn model<F>(f: F)
    where
        F: Fn() + Sync + Send + 'static,
    {
        loom::model(f);
    }
}

// The module's items are `pub` for the runtime crate; here the module is private.
#[allow(unreachable_pub)]
#[path = "../../runtime-tokio/src/queue.rs"]
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
    Item::Frame(ServerFrame::Chunk(Chunk {
        message_id,
        seq,
        delta: delta.to_owned(),
        from_seq: None,
    }))
}

/// Chunks `1..=n` of reply `m`, with distinct texts.
fn chunks(m: &str, n: u64) -> Vec<Item> {
    (1..=n)
        .map(|seq| plain_chunk(id(m), seq, &format!("<{m}{seq}>")))
        .collect()
}

fn start(m: &str) -> Item {
    Item::Frame(ServerFrame::Start(Start {
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
        .filter_map(|item| match item {
            Item::Frame(ServerFrame::Chunk(c)) => {
                Some(((c.message_id.clone(), c.seq), c.delta.as_str()))
            }
            _ => None,
        })
        .collect();
    let mut expanded = Vec::new();
    for item in popped {
        match item {
            Item::Frame(ServerFrame::Chunk(c)) if c.from_seq.is_some() => {
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
            other => expanded.push(other.clone()),
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
fn overflow_is_reported_not_swallowed() {
    static OVERFLOWED: AtomicUsize = AtomicUsize::new(0);
    static DROPPED: AtomicUsize = AtomicUsize::new(0);
    check(|| {
        // Capacity 1: a `start` of one reply and chunks of another cannot merge.
        let q = Arc::new(OutQueue::new(1));
        let frames = {
            let q = q.clone();
            thread::spawn(move || produce(&q, vec![start("b"), Item::Ping]))
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
            match (item, push) {
                (Item::Ping, Push::Overflow) => panic!("a ping is never an overflow"),
                (Item::Ping, Push::Dropped) => {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
                (Item::Frame(_), Push::Dropped) => panic!("only a ping is dropped"),
                (_, Push::Overflow) => {
                    OVERFLOWED.fetch_add(1, Ordering::Relaxed);
                }
                (_, Push::Closed) => panic!("nothing closed the queue"),
                _ => {}
            }
        }
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
    assert!(DROPPED.load(Ordering::Relaxed) > 0, "and dropped pings");
}
