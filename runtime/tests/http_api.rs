//! The HTTP side, in process on tokio and on smol: the `/v1` API beside the
//! WebSockets of the same conversation, the checks before a WebSocket
//! upgrade, token auth. (`/healthz`, `/readyz`, the page and `/metrics` of
//! the binary: `tests/tests/e2e.rs`.)

use weir_runtime::{Auth, RuntimeConfig, TokenAuth, TokenKey};
use weir_tests::{
    chunks, contiguous, demo_config, demo_prefix, json, now_secs, only, refusal_status, DemoText,
    InProcess, Value,
};

weir_tests::both_runtimes! {
    http_api_posts_a_message_cancels_it_and_lists_messages_that_websockets_also_see,
    bad_upgrade_parameters_are_refused_with_http_400_before_switching,
    token_auth_refuses_missing_expired_and_wrongly_signed_tokens_with_401_before_upgrade,
    token_auth_keeps_another_users_conversation_invisible_and_their_ids_not_found,
    token_auth_accepts_an_rs256_token_from_a_jwks_file_and_refuses_wrong_audience_issuer_and_disagreeing_tokens,
}

async fn http_api_posts_a_message_cancels_it_and_lists_messages_that_websockets_also_see() {
    const N: u32 = 4000;
    let mut config = demo_config(N, 200.0);
    config.node.limits.max_content_bytes = 1000;
    config.node.limits.max_frame_bytes = 4096;
    let server = InProcess::start(config).await;
    let mut watcher = server.ws("session_id=h1&user_id=carol").await;

    let r = server
        .http(
            "POST",
            "/v1/sessions/h1/messages?user_id=carol",
            r#"{"content":"via http"}"#,
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let accepted = r.json();
    let mid = accepted["message_id"]
        .as_str()
        .expect("message_id")
        .to_owned();
    let umid = accepted["user_message_id"]
        .as_str()
        .expect("user_message_id")
        .to_owned();

    // A WebSocket of the conversation sees the turn and the reply stream.
    let mut frames = watcher.until_seq(None, 3).await;
    let user = only(&frames, "user_message");
    assert_eq!(user["message_id"], umid.as_str());
    assert_eq!(user["content"], "via http");
    assert_eq!(only(&frames, "start")["message_id"], mid.as_str());

    // While it streams: another post is busy (409).
    let r = server
        .http(
            "POST",
            "/v1/sessions/h1/messages?user_id=carol",
            r#"{"content":"more"}"#,
        )
        .await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(r.json()["code"], "busy");

    // Cancel over HTTP: 200 cancelled with the final seq; the WebSocket's
    // chunks stop exactly there.
    let r = server
        .http(
            "POST",
            "/v1/sessions/h1/cancel?user_id=carol",
            &json!({"message_id": mid}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.json();
    assert_eq!(body["message_id"], mid.as_str());
    assert_eq!(body["status"], "cancelled");
    let final_seq = body["final_seq"].as_u64().expect("final_seq");
    let (rest, end) = watcher.until_end().await;
    frames.extend(rest);
    let (text, last) = contiguous(0, &chunks(&frames));
    assert_eq!(last, final_seq);
    assert_eq!(end["status"], "cancelled");
    assert_eq!(end.u64("final_seq"), final_seq);

    // An idempotent post: the same key answers the same ids.
    let post = json!({"content": "again", "client_message_id": "cm-h"}).to_string();
    let r = server
        .http("POST", "/v1/sessions/h1/messages?user_id=carol", &post)
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let second = r.json();
    let r = server
        .http("POST", "/v1/sessions/h1/messages?user_id=carol", &post)
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.json()["message_id"], second["message_id"]);
    assert_eq!(r.json()["user_message_id"], second["user_message_id"]);
    // Cancel without an id: the live reply.
    let r = server
        .http("POST", "/v1/sessions/h1/cancel?user_id=carol", "{}")
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["message_id"], second["message_id"]);
    assert_eq!(r.json()["status"], "cancelled");
    let second_final = r.json()["final_seq"].as_u64().expect("final_seq");
    let (_, end) = watcher.until_end().await;
    assert_eq!(end["status"], "cancelled");

    // The list: both turns and both replies, oldest first.
    let messages = server.messages("h1", "?user_id=carol").await;
    assert_eq!(messages.len(), 4, "{messages:#?}");
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(messages[0]["message_id"], umid.as_str());
    assert_eq!(messages[1]["message_id"], mid.as_str());
    assert_eq!(messages[1]["status"], "cancelled");
    assert_eq!(messages[1]["seq"], final_seq);
    assert_eq!(messages[1]["content"], text.as_str());
    assert_eq!(messages[2]["content"], "again");
    assert_eq!(messages[3]["message_id"], second["message_id"]);
    assert_eq!(messages[3]["seq"], second_final);
    assert_eq!(
        messages[3]["content"],
        demo_prefix("again", N, second_final).as_str()
    );
    // Another user sees none of it, and cannot cancel it.
    assert!(server.messages("h1", "?user_id=dave").await.is_empty());
    let r = server
        .http(
            "POST",
            "/v1/sessions/h1/cancel?user_id=dave",
            &json!({"message_id": second["message_id"]}).to_string(),
        )
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    // One's own presence.
    let r = server
        .http("GET", "/v1/users/carol/presence?user_id=carol", "")
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["user_id"], "carol");

    // Errors: unknown id 404, bad JSON 400, over-long content or body 413,
    // unknown path 404, unknown method 405, no page configured 404.
    let r = server
        .http(
            "POST",
            "/v1/sessions/h1/cancel?user_id=carol",
            r#"{"message_id":"nope"}"#,
        )
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.json()["status"], "not_found");
    let r = server
        .http("POST", "/v1/sessions/h1/messages?user_id=carol", "{")
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json()["code"], "bad_request");
    let big = json!({"content": "y".repeat(2000)}).to_string();
    let r = server
        .http("POST", "/v1/sessions/h1/messages?user_id=carol", &big)
        .await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.json()["code"], "too_large");
    // A body over the frame limit: 413 too.
    let huge = json!({"content": "z".repeat(5000)}).to_string();
    let r = server
        .http("POST", "/v1/sessions/h1/messages?user_id=carol", &huge)
        .await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.json()["code"], "too_large");
    let r = server.http("GET", "/nope", "").await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.json()["code"], "not_found");
    let r = server.http("DELETE", "/v1/sessions/h1/messages", "").await;
    assert_eq!(r.status, 405, "{r:?}");
    assert_eq!(server.http("GET", "/", "").await.status, 404, "no page");
    drop(watcher);
    server.shutdown().await.expect("clean shutdown");
}

async fn bad_upgrade_parameters_are_refused_with_http_400_before_switching() {
    let mut config = demo_config(3, 500.0);
    config.page = Some("<!doctype html><title>weir</title>".to_owned());
    let server = InProcess::start(config).await;
    let long = "s".repeat(129);
    for query in [
        "session_id=a%20b".to_owned(),
        "session_id=".to_owned(),
        "user_id=u".to_owned(),
        "session_id=a/b".to_owned(),
        "session_id=%C3%A9t%C3%A9".to_owned(),
        format!("session_id={long}"),
        "session_id=ok&resume=nocolon".to_owned(),
        "session_id=ok&resume=m:x".to_owned(),
    ] {
        let refused = server.try_connect(&query).await;
        assert_eq!(refusal_status(&refused), 400, "{query}");
    }
    // The longest valid id and every allowed character pass.
    let ok = format!("session_id={}", "s".repeat(128));
    let mut ws = server.ws(&ok).await;
    assert!(ws.ping("ok").await.is_empty());
    let mut ws = server.ws("session_id=Az09_-.:x").await;
    assert!(ws.ping("ok").await.is_empty());
    // A plain GET is not an upgrade.
    let r = server.http("GET", "/v1/ws?session_id=ok", "").await;
    assert_eq!(r.status, 426, "{r:?}");
    // The HTTP API refuses a bad session id too.
    let r = server
        .http("POST", "/v1/sessions/a%20b/messages", r#"{"content":"x"}"#)
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json()["code"], "bad_request");
    // The configured page is served at `/`.
    let r = server.http("GET", "/", "").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|v| v.starts_with("text/html")));
    assert!(r.body.contains("<title>weir</title>"));
    drop(ws);
    server.shutdown().await.expect("clean shutdown");
}

// ---------------------------------------------------------------------------
// Token auth
// ---------------------------------------------------------------------------

const SECRET: &str = "e2e-test-secret";

fn jwt(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode a JWT")
}

fn token_for(user: &str) -> String {
    jwt(SECRET, &json!({"sub": user, "exp": now_secs() + 3600}))
}

/// Demo replies of `chunks` chunks at `rate` per second, under token auth.
fn with_token_auth(chunks: u32, rate: f64) -> RuntimeConfig {
    let mut config = demo_config(chunks, rate);
    config.auth = Auth::hs256(SECRET);
    config
}

async fn token_auth_refuses_missing_expired_and_wrongly_signed_tokens_with_401_before_upgrade() {
    let server = InProcess::start(with_token_auth(3, 500.0)).await;
    let exp = now_secs() + 3600;
    let expired = jwt(SECRET, &json!({"sub": "bob", "exp": now_secs() - 120}));
    let forged = jwt("another secret", &json!({"sub": "bob", "exp": exp}));
    let no_exp = jwt(SECRET, &json!({"sub": "bob"}));
    let refusals = [
        ("no token", "session_id=a".to_owned()),
        ("user_id instead", "session_id=a&user_id=bob".to_owned()),
        ("expired", format!("session_id=a&token={expired}")),
        ("wrong key", format!("session_id=a&token={forged}")),
        ("no exp", format!("session_id=a&token={no_exp}")),
        ("not a JWT", "session_id=a&token=not-a-jwt".to_owned()),
    ];
    for (what, query) in &refusals {
        assert_eq!(
            refusal_status(&server.try_connect(query).await),
            401,
            "{what}"
        );
    }
    for bad in [&expired, &forged] {
        let r = server
            .try_connect_with_headers(
                "session_id=a",
                &[("authorization", &format!("Bearer {bad}"))],
            )
            .await;
        assert_eq!(refusal_status(&r), 401, "header token");
    }
    // The HTTP API: 401 with the protocol's error body.
    let r = server.http("GET", "/v1/sessions/a/messages", "").await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.json()["code"], "unauthorized");
    let r = server
        .http(
            "GET",
            &format!("/v1/sessions/a/messages?token={forged}"),
            "",
        )
        .await;
    assert_eq!(r.status, 401, "{r:?}");

    // A good token, as the query parameter or the header, names the user.
    let good = token_for("bob");
    let ws = server.ws(&format!("session_id=a&token={good}")).await;
    assert_eq!(ws.hello.as_ref().expect("hello")["user_id"], "bob");
    let mut ws = server
        .try_connect_with_headers(
            "session_id=a",
            &[("authorization", &format!("Bearer {good}"))],
        )
        .await
        .expect("a header token upgrades");
    let (hello, _) = ws.handshake().await;
    assert_eq!(hello["user_id"], "bob");
    let r = server
        .http_with_headers(
            "GET",
            "/v1/sessions/a/messages",
            &[("Authorization", &format!("Bearer {good}"))],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    drop(ws);
    server.shutdown().await.expect("clean shutdown");
}

async fn token_auth_keeps_another_users_conversation_invisible_and_their_ids_not_found() {
    const N: u32 = 400;
    const PROMPT: &str = "private";
    let server = InProcess::start(with_token_auth(N, 400.0)).await;
    let alice = token_for("alice");
    let mallory = token_for("mallory");
    let mut a = server.ws(&format!("session_id=shared&token={alice}")).await;
    a.chat(PROMPT, "r1").await;
    let mut a_frames = a.until_seq(None, 3).await;
    let mid = a_frames[0].str("message_id").to_owned();

    // Mallory, same session name, while alice's reply streams.
    let mut m = server
        .ws(&format!("session_id=shared&token={mallory}"))
        .await;
    assert!(
        m.history_messages().is_empty(),
        "alice's turn is not visible"
    );
    m.cancel(Some(&mid), "steal").await;
    let r = m.next_frame().await;
    assert!(r.is("cancel_result"), "{r:?}");
    assert_eq!(r["status"], "not_found");
    assert!(r["message_id"].is_null());
    m.send_json(json!({"type": "resume", "message_id": mid, "after_seq": 0}))
        .await;
    let r = m.next_frame().await;
    assert!(r.is("resume_unavailable"), "{r:?}");
    assert!(r.get("snapshot").is_none_or(Value::is_null), "{r:?}");
    let r = server
        .http(
            "POST",
            &format!("/v1/sessions/shared/cancel?token={mallory}"),
            &json!({"message_id": mid}).to_string(),
        )
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.json()["status"], "not_found");
    let r = server
        .http(
            "GET",
            &format!("/v1/sessions/shared/messages?token={mallory}"),
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["messages"], json!([]));
    let r = server
        .http(
            "GET",
            &format!("/v1/users/alice/presence?token={mallory}"),
            "",
        )
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    let mut resumer = server
        .ws(&format!("session_id=shared&token={mallory}&resume={mid}:0"))
        .await;
    let r = resumer.next_frame().await;
    assert!(r.is("resume_unavailable"), "{r:?}");
    assert!(m.ping("nothing-of-alice").await.is_empty());

    // Alice's reply went on untouched, and only she sees it.
    let (rest, end) = a.until_end().await;
    a_frames.extend(rest);
    let (text, last) = contiguous(0, &chunks(&a_frames));
    assert_eq!(last, u64::from(N));
    assert_eq!(text, DemoText::full(PROMPT, N));
    assert_eq!(end["status"], "completed");
    let r = server
        .http(
            "GET",
            &format!("/v1/sessions/shared/messages?token={alice}"),
            "",
        )
        .await;
    assert_eq!(r.json()["messages"].as_array().map(Vec::len), Some(2));
    m.assert_nothing_more("still-nothing").await;
    drop((a, m, resumer));
    server.shutdown().await.expect("clean shutdown");
}

// ---------------------------------------------------------------------------
// Token auth with an identity provider's keys (RS256 from a JWKS file)
// ---------------------------------------------------------------------------

const AUDIENCE: &str = "weir-api";
const ISSUER: &str = "https://idp.test/";

/// The private key of test key `name` (`runtime/tests/fixtures/jwt/`).
fn rsa_key(name: &str) -> jsonwebtoken::EncodingKey {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(format!("{name}.key.pem"));
    let pem = std::fs::read(path).expect("a test key");
    jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("an RSA key")
}

fn rs256(kid: &str, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &rsa_key("rsa")).expect("encode a JWT")
}

async fn token_auth_accepts_an_rs256_token_from_a_jwks_file_and_refuses_wrong_audience_issuer_and_disagreeing_tokens(
) {
    let mut jwk = serde_json::to_value(
        jsonwebtoken::jwk::Jwk::from_encoding_key(&rsa_key("rsa"), jsonwebtoken::Algorithm::RS256)
            .expect("a JWK"),
    )
    .expect("JSON");
    jwk["kid"] = json!("k1");
    let jwks = std::env::temp_dir().join(format!(
        "weir-http-api-jwks-{}-{:?}.json",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&jwks, json!({ "keys": [jwk] }).to_string()).expect("write the JWKS");
    let mut config = demo_config(3, 500.0);
    config.auth = Auth::Token(TokenAuth {
        key: TokenKey::Jwks(jwks.clone()),
        audiences: vec!["other-api".to_owned(), AUDIENCE.to_owned()],
        issuer: Some(ISSUER.to_owned()),
    });
    let server = InProcess::start(config).await;
    let claims = |aud: &Value, iss: &str| json!({"sub": "dana", "exp": now_secs() + 3600, "iat": now_secs(), "aud": aud, "iss": iss});
    let good = rs256("k1", &claims(&json!([AUDIENCE, "more"]), ISSUER));

    // Accepted on a WebSocket (query and header) and on the HTTP API.
    let ws = server.ws(&format!("session_id=p&token={good}")).await;
    assert_eq!(ws.hello.as_ref().expect("hello")["user_id"], "dana");
    let bearer = format!("Bearer {good}");
    let mut header_ws = server
        .try_connect_with_headers("session_id=p", &[("authorization", &bearer)])
        .await
        .expect("a header token upgrades");
    let (hello, _) = header_ws.handshake().await;
    assert_eq!(hello["user_id"], "dana");
    let r = server
        .http_with_headers(
            "GET",
            "/v1/sessions/p/messages",
            &[("Authorization", &bearer)],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    // The same token in the header and the query is fine.
    let r = server
        .http_with_headers(
            "GET",
            &format!("/v1/sessions/p/messages?token={good}"),
            &[("Authorization", &bearer)],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");

    let other = rs256(
        "k1",
        &json!({"sub": "mallory", "exp": now_secs() + 3600, "aud": AUDIENCE, "iss": ISSUER}),
    );
    let refused = [
        (
            "wrong audience",
            rs256("k1", &claims(&json!("someone-else"), ISSUER)),
        ),
        (
            "no audience",
            rs256(
                "k1",
                &json!({"sub": "dana", "exp": now_secs() + 3600, "iss": ISSUER}),
            ),
        ),
        (
            "wrong issuer",
            rs256("k1", &claims(&json!(AUDIENCE), "https://evil.test/")),
        ),
        (
            "unknown kid",
            rs256("k2", &claims(&json!(AUDIENCE), ISSUER)),
        ),
    ];
    for (what, token) in &refused {
        let r = server
            .try_connect(&format!("session_id=p&token={token}"))
            .await;
        assert_eq!(refusal_status(&r), 401, "{what} (WebSocket)");
        let r = server
            .http_with_headers(
                "GET",
                "/v1/sessions/p/messages",
                &[("Authorization", &format!("Bearer {token}"))],
                "",
            )
            .await;
        assert_eq!(r.status, 401, "{what} (HTTP): {r:?}");
        assert_eq!(r.json()["code"], "unauthorized");
    }
    // A header and a query token that disagree: 401 on both sides, whichever
    // of them is valid.
    let r = server
        .try_connect_with_headers(
            &format!("session_id=p&token={other}"),
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(refusal_status(&r), 401, "disagreeing tokens (WebSocket)");
    let r = server
        .http_with_headers(
            "GET",
            &format!("/v1/sessions/p/messages?token={other}"),
            &[("Authorization", &bearer)],
            "",
        )
        .await;
    assert_eq!(r.status, 401, "disagreeing tokens (HTTP): {r:?}");
    drop((ws, header_ws));
    server.shutdown().await.expect("clean shutdown");
    let _ = std::fs::remove_file(jwks);
}
