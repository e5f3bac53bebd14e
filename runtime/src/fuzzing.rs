//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, off by
//! default; nothing in the workspace turns it on).
//!
//! A request's credentials are the first untrusted input the server reads:
//! the `Authorization` header, the query string and the token in it.

use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION};

use crate::auth::{verify_at, Authenticator};
use crate::config::{Auth, TokenAuth, TokenKey};
use crate::query::{decode_path, Query};

/// The HS256 secret the fuzz [`Jwt`] verifies with (a target signs the
/// fuzzer's header and claims with it, to reach the claims' checks).
pub const SECRET: &[u8] = b"weir-fuzz-secret";
/// The audience the fuzz [`Jwt`] requires.
pub const AUDIENCE: &str = "weir-fuzz";
/// The issuer the fuzz [`Jwt`] requires.
pub const ISSUER: &str = "https://issuer.fuzz";

/// Token authentication as the server runs it (`--auth token` with an
/// HS256 secret, an audience and an issuer).
#[derive(Debug)]
pub struct Jwt(Authenticator);

impl Default for Jwt {
    fn default() -> Self {
        Self::new()
    }
}

impl Jwt {
    /// Verifies with [`SECRET`], requiring [`AUDIENCE`] and [`ISSUER`].
    ///
    /// # Panics
    /// Never: an HS256 secret reads no file.
    #[must_use]
    pub fn new() -> Self {
        let mut config = TokenAuth::new(TokenKey::Secret(SECRET.to_vec()));
        config.audiences = vec![AUDIENCE.to_owned()];
        config.issuer = Some(ISSUER.to_owned());
        let auth = Authenticator::new(&Auth::Token(config)).expect("a secret needs no file");
        Self(auth)
    }

    /// The user of a request whose `Authorization` header is
    /// `authorization` (left out when it is not a valid header value) and
    /// whose query string is `query`.
    ///
    /// # Errors
    /// The request's answer: `401` (or `400`) and why.
    pub fn user(&self, authorization: Option<&[u8]>, query: &str) -> Result<String, String> {
        let mut headers = HeaderMap::new();
        if let Some(Ok(v)) = authorization.map(HeaderValue::from_bytes) {
            headers.insert(AUTHORIZATION, v);
        }
        self.0
            .user(&headers, &Query::parse(Some(query)))
            .map(|u| u.as_str().to_owned())
            .map_err(|e| format!("{} {}", e.status(), e.message))
    }

    /// Verifies `token` at unix time `now` (seconds), as a request at that
    /// time would.
    ///
    /// # Errors
    /// Why the token is refused.
    pub fn verify_at(&self, token: &str, now: f64) -> Result<String, String> {
        verify_at(&self.0, token, now)
            .map(|u| u.as_str().to_owned())
            .map_err(|e| format!("{} {}", e.status(), e.message))
    }
}

/// Percent-decodes a path segment as the HTTP API's router does.
#[must_use]
pub fn path_segment(segment: &str) -> Option<String> {
    decode_path(segment)
}
