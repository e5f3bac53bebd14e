//! The session machine, presence, bad input, resume edge cases and shutdown,
//! through the harness. Each test names the behaviour it shows.

use std::time::Duration;

use weir_core::ids::{ConnId, MessageId, UserId};
use weir_core::session::ConnState;
use weir_core::store::{Notice, StoreOp};
use weir_core::stream::OWNER_LOST;
use weir_core::wire::{
    CloseCode, ErrorCode, MessageStatus, PresenceStatus, ReplyStatus, ResumeUnavailableReason,
    ServerFrame,
};
use weir_core::GeneratorEvent;
use weir_verification::check::Checker;
use weir_verification::harness::{InFlightOp, World, WorldConfig};

fn world() -> World {
    World::new(&WorldConfig::default())
}

fn settle(w: &mut World, c: &mut Checker) {
    w.settle_queues();
    if let Err(v) = c.check(w) {
        panic!("{v}");
    }
}

fn last(w: &World, conn: ConnId) -> ServerFrame {
    w.frames(conn).last().cloned().expect("a frame")
}

fn error_code(f: &ServerFrame) -> Option<ErrorCode> {
    match f {
        ServerFrame::Error(e) => Some(e.code),
        _ => None,
    }
}

/// Two nodes, and a connection to each in one conversation (`a` on node 0,
/// `b` on node 1), both open.
fn two_nodes() -> (World, Checker) {
    let w = World::new(&WorldConfig {
        nodes: 2,
        ..WorldConfig::default()
    });
    (w, Checker::new())
}

/// Two nodes, and `a` of u1's conversation s1 open on node 0.
fn two_nodes_one_connection_on_node_0() -> (World, Checker, ConnId) {
    let (mut w, mut c) = two_nodes();
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    (w, c, a)
}

fn two_nodes_watching_one_conversation() -> (World, Checker, ConnId, ConnId) {
    let (mut w, mut c) = two_nodes();
    let a = w.connect(0, "u1", "s1", None);
    let b = w.connect(1, "u1", "s1", None);
    settle(&mut w, &mut c);
    (w, c, a, b)
}

fn start_reply(w: &mut World, c: &mut Checker, conn: ConnId) -> MessageId {
    w.send_text(conn, r#"{"type":"chat","content":"hi"}"#);
    settle(w, c);
    w.running_generators()
        .last()
        .map(|(_, id)| id.clone())
        .expect("a generator runs")
}

#[test]
fn heartbeat_pings_and_idle_deadline_closes_with_4000() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    // Quiet for 45 s: pings every 15 s, still open (the idle deadline is 60 s).
    w.run_for(Duration::from_secs(45), Duration::from_secs(1));
    assert_eq!(w.clients[&a].pings, 3);
    assert_eq!(w.nodes[0].node.conn_state(a), Some(ConnState::Open));
    // A pong (activity) moves the idle deadline.
    w.input(0, weir_core::Input::Activity { conn: a });
    w.run_for(Duration::from_secs(45), Duration::from_secs(1));
    assert_eq!(w.clients[&a].closed, None);
    w.run_for(Duration::from_secs(20), Duration::from_secs(1));
    assert_eq!(w.clients[&a].closed, Some(CloseCode::IdleTimeout));
    assert_eq!(w.nodes[0].node.conn_state(a), None, "released");
}

#[test]
fn json_ping_gets_pong_with_the_same_id() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    w.send_text(a, r#"{"type":"ping","id":"p-7"}"#);
    assert_eq!(last(&w, a).encode(), r#"{"type":"pong","id":"p-7"}"#);
}

#[test]
fn frames_sent_before_hello_are_answered_after_it() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    w.send_text(a, r#"{"type":"ping","id":1}"#);
    settle(&mut w, &mut c);
    let kinds: Vec<_> = w.frames(a).iter().map(ServerFrame::kind).collect();
    assert_eq!(kinds, ["hello", "history", "pong"]);
}

#[test]
fn bad_frames_get_specific_errors_and_the_connection_stays_usable() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    let other = w.connect(0, "u2", "s1", None);
    settle(&mut w, &mut c);
    let cases = [
        ("{not json", ErrorCode::BadRequest),
        (r#"{"type":"dance"}"#, ErrorCode::BadRequest),
        (r#"{"type":"chat"}"#, ErrorCode::BadRequest),
        (
            r#"{"type":"resume","message_id":"m","after_seq":"x"}"#,
            ErrorCode::BadRequest,
        ),
        (r#"{"type":"chat","content":"   "}"#, ErrorCode::BadRequest),
    ];
    for (text, code) in cases {
        w.send_text(a, text);
        assert_eq!(error_code(&last(&w, a)), Some(code), "{text}");
    }
    let long = format!(
        r#"{{"type":"chat","content":"{}","request_id":"big"}}"#,
        "x".repeat(40_000)
    );
    w.send_text(a, &long);
    match last(&w, a) {
        ServerFrame::Error(e) => {
            assert_eq!(e.code, ErrorCode::TooLarge);
            assert_eq!(e.request_id.map(|r| r.to_string()), Some("big".into()));
        }
        f => panic!("{f:?}"),
    }
    // Still usable, and the other user saw nothing.
    let id = start_reply(&mut w, &mut c, a);
    w.generate(&id, GeneratorEvent::Finished { usage: None });
    settle(&mut w, &mut c);
    assert!(matches!(last(&w, a), ServerFrame::End(_)));
    assert_eq!(w.frames(other).len(), 2, "hello and history only");
    assert_eq!(w.clients[&a].closed, None);
}

#[test]
fn oversized_frame_closes_with_1009_and_spares_others() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    let b = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    let huge = format!(r#"{{"type":"chat","content":"{}"}}"#, "x".repeat(70_000));
    w.send_text(a, &huge);
    assert_eq!(error_code(&last(&w, a)), Some(ErrorCode::TooLarge));
    assert_eq!(w.clients[&a].closed, Some(CloseCode::TooLarge));
    let id = start_reply(&mut w, &mut c, b);
    w.generate(&id, GeneratorEvent::Finished { usage: None });
    settle(&mut w, &mut c);
    assert!(matches!(last(&w, b), ServerFrame::End(_)));
}

#[test]
fn second_chat_while_streaming_is_busy() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    let b = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    let _ = start_reply(&mut w, &mut c, a);
    w.send_text(b, r#"{"type":"chat","content":"me too","request_id":"r2"}"#);
    settle(&mut w, &mut c);
    match last(&w, b) {
        ServerFrame::Error(e) => {
            assert_eq!(e.code, ErrorCode::Busy);
            assert_eq!(e.request_id.map(|r| r.to_string()), Some("r2".into()));
        }
        f => panic!("{f:?}"),
    }
}

#[test]
fn replayed_client_message_id_returns_the_same_ack_and_no_second_reply() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    let chat = r#"{"type":"chat","content":"hi","client_message_id":"k1"}"#;
    w.send_text(a, chat);
    settle(&mut w, &mut c);
    let acks = |w: &World| -> Vec<(String, String)> {
        w.frames(a)
            .iter()
            .filter_map(|f| match f {
                ServerFrame::Ack(k) => {
                    Some((k.user_message_id.to_string(), k.message_id.to_string()))
                }
                _ => None,
            })
            .collect()
    };
    // While streaming, and after it ended: the same ack, no new reply.
    w.send_text(a, chat);
    settle(&mut w, &mut c);
    let id = w.running_generators()[0].1.clone();
    w.generate(&id, GeneratorEvent::Finished { usage: None });
    settle(&mut w, &mut c);
    w.send_text(a, chat);
    settle(&mut w, &mut c);
    let got = acks(&w);
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|k| *k == got[0]));
    assert!(w.running_generators().is_empty());
    assert_eq!(w.store.history(&w.clients[&a].conv).len(), 2);
}

#[test]
fn another_users_reply_is_not_found() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    let eve = w.connect(0, "eve", "s1", None);
    settle(&mut w, &mut c);
    let id = start_reply(&mut w, &mut c, a);
    w.send_text(eve, &format!(r#"{{"type":"cancel","message_id":"{id}"}}"#));
    settle(&mut w, &mut c);
    assert_eq!(
        last(&w, eve).encode(),
        r#"{"type":"cancel_result","message_id":null,"status":"not_found"}"#
    );
    // Resuming it is no better.
    w.send_text(
        eve,
        &format!(r#"{{"type":"resume","message_id":"{id}","after_seq":0}}"#),
    );
    settle(&mut w, &mut c);
    match last(&w, eve) {
        ServerFrame::ResumeUnavailable(r) => assert_eq!(r.reason, ResumeUnavailableReason::Unknown),
        f => panic!("{f:?}"),
    }
    assert_eq!(w.running_generators().len(), 1, "the reply goes on");
}

#[test]
fn resume_after_the_grace_window_is_unavailable_with_the_final_text() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    let id = start_reply(&mut w, &mut c, a);
    w.generate(&id, GeneratorEvent::Delta("all".into()));
    w.generate(&id, GeneratorEvent::Finished { usage: None });
    settle(&mut w, &mut c);
    w.run_for(Duration::from_secs(31), Duration::from_secs(1));
    let b = w.connect(0, "u1", "s1", Some((id.clone(), 0)));
    settle(&mut w, &mut c);
    match last(&w, b) {
        ServerFrame::ResumeUnavailable(r) => {
            assert_eq!(r.reason, ResumeUnavailableReason::Expired);
            assert_eq!(r.snapshot.map(|m| m.content), Some("all".into()));
        }
        f => panic!("{f:?}"),
    }
}

#[test]
fn resume_across_a_store_restart_is_epoch_changed() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    let id = start_reply(&mut w, &mut c, a);
    w.generate(&id, GeneratorEvent::Delta("one".into()));
    settle(&mut w, &mut c);
    assert_eq!(w.nodes[0].node.owned_replies().collect::<Vec<_>>(), [&id]);
    assert_eq!(w.nodes[0].node.connection_count(), 1);
    w.disconnect(a);
    settle(&mut w, &mut c);
    assert_eq!(w.nodes[0].node.connection_count(), 0);
    w.store.restart(2);
    let b = w.connect(0, "u1", "s1", Some((id.clone(), 1)));
    settle(&mut w, &mut c);
    match last(&w, b) {
        ServerFrame::ResumeUnavailable(r) => {
            assert_eq!(r.reason, ResumeUnavailableReason::EpochChanged);
        }
        f => panic!("{f:?}"),
    }
    // The producer learns at its next write that the reply is gone.
    w.generate(&id, GeneratorEvent::Delta("two".into()));
    settle(&mut w, &mut c);
    assert!(w.nodes[0].aborted.contains(&id));
    assert_eq!(w.nodes[0].node.owned_replies().count(), 0);
}

#[test]
fn presence_reconnect_inside_debounce_does_not_go_offline() {
    let mut w = world();
    let mut c = Checker::new();
    let user = UserId::parse("u1").expect("valid");
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    assert_eq!(w.store.presence(&user), (PresenceStatus::Online, 1));
    w.disconnect(a);
    settle(&mut w, &mut c);
    w.run_for(Duration::from_secs(2), Duration::from_millis(500));
    let _b = w.connect(0, "u1", "s2", None);
    // Never offline in between, nor after: sampled every half second.
    for _ in 0..20 {
        w.run_for(Duration::from_millis(500), Duration::from_millis(500));
        assert_eq!(w.store.presence(&user), (PresenceStatus::Online, 1));
    }
}

#[test]
fn presence_goes_offline_after_the_debounce() {
    let mut w = world();
    let mut c = Checker::new();
    let user = UserId::parse("u1").expect("valid");
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    w.disconnect(a);
    settle(&mut w, &mut c);
    w.run_for(Duration::from_secs(4), Duration::from_millis(500));
    assert_eq!(
        w.store.presence(&user).0,
        PresenceStatus::Online,
        "lingering"
    );
    w.run_for(Duration::from_secs(2), Duration::from_millis(500));
    assert_eq!(w.store.presence(&user), (PresenceStatus::Offline, 0));
}

#[test]
fn a_dead_owners_reply_is_reaped_for_viewers_on_another_node() {
    let (w, c, a, b) = two_nodes_watching_one_conversation();
    dead_owners_reply_reaped_for_a_viewer(w, c, a, b);
}

/// The watch's re-read reaps a dead owner's reply by itself: with the sweep
/// every 20 s (the longest the presence expiry of 30 s allows), the viewer on
/// the other node still gets `end` `owner_lost` within the lease plus one
/// watch period, not at the next sweep.
#[test]
fn the_watch_alone_reaps_a_dead_owners_reply_when_the_sweep_is_far_off() {
    let mut w = World::tuned(
        &WorldConfig {
            nodes: 2,
            ..WorldConfig::default()
        },
        |c| c.housekeeping = Duration::from_secs(20),
    );
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    let b = w.connect(1, "u1", "s1", None);
    settle(&mut w, &mut c);
    dead_owners_reply_reaped_for_a_viewer(w, c, a, b);
}

/// `a` (node 0) starts a reply, one chunk, then node 0 dies: `b` (node 1)
/// gets `end` `failed` `owner_lost` at seq 1, 10–12.5 s later.
fn dead_owners_reply_reaped_for_a_viewer(mut w: World, mut c: Checker, a: ConnId, b: ConnId) {
    let id = start_reply(&mut w, &mut c, a);
    w.generate(&id, GeneratorEvent::Delta("partial".into()));
    settle(&mut w, &mut c);
    // Node 0 dies: from now on nothing it sends reaches the store.
    w.nodes[0].generators.clear();
    let died_at = w.elapsed_ms();
    let mut ended_at = None;
    for _ in 0..60 {
        w.advance(Duration::from_millis(500));
        w.ops.retain(|op| op.node != 0);
        w.notices.retain(|(node, _)| *node != 0);
        w.settle_queues();
        if let Err(v) = c.check(&w) {
            panic!("{v}");
        }
        if ended_at.is_none() && end_of(&w, b).is_some() {
            ended_at = Some(w.elapsed_ms());
        }
    }
    match end_of(&w, b) {
        Some(e) => {
            assert_eq!(e.status, ReplyStatus::Failed);
            assert_eq!(e.reason.as_deref(), Some(OWNER_LOST));
            assert_eq!(e.final_seq, 1);
        }
        None => panic!("no end: {:?}", w.frames(b)),
    }
    // Invariant 6: within the lease (10 s) plus one watch period (2 s) and
    // one step of this loop.
    let took = ended_at.expect("ended") - died_at;
    assert!(
        (10_000..=12_500).contains(&took),
        "ended {took} ms after the owner died"
    );
}

/// The `end` frame `conn` got, if any (presence frames may follow it).
fn end_of(w: &World, conn: ConnId) -> Option<weir_core::wire::End> {
    w.frames(conn).iter().find_map(|f| match f {
        ServerFrame::End(e) => Some(e.clone()),
        _ => None,
    })
}

/// A reply that starts while a connection on another node waits for its
/// snapshot (read before the chat, answered after the `started` notice
/// came) reaches it only after its `hello` and `history`: nothing of a
/// reply goes to a connection before its handshake is done.
#[test]
fn a_reply_that_starts_while_a_connection_waits_for_its_snapshot_reaches_it_after_its_hello() {
    let (mut w, mut c, a) = two_nodes_one_connection_on_node_0();
    let b = w.connect(1, "u1", "s1", None);
    // b's snapshot is read now, before the chat; its answer waits.
    let k = w.ops.iter().position(|op| op.node == 1).expect("b's read");
    assert!(w.apply_op(k));
    let held = w
        .replies
        .iter()
        .position(|r| r.node == 1)
        .expect("b's snapshot");
    let held = w.replies.remove(held).expect("b's snapshot");
    w.send_text(a, r#"{"type":"chat","content":"hi"}"#);
    while w.apply_op(0) || w.deliver_reply(0) || w.deliver_notice(0) {}
    assert!(
        w.frames(a)
            .iter()
            .any(|f| matches!(f, ServerFrame::Start(_))),
        "the reply started"
    );
    assert!(
        w.frames(b).is_empty(),
        "nothing before the handshake: {:?}",
        w.frames(b)
    );
    w.replies.push_back(held);
    settle(&mut w, &mut c);
    assert_begun_after_handshake(&w, b);
}

/// Everything waiting but the notices to node `held`, until nothing else
/// waits.
fn settle_holding_notices_to(w: &mut World, held: usize) {
    loop {
        let notice = w.notices.iter().position(|(node, _)| *node != held);
        if !(w.apply_op(0) || w.deliver_reply(0) || notice.is_some_and(|k| w.deliver_notice(k))) {
            return;
        }
    }
}

/// A `started` notice that reaches a node late, after a connection there
/// resumed the reply from the store: the connection that resumed does not
/// begin the reply again, and a connection that was already open there and
/// had not seen the reply gets its `start` and every chunk (before the fix,
/// it got nothing of the reply: the snapshot taught the node the reply's
/// user turn, and the late notice, finding it known, announced nothing).
#[test]
fn a_late_started_notice_neither_begins_a_resumed_reply_again_nor_hides_it_from_the_others() {
    let (mut w, mut c, a, b) = two_nodes_watching_one_conversation();
    w.send_text(a, r#"{"type":"chat","content":"hi"}"#);
    settle_holding_notices_to(&mut w, 1);
    let (_, id) = w.running_generators().pop().expect("a generator runs");
    w.generate(&id, GeneratorEvent::Delta("one".into()));
    settle_holding_notices_to(&mut w, 1);
    let resumed = w.connect(1, "u1", "s1", Some((id.clone(), 0)));
    settle_holding_notices_to(&mut w, 1);
    assert!(
        w.frames(resumed)
            .iter()
            .any(|f| matches!(f, ServerFrame::Chunk(_))),
        "the resume got the chunk: {:?}",
        w.frames(resumed)
    );
    settle(&mut w, &mut c);
    w.generate(&id, GeneratorEvent::Delta(" two".into()));
    w.generate(&id, GeneratorEvent::Finished { usage: None });
    settle(&mut w, &mut c);
    let starts = |conn| {
        w.frames(conn)
            .iter()
            .filter(|f| matches!(f, ServerFrame::Start(_) | ServerFrame::UserMessage(_)))
            .count()
    };
    assert_eq!(starts(resumed), 0, "{:?}", w.frames(resumed));
    assert_eq!(starts(b), 2, "{:?}", w.frames(b));
    for conn in [b, resumed] {
        assert_whole_reply(&w, conn, "one two");
    }
}

/// A reply that ended while its notices to node 1 were held: a connection
/// that opens there meanwhile finds it `complete` in its `history`, and the
/// late notices (`started`, the chunks, `settled`) begin nothing for it —
/// no `start`, no chunk, no `end` of a reply its history already holds —
/// while the connection that was open there all along gets the whole reply
/// once.
#[test]
fn late_notices_of_a_reply_the_snapshot_shows_ended_begin_nothing_for_that_connection() {
    let (mut w, mut c, a, b) = two_nodes_watching_one_conversation();
    w.send_text(a, r#"{"type":"chat","content":"hi"}"#);
    settle_holding_notices_to(&mut w, 1);
    let (_, id) = w.running_generators().pop().expect("a generator runs");
    w.generate(&id, GeneratorEvent::Delta("one".into()));
    w.generate(&id, GeneratorEvent::Finished { usage: None });
    settle_holding_notices_to(&mut w, 1);
    let late = w.connect(1, "u1", "s1", None);
    settle_holding_notices_to(&mut w, 1);
    let Some(ServerFrame::History(h)) = w.frames(late).get(1).cloned() else {
        panic!("hello, then history: {:?}", w.frames(late));
    };
    assert!(
        h.messages
            .iter()
            .any(|m| m.message_id == id && m.status == MessageStatus::Completed),
        "the history holds the ended reply: {h:?}"
    );
    let before = w.frames(late).len();
    settle(&mut w, &mut c);
    assert_eq!(
        &w.frames(late)[before..],
        &[],
        "the late notices began nothing for the new connection"
    );
    assert_whole_reply(&w, b, "one");
}

/// The same with two ended replies and a third still streaming in the
/// snapshot: the connection remembers the replies its history showed ended
/// (not the user turns, nor the live one: a connection remembers only its
/// last few ended replies), so the late notices of both ended ones begin
/// nothing for it, and it gets the live one's remaining chunks once. The
/// connection open there all along gets each reply whole and once, the
/// live one first (the snapshot taught its node that one before the late
/// notices of the other two came).
#[test]
fn late_notices_of_two_ended_replies_begin_nothing_beside_a_live_one() {
    let (mut w, mut c, a, b) = two_nodes_watching_one_conversation();
    let mut ids = Vec::new();
    for (text, finish) in [("one", true), ("two", true), ("three", false)] {
        w.send_text(a, r#"{"type":"chat","content":"hi"}"#);
        settle_holding_notices_to(&mut w, 1);
        let (_, id) = w.running_generators().pop().expect("a generator runs");
        w.generate(&id, GeneratorEvent::Delta(text.into()));
        if finish {
            w.generate(&id, GeneratorEvent::Finished { usage: None });
        }
        settle_holding_notices_to(&mut w, 1);
        ids.push(id);
    }
    let late = w.connect(1, "u1", "s1", None);
    settle_holding_notices_to(&mut w, 1);
    let before = w.frames(late).len();
    settle(&mut w, &mut c);
    w.generate(&ids[2], GeneratorEvent::Delta(" more".into()));
    w.generate(&ids[2], GeneratorEvent::Finished { usage: None });
    settle(&mut w, &mut c);
    let after: Vec<&ServerFrame> = w.frames(late)[before..].iter().collect();
    let about = |f: &ServerFrame| match f {
        ServerFrame::Chunk(ch) => Some(ch.message_id.clone()),
        ServerFrame::End(e) => Some(e.message_id.clone()),
        ServerFrame::Start(s) => Some(s.message_id.clone()),
        _ => None,
    };
    assert!(
        after.iter().all(
            |f| !matches!(f, ServerFrame::UserMessage(_) | ServerFrame::Start(_))
                && about(f).is_none_or(|id| id == ids[2])
        ),
        "nothing of the ended replies, no new start: {after:?}"
    );
    assert_eq!(
        after
            .iter()
            .filter(|f| matches!(f, ServerFrame::End(_)))
            .count(),
        1,
        "the live reply's end, once: {after:?}"
    );
    // "three" came in the snapshot, as the live reply's text so far.
    assert_whole_reply(&w, late, " more");
    // b learnt the live reply from the new connection's snapshot, before
    // the late notices of the two ended ones reached its node: it got the
    // three in that order, each whole and once.
    for (id, text) in ids.iter().zip(["one", "two", "three more"]) {
        let got: String = w
            .frames(b)
            .iter()
            .filter_map(|f| match f {
                ServerFrame::Chunk(ch) if ch.message_id == *id => Some(ch.delta.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(got, text, "b got every reply once");
    }
}

/// `conn`'s first frames: its handshake, then the reply's user turn and
/// `start`.
fn assert_begun_after_handshake(w: &World, conn: ConnId) {
    let kinds: Vec<&str> = w.frames(conn).iter().map(ServerFrame::kind).collect();
    assert_eq!(
        kinds.get(..4),
        Some(&["hello", "history", "user_message", "start"][..]),
        "{kinds:?}"
    );
}

/// `conn` got every chunk of its reply once (their text is `text`), then
/// its `end`, `completed`.
fn assert_whole_reply(w: &World, conn: ConnId, text: &str) {
    let got: String = w
        .frames(conn)
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Chunk(ch) => Some(ch.delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(got, text, "{conn}: every chunk once");
    match last(w, conn) {
        ServerFrame::End(e) => assert_eq!(e.status, ReplyStatus::Completed),
        f => panic!("{conn}: {f:?}"),
    }
}

/// A `started` notice lost on its way to node 1 (pub/sub may lose any
/// notice): the connection open there still gets the reply — its user turn,
/// `start`, every chunk once and `end` — once the reply's next notice tells
/// node 1 of a reply it has no start for. A lost notice costs latency, not
/// the reply (before the fix, b got nothing of it).
#[test]
fn a_lost_started_notice_costs_latency_not_the_reply() {
    let (mut w, mut c, a, b) = two_nodes_watching_one_conversation();
    let id = start_losing_its_started_notice_to_node_1(&mut w, a, b);
    for d in ["one", " two"] {
        w.generate(&id, GeneratorEvent::Delta(d.into()));
        settle(&mut w, &mut c);
    }
    w.generate(&id, GeneratorEvent::Finished { usage: None });
    settle(&mut w, &mut c);
    assert_begun_after_handshake(&w, b);
    assert_whole_reply(&w, b, "one two");
    c.check_quiescent(&w).expect("invariants");
}

/// Runs every operation, reply and notice in order; before each step,
/// `meddle` may act on what is in flight (when it did, it is asked again).
fn run_meddling(w: &mut World, mut meddle: impl FnMut(&mut World) -> bool) {
    while meddle(w) || w.apply_op(0) || w.deliver_reply(0) || w.deliver_notice(0) {}
}

/// [`run_meddling`], dropping each notice to node 1 that `lost` picks.
fn run_losing_notices_to_node_1(w: &mut World, lost: impl Fn(&Notice) -> bool) {
    run_meddling(w, |w| {
        let k = w.notices.iter().position(|(node, n)| *node == 1 && lost(n));
        k.is_some_and(|k| w.drop_notice(k))
    });
}

/// [`run_meddling`], failing the first operation of node 1 that `fails`
/// picks; whether there was one.
fn run_failing_one_op_of_node_1(w: &mut World, fails: impl Fn(&StoreOp) -> bool) -> bool {
    let mut failed = false;
    run_meddling(w, |w| {
        let k = w.ops.iter().position(|o| o.node == 1 && fails(&o.request));
        let fail = !failed && k.is_some_and(|k| w.fail_op(k));
        failed |= fail;
        fail
    });
    failed
}

/// `a` (node 0) starts a reply whose `started` notice never reaches node 1,
/// where `b` has heard nothing of it yet.
fn start_losing_its_started_notice_to_node_1(w: &mut World, a: ConnId, b: ConnId) -> MessageId {
    w.send_text(a, r#"{"type":"chat","content":"hi"}"#);
    run_losing_notices_to_node_1(w, |n| matches!(n, Notice::Started { .. }));
    assert!(
        w.frames(b).len() == 2,
        "b has not heard of it: {:?}",
        w.frames(b)
    );
    let (_, id) = w.running_generators().pop().expect("a generator runs");
    id
}

/// As above, and the snapshot read that would teach node 1 the reply fails:
/// node 1 reads it again after `store_retry` (200 ms), not before and not
/// never, and b still gets the whole reply.
#[test]
fn a_failed_read_for_a_lost_started_notice_is_made_again_after_store_retry() {
    let (mut w, mut c, a, b) = two_nodes_watching_one_conversation();
    let id = start_losing_its_started_notice_to_node_1(&mut w, a, b);
    w.generate(&id, GeneratorEvent::Delta("one".into()));
    let failed = run_failing_one_op_of_node_1(&mut w, |op| matches!(op, StoreOp::Snapshot(_)));
    assert!(failed, "node 1 read the snapshot to learn of the reply");
    assert_eq!(w.frames(b).len(), 2, "the read failed: b has nothing yet");
    w.advance(Duration::from_millis(190));
    settle(&mut w, &mut c);
    assert_eq!(w.frames(b).len(), 2, "no second read before store_retry");
    w.advance(Duration::from_millis(20));
    settle(&mut w, &mut c);
    assert!(
        w.frames(b).len() > 2,
        "the second read taught node 1 the reply"
    );
    w.generate(&id, GeneratorEvent::Delta(" two".into()));
    settle(&mut w, &mut c);
    w.generate(&id, GeneratorEvent::Finished { usage: None });
    settle(&mut w, &mut c);
    assert_begun_after_handshake(&w, b);
    assert_whole_reply(&w, b, "one two");
    c.check_quiescent(&w).expect("invariants");
}

/// A `chunks` notice lost on its way to node 1: the next one shows it a gap,
/// and the read that would fill it fails. Node 1 reads again after
/// `store_retry` (200 ms), not before (a read failing at once would be asked
/// again at once, a busy loop while the store is down), and b still gets the
/// whole reply.
#[test]
fn a_failed_read_for_a_gap_is_made_again_after_store_retry() {
    let (mut w, mut c, a, b) = two_nodes_watching_one_conversation();
    let id = start_reply(&mut w, &mut c, a);
    w.generate(&id, GeneratorEvent::Delta("one".into()));
    run_losing_notices_to_node_1(&mut w, |n| matches!(n, Notice::Chunks { .. }));
    let before = w.frames(b).len();
    w.generate(&id, GeneratorEvent::Delta(" two".into()));
    let failed = run_failing_one_op_of_node_1(&mut w, |op| matches!(op, StoreOp::Read(_)));
    assert!(failed, "node 1 read the reply to fill the gap");
    assert_eq!(
        w.frames(b).len(),
        before,
        "the read failed: b waits for chunk 1"
    );
    w.advance(Duration::from_millis(190));
    settle(&mut w, &mut c);
    assert_eq!(
        w.frames(b).len(),
        before,
        "no second read before store_retry"
    );
    w.advance(Duration::from_millis(20));
    settle(&mut w, &mut c);
    assert!(w.frames(b).len() > before, "the second read filled the gap");
    w.generate(&id, GeneratorEvent::Finished { usage: None });
    settle(&mut w, &mut c);
    assert_whole_reply(&w, b, "one two");
    c.check_quiescent(&w).expect("invariants");
}

/// Two connections on node 1 wait for their snapshots while a reply starts
/// on node 0 and streams; node 1 hears of it from notices alone. One of the
/// two goes away, which tidies the conversation's view: the reply, live and
/// watched by no cursor yet, is kept (a connection of the view will want
/// it). The other's snapshot then shows it live, and that connection gets
/// the whole reply from the notices that follow — no time passes, so nothing
/// comes from a watch or a retry. Dropping the reply there would mark it
/// finished, and every later notice of it would be ignored.
#[test]
fn a_live_reply_stays_in_the_view_while_its_connections_wait_for_their_snapshots() {
    let (mut w, mut c, a) = two_nodes_one_connection_on_node_0();
    let h1 = w.connect(1, "u1", "s1", None);
    let h2 = w.connect(1, "u1", "s1", None);
    w.send_text(a, r#"{"type":"chat","content":"hi"}"#);
    let snapshot_of_node_1 =
        |o: &InFlightOp| o.node == 1 && matches!(o.request, StoreOp::Snapshot(_));
    run_holding(&mut w, snapshot_of_node_1);
    let (_, id) = w.running_generators().pop().expect("a generator runs");
    w.generate(&id, GeneratorEvent::Delta("one".into()));
    run_holding(&mut w, snapshot_of_node_1);
    assert!(w.frames(h1).is_empty(), "h1 waits for its snapshot");
    w.disconnect(h2);
    run_holding(&mut w, snapshot_of_node_1);
    settle(&mut w, &mut c);
    w.generate(&id, GeneratorEvent::Delta(" two".into()));
    settle(&mut w, &mut c);
    w.generate(&id, GeneratorEvent::Finished { usage: None });
    settle(&mut w, &mut c);
    // The snapshot shows the reply so far; chunks bring the rest.
    let shown: String = w
        .frames(h1)
        .iter()
        .filter_map(|f| match f {
            ServerFrame::History(h) => h.messages.iter().find(|m| m.message_id == id),
            _ => None,
        })
        .map(|m| m.content.clone())
        .collect();
    assert_eq!(shown, "one", "{:?}", w.frames(h1));
    assert_whole_reply(&w, h1, " two");
    c.check_quiescent(&w).expect("invariants");
}

/// Runs every operation, reply and notice in order except the operations
/// `held` picks, which stay in flight.
fn run_holding(w: &mut World, held: impl Fn(&InFlightOp) -> bool) {
    loop {
        let k = w.ops.iter().position(|o| !held(o));
        if !(k.is_some_and(|k| w.apply_op(k)) || w.deliver_reply(0) || w.deliver_notice(0)) {
            break;
        }
    }
}

/// A viewer on another node that lost touch with the store (every operation
/// failed, every notice lost) while the reply ended and its record expired
/// ends it with the status history keeps (`failed`, `cancelled`), not
/// `completed`; and so does a connection that resumed the reply there (the
/// node's view had its start: an `end`, not `resume_unavailable`).
#[test]
fn a_viewer_cut_off_until_an_ended_replys_record_expired_ends_it_as_history_says() {
    for (status, expect) in [
        (MessageStatus::Failed, ReplyStatus::Failed),
        (MessageStatus::Cancelled, ReplyStatus::Cancelled),
        (MessageStatus::Completed, ReplyStatus::Completed),
    ] {
        viewer_cut_off_until_the_record_expired(status, expect);
    }
}

fn viewer_cut_off_until_the_record_expired(status: MessageStatus, expect: ReplyStatus) {
    let (mut w, mut c, a, b) = two_nodes_watching_one_conversation();
    let id = start_reply(&mut w, &mut c, a);
    w.generate(&id, GeneratorEvent::Delta("partial".into()));
    settle(&mut w, &mut c);
    assert!(matches!(last(&w, b), ServerFrame::Chunk(_)), "b follows it");
    let resumed = w.connect(1, "u1", "s1", Some((id.clone(), 1)));
    settle(&mut w, &mut c);
    match status {
        MessageStatus::Failed => {
            w.generate(
                &id,
                GeneratorEvent::Failed {
                    reason: "model_error".into(),
                    usage: None,
                },
            );
        }
        MessageStatus::Completed => {
            w.generate(&id, GeneratorEvent::Finished { usage: None });
        }
        _ => w.send_text(a, &format!(r#"{{"type":"cancel","message_id":"{id}"}}"#)),
    }
    // Node 1 is cut off from the store for 100 s, longer than the record
    // lives after the reply settled; node 0 goes on.
    cut_off_node_1(&mut w, 200, &[(1, b), (1, resumed), (0, a)], false);
    let hist = w.store.history(&w.clients[&a].conv);
    assert_eq!(hist.last().map(|m| m.status), Some(status));
    assert!(
        w.frames(b)
            .iter()
            .all(|f| !matches!(f, ServerFrame::End(_))),
        "no end while cut off: {:?}",
        w.frames(b)
    );
    // Back in touch: its next read finds no record, and history says how
    // the reply ended.
    w.run_for(Duration::from_secs(1), Duration::from_millis(500));
    settle(&mut w, &mut c);
    for conn in [b, resumed] {
        assert_eq!(w.clients[&conn].closed, None);
        match last(&w, conn) {
            ServerFrame::End(e) => {
                assert_eq!(e.status, expect);
                assert_eq!(e.final_seq, 1);
            }
            f => panic!("{status:?}, {conn}: {f:?}"),
        }
    }
}

/// `steps` half-seconds in which every store operation of node 1 fails (and,
/// unless `notices_reach_it`, every notice to it is lost) while node 0 goes
/// on; the clients `(node, conn)` answer their pings throughout: only the
/// store is out of node 1's reach.
fn cut_off_node_1(w: &mut World, steps: usize, alive: &[(usize, ConnId)], notices_reach_it: bool) {
    for _ in 0..steps {
        w.advance(Duration::from_millis(500));
        for &(node, conn) in alive {
            w.input(node, weir_core::Input::Activity { conn });
        }
        loop {
            if !notices_reach_it {
                w.notices.retain(|(node, _)| *node != 1);
            }
            while let Some(k) = w.ops.iter().position(|op| op.node == 1) {
                w.fail_op(k);
            }
            if !(w.apply_op(0) || w.deliver_reply(0) || w.deliver_notice(0)) {
                break;
            }
        }
    }
}

#[test]
fn shutdown_closes_with_1001_and_settles_owned_replies() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    let id = start_reply(&mut w, &mut c, a);
    w.generate(&id, GeneratorEvent::Delta("so far".into()));
    settle(&mut w, &mut c);
    w.input(0, weir_core::Input::Shutdown);
    assert_eq!(w.clients[&a].closed, Some(CloseCode::GoingAway));
    assert!(w.nodes[0].aborted.contains(&id));
    assert!(
        !w.nodes[0].node.is_drained(),
        "the settle is still at the store"
    );
    settle(&mut w, &mut c);
    assert!(w.nodes[0].node.is_drained());
    let hist = w.store.history(&w.clients[&a].conv);
    assert_eq!(hist.last().map(|m| m.content.as_str()), Some("so far"));
    // New connections are refused while shutting down.
    let late = w.connect(0, "u1", "s1", None);
    assert_eq!(w.clients[&late].closed, Some(CloseCode::GoingAway));
    assert!(
        w.clients[&late].gone,
        "a refused connection is released at once"
    );
}

/// The store operations of kind `pick` waiting in the world's queue.
fn queued(w: &World, pick: impl Fn(&StoreOp) -> bool) -> usize {
    w.ops.iter().filter(|o| pick(&o.request)).count()
}

#[test]
fn housekeeping_sweeps_while_other_operations_wait_but_never_two_sweeps_at_once() {
    let mut w = world();
    let housekeeping = w.nodes[0].node.config().housekeeping;
    // The connection's snapshot read stays in flight (queues are not delivered).
    let _a = w.connect(0, "u1", "s1", None);
    assert!(queued(&w, |op| !matches!(op, StoreOp::Sweep(_))) > 0);
    w.advance(housekeeping);
    assert_eq!(queued(&w, |op| matches!(op, StoreOp::Sweep(_))), 1);
    // The sweep is still unanswered at the next tick: no second one.
    w.advance(housekeeping);
    assert_eq!(queued(&w, |op| matches!(op, StoreOp::Sweep(_))), 1);
    // Answered, the next tick sweeps again.
    w.settle_queues();
    w.advance(housekeeping);
    assert_eq!(queued(&w, |op| matches!(op, StoreOp::Sweep(_))), 1);
}

#[test]
fn a_presence_check_waits_for_the_time_the_store_named() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    w.disconnect(a);
    settle(&mut w, &mut c);
    // The leave was answered with a due time one debounce ahead: nothing is
    // checked a moment later, and the user goes offline once it is due.
    w.advance(Duration::from_millis(1));
    assert_eq!(queued(&w, |op| matches!(op, StoreOp::PresenceCheck(_))), 0);
    w.run_for(Duration::from_secs(30), Duration::from_millis(500));
    let user = UserId::parse("u1").expect("valid");
    assert_eq!(w.store.presence(&user), (PresenceStatus::Offline, 0));
}

#[test]
fn a_second_chat_before_the_first_is_acknowledged_is_busy_at_once_and_the_first_keeps_its_ack() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    w.send_text(a, r#"{"type":"chat","content":"one","request_id":"r1"}"#);
    w.send_text(a, r#"{"type":"chat","content":"two","request_id":"r2"}"#);
    // Answered by the node before the store saw it: one start in flight.
    assert_eq!(queued(&w, |op| matches!(op, StoreOp::Start(_))), 1);
    match last(&w, a) {
        ServerFrame::Error(e) => {
            assert_eq!(e.code, ErrorCode::Busy);
            assert_eq!(e.request_id.map(|r| r.to_string()), Some("r2".into()));
        }
        f => panic!("{f:?}"),
    }
    settle(&mut w, &mut c);
    let acked: Vec<_> = w
        .frames(a)
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Ack(ack) => Some(ack.request_id.as_ref().map(ToString::to_string)),
            _ => None,
        })
        .collect();
    assert_eq!(acked, [Some("r1".to_owned())]);
}

#[test]
fn a_new_idempotency_key_while_a_reply_streams_is_busy_from_the_store() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    let _ = start_reply(&mut w, &mut c, a);
    let chat = r#"{"type":"chat","content":"again","request_id":"r2","client_message_id":"k2"}"#;
    w.send_text(a, chat);
    // A chat with a key goes to the store (a replay must get its first ack).
    assert_eq!(queued(&w, |op| matches!(op, StoreOp::Start(_))), 1);
    settle(&mut w, &mut c);
    match last(&w, a) {
        ServerFrame::Error(e) => {
            assert_eq!(e.code, ErrorCode::Busy);
            assert_eq!(e.request_id.map(|r| r.to_string()), Some("r2".into()));
        }
        f => panic!("{f:?}"),
    }
}

#[test]
fn a_frame_too_large_gets_too_large_and_close_1009_once() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    let before = w.frames(a).len();
    w.input(
        0,
        weir_core::Input::FrameTooLarge {
            conn: a,
            len: 70_000,
        },
    );
    assert_eq!(error_code(&last(&w, a)), Some(ErrorCode::TooLarge));
    assert_eq!(w.clients[&a].closed, Some(CloseCode::TooLarge));
    // Already closing: a second oversized frame is not answered again.
    w.input(
        0,
        weir_core::Input::FrameTooLarge {
            conn: a,
            len: 70_000,
        },
    );
    assert_eq!(w.frames(a).len(), before + 1);
}

#[test]
fn sixteen_frames_wait_for_the_hello_and_the_seventeenth_closes_with_1008() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    // The snapshot is unanswered: the connection is still in its handshake.
    for n in 0..16 {
        w.send_text(a, &format!(r#"{{"type":"ping","id":"p{n}"}}"#));
    }
    assert_eq!(w.clients[&a].closed, None);
    w.send_text(a, r#"{"type":"ping","id":"p16"}"#);
    assert_eq!(error_code(&last(&w, a)), Some(ErrorCode::RateLimited));
    assert_eq!(w.clients[&a].closed, Some(CloseCode::Policy));
    settle(&mut w, &mut c);
}

#[test]
fn a_text_frame_that_is_not_utf8_gets_bad_request_and_close_1007_even_before_hello() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    let b = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    w.input(0, weir_core::Input::InvalidUtf8 { conn: a });
    assert_eq!(error_code(&last(&w, a)), Some(ErrorCode::BadRequest));
    assert_eq!(w.clients[&a].closed, Some(CloseCode::InvalidData));
    // Already closing: not answered again.
    let before = w.frames(a).len();
    w.input(0, weir_core::Input::InvalidUtf8 { conn: a });
    assert_eq!(w.frames(a).len(), before);
    // The same bytes as a text frame (from a runtime that does not check
    // UTF-8 itself) get the same answer.
    w.input(
        0,
        weir_core::Input::Frame {
            conn: b,
            bytes: b"{\"type\":\"ping\",\"id\":\"\xff\"}".to_vec(),
        },
    );
    assert_eq!(error_code(&last(&w, b)), Some(ErrorCode::BadRequest));
    assert_eq!(w.clients[&b].closed, Some(CloseCode::InvalidData));
    // During the handshake: closed at once, not held for the hello.
    let early = w.connect(0, "u1", "s1", None);
    w.input(0, weir_core::Input::InvalidUtf8 { conn: early });
    assert_eq!(w.clients[&early].closed, Some(CloseCode::InvalidData));
    settle(&mut w, &mut c);
}

#[test]
fn a_binary_frame_gets_bad_request_in_its_turn_and_the_connection_stays_open() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    // Before the hello: held in order with the text frames.
    w.send_text(a, r#"{"type":"ping","id":1}"#);
    w.input(0, weir_core::Input::BinaryFrame { conn: a });
    w.send_text(a, r#"{"type":"ping","id":2}"#);
    settle(&mut w, &mut c);
    let kinds: Vec<_> = w.frames(a).iter().map(ServerFrame::kind).collect();
    assert_eq!(kinds, ["hello", "history", "pong", "error", "pong"]);
    assert_eq!(error_code(&w.frames(a)[3]), Some(ErrorCode::BadRequest));
    // Open: answered at once, and the connection stays.
    w.input(0, weir_core::Input::BinaryFrame { conn: a });
    assert_eq!(error_code(&last(&w, a)), Some(ErrorCode::BadRequest));
    assert_eq!(w.clients[&a].closed, None);
    w.send_text(a, r#"{"type":"ping","id":3}"#);
    assert!(matches!(last(&w, a), ServerFrame::Pong(_)));
    // Binary frames count among the 16 a connection may send before hello.
    let early = w.connect(0, "u1", "s1", None);
    for _ in 0..16 {
        w.input(0, weir_core::Input::BinaryFrame { conn: early });
    }
    assert_eq!(w.clients[&early].closed, None);
    w.input(0, weir_core::Input::BinaryFrame { conn: early });
    assert_eq!(w.clients[&early].closed, Some(CloseCode::Policy));
    settle(&mut w, &mut c);
}

#[test]
fn a_write_stall_of_the_stall_timeout_closes_with_4008_and_a_resume_gets_the_rest() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    let id = start_reply(&mut w, &mut c, a);
    for delta in ["one ", "two ", "three "] {
        w.generate(&id, GeneratorEvent::Delta(delta.into()));
        settle(&mut w, &mut c);
    }
    // The runtime reports the writer stuck since now; the core closes only once
    // that is the stall timeout (10 s by default) ago.
    let since = w.now;
    w.run_for(Duration::from_secs(9), Duration::from_secs(1));
    w.input(0, weir_core::Input::WriteStalled { conn: a, since });
    assert_eq!(w.clients[&a].closed, None, "9 s is no stall yet");
    assert_eq!(w.nodes[0].node.conn_state(a), Some(ConnState::Open));
    w.run_for(Duration::from_secs(1), Duration::from_secs(1));
    w.input(0, weir_core::Input::WriteStalled { conn: a, since });
    assert_eq!(w.clients[&a].closed, Some(CloseCode::TooSlow));
    settle(&mut w, &mut c);
    // Say it read chunk 1 only: a resume after it gets exactly the rest.
    let b = w.connect(0, "u1", "s1", Some((id.clone(), 1)));
    settle(&mut w, &mut c);
    w.generate(&id, GeneratorEvent::Delta("four ".into()));
    w.generate(&id, GeneratorEvent::Finished { usage: None });
    settle(&mut w, &mut c);
    // The seqs the chunk frames cover, and their text (chunks there at once
    // come as one merged frame).
    let chunks: Vec<_> = w
        .frames(b)
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Chunk(ch) if ch.message_id == id => Some(ch),
            _ => None,
        })
        .collect();
    let seqs: Vec<u64> = chunks
        .iter()
        .flat_map(|ch| ch.first_seq()..=ch.seq)
        .collect();
    let text: String = chunks.iter().map(|ch| ch.delta.as_str()).collect();
    assert_eq!(seqs, [2, 3, 4]);
    assert_eq!(text, "two three four ");
}

#[test]
fn a_queue_lag_past_the_bound_at_two_looks_closes_with_4008_and_a_shrinking_one_does_not() {
    let mut w = world();
    let mut c = Checker::new();
    let a = w.connect(0, "u1", "s1", None);
    let b = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    let bound = weir_core::Config::DEFAULT_MAX_LAG_BYTES;
    let lag = |w: &mut World, conn, bytes| w.input(0, weir_core::Input::QueueLag { conn, bytes });
    // `a` falls further behind past the bound; `b` is past it but catching up.
    lag(&mut w, a, bound + 1);
    lag(&mut w, b, bound + 10);
    assert_eq!(w.clients[&a].closed, None, "one look is not enough");
    lag(&mut w, a, bound + 2);
    lag(&mut w, b, bound + 5);
    assert_eq!(w.clients[&a].closed, Some(CloseCode::TooSlow));
    assert_eq!(
        w.clients[&b].closed, None,
        "a lag that shrinks is left to read"
    );
    assert_eq!(w.nodes[0].node.conn_state(b), Some(ConnState::Open));
    settle(&mut w, &mut c);
}

/// A node cut off from the store past its presence entries' expiry (its
/// refreshes fail; notices still reach it) loses them: the store says the
/// user is `offline` while their connection is open there. The node joins
/// that connection again once the store answers, so the user is `online`
/// again with their one connection, and the connection heard `offline`, then
/// `online`, once each. (Before, a refresh only extended the entries that
/// still existed: the user stayed `offline` for as long as they stayed
/// connected.)
#[test]
fn presence_lost_in_a_store_outage_is_joined_again_when_the_store_answers() {
    let (mut w, mut c) = two_nodes();
    let user = UserId::parse("u1").expect("valid");
    let b = w.connect(1, "u1", "s2", None);
    settle(&mut w, &mut c);
    assert_eq!(w.store.presence(&user), (PresenceStatus::Online, 1));
    // 50 s cut off: node 1's writes fail, longer than an entry's 30 s.
    cut_off_node_1(&mut w, 100, &[(1, b)], true);
    let presence = |w: &World| -> Vec<PresenceStatus> {
        w.frames(b)
            .iter()
            .filter_map(|f| match f {
                ServerFrame::Presence(p) => Some(p.status),
                _ => None,
            })
            .collect()
    };
    assert_eq!(w.store.presence(&user).0, PresenceStatus::Offline, "lost");
    assert_eq!(presence(&w), [PresenceStatus::Offline]);
    w.run_for(Duration::from_secs(2), Duration::from_millis(500));
    settle(&mut w, &mut c);
    assert_eq!(w.store.presence(&user), (PresenceStatus::Online, 1));
    assert_eq!(
        presence(&w),
        [PresenceStatus::Offline, PresenceStatus::Online]
    );
    assert_eq!(w.clients[&b].closed, None);
}

/// A connection whose presence join did not reach the store (a blip at
/// connect time) still makes its user `online`: the node checks again
/// after `store_retry`, finds the user `offline` and joins the connection
/// again. (Before, the failed join was dropped: the user stayed `offline`
/// for as long as that connection lasted.)
#[test]
fn a_presence_join_that_failed_is_made_again_after_store_retry() {
    let mut w = world();
    let mut c = Checker::new();
    let user = UserId::parse("u1").expect("valid");
    let _a = w.connect(0, "u1", "s1", None);
    let k = w
        .ops
        .iter()
        .position(|o| matches!(o.request, StoreOp::PresenceJoin(_)))
        .expect("the join");
    w.fail_op(k);
    settle(&mut w, &mut c);
    assert_eq!(w.store.presence(&user), (PresenceStatus::Offline, 0));
    w.run_for(Duration::from_secs(2), Duration::from_millis(500));
    assert_eq!(w.store.presence(&user), (PresenceStatus::Online, 1));
}

/// Only the presence refreshes fail (every other operation reaches the
/// store): no presence operation of the node fails, so nothing is retried,
/// and the entry expires under a live connection. The check the node makes
/// at the entry's due time (named by the join's answer) finds the user
/// `offline` and joins the connection again: `online`, one connection.
#[test]
fn an_entry_expired_under_a_live_connection_is_joined_again_at_its_due_check() {
    let mut w = world();
    let mut c = Checker::new();
    let user = UserId::parse("u1").expect("valid");
    let a = w.connect(0, "u1", "s1", None);
    settle(&mut w, &mut c);
    let mut saw_offline = false;
    for _ in 0..80 {
        w.advance(Duration::from_millis(500));
        w.input(0, weir_core::Input::Activity { conn: a });
        loop {
            while let Some(k) = w
                .ops
                .iter()
                .position(|o| matches!(o.request, StoreOp::PresenceRefresh(_)))
            {
                w.fail_op(k);
            }
            if !(w.apply_op(0) || w.deliver_reply(0) || w.deliver_notice(0)) {
                break;
            }
            saw_offline |= w.store.presence(&user).0 == PresenceStatus::Offline;
        }
    }
    assert!(saw_offline, "the entry expired under the live connection");
    assert_eq!(w.store.presence(&user), (PresenceStatus::Online, 1));
}
