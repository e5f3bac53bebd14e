//! The WebSocket protocol, in process on tokio and on smol: a chat streams
//! its reply and history holds it, a reply fans out to every connection of
//! the conversation (a late joiner gets a snapshot, a slow one merged
//! frames), bad input gets its specific answer, an oversized frame closes
//! its connection only.

use weir_tests::tungstenite::Message;
use weir_tests::{
    chunks, chunks_of, contiguous, demo_config, demo_prefix, eventually, json, only, position,
    Client, DemoText, Frame, InProcess, Value, T,
};

weir_tests::both_runtimes! {
    chat_gets_ack_start_chunks_1_to_n_and_end_completed_with_the_demo_text_which_history_holds,
    two_connections_get_the_whole_reply_and_a_late_joiner_gets_a_snapshot_then_every_chunk_once,
    a_reply_fans_out_to_every_connection_exactly_while_a_slow_one_merges,
    bad_input_gets_its_specific_answer_and_the_connection_and_others_stay_usable,
    oversized_frame_closes_that_connection_with_1009_and_others_are_unaffected,
}

async fn chat_gets_ack_start_chunks_1_to_n_and_end_completed_with_the_demo_text_which_history_holds(
) {
    const N: u32 = 24;
    const PROMPT: &str = "tell me about weirs";
    let server = InProcess::start(demo_config(N, 400.0)).await;
    let mut ws = server.ws("session_id=s1&user_id=alice").await;
    let hello = ws.hello.clone().expect("hello");
    assert_eq!(hello["protocol"], 1);
    assert_eq!(hello["session_id"], "s1");
    assert_eq!(hello["user_id"], "alice");
    assert!(!hello.str("connection_id").is_empty());
    assert_eq!(hello["node_id"], "test-node");
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

    // Chunks produced one at a time come as plain frames; any that the
    // generator produced faster than the node took them (a loaded machine)
    // come as one merged frame: either way every seq once, in order.
    let got = chunks(&frames);
    assert!(got.iter().all(|c| c.message_id == mid));
    let (text, last) = contiguous(0, &got);
    assert_eq!(last, u64::from(N));
    assert_eq!(text, DemoText::full(PROMPT, N));
    assert_eq!(end["message_id"], mid);
    assert_eq!(end["status"], "completed");
    assert_eq!(end.u64("final_seq"), u64::from(N));
    assert_eq!(
        end["usage"]["completion_tokens"], N,
        "the demo generator reports usage: {end:?}"
    );

    // The history entry, over HTTP and in a new connection's `history`.
    let messages = server.messages("s1", "?user_id=alice").await;
    assert_eq!(messages.len(), 2, "{messages:#?}");
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["message_id"], umid);
    assert_eq!(messages[0]["content"], PROMPT);
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["message_id"], mid);
    assert_eq!(messages[1]["status"], "completed");
    assert_eq!(messages[1]["content"], text.as_str());
    assert_eq!(messages[1]["seq"], N);
    let again = server.ws("session_id=s1&user_id=alice").await;
    assert_eq!(again.history_messages(), messages);

    // The same conversation name under another user is another conversation.
    let bob = server.ws("session_id=s1&user_id=bob").await;
    assert!(bob.history_messages().is_empty());

    let metrics = server.metrics().await;
    assert!(metrics.get("weir_chunks_sent_total") >= f64::from(N));
    assert_eq!(
        metrics.get("weir_replies_total{outcome=\"completed\"}"),
        1.0
    );
    drop((ws, again, bob));
    server.shutdown().await.expect("clean shutdown");
}

async fn two_connections_get_the_whole_reply_and_a_late_joiner_gets_a_snapshot_then_every_chunk_once(
) {
    const N: u32 = 800;
    const PROMPT: &str = "for everyone";
    let full = DemoText::full(PROMPT, N);
    let server = InProcess::start(demo_config(N, 400.0)).await;
    let mut a = server.ws("session_id=fan&user_id=u").await;
    let mut b = server.ws("session_id=fan&user_id=u").await;
    a.chat(PROMPT, "r1").await;
    let mut a_frames = a.until_seq(None, 10).await;
    let mid = a_frames[0].str("message_id").to_owned();

    // The third connection, mid-reply: the reply is in `history` as a
    // streaming message holding chunks 1..=seq.
    let mut c = server.ws("session_id=fan&user_id=u").await;
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

async fn a_reply_fans_out_to_every_connection_exactly_while_a_slow_one_merges() {
    // One encoded frame per step goes to every connection of the
    // conversation that keeps up; a slow connection's queue fills, the server
    // holds its chunks back and hands them over merged once it reads again,
    // which never changes what the others get: each gets the exact text.
    const N: u32 = 30_000;
    const PROMPT: &str = "fan out";
    let mut config = demo_config(N, 30_000.0);
    config.queue_capacity = 8;
    let server = InProcess::start(config).await;
    let query = "session_id=fan&user_id=many";
    let mut slow = server
        .connect_small_buffer(query, weir_tests::SMALL_RCVBUF)
        .await;
    slow.handshake().await;
    let mut fast = vec![server.ws(query).await, server.ws(query).await];
    fast[0].chat(PROMPT, "r1").await;
    let readers: Vec<_> = fast
        .into_iter()
        .map(|mut ws| {
            ::tokio::spawn(async move {
                let (frames, end) = ws.until_end().await;
                (ws, frames, end)
            })
        })
        .collect();
    let expected = DemoText::full(PROMPT, N);
    for reader in readers {
        let (_ws, frames, end) = reader.await.expect("reader");
        // At this pace a reader may fall behind for a moment and get merged
        // frames too; what it gets is exact either way.
        let (text, last) = contiguous(0, &chunks(&frames));
        assert_eq!(last, u64::from(N));
        assert_eq!(text, expected);
        assert_eq!(end["status"], "completed");
    }
    // The slow one's queue filled and its chunks waited: no overflow, no 4008.
    assert!(server.metrics().await.get("weir_queue_blocked_total") > 0.0);
    let (frames, end) = slow.until_end().await;
    let got = chunks(&frames);
    assert!(got.iter().any(|c| c.from_seq.is_some()), "merged frames");
    let (text, last) = contiguous(0, &got);
    assert_eq!(last, u64::from(N));
    assert_eq!(text, expected);
    assert_eq!(end["status"], "completed");
    // A writer counts what it sent once its queue is empty, which may be
    // just after the client read the `end`.
    eventually("every chunk counted as sent", || async {
        server.metrics().await.get("weir_chunks_sent_total") >= f64::from(3 * N)
    })
    .await;
    let metrics = server.metrics().await;
    assert_eq!(metrics.get("weir_slow_consumer_closes_total"), 0.0);
    drop(slow);
    server.shutdown().await.expect("clean shutdown");
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
    let server = InProcess::start(demo_config(N, 400.0)).await;
    // Another conversation streams a reply through all of this.
    let mut other = server.ws("session_id=bystander&user_id=v").await;
    other.chat("unbothered", "o1").await;
    let other_read = ::tokio::spawn(async move {
        let result = other.until_end().await;
        (other, result)
    });

    let mut ws = server.ws("session_id=bad&user_id=u").await;
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
        server.messages("bad", "?user_id=u").await.is_empty(),
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
    ws.assert_nothing_more("no-second-reply").await;
    assert_eq!(
        server.messages("bad", "?user_id=u").await.len(),
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
    let mut config = demo_config(N, 300.0);
    config.node.limits.max_frame_bytes = 4096;
    config.node.limits.max_content_bytes = 1024;
    let server = InProcess::start(config).await;
    let mut other = server.ws("session_id=calm&user_id=v").await;
    other.chat("calm", "o1").await;
    let mut same = server.ws("session_id=big&user_id=u").await;
    let mut ws = server.ws("session_id=big&user_id=u").await;

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
    let mut fresh = server.ws("session_id=big&user_id=u").await;
    assert!(fresh.ping("fresh").await.is_empty());
    drop((ws, same, other, fresh));
    server.shutdown().await.expect("clean shutdown");
}
