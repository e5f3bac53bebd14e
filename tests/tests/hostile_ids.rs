//! User ids with characters that mean something in the store's key and
//! channel names, end to end: real `weir serve` processes on one real
//! `redis-server`, real clients. Without auth a user id is the percent-decoded
//! `user_id` query parameter, so `org%2Falice` is user `org/alice` (as a JWT
//! `sub` would be).
//!
//! - `org/alice`: the sweep reads a conversation back from its index entry;
//!   split at the wrong `/`, the reply of a dead owner that nobody watched
//!   was never reaped and left history without an outcome.
//! - `a:{b`: the cancel request to the owner's node was sent on a channel
//!   nobody listens to, so the owner stopped only when its next append was
//!   refused.
//!
//! No assertion is about speed; every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use weir_tests::{
    chunks_of, contiguous, demo_prefix, RedisServer, Runtime, Signal, Value, WeirProcess, T,
};

/// User `org/alice`, percent-encoded for a query.
const ORG_ALICE: &str = "org%2Falice";
/// User `a:{b`, percent-encoded for a query.
const A_BRACE_B: &str = "a%3A%7Bb";

/// A node on `redis` with demo replies of 2 000 chunks at `rate` per
/// second, and `extra` flags.
fn node(redis: &RedisServer, id: &str, rate: u64, extra: &[&str]) -> WeirProcess {
    WeirProcess::start_on_redis(Runtime::current(), redis, id, (2_000, rate), extra)
}

/// The message `mid` in the `messages` of `GET /v1/sessions/{session}/messages`
/// on `node` for `user` (percent-encoded).
async fn listed(node: &WeirProcess, session: &str, user: &str, mid: &str) -> Option<Value> {
    node.messages(session, &format!("?user_id={user}"))
        .await
        .into_iter()
        .find(|m| m["message_id"] == mid)
}

async fn a_reply_of_user_org_slash_alice_whose_owner_died_unwatched_is_reaped_by_the_other_node_and_ends_failed_owner_lost(
) {
    let redis = RedisServer::start();
    let lease = ["--lease-ttl", "1"];
    let mut a = node(&redis, "node-a", 50, &lease);
    let b = node(&redis, "node-b", 50, &lease);
    let query = format!("session_id=k&user_id={ORG_ALICE}");
    let mut on_a = a.ws(&query).await;
    assert_eq!(on_a.hello.as_ref().expect("hello")["user_id"], "org/alice");
    let mid = on_a.chat_acked("doomed", "r1").await;
    on_a.until_seq(Some(&mid), 3).await;
    a.signal(Signal::Kill);
    let _ = a.wait_exit(T).await;
    let killed = Instant::now();

    // Nobody on B watches the reply: only B's sweep can end it (lease 1 s,
    // a sweep every housekeeping period). A reply nobody reaps stays
    // `streaming` until its record expires and it leaves history.
    let deadline = killed + Duration::from_secs(20);
    let reply = loop {
        let reply = listed(&b, "k", ORG_ALICE, &mid).await;
        if let Some(m) = reply.as_ref().filter(|m| m["status"] != "streaming") {
            break m.clone();
        }
        assert!(
            Instant::now() < deadline,
            "20 s after its owner died the reply is {reply:?}: nothing reaped it"
        );
        ::tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("reaped by B's sweep {:?} after the kill", killed.elapsed());
    assert_eq!(reply["status"], "failed", "{reply:?}");

    // A resume on B replays the stored chunks and the outcome.
    let mut resumed = b.ws(&format!("{query}&resume={mid}:0")).await;
    let (frames, end) = resumed.until_end_of(&mid).await;
    assert_eq!(end["status"], "failed", "{end:?}");
    assert_eq!(end["reason"], "owner_lost", "{end:?}");
    let final_seq = end.u64("final_seq");
    assert!(final_seq >= 3, "{end:?}");
    let (text, last) = contiguous(0, &chunks_of(&frames, &mid));
    assert_eq!(last, final_seq);
    assert_eq!(text, demo_prefix("doomed", 2_000, final_seq));
    assert_eq!(reply["content"], text.as_str());

    // And a new connection's history holds it, failed.
    let late = b.ws(&query).await;
    let history = late.history_messages();
    let stored = history
        .iter()
        .find(|m| m["message_id"] == mid.as_str())
        .unwrap_or_else(|| panic!("the reply in history: {history:#?}"));
    assert_eq!(stored["status"], "failed");
    assert_eq!(stored["content"], text.as_str());
}

/// A real Redis subscriber (its own connection, RESP by hand): every
/// message published on its shard channels (`SSUBSCRIBE`: the store
/// publishes with `SPUBLISH`), with its channel.
struct Subscriber {
    conn: BufReader<TcpStream>,
}

/// The channel of the subscriber's sentinel.
const SENTINEL: &str = "weir:{sentinel}:ch";

impl Subscriber {
    /// Subscribed to `channels` (and the sentinel) once this returns.
    fn start(redis: &RedisServer, channels: &[&str]) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", redis.port())).expect("connect to redis");
        stream.set_read_timeout(Some(T)).expect("read timeout");
        let mut sub = Self {
            conn: BufReader::new(stream),
        };
        for channel in channels.iter().copied().chain([SENTINEL]) {
            let command = format!(
                "*2\r\n$10\r\nSSUBSCRIBE\r\n${}\r\n{channel}\r\n",
                channel.len()
            );
            sub.conn
                .get_mut()
                .write_all(command.as_bytes())
                .expect("ssubscribe");
            let confirmed = sub.next();
            assert_eq!(
                confirmed.first().map(Vec::as_slice),
                Some(&b"ssubscribe"[..])
            );
        }
        sub
    }

    /// Everything published since the last call, as (channel, notice): up to
    /// a sentinel this publishes (Redis sends one subscriber's messages in
    /// order).
    fn published(&mut self, redis: &RedisServer) -> Vec<(String, Value)> {
        let _ = redis.cli(&["SPUBLISH", SENTINEL, "mark"]);
        let mut out = Vec::new();
        loop {
            let msg = self.next();
            assert_eq!(msg.len(), 3, "an smessage");
            let channel = String::from_utf8_lossy(&msg[1]).into_owned();
            if channel == SENTINEL {
                return out;
            }
            let notice = serde_json::from_slice(&msg[2]).unwrap_or(Value::Null);
            out.push((channel, notice));
        }
    }

    /// The next push: an array of bulk strings (integers as their text).
    fn next(&mut self) -> Vec<Vec<u8>> {
        let head = self.line();
        let n: usize = head
            .strip_prefix('*')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("an array, got {head:?}"));
        (0..n)
            .map(|_| {
                let item = self.line();
                if let Some(int) = item.strip_prefix(':') {
                    return int.as_bytes().to_vec();
                }
                let len: usize = item
                    .strip_prefix('$')
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("a bulk string, got {item:?}"));
                let mut bytes = vec![0; len + 2];
                self.conn
                    .read_exact(&mut bytes)
                    .expect("read a bulk string");
                bytes.truncate(len);
                bytes
            })
            .collect()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.conn.read_line(&mut line).expect("read from redis");
        line.trim_end().to_owned()
    }
}

async fn a_cancel_sent_to_node_b_of_user_a_colon_brace_b_reaches_the_owner_node_a_and_the_reply_ends_cancelled_there(
) {
    let redis = RedisServer::start();
    // Two chunks a second, and a lease and cancel deadline far away: the
    // owner learns of the cancel from the store's request on its channel
    // (or else, late, from its next append).
    let slow = ["--lease-ttl", "30", "--cancel-deadline", "20"];
    let a = node(&redis, "node-a", 2, &slow);
    let b = node(&redis, "node-b", 2, &slow);
    let query = format!("session_id=x&user_id={A_BRACE_B}");
    let mut on_a = a.ws(&query).await;
    let mut on_b = b.ws(&query).await;
    assert_eq!(on_b.hello.as_ref().expect("hello")["user_id"], "a:{b");
    let mut published = Subscriber::start(&redis, &["weir:{n:node-a}:ch", "weir:{n:node-b}:ch"]);

    let mid = on_a.chat_acked("stop me", "r1").await;
    let seen_b = on_b.until_seq(Some(&mid), 2).await;
    on_b.cancel(Some(&mid), "c1").await;
    let cancelled = Instant::now();
    // A first: its `end` is read as soon as it comes.
    let (a_frames, end_a) = on_a.until_end_of(&mid).await;
    // For the record (no assertion: speed is the benchmarks'). The owner
    // settles once it stops, then A's connection gets the `end`.
    eprintln!("cancel sent to B → end on A: {:?}", cancelled.elapsed());
    let (before, result) = on_b.next_of("cancel_result").await;
    assert_eq!(result["status"], "cancelled", "{result:?}");
    let final_seq = result.u64("final_seq");
    let (after, end_b) = match before.iter().find(|f| f.is("end")) {
        Some(end) => (Vec::new(), end.clone()),
        None => on_b.until_end_of(&mid).await,
    };
    assert_eq!(end_b["status"], "cancelled", "{end_b:?}");
    assert_eq!(end_b.u64("final_seq"), final_seq);
    let mut b_chunks = chunks_of(&seen_b, &mid);
    b_chunks.extend(chunks_of(&before, &mid));
    b_chunks.extend(chunks_of(&after, &mid));
    let (text, last) = contiguous(0, &b_chunks);
    assert_eq!(last, final_seq, "B holds exactly chunks 1..=final_seq");

    assert_eq!(end_a["status"], "cancelled", "{end_a:?}");
    assert_eq!(end_a.u64("final_seq"), final_seq);
    assert!(
        chunks_of(&a_frames, &mid)
            .iter()
            .all(|c| c.seq <= final_seq),
        "no chunk beyond final_seq on A: {a_frames:#?}"
    );

    // The store sent its cancel request on node A's channel, the one node A
    // listens on, once.
    let requests: Vec<String> = published
        .published(&redis)
        .into_iter()
        .filter(|(_, n)| n["notice"] == "cancel_requested" && n["message_id"] == mid.as_str())
        .map(|(channel, _)| channel)
        .collect();
    eprintln!("cancel_requested for {mid} published on {requests:?}");
    assert_eq!(requests, ["weir:{n:node-a}:ch"]);

    // History on either node holds exactly the cancelled text.
    let late = a.ws(&query).await;
    let history = late.history_messages();
    let stored = history
        .iter()
        .find(|m| m["message_id"] == mid.as_str())
        .unwrap_or_else(|| panic!("the reply in history: {history:#?}"));
    assert_eq!(stored["status"], "cancelled");
    assert_eq!(stored["content"], text.as_str());
    assert_eq!(text, demo_prefix("stop me", 2_000, final_seq));
}

weir_tests::both_runtimes! {
    a_reply_of_user_org_slash_alice_whose_owner_died_unwatched_is_reaped_by_the_other_node_and_ends_failed_owner_lost,
    a_cancel_sent_to_node_b_of_user_a_colon_brace_b_reaches_the_owner_node_a_and_the_reply_ends_cancelled_there,
}
