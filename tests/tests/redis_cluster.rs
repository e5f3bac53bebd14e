//! Many nodes on a real Redis Cluster (three masters, a replica each, on
//! loopback: `weir_tests::RedisCluster`), with `--store redis-cluster://…`:
//! every store operation one script on one slot, every notice a shard
//! message (`SPUBLISH`/`SSUBSCRIBE`).
//!
//! No assertion is about speed; every wait is bounded.

use std::time::{Duration, Instant};

use weir_tests::{
    chunks_of, contiguous, demo_prefix, Client, Frame, RedisCluster, Runtime, Signal, WeirProcess,
    T,
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
    a_slot_migrated_mid_reply_every_watcher_gets_every_chunk_once_or_an_explicit_end,
    a_master_killed_mid_reply_its_replica_takes_over_and_every_watcher_gets_every_chunk_once_or_an_explicit_end,
    a_settle_waits_for_its_replica_so_a_master_killed_before_replicating_it_loses_nothing,
    a_cancel_waits_for_its_replica_and_a_failover_leaves_no_cancel_result_the_store_lost,
}

/// Moves `slot` from the master that owns it to another master while weir
/// writes into it: `CLUSTER SETSLOT … IMPORTING/MIGRATING`, `MIGRATE` of its
/// keys (again while new ones appear, bounded), then `SETSLOT … NODE` on
/// every master. Returns the (source, target) ports.
fn migrate_slot(cluster: &RedisCluster, slot: &str) -> (u16, u16) {
    let masters = cluster.masters();
    let id = |n: &weir_tests::RedisServer| n.cli(&["CLUSTER", "MYID"]).trim().to_owned();
    let owns = |n: &weir_tests::RedisServer| {
        n.cli(&["CLUSTER", "COUNTKEYSINSLOT", slot]).trim() != "0"
            || n.cli(&["CLUSTER", "NODES"])
                .lines()
                .any(|l| l.contains("myself") && owns_slot(l, slot))
    };
    let source = *masters.iter().find(|n| owns(n)).expect("the slot's master");
    let target = *masters
        .iter()
        .find(|n| n.port() != source.port())
        .expect("another master");
    let (source_id, target_id) = (id(source), id(target));
    let _ = target.cli(&["CLUSTER", "SETSLOT", slot, "IMPORTING", &source_id]);
    let _ = source.cli(&["CLUSTER", "SETSLOT", slot, "MIGRATING", &target_id]);
    let port = target.port().to_string();
    for _ in 0..50 {
        let keys = source.cli(&["CLUSTER", "GETKEYSINSLOT", slot, "1000"]);
        let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
        if keys.is_empty() {
            break;
        }
        let mut args = vec![
            "MIGRATE",
            "127.0.0.1",
            &port,
            "",
            "0",
            "5000",
            "REPLACE",
            "KEYS",
        ];
        args.extend(keys);
        let _ = source.cli(&args);
    }
    for n in [target, source].into_iter().chain(masters.iter().copied()) {
        let _ = n.cli(&["CLUSTER", "SETSLOT", slot, "NODE", &target_id]);
    }
    (source.port(), target.port())
}

/// Whether a `CLUSTER NODES` line lists `slot` among its ranges.
fn owns_slot(line: &str, slot: &str) -> bool {
    let slot: u32 = slot.parse().expect("slot");
    line.split_whitespace()
        .skip(8)
        .any(|r| match r.split_once('-') {
            Some((a, b)) => {
                a.parse().is_ok_and(|a: u32| a <= slot) && b.parse().is_ok_and(|b: u32| slot <= b)
            }
            None => r.parse() == Ok(slot),
        })
}

async fn a_slot_migrated_mid_reply_every_watcher_gets_every_chunk_once_or_an_explicit_end() {
    let cluster = RedisCluster::start();
    let a = node(&cluster, "node-a", 300, 100, &[]);
    let b = node(&cluster, "node-b", 300, 100, &[]);
    let mut on_a = a.ws("session_id=m&user_id=u").await;
    let mut on_b = b.ws("session_id=m&user_id=u").await;
    let mid = on_a.chat_acked("moving", "r1").await;
    let seen_a = on_a.until_seq(Some(&mid), 20).await;
    let seen_b = on_b.until_seq(Some(&mid), 20).await;
    let slot = cluster.nodes()[0].cli(&["CLUSTER", "KEYSLOT", "weir:{c:u/m}:conv"]);
    let (from, to) = migrate_slot(&cluster, slot.trim());
    eprintln!("slot {} moved from :{from} to :{to} mid-reply", slot.trim());
    for (name, seen, ws) in [("A", seen_a, &mut on_a), ("B", seen_b, &mut on_b)] {
        let (frames, end) = ws.until_end_of(&mid).await;
        let mut got = chunks_of(&seen, &mid);
        got.extend(chunks_of(&frames, &mid));
        let (text, last) = contiguous(0, &got);
        let final_seq = end.u64("final_seq");
        eprintln!(
            "{name}: end {} ({}), chunks 1..={last} delivered, final_seq {final_seq}",
            end["status"], end["reason"]
        );
        assert_eq!(
            last, final_seq,
            "every chunk up to final_seq, once: {got:?}"
        );
        assert_eq!(
            text,
            demo_prefix("moving", 300, last),
            "no duplicate, no gap"
        );
        assert_eq!(end["status"], "completed", "the reply goes on: {end:?}");
    }
    // The keys and both nodes' subscriptions followed the slot.
    let channel = "weir:{c:u/m}:ch";
    let subscribers = |port: u16| {
        let n = cluster
            .nodes()
            .iter()
            .find(|n| n.port() == port)
            .expect("node");
        n.cli(&["PUBSUB", "SHARDNUMSUB", channel])
            .lines()
            .nth(1)
            .and_then(|c| c.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let target = cluster
        .nodes()
        .iter()
        .find(|n| n.port() == to)
        .expect("target");
    assert_ne!(target.cli(&["EXISTS", "weir:{c:u/m}:conv"]).trim(), "0");
    let deadline = Instant::now() + T;
    while subscribers(to) < 2 {
        assert!(
            Instant::now() < deadline,
            "subscriptions on the new owner: {:?} (old owner: {:?})",
            target.cli(&["PUBSUB", "SHARDNUMSUB", channel]),
            cluster
                .nodes()
                .iter()
                .map(|n| (n.port(), n.cli(&["PUBSUB", "SHARDNUMSUB", channel])))
                .collect::<Vec<_>>()
        );
        ::tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{channel}: {} subscribers on the new owner, {} on the old",
        subscribers(to),
        subscribers(from)
    );
    assert_eq!(subscribers(from), 0);
}

/// The port of the master that serves `slot` now (`CLUSTER SHARDS` as seen
/// by `via`... any live node: the first whose `CLUSTER NODES` answers).
fn master_of(cluster: &RedisCluster, slot: &str) -> Option<u16> {
    cluster.masters().into_iter().find_map(|n| {
        n.cli(&["CLUSTER", "NODES"])
            .lines()
            .find(|l| l.contains("myself") && l.contains("master") && owns_slot(l, slot))
            .map(|_| n.port())
    })
}

async fn a_master_killed_mid_reply_its_replica_takes_over_and_every_watcher_gets_every_chunk_once_or_an_explicit_end(
) {
    const N: u32 = 400;
    let mut cluster = RedisCluster::start();
    let a = node(&cluster, "node-a", N, 50, &[]);
    let b = node(&cluster, "node-b", N, 50, &[]);
    let mut on_a = a.ws("session_id=f&user_id=u").await;
    let mut on_b = b.ws("session_id=f&user_id=u").await;
    let mid = on_a.chat_acked("failing over", "r1").await;
    let seen_a = on_a.until_seq(Some(&mid), 20).await;
    let seen_b = on_b.until_seq(Some(&mid), 20).await;
    let slot = cluster.nodes()[0].cli(&["CLUSTER", "KEYSLOT", "weir:{c:u/f}:conv"]);
    let slot = slot.trim().to_owned();
    let old = master_of(&cluster, &slot).expect("the slot's master");
    cluster.kill(old);
    let killed = Instant::now();
    eprintln!("master :{old} of slot {slot} killed mid-reply");
    for (name, seen, ws) in [("A", seen_a, &mut on_a), ("B", seen_b, &mut on_b)] {
        let (frames, end) = ws.until_end_of(&mid).await;
        let mut got = chunks_of(&seen, &mid);
        got.extend(chunks_of(&frames, &mid));
        let (text, last) = contiguous(0, &got);
        let final_seq = end.u64("final_seq");
        eprintln!(
            "{name}: end {} ({}) {:?} after the kill, chunks 1..={last} delivered, final_seq {final_seq}, 0 duplicates, 0 gaps",
            end["status"],
            end["reason"],
            killed.elapsed()
        );
        assert_eq!(
            text,
            demo_prefix("failing over", N, last),
            "no duplicate, no gap"
        );
        match end.str("status") {
            "completed" => assert_eq!(last, u64::from(N), "every chunk: {got:?}"),
            // The lost writes could not be written again: what the store
            // holds, explicitly.
            "failed" => assert!(
                end["reason"] == "store_lost" || end["reason"] == "owner_lost",
                "{end:?}"
            ),
            other => panic!("{other}: {end:?}"),
        }
    }
    let new = master_of(&cluster, &slot).expect("a master for the slot again");
    assert_ne!(new, old, "the replica took over");
    eprintln!("slot {slot} now on :{new}");
    // A resume afterwards, on the other node: exact, or unavailable.
    let mut late = b
        .connect(&format!("session_id=f&user_id=u&resume={mid}:10"))
        .await;
    let mut frames = Vec::new();
    let end = loop {
        let f = late.next_frame().await;
        if f.is("resume_unavailable") || (f.is("end") && f["message_id"] == mid.as_str()) {
            break f;
        }
        frames.push(f);
    };
    if end.is("end") {
        let (text, last) = contiguous(10, &chunks_of(&frames, &mid));
        assert_eq!(last, end.u64("final_seq"), "exact after seq 10");
        assert_eq!(
            format!("{}{text}", demo_prefix("failing over", N, 10)),
            demo_prefix("failing over", N, last)
        );
    }
    // The conversation works on the new master.
    let mid2 = late.chat_acked("after the failover", "r2").await;
    late.until_seq(Some(&mid2), 2).await;
    late.cancel(Some(&mid2), "c2").await;
    let (frames, end2) = late.until_end_of(&mid2).await;
    assert_eq!(end2["status"], "cancelled", "{end2:?} after {frames:?}");
}

/// A cluster, and the shard of user `u`'s conversation `w`: its slot, its
/// master's port and that master's replica's.
struct Shard {
    cluster: RedisCluster,
    slot: String,
    master: u16,
    replica: u16,
}

impl Shard {
    fn start() -> Self {
        let cluster = RedisCluster::start();
        let slot = cluster.nodes()[0].cli(&["CLUSTER", "KEYSLOT", "weir:{c:u/w}:conv"]);
        let slot = slot.trim().to_owned();
        let master = master_of(&cluster, &slot).expect("the slot's master");
        let replica = cluster.replica_of(master).unwrap_or_else(|| {
            panic!(
                "a replica of :{master}: {}",
                cluster.node(master).cli(&["CLUSTER", "NODES"])
            )
        });
        Self {
            cluster,
            slot,
            master,
            replica,
        }
    }

    /// Two nodes on the cluster, a client of the same conversation on each,
    /// and a demo reply of `chunks` chunks (50 a second) from node A that
    /// both clients have seen the first 10 chunks of.
    async fn streaming(&self, chunks: u32, text: &str) -> Streaming {
        let a = node(&self.cluster, "node-a", chunks, 50, &[]);
        let b = node(&self.cluster, "node-b", chunks, 50, &[]);
        let mut on_a = a.ws("session_id=w&user_id=u").await;
        let mut on_b = b.ws("session_id=w&user_id=u").await;
        let mid = on_a.chat_acked(text, "r1").await;
        let seen_a = on_a.until_seq(Some(&mid), 10).await;
        let seen_b = on_b.until_seq(Some(&mid), 10).await;
        Streaming {
            a,
            b,
            on_a,
            on_b,
            mid,
            seen_a,
            seen_b,
        }
    }
}

/// What [`Shard::streaming`] sets up.
struct Streaming {
    a: WeirProcess,
    b: WeirProcess,
    on_a: Client,
    on_b: Client,
    mid: String,
    seen_a: Vec<Frame>,
    seen_b: Vec<Frame>,
}

/// Frames `ws` gets within `wait` (fewer if the stream ends).
async fn frames_within(ws: &mut Client, wait: Duration) -> Vec<Frame> {
    let until = Instant::now() + wait;
    let mut frames = Vec::new();
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match ws.message_within(left).await {
            Ok(Some(weir_tests::tungstenite::Message::Text(t))) => {
                frames.push(Frame::parse(&t));
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    frames
}

/// A settle the master acknowledged and its replica never got would be lost
/// in a failover: clients told `end`, the promoted replica still streaming
/// (then reaped `owner_lost`, and short). So a settle waits for the replica
/// (`WAIT`, `weir_store_redis::Replication`): with the replica frozen, the
/// reply's last chunks reach both nodes' clients but its `end` does not;
/// the master is killed, the replica (without those chunks and the settle)
/// takes over, the owner writes the lost chunks again and settles there, and
/// only then do clients get `end` — each chunk once, and the history holds
/// the whole reply.
async fn a_settle_waits_for_its_replica_so_a_master_killed_before_replicating_it_loses_nothing() {
    const N: u32 = 40;
    let shard = Shard::start();
    let Streaming {
        a: _a,
        b,
        mut on_a,
        mut on_b,
        mid,
        mut seen_a,
        mut seen_b,
    } = shard.streaming(N, "held end").await;
    let Shard {
        mut cluster,
        slot,
        master: old,
        replica,
    } = shard;
    cluster.node(replica).pause();
    let paused = Instant::now();
    seen_a.extend(on_a.until_seq(Some(&mid), u64::from(N)).await);
    seen_b.extend(on_b.until_seq(Some(&mid), u64::from(N)).await);
    // Below the cluster node timeout (2 s) in all, so that the replica is
    // never marked failed (a failed replica is one nothing waits for).
    for (seen, ws) in [(&mut seen_a, &mut on_a), (&mut seen_b, &mut on_b)] {
        let held = frames_within(ws, Duration::from_millis(300)).await;
        assert!(
            !held.iter().any(|f| f.is("end")),
            "no end while the replica cannot confirm the settle: {held:?}"
        );
        seen.extend(held);
    }
    cluster.kill(old);
    cluster.node(replica).resume();
    eprintln!(
        "replica :{replica} frozen {:?}, every chunk delivered and no end; master :{old} killed",
        paused.elapsed()
    );
    let killed = Instant::now();
    for (name, mut seen, ws) in [("A", seen_a, &mut on_a), ("B", seen_b, &mut on_b)] {
        let (frames, end) = ws.until_end_of(&mid).await;
        seen.extend(frames);
        let got = chunks_of(&seen, &mid);
        let (text, last) = contiguous(0, &got);
        eprintln!(
            "{name}: end {} ({}) {:?} after the kill, chunks 1..={last} delivered ({} chunk frames), final_seq {}",
            end["status"],
            end["reason"],
            killed.elapsed(),
            got.len(),
            end["final_seq"]
        );
        assert_eq!(
            text,
            demo_prefix("held end", N, u64::from(N)),
            "each chunk once"
        );
        assert_eq!(end["status"], "completed", "{end:?}");
        assert_eq!(end.u64("final_seq"), u64::from(N));
    }
    assert_eq!(
        master_of(&cluster, &slot),
        Some(replica),
        "the replica took over"
    );
    // The promoted replica holds the whole reply, settled. (Right after the
    // failover a node may still be reconnecting to the store: its new
    // connections are then told `unavailable` and closed; try again.)
    let mut history = None;
    for _ in 0..40 {
        let mut late = b.connect("session_id=w&user_id=u").await;
        let mut f = late.next_frame().await;
        if f.is("hello") {
            f = late.next_frame().await;
        }
        if f.is("history") {
            history = Some(f);
            break;
        }
        assert_eq!(f["code"], "unavailable", "{f:?}");
        ::tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let history = history.expect("a snapshot within 10 s");
    let last = &history["messages"][1];
    assert_eq!(last["status"], "completed", "{history:?}");
    assert_eq!(
        last["content"],
        demo_prefix("held end", N, u64::from(N)).as_str()
    );
}

/// As above for a cancel: with the replica of the conversation's master
/// frozen, a cross-node cancel gets no `cancel_result` (it waits for the
/// replica), and neither node's client an `end`; the master is killed and the
/// replica takes over without the cancel. The canceller is told either
/// `cancelled` or `unavailable` (the wait for the frozen replica may end
/// before the kill; or the redis crate sends the call again to the
/// promoted replica, where it may take effect while the wait for replicas
/// the new master does not have yet times out); the reply ends explicitly,
/// `cancelled` at the `final_seq` the canceller was told when it was told
/// one; each client got each chunk once, and none after the end; a cancel
/// sent again is answered.
async fn a_cancel_waits_for_its_replica_and_a_failover_leaves_no_cancel_result_the_store_lost() {
    const N: u32 = 400;
    let shard = Shard::start();
    let Streaming {
        a: _a,
        b: _b,
        mut on_a,
        mut on_b,
        mid,
        mut seen_a,
        mut seen_b,
    } = shard.streaming(N, "held cancel").await;
    let Shard {
        mut cluster,
        master: old,
        replica,
        ..
    } = shard;
    cluster.node(replica).pause();
    on_b.cancel(Some(&mid), "c1").await;
    // Below the cluster node timeout (2 s) in all, as above.
    for (seen, ws) in [(&mut seen_a, &mut on_a), (&mut seen_b, &mut on_b)] {
        let held = frames_within(ws, Duration::from_millis(500)).await;
        assert!(
            !held.iter().any(|f| f.is("end") || f.is("cancel_result")),
            "neither cancel_result nor end while the replica cannot confirm: {held:?}"
        );
        seen.extend(held);
    }
    cluster.kill(old);
    cluster.node(replica).resume();
    let killed = Instant::now();
    // The canceller's answer (before or after the end: the protocol orders
    // only chunks against `cancel_result`). An `unavailable` may already have
    // come while the replica was frozen: the `WAIT` is bounded (half the
    // store timeout), and its end races the kill.
    let told_c1 = |f: &Frame| f.is("cancel_result") || (f.is("error") && f["request_id"] == "c1");
    let answer = match seen_b.iter().position(told_c1) {
        Some(early) => seen_b.remove(early),
        None => loop {
            let f = on_b.next_frame().await;
            if told_c1(&f) {
                break f;
            }
            seen_b.push(f);
        },
    };
    eprintln!(
        "canceller told {answer:?} {:?} after the kill",
        killed.elapsed()
    );
    let ended_b = seen_b.iter().find(|f| f.is("end")).cloned();
    for (name, mut seen, ws) in [("A", seen_a, &mut on_a), ("B", seen_b, &mut on_b)] {
        let end = match (name, &ended_b) {
            ("B", Some(end)) => end.clone(),
            _ => {
                let (frames, end) = ws.until_end_of(&mid).await;
                seen.extend(frames);
                end
            }
        };
        let (text, last) = contiguous(0, &chunks_of(&seen, &mid));
        eprintln!(
            "{name}: end {} ({}) final_seq {}, chunks 1..={last} once each",
            end["status"], end["reason"], end["final_seq"]
        );
        assert_eq!(
            text,
            demo_prefix("held cancel", N, last),
            "no duplicate, no gap"
        );
        assert_eq!(
            last,
            end.u64("final_seq"),
            "every chunk up to the end, none after"
        );
        if answer.is("cancel_result") {
            assert_eq!(answer["status"], "cancelled", "{answer:?}");
            assert_eq!(end["status"], "cancelled", "{end:?}");
            assert_eq!(end["final_seq"], answer["final_seq"]);
        } else {
            assert_eq!(answer["code"], "unavailable", "{answer:?}");
            assert!(
                end["status"] == "cancelled" || end["status"] == "failed",
                "an explicit end: {end:?}"
            );
        }
    }
    // Told `unavailable`, the canceller sends it again, as the error says:
    // the answer is now the reply's outcome.
    if answer.is("error") {
        let mut result = None;
        for attempt in 0..20 {
            let id = format!("c{}", attempt + 2);
            on_b.cancel(Some(&mid), &id).await;
            let f = loop {
                let f = on_b.next_frame().await;
                if f["request_id"] == id.as_str() {
                    break f;
                }
            };
            eprintln!("sent again: {f:?}");
            if f.is("cancel_result") {
                result = Some(f);
                break;
            }
            assert_eq!(f["code"], "unavailable", "{f:?}");
            ::tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let result = result.expect("a cancel sent again is answered within 20 tries");
        assert_eq!(result["status"], "cancelled", "{result:?}");
    }
}
