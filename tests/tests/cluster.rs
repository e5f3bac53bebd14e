//! Many nodes on one Redis, end to end: real `weir serve` processes with
//! `--store redis://…` on one real `redis-server` that each test starts on a
//! free loopback port, real WebSocket and HTTP clients. Every scenario but
//! the Redis restart and the thread names runs again on a Redis Cluster
//! (`cluster::tokio::…`, `cluster::smol::…`: three masters with a replica
//! each, `--store redis-cluster://…`).
//!
//! No assertion is about speed; the bounds that the issue names (an owner's
//! death noticed within the lease plus a margin) are asserted with generous
//! margins, and every wait is bounded.

use std::time::{Duration, Instant};

use weir_tests::{
    chunks, chunks_of, contiguous, demo_prefix, Client, Frame, RedisServer, Runtime, SharedRedis,
    Signal, StoreUrl, WeirProcess, T,
};

/// A node on `redis` with demo replies of `chunks` chunks at `rate` per
/// second, and `extra` flags.
fn node(redis: &impl StoreUrl, id: &str, chunks: u32, rate: u32, extra: &[&str]) -> WeirProcess {
    node_on(Runtime::current(), redis, id, chunks, rate, extra)
}

/// [`node`] on `runtime`.
fn node_on(
    runtime: Runtime,
    redis: &impl StoreUrl,
    id: &str,
    chunks: u32,
    rate: u32,
    extra: &[&str],
) -> WeirProcess {
    WeirProcess::start_on_redis(runtime, redis, id, (chunks.into(), rate.into()), extra)
}

/// The `end` of `mid`: among `before` (frames already read — an `end` may
/// come before a `cancel_result`: the protocol orders only chunks against
/// it), else the next one on `ws`, with the frames read on the way.
async fn end_after(before: &[Frame], ws: &mut Client, mid: &str) -> (Vec<Frame>, Frame) {
    match before
        .iter()
        .find(|f| f.is("end") && f["message_id"] == mid)
    {
        Some(end) => (Vec::new(), end.clone()),
        None => ws.until_end_of(mid).await,
    }
}

/// Waits a little for anything that should not come, then asserts with a
/// ping barrier that nothing but its pong came.
async fn assert_nothing_more(ws: &mut Client, id: &str) {
    ::tokio::time::sleep(Duration::from_millis(300)).await;
    let extra = ws.ping(id).await;
    assert!(extra.is_empty(), "nothing more expected, got {extra:#?}");
}

/// The chunk log's length of a reply, read from Redis itself.
fn log_len(redis: &SharedRedis, user: &str, session: &str, mid: &str) -> u64 {
    let key = format!("weir:{{c:{user}/{session}}}:log:{mid}");
    redis
        .cli_key("XLEN", &key, &[])
        .parse()
        .unwrap_or_else(|e| panic!("XLEN {key}: {e}"))
}

async fn cancel_sent_to_node_b_stops_node_a_generator_and_every_connection_sees_cancelled_with_no_chunk_after(
) {
    cancel_on_b_stops_a(Runtime::current(), Runtime::current()).await;
}

/// The reply is produced on node A (on `a_runtime`); the cancel is sent to
/// node B (on `b_runtime`).
async fn cancel_on_b_stops_a(a_runtime: Runtime, b_runtime: Runtime) {
    let redis = SharedRedis::start();
    let a = node_on(a_runtime, &redis, "node-a", 2_000, 100, &[]);
    let b = node_on(b_runtime, &redis, "node-b", 2_000, 100, &[]);
    let mut on_a = a.ws("session_id=x&user_id=u").await;
    let mut on_b = b.ws("session_id=x&user_id=u").await;

    let mid = on_a.chat_acked("a long one", "r1").await;
    eprintln!("step: chat acked {mid}");
    on_a.until_seq(Some(&mid), 5).await;
    eprintln!("step: A saw 5");
    let seen_b = on_b.until_seq(Some(&mid), 5).await;
    eprintln!("step: B saw 5");
    assert!(
        seen_b.iter().any(|f| f.is("start")),
        "B saw the reply start: {seen_b:#?}"
    );

    on_b.cancel(Some(&mid), "c1").await;
    let (before, result) = on_b.next_of("cancel_result").await;
    assert_eq!(result["status"], "cancelled", "{result:?}");
    assert_eq!(result["request_id"], "c1");
    let final_seq = result.u64("final_seq");
    let (after, end_b) = end_after(&before, &mut on_b, &mid).await;
    assert!(
        chunks(&after).is_empty(),
        "no chunk follows cancel_result on the asking connection: {after:#?}"
    );
    assert_eq!(end_b["status"], "cancelled");
    assert_eq!(end_b.u64("final_seq"), final_seq);
    let mut b_chunks = chunks_of(&seen_b, &mid);
    b_chunks.extend(chunks_of(&before, &mid));
    let (text_b, last_b) = contiguous(0, &b_chunks);
    assert_eq!(last_b, final_seq, "B holds exactly chunks 1..=final_seq");

    let (a_frames, end_a) = on_a.until_end_of(&mid).await;
    assert_eq!(end_a["status"], "cancelled");
    assert_eq!(end_a.u64("final_seq"), final_seq);
    assert!(
        chunks_of(&a_frames, &mid)
            .iter()
            .all(|c| c.seq <= final_seq),
        "no chunk beyond final_seq on A: {a_frames:#?}"
    );
    assert_nothing_more(&mut on_a, "pa").await;
    assert_nothing_more(&mut on_b, "pb").await;

    // A's generator stopped: the log holds exactly final_seq chunks and
    // grows no more; history holds exactly their text.
    assert_eq!(log_len(&redis, "u", "x", &mid), final_seq);
    ::tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(log_len(&redis, "u", "x", &mid), final_seq);
    assert_eq!(text_b, demo_prefix("a long one", 2_000, final_seq));
    let late = b.ws("session_id=x&user_id=u").await;
    let history = late.history_messages();
    let reply = history.last().expect("the reply in history");
    assert_eq!(reply["status"], "cancelled");
    assert_eq!(reply["content"], text_b.as_str());
}

async fn cancel_racing_completion_across_two_nodes_has_one_winner_that_every_node_reports() {
    let redis = SharedRedis::start();
    let a = node(&redis, "node-a", 8, 200, &[]);
    let b = node(&redis, "node-b", 8, 200, &[]);
    let mut on_a = a.ws("session_id=race&user_id=u").await;
    let mut on_b = b.ws("session_id=race&user_id=u").await;
    let mut winners = std::collections::BTreeMap::new();
    for round in 0..12u64 {
        let mid = on_a
            .chat_acked(&format!("round {round}"), &format!("r{round}"))
            .await;
        // Cancel from B after a varying number of chunks, up to the last.
        let at = 1 + round % 8;
        on_b.until_seq(Some(&mid), at).await;
        on_b.cancel(Some(&mid), &format!("c{round}")).await;
        let (before, result) = on_b.next_of("cancel_result").await;
        let status = result.str("status").to_owned();
        let (_, end_b) = end_after(&before, &mut on_b, &mid).await;
        let (_, end_a) = on_a.until_end_of(&mid).await;
        let late = b.ws("session_id=race&user_id=u").await;
        let stored = late
            .history_messages()
            .into_iter()
            .find(|m| m["message_id"] == mid.as_str())
            .expect("the reply in history");
        match status.as_str() {
            "cancelled" => {
                let final_seq = result.u64("final_seq");
                for end in [&end_a, &end_b] {
                    assert_eq!(end["status"], "cancelled", "round {round}: {end:?}");
                    assert_eq!(end.u64("final_seq"), final_seq, "round {round}");
                }
                assert_eq!(stored["status"], "cancelled");
            }
            "completed" => {
                for end in [&end_a, &end_b] {
                    assert_eq!(end["status"], "completed", "round {round}: {end:?}");
                    assert_eq!(end.u64("final_seq"), 8, "round {round}");
                }
                assert_eq!(stored["status"], "completed");
            }
            other => panic!("round {round}: cancel answered {other}: {result:?}"),
        }
        *winners.entry(status).or_insert(0) += 1;
        late.close().await;
    }
    eprintln!("winners over 12 rounds: {winners:?}");
}

async fn client_dropping_from_a_resumes_on_b_with_exactly_the_missing_chunks_then_live_then_end() {
    const N: u32 = 60;
    let redis = SharedRedis::start();
    let a = node(&redis, "node-a", N, 40, &[]);
    let b = node(&redis, "node-b", N, 40, &[]);
    let mut on_a = a.ws("session_id=r&user_id=u").await;
    let mid = on_a.chat_acked("resume me", "r1").await;
    let seen = on_a.until_seq(Some(&mid), 5).await;
    let (_, last) = contiguous(0, &chunks_of(&seen, &mid));
    drop(on_a);

    // Some chunks are produced while the client is away.
    ::tokio::time::sleep(Duration::from_millis(300)).await;
    let mut on_b = b
        .ws(&format!("session_id=r&user_id=u&resume={mid}:{last}"))
        .await;
    let (frames, end) = on_b.until_end_of(&mid).await;
    assert_eq!(end["status"], "completed", "{end:?}");
    let got = chunks_of(&frames, &mid);
    assert_eq!(
        got.first().map(|c| c.first_seq()),
        Some(last + 1),
        "starts right after {last}: {frames:#?}"
    );
    let (text, upto) = contiguous(last, &got);
    assert_eq!(upto, u64::from(N), "every missing chunk, once, in order");
    assert_eq!(end.u64("final_seq"), u64::from(N));
    let full = demo_prefix("resume me", N, u64::from(N));
    assert_eq!(format!("{}{text}", demo_prefix("resume me", N, last)), full);
    assert_nothing_more(&mut on_b, "p").await;
}

async fn killing_the_owner_node_ends_its_reply_on_b_failed_owner_lost_within_the_lease_and_nothing_is_appended_after(
) {
    let redis = SharedRedis::start();
    let lease = ["--lease-ttl", "1"];
    let mut a = node(&redis, "node-a", 2_000, 50, &lease);
    let b = node(&redis, "node-b", 2_000, 50, &lease);
    let mut on_a = a.ws("session_id=k&user_id=u").await;
    let mut on_b = b.ws("session_id=k&user_id=u").await;
    let mid = on_a.chat_acked("doomed", "r1").await;
    on_b.until_seq(Some(&mid), 3).await;

    a.signal(Signal::Kill);
    let killed = Instant::now();
    let _ = a.wait_exit(T).await;
    let (frames, end) = on_b.until_end_of(&mid).await;
    let noticed = killed.elapsed();
    assert_eq!(end["status"], "failed", "{end:?}");
    assert_eq!(end["reason"], "owner_lost");
    let final_seq = end.u64("final_seq");
    assert!(
        chunks_of(&frames, &mid).iter().all(|c| c.seq <= final_seq),
        "{frames:#?}"
    );
    // Lease (1 s) + the watch period (2 s) + a wide margin for a loaded
    // machine; the figure is printed for the record.
    eprintln!("owner death noticed after {noticed:?}");
    assert!(
        noticed < Duration::from_secs(8),
        "noticed after {noticed:?}"
    );
    // Nothing is appended afterwards (the dead producer is fenced anyway).
    let len = log_len(&redis, "u", "k", &mid);
    assert_eq!(len, final_seq);
    ::tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(log_len(&redis, "u", "k", &mid), len);
    assert_nothing_more(&mut on_b, "p").await;
    // The conversation is free again: a new reply on B completes.
    let mid2 = on_b.chat_acked("again", "r2").await;
    assert_ne!(mid2, mid);
    on_b.cancel(Some(&mid2), "c2").await;
    let (_, end2) = on_b.until_end_of(&mid2).await;
    assert_eq!(end2["status"], "cancelled");
}

async fn redis_restarted_mid_reply_nodes_reconnect_replies_end_explicitly_and_resume_across_it_is_epoch_changed(
) {
    let mut redis = RedisServer::start();
    let a = node(&redis, "node-a", 2_000, 50, &["--lease-ttl", "2"]);
    let b = node(&redis, "node-b", 2_000, 50, &["--lease-ttl", "2"]);
    let mut on_a = a.ws("session_id=e&user_id=u").await;
    let mut on_b = b.ws("session_id=e&user_id=u").await;
    let mid = on_a.chat_acked("across a restart", "r1").await;
    on_b.until_seq(Some(&mid), 3).await;
    assert_eq!(a.http("GET", "/readyz", "").await.status, 200);

    redis.restart();
    // Every connection that saw the reply gets an explicit end.
    let (_, end_a) = on_a.until_end_of(&mid).await;
    let (_, end_b) = on_b.until_end_of(&mid).await;
    for end in [&end_a, &end_b] {
        let status = end.str("status");
        assert!(
            ["failed", "cancelled", "completed"].contains(&status),
            "{end:?}"
        );
    }
    eprintln!("after the restart: A got {end_a:?}, B got {end_b:?}");

    // Both nodes come back.
    for n in [&a, &b] {
        weir_tests::eventually("readyz answers 200 again", || async {
            n.http("GET", "/readyz", "").await.status == 200
        })
        .await;
    }
    // A resume of the old reply fails closed, on either node.
    let mut late = b
        .connect(&format!("session_id=e&user_id=u&resume={mid}:1"))
        .await;
    let mut seen = Vec::new();
    let unavailable = loop {
        let f = late.next_frame().await;
        if f.is("resume_unavailable") {
            break f;
        }
        assert!(
            chunks(std::slice::from_ref(&f)).is_empty(),
            "no chunk of the lost log: {f:?}"
        );
        seen.push(f);
    };
    assert_eq!(unavailable["reason"], "epoch_changed", "{unavailable:?}");
    assert_eq!(unavailable["message_id"], mid.as_str());
    // And new replies stream (cancelled once seen streaming: they are long).
    let mid2 = late.chat_acked("after", "r2").await;
    let seen = late.until_seq(Some(&mid2), 2).await;
    late.cancel(Some(&mid2), "c2").await;
    let (before, _) = late.next_of("cancel_result").await;
    let (_, end2) = end_after(&[seen, before].concat(), &mut late, &mid2).await;
    assert_eq!(end2["status"], "cancelled");
    // The pub/sub connections subscribed again: a reply produced on A
    // reaches the connection on B live, every chunk once, and a cancel from
    // B reaches A's generator.
    let mid3 = on_a.chat_acked("across nodes again", "r3").await;
    let mut frames = on_b.until_seq(Some(&mid3), 3).await;
    assert!(frames.iter().any(|f| f.is("start")), "{frames:#?}");
    on_b.cancel(Some(&mid3), "c3").await;
    let (before, result) = on_b.next_of("cancel_result").await;
    assert_eq!(result["status"], "cancelled", "{result:?}");
    frames.extend(before);
    let (_, end3) = end_after(&frames, &mut on_b, &mid3).await;
    assert_eq!(end3["status"], "cancelled", "{end3:?}");
    let (_, upto) = contiguous(0, &chunks_of(&frames, &mid3));
    assert_eq!(upto, end3.u64("final_seq"));
}

async fn presence_spans_nodes_with_debounce_and_a_killed_node_users_go_offline_after_the_expiry() {
    let redis = SharedRedis::start();
    let timers = ["--presence-debounce", "2", "--presence-expiry", "4"];
    let mut a = node(&redis, "node-a", 10, 20, &timers);
    let b = node(&redis, "node-b", 10, 20, &timers);

    // Online on A, seen from B. The presence join and the snapshot are two
    // store operations (on a cluster, on two masters): the hello can come
    // before the join is stored, so B may see it a moment later.
    let on_a = a.ws("session_id=p&user_id=alice").await;
    online_once_stored(&b, "alice").await;

    // Reconnect to B inside the debounce: never offline in between.
    on_a.close().await;
    let mut statuses = vec![b.presence("alice").await.0];
    let on_b = b.ws("session_id=p&user_id=alice").await;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        statuses.push(a.presence("alice").await.0);
        ::tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        statuses.iter().all(|s| s == "online"),
        "no offline across the reconnect: {statuses:?}"
    );
    assert_eq!(a.presence("alice").await, ("online".to_owned(), 1));

    // Gone from both: online while lingering, offline after the debounce.
    on_b.close().await;
    assert_eq!(a.presence("alice").await.0, "online", "lingering");
    weir_tests::eventually("alice offline after the debounce", || async {
        a.presence("alice").await.0 == "offline"
    })
    .await;

    // A node killed with a user on it: offline after the entry expiry.
    let _bob = a.ws("session_id=p&user_id=bob").await;
    online_once_stored(&b, "bob").await;
    a.signal(Signal::Kill);
    let killed = Instant::now();
    let _ = a.wait_exit(T).await;
    weir_tests::eventually("bob offline after the expiry", || async {
        b.presence("bob").await.0 == "offline"
    })
    .await;
    let took = killed.elapsed();
    eprintln!("bob offline {took:?} after his node died (expiry 4 s)");
    assert!(
        took >= Duration::from_secs(2),
        "not before the entries could expire: {took:?}"
    );
}

/// `user`, who just connected once (elsewhere), is seen from `node` online
/// with one connection (within the suite's bound `T`).
async fn online_once_stored(node: &WeirProcess, user: &str) {
    weir_tests::eventually(&format!("{user} online, one connection"), || async {
        node.presence(user).await == ("online".to_owned(), 1)
    })
    .await;
}

async fn a_redis_outage_answers_unavailable_with_readyz_503_loses_nothing_acknowledged_and_recovers(
) {
    let redis = SharedRedis::start();
    let a = node(
        &redis,
        "node-a",
        5,
        100,
        &["--store-timeout", "1", "--lease-ttl", "1"],
    );
    let mut ws = a.ws("session_id=o&user_id=u").await;
    let mid = ws.chat_acked("before the outage", "r1").await;
    let (_, end) = ws.until_end_of(&mid).await;
    assert_eq!(end["status"], "completed");
    assert_eq!(a.http("GET", "/readyz", "").await.status, 200);

    // Redis stops answering (its data stays), as in a network partition.
    redis.pause();
    let during = weir_tests::json!({
        "type": "chat", "content": "during the outage", "request_id": "r2",
        "client_message_id": "k-during"
    });
    ws.send_json(during.clone()).await;
    let (_, error) = ws.next_of("error").await;
    assert_eq!(error["code"], "unavailable", "{error:?}");
    assert_eq!(error["request_id"], "r2");
    ws.cancel(Some(&mid), "c2").await;
    let (before, error) = ws.next_of("error").await;
    assert!(
        !before.iter().any(|f| f.is("cancel_result")),
        "no answer but unavailable: {before:#?}"
    );
    assert_eq!(error["code"], "unavailable", "{error:?}");
    assert_eq!(error["request_id"], "c2");
    weir_tests::eventually("readyz answers 503 while Redis is away", || async {
        a.http("GET", "/readyz", "").await.status == 503
    })
    .await;
    // The connection itself is fine.
    assert!(ws.ping("alive").await.is_empty());

    redis.resume();
    weir_tests::eventually("readyz answers 200 again", || async {
        a.http("GET", "/readyz", "").await.status == 200
    })
    .await;
    // What was acknowledged before the outage is still there.
    let mut again = a.ws("session_id=o&user_id=u").await;
    let history = again.history_messages();
    assert!(
        history
            .iter()
            .any(|m| m["message_id"] == mid.as_str() && m["status"] == "completed"),
        "{history:#?}"
    );
    // The chat sent during the outage timed out with an unknown outcome:
    // Redis may have carried it out once it thawed (its reply then has no
    // producer and ends failed: owner_lost after the lease). Retrying with
    // the same client_message_id tells which, and never makes a second one.
    let mut retry = during;
    retry["request_id"] = weir_tests::json!("r2-again");
    loop {
        again.send_json(retry.clone()).await;
        let f = again.next_frame().await;
        if f.is("error") && f["code"] == "busy" {
            // The orphan is still live: wait for its end.
            let _ = again.next_of("end").await;
            continue;
        }
        let ack = if f.is("ack") {
            f
        } else {
            again.next_of("ack").await.1
        };
        let retried = ack.str("message_id").to_owned();
        let (_, end) = again.until_end_of(&retried).await;
        let status = end.str("status");
        assert!(
            status == "completed" || (status == "failed" && end["reason"] == "owner_lost"),
            "{end:?}"
        );
        break;
    }
    let mid3 = again.chat_acked("after the outage", "r3").await;
    let (_, end3) = again.until_end_of(&mid3).await;
    assert_eq!(end3["status"], "completed");
}

/// The names of the threads of process `pid` (Linux: `/proc/PID/task`).
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task");
    let mut names: Vec<String> = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect();
    names.sort();
    names
}

async fn a_node_runs_on_the_runtime_and_worker_threads_it_was_given_and_a_smol_node_starts_no_tokio(
) {
    let runtime = Runtime::current();
    let redis = SharedRedis::start();
    let a = node(&redis, "node-a", 5, 500, &["--worker-threads", "3"]);
    let mut ws = a.ws("session_id=rt&user_id=u").await;
    // Redis in use: a reply streams, through the store and its pub/sub.
    let mid = ws.chat_acked("which runtime", "r1").await;
    let (_, end) = ws.until_end_of(&mid).await;
    assert_eq!(end["status"], "completed");

    let names = thread_names(a.pid());
    eprintln!("{runtime:?} threads: {names:?}");
    let tokio_workers = names.iter().filter(|n| *n == "weir-worker").count();
    let smol_workers = names.iter().filter(|n| n.starts_with("weir-smol-")).count();
    let tokio_default = names.iter().filter(|n| n.starts_with("tokio")).count();
    match runtime {
        // (tokio names its blocking-pool threads like its workers.)
        Runtime::Tokio => assert!(
            tokio_workers >= 3 && smol_workers == 0,
            "threads: {names:?}"
        ),
        Runtime::Smol => assert!(
            smol_workers == 3 && tokio_workers == 0 && tokio_default == 0,
            "threads: {names:?}"
        ),
    }
}

weir_tests::runtimes_and_redis! {
    everywhere:
    cancel_sent_to_node_b_stops_node_a_generator_and_every_connection_sees_cancelled_with_no_chunk_after,
    cancel_racing_completion_across_two_nodes_has_one_winner_that_every_node_reports,
    client_dropping_from_a_resumes_on_b_with_exactly_the_missing_chunks_then_live_then_end,
    killing_the_owner_node_ends_its_reply_on_b_failed_owner_lost_within_the_lease_and_nothing_is_appended_after,
    presence_spans_nodes_with_debounce_and_a_killed_node_users_go_offline_after_the_expiry,
    a_redis_outage_answers_unavailable_with_readyz_503_loses_nothing_acknowledged_and_recovers;
    one_redis_only:
    a_node_runs_on_the_runtime_and_worker_threads_it_was_given_and_a_smol_node_starts_no_tokio,
    redis_restarted_mid_reply_nodes_reconnect_replies_end_explicitly_and_resume_across_it_is_epoch_changed,
}

/// A tokio node and a smol node on one Redis.
mod mixed {
    use super::{cancel_on_b_stops_a, Runtime};

    #[::tokio::test]
    async fn cancel_sent_to_a_smol_node_stops_the_generator_of_a_tokio_node_with_no_chunk_after() {
        cancel_on_b_stops_a(Runtime::Tokio, Runtime::Smol).await;
    }

    #[::tokio::test]
    async fn cancel_sent_to_a_tokio_node_stops_the_generator_of_a_smol_node_with_no_chunk_after() {
        cancel_on_b_stops_a(Runtime::Smol, Runtime::Tokio).await;
    }
}
