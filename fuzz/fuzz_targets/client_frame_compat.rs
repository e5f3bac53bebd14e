//! Compat `/ws/chat` client frames (the seed front end's dialect): any bytes
//! as one frame from an open compat connection of a real node with the
//! in-memory store — the codec (`decode_compat_frame`), the node's dialect
//! path and its render pass. The first byte picks the limits (as in
//! `client_frame`); a frame over the frame limit reaches the node as the
//! runtime reports it (`FrameTooLarge`), and so does one that is not UTF-8
//! (`InvalidUtf8`).
//!
//! Checked besides "no panic": the codec answers text `ping` (trimmed) with
//! text `pong` and a JSON `ping` / `heartbeat` with `pong` /
//! `heartbeat_ack`, and ignores everything else (no error frame: the seed's
//! page must keep working); the node sends exactly the codec's answer and
//! nothing else, logs an ignored frame, and keeps the connection open; an
//! oversized frame closes it with 1009 and one that is not UTF-8 with 1007,
//! with no native frame ever reaching the page.
#![no_main]

mod common;
#[path = "common/node.rs"]
mod node;

use libfuzzer_sys::fuzz_target;
use weir_core::dialect::compat::{decode_compat_frame, CompatRequest};
use weir_core::dialect::Dialect;
use weir_core::{
    CloseCode, Config, ConnId, Event, Input, NodeId, Output, ServerFrame, SessionId, UserId,
};

const PAGE: ConnId = ConnId(1);

fuzz_target!(|data: &[u8]| {
    let (limits, bytes) = common::limits_and_input(data);
    let mut config = Config::new(NodeId::parse("fuzz").expect("a node id"));
    config.limits = limits;
    let mut rig = node::Rig::new(config);
    let _ = rig.feed(Input::ConnectWith {
        conn: PAGE,
        user: UserId::parse("demo_user").expect("a user id"),
        session: SessionId::parse("session_1").expect("a session id"),
        dialect: Dialect::Compat,
        ip: None,
    });
    assert!(
        rig.node.conn_state(PAGE) == Some(weir_core::session::ConnState::Open),
        "the page's connection opened"
    );

    let input = if bytes.len() > limits.max_frame_bytes {
        Input::FrameTooLarge {
            conn: PAGE,
            len: bytes.len(),
        }
    } else if std::str::from_utf8(bytes).is_err() {
        Input::InvalidUtf8 { conn: PAGE }
    } else {
        Input::Frame {
            conn: PAGE,
            bytes: bytes.to_vec(),
        }
    };
    let closes = match &input {
        Input::FrameTooLarge { .. } => Some(CloseCode::TooLarge),
        Input::InvalidUtf8 { .. } => Some(CloseCode::InvalidData),
        _ => None,
    };
    let out = rig.feed(input);

    // Whatever reaches the page is the dialect's own frames.
    let sent: Vec<&str> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send { conn, frame } => {
                assert_eq!(*conn, PAGE);
                match frame {
                    ServerFrame::Dialect(f) => Some(f.text.as_str()),
                    other => panic!("a native frame reached the compat page: {other:?}"),
                }
            }
            Output::SendMany { .. } => panic!("nothing is shared with one connection"),
            _ => None,
        })
        .collect();
    let closed: Vec<CloseCode> = out
        .iter()
        .filter_map(|o| match o {
            Output::Close { code, .. } => Some(*code),
            _ => None,
        })
        .collect();
    if let Some(code) = closes {
        assert_eq!(closed, [code]);
        assert!(sent.is_empty(), "the page gets no error frame: {sent:?}");
        return;
    }

    let request = decode_compat_frame(bytes);
    let text_ping = bytes.trim_ascii() == b"ping";
    assert_eq!(request == CompatRequest::TextPing, text_ping);
    let answer = request.answer().map(|f| f.text);
    match request {
        CompatRequest::TextPing => assert_eq!(answer.as_deref(), Some("pong")),
        CompatRequest::Ping => assert_eq!(answer.as_deref(), Some(r#"{"type":"pong"}"#)),
        CompatRequest::Heartbeat => {
            assert_eq!(answer.as_deref(), Some(r#"{"type":"heartbeat_ack"}"#));
        }
        CompatRequest::Ignored(_) => {
            assert_eq!(answer, None);
            let value: Option<serde_json::Value> = serde_json::from_slice(bytes).ok();
            let kind = value.as_ref().and_then(|v| v.get("type")?.as_str());
            assert!(
                !matches!(kind, Some("ping" | "heartbeat")),
                "a ping or heartbeat is answered: {value:?}"
            );
        }
    }
    assert_eq!(sent, answer.as_deref().into_iter().collect::<Vec<_>>());
    let ignored = out
        .iter()
        .any(|o| matches!(o, Output::Event(Event::FrameIgnored { conn: PAGE, .. })));
    assert_eq!(ignored, matches!(request, CompatRequest::Ignored(_)));
    assert!(closed.is_empty(), "a compat frame never closes: {closed:?}");
    assert_eq!(
        rig.node.conn_state(PAGE),
        Some(weir_core::session::ConnState::Open)
    );
});
