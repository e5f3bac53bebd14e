//! Resume, in process on tokio and on smol: on connect (`resume=MID:SEQ`)
//! and by frame, live and settled, exactly the chunks after the seq; a
//! client that stops reading gets merged chunks, then 4008, and resumes every
//! byte. (Across nodes: `tests/tests/cluster.rs`.)

use std::time::Duration;

use weir_tests::{
    chunks, chunks_of, contiguous, demo_config, demo_prefix, eventually, json, DemoText, InProcess,
    T,
};

weir_tests::both_runtimes! {
    resume_on_connect_delivers_exactly_the_chunks_after_seq_and_the_end_live_and_settled,
    resume_frame_delivers_exactly_the_chunks_after_seq_and_the_end_and_unknown_is_unavailable,
    client_that_stops_reading_gets_merged_chunks_then_4008_and_resumes_every_byte,
}

async fn resume_on_connect_delivers_exactly_the_chunks_after_seq_and_the_end_live_and_settled() {
    const N: u32 = 600;
    const PROMPT: &str = "keep going";
    let full = DemoText::full(PROMPT, N);
    let server = InProcess::start(demo_config(N, 300.0)).await;
    let mut a = server.ws("session_id=rc&user_id=u").await;
    a.chat(PROMPT, "r1").await;
    let frames = a.until_seq(None, 10).await;
    let mid = frames[0].str("message_id").to_owned();
    let (had, seq) = contiguous(0, &chunks(&frames));
    // The client goes away mid-reply and comes back with resume=MID:SEQ.
    a.close().await;

    let mut b = server
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
        let mut c = server
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
    let mut d = server
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
    let server = InProcess::start(demo_config(N, 400.0)).await;
    let mut a = server.ws("session_id=rf&user_id=u").await;
    a.chat(PROMPT, "r1").await;
    let (frames, end) = a.until_end().await;
    let mid = frames[0].str("message_id").to_owned();
    assert_eq!(end["status"], "completed");

    // On an open connection, for each seq: exactly seq + 1 ..= N, then end.
    let mut b = server.ws("session_id=rf&user_id=u").await;
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
    let mut c = server
        .ws("session_id=rf&user_id=u&resume=no-such-reply:3")
        .await;
    let r = c.next_frame().await;
    assert!(r.is("resume_unavailable"), "{r:?}");
    assert_eq!(r["reason"], "unknown");
    assert!(c.ping("p").await.is_empty());
}

async fn client_that_stops_reading_gets_merged_chunks_then_4008_and_resumes_every_byte() {
    // About 4 s of reply, ~2.5 MB/s of frames: the socket buffers fill
    // while it is still being produced.
    const N: u32 = 100_000;
    const PROMPT: &str = "slow";
    let mut config = demo_config(N, 25_000.0);
    config.queue_capacity = 8;
    let server = InProcess::start(config).await;
    let mut ws = server
        .connect_small_buffer("session_id=slow&user_id=snail", weir_tests::SMALL_RCVBUF)
        .await;
    ws.handshake().await;
    ws.chat(PROMPT, "r1").await;

    // Stop reading. Once the socket buffers are full the connection's queue
    // fills to its high-water mark, and the server holds the rest of the
    // reply back for it.
    eventually("the queue blocks", || async {
        server.metrics().await.get("weir_queue_blocked_total") > 0.0
    })
    .await;
    // Pongs are not held back, and cannot merge: a burst of them fills the
    // queue, its chunk frames merge to make room, and then it overflows and
    // the server closes the connection with 4008. (A block alone does not
    // say the writer is stuck for good: on another thread it may still drain
    // into the socket buffers for a while, and the pongs go out. So: keep
    // pinging.)
    let deadline = ::tokio::time::Instant::now() + T;
    for batch in 0_u32.. {
        for i in 0..20 {
            ws.send_json(json!({"type": "ping", "id": batch * 20 + i}))
                .await;
        }
        if server
            .metrics()
            .await
            .get("weir_slow_consumer_closes_total")
            >= 1.0
        {
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
    let mut ws = server
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
        server
            .metrics()
            .await
            .get("weir_resumes_total{exact=\"true\"}")
            >= 1.0
    })
    .await;
    drop(ws);
    server.shutdown().await.expect("clean shutdown");
}
