//! Who is asking: the user of a WebSocket upgrade or an HTTP API request
//! (PROTOCOL.md, "Authentication").
//!
//! - [`Auth::None`]: the `user_id` query parameter, `anonymous` when absent.
//! - [`Auth::Token`]: a JWT from `Authorization: Bearer …` or the `token`
//!   query parameter (both given: the same token, else 401). Its signature
//!   is verified by the configured key (`keys`: an HS256 secret, a PEM
//!   public key or a JWKS file, reloadable), `exp` is required and checked
//!   without leeway, `nbf` and `iat` may be at most [`TokenAuth::LEEWAY`]
//!   ahead, `aud` and `iss` must match when configured; `sub` is the user
//!   id. Everything else is `401 unauthorized`.

mod keys;
#[cfg(test)]
mod tests;

use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::header::{HeaderMap, AUTHORIZATION};
use serde::Deserialize;
use weir_core::ids::UserId;
use weir_core::wire::http::HttpError;
use weir_core::wire::ErrorCode;

use crate::config::TokenAuth;
use crate::query::Query;
use crate::Auth;
use keys::Keys;

/// The user when `auth = none` and no `user_id` is given.
pub(crate) const ANONYMOUS: &str = "anonymous";

/// The prepared form of [`Auth`].
pub(crate) enum Authenticator {
    None,
    Token {
        config: TokenAuth,
        /// Swapped whole by [`Authenticator::reload`].
        keys: RwLock<Arc<Keys>>,
    },
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Token { config, .. } => f.debug_tuple("Token").field(config).finish(),
        }
    }
}

/// The claims weir reads; `exp`, `aud` and `iss` are checked by
/// jsonwebtoken's validation.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    nbf: Option<f64>,
    iat: Option<f64>,
}

impl Authenticator {
    /// Prepares `auth`, reading its key files: fails with the reason when
    /// they cannot be read or hold no usable key.
    pub(crate) fn new(auth: &Auth) -> Result<Self, String> {
        match auth {
            Auth::None => Ok(Self::None),
            Auth::Token(config) => {
                let keys = Keys::load(config)?;
                log_skipped(&keys);
                Ok(Self::Token {
                    config: config.clone(),
                    keys: RwLock::new(Arc::new(keys)),
                })
            }
        }
    }

    /// Reads the key files again and, when that succeeds, puts the new keys
    /// in force (an HS256 secret has nothing to reload). On failure the old
    /// keys stay and the reason is returned. Answers how many keys are in
    /// force.
    pub(crate) fn reload(&self) -> Result<usize, String> {
        match self {
            Self::None => Ok(0),
            Self::Token { config, keys } => {
                let new = Keys::load(config)?;
                log_skipped(&new);
                let n = new.len();
                *keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(new);
                Ok(n)
            }
        }
    }

    /// The user of a request, or the error to answer it with (`401` for
    /// missing or bad credentials, `400` for a malformed `user_id`).
    pub(crate) fn user(&self, headers: &HeaderMap, query: &Query) -> Result<UserId, HttpError> {
        match self {
            Self::None => match query.get("user_id") {
                None => UserId::parse(ANONYMOUS)
                    .map_err(|e| HttpError::new(ErrorCode::Internal, e.to_string())),
                Some(Ok(s)) => UserId::parse(s)
                    .map_err(|e| HttpError::new(ErrorCode::BadRequest, e.to_string())),
                Some(Err(())) => Err(HttpError::new(
                    ErrorCode::BadRequest,
                    "user_id is not valid percent-encoded UTF-8",
                )),
            },
            Self::Token { keys, .. } => {
                let token = token(headers, query)?;
                let keys = keys
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                verify(&keys, token, unix_now())
            }
        }
    }
}

fn log_skipped(keys: &Keys) {
    for why in &keys.skipped {
        tracing::warn!("JWKS: left out {why}");
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The token of a request: the header's or the query's; when both are given
/// they must be the same token.
fn token<'a>(headers: &'a HeaderMap, query: &'a Query) -> Result<&'a str, HttpError> {
    match (bearer(headers)?, query.get("token")) {
        (Some(h), Some(Ok(q))) if h != q => Err(unauthorized(
            "the Authorization header and the token query parameter carry different tokens",
        )),
        (Some(_), Some(Err(()))) | (None, Some(Err(()))) => {
            Err(unauthorized("the token is malformed"))
        }
        (Some(t), _) | (None, Some(Ok(t))) => Ok(t),
        (None, None) => Err(unauthorized(
            "a token is required (Authorization: Bearer, or the token query parameter)",
        )),
    }
}

/// Verifies `token` with `auth`'s keys at unix time `now` (the fuzz
/// targets' way in: [`verify`] without a clock).
#[cfg(feature = "fuzzing")]
pub(crate) fn verify_at(auth: &Authenticator, token: &str, now: f64) -> Result<UserId, HttpError> {
    match auth {
        Authenticator::None => Err(unauthorized("no token authentication")),
        Authenticator::Token { keys, .. } => {
            let keys = keys
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            verify(&keys, token, now)
        }
    }
}

/// Verifies `token` with the key its `kid` picks, at unix time `now`.
fn verify(keys: &Keys, token: &str, now: f64) -> Result<UserId, HttpError> {
    let invalid = |e: &dyn std::fmt::Display| unauthorized(format!("invalid token: {e}"));
    let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(&e))?;
    let key = keys.pick(header.kid.as_deref()).map_err(|e| invalid(&e))?;
    let data = jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation)
        .map_err(|e| invalid(&e))?;
    let leeway = TokenAuth::LEEWAY.as_secs_f64();
    if data.claims.nbf.is_some_and(|nbf| nbf > now + leeway) {
        return Err(invalid(&"nbf: not valid yet"));
    }
    if data.claims.iat.is_some_and(|iat| iat > now + leeway) {
        return Err(invalid(&"iat: issued in the future"));
    }
    UserId::parse(data.claims.sub).map_err(|e| invalid(&format_args!("sub: {e}")))
}

/// The token of an `Authorization: Bearer` header, if there is one.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, HttpError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| unauthorized("the Authorization header is not ASCII"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(unauthorized(
            "the Authorization header must be `Bearer <token>`",
        )),
    }
}

fn unauthorized(message: impl Into<String>) -> HttpError {
    HttpError::new(ErrorCode::Unauthorized, message)
}
