//! Cancel, in process on tokio and on smol: a cancel fences every
//! connection of the conversation, repeated cancels answer the same, a
//! cancel after completion answers `completed` inside the grace window and
//! `not_found` after it, a cancel without an id takes the conversation's
//! live reply. (Across nodes: `tests/tests/cluster.rs`.)

use std::time::Duration;

use weir_tests::{
    chunks, chunks_of, contiguous, demo_config, demo_prefix, json, only, position, DemoText,
    InProcess, Value,
};

weir_tests::both_runtimes! {
    cancel_fences_every_connection_no_chunk_after_cancelled_and_repeated_cancels_answer_cancelled,
    cancel_after_completion_answers_completed_inside_the_grace_window_and_not_found_after_it,
    cancel_without_message_id_sent_right_after_chat_cancels_that_reply_before_its_chunks,
    cancel_of_an_unknown_message_id_answers_not_found,
}

async fn cancel_fences_every_connection_no_chunk_after_cancelled_and_repeated_cancels_answer_cancelled(
) {
    const N: u32 = 4000;
    const PROMPT: &str = "a long one";
    let server = InProcess::start(demo_config(N, 200.0)).await;
    let mut a = server.ws("session_id=c1&user_id=u").await;
    let mut b = server.ws("session_id=c1&user_id=u").await;
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
    a.assert_nothing_more("quiet-a").await;
    b.assert_nothing_more("quiet-b").await;

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
    let r = server
        .http(
            "POST",
            "/v1/sessions/c1/cancel?user_id=u",
            &json!({"message_id": mid}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["status"], "cancelled");
    assert_eq!(r.json()["final_seq"], final_seq);
    a.assert_nothing_more("still-quiet-a").await;

    let messages = server.messages("c1", "?user_id=u").await;
    let reply = &messages[1];
    assert_eq!(reply["message_id"], mid.as_str());
    assert_eq!(reply["status"], "cancelled");
    assert_eq!(reply["seq"], final_seq);
    assert_eq!(reply["content"], text.as_str());

    let metrics = server.metrics().await;
    assert!(metrics.get("weir_cancel_quiet_seconds_count") >= 1.0);
    assert_eq!(
        metrics.get("weir_replies_total{outcome=\"cancelled\"}"),
        1.0
    );
    drop((a, b));
    server.shutdown().await.expect("clean shutdown");
}

async fn cancel_after_completion_answers_completed_inside_the_grace_window_and_not_found_after_it()
{
    const N: u32 = 5;
    let mut config = demo_config(N, 500.0);
    config.node.timers.grace_ms = 2_000;
    config.store.timers.grace_ms = 2_000;
    let server = InProcess::start(config).await;
    let mut ws = server.ws("session_id=late&user_id=u").await;
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
    // Over HTTP: 200 with status completed.
    let r = server
        .http(
            "POST",
            "/v1/sessions/late/cancel?user_id=u",
            &json!({"message_id": mid}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["status"], "completed");
    assert_eq!(r.json()["final_seq"], N);

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
    let messages = server.messages("late", "?user_id=u").await;
    assert_eq!(messages[1]["status"], "completed");
    let mut again = server
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
    let server = InProcess::start(demo_config(N, 200.0)).await;
    let mut ws = server.ws("session_id=quick&user_id=u").await;
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
    ws.assert_nothing_more("quiet").await;

    // The conversation is free again: a new chat streams.
    ws.chat("again", "r2").await;
    let frames = ws.until_seq(None, 1).await;
    assert!(frames[0].is("ack"), "{frames:#?}");
}

async fn cancel_of_an_unknown_message_id_answers_not_found() {
    let server = InProcess::start(demo_config(5, 500.0)).await;
    let mut ws = server.ws("session_id=nf&user_id=u").await;
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
    let r = server
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
