//! Many nodes on a real Redis Cluster (three masters, a replica each, on
//! loopback: `weir_tests::RedisCluster`), with `--store redis-cluster://…`:
//! every store operation one script on one slot, every notice a shard
//! message (`SPUBLISH`/`SSUBSCRIBE`).
//!
//! No assertion is about speed; every wait is bounded.

use std::time::Duration;

use weir_tests::{
    chunks_of, contiguous, demo_prefix, Client, RedisCluster, Runtime, Signal, WeirProcess, T,
};

/// A weir node on `cluster` with demo replies of `chunks` chunks at `rate`
/// per second, and `extra` flags.
fn node(cluster: &RedisCluster, id: &str, chunks: u32, rate: u32, extra: &[&str]) -> WeirProcess {
    let (url, chunks, rate) = (cluster.url(), chunks.to_string(), rate.to_string());
    let mut args = vec![
        "--store",
        url.as_str(),
        "--node-id",
        id,
        "--demo-chunks",
        chunks.as_str(),
        "--demo-rate",
        rate.as_str(),
    ];
    args.extend_from_slice(extra);
    WeirProcess::start_on(Runtime::current(), &args)
}

async fn many_conversations_spread_over_all_masters_each_watcher_gets_every_chunk_once() {
    const CONVS: usize = 12;
    const CHUNKS: u32 = 20;
    let cluster = RedisCluster::start();
    let a = node(&cluster, "node-a", CHUNKS, 200, &[]);
    let b = node(&cluster, "node-b", CHUNKS, 200, &[]);
    let mut pairs: Vec<(Client, Client)> = Vec::new();
    for i in 0..CONVS {
        let query = format!("session_id=s{i}&user_id=user-{i}");
        pairs.push((a.ws(&query).await, b.ws(&query).await));
    }
    let mut mids = Vec::new();
    for (i, (on_a, _)) in pairs.iter_mut().enumerate() {
        mids.push(on_a.chat_acked(&format!("hello {i}"), "r1").await);
    }
    let mut delivered = 0u64;
    for (i, ((on_a, on_b), mid)) in pairs.iter_mut().zip(&mids).enumerate() {
        let content = format!("hello {i}");
        for ws in [on_a, on_b] {
            let (frames, end) = ws.until_end_of(mid).await;
            assert_eq!(end["status"], "completed", "{end:?}");
            let chunks = chunks_of(&frames, mid);
            // Exactly once: contiguous seqs (a frame may carry several)
            // with no repeat and no gap, and exactly the reply's text.
            let (text, last) = contiguous(0, &chunks);
            assert_eq!(last, u64::from(CHUNKS));
            assert_eq!(text, demo_prefix(&content, CHUNKS, last));
            delivered += last;
        }
    }
    eprintln!("{CONVS} conversations, {delivered} chunks delivered, 0 duplicates, 0 gaps");
    // The conversations' keys are on every master (none holds them all).
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);
    for m in &masters {
        let keys: u64 = m.cli(&["DBSIZE"]).trim().parse().expect("DBSIZE");
        eprintln!("master :{} holds {keys} keys", m.port());
        assert!(keys > 0, "master :{} holds no key", m.port());
    }
}

async fn cancel_sent_to_node_b_on_a_cluster_stops_node_a_generator_with_no_chunk_after() {
    let cluster = RedisCluster::start();
    let a = node(&cluster, "node-a", 2_000, 100, &[]);
    let b = node(&cluster, "node-b", 2_000, 100, &[]);
    let mut on_a = a.ws("session_id=x&user_id=u").await;
    let mut on_b = b.ws("session_id=x&user_id=u").await;
    let mid = on_a.chat_acked("a long one", "r1").await;
    let seen_b = on_b.until_seq(Some(&mid), 5).await;
    on_b.cancel(Some(&mid), "c1").await;
    let (before, result) = on_b.next_of("cancel_result").await;
    assert_eq!(result["status"], "cancelled", "{result:?}");
    let final_seq = result.u64("final_seq");
    let (a_frames, end_a) = on_a.until_end_of(&mid).await;
    assert_eq!(end_a["status"], "cancelled");
    assert_eq!(end_a.u64("final_seq"), final_seq);
    assert!(chunks_of(&a_frames, &mid)
        .iter()
        .all(|c| c.seq <= final_seq));
    let mut b_chunks = chunks_of(&seen_b, &mid);
    b_chunks.extend(chunks_of(&before, &mid));
    if !before.iter().any(|f| f.is("end")) {
        let (after, end_b) = on_b.until_end_of(&mid).await;
        assert_eq!(end_b["status"], "cancelled");
        b_chunks.extend(chunks_of(&after, &mid));
    }
    let (text, last) = contiguous(0, &b_chunks);
    assert_eq!(last, final_seq, "B holds exactly chunks 1..=final_seq");
    assert_eq!(text, demo_prefix("a long one", 2_000, final_seq));
}

async fn a_weir_node_killed_mid_reply_on_a_cluster_ends_the_reply_failed_owner_lost_on_the_other() {
    let cluster = RedisCluster::start();
    let lease = ["--lease-ttl", "1"];
    let mut a = node(&cluster, "node-a", 2_000, 50, &lease);
    let b = node(&cluster, "node-b", 2_000, 50, &lease);
    let mut on_a = a.ws("session_id=k&user_id=u").await;
    let mut on_b = b.ws("session_id=k&user_id=u").await;
    let mid = on_a.chat_acked("doomed", "r1").await;
    let seen = on_b.until_seq(Some(&mid), 3).await;
    a.signal(Signal::Kill);
    let _ = a.wait_exit(T).await;
    let (frames, end) = on_b.until_end_of(&mid).await;
    assert_eq!(end["status"], "failed", "{end:?}");
    assert_eq!(end["reason"], "owner_lost");
    let final_seq = end.u64("final_seq");
    let mut got = chunks_of(&seen, &mid);
    got.extend(chunks_of(&frames, &mid));
    let (_, last) = contiguous(0, &got);
    assert_eq!(
        last, final_seq,
        "every chunk up to final_seq, once: {got:?}"
    );
    // The conversation is free again.
    let mid2 = on_b.chat_acked("again", "r2").await;
    assert_ne!(mid2, mid);
    ::tokio::time::sleep(Duration::from_millis(100)).await;
    on_b.cancel(Some(&mid2), "c2").await;
    let (_, end2) = on_b.until_end_of(&mid2).await;
    assert_eq!(end2["status"], "cancelled");
}

weir_tests::both_runtimes! {
    many_conversations_spread_over_all_masters_each_watcher_gets_every_chunk_once,
    cancel_sent_to_node_b_on_a_cluster_stops_node_a_generator_with_no_chunk_after,
    a_weir_node_killed_mid_reply_on_a_cluster_ends_the_reply_failed_owner_lost_on_the_other,
}
