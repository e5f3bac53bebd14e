//! Who is asking: the user of a WebSocket upgrade or an HTTP API request
//! (PROTOCOL.md, "Authentication").
//!
//! - [`Auth::None`]: the `user_id` query parameter, `anonymous` when absent.
//! - [`Auth::Token`]: an HS256 JWT from `Authorization: Bearer …` (preferred)
//!   or the `token` query parameter. `exp` is required and checked without
//!   leeway; `sub` is the user id. Everything else is `401 unauthorized`.

use hyper::header::{HeaderMap, AUTHORIZATION};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use weir_core::ids::UserId;
use weir_core::wire::http::HttpError;
use weir_core::wire::ErrorCode;

use crate::query::Query;
use crate::Auth;

/// The user when `auth = none` and no `user_id` is given.
pub(crate) const ANONYMOUS: &str = "anonymous";

/// The prepared form of [`Auth`].
pub(crate) enum Authenticator {
    None,
    Token {
        key: DecodingKey,
        validation: Box<Validation>,
    },
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Token { .. } => f.write_str("Token(HS256)"),
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Authenticator {
    pub(crate) fn new(auth: &Auth) -> Self {
        match auth {
            Auth::None => Self::None,
            Auth::Token { secret } => {
                let mut validation = Validation::new(Algorithm::HS256);
                validation.leeway = 0;
                validation.validate_exp = true;
                validation.set_required_spec_claims(&["exp", "sub"]);
                Self::Token {
                    key: DecodingKey::from_secret(secret),
                    validation: Box::new(validation),
                }
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
            Self::Token { key, validation } => {
                let token = match (bearer(headers)?, query.get("token")) {
                    (Some(t), _) | (None, Some(Ok(t))) => Some(t),
                    (None, Some(Err(()))) => return Err(unauthorized("the token is malformed")),
                    (None, None) => None,
                };
                let Some(token) = token else {
                    return Err(unauthorized(
                        "a token is required (Authorization: Bearer, or the token query parameter)",
                    ));
                };
                let data = jsonwebtoken::decode::<Claims>(token, key, validation)
                    .map_err(|e| unauthorized(format!("invalid token: {e}")))?;
                UserId::parse(data.claims.sub)
                    .map_err(|e| unauthorized(format!("invalid token: sub: {e}")))
            }
        }
    }
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
