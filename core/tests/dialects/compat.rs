//! The compat dialect (`/ws/chat`) through a whole node and the in-memory
//! store: what a compat connection receives while a native connection of
//! the same conversation chats, cancels and reconnects.

use serde_json::Value;
use weir_core::dialect::Dialect;
use weir_core::{GeneratorEvent, Input, ServerFrame};

use crate::world::World;

fn types(frames: &[Value]) -> Vec<&str> {
    frames.iter().map(|f| f["type"].as_str().unwrap()).collect()
}

#[test]
fn a_compat_connection_sees_welcome_history_accumulated_text_and_one_final_frame() {
    let mut w = World::new();
    let compat = w.connect(1, Some(Dialect::Compat));
    let native = w.connect(2, None);
    let first = w.take_json(compat);
    assert_eq!(types(&first), ["welcome", "history"]);
    assert_eq!(first[0]["sessionId"], "session_1");
    assert_eq!(first[1]["messages"], serde_json::json!([]));
    w.frame(native, r#"{"type":"chat","content":"hi"}"#);
    for d in ["Xin", " chào", " bạn"] {
        w.generate(GeneratorEvent::Delta(d.into()));
    }
    w.advance(60);
    w.generate(GeneratorEvent::Delta("!".into()));
    w.generate(GeneratorEvent::Finished { usage: None });
    w.advance(200);
    let got = w.take_json(compat);
    assert!(
        types(&got).iter().all(|t| *t == "message"),
        "no echo, no native frames: {got:?}"
    );
    let contents: Vec<&str> = got
        .iter()
        .map(|f| f["data"]["content"].as_str().unwrap())
        .collect();
    for pair in contents.windows(2) {
        assert!(
            pair[1].starts_with(pair[0]),
            "grows monotonically: {contents:?}"
        );
    }
    let finals: Vec<&Value> = got
        .iter()
        .filter(|f| f["data"]["is_complete"] == true)
        .collect();
    assert_eq!(finals.len(), 1, "{got:?}");
    assert_eq!(
        got.last().unwrap()["data"]["is_complete"],
        true,
        "nothing after the final frame"
    );
    assert_eq!(finals[0]["data"]["content"], "Xin chào bạn!");
    assert_eq!(finals[0]["data"]["chunk"], Value::Null);
    assert!(
        got.len() < 6,
        "4 chunks within 60 ms coalesce: {contents:?}"
    );
    // The native connection got the native frames.
    let native_kinds: Vec<&str> = w.frames[&native].iter().map(ServerFrame::kind).collect();
    assert!(native_kinds.contains(&"user_message") && native_kinds.contains(&"end"));
}

#[test]
fn a_cancelled_reply_ends_with_the_suffix_live_and_in_history() {
    let mut w = World::new();
    let compat = w.connect(1, Some(Dialect::Compat));
    let native = w.connect(2, None);
    w.frame(native, r#"{"type":"chat","content":"hi"}"#);
    w.generate(GeneratorEvent::Delta("part".into()));
    w.frame(native, r#"{"type":"cancel"}"#);
    w.advance(5_000);
    let got = w.take_json(compat);
    let last = got.last().unwrap();
    assert_eq!(last["data"]["is_complete"], true);
    assert_eq!(last["data"]["content"], "part\n\n[Đã hủy]");
    let reconnect = w.connect(3, Some(Dialect::Compat));
    let got = w.take_json(reconnect);
    assert_eq!(
        types(&got),
        ["welcome", "history", "message"],
        "catch-up: the latest final frame"
    );
    assert_eq!(got[1]["messages"][1]["content"], "part\n\n[Đã hủy]");
    assert_eq!(got[2]["data"]["content"], "part\n\n[Đã hủy]");
    assert_eq!(got[2]["data"]["is_complete"], true);
}

#[test]
fn a_connection_during_a_reply_catches_up_and_goes_on() {
    let mut w = World::new();
    let native = w.connect(2, None);
    w.frame(native, r#"{"type":"chat","content":"hi"}"#);
    w.generate(GeneratorEvent::Delta("ab".into()));
    let compat = w.connect(1, Some(Dialect::Compat));
    let got = w.take_json(compat);
    assert_eq!(types(&got), ["welcome", "history", "message"]);
    assert_eq!(got[2]["data"]["content"], "ab");
    assert_eq!(got[2]["data"]["is_complete"], false);
    w.advance(100);
    w.generate(GeneratorEvent::Delta("c".into()));
    w.generate(GeneratorEvent::Finished { usage: None });
    w.advance(100);
    let got = w.take_json(compat);
    assert_eq!(got.last().unwrap()["data"]["content"], "abc");
    assert_eq!(got.last().unwrap()["data"]["is_complete"], true);
}

#[test]
fn pings_are_answered_and_unknown_frames_ignored_without_error() {
    let mut w = World::new();
    let compat = w.connect(1, Some(Dialect::Compat));
    let _ = w.take_text(compat);
    w.frame(compat, r#"{"type":"ping"}"#);
    w.frame(compat, "ping");
    w.frame(compat, r#"{"type":"heartbeat"}"#);
    w.frame(compat, r#"{"type":"chat","content":"hi"}"#);
    w.frame(compat, "{bad json");
    assert_eq!(
        w.take_text(compat),
        [r#"{"type":"pong"}"#, "pong", r#"{"type":"heartbeat_ack"}"#]
    );
    assert_eq!(w.ignored, 2);
    assert!(w.started.is_empty(), "chat does not go over /ws/chat");
    w.frame(compat, r#"{"type":"ping"}"#);
    assert_eq!(w.take_text(compat), [r#"{"type":"pong"}"#], "still usable");
}

#[test]
fn native_connections_keep_their_shared_fan_out_beside_a_compat_one() {
    let mut w = World::new();
    let _compat = w.connect(1, Some(Dialect::Compat));
    let a = w.connect(2, None);
    let _b = w.connect(3, None);
    w.frame(a, r#"{"type":"chat","content":"hi"}"#);
    w.generate(GeneratorEvent::Delta("x".into()));
    assert!(
        w.shared.contains(&(2, "chunk")),
        "the two native connections share one chunk frame: {:?}",
        w.shared
    );
}

#[test]
fn a_released_compat_connection_leaves_no_state() {
    let mut w = World::new();
    let compat = w.connect(1, Some(Dialect::Compat));
    let native = w.connect(2, None);
    w.frame(native, r#"{"type":"chat","content":"hi"}"#);
    w.generate(GeneratorEvent::Delta("a".into()));
    w.generate(GeneratorEvent::Delta("b".into())); // waits for the window
    w.feed(Input::Disconnected { conn: compat });
    w.feed(Input::Disconnected { conn: native });
    w.generate(GeneratorEvent::Finished { usage: None });
    w.advance(120_000);
    assert!(!w.node.holds_state(), "{:?}", w.node);
}
