//! A reconnect storm, end to end, at a small size (issue 16 point 3; the
//! benchmark `cluster_bench storm` runs the same clients by the thousand):
//! two real nodes on one real Redis, 40 clients on node A, each in a
//! conversation of its own, 10 of them following a reply that A streams.
//! Node A is stopped (SIGTERM) or killed (SIGKILL); every client reconnects
//! to node B, resuming its reply with `resume=MESSAGE_ID:LASTSEQ`, and must
//! get every chunk exactly once (merged frames included) and the reply's
//! `end`, with the text it received equal to the reply's text in history.
//!
//! No assertion is about speed; every wait is bounded.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use weir_tests::storm::{history_of, source_ip, storm_client, Follow, StormCtx};
use weir_tests::{RedisServer, Runtime, Signal, WeirProcess, NO_CAPS};

const CLIENTS: usize = 40;
const STREAMING: usize = 10;
/// Chunks each streaming client forgets before it resumes, so that B
/// replays them from the store (its last frames were in flight).
const FORGET: u64 = 3;
/// The lease of a reply's owner, seconds: short, for the SIGKILL case.
const LEASE: &str = "1";

/// Waits (at most `limit`) until `done()` holds; panics with `what` if not.
async fn wait_until(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let deadline = ::tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            ::tokio::time::Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        ::tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the storm with `signal` sent to node A; returns every client's
/// [`Follow`] with its reply's (content, status) in history (read on B),
/// and node B (kept alive until the checks are done).
async fn storm(signal: Signal) -> (Vec<(Follow, Option<(String, String)>)>, WeirProcess) {
    let redis = RedisServer::start();
    let mut flags = vec!["--lease-ttl", LEASE];
    flags.extend(NO_CAPS);
    // 2 000 chunks at 20 per second: still streaming when A goes away.
    let mut a =
        WeirProcess::start_on_redis(Runtime::current(), &redis, "node-a", (2_000, 20), &flags);
    let b = WeirProcess::start_on_redis(Runtime::current(), &redis, "node-b", (2_000, 20), &flags);
    let (ctx, go, stop) = StormCtx::new(a.addr(), b.addr(), (16, FORGET), Duration::from_secs(60));
    let ctx = Arc::new(ctx);
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        tasks.push(::tokio::spawn(storm_client(
            ctx.clone(),
            format!("storm{i}"),
            source_ip(i, 4),
            i < STREAMING,
        )));
    }
    let c = ctx.clone();
    wait_until(
        "the idle clients connected to A",
        Duration::from_secs(20),
        || c.ready.load(Relaxed) + c.done.load(Relaxed) >= CLIENTS - STREAMING,
    )
    .await;
    let _ = go.send(true);
    wait_until(
        "the replies streaming to their clients on A",
        Duration::from_secs(20),
        || c.ready.load(Relaxed) + c.done.load(Relaxed) >= CLIENTS,
    )
    .await;
    // A few more chunks go by (more than FORGET).
    ::tokio::time::sleep(Duration::from_millis(500)).await;
    a.signal(signal);
    let _ = a.wait_exit(Duration::from_secs(20)).await;
    // SIGKILL: the lease, the watch period and a wide margin.
    wait_until(
        "every client resumed on B and its reply ended",
        Duration::from_secs(40),
        || c.done.load(Relaxed) >= CLIENTS,
    )
    .await;
    let _ = stop.send(true);
    let mut out = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let follow = t.await.expect("a storm client task");
        let history = match &follow.message_id {
            Some(mid) => history_of(b.addr(), source_ip(i, 4), &follow.session, mid)
                .await
                .unwrap_or_else(|e| panic!("history of {}: {e}", follow.session)),
            None => None,
        };
        out.push((follow, history));
    }
    (out, b)
}

/// Every client resumed on B; each streaming one got every chunk exactly
/// once, its reply's end with `status` (and `reason`), and the text of the
/// reply in history. Returns how many chunks came from B.
fn assert_exactly_once(
    follows: &[(Follow, Option<(String, String)>)],
    close_code: Option<u16>,
    status: &str,
    reason: &str,
) -> usize {
    let mut from_b = 0;
    for (f, history) in follows {
        let who = &f.session;
        assert!(f.error.is_none(), "{who}: {:?}", f.error);
        assert_eq!(f.close_code, close_code, "{who}: how A went away");
        assert!(
            f.connected_at.is_some() && f.resumed_at.is_some(),
            "{who} resumed on B: {f:#?}"
        );
        if !f.streaming {
            continue;
        }
        let (content, in_history) = history
            .as_ref()
            .unwrap_or_else(|| panic!("{who}: its reply {:?} is in history", f.message_id));
        let v = f.verdict(Some(content));
        assert_eq!(
            (v.gaps, v.duplicates, v.no_end, v.inexact),
            (0, 0, false, false),
            "{who}: exactly once, resumed exactly, to its end: {f:#?}"
        );
        assert!(
            !v.mismatch,
            "{who}: received {:?}, history holds {content:?}",
            v.text
        );
        let end = f.end.as_ref().expect("an end");
        assert_eq!(end["status"], status, "{who}: {end}");
        assert_eq!(end["reason"], reason, "{who}: {end}");
        assert_eq!(in_history, status, "{who}: the status in history");
        assert!(!content.is_empty(), "{who}: a reply with text");
        assert!(f.forgot >= FORGET, "{who} forgot {} chunks", f.forgot);
        // What it forgot came again, from B.
        let on_b: u64 = f
            .spans
            .iter()
            .filter(|s| s.on_b)
            .map(|s| s.to - s.from + 1)
            .sum();
        assert!(
            on_b >= f.forgot,
            "{who}: {on_b} chunks from B, {} forgotten",
            f.forgot
        );
        from_b += f.spans.iter().filter(|s| s.on_b).count();
    }
    from_b
}

async fn sigterm_on_node_a_every_client_resumes_on_node_b_exactly_once_and_each_reply_ends_as_history_holds_it(
) {
    let (follows, _b) = storm(Signal::Term).await;
    let from_b = assert_exactly_once(&follows, Some(1001), "failed", "shutdown");
    eprintln!("SIGTERM storm: {CLIENTS} clients resumed, {from_b} chunk frames came from B");
}

async fn sigkill_on_node_a_every_client_resumes_on_node_b_exactly_once_and_each_reply_ends_failed_owner_lost(
) {
    let (follows, _b) = storm(Signal::Kill).await;
    let from_b = assert_exactly_once(&follows, None, "failed", "owner_lost");
    eprintln!("SIGKILL storm: {CLIENTS} clients resumed, {from_b} chunk frames came from B");
}

weir_tests::both_runtimes! {
    sigterm_on_node_a_every_client_resumes_on_node_b_exactly_once_and_each_reply_ends_as_history_holds_it,
    sigkill_on_node_a_every_client_resumes_on_node_b_exactly_once_and_each_reply_ends_failed_owner_lost,
}
