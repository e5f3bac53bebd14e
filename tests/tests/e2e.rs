//! End-to-end tests of the real `weir` process (`weir serve`), black box:
//! real WebSocket and HTTP clients over loopback, assertions on the JSON of
//! PROTOCOL.md. Each test starts its own process with the flags it needs.
//!
//! The binary must be built first (`cargo build -p weir-server --bin weir`;
//! `./scripts/test.sh` does it). No assertion is about time: every wait is
//! bounded, and tests that must act mid-reply use replies seconds longer
//! than the action needs, or cancel them once done with them.

use std::time::Duration;

use futures_util::StreamExt;

use weir_tests::tungstenite::Message;
use weir_tests::{
    chunks, chunks_of, contiguous, demo_prefix, eventually, json, now_secs, refusal_status, Client,
    DemoText, Frame, Signal, Value, WeirProcess, T,
};

/// Demo flags: replies of `chunks` chunks at `rate` chunks per second.
fn demo(chunks: u32, rate: u32) -> Vec<String> {
    vec![
        "--demo-chunks".to_owned(),
        chunks.to_string(),
        "--demo-rate".to_owned(),
        rate.to_string(),
    ]
}

fn start(args: &[String]) -> WeirProcess {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    WeirProcess::start(&args)
}

fn with(mut base: Vec<String>, extra: &[&str]) -> Vec<String> {
    base.extend(extra.iter().map(|s| (*s).to_owned()));
    base
}

/// The one frame of type `kind` among `frames`.
fn only<'a>(frames: &'a [Frame], kind: &str) -> &'a Frame {
    let found: Vec<&Frame> = frames.iter().filter(|f| f.is(kind)).collect();
    assert_eq!(found.len(), 1, "exactly one `{kind}` in {frames:#?}");
    found[0]
}

fn position(frames: &[Frame], kind: &str) -> usize {
    frames
        .iter()
        .position(|f| f.is(kind))
        .unwrap_or_else(|| panic!("a `{kind}` in {frames:#?}"))
}

/// The messages of `GET /v1/sessions/{session}/messages{query}`.
async fn list(weir: &WeirProcess, session: &str, query: &str) -> Vec<Value> {
    let r = weir
        .http(
            "GET",
            &format!("/v1/sessions/{session}/messages{query}"),
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.json();
    assert_eq!(body["session_id"], session);
    body["messages"]
        .as_array()
        .expect("a messages list")
        .clone()
}

/// Waits a little for anything that should not come, then asserts with a
/// ping barrier that nothing but its pong came.
async fn assert_nothing_more(ws: &mut Client, id: &str) {
    ::tokio::time::sleep(Duration::from_millis(250)).await;
    let extra = ws.ping(id).await;
    assert!(extra.is_empty(), "nothing more expected, got {extra:#?}");
}

// ---------------------------------------------------------------------------
// Chat
// ---------------------------------------------------------------------------

async fn chat_gets_ack_start_chunks_1_to_n_and_end_completed_with_the_demo_text_which_history_holds(
) {
    const N: u32 = 24;
    const PROMPT: &str = "tell me about weirs";
    let weir = start(&demo(N, 400));
    let mut ws = weir.ws("session_id=s1&user_id=alice").await;
    let hello = ws.hello.clone().expect("hello");
    assert_eq!(hello["protocol"], 1);
    assert_eq!(hello["session_id"], "s1");
    assert_eq!(hello["user_id"], "alice");
    assert!(!hello.str("connection_id").is_empty());
    assert!(!hello.str("node_id").is_empty());
    assert!(hello.u64("heartbeat_ms") > 0);
    assert_eq!(hello.u64("resume_window_ms"), 30_000, "the default grace");
    assert!(ws.history_messages().is_empty());

    ws.chat(PROMPT, "r1").await;
    let (frames, end) = ws.until_end().await;

    let ack = &frames[0];
    assert!(ack.is("ack"), "the first answer is the ack: {frames:#?}");
    assert_eq!(ack["request_id"], "r1");
    let mid = ack.str("message_id");
    let umid = ack.str("user_message_id");
    assert!(mid.len() <= 64 && umid.len() <= 64 && mid != umid);
    let user = only(&frames, "user_message");
    assert_eq!(user["message_id"], umid);
    assert_eq!(user["content"], PROMPT);
    assert_eq!(user["request_id"], "r1", "the sender's user_message");
    assert!(user.u64("created_at_ms") > 0);
    let start = only(&frames, "start");
    assert_eq!(start["message_id"], mid);
    assert_eq!(start["reply_to"], umid);
    let first_chunk = frames.iter().position(|f| f.is("chunk")).expect("chunks");
    assert!(position(&frames, "start") < first_chunk);

    let got = chunks(&frames);
    assert!(got.iter().all(|c| c.message_id == mid));
    assert!(
        got.iter().all(|c| c.from_seq.is_none()),
        "a reader that keeps up gets plain chunks"
    );
    let (text, last) = contiguous(0, &got);
    assert_eq!(last, u64::from(N));
    assert_eq!(text, DemoText::full(PROMPT, N));
    assert_eq!(end["message_id"], mid);
    assert_eq!(end["status"], "completed");
    assert_eq!(end.u64("final_seq"), u64::from(N));
    if let Some(usage) = end.get("usage") {
        assert_eq!(usage["completion_tokens"], N, "{end:?}");
    }

    // The history entry, over HTTP and in a new connection's `history`.
    let messages = list(&weir, "s1", "?user_id=alice").await;
    assert_eq!(messages.len(), 2, "{messages:#?}");
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["message_id"], umid);
    assert_eq!(messages[0]["content"], PROMPT);
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["message_id"], mid);
    assert_eq!(messages[1]["status"], "completed");
    assert_eq!(messages[1]["content"], text.as_str());
    assert_eq!(messages[1]["seq"], N);
    let again = weir.ws("session_id=s1&user_id=alice").await;
    assert_eq!(again.history_messages(), messages);

    // The same conversation name under another user is another conversation.
    let bob = weir.ws("session_id=s1&user_id=bob").await;
    assert!(bob.history_messages().is_empty());
}

// ---------------------------------------------------------------------------
// Cancel
// ---------------------------------------------------------------------------

async fn cancel_fences_every_connection_no_chunk_after_cancelled_and_repeated_cancels_answer_cancelled(
) {
    const N: u32 = 4000;
    const PROMPT: &str = "a long one";
    let weir = start(&demo(N, 200));
    let mut a = weir.ws("session_id=c1&user_id=u").await;
    let mut b = weir.ws("session_id=c1&user_id=u").await;
    a.chat(PROMPT, "r1").await;
    let mut a_frames = a.until_seq(None, 3).await;
    let mid = a_frames[0].str("message_id").to_owned();
    assert!(a_frames[0].is("ack"));

    a.cancel(Some(&mid), "k1").await;
    let ((a_rest, a_end), (b_frames, b_end)) = ::tokio::join!(a.until_end(), b.until_end());
    a_frames.extend(a_rest);

    // The asking connection: chunks 1..=final_seq, cancel_result, end.
    let at = position(&a_frames, "cancel_result");
    let result = &a_frames[at];
    assert_eq!(result["request_id"], "k1");
    assert_eq!(result["message_id"], mid.as_str());
    assert_eq!(result["status"], "cancelled");
    let final_seq = result.u64("final_seq");
    assert!(
        final_seq >= 3 && final_seq < u64::from(N),
        "mid-way: {final_seq}"
    );
    let (text, last) = contiguous(0, &chunks(&a_frames[..at]));
    assert_eq!(last, final_seq);
    assert_eq!(text, demo_prefix(PROMPT, N, final_seq));
    assert!(
        chunks(&a_frames[at..]).is_empty(),
        "a chunk after cancel_result"
    );
    assert_eq!(a_end["message_id"], mid.as_str());
    assert_eq!(a_end["status"], "cancelled");
    assert_eq!(a_end.u64("final_seq"), final_seq);

    // The watching connection: the same chunks, the same end, no answer.
    assert!(b_frames.iter().all(|f| !f.is("cancel_result")));
    let (b_text, b_last) = contiguous(0, &chunks_of(&b_frames, &mid));
    assert_eq!(b_last, final_seq);
    assert_eq!(b_text, text);
    assert_eq!(b_end["status"], "cancelled");
    assert_eq!(b_end.u64("final_seq"), final_seq);

    // Nothing of the reply follows, on either connection.
    assert_nothing_more(&mut a, "quiet-a").await;
    assert_nothing_more(&mut b, "quiet-b").await;

    // Repeated cancels, from either connection and over HTTP, answer the same.
    for (on_a, rid) in [(true, "k2"), (false, "k3"), (true, "k4")] {
        let ws = if on_a { &mut a } else { &mut b };
        ws.cancel(Some(&mid), rid).await;
        let again = ws.next_frame().await;
        assert!(again.is("cancel_result"), "{again:?}");
        assert_eq!(again["request_id"], rid);
        assert_eq!(again["message_id"], mid.as_str());
        assert_eq!(again["status"], "cancelled");
        assert_eq!(again.u64("final_seq"), final_seq);
    }
    let r = weir
        .http(
            "POST",
            "/v1/sessions/c1/cancel?user_id=u",
            &json!({"message_id": mid}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["status"], "cancelled");
    assert_eq!(r.json()["final_seq"], final_seq);
    assert_nothing_more(&mut a, "still-quiet-a").await;

    let messages = list(&weir, "c1", "?user_id=u").await;
    let reply = &messages[1];
    assert_eq!(reply["message_id"], mid.as_str());
    assert_eq!(reply["status"], "cancelled");
    assert_eq!(reply["seq"], final_seq);
    assert_eq!(reply["content"], text.as_str());
}

async fn cancel_after_completion_answers_completed_inside_the_grace_window_and_not_found_after_it()
{
    const N: u32 = 5;
    let weir = start(&with(demo(N, 500), &["--grace", "2"]));
    let mut ws = weir.ws("session_id=late&user_id=u").await;
    assert_eq!(
        ws.hello.as_ref().expect("hello").u64("resume_window_ms"),
        2_000
    );
    ws.chat("short", "r1").await;
    let (frames, end) = ws.until_end().await;
    let mid = frames[0].str("message_id").to_owned();
    assert_eq!(end["status"], "completed");

    // Inside the grace window: `completed` with the final seq, by id and
    // without one (the conversation's most recent reply).
    ws.cancel(Some(&mid), "k1").await;
    let r = ws.next_frame().await;
    assert!(r.is("cancel_result"), "{r:?}");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["message_id"], mid.as_str());
    assert_eq!(r.u64("final_seq"), u64::from(N));
    ws.cancel(None, "k2").await;
    let r = ws.next_frame().await;
    assert_eq!(r["request_id"], "k2");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["message_id"], mid.as_str());

    // After it: `not_found` (no message id, no final_seq). Until then every
    // answer is still `completed`.
    let mut i = 0;
    let last = loop {
        i += 1;
        let rid = format!("late-{i}");
        ws.cancel(Some(&mid), &rid).await;
        let r = ws.next_frame().await;
        assert_eq!(r["request_id"], rid.as_str());
        if r["status"] == "not_found" {
            break r;
        }
        assert_eq!(r["status"], "completed", "{r:?}");
        assert!(i < 200, "still {r:?} long after the grace window");
        ::tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(last["message_id"].is_null(), "{last:?}");
    assert!(last.get("final_seq").is_none_or(Value::is_null), "{last:?}");
    // The reply itself is still in history, and a resume of it now says it
    // expired, with the final text.
    let messages = list(&weir, "late", "?user_id=u").await;
    assert_eq!(messages[1]["status"], "completed");
    let mut again = weir
        .ws(&format!("session_id=late&user_id=u&resume={mid}:2"))
        .await;
    let r = again.next_frame().await;
    assert!(r.is("resume_unavailable"), "{r:?}");
    assert_eq!(r["message_id"], mid.as_str());
    assert_eq!(r["reason"], "expired");
    assert_eq!(r["snapshot"]["status"], "completed");
    assert_eq!(r["snapshot"]["seq"], N);
    assert_eq!(
        r["snapshot"]["content"],
        DemoText::full("short", N).as_str()
    );
}

async fn cancel_without_message_id_sent_right_after_chat_cancels_that_reply_before_its_chunks() {
    const N: u32 = 400;
    const PROMPT: &str = "never mind";
    let weir = start(&demo(N, 200));
    let mut ws = weir.ws("session_id=quick&user_id=u").await;
    // Both frames go out before anything is read: the cancel knows no id yet.
    ws.chat(PROMPT, "r1").await;
    ws.cancel(None, "k1").await;
    let (frames, end) = ws.until_end().await;

    let ack = only(&frames, "ack");
    let mid = ack.str("message_id");
    let at = position(&frames, "cancel_result");
    let result = &frames[at];
    assert_eq!(result["request_id"], "k1");
    assert_eq!(
        result["message_id"], mid,
        "it cancelled the reply of that chat"
    );
    assert_eq!(result["status"], "cancelled");
    let final_seq = result.u64("final_seq");
    assert!(final_seq < u64::from(N), "cancelled, not run to the end");
    let (text, last) = contiguous(0, &chunks(&frames[..at]));
    assert_eq!(last, final_seq);
    assert_eq!(text, demo_prefix(PROMPT, N, final_seq));
    assert!(
        chunks(&frames[at..]).is_empty(),
        "a chunk after cancel_result"
    );
    assert_eq!(end["message_id"], mid);
    assert_eq!(end["status"], "cancelled");
    assert_eq!(end.u64("final_seq"), final_seq);
    assert_nothing_more(&mut ws, "quiet").await;

    // The conversation is free again: a new chat streams.
    ws.chat("again", "r2").await;
    let frames = ws.until_seq(None, 1).await;
    assert!(frames[0].is("ack"), "{frames:#?}");
}

async fn cancel_of_an_unknown_message_id_answers_not_found() {
    let weir = start(&demo(5, 500));
    let mut ws = weir.ws("session_id=nf&user_id=u").await;
    ws.cancel(Some("no-such-reply"), "k1").await;
    let r = ws.next_frame().await;
    assert!(r.is("cancel_result"), "{r:?}");
    assert_eq!(r["request_id"], "k1");
    assert_eq!(r["status"], "not_found");
    assert!(r["message_id"].is_null(), "{r:?}");
    assert!(r.get("final_seq").is_none_or(Value::is_null), "{r:?}");
    // Nothing to cancel in a fresh conversation either.
    ws.cancel(None, "k2").await;
    let r = ws.next_frame().await;
    assert_eq!(r["request_id"], "k2");
    assert_eq!(r["status"], "not_found");
    // Over HTTP: 404 with status not_found.
    let r = weir
        .http(
            "POST",
            "/v1/sessions/nf/cancel?user_id=u",
            r#"{"message_id":"no-such-reply"}"#,
        )
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.json()["status"], "not_found");
    assert!(ws.ping("p").await.is_empty());
}

// ---------------------------------------------------------------------------
// Fan-out, snapshots, resume
// ---------------------------------------------------------------------------

async fn two_connections_get_the_whole_reply_and_a_late_joiner_gets_a_snapshot_then_every_chunk_once(
) {
    const N: u32 = 800;
    const PROMPT: &str = "for everyone";
    let full = DemoText::full(PROMPT, N);
    let weir = start(&demo(N, 400));
    let mut a = weir.ws("session_id=fan&user_id=u").await;
    let mut b = weir.ws("session_id=fan&user_id=u").await;
    a.chat(PROMPT, "r1").await;
    let mut a_frames = a.until_seq(None, 10).await;
    let mid = a_frames[0].str("message_id").to_owned();

    // The third connection, mid-reply: the reply is in `history` as a
    // streaming message holding chunks 1..=seq.
    let mut c = weir.ws("session_id=fan&user_id=u").await;
    let history = c.history_messages();
    assert_eq!(history.len(), 2, "{history:#?}");
    assert_eq!(history[0]["role"], "user");
    assert_eq!(history[0]["content"], PROMPT);
    let snapshot = &history[1];
    assert_eq!(snapshot["message_id"], mid.as_str());
    assert_eq!(
        snapshot["status"], "streaming",
        "the reply ended before the third connection joined: {snapshot}"
    );
    let seen = snapshot["seq"].as_u64().expect("seq");
    let snapshot_text = snapshot["content"].as_str().expect("content").to_owned();
    assert_eq!(snapshot_text, demo_prefix(PROMPT, N, seen));

    let ((a_rest, a_end), (b_frames, b_end), (c_frames, c_end)) =
        ::tokio::join!(a.until_end(), b.until_end(), c.until_end());
    a_frames.extend(a_rest);

    for (name, frames, end) in [("a", &a_frames, &a_end), ("b", &b_frames, &b_end)] {
        let (text, last) = contiguous(0, &chunks_of(frames, &mid));
        assert_eq!(last, u64::from(N), "{name}");
        assert_eq!(text, full, "{name}");
        assert_eq!(
            chunks(frames).len(),
            chunks_of(frames, &mid).len(),
            "{name}"
        );
        assert_eq!(only(frames, "start")["message_id"], mid.as_str(), "{name}");
        assert_eq!(end["status"], "completed", "{name}");
        assert_eq!(end.u64("final_seq"), u64::from(N), "{name}");
    }
    // The late joiner: exactly seq + 1 ..= N after the snapshot, no repeats.
    let (tail, last) = contiguous(seen, &chunks_of(&c_frames, &mid));
    assert_eq!(last, u64::from(N));
    assert_eq!(format!("{snapshot_text}{tail}"), full);
    assert_eq!(c_end["message_id"], mid.as_str());
    assert_eq!(c_end["status"], "completed");
    assert_eq!(c_end.u64("final_seq"), u64::from(N));
}

async fn resume_on_connect_delivers_exactly_the_chunks_after_seq_and_the_end_live_and_settled() {
    const N: u32 = 600;
    const PROMPT: &str = "keep going";
    let full = DemoText::full(PROMPT, N);
    let weir = start(&demo(N, 300));
    let mut a = weir.ws("session_id=rc&user_id=u").await;
    a.chat(PROMPT, "r1").await;
    let frames = a.until_seq(None, 10).await;
    let mid = frames[0].str("message_id").to_owned();
    let (had, seq) = contiguous(0, &chunks(&frames));
    // The client goes away mid-reply and comes back with resume=MID:SEQ.
    a.close().await;

    let mut b = weir
        .ws(&format!("session_id=rc&user_id=u&resume={mid}:{seq}"))
        .await;
    let history = b.history_messages();
    assert!(
        history.iter().all(|m| m["message_id"] != mid.as_str()),
        "the resumed reply is left out of history: {history:#?}"
    );
    let (frames, end) = b.until_end().await;
    let (rest, last) = contiguous(seq, &chunks_of(&frames, &mid));
    assert_eq!(last, u64::from(N));
    assert_eq!(format!("{had}{rest}"), full);
    assert_eq!(end["message_id"], mid.as_str());
    assert_eq!(end["status"], "completed");
    assert_eq!(end.u64("final_seq"), u64::from(N));

    // Once settled (inside the resume window), from any seq.
    for after in [0, 1, 250, u64::from(N) - 1] {
        let mut c = weir
            .ws(&format!("session_id=rc&user_id=u&resume={mid}:{after}"))
            .await;
        let (frames, end) = c.until_end().await;
        let (rest, last) = contiguous(after, &chunks_of(&frames, &mid));
        assert_eq!(last, u64::from(N), "after {after}");
        assert_eq!(
            rest,
            full[demo_prefix(PROMPT, N, after).len()..],
            "after {after}"
        );
        assert_eq!(end["status"], "completed");
        assert_eq!(end.u64("final_seq"), u64::from(N));
        assert!(
            c.ping("p").await.is_empty(),
            "after {after}: nothing after end"
        );
    }
    // At the end already: just the end.
    let mut d = weir
        .ws(&format!("session_id=rc&user_id=u&resume={mid}:{N}"))
        .await;
    let (frames, end) = d.until_end().await;
    assert!(chunks(&frames).is_empty(), "{frames:#?}");
    assert_eq!(end.u64("final_seq"), u64::from(N));
}

async fn resume_frame_delivers_exactly_the_chunks_after_seq_and_the_end_and_unknown_is_unavailable()
{
    const N: u32 = 60;
    const PROMPT: &str = "resume by frame";
    let full = DemoText::full(PROMPT, N);
    let weir = start(&demo(N, 400));
    let mut a = weir.ws("session_id=rf&user_id=u").await;
    a.chat(PROMPT, "r1").await;
    let (frames, end) = a.until_end().await;
    let mid = frames[0].str("message_id").to_owned();
    assert_eq!(end["status"], "completed");

    // On an open connection, for each seq: exactly seq + 1 ..= N, then end.
    let mut b = weir.ws("session_id=rf&user_id=u").await;
    for after in [0, 17, u64::from(N) - 1, u64::from(N)] {
        b.send_json(json!({"type": "resume", "message_id": mid, "after_seq": after}))
            .await;
        let (frames, end) = b.until_end().await;
        assert!(
            frames.iter().all(|f| f.is("chunk")),
            "after {after}: only chunks before the end: {frames:#?}"
        );
        let (rest, last) = contiguous(after, &chunks_of(&frames, &mid));
        assert_eq!(last, u64::from(N), "after {after}");
        assert_eq!(
            rest,
            full[demo_prefix(PROMPT, N, after).len()..],
            "after {after}"
        );
        assert_eq!(end["message_id"], mid.as_str());
        assert_eq!(end["status"], "completed");
        assert_eq!(end.u64("final_seq"), u64::from(N));
        assert!(
            b.ping(&format!("p{after}")).await.is_empty(),
            "after {after}: nothing after end"
        );
    }

    // An id this conversation never had.
    b.send_json(json!({"type": "resume", "message_id": "no-such-reply", "after_seq": 3}))
        .await;
    let r = b.next_frame().await;
    assert!(r.is("resume_unavailable"), "{r:?}");
    assert_eq!(r["message_id"], "no-such-reply");
    assert_eq!(r["reason"], "unknown");
    // The same on connect.
    let mut c = weir
        .ws("session_id=rf&user_id=u&resume=no-such-reply:3")
        .await;
    let r = c.next_frame().await;
    assert!(r.is("resume_unavailable"), "{r:?}");
    assert_eq!(r["reason"], "unknown");
    assert!(c.ping("p").await.is_empty());
}

// ---------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------

/// Sends `frame` and expects exactly one `error` of `code` (with
/// `request_id` when given) and nothing else, then a working ping.
async fn expect_error(ws: &mut Client, frame: String, code: &str, request_id: Option<&str>) {
    ws.send_text(frame.clone()).await;
    let e = ws.next_frame().await;
    assert!(e.is("error"), "{frame:.80} → {e:?}");
    assert_eq!(e["code"], code, "{frame:.80} → {e:?}");
    assert!(!e.str("message").is_empty());
    match request_id {
        Some(id) => assert_eq!(e["request_id"], id, "{e:?}"),
        None => assert!(e.get("request_id").is_none_or(Value::is_null), "{e:?}"),
    }
    let extra = ws.ping("still-there").await;
    assert!(extra.is_empty(), "after {frame:.80}: {extra:#?}");
}

async fn bad_input_gets_its_specific_answer_and_the_connection_and_others_stay_usable() {
    const N: u32 = 400;
    let weir = start(&demo(N, 400));
    // Another conversation streams a reply through all of this.
    let mut other = weir.ws("session_id=bystander&user_id=v").await;
    other.chat("unbothered", "o1").await;
    let other_read = ::tokio::spawn(async move {
        let result = other.until_end().await;
        (other, result)
    });

    let mut ws = weir.ws("session_id=bad&user_id=u").await;
    expect_error(&mut ws, "{not json".to_owned(), "bad_request", None).await;
    expect_error(&mut ws, "[1,2]".to_owned(), "bad_request", None).await;
    expect_error(
        &mut ws,
        json!({"type": "launch", "request_id": "t1"}).to_string(),
        "bad_request",
        Some("t1"),
    )
    .await;
    expect_error(
        &mut ws,
        json!({"request_id": "t2"}).to_string(),
        "bad_request",
        Some("t2"),
    )
    .await;
    expect_error(
        &mut ws,
        json!({"type": "chat", "request_id": "m1"}).to_string(),
        "bad_request",
        Some("m1"),
    )
    .await;
    expect_error(
        &mut ws,
        json!({"type": "chat", "content": 42, "request_id": "m2"}).to_string(),
        "bad_request",
        Some("m2"),
    )
    .await;
    expect_error(
        &mut ws,
        json!({"type": "chat", "content": "   ", "request_id": "m3"}).to_string(),
        "bad_request",
        Some("m3"),
    )
    .await;
    expect_error(
        &mut ws,
        json!({"type": "resume", "message_id": "x", "request_id": "m4"}).to_string(),
        "bad_request",
        Some("m4"),
    )
    .await;
    expect_error(
        &mut ws,
        json!({"type": "resume", "message_id": "x", "after_seq": -1}).to_string(),
        "bad_request",
        None,
    )
    .await;
    // Over-long content (the default limit is 32 KiB; the frame is under
    // 64 KiB): too_large, and the connection stays.
    expect_error(
        &mut ws,
        json!({"type": "chat", "content": "w".repeat(40_000), "request_id": "big"}).to_string(),
        "too_large",
        Some("big"),
    )
    .await;
    // A binary message is not a frame of the protocol.
    ws.send_message(Message::binary(vec![0u8, 1, 2])).await;
    let e = ws.next_frame().await;
    assert_eq!(e["code"], "bad_request", "{e:?}");
    assert!(ws.ping("after-binary").await.is_empty());
    assert!(
        list(&weir, "bad", "?user_id=u").await.is_empty(),
        "no bad input made a turn"
    );

    // A chat with an idempotency key streams; a second chat meanwhile is
    // `busy`; the same key again gets the original ack and no second reply.
    ws.send_json(json!({"type": "chat", "content": "first", "request_id": "c1", "client_message_id": "cm-1"}))
        .await;
    let mut frames = ws.until_seq(None, 2).await;
    let ack = frames[0].clone();
    assert!(ack.is("ack"), "{frames:#?}");
    let mid = ack.str("message_id").to_owned();
    ws.chat("second", "c2").await;
    ws.send_json(json!({"type": "chat", "content": "first", "request_id": "c3", "client_message_id": "cm-1"}))
        .await;
    let (rest, end) = ws.until_end().await;
    frames.extend(rest);
    let busy: Vec<&Frame> = frames.iter().filter(|f| f.is("error")).collect();
    assert_eq!(busy.len(), 1, "{frames:#?}");
    assert_eq!(busy[0]["code"], "busy");
    assert_eq!(busy[0]["request_id"], "c2");
    let acks: Vec<&Frame> = frames.iter().filter(|f| f.is("ack")).collect();
    assert_eq!(acks.len(), 2, "{frames:#?}");
    assert_eq!(acks[1]["message_id"], mid.as_str(), "the same ack");
    assert_eq!(
        acks[1]["user_message_id"], ack["user_message_id"],
        "the same ack"
    );
    assert_eq!(frames.iter().filter(|f| f.is("start")).count(), 1);
    assert_eq!(frames.iter().filter(|f| f.is("user_message")).count(), 1);
    let (text, last) = contiguous(0, &chunks(&frames));
    assert_eq!(last, u64::from(N));
    assert_eq!(text, DemoText::full("first", N));
    assert_eq!(end["message_id"], mid.as_str());
    assert_eq!(end["status"], "completed");
    // After it ended: the key still gets the original ack, and only that.
    ws.send_json(json!({"type": "chat", "content": "first", "request_id": "c4", "client_message_id": "cm-1"}))
        .await;
    let again = ws.next_frame().await;
    assert!(again.is("ack"), "{again:?}");
    assert_eq!(again["message_id"], mid.as_str());
    assert_eq!(again["user_message_id"], ack["user_message_id"]);
    assert_nothing_more(&mut ws, "no-second-reply").await;
    assert_eq!(
        list(&weir, "bad", "?user_id=u").await.len(),
        2,
        "one turn, one reply"
    );

    // The bystander got its whole reply, and still answers.
    let (mut other, (frames, end)) = ::tokio::time::timeout(T, other_read)
        .await
        .expect("the bystander's reply ends in time")
        .expect("the bystander's task");
    let (text, _) = contiguous(0, &chunks(&frames));
    assert_eq!(text, DemoText::full("unbothered", N));
    assert_eq!(end["status"], "completed");
    assert!(other.ping("fine").await.is_empty());
}

async fn oversized_frame_closes_that_connection_with_1009_and_others_are_unaffected() {
    const N: u32 = 300;
    let weir = start(&with(
        demo(N, 300),
        &["--max-frame-bytes", "4096", "--max-content-bytes", "1024"],
    ));
    let mut other = weir.ws("session_id=calm&user_id=v").await;
    other.chat("calm", "o1").await;
    let mut same = weir.ws("session_id=big&user_id=u").await;
    let mut ws = weir.ws("session_id=big&user_id=u").await;

    ws.send_text("x".repeat(8000)).await;
    let (frames, code) = ws.frames_until_close().await;
    assert_eq!(code, 1009);
    assert!(
        frames
            .iter()
            .all(|f| f.is("error") && f["code"] == "too_large"),
        "{frames:#?}"
    );

    // Another connection of the same conversation and one of another
    // conversation (streaming all the while) carry on.
    assert!(same.ping("same").await.is_empty());
    let (frames, end) = other.until_end().await;
    let (text, _) = contiguous(0, &chunks(&frames));
    assert_eq!(text, DemoText::full("calm", N));
    assert_eq!(end["status"], "completed");
    assert!(other.ping("other").await.is_empty());
    let mut fresh = weir.ws("session_id=big&user_id=u").await;
    assert!(fresh.ping("fresh").await.is_empty());
}

async fn bad_session_id_is_refused_with_http_400_before_upgrade() {
    let weir = start(&demo(3, 500));
    let long = "s".repeat(129);
    for query in [
        "session_id=a%20b".to_owned(),
        "session_id=".to_owned(),
        "user_id=u".to_owned(),
        "session_id=a/b".to_owned(),
        "session_id=%C3%A9t%C3%A9".to_owned(),
        format!("session_id={long}"),
    ] {
        let refused = weir.try_connect(&query).await;
        assert_eq!(refusal_status(&refused), 400, "{query}");
    }
    // The longest valid id and every allowed character pass.
    let ok = format!("session_id={}", "s".repeat(128));
    let mut ws = weir.ws(&ok).await;
    assert!(ws.ping("ok").await.is_empty());
    let mut ws = weir.ws("session_id=Az09_-.:x").await;
    assert!(ws.ping("ok").await.is_empty());
    // The HTTP API refuses it too.
    let r = weir
        .http("POST", "/v1/sessions/a%20b/messages", r#"{"content":"x"}"#)
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json()["code"], "bad_request");
}

// ---------------------------------------------------------------------------
// A slow reader
// ---------------------------------------------------------------------------

async fn client_that_stops_reading_gets_merged_chunks_then_4008_and_resumes_every_byte() {
    // About 4 s of reply, ~2.5 MB/s of frames: the socket buffers (a few MB
    // on loopback) fill while it is still being produced.
    const N: u32 = 100_000;
    const PROMPT: &str = "slow";
    let weir = start(&with(demo(N, 25_000), &["--queue-capacity", "8"]));
    let mut ws = weir
        .connect_small_buffer("session_id=slow&user_id=snail", 4096)
        .await;
    ws.handshake().await;
    ws.chat(PROMPT, "r1").await;

    // Stop reading. Once the socket buffers are full the connection's queue
    // fills, and further chunks merge into its tail.
    eventually("chunk frames merge", || async {
        weir.metrics().await.get("weir_merged_frames_total") > 0.0
    })
    .await;
    // Pongs cannot merge: a burst of them overflows a full queue, and the
    // server closes the connection with 4008. (A merge alone does not say
    // the writer is stuck for good: on another thread it may still drain
    // into the socket buffers for a while, and the pongs go out. So: keep
    // pinging.)
    let deadline = ::tokio::time::Instant::now() + T;
    for batch in 0_u32.. {
        for i in 0..20 {
            ws.send_json(json!({"type": "ping", "id": batch * 20 + i}))
                .await;
        }
        if weir.metrics().await.get("weir_slow_consumer_closes_total") >= 1.0 {
            break;
        }
        assert!(
            ::tokio::time::Instant::now() < deadline,
            "no slow-consumer close after {} pings",
            (batch + 1) * 20
        );
        ::tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Read again: what was queued, then the close.
    let (frames, code) = ws.frames_until_close().await;
    assert_eq!(code, 4008);
    let got = chunks(&frames);
    assert!(
        got.iter().any(|c| c.from_seq.is_some()),
        "a merged chunk frame"
    );
    let mid = got[0].message_id.clone();
    let (mut text, last) = contiguous(0, &got);
    assert!(last >= 1 && last < u64::from(N), "stopped mid-way: {last}");
    drop(ws);

    // Resume where it stopped: exactly the rest, every byte.
    let mut ws = weir
        .ws(&format!(
            "session_id=slow&user_id=snail&resume={mid}:{last}"
        ))
        .await;
    let (frames, end) = ws.until_end().await;
    let (tail, final_seq) = contiguous(last, &chunks_of(&frames, &mid));
    text.push_str(&tail);
    assert_eq!(final_seq, u64::from(N));
    assert_eq!(end["status"], "completed");
    assert_eq!(end.u64("final_seq"), u64::from(N));
    assert_eq!(text, DemoText::full(PROMPT, N));
    // Counted by the driver after it queued the frames, which another thread
    // may already have sent.
    eventually("an exact resume counted", || async {
        weir.metrics()
            .await
            .get("weir_resumes_total{exact=\"true\"}")
            >= 1.0
    })
    .await;
}

// ---------------------------------------------------------------------------
// Token auth
// ---------------------------------------------------------------------------

const SECRET: &str = "e2e-test-secret";

fn jwt(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode a JWT")
}

fn token_for(user: &str) -> String {
    jwt(SECRET, &json!({"sub": user, "exp": now_secs() + 3600}))
}

fn auth_flags(base: Vec<String>) -> Vec<String> {
    with(base, &["--auth", "token", "--jwt-secret", SECRET])
}

async fn token_auth_refuses_missing_expired_and_wrongly_signed_tokens_with_401_before_upgrade() {
    let weir = start(&auth_flags(demo(3, 500)));
    let exp = now_secs() + 3600;
    let expired = jwt(SECRET, &json!({"sub": "bob", "exp": now_secs() - 120}));
    let forged = jwt("another secret", &json!({"sub": "bob", "exp": exp}));
    let no_exp = jwt(SECRET, &json!({"sub": "bob"}));
    let refusals = [
        ("no token", "session_id=a".to_owned()),
        ("user_id instead", "session_id=a&user_id=bob".to_owned()),
        ("expired", format!("session_id=a&token={expired}")),
        ("wrong key", format!("session_id=a&token={forged}")),
        ("no exp", format!("session_id=a&token={no_exp}")),
        ("not a JWT", "session_id=a&token=not-a-jwt".to_owned()),
    ];
    for (what, query) in &refusals {
        assert_eq!(
            refusal_status(&weir.try_connect(query).await),
            401,
            "{what}"
        );
    }
    for bad in [&expired, &forged] {
        let r = weir
            .try_connect_with_headers(
                "session_id=a",
                &[("authorization", &format!("Bearer {bad}"))],
            )
            .await;
        assert_eq!(refusal_status(&r), 401, "header token");
    }
    // The HTTP API: 401 with the protocol's error body.
    let r = weir.http("GET", "/v1/sessions/a/messages", "").await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.json()["code"], "unauthorized");
    let r = weir
        .http(
            "GET",
            &format!("/v1/sessions/a/messages?token={forged}"),
            "",
        )
        .await;
    assert_eq!(r.status, 401, "{r:?}");

    // A good token, as the query parameter or the header, names the user.
    let good = token_for("bob");
    let ws = weir.ws(&format!("session_id=a&token={good}")).await;
    assert_eq!(ws.hello.as_ref().expect("hello")["user_id"], "bob");
    let mut ws = weir
        .try_connect_with_headers(
            "session_id=a",
            &[("authorization", &format!("Bearer {good}"))],
        )
        .await
        .expect("a header token upgrades");
    let (hello, _) = ws.handshake().await;
    assert_eq!(hello["user_id"], "bob");
    let r = weir
        .http_with_headers(
            "GET",
            "/v1/sessions/a/messages",
            &[("Authorization", &format!("Bearer {good}"))],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
}

async fn token_auth_keeps_another_users_conversation_invisible_and_their_ids_not_found() {
    const N: u32 = 400;
    const PROMPT: &str = "private";
    let weir = start(&auth_flags(demo(N, 400)));
    let alice = token_for("alice");
    let mallory = token_for("mallory");
    let mut a = weir.ws(&format!("session_id=shared&token={alice}")).await;
    a.chat(PROMPT, "r1").await;
    let mut a_frames = a.until_seq(None, 3).await;
    let mid = a_frames[0].str("message_id").to_owned();

    // Mallory, same session name, while alice's reply streams.
    let mut m = weir.ws(&format!("session_id=shared&token={mallory}")).await;
    assert!(
        m.history_messages().is_empty(),
        "alice's turn is not visible"
    );
    m.cancel(Some(&mid), "steal").await;
    let r = m.next_frame().await;
    assert!(r.is("cancel_result"), "{r:?}");
    assert_eq!(r["status"], "not_found");
    assert!(r["message_id"].is_null());
    m.send_json(json!({"type": "resume", "message_id": mid, "after_seq": 0}))
        .await;
    let r = m.next_frame().await;
    assert!(r.is("resume_unavailable"), "{r:?}");
    assert!(r.get("snapshot").is_none_or(Value::is_null), "{r:?}");
    let r = weir
        .http(
            "POST",
            &format!("/v1/sessions/shared/cancel?token={mallory}"),
            &json!({"message_id": mid}).to_string(),
        )
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.json()["status"], "not_found");
    let r = weir
        .http(
            "GET",
            &format!("/v1/sessions/shared/messages?token={mallory}"),
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["messages"], json!([]));
    let r = weir
        .http(
            "GET",
            &format!("/v1/users/alice/presence?token={mallory}"),
            "",
        )
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    let mut resumer = weir
        .ws(&format!("session_id=shared&token={mallory}&resume={mid}:0"))
        .await;
    let r = resumer.next_frame().await;
    assert!(r.is("resume_unavailable"), "{r:?}");
    assert!(m.ping("nothing-of-alice").await.is_empty());

    // Alice's reply went on untouched, and only she sees it.
    let (rest, end) = a.until_end().await;
    a_frames.extend(rest);
    let (text, last) = contiguous(0, &chunks(&a_frames));
    assert_eq!(last, u64::from(N));
    assert_eq!(text, DemoText::full(PROMPT, N));
    assert_eq!(end["status"], "completed");
    let r = weir
        .http(
            "GET",
            &format!("/v1/sessions/shared/messages?token={alice}"),
            "",
        )
        .await;
    assert_eq!(r.json()["messages"].as_array().map(Vec::len), Some(2));
    assert_nothing_more(&mut m, "still-nothing").await;
}

// ---------------------------------------------------------------------------
// HTTP API, readiness, metrics
// ---------------------------------------------------------------------------

async fn http_api_posts_a_message_cancels_it_and_lists_messages_that_websockets_also_see() {
    const N: u32 = 4000;
    let weir = start(&with(demo(N, 200), &["--max-content-bytes", "1000"]));
    let mut watcher = weir.ws("session_id=h1&user_id=carol").await;

    let r = weir
        .http(
            "POST",
            "/v1/sessions/h1/messages?user_id=carol",
            r#"{"content":"via http"}"#,
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let accepted = r.json();
    let mid = accepted["message_id"]
        .as_str()
        .expect("message_id")
        .to_owned();
    let umid = accepted["user_message_id"]
        .as_str()
        .expect("user_message_id")
        .to_owned();

    // A WebSocket of the conversation sees the turn and the reply stream.
    let mut frames = watcher.until_seq(None, 3).await;
    let user = only(&frames, "user_message");
    assert_eq!(user["message_id"], umid.as_str());
    assert_eq!(user["content"], "via http");
    assert_eq!(only(&frames, "start")["message_id"], mid.as_str());

    // While it streams: another post is busy (409).
    let r = weir
        .http(
            "POST",
            "/v1/sessions/h1/messages?user_id=carol",
            r#"{"content":"more"}"#,
        )
        .await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(r.json()["code"], "busy");

    // Cancel over HTTP: 200 cancelled with the final seq; the WebSocket's
    // chunks stop exactly there.
    let r = weir
        .http(
            "POST",
            "/v1/sessions/h1/cancel?user_id=carol",
            &json!({"message_id": mid}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.json();
    assert_eq!(body["message_id"], mid.as_str());
    assert_eq!(body["status"], "cancelled");
    let final_seq = body["final_seq"].as_u64().expect("final_seq");
    let (rest, end) = watcher.until_end().await;
    frames.extend(rest);
    let (text, last) = contiguous(0, &chunks(&frames));
    assert_eq!(last, final_seq);
    assert_eq!(end["status"], "cancelled");
    assert_eq!(end.u64("final_seq"), final_seq);

    // An idempotent post: the same key answers the same ids.
    let post = json!({"content": "again", "client_message_id": "cm-h"}).to_string();
    let r = weir
        .http("POST", "/v1/sessions/h1/messages?user_id=carol", &post)
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let second = r.json();
    let r = weir
        .http("POST", "/v1/sessions/h1/messages?user_id=carol", &post)
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.json()["message_id"], second["message_id"]);
    assert_eq!(r.json()["user_message_id"], second["user_message_id"]);
    // Cancel without an id: the live reply.
    let r = weir
        .http("POST", "/v1/sessions/h1/cancel?user_id=carol", "{}")
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["message_id"], second["message_id"]);
    assert_eq!(r.json()["status"], "cancelled");
    let second_final = r.json()["final_seq"].as_u64().expect("final_seq");
    let (_, end) = watcher.until_end().await;
    assert_eq!(end["status"], "cancelled");

    // The list: both turns and both replies, oldest first.
    let messages = list(&weir, "h1", "?user_id=carol").await;
    assert_eq!(messages.len(), 4, "{messages:#?}");
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(messages[0]["message_id"], umid.as_str());
    assert_eq!(messages[1]["message_id"], mid.as_str());
    assert_eq!(messages[1]["status"], "cancelled");
    assert_eq!(messages[1]["seq"], final_seq);
    assert_eq!(messages[1]["content"], text.as_str());
    assert_eq!(messages[2]["content"], "again");
    assert_eq!(messages[3]["message_id"], second["message_id"]);
    assert_eq!(messages[3]["seq"], second_final);
    assert_eq!(
        messages[3]["content"],
        demo_prefix("again", N, second_final).as_str()
    );
    // Another user sees none of it.
    assert!(list(&weir, "h1", "?user_id=dave").await.is_empty());

    // Errors: unknown id 404, bad JSON 400, over-long content 413.
    let r = weir
        .http(
            "POST",
            "/v1/sessions/h1/cancel?user_id=carol",
            r#"{"message_id":"nope"}"#,
        )
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.json()["status"], "not_found");
    let r = weir
        .http("POST", "/v1/sessions/h1/messages?user_id=carol", "{")
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json()["code"], "bad_request");
    let big = json!({"content": "y".repeat(2000)}).to_string();
    let r = weir
        .http("POST", "/v1/sessions/h1/messages?user_id=carol", &big)
        .await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.json()["code"], "too_large");
}

async fn healthz_and_readyz_answer_200_the_page_is_served_and_metrics_counters_move() {
    const N: u32 = 12;
    let weir = start(&demo(N, 400));
    let r = weir.http("GET", "/healthz", "").await;
    assert_eq!(r.status, 200);
    let r = weir.http("GET", "/readyz", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = weir.http("GET", "/", "").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|v| v.starts_with("text/html")));
    assert!(r.body.contains("id=\"send\"") && r.body.contains("id=\"cancel\""));

    let r = weir.http("GET", "/metrics", "").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|v| v.starts_with("text/plain")),
        "{r:?}"
    );
    let m0 = weir.metrics().await;
    assert_eq!(m0.get("weir_connections"), 0.0);
    assert_eq!(m0.get("weir_replies_total{outcome=\"completed\"}"), 0.0);
    assert_eq!(m0.get("weir_replies_total{outcome=\"cancelled\"}"), 0.0);
    assert_eq!(m0.get("weir_chunks_sent_total"), 0.0);

    // Two connections: the gauge moves.
    let mut a = weir.ws("session_id=m1&user_id=u").await;
    let mut b = weir.ws("session_id=m1&user_id=u").await;
    eventually("two connections", || async {
        weir.metrics().await.get("weir_connections") == 2.0
    })
    .await;

    // A completed reply fanned out to both: N chunks sent to each.
    a.chat("count me", "r1").await;
    let ((_, end), _) = ::tokio::join!(a.until_end(), b.until_end());
    assert_eq!(end["status"], "completed");
    eventually("a completed reply and its chunks counted", || async {
        let m = weir.metrics().await;
        m.get("weir_replies_total{outcome=\"completed\"}") == 1.0
            && m.get("weir_chunks_sent_total") >= f64::from(2 * N)
    })
    .await;

    // A cancelled reply (a long one on another conversation).
    let mut c = weir.ws("session_id=m2&user_id=u").await;
    c.send_json(json!({"type": "chat", "content": "cut", "request_id": "r2"}))
        .await;
    c.cancel(None, "k").await;
    let (_, end) = c.until_end().await;
    assert_eq!(end["status"], "cancelled");
    // A resume served exactly.
    let mid = end.str("message_id").to_owned();
    let mut d = weir
        .ws(&format!("session_id=m2&user_id=u&resume={mid}:0"))
        .await;
    let (_, end) = d.until_end().await;
    assert_eq!(end["status"], "cancelled");
    eventually("the cancel and the resume counted", || async {
        let m = weir.metrics().await;
        m.get("weir_replies_total{outcome=\"cancelled\"}") == 1.0
            && m.get("weir_cancel_quiet_seconds_count") >= 1.0
            && m.get("weir_resumes_total{exact=\"true\"}") >= 1.0
    })
    .await;

    // Connections closed: the gauge comes back to 0.
    for ws in [a, b, c, d] {
        ws.close().await;
    }
    eventually("no connections", || async {
        weir.metrics().await.get("weir_connections") == 0.0
    })
    .await;
}

// ---------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------

async fn sigterm_closes_every_client_with_1001_and_the_process_exits_0() {
    let mut weir = start(&with(demo(4000, 200), &["--shutdown-grace", "5"]));
    let mut idle = weir.ws("session_id=g1&user_id=u").await;
    let mut busy = weir.ws("session_id=g2&user_id=u").await;
    busy.chat("go on", "r1").await;
    let _ = busy.until_seq(None, 2).await;

    weir.signal(Signal::Term);
    let ((_, idle_code), (_, busy_code)) =
        ::tokio::join!(idle.frames_until_close(), busy.frames_until_close());
    assert_eq!(idle_code, 1001);
    assert_eq!(busy_code, 1001);
    let status = weir.wait_exit(T).await;
    assert!(status.success(), "exit status {status}");
    assert_eq!(status.code(), Some(0));
    // It no longer listens.
    assert!(::tokio::net::TcpStream::connect(weir.addr()).await.is_err());
}

async fn server_pings_and_a_silent_client_is_closed_with_4000_after_the_idle_timeout() {
    let weir = start(&with(
        demo(4, 200),
        &["--heartbeat", "0.2", "--idle-timeout", "1"],
    ));
    let mut lively = weir.ws("session_id=i1&user_id=u").await;
    let mut silent = weir.ws("session_id=i2&user_id=u").await;
    // The lively client keeps reading (which answers the server's pings with
    // pongs) and sends a JSON ping now and then: it stays open past the
    // idle timeout. The silent client does not read at all, so it never
    // pongs: it must be closed with 4000.
    let mut pings = 0;
    let deadline = ::tokio::time::Instant::now() + Duration::from_millis(2500);
    while ::tokio::time::Instant::now() < deadline {
        match ::tokio::time::timeout(Duration::from_millis(100), lively.ws_mut().next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(Message::Close(c)))) => panic!("a lively client was closed: {c:?}"),
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(other) => panic!("the lively connection ended: {other:?}"),
        }
        lively
            .send_json(serde_json::json!({"type": "ping", "id": pings}))
            .await;
    }
    assert!(
        pings >= 3,
        "WebSocket pings every 0.2 s: saw {pings} in 2.5 s"
    );
    let (_, code) = silent.frames_until_close().await;
    assert_eq!(code, 4000);
    // And the lively one is still served.
    lively
        .send_json(serde_json::json!({"type": "ping", "id": "last"}))
        .await;
    loop {
        let f = lively.next_frame().await;
        if f.is("pong") && f.0["id"] == "last" {
            break;
        }
    }
}

weir_tests::both_runtimes! {
    chat_gets_ack_start_chunks_1_to_n_and_end_completed_with_the_demo_text_which_history_holds,
    cancel_fences_every_connection_no_chunk_after_cancelled_and_repeated_cancels_answer_cancelled,
    cancel_after_completion_answers_completed_inside_the_grace_window_and_not_found_after_it,
    cancel_without_message_id_sent_right_after_chat_cancels_that_reply_before_its_chunks,
    cancel_of_an_unknown_message_id_answers_not_found,
    two_connections_get_the_whole_reply_and_a_late_joiner_gets_a_snapshot_then_every_chunk_once,
    resume_on_connect_delivers_exactly_the_chunks_after_seq_and_the_end_live_and_settled,
    resume_frame_delivers_exactly_the_chunks_after_seq_and_the_end_and_unknown_is_unavailable,
    bad_input_gets_its_specific_answer_and_the_connection_and_others_stay_usable,
    oversized_frame_closes_that_connection_with_1009_and_others_are_unaffected,
    bad_session_id_is_refused_with_http_400_before_upgrade,
    client_that_stops_reading_gets_merged_chunks_then_4008_and_resumes_every_byte,
    token_auth_refuses_missing_expired_and_wrongly_signed_tokens_with_401_before_upgrade,
    token_auth_keeps_another_users_conversation_invisible_and_their_ids_not_found,
    http_api_posts_a_message_cancels_it_and_lists_messages_that_websockets_also_see,
    healthz_and_readyz_answer_200_the_page_is_served_and_metrics_counters_move,
    sigterm_closes_every_client_with_1001_and_the_process_exits_0,
    server_pings_and_a_silent_client_is_closed_with_4000_after_the_idle_timeout,
}
