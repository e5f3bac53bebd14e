//! Writes the store acknowledged and then lost: a Redis failover to a
//! replica that had not yet received the last writes (replication is
//! asynchronous). The store comes back with the same epoch, holding an
//! older state; the harness plays it by putting back a copy of the model
//! taken earlier (the replica).
//!
//! The owner finds out at its next append: the log ends before chunks it
//! was told were stored (`Gap`). It writes the lost chunks again from its
//! view when it holds them (the reply goes on exactly), else it ends the
//! reply `failed(store_lost)` with what the store holds. Either way no
//! reply streams forever.

use std::time::Duration;

use weir_core::ids::{ConnId, MessageId};
use weir_core::node::STORE_LOST;
use weir_core::store::Model;
use weir_core::wire::{MessageStatus, ReplyStatus, ServerFrame};
use weir_core::GeneratorEvent;
use weir_verification::harness::{World, WorldConfig};

fn two_nodes() -> World {
    World::new(&WorldConfig {
        nodes: 2,
        ..WorldConfig::default()
    })
}

fn start_reply(w: &mut World, conn: ConnId) -> MessageId {
    w.send_text(conn, r#"{"type":"chat","content":"hi"}"#);
    w.settle_queues();
    w.running_generators()
        .last()
        .map(|(_, id)| id.clone())
        .expect("a generator runs")
}

fn deltas(w: &mut World, id: &MessageId, deltas: &[&str]) {
    for d in deltas {
        w.generate(id, GeneratorEvent::Delta((*d).to_owned()));
        w.settle_queues();
    }
}

/// A reply of node 0 (`a` there, `b` on node 1 watching) with chunk 1,
/// `one `, which the replica got, and then `lost`, which it did not: the
/// world, the two connections, the reply and the replica's state.
fn replicated_then(lost: &[&str]) -> (World, ConnId, ConnId, MessageId, Model) {
    let mut w = two_nodes();
    let a = w.connect(0, "u1", "s1", None);
    let b = w.connect(1, "u1", "s1", None);
    w.settle_queues();
    let id = start_reply(&mut w, a);
    deltas(&mut w, &id, &["one "]);
    let replica = w.store.clone();
    deltas(&mut w, &id, lost);
    (w, a, b, id, replica)
}

/// Every chunk of `id` that `conn` got, as (seq, text) per seq, and its
/// `end`.
fn got(w: &World, conn: ConnId, id: &MessageId) -> (Vec<u64>, String, Option<ServerFrame>) {
    let mut seqs = Vec::new();
    let mut text = String::new();
    let mut end = None;
    for f in w.frames(conn) {
        match f {
            ServerFrame::Chunk(c) if &c.message_id == id => {
                seqs.extend(c.first_seq()..=c.seq);
                text.push_str(&c.delta);
            }
            ServerFrame::End(e) if &e.message_id == id => end = Some(f.clone()),
            _ => {}
        }
    }
    (seqs, text, end)
}

#[test]
fn chunks_lost_in_a_failover_are_written_again_by_their_owner_and_every_client_gets_each_once() {
    let (mut w, a, b, id, replica) = replicated_then(&["two ", "three "]);
    assert_eq!(got(&w, b, &id).0, [1, 2, 3], "b streamed chunks 1..=3");
    // The master dies; the replica, without chunks 2 and 3, takes over.
    w.store = replica;
    deltas(&mut w, &id, &["four"]);
    w.generate(&id, GeneratorEvent::Finished { usage: None });
    w.settle_queues();

    for conn in [a, b] {
        let (seqs, text, end) = got(&w, conn, &id);
        assert_eq!(seqs, [1, 2, 3, 4], "each chunk once, in order");
        assert_eq!(text, "one two three four");
        match end {
            Some(ServerFrame::End(e)) => {
                assert_eq!(e.status, ReplyStatus::Completed);
                assert_eq!(e.final_seq, 4);
            }
            f => panic!("{f:?}"),
        }
    }
    let hist = w.store.history(&w.clients[&a].conv);
    let reply = hist.last().expect("the reply in history");
    assert_eq!(
        reply.content, "one two three four",
        "the store has it all again"
    );
    // A late resume on the other node is exact.
    let late = w.connect(1, "u1", "s1", Some((id.clone(), 1)));
    w.settle_queues();
    let (seqs, text, end) = got(&w, late, &id);
    assert_eq!((seqs, text.as_str()), (vec![2, 3, 4], "two three four"));
    assert!(end.is_some());
}

#[test]
fn chunks_lost_in_a_failover_that_their_owner_no_longer_holds_end_the_reply_failed_store_lost() {
    let (mut w, a, b, id, replica) = replicated_then(&["two ", "three "]);
    // The owner's node has nobody left watching: it keeps no chunks.
    w.disconnect(a);
    w.settle_queues();
    w.store = replica;
    deltas(&mut w, &id, &["four"]);
    w.generate(&id, GeneratorEvent::Finished { usage: None });
    w.settle_queues();

    assert!(
        w.running_generators().is_empty(),
        "the generator was stopped"
    );
    let (seqs, _, end) = got(&w, b, &id);
    assert_eq!(seqs, [1, 2, 3], "what b had streamed, once");
    match end {
        Some(ServerFrame::End(e)) => {
            assert_eq!(e.status, ReplyStatus::Failed);
            assert_eq!(e.reason.as_deref(), Some(STORE_LOST));
            assert_eq!(e.final_seq, 1, "what the store holds");
        }
        f => panic!("an explicit end: {f:?}"),
    }
    let hist = w.store.history(&w.clients[&b].conv);
    let reply = hist.last().expect("the reply in history");
    assert_eq!(reply.content, "one ");
    assert_eq!(reply.status, MessageStatus::Failed);
}

/// The failover loses the reply's last chunks and nothing more is appended:
/// the settle finds the log short (`Gap`), not a shorter reply to settle.
#[test]
fn the_last_chunks_lost_in_a_failover_are_written_again_before_the_settle() {
    let (mut w, a, b, id, replica) = replicated_then(&["two ", "three"]);
    w.store = replica;
    w.generate(&id, GeneratorEvent::Finished { usage: None });
    w.settle_queues();

    for conn in [a, b] {
        let (seqs, text, end) = got(&w, conn, &id);
        assert_eq!(seqs, [1, 2, 3], "each chunk once, in order");
        assert_eq!(text, "one two three");
        match end {
            Some(ServerFrame::End(e)) => {
                assert_eq!(e.status, ReplyStatus::Completed);
                assert_eq!(e.final_seq, 3, "not the 1 the replica had");
            }
            f => panic!("{f:?}"),
        }
    }
    let hist = w.store.history(&w.clients[&a].conv);
    assert_eq!(
        hist.last().map(|m| m.content.as_str()),
        Some("one two three")
    );
}

/// As above, with nobody left on the owner's node to hold the lost chunks:
/// the reply ends `failed(store_lost)` at what the store holds, once.
#[test]
fn the_last_chunks_lost_in_a_failover_and_no_longer_held_end_the_reply_failed_at_the_settle() {
    let (mut w, a, b, id, replica) = replicated_then(&["two ", "three"]);
    w.disconnect(a);
    w.settle_queues();
    w.store = replica;
    w.generate(&id, GeneratorEvent::Finished { usage: None });
    w.settle_queues();

    let (seqs, _, end) = got(&w, b, &id);
    assert_eq!(seqs, [1, 2, 3], "what b had streamed, once");
    match end {
        Some(ServerFrame::End(e)) => {
            assert_eq!(e.status, ReplyStatus::Failed);
            assert_eq!(e.reason.as_deref(), Some(STORE_LOST));
            assert_eq!(e.final_seq, 1, "what the store holds");
        }
        f => panic!("an explicit end: {f:?}"),
    }
}

/// The failover loses the reply's start itself (the replica never had its
/// record): the owner's next append is answered `missing` and it stops; every
/// client gets an explicit end, `failed(store_lost)`, after the chunks it
/// had — the other node's when its watch of the silent reply reads it (2 s
/// of this world's time) — and no reply streams on. (The user's turn is lost with the start:
/// nothing in the store remembers it.)
#[test]
fn a_start_lost_in_a_failover_ends_the_reply_failed_store_lost_for_every_client() {
    let mut w = two_nodes();
    let a = w.connect(0, "u1", "s1", None);
    let b = w.connect(1, "u1", "s1", None);
    w.settle_queues();
    let replica = w.store.clone();
    let id = start_reply(&mut w, a);
    deltas(&mut w, &id, &["one "]);
    w.store = replica;
    deltas(&mut w, &id, &["two"]);
    w.generate(&id, GeneratorEvent::Finished { usage: None });
    w.settle_queues();
    // Node 1 hears nothing more of it: its watch of the reply finds it.
    let before = w.elapsed_ms();
    for _ in 0..120 {
        if got(&w, b, &id).2.is_some() {
            break;
        }
        w.run_for(Duration::from_millis(500), Duration::from_millis(100));
    }
    eprintln!(
        "node 1 ended it {} ms (virtual) later",
        w.elapsed_ms() - before
    );

    assert!(
        w.running_generators().is_empty(),
        "the generator was stopped"
    );
    for conn in [a, b] {
        let (seqs, text, end) = got(&w, conn, &id);
        assert_eq!(
            (seqs, text.as_str()),
            (vec![1], "one "),
            "what it had, once"
        );
        match end {
            Some(ServerFrame::End(e)) => {
                assert_eq!(e.status, ReplyStatus::Failed);
                assert_eq!(e.reason.as_deref(), Some(STORE_LOST));
                assert_eq!(e.final_seq, 1);
            }
            f => panic!(
                "conn {conn:?}: an explicit end: {f:?}\n{:#?}",
                w.frames(conn)
            ),
        }
    }
    assert!(
        w.store.history(&w.clients[&a].conv).is_empty(),
        "the store remembers neither turn"
    );
}
