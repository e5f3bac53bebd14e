//! The server end to end over loopback, on tokio and on smol: real sockets,
//! a real WebSocket client, the demo generator and the in-memory store.

mod support;

use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use serde_json::json;
use support::*;
use weir_core::demo::DemoText;
use weir_core::wire::{CancelStatus, ErrorCode, MessageStatus, ReplyStatus, Role, ServerFrame};

both_runtimes! {
    chat_streams_the_demo_reply_in_order,
    cancel_mid_reply_fences_later_chunks,
    oversized_frame_closes_with_1009,
    slow_reader_gets_merged_chunks_then_4008_and_resumes_exactly,
    a_reply_fans_out_to_every_connection_exactly_while_a_slow_one_merges,
    graceful_shutdown_closes_clients_with_1001,
}

async fn chat_streams_the_demo_reply_in_order(rt: Rt) {
    let server = start(rt, config(20, 400.0)).await;
    let mut ws = server.connect("session_id=s1&user_id=alice").await;
    let (hello, history) = handshake(&mut ws).await;
    let ServerFrame::Hello(hello) = hello else {
        unreachable!()
    };
    assert_eq!(hello.user_id.as_str(), "alice");
    assert_eq!(hello.session_id.as_str(), "s1");
    assert_eq!(hello.node_id.as_str(), "test-node");
    let ServerFrame::History(history) = history else {
        unreachable!()
    };
    assert!(history.messages.is_empty());

    send_json(
        &mut ws,
        json!({"type": "chat", "content": "tell me", "request_id": "r1"}),
    )
    .await;
    let (frames, end) = until_end(&mut ws).await;
    let kinds: Vec<&str> = frames.iter().take(3).map(ServerFrame::kind).collect();
    assert_eq!(kinds, ["ack", "user_message", "start"]);
    let ServerFrame::Ack(ack) = &frames[0] else {
        unreachable!()
    };
    assert_eq!(ack.request_id.as_ref().map(|r| r.as_str()), Some("r1"));
    let chunks = chunks(&frames);
    assert_eq!(chunks.len(), 20, "a reader that keeps up gets every chunk");
    assert!(chunks.iter().all(|c| c.from_seq.is_none()));
    let (text, last) = contiguous(0, &chunks);
    assert_eq!(last, 20);
    assert_eq!(text, DemoText::full("tell me", 20));
    assert_eq!(end.message_id, ack.message_id);
    assert_eq!(end.status, ReplyStatus::Completed);
    assert_eq!(end.final_seq, 20);
    let usage = end.usage.expect("the demo generator reports usage");
    assert_eq!(usage.completion_tokens, 20);

    // A new connection sees the exchange in its history.
    let mut again = server.connect("session_id=s1&user_id=alice").await;
    let (_, history) = handshake(&mut again).await;
    let ServerFrame::History(history) = history else {
        unreachable!()
    };
    assert_eq!(history.messages.len(), 2);
    assert_eq!(history.messages[0].role, Role::User);
    assert_eq!(history.messages[0].content, "tell me");
    let reply = &history.messages[1];
    assert_eq!(reply.message_id, ack.message_id);
    assert_eq!(reply.status, MessageStatus::Completed);
    assert_eq!(reply.content, text);
    assert_eq!(reply.seq, 20);

    // Another user's conversation of the same name is separate.
    let mut other = server.connect("session_id=s1&user_id=bob").await;
    let (_, history) = handshake(&mut other).await;
    let ServerFrame::History(history) = history else {
        unreachable!()
    };
    assert!(history.messages.is_empty());

    assert!(server.metric("weir_chunks_sent_total").await >= 20.0);
    assert_eq!(
        server
            .metric("weir_replies_total{outcome=\"completed\"}")
            .await,
        1.0
    );
    drop((ws, again, other));
    server.shutdown().await.expect("clean shutdown");
}

async fn cancel_mid_reply_fences_later_chunks(rt: Rt) {
    let server = start(rt, config(400, 200.0)).await;
    let mut ws = server.connect("session_id=c1").await;
    handshake(&mut ws).await;
    send_json(&mut ws, json!({"type": "chat", "content": "long one"})).await;

    // Cancel once chunk 3 has arrived.
    let mut frames = Vec::new();
    let message_id = loop {
        let f = next_frame(&mut ws).await;
        let seen = match &f {
            ServerFrame::Chunk(c) if c.seq >= 3 => Some(c.message_id.clone()),
            _ => None,
        };
        frames.push(f);
        if let Some(id) = seen {
            break id;
        }
    };
    send_json(
        &mut ws,
        json!({"type": "cancel", "message_id": message_id, "request_id": "k1"}),
    )
    .await;
    let (rest, end) = until_end(&mut ws).await;
    frames.extend(rest);

    let at = frames
        .iter()
        .position(|f| matches!(f, ServerFrame::CancelResult(_)))
        .expect("a cancel_result");
    let ServerFrame::CancelResult(result) = &frames[at] else {
        unreachable!()
    };
    assert_eq!(result.status, CancelStatus::Cancelled);
    assert_eq!(result.request_id.as_ref().map(|r| r.as_str()), Some("k1"));
    assert_eq!(result.message_id.as_ref(), Some(&message_id));
    let final_seq = result.final_seq.expect("final_seq on cancelled");
    assert!(
        (3..400).contains(&final_seq),
        "cancelled mid-way: {final_seq}"
    );
    // Every chunk up to final_seq came before the answer, none after it.
    let before = chunks(&frames[..at]);
    let (text, last) = contiguous(0, &before);
    assert_eq!(last, final_seq);
    assert!(
        chunks(&frames[at..]).is_empty(),
        "no chunk after cancel_result"
    );
    let expected: String = DemoText::new("long one", 400)
        .take(usize::try_from(final_seq).expect("small"))
        .collect();
    assert_eq!(text, expected);
    assert_eq!(end.status, ReplyStatus::Cancelled);
    assert_eq!(end.final_seq, final_seq);

    // A repeated cancel answers the same.
    send_json(
        &mut ws,
        json!({"type": "cancel", "message_id": message_id, "request_id": "k2"}),
    )
    .await;
    let ServerFrame::CancelResult(again) = next_frame(&mut ws).await else {
        panic!("expected cancel_result")
    };
    assert_eq!(again.status, CancelStatus::Cancelled);
    assert_eq!(again.final_seq, Some(final_seq));
    // Nothing of the reply follows: the next frame answers a ping.
    send_json(&mut ws, json!({"type": "ping", "id": 7})).await;
    assert_eq!(next_frame(&mut ws).await.kind(), "pong");

    assert!(server.metric("weir_cancel_quiet_seconds_count").await >= 1.0);
    assert_eq!(
        server
            .metric("weir_replies_total{outcome=\"cancelled\"}")
            .await,
        1.0
    );
    drop(ws);
    server.shutdown().await.expect("clean shutdown");
}

async fn oversized_frame_closes_with_1009(rt: Rt) {
    let mut config = config(5, 1000.0);
    config.node.limits.max_frame_bytes = 1024;
    let server = start(rt, config).await;
    let mut ws = server.connect("session_id=big").await;
    handshake(&mut ws).await;

    // A binary frame is a bad request; the connection stays usable.
    ws.send(Message::binary(b"\x00\x01".to_vec()))
        .await
        .expect("send binary");
    let ServerFrame::Error(e) = next_frame(&mut ws).await else {
        panic!("expected an error frame")
    };
    assert_eq!(e.code, ErrorCode::BadRequest);
    send_json(&mut ws, json!({"type": "ping", "id": "p"})).await;
    assert_eq!(next_frame(&mut ws).await.kind(), "pong");

    // A frame over the limit closes with 1009 (after a too_large error).
    ws.send(Message::text("x".repeat(4096)))
        .await
        .expect("send big frame");
    let (frames, code) = frames_until_close(&mut ws).await;
    assert_eq!(code, 1009);
    assert!(
        frames
            .iter()
            .all(|f| matches!(f, ServerFrame::Error(e) if e.code == ErrorCode::TooLarge)),
        "{frames:?}"
    );

    // Other connections are unaffected.
    let mut ok = server.connect("session_id=big").await;
    handshake(&mut ok).await;
    send_json(&mut ok, json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut ok).await.kind(), "pong");
    drop((ws, ok));
    server.shutdown().await.expect("clean shutdown");
}

async fn slow_reader_gets_merged_chunks_then_4008_and_resumes_exactly(rt: Rt) {
    // About 4 s of reply, ~2.5 MB/s of frames: the socket buffers (a few MB
    // on loopback) fill while it is still being produced.
    const N: u32 = 100_000;
    let mut config = config(N, 25_000.0);
    config.queue_capacity = 8;
    let server = start(rt, config).await;
    let mut ws = server
        .connect_small_buffer("session_id=slow&user_id=snail")
        .await;
    handshake(&mut ws).await;
    send_json(&mut ws, json!({"type": "chat", "content": "slow"})).await;

    // Stop reading. Once the socket's buffers are full the queue fills, and
    // further chunks merge into its tail.
    eventually("chunk frames merge", || async {
        server.metric("weir_merged_frames_total").await > 0.0
    })
    .await;
    // Pongs cannot merge: a burst of them overflows a full queue, and the
    // core closes the connection with 4008. (A merge alone does not say the
    // writer is stuck for good: on another thread it may still drain into
    // the socket buffers for a while, and the pongs go out. So: keep
    // pinging.)
    let deadline = ::tokio::time::Instant::now() + T;
    for batch in 0_u32.. {
        for i in 0..20 {
            send_json(&mut ws, json!({"type": "ping", "id": batch * 20 + i})).await;
        }
        if server.metric("weir_slow_consumer_closes_total").await >= 1.0 {
            break;
        }
        assert!(
            ::tokio::time::Instant::now() < deadline,
            "no slow-consumer close after {} pings",
            (batch + 1) * 20
        );
        ::tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Read again: every queued frame, then the close.
    let (frames, code) = frames_until_close(&mut ws).await;
    assert_eq!(code, 4008);
    let got = chunks(&frames);
    assert!(
        got.iter().any(|c| c.from_seq.is_some()),
        "a merged chunk frame"
    );
    let message_id = got[0].message_id.clone();
    let (mut text, last) = contiguous(0, &got);
    assert!(last >= 1);
    drop(ws);

    // Resume where it stopped: exactly the rest.
    let mut ws = server
        .connect(&format!(
            "session_id=slow&user_id=snail&resume={message_id}:{last}"
        ))
        .await;
    handshake(&mut ws).await;
    let (frames, end) = until_end(&mut ws).await;
    let rest = chunks(&frames);
    let (tail, final_seq) = contiguous(last, &rest);
    text.push_str(&tail);
    assert_eq!(end.status, ReplyStatus::Completed);
    assert_eq!(end.final_seq, u64::from(N));
    assert_eq!(final_seq, u64::from(N));
    assert_eq!(text, DemoText::full("slow", N));
    // Counted by the driver after it queued the frames, which another thread
    // may already have sent.
    eventually("an exact resume counted", || async {
        server.metric("weir_resumes_total{exact=\"true\"}").await >= 1.0
    })
    .await;
    drop(ws);
    server.shutdown().await.expect("clean shutdown");
}

async fn a_reply_fans_out_to_every_connection_exactly_while_a_slow_one_merges(rt: Rt) {
    // One encoded frame per chunk goes to every connection of the
    // conversation; a slow connection's queue merges its own copies and never
    // changes what the others get: each gets the exact text.
    const N: u32 = 30_000;
    let mut config = config(N, 30_000.0);
    config.queue_capacity = 8;
    let server = start(rt, config).await;
    let query = "session_id=fan&user_id=many";
    let mut slow = server.connect_small_buffer(query).await;
    handshake(&mut slow).await;
    let mut fast = Vec::new();
    for _ in 0..2 {
        let mut ws = server.connect(query).await;
        handshake(&mut ws).await;
        fast.push(ws);
    }
    send_json(&mut fast[0], json!({"type": "chat", "content": "fan out"})).await;
    let readers: Vec<_> = fast
        .into_iter()
        .map(|mut ws| {
            ::tokio::spawn(async move {
                let (frames, end) = until_end(&mut ws).await;
                (ws, frames, end)
            })
        })
        .collect();
    let expected = DemoText::full("fan out", N);
    for reader in readers {
        let (_ws, frames, end) = reader.await.expect("reader");
        // At this pace a reader may fall behind for a moment and get merged
        // frames too; what it gets is exact either way.
        let got = chunks(&frames);
        let (text, last) = contiguous(0, &got);
        assert_eq!(last, u64::from(N));
        assert_eq!(text, expected);
        assert_eq!(end.status, ReplyStatus::Completed);
    }
    // Chunks of one reply always merge into the tail: no overflow, no 4008.
    assert!(server.metric("weir_merged_frames_total").await > 0.0);
    let (frames, end) = until_end(&mut slow).await;
    let got = chunks(&frames);
    assert!(got.iter().any(|c| c.from_seq.is_some()), "merged frames");
    let (text, last) = contiguous(0, &got);
    assert_eq!(last, u64::from(N));
    assert_eq!(text, expected);
    assert_eq!(end.status, ReplyStatus::Completed);
    assert!(server.metric("weir_chunks_sent_total").await >= f64::from(3 * N));
    assert_eq!(server.metric("weir_slow_consumer_closes_total").await, 0.0);
    drop(slow);
    server.shutdown().await.expect("clean shutdown");
}

async fn graceful_shutdown_closes_clients_with_1001(rt: Rt) {
    let mut server = start(rt, config(1000, 200.0)).await;
    let mut idle = server.connect("session_id=g1").await;
    handshake(&mut idle).await;
    let mut busy = server.connect("session_id=g2").await;
    handshake(&mut busy).await;
    send_json(&mut busy, json!({"type": "chat", "content": "go"})).await;
    loop {
        if let ServerFrame::Chunk(_) = next_frame(&mut busy).await {
            break;
        }
    }

    server.signal_shutdown();
    let (_, code) = frames_until_close(&mut idle).await;
    assert_eq!(code, 1001);
    let (_, code) = frames_until_close(&mut busy).await;
    assert_eq!(code, 1001);
    // Both clients answer the close (async-tungstenite does so when it
    // reads it), so run() returns well before the grace.
    let started = ::tokio::time::Instant::now();
    server.stopped().await.expect("run() returns Ok");
    assert!(started.elapsed() < Duration::from_secs(4));
}
