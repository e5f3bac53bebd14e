//! Hand-written scenarios through the harness: each names the behaviour it shows.

use std::time::Duration;

use weir_core::ids::{ConnId, MessageId};
use weir_core::store::StoreOp;
use weir_core::wire::{CancelStatus, ErrorCode, ReplyStatus, ServerFrame};
use weir_core::GeneratorEvent;
use weir_verification::check::Checker;
use weir_verification::harness::{World, WorldConfig};

fn world() -> World {
    World::new(&WorldConfig::default())
}

fn settle(w: &mut World, c: &mut Checker) {
    w.settle_queues();
    if let Err(v) = c.check(w) {
        panic!(
            "{v}\n{:?}",
            w.clients
                .iter()
                .map(|(k, c)| (k, c.frames.iter().map(|f| f.encode()).collect::<Vec<_>>()))
                .collect::<Vec<_>>()
        );
    }
}

fn kinds(w: &World, conn: ConnId) -> Vec<&'static str> {
    w.frames(conn).iter().map(ServerFrame::kind).collect()
}

fn reply_id(w: &World) -> MessageId {
    w.running_generators()
        .first()
        .map(|(_, id)| id.clone())
        .expect("a generator runs")
}

#[test]
fn chat_streams_and_completes_with_history() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    assert_eq!(kinds(&w, a), ["hello", "history"]);
    w.send_text(a, r#"{"type":"chat","content":"hi","request_id":"r1"}"#);
    settle(&mut w, &mut c);
    let id = reply_id(&w);
    for d in ["Hel", "lo", "!"] {
        w.generate(&id, GeneratorEvent::Delta(d.into()));
        settle(&mut w, &mut c);
    }
    w.generate(&id, GeneratorEvent::Finished { usage: None });
    settle(&mut w, &mut c);
    assert_eq!(
        kinds(&w, a),
        [
            "hello",
            "history",
            "ack",
            "user_message",
            "start",
            "chunk",
            "chunk",
            "chunk",
            "end"
        ]
    );
    let hist = w.store.history(&w.clients[&a].conv);
    assert_eq!(hist.len(), 2);
    assert_eq!(hist[1].content, "Hello!");
    c.check_quiescent(&w).unwrap();
}

#[test]
fn cancel_fences_later_chunks() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    let b = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    w.send_text(a, r#"{"type":"chat","content":"hi"}"#);
    settle(&mut w, &mut c);
    let id = reply_id(&w);
    w.generate(&id, GeneratorEvent::Delta("one".into()));
    settle(&mut w, &mut c);
    w.send_text(
        b,
        &format!(r#"{{"type":"cancel","message_id":"{id}","request_id":"c1"}}"#),
    );
    // The generator keeps producing before it learns of the cancel.
    w.generate(&id, GeneratorEvent::Delta("two".into()));
    settle(&mut w, &mut c);
    w.generate(&id, GeneratorEvent::Delta("three".into()));
    settle(&mut w, &mut c);
    assert!(w.nodes[0].aborted.contains(&id));
    let cr = w.frames(b).iter().find_map(|f| match f {
        ServerFrame::CancelResult(cr) => Some(cr.clone()),
        _ => None,
    });
    assert_eq!(
        cr.as_ref().map(|c| c.status),
        Some(CancelStatus::Cancelled),
        "{:?}",
        w.frames(b).iter().map(|f| f.encode()).collect::<Vec<_>>()
    );
    for conn in [a, b] {
        let end = w.frames(conn).iter().find_map(|f| match f {
            ServerFrame::End(e) => Some(e.clone()),
            _ => None,
        });
        assert_eq!(
            end.map(|e| e.status),
            Some(ReplyStatus::Cancelled),
            "{:?}",
            w.frames(conn)
                .iter()
                .map(|f| f.encode())
                .collect::<Vec<_>>()
        );
    }
    // Repeated cancel: still cancelled.
    w.send_text(a, &format!(r#"{{"type":"cancel","message_id":"{id}"}}"#));
    settle(&mut w, &mut c);
    assert!(
        matches!(w.frames(a).last(), Some(ServerFrame::CancelResult(cr)) if cr.status == CancelStatus::Cancelled)
    );
    c.check_quiescent(&w).unwrap();
}

#[test]
fn cancel_right_after_chat_before_any_chunk() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    w.send_text(a, r#"{"type":"chat","content":"hi"}"#);
    w.send_text(a, r#"{"type":"cancel","request_id":"x"}"#);
    settle(&mut w, &mut c);
    assert!(w.running_generators().is_empty(), "the generator never ran");
    let k = kinds(&w, a);
    assert!(k.contains(&"cancel_result") && k.contains(&"end"), "{k:?}");
    c.check_quiescent(&w).unwrap();
}

#[test]
fn cancel_after_completion_answers_completed_then_not_found_after_grace() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    w.send_text(a, r#"{"type":"chat","content":"hi"}"#);
    settle(&mut w, &mut c);
    let id = reply_id(&w);
    w.generate(&id, GeneratorEvent::Delta("x".into()));
    w.generate(&id, GeneratorEvent::Finished { usage: None });
    settle(&mut w, &mut c);
    w.send_text(a, &format!(r#"{{"type":"cancel","message_id":"{id}"}}"#));
    settle(&mut w, &mut c);
    assert!(
        matches!(w.frames(a).last(), Some(ServerFrame::CancelResult(cr)) if cr.status == CancelStatus::Completed)
    );
    w.run_for(Duration::from_secs(31), Duration::from_secs(5));
    w.send_text(a, &format!(r#"{{"type":"cancel","message_id":"{id}"}}"#));
    settle(&mut w, &mut c);
    assert!(
        matches!(w.frames(a).last(), Some(ServerFrame::CancelResult(cr)) if cr.status == CancelStatus::NotFound)
    );
}

#[test]
fn late_joiner_gets_snapshot_then_continuation() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    w.send_text(a, r#"{"type":"chat","content":"hi"}"#);
    settle(&mut w, &mut c);
    let id = reply_id(&w);
    w.generate(&id, GeneratorEvent::Delta("ab".into()));
    settle(&mut w, &mut c);
    let b = w.connect(0, "u1", "s1", None);
    w.generate(&id, GeneratorEvent::Delta("cd".into()));
    settle(&mut w, &mut c);
    w.generate(&id, GeneratorEvent::Finished { usage: None });
    settle(&mut w, &mut c);
    assert_eq!(kinds(&w, b), ["hello", "history", "chunk", "end"]);
    c.check_quiescent(&w).unwrap();
}

#[test]
fn resume_delivers_exactly_the_missing_chunks() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    w.send_text(a, r#"{"type":"chat","content":"hi"}"#);
    settle(&mut w, &mut c);
    let id = reply_id(&w);
    for d in ["1", "2", "3"] {
        w.generate(&id, GeneratorEvent::Delta(d.into()));
        settle(&mut w, &mut c);
    }
    w.disconnect(a);
    settle(&mut w, &mut c);
    w.generate(&id, GeneratorEvent::Delta("4".into()));
    settle(&mut w, &mut c);
    let b = w.connect(0, "u1", "s1", Some((id.clone(), 1)));
    settle(&mut w, &mut c);
    w.generate(&id, GeneratorEvent::Finished { usage: None });
    settle(&mut w, &mut c);
    // The seqs the chunk frames cover (the log's 2 and 3 and the live 4 were
    // all there at the resume: one merged frame).
    let seqs: Vec<u64> = w
        .frames(b)
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Chunk(ch) => Some(ch.first_seq()..=ch.seq),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(seqs, [2, 3, 4]);
    assert_eq!(kinds(&w, b).last(), Some(&"end"));
    c.check_quiescent(&w).unwrap();
}

#[test]
fn failed_early_cancel_lets_the_reply_go_on() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    w.send_text(a, r#"{"type":"chat","content":"hi"}"#);
    w.send_text(a, r#"{"type":"cancel"}"#);
    assert!(w.apply_op(0));
    assert!(w.deliver_reply(0));
    assert_eq!(w.ops.len(), 1, "{:?}", w.ops);
    assert!(w.fail_op(0));
    settle(&mut w, &mut c);
    let id = reply_id(&w);
    w.generate(&id, GeneratorEvent::Finished { usage: None });
    settle(&mut w, &mut c);
    let k = kinds(&w, a);
    assert_eq!(k.last(), Some(&"end"), "{k:?}");
    assert!(
        k.contains(&"error"),
        "the cancel answered unavailable: {k:?}"
    );
    c.check_quiescent(&w).unwrap();
}

#[test]
fn sender_gets_ack_then_its_user_message_with_request_id_even_if_the_notice_wins() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    w.send_text(a, r#"{"type":"chat","content":"hi","request_id":"r9"}"#);
    assert!(w.apply_op(0));
    // Pub/sub is faster than the command's reply.
    assert!(w.deliver_notice(0));
    assert!(w.deliver_reply(0));
    settle(&mut w, &mut c);
    let frames: Vec<String> = w
        .frames(a)
        .iter()
        .skip(2)
        .take(2)
        .map(ServerFrame::encode)
        .collect();
    assert!(
        frames[0].starts_with(r#"{"type":"ack","request_id":"r9""#),
        "{frames:?}"
    );
    assert!(
        frames[1].contains(r#""request_id":"r9""#) && frames[1].contains("user_message"),
        "{frames:?}"
    );
}

#[test]
fn cancel_to_quiet_latency_is_measured_until_the_held_answer_goes_out() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    w.send_text(a, r#"{"type":"chat","content":"hi"}"#);
    settle(&mut w, &mut c);
    let id = reply_id(&w);
    w.generate(&id, GeneratorEvent::Delta("one".into()));
    // The chunk is at the store, not yet acknowledged, when the cancel comes.
    w.send_text(a, &format!(r#"{{"type":"cancel","message_id":"{id}"}}"#));
    w.advance(Duration::from_millis(30));
    settle(&mut w, &mut c);
    let latency = w.nodes[0].events.iter().find_map(|e| match e {
        weir_core::Event::CancelAnswered {
            status, latency, ..
        } => Some((*status, *latency)),
        _ => None,
    });
    assert_eq!(
        latency,
        Some((CancelStatus::Cancelled, Duration::from_millis(30)))
    );
    c.check_quiescent(&w).unwrap();
}

#[test]
fn a_store_reply_not_understood_is_told_internal_not_unavailable() {
    let mut w = world();
    let a = w.connect(0, "u1", "s1", None);
    let k = w
        .ops
        .iter()
        .position(|o| matches!(o.request, StoreOp::Snapshot(_)))
        .expect("the connection asks for its snapshot");
    assert!(w.misread_op(k));
    w.settle_queues();
    let errors: Vec<(ErrorCode, &str)> = w
        .frames(a)
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Error(e) => Some((e.code, e.message.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, ErrorCode::Internal);
    assert!(!errors[0].1.contains("cannot be reached"), "{errors:?}");
}

#[test]
fn a_full_store_ends_the_streaming_reply_failed_store_full_on_every_node_and_answers_chats_and_cancels_store_full(
) {
    let mut w = World::new(&WorldConfig {
        nodes: 2,
        ..WorldConfig::default()
    });
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    let b = w.connect(1, "u1", "s1", None);
    settle(&mut w, &mut c);
    w.send_text(a, r#"{"type":"chat","content":"hi"}"#);
    settle(&mut w, &mut c);
    let id = reply_id(&w);
    w.generate(&id, GeneratorEvent::Delta("one".into()));
    settle(&mut w, &mut c);
    // The store fills up: the next append is refused.
    w.generate(&id, GeneratorEvent::Delta("two".into()));
    w.settle_queues_full();
    c.check(&w).unwrap();
    assert!(
        w.running_generators().is_empty(),
        "the generator was stopped"
    );
    for conn in [a, b] {
        let end = w.frames(conn).iter().find_map(|f| match f {
            ServerFrame::End(e) => Some(e),
            _ => None,
        });
        let end = end.unwrap_or_else(|| panic!("no end on {conn:?}: {:?}", kinds(&w, conn)));
        assert_eq!(end.status, ReplyStatus::Failed, "{end:?}");
        assert_eq!(end.reason.as_deref(), Some("store_full"), "{end:?}");
        assert_eq!(end.final_seq, 1, "the refused chunk is not in it");
    }
    // While it is full, a chat and a cancel are answered `store_full`.
    w.send_text(a, r#"{"type":"chat","content":"again","request_id":"r2"}"#);
    w.send_text(b, r#"{"type":"cancel","request_id":"c1"}"#);
    w.settle_queues_full();
    c.check(&w).unwrap();
    for (conn, rid) in [(a, "r2"), (b, "c1")] {
        let error = w.frames(conn).iter().find_map(|f| match f {
            ServerFrame::Error(e) => Some(e),
            _ => None,
        });
        let error = error.unwrap_or_else(|| panic!("no error on {conn:?}"));
        assert_eq!(error.code, ErrorCode::StoreFull, "{error:?}");
        assert_eq!(error.request_id.as_ref().map(|r| r.as_str()), Some(rid));
        assert!(!error.message.contains("cannot be reached"), "{error:?}");
    }
    // Once it takes writes again, a chat completes.
    w.send_text(a, r#"{"type":"chat","content":"later"}"#);
    settle(&mut w, &mut c);
    let id = reply_id(&w);
    w.generate(&id, GeneratorEvent::Finished { usage: None });
    settle(&mut w, &mut c);
    assert_eq!(kinds(&w, b).last(), Some(&"end"));
    c.check_quiescent(&w).unwrap();
}
