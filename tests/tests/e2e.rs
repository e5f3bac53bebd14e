//! End-to-end tests of the real `weir` process (`weir serve`), black box,
//! where the process matters: the page and probes the binary serves, its
//! signals and exit code, timers set by its flags. Real WebSocket and HTTP
//! clients over loopback, assertions on the JSON of PROTOCOL.md. Each test
//! starts its own process with the flags it needs.
//!
//! The protocol itself (chat, cancel, resume, fan-out, bad input, the HTTP
//! API, auth) is tested in process, with the same harness, in
//! `runtime/tests/`; real nodes over a real Redis in `cluster.rs`.
//!
//! The binary must be built first (`cargo build -p weir-server --bin weir`;
//! `./scripts/test.sh` does it). Every wait is bounded; the only assertions
//! about time are those that are the point (a shutdown that does not wait
//! out its grace, pings at the heartbeat), with seconds of slack, and tests
//! that must act mid-reply use replies seconds longer than the action needs.

use std::time::Duration;

use futures_util::StreamExt;

use weir_tests::tungstenite::Message;
use weir_tests::{eventually, json, Signal, WeirProcess};

/// Demo flags: replies of `chunks` chunks at `rate` chunks per second.
fn demo(chunks: u32, rate: u32) -> Vec<String> {
    vec![
        "--demo-chunks".to_owned(),
        chunks.to_string(),
        "--demo-rate".to_owned(),
        rate.to_string(),
    ]
}

fn start(args: &[String]) -> WeirProcess {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    WeirProcess::start(&args)
}

fn with(mut base: Vec<String>, extra: &[&str]) -> Vec<String> {
    base.extend(extra.iter().map(|s| (*s).to_owned()));
    base
}

// ---------------------------------------------------------------------------
// Probes, page, metrics
// ---------------------------------------------------------------------------

async fn healthz_and_readyz_answer_200_the_page_is_served_and_metrics_counters_move() {
    const N: u32 = 12;
    let weir = start(&demo(N, 400));
    let r = weir.http("GET", "/healthz", "").await;
    assert_eq!(r.status, 200);
    let r = weir.http("GET", "/readyz", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = weir.http("GET", "/", "").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|v| v.starts_with("text/html")));
    assert!(r.body.contains("id=\"send\"") && r.body.contains("id=\"cancel\""));

    let r = weir.http("GET", "/metrics", "").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|v| v.starts_with("text/plain")),
        "{r:?}"
    );
    let m0 = weir.metrics().await;
    assert_eq!(m0.get("weir_connections"), 0.0);
    assert_eq!(m0.get("weir_replies_total{outcome=\"completed\"}"), 0.0);
    assert_eq!(m0.get("weir_replies_total{outcome=\"cancelled\"}"), 0.0);
    assert_eq!(m0.get("weir_chunks_sent_total"), 0.0);

    // Two connections: the gauge moves.
    let mut a = weir.ws("session_id=m1&user_id=u").await;
    let mut b = weir.ws("session_id=m1&user_id=u").await;
    eventually("two connections", || async {
        weir.metrics().await.get("weir_connections") == 2.0
    })
    .await;

    // A completed reply fanned out to both: N chunks sent to each.
    a.chat("count me", "r1").await;
    let ((_, end), _) = ::tokio::join!(a.until_end(), b.until_end());
    assert_eq!(end["status"], "completed");
    eventually("a completed reply and its chunks counted", || async {
        let m = weir.metrics().await;
        m.get("weir_replies_total{outcome=\"completed\"}") == 1.0
            && m.get("weir_chunks_sent_total") >= f64::from(2 * N)
    })
    .await;

    // A cancelled reply (a long one on another conversation).
    let mut c = weir.ws("session_id=m2&user_id=u").await;
    c.send_json(json!({"type": "chat", "content": "cut", "request_id": "r2"}))
        .await;
    c.cancel(None, "k").await;
    let (_, end) = c.until_end().await;
    assert_eq!(end["status"], "cancelled");
    // A resume served exactly.
    let mid = end.str("message_id").to_owned();
    let mut d = weir
        .ws(&format!("session_id=m2&user_id=u&resume={mid}:0"))
        .await;
    let (_, end) = d.until_end().await;
    assert_eq!(end["status"], "cancelled");
    eventually("the cancel and the resume counted", || async {
        let m = weir.metrics().await;
        m.get("weir_replies_total{outcome=\"cancelled\"}") == 1.0
            && m.get("weir_cancel_quiet_seconds_count") >= 1.0
            && m.get("weir_resumes_total{exact=\"true\"}") >= 1.0
    })
    .await;

    // Connections closed: the gauge comes back to 0.
    for ws in [a, b, c, d] {
        ws.close().await;
    }
    eventually("no connections", || async {
        weir.metrics().await.get("weir_connections") == 0.0
    })
    .await;
}

// ---------------------------------------------------------------------------
// Shutdown and timers
// ---------------------------------------------------------------------------

async fn sigterm_closes_every_client_with_1001_and_the_process_exits_0() {
    let mut weir = start(&with(demo(4000, 200), &["--shutdown-grace", "5"]));
    let mut idle = weir.ws("session_id=g1&user_id=u").await;
    let mut busy = weir.ws("session_id=g2&user_id=u").await;
    busy.chat("go on", "r1").await;
    let _ = busy.until_seq(None, 2).await;

    weir.signal(Signal::Term);
    let ((_, idle_code), (_, busy_code)) =
        ::tokio::join!(idle.frames_until_close(), busy.frames_until_close());
    assert_eq!(idle_code, 1001);
    assert_eq!(busy_code, 1001);
    // Both clients answered the close (the client does so when it reads
    // it), so the process exits well before the grace.
    let status = weir.wait_exit(Duration::from_secs(4)).await;
    assert!(status.success(), "exit status {status}");
    assert_eq!(status.code(), Some(0));
    // It no longer listens.
    assert!(::tokio::net::TcpStream::connect(weir.addr()).await.is_err());
}

async fn server_pings_and_a_silent_client_is_closed_with_4000_after_the_idle_timeout() {
    let weir = start(&with(
        demo(4, 200),
        &["--heartbeat", "0.2", "--idle-timeout", "1"],
    ));
    let mut lively = weir.ws("session_id=i1&user_id=u").await;
    let mut silent = weir.ws("session_id=i2&user_id=u").await;
    // The lively client keeps reading (which answers the server's pings with
    // pongs) and sends a JSON ping now and then: it stays open past the
    // idle timeout. The silent client does not read at all, so it never
    // pongs: it must be closed with 4000.
    let mut pings = 0;
    let deadline = ::tokio::time::Instant::now() + Duration::from_millis(2500);
    while ::tokio::time::Instant::now() < deadline {
        match ::tokio::time::timeout(Duration::from_millis(100), lively.ws_mut().next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(Message::Close(c)))) => panic!("a lively client was closed: {c:?}"),
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(other) => panic!("the lively connection ended: {other:?}"),
        }
        lively
            .send_json(serde_json::json!({"type": "ping", "id": pings}))
            .await;
    }
    assert!(
        pings >= 3,
        "WebSocket pings every 0.2 s: saw {pings} in 2.5 s"
    );
    let (_, code) = silent.frames_until_close().await;
    assert_eq!(code, 4000);
    // And the lively one is still served.
    lively
        .send_json(serde_json::json!({"type": "ping", "id": "last"}))
        .await;
    loop {
        let f = lively.next_frame().await;
        if f.is("pong") && f.0["id"] == "last" {
            break;
        }
    }
}

weir_tests::both_runtimes! {
    healthz_and_readyz_answer_200_the_page_is_served_and_metrics_counters_move,
    sigterm_closes_every_client_with_1001_and_the_process_exits_0,
    server_pings_and_a_silent_client_is_closed_with_4000_after_the_idle_timeout,
    sighup_rereads_the_jwks_file_a_new_key_is_accepted_a_removed_one_refused_a_broken_file_ignored,
}

// ---------------------------------------------------------------------------
// Token auth keys reloaded on SIGHUP
// ---------------------------------------------------------------------------

/// The private key of test key `name` (`runtime/tests/fixtures/jwt/`).
fn rsa_key(name: &str) -> jsonwebtoken::EncodingKey {
    let path = weir_tests::workspace_dir()
        .join("runtime/tests/fixtures/jwt")
        .join(format!("{name}.key.pem"));
    let pem = std::fs::read(path).expect("a test key");
    jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("an RSA key")
}

/// A JWKS document with test key `name`'s public key as `kid`.
fn jwks_of(name: &str, kid: &str) -> String {
    let jwk =
        jsonwebtoken::jwk::Jwk::from_encoding_key(&rsa_key(name), jsonwebtoken::Algorithm::RS256)
            .expect("a JWK");
    let mut jwk = serde_json::to_value(jwk).expect("JSON");
    jwk["kid"] = json!(kid);
    json!({ "keys": [jwk] }).to_string()
}

/// An RS256 token for `sub` signed by test key `name` as `kid`.
fn rs256(name: &str, kid: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let claims = json!({"sub": "erin", "exp": weir_tests::now_secs() + 3600});
    jsonwebtoken::encode(&header, &claims, &rsa_key(name)).expect("encode a JWT")
}

async fn sighup_rereads_the_jwks_file_a_new_key_is_accepted_a_removed_one_refused_a_broken_file_ignored(
) {
    let jwks = std::env::temp_dir().join(format!(
        "weir-e2e-jwks-{}-{:?}.json",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&jwks, jwks_of("rsa", "old")).expect("write the JWKS");
    let path = jwks.to_str().expect("a UTF-8 path").to_owned();
    let weir = start(&with(
        demo(3, 100),
        &["--auth", "token", "--jwt-jwks", &path],
    ));
    let status = |token: String| {
        let weir = &weir;
        async move {
            weir.http_with_headers(
                "GET",
                "/v1/sessions/s/messages",
                &[("Authorization", &format!("Bearer {token}"))],
                "",
            )
            .await
            .status
        }
    };
    assert_eq!(status(rs256("rsa", "old")).await, 200);
    assert_eq!(status(rs256("rsa2", "new")).await, 401);

    // The provider rotates: the file now holds only the new key.
    std::fs::write(&jwks, jwks_of("rsa2", "new")).expect("rewrite the JWKS");
    weir.signal(Signal::Hup);
    eventually("the new key is accepted after SIGHUP", || async {
        status(rs256("rsa2", "new")).await == 200
    })
    .await;
    assert_eq!(status(rs256("rsa", "old")).await, 401, "the removed key");
    let ws = weir
        .ws(&format!("session_id=s&token={}", rs256("rsa2", "new")))
        .await;
    assert_eq!(ws.hello.as_ref().expect("hello")["user_id"], "erin");

    // A broken file: the reload fails, is logged, and the keys stay.
    std::fs::write(&jwks, "{ not json").expect("break the JWKS");
    weir.signal(Signal::Hup);
    eventually("the failed reload is logged", || async {
        weir.log().contains("not reloaded")
    })
    .await;
    assert_eq!(status(rs256("rsa2", "new")).await, 200, "the keys stay");
    assert!(
        weir.log().contains("token auth keys reloaded"),
        "{}",
        weir.log()
    );
    drop(ws);
    let _ = std::fs::remove_file(jwks);
}
