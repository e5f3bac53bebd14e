//! Each claim rule and each algorithm, with tokens made here and the test
//! keys of `runtime/tests/fixtures/jwt/` (how they were made: its README).

use std::path::PathBuf;

use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::Authenticator;
use crate::config::{Auth, TokenAuth, TokenKey};
use crate::query::Query;

const SECRET: &[u8] = b"unit-test-secret";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("a test key")
}

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs(),
    )
    .expect("fits")
}

/// The private key of fixture `name` (`rsa`, `ec256`, …) for `alg`.
fn private(name: &str, alg: Algorithm) -> EncodingKey {
    let pem = read(&format!("{name}.key.pem"));
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => EncodingKey::from_secret(&pem),
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem).expect("EC key"),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).expect("Ed25519 key"),
        _ => EncodingKey::from_rsa_pem(&pem).expect("RSA key"),
    }
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("encode a JWT")
}

fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET),
        None,
        claims,
    )
}

/// `sub` bob, an hour to live, plus `extra`.
fn claims(extra: &Value) -> Value {
    let mut c = json!({"sub": "bob", "exp": now() + 3600});
    for (k, v) in extra.as_object().expect("an object") {
        c[k] = v.clone();
    }
    c
}

fn token_auth(key: TokenKey) -> Authenticator {
    Authenticator::new(&Auth::Token(TokenAuth::new(key))).expect("keys load")
}

fn with(key: TokenKey, audiences: &[&str], issuer: Option<&str>) -> Authenticator {
    let mut t = TokenAuth::new(key);
    t.audiences = audiences.iter().map(|s| (*s).to_owned()).collect();
    t.issuer = issuer.map(str::to_owned);
    Authenticator::new(&Auth::Token(t)).expect("keys load")
}

/// The user a bearer `token` names, or the 401's message.
fn user(auth: &Authenticator, token: &str) -> Result<String, String> {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("ASCII"),
    );
    request(auth, &headers, None)
}

fn request(
    auth: &Authenticator,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<String, String> {
    auth.user(headers, &Query::parse(query))
        .map(|u| u.as_str().to_owned())
        .map_err(|e| {
            assert_eq!(e.code, weir_core::wire::ErrorCode::Unauthorized, "{e:?}");
            e.message
        })
}

fn secret() -> Authenticator {
    token_auth(TokenKey::Secret(SECRET.to_vec()))
}

// ---------------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------------

#[test]
fn hs256_needs_a_live_exp_and_a_sub() {
    let auth = secret();
    assert_eq!(user(&auth, &hs256(&claims(&json!({})))), Ok("bob".into()));
    let expired = hs256(&json!({"sub": "bob", "exp": now() - 5}));
    assert!(user(&auth, &expired).is_err());
    assert!(user(&auth, &hs256(&json!({"sub": "bob"}))).is_err_and(|e| e.contains("exp")));
    assert!(user(&auth, &hs256(&json!({"exp": now() + 60}))).is_err());
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another secret"),
        None,
        &claims(&json!({})),
    );
    assert!(user(&auth, &forged).is_err());
}

#[test]
fn without_a_configured_audience_a_token_with_aud_is_accepted() {
    let auth = secret();
    for aud in [json!("some-api"), json!(["a", "b"])] {
        let t = hs256(&claims(&json!({ "aud": aud })));
        assert_eq!(user(&auth, &t), Ok("bob".into()), "{aud}");
    }
}

#[test]
fn a_configured_audience_must_be_named_by_the_aud_string_or_array() {
    let auth = with(TokenKey::Secret(SECRET.to_vec()), &["weir", "chat"], None);
    for aud in [json!("weir"), json!("chat"), json!(["other", "chat"])] {
        let t = hs256(&claims(&json!({ "aud": aud })));
        assert_eq!(user(&auth, &t), Ok("bob".into()), "{aud}");
    }
    for aud in [json!("other"), json!(["other", "more"]), json!([])] {
        let t = hs256(&claims(&json!({ "aud": aud })));
        assert!(user(&auth, &t).is_err(), "{aud} is refused");
    }
    assert!(user(&auth, &hs256(&claims(&json!({})))).is_err(), "no aud");
}

#[test]
fn a_configured_issuer_must_be_the_tokens_iss() {
    let auth = with(
        TokenKey::Secret(SECRET.to_vec()),
        &[],
        Some("https://idp.example/"),
    );
    let good = hs256(&claims(&json!({"iss": "https://idp.example/"})));
    assert_eq!(user(&auth, &good), Ok("bob".into()));
    let other = hs256(&claims(&json!({"iss": "https://evil.example/"})));
    assert!(user(&auth, &other).is_err());
    assert!(user(&auth, &hs256(&claims(&json!({})))).is_err(), "no iss");
}

#[test]
fn nbf_and_iat_may_be_ahead_by_at_most_the_leeway() {
    let auth = secret();
    let leeway = i64::try_from(TokenAuth::LEEWAY.as_secs()).expect("fits");
    // Well inside and well beyond the leeway (no race with the clock).
    for claim in ["nbf", "iat"] {
        let past = hs256(&claims(&json!({ claim: now() - 600 })));
        assert_eq!(user(&auth, &past), Ok("bob".into()), "{claim} in the past");
        let skewed = hs256(&claims(&json!({ claim: now() + leeway / 3 })));
        assert_eq!(
            user(&auth, &skewed),
            Ok("bob".into()),
            "{claim} inside the leeway"
        );
        let ahead = hs256(&claims(&json!({ claim: now() + leeway + 60 })));
        assert!(
            user(&auth, &ahead).is_err_and(|e| e.contains(claim)),
            "{claim} beyond the leeway"
        );
        let garbage = hs256(&claims(&json!({ claim: "tomorrow" })));
        assert!(user(&auth, &garbage).is_err(), "{claim} not a number");
    }
}

#[test]
fn header_and_query_tokens_must_be_the_same_token() {
    let auth = secret();
    let a = hs256(&claims(&json!({})));
    let b = hs256(&json!({"sub": "mallory", "exp": now() + 3600}));
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {a}")).expect("ASCII"),
    );
    assert_eq!(
        request(&auth, &headers, Some(&format!("token={a}"))),
        Ok("bob".into()),
        "the same token twice"
    );
    assert!(request(&auth, &headers, Some(&format!("token={b}")))
        .is_err_and(|e| e.contains("different tokens")));
    assert!(request(&auth, &headers, Some("token=%FF")).is_err());
    assert_eq!(
        request(&auth, &HeaderMap::new(), Some(&format!("token={b}"))),
        Ok("mallory".into())
    );
}

// ---------------------------------------------------------------------------
// Algorithms and keys
// ---------------------------------------------------------------------------

#[test]
fn each_algorithm_verifies_with_its_pem_public_key() {
    let cases = [
        ("rsa", Algorithm::RS256),
        ("rsa", Algorithm::RS384),
        ("rsa", Algorithm::RS512),
        ("rsa", Algorithm::PS256),
        ("rsa", Algorithm::PS512),
        ("ec256", Algorithm::ES256),
        ("ec384", Algorithm::ES384),
        ("ed25519", Algorithm::EdDSA),
    ];
    for (name, alg) in cases {
        let auth = token_auth(TokenKey::PublicKeyPem(fixture(&format!("{name}.pub.pem"))));
        let t = sign(alg, &private(name, alg), None, &claims(&json!({})));
        assert_eq!(user(&auth, &t), Ok("bob".into()), "{name} {alg:?}");
        // Signed by another key of the same kind: refused.
        let other = match name {
            "rsa" => "rsa2",
            "ec256" => "ec384",
            _ => continue,
        };
        let auth = token_auth(TokenKey::PublicKeyPem(fixture(&format!("{other}.pub.pem"))));
        assert!(user(&auth, &t).is_err(), "{name} {alg:?} against {other}");
    }
}

#[test]
fn the_algorithm_comes_from_the_key_never_from_the_token() {
    // The classic confusion: an HS256 token whose HMAC secret is the public
    // key's bytes (which an attacker has).
    for name in ["rsa", "ec256", "ed25519"] {
        let public = read(&format!("{name}.pub.pem"));
        let auth = token_auth(TokenKey::PublicKeyPem(fixture(&format!("{name}.pub.pem"))));
        let confused = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(&public),
            None,
            &claims(&json!({})),
        );
        assert!(
            user(&auth, &confused).is_err_and(|e| e.contains("InvalidAlgorithm")),
            "{name}"
        );
    }
    // An RSA token against an EC key, and an ES256 token against a secret.
    let ec = token_auth(TokenKey::PublicKeyPem(fixture("ec256.pub.pem")));
    let rs = sign(
        Algorithm::RS256,
        &private("rsa", Algorithm::RS256),
        None,
        &claims(&json!({})),
    );
    assert!(user(&ec, &rs).is_err());
    let es = sign(
        Algorithm::ES256,
        &private("ec256", Algorithm::ES256),
        None,
        &claims(&json!({})),
    );
    assert!(user(&secret(), &es).is_err());
}

#[test]
fn a_file_that_is_no_public_key_fails_to_load() {
    let auth = Auth::Token(TokenAuth::new(TokenKey::PublicKeyPem(fixture("README.md"))));
    assert!(Authenticator::new(&auth).is_err());
    let missing = Auth::Token(TokenAuth::new(TokenKey::Jwks(fixture("no-such.json"))));
    assert!(Authenticator::new(&missing).is_err_and(|e| e.contains("no-such.json")));
}

/// A JWK of fixture `name`'s public key for `alg`, with `kid`.
fn jwk(name: &str, alg: Algorithm, kid: &str) -> Value {
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&private(name, alg), alg).expect("a JWK"))
            .expect("JSON");
    jwk["kid"] = json!(kid);
    jwk
}

/// A JWKS file holding `keys`, under a name unique to this test.
fn jwks_file(test: &str, keys: &[Value]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("weir-auth-{}-{test}.json", std::process::id()));
    std::fs::write(&path, json!({ "keys": keys }).to_string()).expect("write the JWKS");
    path
}

#[test]
fn a_jwks_key_is_chosen_by_the_tokens_kid() {
    let path = jwks_file(
        "kid",
        &[
            jwk("rsa", Algorithm::RS256, "r1"),
            jwk("ec256", Algorithm::ES256, "e1"),
        ],
    );
    let auth = token_auth(TokenKey::Jwks(path.clone()));
    let rs = |kid| {
        sign(
            Algorithm::RS256,
            &private("rsa", Algorithm::RS256),
            kid,
            &claims(&json!({})),
        )
    };
    assert_eq!(user(&auth, &rs(Some("r1"))), Ok("bob".into()));
    let es = sign(
        Algorithm::ES256,
        &private("ec256", Algorithm::ES256),
        Some("e1"),
        &claims(&json!({})),
    );
    assert_eq!(user(&auth, &es), Ok("bob".into()));
    // The right key named by the wrong kid, an unknown kid, no kid.
    assert!(user(&auth, &rs(Some("e1"))).is_err());
    assert!(user(&auth, &rs(Some("nope"))).is_err_and(|e| e.contains("kid")));
    assert!(user(&auth, &rs(None)).is_err_and(|e| e.contains("kid")));
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_jwks_keys_alg_is_the_only_algorithm_it_verifies() {
    // The JWK says RS256: a PS256 token by the same key is refused.
    let path = jwks_file("alg", &[jwk("rsa", Algorithm::RS256, "r1")]);
    let auth = token_auth(TokenKey::Jwks(path.clone()));
    let key = private("rsa", Algorithm::PS256);
    let ps = sign(Algorithm::PS256, &key, Some("r1"), &claims(&json!({})));
    assert!(user(&auth, &ps).is_err_and(|e| e.contains("InvalidAlgorithm")));
    let rs = sign(Algorithm::RS256, &key, Some("r1"), &claims(&json!({})));
    assert_eq!(user(&auth, &rs), Ok("bob".into()));
    // A lone key also verifies a token without a kid.
    let rs = sign(Algorithm::RS256, &key, None, &claims(&json!({})));
    assert_eq!(user(&auth, &rs), Ok("bob".into()));
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_jwks_leaves_out_symmetric_and_encryption_keys_and_needs_one_usable_key() {
    let oct = json!({"kty": "oct", "kid": "s", "k": "c2VjcmV0"});
    let mut enc = jwk("rsa2", Algorithm::RS256, "enc");
    enc["use"] = json!("enc");
    let weird = json!({"kty": "XYZ", "kid": "w"});
    let path = jwks_file(
        "skip",
        &[
            oct.clone(),
            enc.clone(),
            weird,
            jwk("rsa", Algorithm::RS256, "r1"),
        ],
    );
    let Authenticator::Token { keys, .. } = token_auth(TokenKey::Jwks(path.clone())) else {
        panic!("token auth");
    };
    let keys = keys.read().expect("not poisoned").clone();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys.skipped.len(), 3, "{:?}", keys.skipped);
    // An HS256 token "signed" with the oct key is not accepted.
    let auth = token_auth(TokenKey::Jwks(path.clone()));
    let hs = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"secret"),
        Some("s"),
        &claims(&json!({})),
    );
    assert!(user(&auth, &hs).is_err());
    let none = jwks_file("skip-none", &[oct, enc]);
    assert!(
        Authenticator::new(&Auth::Token(TokenAuth::new(TokenKey::Jwks(none.clone()))))
            .is_err_and(|e| e.contains("no usable"))
    );
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(none);
}

#[test]
fn a_reload_puts_new_keys_in_force_and_a_failed_one_keeps_the_old() {
    let path = jwks_file("reload", &[jwk("rsa", Algorithm::RS256, "old")]);
    let auth = token_auth(TokenKey::Jwks(path.clone()));
    let old = sign(
        Algorithm::RS256,
        &private("rsa", Algorithm::RS256),
        Some("old"),
        &claims(&json!({})),
    );
    let new = sign(
        Algorithm::RS256,
        &private("rsa2", Algorithm::RS256),
        Some("new"),
        &claims(&json!({})),
    );
    assert!(user(&auth, &old).is_ok());
    assert!(user(&auth, &new).is_err());

    jwks_file("reload", &[jwk("rsa2", Algorithm::RS256, "new")]);
    assert_eq!(auth.reload(), Ok(1));
    assert!(user(&auth, &new).is_ok(), "the new key");
    assert!(user(&auth, &old).is_err(), "the removed key");

    std::fs::write(&path, "{ not json").expect("write");
    assert!(auth.reload().is_err());
    assert!(
        user(&auth, &new).is_ok(),
        "the keys before the failed reload"
    );
    let _ = std::fs::remove_file(path);
}
