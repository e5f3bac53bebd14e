//! `--chunk-timestamps` end to end: real `weir serve` processes on one real
//! `redis-server`. A reply produced on node A is watched on node B: every
//! `chunk` carries `ts_ns`, the producer's append time, which survives the
//! store (a late connection's catch-up on B carries the same times as the
//! live frames, a merged frame its last chunk's); a node without the setting
//! sends no `ts_ns`, also for chunks another node stamped.

use std::time::{SystemTime, UNIX_EPOCH};

use weir_tests::{chunks_of, contiguous, Frame, RedisServer, Runtime, WeirProcess};

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn node(redis: &RedisServer, id: &str, extra: &[&str]) -> WeirProcess {
    WeirProcess::start_on_redis(Runtime::current(), redis, id, (40, 200), extra)
}

/// `(from, seq, ts_ns)` of the chunk frames of `mid` among `frames`.
fn stamps(frames: &[Frame], mid: &str) -> Vec<(u64, u64, Option<u64>)> {
    chunks_of(frames, mid)
        .iter()
        .map(|c| (c.first_seq(), c.seq, c.ts_ns))
        .collect()
}

async fn chunks_carry_the_producers_append_time_on_every_node_and_in_a_catch_up() {
    let redis = RedisServer::start();
    let a = node(&redis, "node-a", &["--chunk-timestamps"]);
    let b = node(&redis, "node-b", &["--chunk-timestamps"]);
    let plain = node(&redis, "node-c", &[]);
    let mut on_a = a.ws("session_id=ts&user_id=u").await;
    let mut on_b = b.ws("session_id=ts&user_id=u").await;
    let mut on_c = plain.ws("session_id=ts&user_id=u").await;

    let before = unix_ns();
    let mid = on_a.chat_acked("stamp it", "r1").await;
    let (seen_b, end_b) = on_b.until_end_of(&mid).await;
    let after = unix_ns();
    assert_eq!(end_b["status"], "completed", "{end_b:?}");
    let (_, final_seq) = contiguous(0, &chunks_of(&seen_b, &mid));
    assert_eq!(final_seq, end_b.u64("final_seq"));

    let live = stamps(&seen_b, &mid);
    let mut last = before;
    for &(from, seq, ts) in &live {
        let ts = ts.unwrap_or_else(|| panic!("chunk {from}..={seq} on B has no ts_ns: {live:?}"));
        assert!(
            (last..=after).contains(&ts),
            "chunk {from}..={seq}: ts_ns {ts} is not between the previous one ({last}) and the end ({after})"
        );
        last = ts;
    }

    // The producer's own node stamps the same chunks alike.
    let (seen_a, _) = on_a.until_end_of(&mid).await;
    let on_a_last = stamps(&seen_a, &mid).last().copied();
    assert_eq!(
        on_a_last.map(|s| (s.1, s.2)),
        live.last().map(|s| (s.1, s.2))
    );

    // A late connection on B resumes from 0: the catch-up comes from Redis's
    // log, merged, and carries the producer's times (its last frame that of
    // the final chunk, as the live frames had it).
    let mut late = b
        .ws(&format!("session_id=ts&user_id=u&resume={mid}:0"))
        .await;
    let (caught, _) = late.until_end_of(&mid).await;
    let caught = stamps(&caught, &mid);
    assert!(
        caught.iter().any(|&(from, seq, _)| from < seq),
        "the catch-up is merged: {caught:?}"
    );
    assert_eq!(
        caught.last().map(|&(_, seq, ts)| (seq, ts)),
        live.last().map(|&(_, seq, ts)| (seq, ts)),
        "catch-up {caught:?} vs live {live:?}"
    );
    for &(_, _, ts) in &caught {
        assert!(
            ts.is_some_and(|t| (before..=after).contains(&t)),
            "{caught:?}"
        );
    }

    // Node C has the setting off: no `ts_ns`, though the store has them.
    let (seen_c, _) = on_c.until_end_of(&mid).await;
    let on_c = stamps(&seen_c, &mid);
    assert!(!on_c.is_empty());
    assert!(on_c.iter().all(|s| s.2.is_none()), "{on_c:?}");
}

weir_tests::both_runtimes! {
    chunks_carry_the_producers_append_time_on_every_node_and_in_a_catch_up,
}
