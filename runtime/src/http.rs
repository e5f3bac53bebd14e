//! The hyper service: routing, authentication, bodies, the WebSocket upgrade.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /v1/ws` | the WebSocket upgrade (`400` bad parameters, `401` bad credentials, `403` a foreign `Origin`, `426` not an upgrade) |
//! | `GET /ws/chat` (the compat path, unless `--compat off`) | the seed front end's WebSocket ([`weir_core::dialect::compat`]); user from `user_id` under `auth = none` |
//! | `GET /health`, `GET /actuator/health` (compat) | `200 {"status":"UP"}` |
//! | `GET /v1/ai-sdk/ws` (unless `--ai-sdk off`) | the AI SDK's WebSocket ([`weir_core::dialect::ai_sdk`]); user as on `/v1/ws` |
//! | `POST /v1/ai-sdk/chat`, `GET /v1/ai-sdk/chat/{id}/stream` | an event stream ([`crate::ai_sdk`]) |
//! | `POST /v1/ai-sdk/chat/{id}/stop` | the fenced cancel of the chat's reply (as `POST /v1/sessions/{id}/cancel`) |
//! | `OPTIONS` any path | the CORS preflight: `204` |
//! | `POST /v1/sessions/{id}/messages`, `POST /v1/sessions/{id}/cancel`, `GET /v1/sessions/{id}/messages`, `GET /v1/users/{id}/presence` | the core's answer (`Input::Http` → `Output::HttpResponse`) |
//! | `GET /healthz` | `200` while the process serves |
//! | `GET /readyz` | `200` when the store is reachable and accepts writes, else `503` (`store_full` when it refuses them) |
//! | `GET /metrics` | Prometheus text |
//! | `GET /` | the page, when one is configured |
//! | anything else | `404` (`405` for a known path with another method) |
//!
//! Every answer carries `Access-Control-Allow-Origin` when the request's
//! `Origin` is allowed (`--cors-origin`, see [`crate::compat`]).
//! Errors are the protocol's `{code, message}` JSON bodies. The runtime only
//! routes and authenticates; what a request means is the core's decision.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::handshake::derive_accept_key;
use bytes::Bytes;
use futures_channel::oneshot;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, ORIGIN,
    RETRY_AFTER, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Method, Request, Response, StatusCode};
use weir_core::dialect::compat_http::CompatUser;
use weir_core::dialect::Dialect;
use weir_core::ids::{ConnId, MessageId, Seq, SessionId, UserId};
use weir_core::wire::http::HttpError;
use weir_core::wire::ErrorCode;
use weir_core::HttpRequest;

use crate::auth::Authenticator;
use crate::driver::Readiness;
use crate::mailbox::ToDriver;
use crate::metrics::Metrics;
use crate::query::{decode_path, Query};
use crate::rt::{timeout, Runtime};
use crate::ws::{self, Accepted, WsSettings};

/// A safety net: the core answers every request (the in-memory store at
/// once), so this only bounds a request if that promise were ever broken.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The response type of every route but the event streams.
pub(crate) type Resp = Response<Full<Bytes>>;

/// The body of any answer: a whole one, or an AI SDK event stream.
pub(crate) type Body = http_body_util::Either<Full<Bytes>, crate::ai_sdk::SseBody>;

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) tx: async_channel::Sender<ToDriver>,
    pub(crate) auth: Arc<Authenticator>,
    /// Request bodies larger than this answer 413 (the core's frame limit).
    pub(crate) max_body_bytes: usize,
    pub(crate) page: Option<Bytes>,
    pub(crate) ws: WsSettings,
    pub(crate) next_conn: AtomicU64,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) readiness: Readiness,
    /// `--trusted-proxy`: peers whose `X-Forwarded-For` names the client.
    pub(crate) trusted_proxies: Vec<crate::Cidr>,
    /// The compat WebSocket path, when the compatibility surface is on.
    pub(crate) compat: Option<String>,
    pub(crate) cors: crate::compat::Cors,
    /// The AI SDK transports (`/v1/ai-sdk/*`) are served.
    pub(crate) ai_sdk: bool,
    /// Each connection's outbound queue capacity (the event streams').
    pub(crate) queue_capacity: usize,
}

/// Answers one request.
pub(crate) async fn handle<R: Runtime>(
    shared: Arc<Shared>,
    peer: std::net::SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let method = req.method().clone();
    let origin = req.headers().get(ORIGIN).cloned();
    if method == Method::OPTIONS {
        return Ok(shared
            .cors
            .preflight(origin.as_ref())
            .map(http_body_util::Either::Left));
    }
    if let Some(route) = crate::ai_sdk::stream_route(&shared, &segments, &method) {
        let mut resp = crate::ai_sdk::stream::<R>(&shared, req, route).await;
        shared.cors.decorate(&mut resp, origin.as_ref());
        return Ok(resp);
    }
    let ai_sdk = shared.ai_sdk;
    let compat = shared.compat.is_some();
    let mut resp = match (segments.as_slice(), method) {
        (_, Method::GET) if shared.compat.as_deref() == Some(path.as_str()) => {
            upgrade::<R>(&shared, peer, req, Dialect::Compat)
        }
        (["health"] | ["actuator", "health"], Method::GET) if compat => {
            json(StatusCode::OK, crate::compat::HEALTH_UP.to_owned())
        }
        (["api", "chat"], Method::POST) if compat => {
            compat_api::<R>(&shared, req, |user, body| HttpRequest::CompatChat {
                user,
                body,
            })
            .await
        }
        (["api", "cancel"], Method::POST) if compat => {
            compat_api::<R>(&shared, req, |user, body| HttpRequest::CompatCancel {
                user,
                body,
            })
            .await
        }
        (["api", "history", session], Method::GET) if compat => match parse_session(session) {
            Ok(session) => {
                compat_api::<R>(&shared, req, |_, _| HttpRequest::CompatHistory { session }).await
            }
            Err(e) => crate::compat::detail(e.status(), &e.message),
        },
        (["api", "history", session], Method::DELETE) if compat => match parse_session(session) {
            Ok(session) => {
                compat_api::<R>(&shared, req, |_, _| HttpRequest::CompatDeleteHistory {
                    session,
                })
                .await
            }
            Err(e) => crate::compat::detail(e.status(), &e.message),
        },
        (["v1", "ws"], Method::GET) => upgrade::<R>(&shared, peer, req, Dialect::Native),
        (["v1", "ai-sdk", "ws"], Method::GET) if ai_sdk => {
            upgrade::<R>(&shared, peer, req, Dialect::AiSdkWs)
        }
        // The AI SDK's stop: weir's fenced cancel of the chat's reply.
        (["v1", "ai-sdk", "chat", chat, "stop"], Method::POST) if ai_sdk => {
            let chat = (*chat).to_owned();
            api::<R>(&shared, req, |_| {
                parse_session(&chat).map(|session| HttpRequest::Cancel {
                    session,
                    body: Vec::new(),
                })
            })
            .await
        }
        (["v1", "sessions", session, "messages"], Method::POST) => {
            let session = (*session).to_owned();
            api::<R>(&shared, req, |body| match parse_session(&session) {
                Ok(session) => Ok(HttpRequest::PostMessage { session, body }),
                Err(e) => Err(e),
            })
            .await
        }
        (["v1", "sessions", session, "cancel"], Method::POST) => {
            let session = (*session).to_owned();
            api::<R>(&shared, req, |body| {
                parse_session(&session).map(|session| HttpRequest::Cancel { session, body })
            })
            .await
        }
        (["v1", "sessions", session, "messages"], Method::GET) => {
            let session = (*session).to_owned();
            api::<R>(&shared, req, |_| {
                parse_session(&session).map(|session| HttpRequest::ListMessages { session })
            })
            .await
        }
        (["v1", "users", user, "presence"], Method::GET) => {
            let user = (*user).to_owned();
            api::<R>(&shared, req, |_| {
                let user = decode_path(&user)
                    .ok_or_else(|| bad_request("the user id is not valid percent-encoded UTF-8"))?;
                UserId::parse(user)
                    .map(|user| HttpRequest::Presence { user })
                    .map_err(|e| bad_request(e.to_string()))
            })
            .await
        }
        (["healthz"], Method::GET) => json(StatusCode::OK, r#"{"status":"ok"}"#.to_owned()),
        (["readyz"], Method::GET) => {
            if shared.readiness.is_ready() {
                json(StatusCode::OK, r#"{"status":"ready"}"#.to_owned())
            } else if shared.readiness.refuses_writes() {
                error(&HttpError::new(
                    ErrorCode::StoreFull,
                    "the store is reachable but refuses writes (it is full)",
                ))
            } else {
                error(&HttpError::new(
                    ErrorCode::Unavailable,
                    "the store cannot be reached",
                ))
            }
        }
        (["metrics"], Method::GET) => {
            let mut resp = Response::new(Full::new(Bytes::from(shared.metrics.render())));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        ([""], Method::GET) => match &shared.page {
            Some(page) => {
                let mut resp = Response::new(Full::new(page.clone()));
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                resp.headers_mut()
                    .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                resp
            }
            None => not_found(),
        },
        (segments, _) => match allowed(segments) {
            Some(allow) => {
                let mut resp = error_with(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &HttpError::new(ErrorCode::BadRequest, "method not allowed on this path"),
                );
                resp.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(allow));
                resp
            }
            None => not_found(),
        },
    };
    shared.cors.decorate(&mut resp, origin.as_ref());
    Ok(resp.map(http_body_util::Either::Left))
}

/// The methods a known path allows.
fn allowed(segments: &[&str]) -> Option<&'static str> {
    match segments {
        ["v1", "sessions", _, "messages"] => Some("GET, POST"),
        ["v1", "sessions", _, "cancel"] => Some("POST"),
        ["v1", "ai-sdk", "chat"] | ["v1", "ai-sdk", "chat", _, "stop"] => Some("POST"),
        ["v1", "ai-sdk", "ws"] | ["v1", "ai-sdk", "chat", _, "stream"] => Some("GET"),
        ["api", "chat" | "cancel"] => Some("POST"),
        ["api", "history", _] => Some("GET"),
        ["v1", "ws"] | ["v1", "users", _, "presence"] | ["healthz" | "readyz" | "metrics" | ""] => {
            Some("GET")
        }
        _ => None,
    }
}

/// An HTTP API request: authenticate, read the body (bounded), hand it to
/// the core and wait for its answer.
async fn api<R: Runtime>(
    shared: &Shared,
    req: Request<Incoming>,
    build: impl FnOnce(Vec<u8>) -> Result<HttpRequest, HttpError>,
) -> Resp {
    let query = Query::parse(req.uri().query());
    let user = match shared.auth.user(req.headers(), &query) {
        Ok(u) => u,
        Err(e) => return error(&e),
    };
    let body = match read_body(req, shared.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return error(&e),
    };
    let request = match build(body) {
        Ok(r) => r,
        Err(e) => return error(&e),
    };
    let (reply, answer) = oneshot::channel();
    let sent = shared
        .tx
        .send(ToDriver::Http {
            user,
            request,
            reply,
        })
        .await;
    if sent.is_err() {
        return shutting_down();
    }
    match timeout::<R, _>(ANSWER_TIMEOUT, answer).await {
        Ok(Ok((status, body))) => with_retry_after(status, body),
        Ok(Err(_)) => shutting_down(),
        Err(_) => error(&HttpError::new(
            ErrorCode::Unavailable,
            "no answer in time; the request may or may not have taken effect",
        )),
    }
}

/// The core's answer as JSON with `status`; a 429 gets `Retry-After`.
fn with_retry_after(status: u16, body: String) -> Resp {
    let retry = (status == 429).then(|| retry_after_header(&body)).flatten();
    let mut resp = json(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    );
    if let Some(secs) = retry {
        resp.headers_mut().insert(RETRY_AFTER, secs);
    }
    resp
}

/// `Retry-After` for a 429 body's `retry_after_ms`: whole seconds, rounded
/// up (the header has no finer unit; the body keeps the milliseconds).
fn retry_after_header(body: &str) -> Option<HeaderValue> {
    /// `retry_after_ms` of a `{code, message}` or a compat `{detail}` body.
    #[derive(serde::Deserialize)]
    struct Retry {
        retry_after_ms: Option<u64>,
    }
    let e: Retry = serde_json::from_str(body).ok()?;
    let secs = e.retry_after_ms?.div_ceil(1000);
    HeaderValue::from_str(&secs.to_string()).ok()
}

/// A compat `/api` request: the user as the compat surface finds it
/// ([`crate::compat::api_user`]), the body (bounded), the core's answer;
/// errors as `{detail}`.
async fn compat_api<R: Runtime>(
    shared: &Shared,
    req: Request<Incoming>,
    build: impl FnOnce(CompatUser, Vec<u8>) -> HttpRequest,
) -> Resp {
    let query = Query::parse(req.uri().query());
    let (user, how) = match crate::compat::api_user(&shared.auth, req.headers(), &query) {
        Ok(u) => u,
        Err(e) => return crate::compat::detail(e.status(), &e.message),
    };
    let body = match read_body(req, shared.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return crate::compat::detail(e.status(), &e.message),
    };
    let (reply, answer) = oneshot::channel();
    let request = build(how, body);
    let sent = shared
        .tx
        .send(ToDriver::Http {
            user,
            request,
            reply,
        })
        .await;
    if sent.is_err() {
        return crate::compat::detail(503, "The server is shutting down.");
    }
    match timeout::<R, _>(ANSWER_TIMEOUT, answer).await {
        Ok(Ok((status, body))) => with_retry_after(status, body),
        Ok(Err(_)) => crate::compat::detail(503, "The server is shutting down."),
        Err(_) => crate::compat::detail(
            503,
            "No answer in time; the request may or may not have taken effect.",
        ),
    }
}

fn shutting_down() -> Resp {
    error(&HttpError::new(
        ErrorCode::Unavailable,
        "the server is shutting down",
    ))
}

pub(crate) async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Vec<u8>, HttpError> {
    let too_large = || {
        HttpError::new(
            ErrorCode::TooLarge,
            format!("the request body exceeds {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(body) => Ok(body.to_bytes().to_vec()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(bad_request(format!("cannot read the request body: {e}"))),
    }
}

/// `GET /v1/ws`: checks the handshake, the user and the parameters, then
/// answers `101` and serves the socket in a new task.
fn upgrade<R: Runtime>(
    shared: &Arc<Shared>,
    peer: std::net::SocketAddr,
    mut req: Request<Incoming>,
    dialect: Dialect,
) -> Resp {
    let headers = req.headers();
    if !shared.cors.upgrade_allowed(headers) {
        return error(&crate::compat::foreign_origin());
    }
    if !header_has_token(headers, CONNECTION, "upgrade")
        || !header_has_token(headers, UPGRADE, "websocket")
    {
        return error_with(
            StatusCode::UPGRADE_REQUIRED,
            &bad_request("expected a WebSocket upgrade"),
        );
    }
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        let mut resp = error_with(
            StatusCode::UPGRADE_REQUIRED,
            &bad_request("unsupported WebSocket version (13 expected)"),
        );
        resp.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return resp;
    }
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY) else {
        return error(&bad_request("Sec-WebSocket-Key is missing"));
    };
    let accept = derive_accept_key(key.as_bytes());
    let query = Query::parse(req.uri().query());
    // Credentials first: an unauthenticated caller learns nothing else.
    let user = match dialect {
        Dialect::Native | Dialect::AiSdkWs => shared.auth.user(headers, &query),
        Dialect::Compat => crate::compat::ws_user(&shared.auth, headers, &query),
    };
    let user = match user {
        Ok(u) => u,
        Err(e) => return error(&e),
    };
    let session = match query.get("session_id") {
        // The AI SDK socket names its chats in its frames; the core ignores
        // this one.
        _ if dialect == Dialect::AiSdkWs => match SessionId::parse("ai-sdk") {
            Ok(s) => s,
            Err(e) => return error(&HttpError::new(ErrorCode::Internal, e.to_string())),
        },
        Some(Ok(s)) => match SessionId::parse(s) {
            Ok(s) => s,
            Err(e) => return error(&bad_request(e.to_string())),
        },
        Some(Err(())) => return error(&bad_request("session_id is not valid percent-encoding")),
        None => return error(&bad_request("session_id is required")),
    };
    let resume = match query.get("resume") {
        _ if dialect != Dialect::Native => None,
        None => None,
        Some(Ok(r)) => match parse_resume(r) {
            Ok(r) => Some(r),
            Err(e) => return error(&e),
        },
        Some(Err(())) => return error(&bad_request("resume is not valid percent-encoding")),
    };
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        return error(&HttpError::new(ErrorCode::Internal, "bad accept key"));
    };
    let ip = crate::client_ip::client_ip(peer.ip(), req.headers(), &shared.trusted_proxies);
    let conn = ConnId(shared.next_conn.fetch_add(1, Relaxed));
    let on_upgrade = hyper::upgrade::on(&mut req);
    // Detached: the reader task lives as long as the socket.
    R::spawn_detached(ws::serve::<R>(
        shared.ws.clone(),
        shared.tx.clone(),
        shared.metrics.clone(),
        Accepted {
            conn,
            user,
            session,
            resume,
            ip,
            dialect,
        },
        on_upgrade,
    ));
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(SEC_WEBSOCKET_ACCEPT, accept);
    resp
}

/// `resume=MESSAGE_ID:SEQ` (split at the last `:`).
fn parse_resume(s: &str) -> Result<(MessageId, Seq), HttpError> {
    let bad = || bad_request("resume must be MESSAGE_ID:SEQ");
    let (id, seq) = s.rsplit_once(':').ok_or_else(bad)?;
    let seq: Seq = seq.parse().map_err(|_| bad())?;
    let id = MessageId::parse(id).map_err(|e| bad_request(format!("resume: {e}")))?;
    Ok((id, seq))
}

pub(crate) fn parse_session(segment: &str) -> Result<SessionId, HttpError> {
    let s = decode_path(segment)
        .ok_or_else(|| bad_request("the session id is not valid percent-encoded UTF-8"))?;
    SessionId::parse(s).map_err(|e| bad_request(e.to_string()))
}

/// Whether a comma-separated header holds `token` (ASCII case-insensitive).
fn header_has_token(headers: &HeaderMap, name: hyper::header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

pub(crate) fn bad_request(message: impl Into<String>) -> HttpError {
    HttpError::new(ErrorCode::BadRequest, message)
}

fn not_found() -> Resp {
    error(&HttpError::new(ErrorCode::NotFound, "no such route"))
}

/// An error body with its code's status.
pub(crate) fn error(e: &HttpError) -> Resp {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error_with(status, e)
}

fn error_with(status: StatusCode, e: &HttpError) -> Resp {
    let body = serde_json::to_string(e)
        .unwrap_or_else(|_| r#"{"code":"internal","message":"encoding failed"}"#.to_owned());
    json(status, body)
}

pub(crate) fn json(status: StatusCode, body: String) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_parameter() {
        let (id, seq) =
            parse_resume("abc.0123456789abcdefr:12").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(id.as_str(), "abc.0123456789abcdefr");
        assert_eq!(seq, 12);
        let (id, seq) = parse_resume("a:b:3").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((id.as_str(), seq), ("a:b", 3));
        assert!(parse_resume("m1").is_err());
        assert!(parse_resume("m1:x").is_err());
        assert!(parse_resume(":3").is_err());
        assert!(parse_resume("m1:-1").is_err());
    }
}
