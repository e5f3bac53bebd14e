//! An AI SDK event stream longer than the idle timeout, on tokio and smol: a
//! response has no inbound frames (no pongs), so its heartbeat is an SSE
//! comment whose write is the sign of life. Before, the response was cut at
//! `--idle-timeout` (60 s by default) while the reply went on, without
//! `[DONE]`, and the stock `DefaultChatTransport` took that as the end.

use weir_tests::{SseStream, WeirProcess};

weir_tests::both_runtimes! {
    an_event_stream_longer_than_the_idle_timeout_gets_every_chunk_and_done,
}

/// Demo chunks at 2 a second: 6 s of reply against a 2 s idle timeout.
const CHUNKS: u64 = 12;

async fn an_event_stream_longer_than_the_idle_timeout_gets_every_chunk_and_done() {
    let weir = WeirProcess::start(&[
        "--demo-chunks",
        &CHUNKS.to_string(),
        "--demo-rate",
        "2",
        "--heartbeat",
        "1",
        "--idle-timeout",
        "2",
    ]);
    let chat = format!(
        "long-{}-{}",
        weir_tests::Runtime::current().name(),
        std::process::id()
    );
    let mut stream = SseStream::post_chat(&weir, &chat, "a long one", &[], None).await;
    let events = stream.events().await;
    let deltas = events
        .iter()
        .filter(|e| e.data.contains("\"text-delta\""))
        .count() as u64;
    let last = events.last().map(|e| e.data.clone());
    assert_eq!(
        deltas, CHUNKS,
        "every chunk of a reply longer than the idle timeout arrives (last event {last:?})"
    );
    assert!(
        events.iter().any(|e| e.data.contains("\"finish\"")),
        "the reply finishes on the stream"
    );
    assert_eq!(last.as_deref(), Some("[DONE]"));
    assert!(stream.clean_end, "the body ends with its terminator");
}
