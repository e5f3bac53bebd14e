//! The HTTP side of the server, on tokio and on smol: the `/v1` API, auth,
//! health, readiness, metrics, the page, and the checks before a WebSocket
//! upgrade.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use async_tungstenite::tungstenite::Error as WsError;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use support::*;
use weir_core::demo::DemoText;
use weir_core::wire::ServerFrame;
use weir_runtime::Auth;

both_runtimes! {
    token_auth_rejects_missing_expired_and_forged_tokens,
    http_api_posts_cancels_and_lists,
    upgrade_checks_parameters_before_switching,
}

const SECRET: &[u8] = b"test-secret";

fn token(secret: &[u8], claims: &Value) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("encode JWT")
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn assert_http_status(result: Result<Ws, WsError>, status: u16) {
    match result {
        Err(WsError::Http(resp)) => assert_eq!(resp.status().as_u16(), status),
        Err(e) => panic!("expected HTTP {status}, got {e}"),
        Ok(_) => panic!("expected HTTP {status}, got an upgrade"),
    }
}

async fn token_auth_rejects_missing_expired_and_forged_tokens(rt: Rt) {
    let mut config = config(3, 1000.0);
    config.auth = Auth::Token {
        secret: SECRET.to_vec(),
    };
    let server = start(rt, config).await;
    let exp = now_secs() + 3600;
    let good = token(SECRET, &json!({"sub": "bob", "exp": exp}));
    let expired = token(SECRET, &json!({"sub": "bob", "exp": now_secs() - 5}));
    let forged = token(b"another secret", &json!({"sub": "bob", "exp": exp}));
    let no_exp = token(SECRET, &json!({"sub": "bob"}));

    assert_http_status(server.try_connect("session_id=a").await, 401);
    // Under token auth the user_id parameter means nothing.
    assert_http_status(server.try_connect("session_id=a&user_id=bob").await, 401);
    for bad in [&expired, &forged, &no_exp, &"not-a-jwt".to_owned()] {
        assert_http_status(
            server
                .try_connect(&format!("session_id=a&token={bad}"))
                .await,
            401,
        );
    }
    assert_http_status(
        server
            .connect_with_header("session_id=a", "authorization", &format!("Bearer {forged}"))
            .await,
        401,
    );

    // A good token, as query parameter or header.
    let mut by_query = server.connect(&format!("session_id=a&token={good}")).await;
    let (hello, _) = handshake(&mut by_query).await;
    let ServerFrame::Hello(hello) = hello else {
        unreachable!()
    };
    assert_eq!(hello.user_id.as_str(), "bob");
    let mut ws = server
        .connect_with_header("session_id=a", "authorization", &format!("Bearer {good}"))
        .await
        .expect("upgrade with a header token");
    handshake(&mut ws).await;

    // The HTTP API: 401 with the protocol's error body, 200 with a token.
    let r = server.http("GET", "/v1/sessions/a/messages", "").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["code"], "unauthorized");
    let r = server
        .http(
            "GET",
            &format!("/v1/sessions/a/messages?token={expired}"),
            "",
        )
        .await;
    assert_eq!(r.status, 401);
    let bearer = format!("Bearer {good}");
    let r = http(
        server.addr,
        "GET",
        "/v1/sessions/a/messages",
        &[("Authorization", &bearer)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["session_id"], "a");
    // Presence of another user is forbidden.
    let r = http(
        server.addr,
        "GET",
        "/v1/users/alice/presence",
        &[("Authorization", &bearer)],
        b"",
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    drop((by_query, ws));
    server.shutdown().await.expect("clean shutdown");
}

async fn http_api_posts_cancels_and_lists(rt: Rt) {
    let mut config = config(10, 1000.0);
    config.node.limits.max_frame_bytes = 4096;
    let server = start(rt, config).await;

    let r = server
        .http(
            "POST",
            "/v1/sessions/h1/messages?user_id=carol",
            r#"{"content":"via http"}"#,
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let accepted = r.json();
    let message_id = accepted["message_id"]
        .as_str()
        .expect("message_id")
        .to_owned();
    assert!(accepted["user_message_id"].is_string());

    // The reply completes; the list shows it.
    let expected = DemoText::full("via http", 10);
    eventually("the reply completes", || async {
        let list = server
            .http("GET", "/v1/sessions/h1/messages?user_id=carol", "")
            .await
            .json();
        list["messages"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["message_id"] == message_id.as_str()))
            .is_some_and(|m| m["status"] == "completed" && m["content"] == expected.as_str())
    })
    .await;

    // Cancel after completion answers completed; unknown ids not_found.
    let r = server
        .http(
            "POST",
            "/v1/sessions/h1/cancel?user_id=carol",
            &json!({"message_id": message_id}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["status"], "completed");
    assert_eq!(r.json()["final_seq"], 10);
    let r = server
        .http(
            "POST",
            "/v1/sessions/h1/cancel?user_id=carol",
            r#"{"message_id":"nope"}"#,
        )
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.json()["status"], "not_found");
    // Another user does not see carol's reply.
    let r = server
        .http(
            "POST",
            "/v1/sessions/h1/cancel?user_id=mallory",
            &json!({"message_id": message_id}).to_string(),
        )
        .await;
    assert_eq!(r.status, 404, "{r:?}");

    // Bad input.
    let r = server
        .http(
            "POST",
            "/v1/sessions/bad%20id/messages",
            r#"{"content":"x"}"#,
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json()["code"], "bad_request");
    let r = server.http("POST", "/v1/sessions/h1/messages", "{").await;
    assert_eq!(r.status, 400, "{r:?}");
    let big = json!({"content": "y".repeat(5000)}).to_string();
    let r = server.http("POST", "/v1/sessions/h1/messages", &big).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.json()["code"], "too_large");
    let r = server.http("GET", "/nope", "").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "not_found");
    let r = server.http("DELETE", "/v1/sessions/h1/messages", "").await;
    assert_eq!(r.status, 405);
    assert_eq!(server.http("GET", "/", "").await.status, 404, "no page");

    // Presence of oneself.
    let r = server
        .http("GET", "/v1/users/carol/presence?user_id=carol", "")
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["user_id"], "carol");

    // Health, readiness, metrics.
    let r = server.http("GET", "/healthz", "").await;
    assert_eq!(r.status, 200);
    let r = server.http("GET", "/readyz", "").await;
    assert_eq!(r.status, 200);
    let r = server.http("GET", "/metrics", "").await;
    assert_eq!(r.status, 200);
    assert!(r
        .head
        .to_ascii_lowercase()
        .contains("content-type: text/plain"));
    assert_eq!(
        server
            .metric("weir_replies_total{outcome=\"completed\"}")
            .await,
        1.0
    );
    assert_eq!(server.metric("weir_connections").await, 0.0);
    let mut ws = server.connect("session_id=h1&user_id=carol").await;
    handshake(&mut ws).await;
    assert_eq!(server.metric("weir_connections").await, 1.0);
    drop(ws);
    eventually("the connection is released", || async {
        server.metric("weir_connections").await == 0.0
    })
    .await;
    server.shutdown().await.expect("clean shutdown");
}

async fn upgrade_checks_parameters_before_switching(rt: Rt) {
    let mut config = config(3, 1000.0);
    config.page = Some("<!doctype html><title>weir</title>".to_owned());
    let server = start(rt, config).await;
    assert_http_status(server.try_connect("user_id=x").await, 400);
    assert_http_status(server.try_connect("session_id=a%20b").await, 400);
    assert_http_status(
        server.try_connect("session_id=ok&resume=nocolon").await,
        400,
    );
    assert_http_status(server.try_connect("session_id=ok&resume=m:x").await, 400);
    let r = server.http("GET", "/v1/ws?session_id=ok", "").await;
    assert_eq!(r.status, 426, "a plain GET is not an upgrade");
    // A resume of an unknown reply upgrades and says so.
    let mut ws = server.connect("session_id=ok&resume=m1:3").await;
    handshake(&mut ws).await;
    let f = next_frame(&mut ws).await;
    assert_eq!(f.kind(), "resume_unavailable", "{f:?}");

    let r = server.http("GET", "/", "").await;
    assert_eq!(r.status, 200);
    assert!(r
        .head
        .to_ascii_lowercase()
        .contains("content-type: text/html"));
    assert!(r.body.contains("<title>weir</title>"));
    drop(ws);
    server.shutdown().await.expect("clean shutdown");
}
