//! The compatibility surface for the seed's React front end (PROTOCOL.md,
//! "Compatibility surface", "CORS and origins"; `compat-seed.md` rows
//! G1–G12), end to end against the real `weir` process. Every test runs on
//! both runtimes and on two topologies ([`Topology`]): one node, and two
//! nodes on one Redis, where the page's WebSocket is on node A and
//! everything else — its sends, its Cancel, a native client, a reload — on
//! node B. The page's side is `CompatClient`: it reads frames as the page
//! does.
//!
//! | row | tests |
//! | --- | --- |
//! | G1 endpoint, parameters, Origin, auth | `ws_chat_sends_welcome_then_history_even_empty_and_ignores_unknown_parameters`, `a_websocket_upgrade_from_a_foreign_origin_is_refused_with_403_and_an_allowed_one_upgrades`, `under_token_auth_dev_token_is_refused_with_401_and_a_real_jwt_connects` |
//! | G2 welcome + history on every connect (also empty) | `ws_chat_sends_welcome_then_history_even_empty_and_ignores_unknown_parameters`, `a_page_that_was_away_while_its_reply_ended_gets_history_and_the_final_frame_on_reconnect` |
//! | G3 ChatMessage fields, cancelled suffix | `a_reply_streams_as_growing_accumulated_text_then_exactly_one_final_frame_and_no_echo`, `a_cancelled_reply_ends_with_the_suffix_live_in_history_and_in_the_catch_up_after_reconnect` |
//! | G4 accumulated, monotonic, coalesced | `a_reply_streams_as_growing_accumulated_text_then_exactly_one_final_frame_and_no_echo`, `a_page_connecting_mid_reply_gets_the_snapshot_then_live_text_then_the_final_frame` |
//! | G5 exactly one final frame, nothing after | the two above, `post_api_cancel_from_the_page_ends_the_reply_with_one_final_frame_carrying_the_suffix` |
//! | G6 no echo | `post_api_chat_answers_the_seed_body_and_the_reply_streams_to_the_page_without_echo` |
//! | G7 catch-up after a reconnect | `a_page_that_was_away_while_its_reply_ended_gets_history_and_the_final_frame_on_reconnect`, `a_page_connecting_mid_reply_gets_the_snapshot_then_live_text_then_the_final_frame` |
//! | G8 ping, heartbeat, unknown frames | `ping_heartbeat_and_unknown_frames_get_pong_ack_or_nothing_and_the_connection_stays_usable` |
//! | G9 `POST /api/chat` | `post_api_chat_answers_the_seed_body_and_the_reply_streams_to_the_page_without_echo`, `bad_api_requests_get_a_readable_detail_with_400_409_413_and_the_cors_header` |
//! | G10 `POST /api/cancel` | `post_api_cancel_from_the_page_ends_the_reply_with_one_final_frame_carrying_the_suffix`, `under_token_auth_api_cancel_of_the_owner_ends_the_reply_and_another_user_gets_not_found` |
//! | G11 CORS | `cors_preflight_answers_204_and_every_answer_errors_included_carries_allow_origin` |
//! | G12 history, delete, health | `post_api_chat_answers_the_seed_body_and_the_reply_streams_to_the_page_without_echo`, `delete_api_history_is_refused_while_a_reply_streams_then_empties_the_history`, `cors_preflight_answers_204_and_every_answer_errors_included_carries_allow_origin` |
//!
//! Every wait is bounded; no assertion is about speed.

use weir_tests::{json, RedisServer, Runtime, Value, WeirProcess};

/// Where a test runs.
#[derive(Debug, Clone, Copy)]
enum Topology {
    /// One node, in memory: A and B are the same process.
    OneNode,
    /// Two nodes on one Redis.
    TwoNodesOnRedis,
}

/// The nodes of a test: [`Nodes::a`] holds the page's WebSocket,
/// [`Nodes::b`] gets the rest.
struct Nodes {
    a: WeirProcess,
    b: Option<WeirProcess>,
    _redis: Option<RedisServer>,
}

impl Nodes {
    /// Demo replies of `chunks` chunks at up to `rate` per second, `extra`
    /// flags on every node.
    fn start(t: Topology, chunks: u32, rate: u32, extra: &[&str]) -> Self {
        match t {
            Topology::OneNode => Self {
                a: demo(chunks, rate, extra),
                b: None,
                _redis: None,
            },
            Topology::TwoNodesOnRedis => {
                let redis = RedisServer::start();
                let rt = Runtime::current();
                let pace = (u64::from(chunks), u64::from(rate));
                Self {
                    a: WeirProcess::start_on_redis(rt, &redis, "a", pace, extra),
                    b: Some(WeirProcess::start_on_redis(rt, &redis, "b", pace, extra)),
                    _redis: Some(redis),
                }
            }
        }
    }

    fn a(&self) -> &WeirProcess {
        &self.a
    }

    fn b(&self) -> &WeirProcess {
        self.b.as_ref().unwrap_or(&self.a)
    }
}

const S: &str = "session_1796272685223";
const SUFFIX: &str = "\n\n[Đã hủy]";
const ORIGIN: (&str, &str) = ("Origin", "http://localhost:3000");

fn demo(chunks: u32, rate: u32, extra: &[&str]) -> WeirProcess {
    let (chunks, rate) = (chunks.to_string(), rate.to_string());
    let mut args = vec!["--demo-chunks", &chunks, "--demo-rate", &rate];
    args.extend_from_slice(extra);
    WeirProcess::start(&args)
}

/// The assistant texts of `frames`, checking each is a well-formed
/// ChatMessage of `mid` and that no user turn is among them.
fn contents<'a>(frames: &'a [Value], mid: &str) -> Vec<&'a str> {
    frames
        .iter()
        .map(|f| {
            let d = &f["data"];
            assert_eq!(d["role"], "assistant", "no echo of user turns: {f}");
            assert_eq!(d["message_id"], mid, "{f}");
            assert_eq!(d["session_id"], S, "{f}");
            assert_eq!(d["user_id"], "demo_user", "{f}");
            assert!(d["timestamp"].is_u64(), "{f}");
            d["content"].as_str().expect("content is a string")
        })
        .collect()
}

fn assert_monotonic(texts: &[&str]) {
    for pair in texts.windows(2) {
        assert!(
            pair[1].starts_with(pair[0]),
            "content grows monotonically: {pair:?}"
        );
    }
}

/// The final frame's content, after checking it is the only final frame and
/// nothing follows it (a `ping` barrier).
async fn final_content(page: &mut weir_tests::CompatClient, frames: &[Value]) -> String {
    let last = frames.last().expect("a final frame");
    assert_eq!(last["data"]["is_complete"], true, "{last}");
    assert_eq!(last["data"]["chunk"], Value::Null, "{last}");
    for f in &frames[..frames.len() - 1] {
        assert_eq!(f["data"]["is_complete"], false, "one final frame: {f}");
    }
    assert!(
        page.ping_barrier().await.is_empty(),
        "nothing after the final frame"
    );
    last["data"]["content"]
        .as_str()
        .expect("content")
        .to_owned()
}

fn chat_body(message: &str) -> String {
    json!({"session_id": S, "message": message, "user_id": "demo_user"}).to_string()
}

/// The page's send (`POST /api/chat`) on `node`: the reply's id.
async fn send(node: &WeirProcess, message: &str) -> String {
    let r = node
        .http_with_headers(
            "POST",
            "/api/chat",
            &[ORIGIN, ("Content-Type", "application/json")],
            &chat_body(message),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["message_id"]
        .as_str()
        .expect("message_id")
        .to_owned()
}

/// The page's Cancel (`POST /api/cancel`, no user) on `node`: the answer's body.
async fn cancel(node: &WeirProcess, mid: &str) -> Value {
    let c = node
        .http_with_headers(
            "POST",
            "/api/cancel",
            &[ORIGIN],
            &json!({"session_id": S, "message_id": mid}).to_string(),
        )
        .await;
    assert_eq!(c.status, 200, "{c:?}");
    assert_eq!(
        c.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    c.json()
}

// G1, G2: the endpoint and the ready signal.
async fn ws_chat_sends_welcome_then_history_even_empty_and_ignores_unknown_parameters(t: Topology) {
    let n = Nodes::start(t, 3, 200, &[]);
    for node in [n.a(), n.b()] {
        let mut page = node
            .try_compat_ws(
                &format!("session_id={S}&user_id=demo_user&token=dev-token&extra=1"),
                &[],
            )
            .await
            .expect("upgrades");
        let welcome = page.next_json().await;
        assert_eq!(welcome["type"], "welcome");
        assert_eq!(welcome["sessionId"], S);
        assert!(
            welcome["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.contains('T')),
            "{welcome}"
        );
        let history = page.next_json().await;
        assert_eq!(history, json!({"type": "history", "messages": []}));
    }
}

// G3, G4, G5, G6: a reply as accumulated text, one final frame, no echo.
async fn a_reply_streams_as_growing_accumulated_text_then_exactly_one_final_frame_and_no_echo(
    t: Topology,
) {
    const N: u32 = 30;
    let n = Nodes::start(t, N, 200, &[]);
    let mut page = n.a().compat_ws(S).await;
    assert!(page.handshake().await.is_empty());
    let mut native = n.b().ws(&format!("session_id={S}&user_id=demo_user")).await;
    let mid = native.chat_acked("xin chào", "r1").await;
    let (before, end) = native.until_end_of(&mid).await;
    assert_eq!(end["status"], "completed");
    let text: String = weir_tests::chunks_of(&before, &mid)
        .iter()
        .map(|c| c.delta.clone())
        .collect();
    let frames = page.until_final(&mid).await;
    let texts = contents(&frames, &mid);
    assert_monotonic(&texts);
    assert!(
        frames.len() < N as usize,
        "{N} chunks at 200/s coalesce to at most one frame per 50 ms: {} frames",
        frames.len()
    );
    for f in &frames[..frames.len() - 1] {
        assert_eq!(f["data"]["chunk"], f["data"]["content"], "{f}");
    }
    assert_eq!(final_content(&mut page, &frames).await, text);
    // The history shows both turns, settled, on either node.
    let mut again = n.b().compat_ws(S).await;
    let history = again.handshake().await;
    let roles: Vec<&str> = history
        .iter()
        .map(|m| m["role"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(roles, ["user", "assistant"]);
    assert_eq!(history[1]["content"], text.as_str());
    assert_eq!(history[1]["is_complete"], true);
}

// G3 (cancelled), G5, G7: the suffix live and in history; catch-up on reconnect.
async fn a_cancelled_reply_ends_with_the_suffix_live_in_history_and_in_the_catch_up_after_reconnect(
    t: Topology,
) {
    let n = Nodes::start(t, 400, 40, &[]);
    let mut page = n.a().compat_ws(S).await;
    page.handshake().await;
    let mut native = n.b().ws(&format!("session_id={S}&user_id=demo_user")).await;
    let mid = native.chat_acked("hi", "r1").await;
    native.until_seq(Some(&mid), 3).await;
    native.cancel(Some(&mid), "c1").await;
    let (_, end) = native.until_end_of(&mid).await;
    assert_eq!(end["status"], "cancelled");
    let frames = page.until_final(&mid).await;
    assert_monotonic(&contents(&frames[..frames.len() - 1], &mid));
    let fin = final_content(&mut page, &frames).await;
    assert!(fin.ends_with(SUFFIX), "{fin:?}");
    // A reload: the same text in history, and the final frame again (catch-up).
    let mut reload = n.b().compat_ws(S).await;
    let history = reload.handshake().await;
    assert_eq!(history[1]["content"], fin.as_str());
    let catch_up = reload.next_json().await;
    assert_eq!(catch_up["data"]["message_id"], mid.as_str());
    assert_eq!(catch_up["data"]["is_complete"], true);
    assert_eq!(catch_up["data"]["content"], fin.as_str());
}

// G7: a page that connects mid-reply gets the snapshot, then the rest, then the final frame.
async fn a_page_connecting_mid_reply_gets_the_snapshot_then_live_text_then_the_final_frame(
    t: Topology,
) {
    let n = Nodes::start(t, 60, 60, &[]);
    let mut native = n.b().ws(&format!("session_id={S}&user_id=demo_user")).await;
    let mid = native.chat_acked("hi", "r1").await;
    native.until_seq(Some(&mid), 5).await;
    let mut page = n.a().compat_ws(S).await;
    let history = page.handshake().await;
    assert_eq!(
        history.last().expect("the live reply")["is_complete"],
        false
    );
    let snapshot = page.next_json().await;
    assert_eq!(snapshot["data"]["message_id"], mid.as_str());
    assert_eq!(snapshot["data"]["is_complete"], false);
    assert!(!snapshot["data"]["content"]
        .as_str()
        .unwrap_or("")
        .is_empty());
    let frames = page.until_final(&mid).await;
    let mut texts = vec![snapshot["data"]["content"].as_str().unwrap_or("")];
    texts.extend(contents(&frames, &mid));
    assert_monotonic(&texts);
    let fin = final_content(&mut page, &frames).await;
    let (_, end) = native.until_end_of(&mid).await;
    assert_eq!(end["status"], "completed");
    assert!(!fin.is_empty());
}

// G2, G7: the page loses its connection mid-reply; the reply ends while it is
// away; its reconnect (the page's own, 2 s later, to whichever node) gets the
// history and the final frame, so the bubble does not stay "streaming".
async fn a_page_that_was_away_while_its_reply_ended_gets_history_and_the_final_frame_on_reconnect(
    t: Topology,
) {
    let n = Nodes::start(t, 30, 60, &[]);
    let mut page = n.a().compat_ws(S).await;
    page.handshake().await;
    let mut watcher = n.b().ws(&format!("session_id={S}&user_id=demo_user")).await;
    let mid = send(n.b(), "xin chào").await;
    let first = page.next_json().await;
    assert_eq!(first["data"]["message_id"], mid.as_str());
    assert_eq!(first["data"]["is_complete"], false);
    drop(page);
    let (before, end) = watcher.until_end_of(&mid).await;
    assert_eq!(end["status"], "completed");
    let text: String = weir_tests::chunks_of(&before, &mid)
        .iter()
        .map(|c| c.delta.clone())
        .collect();
    for node in [n.a(), n.b()] {
        let mut page = node.compat_ws(S).await;
        let history = page.handshake().await;
        let roles: Vec<&str> = history
            .iter()
            .map(|m| m["role"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(roles, ["user", "assistant"], "{history:?}");
        assert_eq!(history[1]["content"], text.as_str());
        let catch_up = page.next_json().await;
        assert_eq!(catch_up["type"], "message");
        assert_eq!(catch_up["data"]["message_id"], mid.as_str());
        assert_eq!(catch_up["data"]["is_complete"], true);
        assert_eq!(catch_up["data"]["content"], text.as_str());
        assert!(page.ping_barrier().await.is_empty());
    }
}

// G8: pings, heartbeats, unknown frames.
async fn ping_heartbeat_and_unknown_frames_get_pong_ack_or_nothing_and_the_connection_stays_usable(
    t: Topology,
) {
    let n = Nodes::start(t, 3, 200, &[]);
    let mut page = n.a().compat_ws(S).await;
    page.handshake().await;
    page.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(page.next_text().await, r#"{"type":"pong"}"#);
    page.send_text("ping").await;
    assert_eq!(page.next_text().await, "pong");
    page.send_text(r#"{"type":"heartbeat"}"#).await;
    assert_eq!(page.next_text().await, r#"{"type":"heartbeat_ack"}"#);
    for junk in [
        r#"{"type":"chat","content":"hi"}"#,
        "{not json",
        "[]",
        r#"{"type":7}"#,
    ] {
        page.send_text(junk).await;
    }
    assert!(
        page.ping_barrier().await.is_empty(),
        "no error frame answers a client frame"
    );
    // Still usable: a reply sent from elsewhere streams to it.
    let mid = send(n.b(), "hi").await;
    let frames = page.until_final(&mid).await;
    final_content(&mut page, &frames).await;
}

// G11, G12: CORS on every answer, the health routes.
async fn cors_preflight_answers_204_and_every_answer_errors_included_carries_allow_origin(
    t: Topology,
) {
    let n = Nodes::start(
        t,
        3,
        200,
        &["--cors-origin", "http://127.0.0.1:9,http://localhost:3000"],
    );
    let weir = n.b();
    let pre = weir
        .http_with_headers(
            "OPTIONS",
            "/api/chat",
            &[
                ("Origin", "http://localhost:3000"),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type"),
            ],
            "",
        )
        .await;
    assert_eq!(pre.status, 204, "{pre:?}");
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    let methods = pre.header("access-control-allow-methods").unwrap_or("");
    for m in ["GET", "POST", "DELETE", "OPTIONS"] {
        assert!(methods.contains(m), "{methods}");
    }
    assert!(pre
        .header("access-control-allow-headers")
        .is_some_and(|h| h.to_ascii_lowercase().contains("content-type")));
    for (method, path, status) in [
        ("GET", "/health", 200),
        ("GET", "/actuator/health", 200),
        ("GET", "/no/such/route", 404),
        ("POST", "/v1/sessions/s/messages", 400),
        ("POST", "/api/chat", 400),
        ("GET", "/api/history/bad%20id", 400),
        ("DELETE", "/api/history/bad%20id", 400),
    ] {
        let r = weir.http_with_headers(method, path, &[ORIGIN], "{").await;
        assert_eq!(r.status, status, "{method} {path}: {r:?}");
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("http://localhost:3000"),
            "{method} {path}"
        );
    }
    for node in [n.a(), n.b()] {
        for path in ["/health", "/actuator/health"] {
            let health = node.http("GET", path, "").await;
            assert_eq!(health.json(), json!({"status": "UP"}), "{path}");
        }
    }
    let foreign = weir
        .http_with_headers("GET", "/health", &[("Origin", "http://evil.example")], "")
        .await;
    assert_eq!(foreign.header("access-control-allow-origin"), None);
}

// G1, G11: the Origin of a WebSocket upgrade.
async fn a_websocket_upgrade_from_a_foreign_origin_is_refused_with_403_and_an_allowed_one_upgrades(
    t: Topology,
) {
    let n = Nodes::start(t, 3, 200, &["--cors-origin", "http://127.0.0.1:9"]);
    let q = format!("session_id={S}&user_id=demo_user");
    for weir in [n.a(), n.b()] {
        let refused = weir
            .try_compat_ws(&q, &[("Origin", "http://evil.example")])
            .await;
        assert_eq!(weir_tests::refusal_status_of(&refused), 403);
        let refused = weir
            .try_connect_with_headers(&q, &[("Origin", "http://evil.example")])
            .await;
        assert_eq!(weir_tests::refusal_status_of(&refused), 403, "/v1/ws too");
        let mut ok = weir
            .try_compat_ws(&q, &[("Origin", "http://127.0.0.1:9")])
            .await
            .expect("an allowed Origin upgrades");
        ok.handshake().await;
    }
}

// G1: under token auth the page's dev-token never passes; a real JWT does.
async fn under_token_auth_dev_token_is_refused_with_401_and_a_real_jwt_connects(t: Topology) {
    let secret = "compat-test-secret";
    let n = Nodes::start(t, 3, 200, &["--auth", "token", "--jwt-secret", secret]);
    for weir in [n.a(), n.b()] {
        let refused = weir
            .try_compat_ws(
                &format!("session_id={S}&user_id=demo_user&token=dev-token"),
                &[],
            )
            .await;
        assert_eq!(weir_tests::refusal_status_of(&refused), 401);
        let r = weir
            .http_with_headers(
                "POST",
                "/api/chat?token=dev-token",
                &[ORIGIN, ("Authorization", "Bearer dev-token")],
                &chat_body("hi"),
            )
            .await;
        assert_eq!(r.status, 401, "{r:?}");
        assert!(r.json()["detail"].is_string());
        let token = jwt(secret, "demo_user");
        let mut page = weir
            .try_compat_ws(&format!("session_id={S}&token={token}"), &[])
            .await
            .expect("a real token upgrades");
        page.handshake().await;
    }
}

fn jwt(secret: &str, user: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user, "exp": weir_tests::now_secs() + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("a JWT")
}

// G6, G9, G12: the page's send, the seed's body, the stream on /ws/chat, the history.
async fn post_api_chat_answers_the_seed_body_and_the_reply_streams_to_the_page_without_echo(
    t: Topology,
) {
    let n = Nodes::start(t, 20, 200, &[]);
    let mut page = n.a().compat_ws(S).await;
    page.handshake().await;
    let r = n
        .b()
        .http_with_headers(
            "POST",
            "/api/chat",
            &[ORIGIN, ("Content-Type", "application/json")],
            &chat_body("xin chào"),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    let body = r.json();
    assert_eq!(body["status"], "streaming");
    assert_eq!(body["session_id"], S);
    let mid = body["message_id"].as_str().expect("message_id").to_owned();
    let frames = page.until_final(&mid).await;
    assert_monotonic(&contents(&frames, &mid));
    let fin = final_content(&mut page, &frames).await;
    for node in [n.a(), n.b()] {
        let h = node
            .http("GET", &format!("/api/history/{S}?user_id=demo_user"), "")
            .await;
        assert_eq!(h.status, 200, "{h:?}");
        let h = h.json();
        assert_eq!(h["count"], 2);
        assert_eq!(h["session_id"], S);
        assert_eq!(h["messages"][0]["role"], "user");
        assert_eq!(h["messages"][0]["content"], "xin chào");
        assert_eq!(h["messages"][1]["content"], fin.as_str());
        assert_eq!(h["messages"][1]["is_complete"], true);
    }
}

// G9, G11, bad input: `{detail}` with the right status, CORS on each.
async fn bad_api_requests_get_a_readable_detail_with_400_409_413_and_the_cors_header(t: Topology) {
    let n = Nodes::start(t, 400, 20, &["--max-content-bytes", "100"]);
    let weir = n.b();
    let cases = [
        ("{", 400),
        ("[]", 400),
        (r#"{"message":"hi"}"#, 400),
        (r#"{"session_id":"bad id","message":"hi"}"#, 400),
        (&*chat_body("   "), 400),
        (&*chat_body(&"a".repeat(101)), 413),
    ];
    for (body, status) in cases {
        let r = weir
            .http_with_headers("POST", "/api/chat", &[ORIGIN], body)
            .await;
        assert_eq!(r.status, status, "{body}: {r:?}");
        assert!(
            r.json()["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{r:?}"
        );
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("http://localhost:3000")
        );
    }
    send(n.a(), "one").await;
    let busy = weir
        .http_with_headers("POST", "/api/chat", &[ORIGIN], &chat_body("two"))
        .await;
    assert_eq!(busy.status, 409, "{busy:?}");
    assert!(busy.json()["detail"].is_string());
    assert_eq!(
        busy.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    let bad_cancel = weir
        .http_with_headers("POST", "/api/cancel", &[ORIGIN], "{")
        .await;
    assert_eq!(bad_cancel.status, 400);
    assert!(bad_cancel.json()["detail"].is_string());
    for unknown in ["nope.0", "7.00000000000000ffr"] {
        assert_eq!(cancel(weir, unknown).await["status"], "not_found");
    }
}

// G10, G5: the page's Cancel: one click, on the other node too (under auth
// none it names no user: the reply is found by session and id), one final
// frame with the suffix.
async fn post_api_cancel_from_the_page_ends_the_reply_with_one_final_frame_carrying_the_suffix(
    t: Topology,
) {
    let n = Nodes::start(t, 400, 40, &[]);
    let mut page = n.a().compat_ws(S).await;
    page.handshake().await;
    let mid = send(n.a(), "hi").await;
    // The page can cancel once it has the id from a frame.
    let first = page.next_json().await;
    assert_eq!(first["data"]["message_id"], mid.as_str());
    let c = cancel(n.b(), &mid).await;
    assert_eq!(c["status"], "cancelled", "{c}");
    assert_eq!(c["message_id"], mid.as_str());
    assert_eq!(c["session_id"], S);
    let frames = page.until_final(&mid).await;
    let fin = final_content(&mut page, &frames).await;
    assert!(fin.ends_with(SUFFIX), "{fin:?}");
    // A second click answers truthfully; the next send is not busy.
    assert_eq!(cancel(n.b(), &mid).await["status"], "cancelled");
    let next = send(n.b(), "again").await;
    assert_ne!(next, mid);
}

// G10 under token auth: the token's user must own the reply.
async fn under_token_auth_api_cancel_of_the_owner_ends_the_reply_and_another_user_gets_not_found(
    t: Topology,
) {
    let secret = "compat-cluster-secret";
    let n = Nodes::start(t, 400, 40, &["--auth", "token", "--jwt-secret", secret]);
    let token = jwt(secret, "demo_user");
    let bearer = format!("Bearer {token}");
    let mut page = n
        .a()
        .try_compat_ws(&format!("session_id={S}&token={token}"), &[])
        .await
        .expect("upgrades");
    page.handshake().await;
    let r = n
        .a()
        .http_with_headers(
            "POST",
            "/api/chat",
            &[("Authorization", &bearer)],
            &chat_body("hi"),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let mid = r.json()["message_id"]
        .as_str()
        .expect("message_id")
        .to_owned();
    let first = page.next_json().await;
    assert_eq!(first["data"]["message_id"], mid.as_str());
    let body = json!({"session_id": S, "message_id": mid}).to_string();
    let mallory = format!("Bearer {}", jwt(secret, "mallory"));
    let other = n
        .b()
        .http_with_headers("POST", "/api/cancel", &[("Authorization", &mallory)], &body)
        .await;
    assert_eq!(other.json()["status"], "not_found", "{other:?}");
    let c = n
        .b()
        .http_with_headers("POST", "/api/cancel", &[("Authorization", &bearer)], &body)
        .await;
    assert_eq!(c.json()["status"], "cancelled", "{c:?}");
    let frames = page.until_final(&mid).await;
    let fin = final_content(&mut page, &frames).await;
    assert!(fin.ends_with(SUFFIX), "{fin:?}");
}

// G12: DELETE /api/history: refused while a reply streams, then the history
// is gone, on every node and for every later connect.
async fn delete_api_history_is_refused_while_a_reply_streams_then_empties_the_history(t: Topology) {
    let n = Nodes::start(t, 400, 40, &[]);
    let path = format!("/api/history/{S}?user_id=demo_user");
    let mut page = n.a().compat_ws(S).await;
    page.handshake().await;
    let mid = send(n.a(), "hi").await;
    page.next_json().await;
    let busy = n
        .b()
        .http_with_headers("DELETE", &path, &[ORIGIN], "")
        .await;
    assert_eq!(busy.status, 409, "{busy:?}");
    assert!(busy.json()["detail"].is_string());
    assert_eq!(
        busy.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert_eq!(cancel(n.b(), &mid).await["status"], "cancelled");
    let frames = page.until_final(&mid).await;
    final_content(&mut page, &frames).await;
    let deleted = n
        .b()
        .http_with_headers("DELETE", &path, &[ORIGIN], "")
        .await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    assert_eq!(
        deleted.json(),
        json!({"status": "deleted", "session_id": S, "count": 2})
    );
    for node in [n.a(), n.b()] {
        let h = node.http("GET", &path, "").await.json();
        assert_eq!(h["count"], 0, "{h}");
        let mut reload = node.compat_ws(S).await;
        assert!(reload.handshake().await.is_empty());
        assert!(
            reload.ping_barrier().await.is_empty(),
            "no catch-up of a deleted reply"
        );
    }
    // Deleting again is harmless; another user's conversation is untouched.
    let again = n.a().http("DELETE", &path, "").await;
    assert_eq!(again.json()["count"], 0);
    let next = send(n.b(), "again").await;
    let frames = page.until_final(&next).await;
    final_content(&mut page, &frames).await;
}

// `--compat off` removes the surface; `/v1` stays.
async fn compat_off_removes_ws_chat_and_the_health_routes(t: Topology) {
    let n = Nodes::start(t, 3, 200, &["--compat", "off"]);
    for weir in [n.a(), n.b()] {
        let refused = weir
            .try_compat_ws(&format!("session_id={S}&user_id=demo_user"), &[])
            .await;
        assert_eq!(weir_tests::refusal_status_of(&refused), 404);
        for path in ["/health", "/actuator/health"] {
            assert_eq!(weir.http("GET", path, "").await.status, 404, "{path}");
        }
        weir.ws(&format!("session_id={S}&user_id=demo_user")).await;
    }
}

/// Each test on one node and on two nodes on Redis, on both runtimes.
macro_rules! on_each_topology {
    ($($name:ident),+ $(,)?) => {
        mod one_node {
            $(async fn $name() {
                super::$name(super::Topology::OneNode).await;
            })+
            weir_tests::both_runtimes! { $($name),+ }
        }
        mod two_nodes_on_redis {
            $(async fn $name() {
                super::$name(super::Topology::TwoNodesOnRedis).await;
            })+
            weir_tests::both_runtimes! { $($name),+ }
        }
    };
}

on_each_topology! {
    ws_chat_sends_welcome_then_history_even_empty_and_ignores_unknown_parameters,
    a_reply_streams_as_growing_accumulated_text_then_exactly_one_final_frame_and_no_echo,
    a_cancelled_reply_ends_with_the_suffix_live_in_history_and_in_the_catch_up_after_reconnect,
    a_page_connecting_mid_reply_gets_the_snapshot_then_live_text_then_the_final_frame,
    a_page_that_was_away_while_its_reply_ended_gets_history_and_the_final_frame_on_reconnect,
    ping_heartbeat_and_unknown_frames_get_pong_ack_or_nothing_and_the_connection_stays_usable,
    cors_preflight_answers_204_and_every_answer_errors_included_carries_allow_origin,
    a_websocket_upgrade_from_a_foreign_origin_is_refused_with_403_and_an_allowed_one_upgrades,
    under_token_auth_dev_token_is_refused_with_401_and_a_real_jwt_connects,
    compat_off_removes_ws_chat_and_the_health_routes,
    post_api_chat_answers_the_seed_body_and_the_reply_streams_to_the_page_without_echo,
    bad_api_requests_get_a_readable_detail_with_400_409_413_and_the_cors_header,
    post_api_cancel_from_the_page_ends_the_reply_with_one_final_frame_carrying_the_suffix,
    under_token_auth_api_cancel_of_the_owner_ends_the_reply_and_another_user_gets_not_found,
    delete_api_history_is_refused_while_a_reply_streams_then_empties_the_history,
}
