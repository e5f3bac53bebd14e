//! Token authentication: a request's `Authorization` header and query
//! string as they come (the first byte even), or a token whose header and
//! claims are the fuzzer's JSON, signed with the target's HS256 secret so
//! that the claims' checks (`exp`, `nbf`, `iat`, `aud`, `iss`, `sub`) are
//! reached (the first byte odd).
//!
//! Checked besides "no panic": a refused request is answered 401 or 400, an
//! accepted one names a user.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use weir_runtime::fuzzing::{Jwt, SECRET};

/// A fixed "now" (2027-01-15), so that runs are reproducible.
const NOW: f64 = 1_800_000_000.0;

fn jwt() -> &'static Jwt {
    static JWT: OnceLock<Jwt> = OnceLock::new();
    JWT.get_or_init(Jwt::new)
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    // Two parts, split at the first NUL.
    let (first, second) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    if pick & 1 == 0 {
        let query = String::from_utf8_lossy(second);
        let header = (!first.is_empty()).then_some(first);
        match jwt().user(header, &query) {
            Ok(user) => assert!(!user.is_empty()),
            Err(e) => assert!(e.starts_with("401 ") || e.starts_with("400 "), "{e}"),
        }
    } else {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(first),
            URL_SAFE_NO_PAD.encode(second)
        );
        let key = EncodingKey::from_secret(SECRET);
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256)
            .expect("HS256 signs anything");
        let token = format!("{message}.{signature}");
        match jwt().verify_at(&token, NOW) {
            Ok(user) => assert!(!user.is_empty()),
            Err(e) => assert!(e.starts_with("401 "), "{e}"),
        }
        // The same token in the query string takes the same path.
        let _ = jwt().user(None, &format!("token={token}"));
    }
});
