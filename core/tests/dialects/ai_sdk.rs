//! The AI SDK dialect (`/v1/ai-sdk/ws`, PROTOCOL.md "AI SDK transports")
//! through a whole node and the in-memory store: a socket's requests, their
//! sequence numbers, busy, abort, and that a disconnect never cancels.

use serde_json::Value;
use weir_core::dialect::Dialect;
use weir_core::{GeneratorEvent, Input, ServerFrame};

use crate::world::World;

fn send(request: &str, chat: &str, text: &str) -> String {
    serde_json::json!({
        "type": "send", "requestId": request, "id": chat, "trigger": "submit-message",
        "messages": [{"id": format!("u-{request}"), "role": "user", "parts": [{"type": "text", "text": text}]}],
        "headers": {}, "body": {}
    })
    .to_string()
}

/// The socket's frames of `request`.
fn of<'a>(frames: &'a [Value], request: &str) -> Vec<&'a Value> {
    frames
        .iter()
        .filter(|f| f["requestId"] == request)
        .collect()
}

/// The UI chunks of `frames`, checking their sequences run 0, 1, 2 … .
fn ui<'a>(frames: &[&'a Value]) -> Vec<&'a Value> {
    let chunks: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "chunk")
        .map(|f| &f["chunk"])
        .collect();
    let seqs: Vec<u64> = frames
        .iter()
        .filter(|f| f["type"] == "chunk")
        .map(|f| f["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "no gaps");
    chunks
}

fn text(chunks: &[&Value]) -> String {
    chunks
        .iter()
        .filter(|c| c["type"] == "text-delta")
        .map(|c| c["delta"].as_str().unwrap())
        .collect()
}

#[test]
fn a_send_streams_its_reply_one_chunk_per_sequence_even_when_the_native_connection_gets_them_merged(
) {
    let mut w = World::new();
    let socket = w.connect(1, Some(Dialect::AiSdkWs));
    let native = w.connect(2, None);
    assert!(
        w.take_text(socket).is_empty(),
        "a socket says nothing first"
    );
    w.frame(socket, &send("r1", "session_1", "hi"));
    w.generate(GeneratorEvent::Delta("a".into()));
    // Four deltas at once: one append, one merged frame for the native
    // connection.
    let id = w.started.last().unwrap().clone();
    for d in ["b", "c", "d", "e"] {
        w.inbox.push_back(Input::Generator {
            message_id: id.clone(),
            event: GeneratorEvent::Delta(d.into()),
        });
    }
    w.settle();
    w.generate(GeneratorEvent::Finished { usage: None });
    let native_frames = w.frames.remove(&native).unwrap();
    assert!(
        native_frames
            .iter()
            .any(|f| matches!(f, ServerFrame::Chunk(c) if c.from_seq.is_some())),
        "the native connection got a merged chunk: {native_frames:?}"
    );
    let frames = w.take_json(socket);
    let r1 = of(&frames, "r1");
    let chunks = ui(&r1);
    let kinds: Vec<&str> = chunks.iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "start",
            "text-start",
            "text-delta",
            "text-delta",
            "text-delta",
            "text-delta",
            "text-delta",
            "text-end",
            "finish"
        ]
    );
    assert_eq!(chunks[0]["messageId"], id.as_str());
    let deltas: Vec<&str> = chunks
        .iter()
        .filter(|c| c["type"] == "text-delta")
        .map(|c| c["delta"].as_str().unwrap())
        .collect();
    assert_eq!(
        deltas,
        ["a", "b", "c", "d", "e"],
        "one weir chunk per sequence"
    );
    assert_eq!(r1.last().unwrap()["type"], "end");
}

#[test]
fn a_send_into_a_streaming_chat_is_an_error_and_the_first_reply_goes_on() {
    let mut w = World::new();
    let socket = w.connect(1, Some(Dialect::AiSdkWs));
    w.frame(socket, &send("r1", "session_1", "first"));
    w.generate(GeneratorEvent::Delta("one ".into()));
    w.frame(socket, &send("r2", "session_1", "second"));
    w.generate(GeneratorEvent::Delta("two".into()));
    w.generate(GeneratorEvent::Finished { usage: None });
    let frames = w.take_json(socket);
    let r2 = of(&frames, "r2");
    assert_eq!(r2.len(), 1, "{r2:?}");
    assert_eq!(r2[0]["type"], "error");
    assert!(r2[0]["errorText"].as_str().unwrap().contains("streaming"));
    let r1 = of(&frames, "r1");
    assert_eq!(text(&ui(&r1)), "one two");
    assert_eq!(w.started.len(), 1, "one reply");
}

#[test]
fn two_chats_interleave_on_one_socket_and_bad_frames_get_an_error_for_their_request() {
    let mut w = World::new();
    let socket = w.connect(1, Some(Dialect::AiSdkWs));
    w.frame(socket, &send("a", "chat_a", "x"));
    let first = w.started.last().unwrap().clone();
    w.frame(socket, &send("b", "chat_b", "y"));
    let second = w.started.last().unwrap().clone();
    w.frame(socket, "not json");
    w.frame(socket, r#"{"type":"nope","requestId":"bad"}"#);
    for (id, d) in [
        (&first, "A1"),
        (&second, "B1"),
        (&first, "A2"),
        (&second, "B2"),
    ] {
        w.feed(Input::Generator {
            message_id: id.clone(),
            event: GeneratorEvent::Delta(d.into()),
        });
    }
    for id in [&first, &second] {
        w.feed(Input::Generator {
            message_id: id.clone(),
            event: GeneratorEvent::Finished { usage: None },
        });
    }
    let frames = w.take_json(socket);
    assert_eq!(text(&ui(&of(&frames, "a"))), "A1A2");
    assert_eq!(text(&ui(&of(&frames, "b"))), "B1B2");
    assert_eq!(of(&frames, "bad")[0]["type"], "error");
    assert_eq!(
        of(&frames, "")[0]["type"],
        "error",
        "no requestId: {frames:?}"
    );
}

#[test]
fn abort_is_the_fenced_cancel_and_closing_the_socket_never_cancels() {
    let mut w = World::new();
    let socket = w.connect(1, Some(Dialect::AiSdkWs));
    w.frame(socket, &send("r1", "session_1", "stop me"));
    w.generate(GeneratorEvent::Delta("a".into()));
    w.frame(socket, r#"{"type":"abort","requestId":"r1"}"#);
    w.generate(GeneratorEvent::Delta("late".into()));
    w.advance(100);
    let frames = w.take_json(socket);
    let r1 = of(&frames, "r1");
    let chunks = ui(&r1);
    assert_eq!(text(&chunks), "a", "nothing after the fence");
    assert_eq!(chunks.last().unwrap()["type"], "abort");
    assert_eq!(r1.last().unwrap()["type"], "end");

    // A second reply; the socket goes away mid-reply: it completes.
    w.frame(socket, &send("r2", "session_1", "keep going"));
    w.generate(GeneratorEvent::Delta("b".into()));
    w.feed(Input::Disconnected { conn: socket });
    w.generate(GeneratorEvent::Delta("c".into()));
    w.generate(GeneratorEvent::Finished { usage: None });
    w.advance(100);
    let native = w.connect(3, None);
    let hist = w.frames.remove(&native).unwrap();
    let history = hist
        .iter()
        .find_map(|f| match f {
            ServerFrame::History(h) => Some(h.messages.clone()),
            _ => None,
        })
        .unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.content, "bc");
    assert_eq!(last.status, weir_core::wire::MessageStatus::Completed);
}
