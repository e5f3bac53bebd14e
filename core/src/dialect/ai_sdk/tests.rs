use super::*;
use crate::wire::{Ack, Chunk, End, ErrorFrame, Hello, Start};

fn limits() -> Limits {
    Limits {
        max_frame_bytes: 65_536,
        max_content_bytes: 100,
    }
}

fn id(s: &str) -> MessageId {
    MessageId::parse(s).unwrap()
}

fn live(message: &str, deltas: &[&str]) -> LiveReply {
    LiveReply {
        message_id: id(message),
        reply_to: id("u"),
        state: crate::stream::StreamState::Active { lease_until_ms: 0 },
        deltas: deltas.iter().map(|d| (*d).to_owned()).collect(),
        ts_ns: vec![],
        created_at_ms: 0,
        owner: crate::ids::NodeId::parse("n").unwrap(),
    }
}

fn rid(s: &str) -> RequestId {
    RequestId::parse(s).unwrap()
}

fn ws(ask: Ask) -> AiSdkConn {
    AiSdkConn::new(
        Via::Ws {
            socket: ConnId(7),
            request_id: rid("r1"),
        },
        ask,
    )
}

fn send_ask() -> Ask {
    Ask::Send {
        content: "hi".to_owned(),
        client_message_id: None,
    }
}

fn hello() -> ServerFrame {
    ServerFrame::Hello(Hello {
        protocol: 1,
        session_id: SessionId::parse("s").unwrap(),
        user_id: crate::ids::UserId::parse("u").unwrap(),
        connection_id: "c1".to_owned(),
        node_id: crate::ids::NodeId::parse("n").unwrap(),
        heartbeat_ms: 1,
        resume_window_ms: 1,
    })
}

fn chunk(seq: u64, delta: &str) -> ServerFrame {
    ServerFrame::Chunk(Chunk {
        message_id: id("m"),
        seq,
        delta: delta.to_owned(),
        from_seq: None,
        ts_ns: None,
    })
}

fn ack() -> ServerFrame {
    ServerFrame::Ack(Ack {
        request_id: None,
        user_message_id: id("u"),
        message_id: id("m"),
    })
}

fn end(status: ReplyStatus, final_seq: u64, usage: Option<Usage>) -> ServerFrame {
    ServerFrame::End(End {
        message_id: id("m"),
        status,
        final_seq,
        reason: None,
        usage,
    })
}

fn render(c: &mut AiSdkConn, frames: &[ServerFrame]) -> Vec<Value> {
    let mut out = Vec::new();
    for f in frames {
        c.render(f, &mut out);
    }
    out.iter()
        .map(|f| serde_json::from_str(&f.text).unwrap())
        .collect()
}

#[test]
fn a_reply_is_numbered_by_its_position_start_text_deltas_text_end_finish() {
    let mut c = ws(send_ask());
    let ack = ack();
    let start = ServerFrame::Start(Start {
        message_id: id("m"),
        reply_to: id("u"),
    });
    let usage = Usage {
        prompt_tokens: 3,
        completion_tokens: 2,
    };
    let frames = render(
        &mut c,
        &[
            hello(),
            ack,
            start,
            chunk(1, "a"),
            chunk(2, "b"),
            end(ReplyStatus::Completed, 2, Some(usage)),
        ],
    );
    let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["start", "chunk", "chunk", "chunk", "chunk", "chunk", "chunk", "end"]
    );
    let chunks: Vec<&Value> = frames.iter().filter(|f| f["type"] == "chunk").collect();
    for (i, f) in chunks.iter().enumerate() {
        assert_eq!(f["sequence"], i as u64);
        assert_eq!(f["requestId"], "r1");
    }
    let ui: Vec<&str> = chunks
        .iter()
        .map(|f| f["chunk"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        ui,
        [
            "start",
            "text-start",
            "text-delta",
            "text-delta",
            "text-end",
            "finish"
        ]
    );
    assert_eq!(chunks[0]["chunk"]["messageId"], "m");
    assert_eq!(chunks[3]["chunk"]["delta"], "b");
    assert_eq!(
        chunks[5]["chunk"]["messageMetadata"]["usage"]["completion_tokens"],
        2
    );
    assert!(c.is_done());
}

#[test]
fn a_resume_after_a_sequence_sends_exactly_the_rest() {
    let mut c = ws(Ask::Resume { after: Some(3) });
    let live = live("m", &["a", "b"]);
    assert_eq!(c.plan_resume(Some(&live)), Some((id("m"), 2)));
    let frames = render(
        &mut c,
        &[hello(), chunk(3, "c"), end(ReplyStatus::Cancelled, 3, None)],
    );
    assert_eq!(frames[0]["type"], "start");
    let seqs: Vec<u64> = frames
        .iter()
        .filter(|f| f["type"] == "chunk")
        .map(|f| f["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [4, 5, 6], "delta 3, text-end, abort");
    assert_eq!(frames[3]["chunk"]["type"], "abort");
    assert_eq!(frames.last().unwrap()["type"], "end");
}

#[test]
fn a_resume_with_nothing_streaming_is_no_active_or_204() {
    let mut c = ws(Ask::Resume { after: None });
    assert_eq!(c.plan_resume(None), None);
    let frames = render(&mut c, &[hello()]);
    assert_eq!(frames[0]["type"], "no-active");
    assert!(c.is_done());
    let mut sse = AiSdkConn::new(Via::Sse, Ask::Resume { after: None });
    let mut out = Vec::new();
    sse.render(&hello(), &mut out);
    assert_eq!((out[0].kind, out[0].text.as_str()), (STATUS, "204"));
}

#[test]
fn over_sse_a_busy_chat_is_a_409_status_and_events_carry_their_sequence() {
    let mut c = AiSdkConn::new(Via::Sse, send_ask());
    let mut out = Vec::new();
    c.render(
        &ServerFrame::Error(ErrorFrame {
            code: ErrorCode::Busy,
            message: "busy".to_owned(),
            request_id: None,
            retry_after_ms: None,
        }),
        &mut out,
    );
    assert_eq!(out[0].kind, STATUS);
    assert!(out[0].text.starts_with("409 {"));
    assert!(c.is_done());

    let mut c = AiSdkConn::new(Via::Sse, send_ask());
    let mut out = Vec::new();
    c.render(
        &ServerFrame::Ack(Ack {
            request_id: None,
            user_message_id: id("u"),
            message_id: id("m"),
        }),
        &mut out,
    );
    c.render(&chunk(1, "x"), &mut out);
    c.render(&end(ReplyStatus::Completed, 1, None), &mut out);
    let texts: Vec<&str> = out.iter().map(|f| f.text.as_str()).collect();
    assert_eq!(texts[0], "200");
    assert!(texts[1].starts_with("id: 0\ndata: {\"type\":\"start\""));
    assert!(texts[3].starts_with("id: 2\ndata: {\"type\":\"text-delta\""));
    assert_eq!(*texts.last().unwrap(), "data: [DONE]\n\n");
}

#[test]
fn frames_of_other_replies_are_not_rendered() {
    let mut c = ws(Ask::Resume { after: None });
    let live = live("other", &[]);
    let _ = c.plan_resume(Some(&live));
    let frames = render(&mut c, &[hello(), chunk(1, "a")]);
    assert_eq!(frames.len(), 1, "only `start`: chunk 1 is of another reply");
}

#[test]
fn client_frames_decode_to_requests_or_errors_for_their_request_id() {
    let send = br#"{"type":"send","requestId":"r","id":"chat","trigger":"submit-message",
        "messages":[{"id":"m1","role":"user","parts":[{"type":"text","text":" hi "},{"type":"text","text":"there"}]}]}"#;
    assert_eq!(
        decode_ws_frame(send, &limits()),
        WsRequest::Open {
            request_id: rid("r"),
            chat: SessionId::parse("chat").unwrap(),
            ask: Ask::Send {
                content: "hi there".to_owned(),
                client_message_id: Some(ClientMessageId::parse("m1").unwrap()),
            },
        }
    );
    let resume = br#"{"type":"resume","requestId":"r","id":"chat","lastSequence":5}"#;
    assert!(matches!(
        decode_ws_frame(resume, &limits()),
        WsRequest::Open {
            ask: Ask::Resume { after: Some(5) },
            ..
        }
    ));
    assert_eq!(
        decode_ws_frame(br#"{"type":"abort","requestId":"r"}"#, &limits()),
        WsRequest::Abort {
            request_id: rid("r")
        }
    );
    let bad = |bytes: &[u8]| match decode_ws_frame(bytes, &limits()) {
        WsRequest::Bad { request_id, .. } => request_id.map(|r| r.as_str().to_owned()),
        other => panic!("{other:?}"),
    };
    assert_eq!(bad(b"nope"), None);
    assert_eq!(
        bad(br#"{"type":"x","requestId":"r"}"#).as_deref(),
        Some("r")
    );
    assert_eq!(
        bad(br#"{"type":"send","requestId":"r","id":"a b","messages":[]}"#).as_deref(),
        Some("r")
    );
    let regen = br#"{"type":"send","requestId":"r","id":"c","trigger":"regenerate-message",
        "messages":[{"role":"user","parts":[{"type":"text","text":"x"}]}]}"#;
    assert_eq!(bad(regen).as_deref(), Some("r"));
    let long = format!(
        r#"{{"type":"send","requestId":"r","id":"c","messages":[{{"role":"user","parts":[{{"type":"text","text":"{}"}}]}}]}}"#,
        "x".repeat(101)
    );
    assert_eq!(bad(long.as_bytes()).as_deref(), Some("r"));
}

#[test]
fn a_stamped_chunk_carries_its_ts_ns_as_weir_provider_metadata_an_unstamped_one_none() {
    let mut c = AiSdkConn::new(Via::Sse, send_ask());
    let ack = ack();
    let stamped = ServerFrame::Chunk(Chunk {
        message_id: id("m"),
        seq: 1,
        delta: "a".to_owned(),
        from_seq: None,
        ts_ns: Some(1_764_777_600_123_456_789),
    });
    let mut out = Vec::new();
    for f in [ack, stamped, chunk(2, "b")] {
        c.render(&f, &mut out);
    }
    let events: Vec<&str> = out.iter().map(|f| f.text.as_str()).collect();
    assert!(
        events.contains(
            &"id: 2\ndata: {\"type\":\"text-delta\",\"id\":\"m\",\"delta\":\"a\",\
              \"providerMetadata\":{\"weir\":{\"ts_ns\":1764777600123456789}}}\n\n"
        ),
        "{events:?}"
    );
    assert!(
        events.contains(&"id: 3\ndata: {\"type\":\"text-delta\",\"id\":\"m\",\"delta\":\"b\"}\n\n"),
        "{events:?}"
    );
}
