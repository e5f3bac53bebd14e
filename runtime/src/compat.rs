//! The runtime's share of the compatibility surface (PROTOCOL.md,
//! "Compatibility surface", "CORS and origins"): CORS headers, the Origin
//! check of WebSocket upgrades, and who the user of a `/ws/chat` upgrade is.
//! What a request or a frame means stays the core's
//! ([`weir_core::dialect`]).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderMap, HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, CONTENT_TYPE, HOST, ORIGIN, VARY,
};
use hyper::{Response, StatusCode};
use weir_core::dialect::compat::DEFAULT_USER;
use weir_core::dialect::compat_http::CompatUser;
use weir_core::ids::UserId;
use weir_core::wire::http::HttpError;
use weir_core::wire::ErrorCode;

use crate::auth::Authenticator;
use crate::query::Query;

/// The response type of every route (the same as `http.rs`'s).
type Resp = Response<Full<Bytes>>;

/// The allowed origins.
#[derive(Debug, Clone)]
pub(crate) struct Cors {
    any: bool,
    origins: Vec<String>,
}

impl Cors {
    /// From the configured list: each entry may itself be a comma list; `*`
    /// allows any origin.
    pub(crate) fn new(configured: &[String]) -> Self {
        let origins: Vec<String> = configured
            .iter()
            .flat_map(|o| o.split(','))
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        Self {
            any: origins.iter().any(|o| o == "*"),
            origins,
        }
    }

    fn allows(&self, origin: &str) -> bool {
        self.any || self.origins.iter().any(|o| o == origin)
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`.
    fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        if self.any {
            return Some(HeaderValue::from_static("*"));
        }
        let origin = origin?;
        self.allows(origin.to_str().ok()?).then(|| origin.clone())
    }

    /// Adds the CORS header to an answer (errors included).
    pub(crate) fn decorate<B>(&self, resp: &mut Response<B>, origin: Option<&HeaderValue>) {
        if let Some(allow) = self.allow_origin(origin) {
            let h = resp.headers_mut();
            h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow);
            if !self.any {
                h.append(VARY, HeaderValue::from_static("Origin"));
            }
        }
    }

    /// The answer to a preflight `OPTIONS`.
    pub(crate) fn preflight(&self, origin: Option<&HeaderValue>) -> Resp {
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        h.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
        );
        h.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type, Authorization"),
        );
        h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        self.decorate(&mut resp, origin);
        resp
    }

    /// Whether a WebSocket upgrade may proceed: no `Origin`, an allowed one,
    /// or the server's own (its host is the request's `Host`).
    pub(crate) fn upgrade_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        if self.allows(origin.trim_end_matches('/')) {
            return true;
        }
        let own = headers.get(HOST).and_then(|h| h.to_str().ok());
        let host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        matches!((own, host), (Some(own), Some(host)) if own.eq_ignore_ascii_case(host))
    }
}

/// The error of an upgrade refused for its `Origin`.
pub(crate) fn foreign_origin() -> HttpError {
    HttpError::new(
        ErrorCode::Forbidden,
        "this Origin is not allowed (see --cors-origin)",
    )
}

/// The user of a `/ws/chat` upgrade: under `auth = none` the `user_id`
/// parameter (default `default_user`); under token auth a real JWT, as on
/// every route (the page's `dev-token` never passes).
pub(crate) fn ws_user(
    auth: &Authenticator,
    headers: &HeaderMap,
    query: &Query,
) -> Result<UserId, HttpError> {
    match auth {
        Authenticator::None => match query.get("user_id") {
            None | Some(Ok("")) => UserId::parse(DEFAULT_USER)
                .map_err(|e| HttpError::new(ErrorCode::Internal, e.to_string())),
            Some(Ok(s)) => {
                UserId::parse(s).map_err(|e| HttpError::new(ErrorCode::BadRequest, e.to_string()))
            }
            Some(Err(())) => Err(HttpError::new(
                ErrorCode::BadRequest,
                "user_id is not valid percent-encoded UTF-8",
            )),
        },
        Authenticator::Token { .. } => auth.user(headers, query),
    }
}

/// The user of a compat `/api` request and how the core finds the
/// conversation's user: under `auth = none` the `user_id` parameter
/// (default `default_user`), overridden by the body's `user_id`; under
/// token auth the token's user.
pub(crate) fn api_user(
    auth: &Authenticator,
    headers: &HeaderMap,
    query: &Query,
) -> Result<(UserId, CompatUser), HttpError> {
    let user = ws_user(auth, headers, query)?;
    let how = match auth {
        Authenticator::None => CompatUser::FromBody,
        Authenticator::Token { .. } => CompatUser::Authenticated,
    };
    Ok((user, how))
}

/// A `{detail}` error answer with `status`.
pub(crate) fn detail(status: u16, detail: &str) -> Resp {
    let body = serde_json::json!({ "detail": detail }).to_string();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// `{"status":"UP"}` for `GET /health` and `GET /actuator/health`.
pub(crate) const HEALTH_UP: &str = r#"{"status":"UP"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(hyper::header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                k.clone(),
                HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{e}")),
            );
        }
        h
    }

    #[test]
    fn origins_come_from_a_repeatable_comma_list() {
        let cors = Cors::new(&["http://a:1, http://b:2/".to_owned(), "http://c".to_owned()]);
        assert!(cors.allows("http://a:1") && cors.allows("http://b:2") && cors.allows("http://c"));
        assert!(!cors.allows("http://d"));
        let v = HeaderValue::from_static("http://b:2");
        assert_eq!(cors.allow_origin(Some(&v)), Some(v.clone()));
        assert_eq!(
            cors.allow_origin(Some(&HeaderValue::from_static("http://d"))),
            None
        );
        let any = Cors::new(&["*".to_owned()]);
        assert_eq!(any.allow_origin(None), Some(HeaderValue::from_static("*")));
    }

    #[test]
    fn an_upgrade_from_a_foreign_origin_is_refused_and_the_own_one_allowed() {
        let cors = Cors::new(&["http://localhost:3000".to_owned()]);
        assert!(cors.upgrade_allowed(&headers(&[])));
        assert!(cors.upgrade_allowed(&headers(&[(ORIGIN, "http://localhost:3000")])));
        assert!(cors.upgrade_allowed(&headers(&[
            (ORIGIN, "http://127.0.0.1:8080"),
            (HOST, "127.0.0.1:8080")
        ])));
        assert!(!cors.upgrade_allowed(&headers(&[
            (ORIGIN, "http://evil.example"),
            (HOST, "127.0.0.1:8080")
        ])));
    }
}
