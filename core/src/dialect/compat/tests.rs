use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;
use crate::wire::{Chunk, End, Hello, History, Start, UserMessage};
use crate::NodeId;

fn id(s: &str) -> MessageId {
    MessageId::parse(s).unwrap()
}

fn conn() -> CompatConn {
    CompatConn::new(
        SessionId::parse("session_1796272685223").unwrap(),
        UserId::parse("demo_user").unwrap(),
    )
}

struct Clock {
    start: Instant,
    settings: CompatSettings,
}

impl Clock {
    // The renderer only compares instants, so any base will do.
    #[allow(clippy::disallowed_methods)]
    fn new() -> Self {
        Self {
            start: Instant::now(),
            settings: CompatSettings::default(),
        }
    }

    fn at(&self, ms: u64) -> RenderCtx<'_> {
        RenderCtx {
            now: self.start + Duration::from_millis(ms),
            wall_ms: 1_800_000_000_000 + ms,
            resume_window_ms: 30_000,
            compat: &self.settings,
        }
    }
}

fn json_of(f: &DialectFrame) -> Value {
    serde_json::from_str(&f.text).unwrap()
}

fn render(c: &mut CompatConn, ctx: &RenderCtx<'_>, frame: ServerFrame) -> Vec<Value> {
    let mut out = Vec::new();
    c.render(ctx, &frame, &mut out);
    out.iter().map(json_of).collect()
}

fn chunk(mid: &str, seq: u64, delta: &str) -> ServerFrame {
    ServerFrame::Chunk(Chunk {
        message_id: id(mid),
        seq,
        delta: delta.into(),
        from_seq: None,
        ts_ns: None,
    })
}

fn end(mid: &str, status: ReplyStatus) -> ServerFrame {
    ServerFrame::End(End {
        message_id: id(mid),
        status,
        final_seq: 2,
        reason: None,
        usage: None,
    })
}

fn msg(mid: &str, role: Role, content: &str, status: MessageStatus, at: u64) -> Message {
    Message {
        message_id: id(mid),
        role,
        content: content.into(),
        status,
        created_at_ms: at,
        seq: 1,
    }
}

#[test]
fn the_codec_answers_pings_and_heartbeats_and_ignores_the_rest() {
    assert_eq!(
        decode_compat_frame(br#"{"type":"ping"}"#),
        CompatRequest::Ping
    );
    assert_eq!(decode_compat_frame(b"ping"), CompatRequest::TextPing);
    assert_eq!(
        decode_compat_frame(br#"{"type":"heartbeat","x":1}"#),
        CompatRequest::Heartbeat
    );
    for bad in [
        &br#"{"type":"chat","content":"hi"}"#[..],
        b"{not json",
        b"[]",
        br#"{"kind":"ping"}"#,
        b"",
        &[0xff, 0xfe][..],
    ] {
        assert!(
            matches!(decode_compat_frame(bad), CompatRequest::Ignored(_)),
            "{bad:?}"
        );
        assert_eq!(decode_compat_frame(bad).answer(), None, "no error frame");
    }
    assert_eq!(
        CompatRequest::Ping.answer().unwrap().text,
        r#"{"type":"pong"}"#
    );
    assert_eq!(CompatRequest::TextPing.answer().unwrap().text, "pong");
    assert_eq!(
        CompatRequest::Heartbeat.answer().unwrap().text,
        r#"{"type":"heartbeat_ack"}"#
    );
}

#[test]
fn hello_becomes_welcome_with_camel_case_session_and_iso_time() {
    let clock = Clock::new();
    let mut c = conn();
    let hello = ServerFrame::Hello(Hello {
        protocol: 1,
        session_id: SessionId::parse("session_1796272685223").unwrap(),
        user_id: UserId::parse("demo_user").unwrap(),
        connection_id: "1".into(),
        node_id: NodeId::parse("n1").unwrap(),
        heartbeat_ms: 1,
        resume_window_ms: 1,
    });
    let out = render(&mut c, &clock.at(0), hello);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["type"], "welcome");
    assert_eq!(out[0]["sessionId"], "session_1796272685223");
    assert_eq!(out[0]["timestamp"], "2027-01-15T08:00:00.000Z");
}

#[test]
fn iso8601_matches_known_dates() {
    assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(iso8601(951_782_400_123), "2000-02-29T00:00:00.123Z");
    assert_eq!(iso8601(1_796_272_685_223), "2026-12-03T04:38:05.223Z");
}

#[test]
fn history_maps_messages_and_catches_up_the_live_and_the_latest_settled_reply() {
    let clock = Clock::new();
    let ctx = clock.at(0);
    let mut c = conn();
    let old = 1_000; // long before the resume window
    let messages = vec![
        msg("u1", Role::User, "q1", MessageStatus::Completed, old),
        msg("r1", Role::Assistant, "a1", MessageStatus::Cancelled, old),
        msg("u2", Role::User, "q2", MessageStatus::Completed, old),
        msg("r2", Role::Assistant, "a2", MessageStatus::Failed, old),
        msg(
            "u3",
            Role::User,
            "q3",
            MessageStatus::Completed,
            ctx.wall_ms,
        ),
        msg(
            "r3",
            Role::Assistant,
            "par",
            MessageStatus::Streaming,
            ctx.wall_ms,
        ),
    ];
    let out = render(&mut c, &ctx, ServerFrame::History(History { messages }));
    assert_eq!(out[0]["type"], "history");
    let h = out[0]["messages"].as_array().unwrap();
    assert_eq!(h.len(), 6, "user turns included");
    assert_eq!(h[0]["role"], "user");
    assert_eq!(h[0]["is_complete"], true);
    assert_eq!(h[0]["chunk"], Value::Null);
    assert_eq!(h[0]["session_id"], "session_1796272685223");
    assert_eq!(h[0]["user_id"], "demo_user");
    assert_eq!(h[0]["timestamp"], old);
    assert_eq!(h[1]["content"], "a1\n\n[Đã hủy]");
    assert_eq!(
        h[3]["content"],
        format!("a2\n\n{DEFAULT_FAILURE_SENTENCE}").as_str()
    );
    assert_eq!(h[5]["is_complete"], false);
    assert_eq!(h[5]["chunk"], "par");
    // Catch-up: the latest settled reply's final frame, then the live one.
    let catch_up: Vec<(&str, bool)> = out[1..]
        .iter()
        .map(|f| {
            assert_eq!(f["type"], "message");
            (
                f["data"]["message_id"].as_str().unwrap(),
                f["data"]["is_complete"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(catch_up, [("r2", true), ("r3", false)]);
    // The live reply goes on from the snapshot's text.
    let out = render(&mut c, &clock.at(100), chunk("r3", 2, "tial"));
    assert_eq!(out[0]["data"]["content"], "partial");
}

#[test]
fn an_empty_history_is_still_sent() {
    let clock = Clock::new();
    let mut c = conn();
    let out = render(
        &mut c,
        &clock.at(0),
        ServerFrame::History(History { messages: vec![] }),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0], serde_json::json!({"type":"history","messages":[]}));
}

#[test]
fn chunks_accumulate_and_coalesce_to_one_frame_per_window() {
    let clock = Clock::new();
    let mut c = conn();
    let start = ServerFrame::Start(Start {
        message_id: id("r1"),
        reply_to: id("u1"),
    });
    let out = render(&mut c, &clock.at(0), start);
    assert_eq!(out.len(), 1, "the bubble appears at start");
    assert_eq!(out[0]["data"]["content"], "");
    assert_eq!(out[0]["data"]["is_complete"], false);
    assert_eq!(out[0]["data"]["role"], "assistant");
    assert!(render(&mut c, &clock.at(10), chunk("r1", 1, "a")).is_empty());
    assert!(render(&mut c, &clock.at(20), chunk("r1", 2, "b")).is_empty());
    assert_eq!(c.poll_timeout(), Some(clock.at(50).now));
    let mut out = Vec::new();
    c.handle_timeout(&clock.at(49), &mut out);
    assert!(out.is_empty(), "not yet due");
    c.handle_timeout(&clock.at(50), &mut out);
    assert_eq!(out.len(), 1);
    let f = json_of(&out[0]);
    assert_eq!(f["data"]["content"], "ab");
    assert_eq!(f["data"]["chunk"], "ab");
    assert_eq!(c.poll_timeout(), None);
    // After a quiet window, the next chunk goes at once.
    let out = render(&mut c, &clock.at(200), chunk("r1", 3, "c"));
    assert_eq!(out[0]["data"]["content"], "abc");
}

#[test]
fn the_window_is_50_ms_once_the_text_grew_by_an_eighth_else_one_second() {
    let s = CompatSettings::default();
    let (short, long) = (Duration::from_millis(50), Duration::from_secs(1));
    assert_eq!(s.window(0, 0), short, "nothing sent yet: any text goes");
    assert_eq!(s.window(7, 7), short, "under 8 bytes an eighth is nothing");
    assert_eq!(s.window(800, 899), long);
    assert_eq!(s.window(800, 900), short);
    assert_eq!(s.window(usize::MAX, usize::MAX), short, "saturates");
    assert_eq!(s.window(usize::MAX - 1, usize::MAX - 1), long);
}

#[test]
fn a_long_text_waits_until_it_grew_by_an_eighth_or_one_second_passed() {
    let clock = Clock::new();
    let mut c = conn();
    let long = "x".repeat(4 * 1024);
    let out = render(&mut c, &clock.at(0), chunk("r1", 1, &long));
    assert_eq!(out.len(), 1, "the first text goes at once");
    assert!(render(&mut c, &clock.at(60), chunk("r1", 2, "y")).is_empty());
    assert_eq!(
        c.poll_timeout(),
        Some(clock.at(1000).now),
        "one byte more than 4 KiB: the next frame waits for the longest window"
    );
    let mut out = Vec::new();
    c.handle_timeout(&clock.at(999), &mut out);
    assert!(out.is_empty(), "not yet due");
    c.handle_timeout(&clock.at(1000), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(json_of(&out[0])["data"]["content"], format!("{long}y"));
    // Half a KiB more (an eighth of 4 KiB) goes as soon as 50 ms have passed.
    let more = "z".repeat(512);
    assert!(render(&mut c, &clock.at(1010), chunk("r1", 3, &more)).is_empty());
    assert_eq!(c.poll_timeout(), Some(clock.at(1050).now));
    let out = render(&mut c, &clock.at(1060), chunk("r1", 4, "w"));
    assert_eq!(out.len(), 1, "grown enough and the short window is over");
    assert_eq!(out[0]["data"]["content"], format!("{long}y{more}w"));
}

#[test]
fn the_end_sends_one_final_frame_and_nothing_after_it() {
    let clock = Clock::new();
    let mut c = conn();
    assert_eq!(render(&mut c, &clock.at(0), chunk("r1", 1, "a")).len(), 1);
    assert!(render(&mut c, &clock.at(10), chunk("r1", 2, "b")).is_empty());
    let out = render(&mut c, &clock.at(20), end("r1", ReplyStatus::Cancelled));
    assert_eq!(out.len(), 1, "the waiting text is in the final frame");
    assert_eq!(out[0]["data"]["content"], "ab\n\n[Đã hủy]");
    assert_eq!(out[0]["data"]["is_complete"], true);
    assert_eq!(out[0]["data"]["chunk"], Value::Null);
    assert_eq!(c.poll_timeout(), None, "nothing waits any more");
    assert!(render(&mut c, &clock.at(100), chunk("r1", 3, "late")).is_empty());
    assert!(render(&mut c, &clock.at(100), end("r1", ReplyStatus::Completed)).is_empty());
}

#[test]
fn native_only_frames_render_to_nothing() {
    let clock = Clock::new();
    let mut c = conn();
    let echo = ServerFrame::UserMessage(UserMessage {
        message_id: id("u1"),
        content: "hi".into(),
        created_at_ms: 1,
        request_id: None,
    });
    assert!(render(&mut c, &clock.at(0), echo).is_empty(), "no echo");
    let error = ServerFrame::Error(crate::wire::ErrorFrame {
        code: crate::wire::ErrorCode::BadRequest,
        message: "x".into(),
        request_id: None,
        retry_after_ms: None,
    });
    assert!(render(&mut c, &clock.at(0), error).is_empty());
}

#[test]
fn the_suffixes_are_settings() {
    let s = CompatSettings {
        cancelled_suffix: " (stopped)".into(),
        failure_sentence: "Sorry.".into(),
        ..CompatSettings::default()
    };
    assert_eq!(s.shown_text("a", MessageStatus::Cancelled), "a (stopped)");
    assert_eq!(s.shown_text("a", MessageStatus::Failed), "a\n\nSorry.");
    assert_eq!(s.shown_text("a", MessageStatus::Completed), "a");
}
