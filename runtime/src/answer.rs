//! Small helpers of every HTTP answer: JSON bodies, the protocol's
//! `{code, message}` errors, bounded request bodies, session path segments.
//! Shared by the router (`http.rs`) and the event streams (`ai_sdk.rs`).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use weir_core::ids::SessionId;
use weir_core::wire::http::HttpError;
use weir_core::wire::ErrorCode;

use crate::query::decode_path;

/// The response type of every route but the event streams.
pub(crate) type Resp = Response<Full<Bytes>>;

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

pub(crate) fn parse_session(segment: &str) -> Result<SessionId, HttpError> {
    let s = decode_path(segment)
        .ok_or_else(|| bad_request("the session id is not valid percent-encoded UTF-8"))?;
    SessionId::parse(s).map_err(|e| bad_request(e.to_string()))
}

pub(crate) fn bad_request(message: impl Into<String>) -> HttpError {
    HttpError::new(ErrorCode::BadRequest, message)
}

/// An error body with its code's status.
pub(crate) fn error(e: &HttpError) -> Resp {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error_with(status, e)
}

pub(crate) fn error_with(status: StatusCode, e: &HttpError) -> Resp {
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
