//! Slow consumers of the AI SDK transports (issue 14 point 2; PROTOCOL.md,
//! "AI SDK transports"; docs/ai-sdk.md, "Never merged"): the SDK rejects a
//! gap in `sequence`, so a socket or an event stream that cannot keep up is
//! closed — the server lets it go while its client still does not read —
//! rather than sent merged or missing chunks, and its client resumes
//! exactly: `lastSequence` on the socket, `Last-Event-ID` over HTTP.
//!
//! The stalled client has a 4 KiB receive buffer and stops reading after
//! the first text deltas of a long reply; the server's stall timeout is 1 s.
//! When the server has let the connection go (its connection gauge is back
//! to zero), the client reads what reached it: every UI chunk in sequence,
//! each `text-delta` exactly one chunk of the demo reply (a merged one
//! would carry two chunks' text, or none), then the end of the connection
//! without the reply's end. A resume after the last sequence it holds gets
//! exactly the rest, to `finish`. Every wait is bounded; nothing is timed.

use std::time::Duration;

use weir_tests::{json, AiSdkSocket, DemoText, SseStream, Value, WeirProcess};

/// A reply long enough to outlast the stall, the close and the resume
/// (about 20 s at 400 chunks/s; the resume needs it still streaming).
const CHUNKS: u32 = 8_000;
const RATE: &str = "400";
/// The stalled client's receive buffer.
const RCVBUF: u32 = 4096;
/// How long the server may take to let a stalled client go: its buffers
/// fill, the stall timeout (1 s), the close timeout (5 s), and room for a
/// loaded machine.
const LET_GO: Duration = Duration::from_secs(30);

fn start() -> WeirProcess {
    let chunks = CHUNKS.to_string();
    WeirProcess::start(&[
        "--demo-chunks",
        &chunks,
        "--demo-rate",
        RATE,
        "--queue-capacity",
        "16",
        "--stall-timeout",
        "1",
    ])
}

/// The chat's `id` for this test and runtime.
fn chat(what: &str) -> String {
    format!(
        "slow-{what}-{}-{}",
        weir_tests::Runtime::current().name(),
        std::process::id()
    )
}

/// Waits (at most [`LET_GO`]) until the server has no connection left: the
/// stalled one was let go while its client still does not read.
async fn until_let_go(weir: &WeirProcess) {
    let deadline = ::tokio::time::Instant::now() + LET_GO;
    loop {
        let m = weir.metrics().await;
        let (conns, closes) = (
            m.get("weir_connections"),
            m.get("weir_slow_consumer_closes_total"),
        );
        if conns == 0.0 && closes >= 1.0 {
            return;
        }
        assert!(
            ::tokio::time::Instant::now() < deadline,
            "the stalled client's connection is let go within {LET_GO:?}: \
             {conns} connections, {closes} slow-consumer closes"
        );
        ::tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks the UI chunks a client got, in order, as `(sequence, chunk)`:
/// sequences 0, 1, 2, … with no gap, `start`, `text-start`, then each
/// `text-delta` at sequence `s` exactly demo chunk `s - 1` of the reply to
/// `prompt`. Returns the last sequence and the text.
fn exact_prefix(prompt: &str, got: &[(u64, Value)], after: Option<u64>) -> (u64, String) {
    let demo = DemoText::new(prompt, CHUNKS);
    let mut expect = after.map_or(0, |n| n + 1);
    let mut text = String::new();
    for (sequence, chunk) in got {
        assert_eq!(
            *sequence,
            expect,
            "a gap or a repeat in sequence: {chunk} after {}",
            expect.wrapping_sub(1)
        );
        match (sequence, chunk["type"].as_str()) {
            (0, Some("start")) | (1, Some("text-start")) => {}
            (s, Some("text-delta")) => {
                let n = u32::try_from(s - 1).expect("a small sequence");
                assert_eq!(
                    chunk["delta"].as_str(),
                    Some(demo.chunk(n).as_str()),
                    "text-delta {s} is exactly chunk {n} (not merged, not empty)"
                );
                text.push_str(&demo.chunk(n));
            }
            (_, Some("text-end" | "finish")) => {}
            other => panic!("an unexpected UI chunk {other:?}: {chunk}"),
        }
        expect += 1;
    }
    (expect - 1, text)
}

/// Checks a resume after sequence `last`: exactly the rest of the reply
/// (checked as [`exact_prefix`]) to its `finish`, which with `head` is the
/// whole text.
fn exact_rest(prompt: &str, head: &str, rest: &[(u64, Value)], last: u64) {
    let (end, tail) = exact_prefix(prompt, rest, Some(last));
    assert_eq!(rest.last().map(|(_, c)| &c["type"]), Some(&json!("finish")));
    assert_eq!(
        end,
        u64::from(CHUNKS) + 3,
        "text-end and finish close the reply"
    );
    assert_eq!(
        format!("{head}{tail}"),
        DemoText::full(prompt, CHUNKS),
        "exactly the rest"
    );
}

async fn a_stalled_ai_sdk_socket_is_let_go_never_sent_merged_or_gapped_chunks_and_resumes_exactly_after_its_last_sequence(
) {
    let weir = start();
    let chat = chat("ws");
    let prompt = "a socket that stops reading";
    let mut stalled = AiSdkSocket::connect(&weir, "", Some(RCVBUF)).await;
    stalled.send_chat("r1", &chat, prompt).await;
    let mut got: Vec<(u64, Value)> = Vec::new();
    let mut message_id = String::new();
    // Reads up to the third text delta, then nothing.
    while got.len() < 5 {
        let f = stalled.next_frame().await;
        if f["type"] == "chunk" {
            if f["chunk"]["type"] == "start" {
                message_id = f["chunk"]["messageId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
            }
            got.push((
                f["sequence"].as_u64().expect("sequence"),
                f["chunk"].clone(),
            ));
        }
    }
    until_let_go(&weir).await;
    let close = loop {
        match stalled.next_text().await {
            Ok(text) => {
                let f: Value = serde_json::from_str(&text).expect("a JSON frame");
                assert_eq!(f["requestId"], "r1", "{f}");
                assert_eq!(f["type"], "chunk", "no end or error before the close: {f}");
                got.push((
                    f["sequence"].as_u64().expect("sequence"),
                    f["chunk"].clone(),
                ));
            }
            Err(code) => break code,
        }
    };
    // 4008 when the close frame was written before the server let go of
    // the socket; the end of the TCP stream (1006) when it was not.
    assert!(matches!(close, 4008 | 1006), "closed with {close}");
    let (last, head) = exact_prefix(prompt, &got, None);
    assert!(
        last < u64::from(CHUNKS) + 1,
        "the reply had not ended at the close"
    );
    eprintln!("stalled socket: closed ({close}) after sequence {last}");

    let mut again = AiSdkSocket::connect(&weir, "", None).await;
    again.resume("q1", &chat, Some(last)).await;
    let frames = again.until_request_done("q1").await;
    assert_eq!(
        frames[0]["type"], "start",
        "the reply still streams: {}",
        frames[0]
    );
    assert_eq!(frames.last().map(|f| &f["type"]), Some(&json!("end")));
    let rest: Vec<(u64, Value)> = frames
        .iter()
        .filter(|f| f["type"] == "chunk")
        .map(|f| {
            (
                f["sequence"].as_u64().expect("sequence"),
                f["chunk"].clone(),
            )
        })
        .collect();
    exact_rest(prompt, &head, &rest, last);
    assert!(!message_id.is_empty());
    again.close().await;
}

async fn a_stalled_ai_sdk_event_stream_is_let_go_never_sent_merged_or_gapped_chunks_and_resumes_exactly_after_its_last_event_id(
) {
    let weir = start();
    let chat = chat("sse");
    let prompt = "an event stream that stops reading";
    let mut stalled = SseStream::post_chat(&weir, &chat, prompt, &[], Some(RCVBUF)).await;
    assert_eq!(stalled.status, 200, "{}", stalled.head);
    let mut got: Vec<(u64, Value)> = Vec::new();
    while got.len() < 5 {
        let e = stalled.next_event().await.expect("an event");
        got.push((e.id.expect("an event id"), e.json()));
    }
    until_let_go(&weir).await;
    while let Some(e) = stalled.next_event().await {
        assert_ne!(
            e.data, "[DONE]",
            "the stream of a let-go client has no [DONE]"
        );
        got.push((e.id.expect("an event id"), e.json()));
    }
    let (last, head) = exact_prefix(prompt, &got, None);
    assert!(
        last < u64::from(CHUNKS) + 1,
        "the reply had not ended at the close"
    );
    eprintln!(
        "stalled event stream: ended (clean: {}) after event {last}",
        stalled.clean_end
    );

    let mut again = SseStream::resume(&weir, &chat, Some(last), &[]).await;
    assert_eq!(again.status, 200, "the reply still streams: {}", again.head);
    let mut events = again.events().await;
    let (n, clean) = (events.len(), again.clean_end);
    assert_eq!(
        events.pop().map(|e| e.data),
        Some("[DONE]".to_owned()),
        "the resumed stream ends with [DONE] ({n} events, clean end {clean})"
    );
    let rest: Vec<(u64, Value)> = events
        .iter()
        .map(|e| (e.id.expect("an event id"), e.json()))
        .collect();
    exact_rest(prompt, &head, &rest, last);
}

weir_tests::both_runtimes! {
    a_stalled_ai_sdk_socket_is_let_go_never_sent_merged_or_gapped_chunks_and_resumes_exactly_after_its_last_sequence,
    a_stalled_ai_sdk_event_stream_is_let_go_never_sent_merged_or_gapped_chunks_and_resumes_exactly_after_its_last_event_id,
}
