//! The caps of issue 17 point 5, end to end: real `weir serve` processes
//! (one on the in-memory store, or two on one real `redis-server`), real
//! WebSocket and HTTP clients on loopback. For each cap: over it, the client
//! is told `rate_limited` with `retry_after_ms` (HTTP: 429 and
//! `Retry-After`), nothing is started, the refusal is counted in
//! `weir_rate_limited_total{cap=…}`, and on two nodes the cap is the
//! user's (or the address's) across both.
//!
//! Every wait is bounded; nothing is timed.

use std::time::Duration;

use weir_tests::{Client, Frame, RedisServer, Runtime, WeirProcess};

/// Replies long and slow enough to be streaming for the whole test.
const LONG: (u64, u64) = (2_000, 20);

/// One node on the in-memory store with `LONG` replies and `flags`.
fn single(flags: &[&str]) -> WeirProcess {
    let mut args = vec!["--demo-chunks", "2000", "--demo-rate", "20"];
    args.extend_from_slice(flags);
    WeirProcess::start(&args)
}

/// Two nodes on `redis` with `LONG` replies and `flags`.
fn pair(redis: &RedisServer, flags: &[&str]) -> (WeirProcess, WeirProcess) {
    let start = |id| WeirProcess::start_on_redis(Runtime::current(), redis, id, LONG, flags);
    (start("node-a"), start("node-b"))
}

/// Sends a chat and reads until its answer: `ack` or `error`.
async fn chat_answer(ws: &mut Client, rid: &str) -> Frame {
    ws.chat("hello", rid).await;
    loop {
        let f = ws.next_frame().await;
        if (f.is("ack") || f.is("error")) && f["request_id"] == rid {
            return f;
        }
    }
}

/// Asserts `f` is an `error` `rate_limited` answering `rid` with a
/// `retry_after_ms` in `1..=max`.
fn assert_limited(f: &Frame, rid: &str, max: u64) {
    assert!(f.is("error"), "expected rate_limited, got {f:?}");
    assert_eq!(f.str("code"), "rate_limited", "{f:?}");
    assert_eq!(f["request_id"], rid);
    let retry = f.u64("retry_after_ms");
    assert!((1..=max).contains(&retry), "retry_after_ms {retry}");
}

/// A connection refused by a cap: one `error` `rate_limited` with
/// `retry_after_ms`, then close 1008 — no `hello`.
async fn assert_refused(node: &WeirProcess, query: &str) {
    let mut ws = node.connect(query).await;
    let (frames, code) = ws.frames_until_close().await;
    assert_eq!(code, 1008, "{frames:?}");
    assert_eq!(frames.len(), 1, "only the error: {frames:?}");
    assert_eq!(frames[0].str("code"), "rate_limited");
    assert!(frames[0].u64("retry_after_ms") > 0);
}

/// A connection whose handshake completes (`hello`, `history`), retried
/// for a while: a slot given back by a close is free once the closing
/// node has told the store, which is soon after, not at once.
async fn connects_again(node: &WeirProcess, query: &str) -> Client {
    for _ in 0..50 {
        let mut ws = node.connect(query).await;
        let first = ws.next_frame().await;
        if first.is("hello") {
            let _history = ws.next_frame().await;
            return ws;
        }
        ::tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{query}: still refused after 5 s");
}

/// A chat that is acked, retried for a while: a slot given back when a
/// reply ended is free once its node has told the store, which is soon
/// after the `end`, not before it.
async fn acked_again(ws: &mut Client, rid: &str) {
    for i in 0..50 {
        let rid = format!("{rid}-{i}");
        let f = chat_answer(ws, &rid).await;
        if f.is("ack") {
            return;
        }
        assert_eq!(f.str("code"), "rate_limited", "{f:?}");
        ::tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("still rate_limited after 5 s");
}

async fn refusals(node: &WeirProcess, cap: &str) -> f64 {
    node.metrics()
        .await
        .get(&format!("weir_rate_limited_total{{cap=\"{cap}\"}}"))
}

// ---------------------------------------------------------------------------
// Streaming replies per user
// ---------------------------------------------------------------------------

async fn a_user_at_the_streams_cap_is_refused_in_a_third_conversation_until_one_reply_ends() {
    let weir = single(&["--max-streams-per-user", "2"]);
    let mut a = weir.ws("session_id=a&user_id=u").await;
    let mut b = weir.ws("session_id=b&user_id=u").await;
    let mut c = weir.ws("session_id=c&user_id=u").await;
    let mid = a.chat_acked("one", "r1").await;
    b.chat_acked("two", "r2").await;
    let refused = chat_answer(&mut c, "r3").await;
    assert_limited(&refused, "r3", 1_000);
    // Nothing started: no `user_message`, no `start` on that conversation.
    c.assert_nothing_more("p1").await;
    // Another user is not held to u's cap.
    let mut other = weir.ws("session_id=a&user_id=v").await;
    other.chat_acked("mine", "v1").await;
    assert_eq!(refusals(&weir, "user_streams").await, 1.0);
    // One of u's replies ends: a slot is free.
    a.cancel(Some(&mid), "c1").await;
    a.until_end_of(&mid).await;
    acked_again(&mut c, "r4").await;
}

async fn the_streams_cap_is_the_users_across_two_nodes() {
    let redis = RedisServer::start();
    let (a, b) = pair(&redis, &["--max-streams-per-user", "1"]);
    let mut on_a = a.ws("session_id=a&user_id=u").await;
    let mut on_b = b.ws("session_id=b&user_id=u").await;
    let mid = on_a.chat_acked("one", "r1").await;
    let refused = chat_answer(&mut on_b, "r2").await;
    assert_limited(&refused, "r2", 1_000);
    assert_eq!(refusals(&b, "user_streams").await, 1.0);
    on_a.cancel(Some(&mid), "c1").await;
    on_a.until_end_of(&mid).await;
    acked_again(&mut on_b, "r3").await;
}

// ---------------------------------------------------------------------------
// Chats per minute
// ---------------------------------------------------------------------------

async fn chats_beyond_the_burst_are_refused_on_the_websocket_and_with_429_on_http() {
    // A burst of 2, then 1 a minute: the third chat waits (up to) a minute.
    let weir = single(&["--chats-per-minute", "1", "--chat-burst", "2"]);
    let mut a = weir.ws("session_id=a&user_id=u").await;
    let mut b = weir.ws("session_id=b&user_id=u").await;
    let mut c = weir.ws("session_id=c&user_id=u").await;
    a.chat_acked("one", "r1").await;
    b.chat_acked("two", "r2").await;
    let refused = chat_answer(&mut c, "r3").await;
    assert_limited(&refused, "r3", 60_000);
    c.assert_nothing_more("p1").await;
    let post = weir
        .http(
            "POST",
            "/v1/sessions/d/messages?user_id=u",
            r#"{"content":"hi"}"#,
        )
        .await;
    assert_eq!(post.status, 429, "{}", post.body);
    let body = post.json();
    assert_eq!(body["code"], "rate_limited");
    let retry_ms = body["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!((1..=60_000).contains(&retry_ms));
    let header: u64 = post
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("whole seconds");
    assert_eq!(header, retry_ms.div_ceil(1000));
    // Nothing was stored for the refused post.
    assert!(weir.messages("d", "?user_id=u").await.is_empty());
    assert_eq!(refusals(&weir, "chat_rate").await, 2.0);
    // Another user has a bucket of their own.
    let mut other = weir.ws("session_id=a&user_id=v").await;
    other.chat_acked("mine", "v1").await;
}

async fn the_chat_rate_is_the_users_across_two_nodes() {
    let redis = RedisServer::start();
    let (a, b) = pair(&redis, &["--chats-per-minute", "1", "--chat-burst", "1"]);
    let mut on_a = a.ws("session_id=a&user_id=u").await;
    let mut on_b = b.ws("session_id=b&user_id=u").await;
    on_a.chat_acked("one", "r1").await;
    let refused = chat_answer(&mut on_b, "r2").await;
    assert_limited(&refused, "r2", 60_000);
    let post = b
        .http(
            "POST",
            "/v1/sessions/c/messages?user_id=u",
            r#"{"content":"hi"}"#,
        )
        .await;
    assert_eq!(post.status, 429, "{}", post.body);
    assert!(post.header("retry-after").is_some());
    assert_eq!(refusals(&b, "chat_rate").await, 2.0);
}

// ---------------------------------------------------------------------------
// Connections per user
// ---------------------------------------------------------------------------

async fn a_user_at_the_connection_cap_is_refused_before_hello_until_one_closes() {
    let weir = single(&["--max-connections-per-user", "2"]);
    let one = weir.ws("session_id=a&user_id=u").await;
    let _two = weir.ws("session_id=b&user_id=u").await;
    assert_refused(&weir, "session_id=c&user_id=u").await;
    let _other = weir.ws("session_id=a&user_id=v").await;
    assert_eq!(refusals(&weir, "user_connections").await, 1.0);
    // The refused connection never counted as present.
    assert_eq!(weir.presence("u").await.1, 2);
    one.close().await;
    let _three = connects_again(&weir, "session_id=c&user_id=u").await;
}

async fn a_user_at_the_connection_cap_on_node_a_is_refused_on_node_b() {
    let redis = RedisServer::start();
    let (a, b) = pair(&redis, &["--max-connections-per-user", "1"]);
    let on_a = a.ws("session_id=a&user_id=u").await;
    assert_refused(&b, "session_id=b&user_id=u").await;
    assert_eq!(refusals(&b, "user_connections").await, 1.0);
    on_a.close().await;
    let _on_b = connects_again(&b, "session_id=b&user_id=u").await;
}

// ---------------------------------------------------------------------------
// Connections per client address
// ---------------------------------------------------------------------------

async fn one_address_at_its_connection_cap_is_refused_whoever_the_user_and_a_forged_header_changes_nothing(
) {
    let weir = single(&["--max-connections-per-ip", "2"]);
    let _a = weir.ws("session_id=s&user_id=a").await;
    let _b = weir.ws("session_id=s&user_id=b").await;
    // The peer is not a trusted proxy: its X-Forwarded-For is ignored.
    let forged = weir
        .try_connect_with_headers(
            "session_id=s&user_id=c",
            &[("x-forwarded-for", "203.0.113.9")],
        )
        .await
        .expect("upgraded");
    let mut forged = forged;
    let (frames, code) = forged.frames_until_close().await;
    assert_eq!(code, 1008, "{frames:?}");
    assert_eq!(frames[0].str("code"), "rate_limited");
    assert_eq!(refusals(&weir, "ip_connections").await, 1.0);
}

async fn the_seed_front_ends_ws_chat_counts_against_its_addresss_connection_cap() {
    let weir = single(&["--max-connections-per-ip", "1"]);
    let _native = weir.ws("session_id=s&user_id=a").await;
    let mut page = weir
        .try_compat_ws("session_id=s&user_id=b", &[])
        .await
        .expect("upgraded");
    // The seed's dialect never sends `error` frames: refused, the page gets
    // no `welcome`, only the close (and reconnects later, as it does).
    let (texts, code) = page.until_close().await;
    assert_eq!(code, 1008, "{texts:?}");
    assert!(texts.is_empty(), "{texts:?}");
    assert_eq!(refusals(&weir, "ip_connections").await, 1.0);
}

async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_connection_cap() {
    let weir = single(&[
        "--max-connections-per-ip",
        "1",
        "--trusted-proxy",
        "127.0.0.0/8",
    ]);
    let via = |client: &'static str| [("x-forwarded-for", client)];
    let handshake = |mut ws: Client| async move {
        let first = ws.next_frame().await;
        (ws, first)
    };
    let one = weir
        .try_connect_with_headers("session_id=s&user_id=a", &via("203.0.113.1"))
        .await
        .expect("upgraded");
    let (_one, first) = handshake(one).await;
    assert!(first.is("hello"), "{first:?}");
    // The client's forged entry left of the real one changes nothing.
    let two = weir
        .try_connect_with_headers("session_id=s&user_id=b", &via("198.51.100.7, 203.0.113.1"))
        .await
        .expect("upgraded");
    let (mut two, first) = handshake(two).await;
    assert!(first.is("error"), "{first:?}");
    assert_eq!(first.str("code"), "rate_limited");
    let (_, code) = two.frames_until_close().await;
    assert_eq!(code, 1008);
    let other = weir
        .try_connect_with_headers("session_id=s&user_id=c", &via("203.0.113.2"))
        .await
        .expect("upgraded");
    let (_other, first) = handshake(other).await;
    assert!(
        first.is("hello"),
        "another client behind the proxy: {first:?}"
    );
}

async fn an_address_at_its_connection_cap_on_node_a_is_refused_on_node_b() {
    let redis = RedisServer::start();
    let (a, b) = pair(&redis, &["--max-connections-per-ip", "1"]);
    let on_a = a.ws("session_id=s&user_id=a").await;
    assert_refused(&b, "session_id=s&user_id=b").await;
    assert_eq!(refusals(&b, "ip_connections").await, 1.0);
    on_a.close().await;
    let _on_b = connects_again(&b, "session_id=s&user_id=b").await;
}

async fn the_seed_front_ends_api_chat_is_capped_like_every_chat_across_two_nodes() {
    // The compat `POST /api/chat` is no way around the chat caps: a user who
    // chatted on node A is refused on node B with the seed's `{detail}`,
    // 429, `retry_after_ms` and `Retry-After`, and nothing is stored.
    let redis = RedisServer::start();
    let (a, b) = pair(&redis, &["--chats-per-minute", "1", "--chat-burst", "1"]);
    let mut on_a = a.ws("session_id=a&user_id=u").await;
    on_a.chat_acked("one", "r1").await;
    let post = b
        .http(
            "POST",
            "/api/chat",
            r#"{"session_id":"c","message":"hi","user_id":"u"}"#,
        )
        .await;
    assert_eq!(post.status, 429, "{}", post.body);
    let body = post.json();
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    assert_eq!(body["retry_after_ms"].as_u64().map(|ms| ms > 0), Some(true));
    assert!(post.header("retry-after").is_some());
    assert!(b.messages("c", "?user_id=u").await.is_empty());
    assert_eq!(refusals(&b, "chat_rate").await, 1.0);
}

weir_tests::both_runtimes! {
    a_user_at_the_streams_cap_is_refused_in_a_third_conversation_until_one_reply_ends,
    the_streams_cap_is_the_users_across_two_nodes,
    chats_beyond_the_burst_are_refused_on_the_websocket_and_with_429_on_http,
    the_chat_rate_is_the_users_across_two_nodes,
    the_seed_front_ends_api_chat_is_capped_like_every_chat_across_two_nodes,
    a_user_at_the_connection_cap_is_refused_before_hello_until_one_closes,
    a_user_at_the_connection_cap_on_node_a_is_refused_on_node_b,
    one_address_at_its_connection_cap_is_refused_whoever_the_user_and_a_forged_header_changes_nothing,
    the_seed_front_ends_ws_chat_counts_against_its_addresss_connection_cap,
    behind_a_trusted_proxy_each_forwarded_client_has_its_own_connection_cap,
    an_address_at_its_connection_cap_on_node_a_is_refused_on_node_b,
}
