//! A busy node never loses its own replies (issue 17, point 1), end to end:
//! two real `weir serve` processes on one real `redis-server`, with the
//! default lease (10 s), kept saturated for several lease periods
//! ([`SATURATION`]) by a reply produced as fast as the demo generator goes
//! and fanned out to [`CROWD`] connections on node A.
//!
//! - **Its own reply.** A produces the fast reply: it must keep its lease
//!   (no `end`, above all no `failed` / `owner_lost`), its chunks must keep
//!   reaching a viewer on node B, in order and each once, and B must count
//!   the user's connections on A in its presence.
//! - **A bystander.** A fans out B's fast reply while it produces a slow one
//!   of its own (one chunk every 20 s, like a model that thinks: the demo
//!   generator's `[pace=20000]` prompt): the slow reply must not end.
//!
//! The tests of this file run one at a time ([`ONE_AT_A_TIME`]): each keeps
//! the machine's cores busy on purpose. Every wait is bounded; nothing is
//! asserted about speed (the figures are printed for the record).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use weir_tests::tungstenite::Message;
use weir_tests::{Client, Frame, RedisServer, Runtime, WeirProcess, NO_CAPS, T};

weir_tests::both_runtimes! {
    a_node_fanning_out_its_own_fast_reply_to_300_connections_keeps_its_lease_and_b_sees_it_streaming_and_counts_every_connection,
    a_node_fanning_out_another_nodes_fast_reply_to_300_connections_keeps_its_own_slow_reply,
}

/// Connections on node A that the fast reply fans out to.
const CROWD: usize = 300;
/// How long the nodes are kept busy: three and a half default leases.
const SATURATION: Duration = Duration::from_secs(35);
/// The default lease (`--lease-ttl`, not given to the nodes).
const LEASE: Duration = Duration::from_secs(10);
/// Chunks per demo reply: more than any test reaches.
const CHUNKS: u64 = 100_000_000;
/// The demo generator's pace, chunks per second: faster than a node can
/// fan out to [`CROWD`] connections.
const FAST: u64 = 20_000;
/// A prompt the demo generator answers at one chunk per 20 s.
const SLOW_PROMPT: &str = "[pace=20000] think it over";

/// The tests of this file saturate the machine: one at a time.
static ONE_AT_A_TIME: ::tokio::sync::Mutex<()> = ::tokio::sync::Mutex::const_new(());

/// A node on `redis` with the default lease and fast demo replies.
fn node(redis: &RedisServer, id: &str) -> WeirProcess {
    // A crowd of one user on one address: over the caps' defaults.
    WeirProcess::start_on_redis(Runtime::current(), redis, id, (CHUNKS, FAST), &NO_CAPS)
}

/// Connections that read everything they are sent, each in its own task,
/// without parsing it (the test's one core must keep up with them).
struct Crowd {
    stop: Arc<AtomicBool>,
    readers: Vec<::tokio::task::JoinHandle<Drained>>,
}

/// What one crowd connection read.
#[derive(Debug, Default)]
struct Drained {
    frames: u64,
    /// Every `end` frame it was sent, verbatim.
    ends: Vec<String>,
    /// Why it stopped early (the server closed it, or it failed).
    lost: Option<String>,
}

impl Crowd {
    /// `n` connections to `node` with `query`, their handshakes read.
    async fn join(node: &WeirProcess, query: &str, n: usize) -> Self {
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            clients.push(node.ws(query).await);
        }
        let mut crowd = Self {
            stop: Arc::new(AtomicBool::new(false)),
            readers: Vec::new(),
        };
        for c in clients {
            crowd.add(c);
        }
        crowd
    }

    /// Drains `client` too.
    fn add(&mut self, mut client: Client) {
        let stop = self.stop.clone();
        self.readers.push(::tokio::spawn(async move {
            let mut d = Drained::default();
            while !stop.load(Relaxed) {
                let next =
                    ::tokio::time::timeout(Duration::from_millis(200), client.ws_mut().next());
                match next.await {
                    Err(_) => {}
                    Ok(Some(Ok(Message::Text(text)))) => {
                        d.frames += 1;
                        if text.contains(r#""type":"end""#) {
                            d.ends.push(text.to_string());
                        }
                    }
                    Ok(Some(Ok(Message::Close(close)))) => {
                        d.lost = Some(format!("closed: {close:?}"));
                        break;
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(e))) => {
                        d.lost = Some(format!("read failed: {e}"));
                        break;
                    }
                    Ok(None) => {
                        d.lost = Some("the stream ended".into());
                        break;
                    }
                }
            }
            d
        }));
    }

    /// Stops every reader: what each read.
    async fn disperse(self) -> Vec<Drained> {
        self.stop.store(true, Relaxed);
        let mut out = Vec::new();
        for r in self.readers {
            out.push(r.await.expect("a crowd reader does not panic"));
        }
        out
    }
}

/// Asserts no crowd connection was lost or was sent an `end` (the reply
/// they watch is still streaming); returns the frames they read in all.
fn assert_all_still_streaming(drained: &[Drained]) -> u64 {
    for (i, d) in drained.iter().enumerate() {
        assert!(d.lost.is_none(), "crowd connection {i}: {:?}", d.lost);
        assert!(d.ends.is_empty(), "crowd connection {i} got {:?}", d.ends);
    }
    drained.iter().map(|d| d.frames).sum()
}

/// What a watched connection saw of one reply during a while.
#[derive(Debug)]
struct Watched {
    /// The last seq it got.
    last_seq: u64,
    /// Its last seq at the end of each lease period (the last one may be
    /// shorter).
    per_lease: Vec<u64>,
}

/// Reads `ws` for `how_long`: chunks of `mid` must come in order, each
/// once, and no `end` of it may come.
async fn watch(ws: &mut Client, mid: &str, how_long: Duration) -> Watched {
    let start = Instant::now();
    let mut w = Watched {
        last_seq: 0,
        per_lease: Vec::new(),
    };
    let mut next_lease = start + LEASE;
    loop {
        let now = Instant::now();
        if now >= next_lease {
            w.per_lease.push(w.last_seq);
            next_lease += LEASE;
        }
        if now >= start + how_long {
            w.per_lease.push(w.last_seq);
            return w;
        }
        let wait = (start + how_long).min(next_lease) - now;
        let Ok(msg) = ::tokio::time::timeout(wait, ws.ws_mut().next()).await else {
            continue;
        };
        let text = match msg {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!(
                "reply {mid} after {:?}, at seq {}: the connection gave {other:?}",
                start.elapsed(),
                w.last_seq
            ),
        };
        let f = Frame::parse(&text);
        assert!(
            !(f.is("end") && f["message_id"] == mid),
            "reply {mid} ended after {:?}, at seq {} (the node was busy for {how_long:?}): {f:?}",
            start.elapsed(),
            w.last_seq
        );
        if let Some(c) = f.as_chunk().filter(|c| c.message_id == mid) {
            assert_eq!(
                c.first_seq(),
                w.last_seq + 1,
                "chunks of {mid} in order, each once: {f:?}"
            );
            w.last_seq = c.seq;
        }
    }
}

/// Cancels `mid` from `ws` and reads until its `end`: `cancelled`. A busy
/// node may take a while: up to three times [`T`].
async fn cancel_and_end(ws: &mut Client, mid: &str) {
    ws.cancel(Some(mid), "stop").await;
    let deadline = Instant::now() + 3 * T;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = ::tokio::time::timeout(left, ws.ws_mut().next())
            .await
            .unwrap_or_else(|_| panic!("no end of {mid} within {:?} of its cancel", 3 * T));
        let Some(Ok(Message::Text(text))) = msg else {
            assert!(
                matches!(msg, Some(Ok(_))),
                "waiting for the end of {mid}: {msg:?}"
            );
            continue;
        };
        let f = Frame::parse(&text);
        if f.is("end") && f["message_id"] == mid {
            assert_eq!(f["status"], "cancelled", "{f:?}");
            return;
        }
    }
}

/// Reads `ws` until the next chunk of `mid`, at most `within`: its seq. No
/// `end` of `mid` may come first.
async fn next_chunk(ws: &mut Client, mid: &str, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = ::tokio::time::timeout(left, ws.ws_mut().next())
            .await
            .unwrap_or_else(|_| panic!("no chunk of {mid} within {within:?}"));
        let Some(Ok(Message::Text(text))) = msg else {
            assert!(
                matches!(msg, Some(Ok(_))),
                "waiting for a chunk of {mid}: {msg:?}"
            );
            continue;
        };
        let f = Frame::parse(&text);
        assert!(
            !(f.is("end") && f["message_id"] == mid),
            "reply {mid} ended: {f:?}"
        );
        if let Some(c) = f.as_chunk().filter(|c| c.message_id == mid) {
            return c.seq;
        }
    }
}

/// Node `node`'s lease renewals so far, for the record.
async fn renewals(node: &WeirProcess) -> u64 {
    node.metrics().await.get("weir_lease_renewals_total") as u64
}

async fn a_node_fanning_out_its_own_fast_reply_to_300_connections_keeps_its_lease_and_b_sees_it_streaming_and_counts_every_connection(
) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let a = node(&redis, "node-a");
    let b = node(&redis, "node-b");
    let query = "session_id=flood&user_id=u";
    let mut crowd = Crowd::join(&a, query, CROWD).await;
    let mut viewer = b.ws(query).await;
    let mut producer = a.ws(query).await;
    let mid = producer.chat_acked("flood", "r1").await;
    crowd.add(producer);

    let seen = watch(&mut viewer, &mid, SATURATION).await;
    eprintln!(
        "reply {mid}: the viewer on B got seq {} (at the end of each lease period: {:?})",
        seen.last_seq, seen.per_lease
    );
    let [.., before_last, last] = seen.per_lease[..] else {
        panic!("several lease periods: {:?}", seen.per_lease);
    };
    assert!(
        last > before_last,
        "still streaming to B in the last lease period: {:?}",
        seen.per_lease
    );
    let (status, connections) = b.presence("u").await;
    assert_eq!(
        (status.as_str(), connections),
        ("online", CROWD as u64 + 2),
        "B counts the crowd and the producer on A, and its own viewer"
    );

    eprintln!("node A renewed leases {} times", renewals(&a).await);

    let drained = crowd.disperse().await;
    let frames = assert_all_still_streaming(&drained);
    eprintln!("the crowd on A read {frames} frames");
    cancel_and_end(&mut viewer, &mid).await;
}

async fn a_node_fanning_out_another_nodes_fast_reply_to_300_connections_keeps_its_own_slow_reply() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let a = node(&redis, "node-a");
    let b = node(&redis, "node-b");
    let fast = "session_id=fast&user_id=u";
    let slow = "session_id=slow&user_id=u";
    let crowd = Crowd::join(&a, fast, CROWD).await;
    let mut thinker = a.ws(slow).await;
    let mut slow_viewer = b.ws(slow).await;
    let slow_mid = thinker.chat_acked(SLOW_PROMPT, "r-slow").await;
    let mut producer = b.ws(fast).await;
    let fast_mid = producer.chat_acked("flood", "r-fast").await;

    let (on_a, on_b, fast_seen) = ::tokio::join!(
        watch(&mut thinker, &slow_mid, SATURATION),
        watch(&mut slow_viewer, &slow_mid, SATURATION),
        watch(&mut producer, &fast_mid, SATURATION),
    );
    eprintln!(
        "slow reply {slow_mid}: seq {} on A, {} on B; fast reply {fast_mid}: seq {} on B (per lease period {:?})",
        on_a.last_seq, on_b.last_seq, fast_seen.last_seq, fast_seen.per_lease
    );
    eprintln!("node A renewed leases {} times", renewals(&a).await);

    let drained = crowd.disperse().await;
    let frames = assert_all_still_streaming(&drained);
    eprintln!("the crowd on A read {frames} frames of B's reply");
    assert!(frames > 0, "A fanned B's reply out");
    // The slow reply goes on: its first chunk (due 20 s after the chat)
    // reaches B, if it had not yet.
    if on_b.last_seq == 0 {
        let late = Instant::now();
        let seen = next_chunk(&mut slow_viewer, &slow_mid, 3 * T).await;
        eprintln!(
            "its first chunk reached B {:?} after the saturation",
            late.elapsed()
        );
        assert_eq!(seen, 1, "the slow reply's first chunk");
    }
    // No cancel to end with: settling B's reply of several 100 000 chunks
    // keeps Redis busy for seconds, and A still has a backlog of B's notices
    // to read, behind which its own cancel notice would wait. The nodes and
    // Redis stop when dropped.
}
