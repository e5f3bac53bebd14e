//! The AI SDK dialect's untrusted input: any bytes as one client frame on an
//! open `/v1/ai-sdk/ws` socket of a real node with the in-memory store (the
//! codec `decode_ws_frame`, the node's socket path, a request it may open and
//! the render pass), and the same bytes as the body of
//! `POST /v1/ai-sdk/chat` (`decode_chat_body`). The first byte picks the
//! limits (as in `client_frame`); a frame over the frame limit reaches the
//! node as the runtime reports it (`FrameTooLarge`), and so does one that is
//! not UTF-8 (`InvalidUtf8`).
//!
//! Checked besides "no panic": a decoded `send` carries trimmed, non-empty
//! text within the content limit, and so does an accepted body; a rejected
//! body is a 400, or a 413 exactly when it is over the frame limit. On the
//! socket, a frame the codec cannot serve is answered with exactly one
//! `error` frame naming its `requestId` (`""` when none can be read); no
//! native frame ever reaches the socket; a frame within the limits never
//! closes it; an oversized one closes it with 1009 and one that is not UTF-8
//! with 1007.
#![no_main]

mod common;
#[path = "common/node.rs"]
mod node;

use libfuzzer_sys::fuzz_target;
use weir_core::dialect::ai_sdk::{decode_chat_body, decode_ws_frame, Ask, WsRequest};
use weir_core::dialect::Dialect;
use weir_core::wire::http::HttpError;
use weir_core::wire::Limits;
use weir_core::{CloseCode, Config, ConnId, Input, NodeId, Output, ServerFrame, SessionId, UserId};

const SOCKET: ConnId = ConnId(1);

fn check_send(ask: &Ask, limits: &Limits) {
    if let Ask::Send { content, .. } = ask {
        assert!(!content.is_empty(), "a send has text");
        assert_eq!(content.trim(), content);
        assert!(content.len() <= limits.max_content_bytes);
    }
}

fuzz_target!(|data: &[u8]| {
    let (limits, bytes) = common::limits_and_input(data);

    match decode_chat_body(bytes, &limits) {
        Ok((_chat, ask)) => {
            assert!(bytes.len() <= limits.max_frame_bytes);
            check_send(&ask, &limits);
        }
        Err(e) => {
            let status = HttpError::status(&e);
            let too_large = bytes.len() > limits.max_frame_bytes;
            assert_eq!(status == 413, too_large, "413 exactly when too large: {e:?}");
            assert!(matches!(status, 400 | 413));
        }
    }

    let mut config = Config::new(NodeId::parse("fuzz").expect("a node id"));
    config.limits = limits;
    let mut rig = node::Rig::new(config);
    let _ = rig.feed(Input::ConnectWith {
        conn: SOCKET,
        user: UserId::parse("demo_user").expect("a user id"),
        session: SessionId::parse("ignored").expect("a session id"),
        dialect: Dialect::AiSdkWs,
        ip: None,
    });

    let (input, closes) = if bytes.len() > limits.max_frame_bytes {
        let len = bytes.len();
        let input = Input::FrameTooLarge { conn: SOCKET, len };
        (input, Some(CloseCode::TooLarge))
    } else if std::str::from_utf8(bytes).is_err() {
        (Input::InvalidUtf8 { conn: SOCKET }, Some(CloseCode::InvalidData))
    } else {
        let input = Input::Frame {
            conn: SOCKET,
            bytes: bytes.to_vec(),
        };
        (input, None)
    };
    let out = rig.feed(input);

    let mut to_socket = Vec::new();
    let mut closed = Vec::new();
    for o in &out {
        match o {
            Output::Send { conn, frame } if *conn == SOCKET => match frame {
                ServerFrame::Dialect(f) => to_socket.push(f.text.clone()),
                other => panic!("a native frame reached the AI SDK socket: {other:?}"),
            },
            Output::SendMany { conns, frame } if conns.contains(&SOCKET) => {
                panic!("the socket is not a conversation's connection: {frame:?}")
            }
            Output::Close { conn, code, .. } if *conn == SOCKET => closed.push(*code),
            _ => {}
        }
    }
    if let Some(code) = closes {
        assert_eq!(closed, [code]);
        return;
    }
    assert!(closed.is_empty(), "a frame within the limits never closes the socket");

    match decode_ws_frame(bytes, &limits) {
        WsRequest::Bad { request_id, .. } => {
            assert_eq!(to_socket.len(), 1, "one error answers a bad frame: {to_socket:?}");
            let v: serde_json::Value = serde_json::from_str(&to_socket[0]).expect("JSON");
            assert_eq!(v["type"], "error");
            let named = request_id.as_ref().map_or("", |r| r.as_str());
            assert_eq!(v["requestId"], named);
        }
        WsRequest::Abort { .. } => {
            assert!(to_socket.is_empty(), "no request is open to abort: {to_socket:?}");
        }
        WsRequest::Open { ask, .. } => {
            check_send(&ask, &limits);
            for text in &to_socket {
                let v: serde_json::Value = serde_json::from_str(text).expect("JSON");
                assert_ne!(v["type"], "error", "a fresh socket serves a good request: {v}");
            }
        }
    }
});
