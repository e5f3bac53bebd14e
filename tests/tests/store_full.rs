//! A full Redis, end to end: two real `weir serve` nodes on one real
//! `redis-server` whose `maxmemory` is lowered below what it uses while a
//! reply streams (`noeviction`: Redis refuses writes with `OOM`), then
//! raised again. Every wait is bounded; no assertion is about speed.

use std::time::Duration;

use weir_tests::{chunks_of, contiguous, Client, Frame, RedisServer, Runtime, WeirProcess, T};

/// A node on `redis` whose demo replies have `chunks` chunks at up to
/// `rate` per second.
fn node(redis: &RedisServer, id: &str, chunks: u32, rate: u32) -> WeirProcess {
    WeirProcess::start_on_redis(
        Runtime::current(),
        redis,
        id,
        (chunks.into(), rate.into()),
        &[],
    )
}

/// Frames until the `end` of `mid`, within `2 T` in all (a server that
/// pings keeps each read short of its own timeout).
async fn end_within(ws: &mut Client, mid: &str) -> (Vec<Frame>, Frame) {
    ::tokio::time::timeout(2 * T, ws.until_end_of(mid))
        .await
        .unwrap_or_else(|_| panic!("no `end` of {mid} within {:?}", 2 * T))
}

fn used_memory(redis: &RedisServer) -> u64 {
    let info = redis.cli(&["INFO", "memory"]);
    info.lines()
        .find_map(|l| l.trim().strip_prefix("used_memory:"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no used_memory in {info}"))
}

async fn readyz(node: &WeirProcess) -> u16 {
    node.http("GET", "/readyz", "").await.status
}

/// Polls `/readyz` every 10 ms until it answers `status`, at most `T`.
async fn readyz_becomes(node: &WeirProcess, status: u16, which: &str) {
    let deadline = ::tokio::time::Instant::now() + T;
    while readyz(node).await != status {
        assert!(
            ::tokio::time::Instant::now() < deadline,
            "/readyz of {which} did not answer {status} within {T:?}"
        );
        ::tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The log's ERROR and WARN lines.
fn loud_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("ERROR") || l.contains(" WARN "))
        .collect()
}

async fn a_full_redis_ends_the_streaming_reply_failed_store_full_on_every_node_answers_store_full_and_recovers(
) {
    let redis = RedisServer::start();
    // Long enough to be streaming when Redis fills up, short enough to
    // complete after it is emptied.
    let a = node(&redis, "node-a", 3_000, 1_000);
    let b = node(&redis, "node-b", 3_000, 1_000);
    let mut on_a = a.ws("session_id=full&user_id=u").await;
    let mut on_b = b.ws("session_id=full&user_id=u").await;

    let mid = on_a.chat_acked("fill it up", "r1").await;
    let mut seen_a = on_a.until_seq(Some(&mid), 20).await;
    let mut seen_b = on_b.until_seq(Some(&mid), 20).await;

    // What each node logged before (its start-up warnings) is not counted.
    let (quiet_a, quiet_b) = (a.log().len(), b.log().len());
    // Redis is full: `maxmemory` below what it uses, under `noeviction`.
    assert_eq!(
        redis.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]),
        "OK"
    );
    let limit = (used_memory(&redis) / 2).to_string();
    assert_eq!(redis.cli(&["CONFIG", "SET", "maxmemory", &limit]), "OK");
    let filled = std::time::Instant::now();
    eprintln!("step: maxmemory {limit}");

    // The reply ends explicitly on the owner's node and on the viewer's.
    let (more_a, end_a) = end_within(&mut on_a, &mid).await;
    let (more_b, end_b) = end_within(&mut on_b, &mid).await;
    eprintln!(
        "step: ends {:?} after the fill: {end_a:?} {end_b:?}",
        filled.elapsed()
    );
    for end in [&end_a, &end_b] {
        assert_eq!(end["status"], "failed", "{end:?}");
        assert_eq!(end["reason"], "store_full", "{end:?}");
    }
    let final_seq = end_a.u64("final_seq");
    assert_eq!(end_b.u64("final_seq"), final_seq);
    assert!((20..3_000).contains(&final_seq), "{end_a:?}");
    // Every stored chunk reached both, in order, and none beyond.
    seen_a.extend(more_a);
    seen_b.extend(more_b);
    let (text_a, last_a) = contiguous(0, &chunks_of(&seen_a, &mid));
    let (text_b, last_b) = contiguous(0, &chunks_of(&seen_b, &mid));
    assert_eq!((last_a, last_b), (final_seq, final_seq));
    assert_eq!(text_a, text_b);

    // Both nodes say they are not ready: A from its refused append, B (no
    // write of its own so far) from its own probe of Redis.
    readyz_becomes(&a, 503, "node A").await;
    readyz_becomes(&b, 503, "node B").await;
    for node in [&a, &b] {
        let body = node.http("GET", "/readyz", "").await.json();
        assert_eq!(body["code"], "store_full", "{body:?}");
    }

    // A new chat and a cancel are refused with `store_full`, not
    // "the store cannot be reached".
    on_a.chat("one more", "r2").await;
    let (_, refused) = on_a.next_of("error").await;
    assert_eq!(refused["code"], "store_full", "{refused:?}");
    assert_eq!(refused["request_id"], "r2");
    on_b.cancel(None, "c1").await;
    let (_, refused) = on_b.next_of("error").await;
    assert_eq!(refused["code"], "store_full", "{refused:?}");
    assert_eq!(refused["request_id"], "c1");
    let posted = a
        .http(
            "POST",
            "/v1/sessions/full/messages?user_id=u",
            r#"{"content":"over http"}"#,
        )
        .await;
    assert_eq!(posted.status, 503, "{posted:?}");
    assert_eq!(posted.json()["code"], "store_full", "{posted:?}");

    // No flood: a burst is logged once, however many writes were refused
    // (the old code logged one ERROR per refused append, ~125 a second, and
    // a WARN per epoch check, every 2 s): one ERROR line per node.
    ::tokio::time::sleep(Duration::from_secs(3)).await;
    let (log_a, log_b) = (a.log(), b.log());
    let (loud_a, loud_b) = (loud_lines(&log_a[quiet_a..]), loud_lines(&log_b[quiet_b..]));
    eprintln!(
        "step: ERROR and WARN lines: A {} B {}",
        loud_a.len(),
        loud_b.len()
    );
    assert!(
        loud_a.len() <= 2,
        "node A's ERROR and WARN lines: {loud_a:#?}"
    );
    assert!(
        loud_b.len() <= 2,
        "node B's ERROR and WARN lines: {loud_b:#?}"
    );

    // Redis takes writes again: both nodes are ready again by themselves,
    // and a new chat completes on each, seen by the other.
    assert_eq!(redis.cli(&["CONFIG", "SET", "maxmemory", "0"]), "OK");
    readyz_becomes(&a, 200, "node A").await;
    readyz_becomes(&b, 200, "node B").await;
    let again = on_b.chat_acked("after the fill", "r3").await;
    let (_, end_b) = end_within(&mut on_b, &again).await;
    assert_eq!(end_b["status"], "completed", "{end_b:?}");
    let (_, end_a) = end_within(&mut on_a, &again).await;
    assert_eq!(end_a["status"], "completed", "{end_a:?}");
    let log_a = a.log();
    for line in log_a.lines().filter(|l| l.contains("writes")) {
        eprintln!("step: node A logged: {line}");
    }
    assert!(
        log_a.contains("the store accepts writes again"),
        "the end of the burst is logged"
    );
}

weir_tests::both_runtimes! {
    a_full_redis_ends_the_streaming_reply_failed_store_full_on_every_node_answers_store_full_and_recovers,
}
