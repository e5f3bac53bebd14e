//! The std-threads example's WebSocket upgrade (`auth = none`).

use std::io::{self};
use std::net::TcpStream;
use std::time::Duration;

use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http::{header, HeaderValue, StatusCode};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::WebSocket;
use weir_core::wire::http::HttpError;
use weir_core::wire::ErrorCode;
use weir_core::{MessageId, Seq, SessionId, UserId};

use super::socket::ReadHalf;

/// The WebSocket path (PROTOCOL.md).
pub(crate) const WS_PATH: &str = "/v1/ws";
/// The user under `auth = none` when the URL names none.
pub(crate) const ANONYMOUS: &str = "anonymous";
/// How long a client may take to send its upgrade request.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

// ----- the handshake -------------------------------------------------------

/// The parameters of an accepted upgrade.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) user: UserId,
    pub(crate) session: SessionId,
    pub(crate) resume: Option<(MessageId, Seq)>,
}

/// The WebSocket upgrade with `auth = none`: `GET /v1/ws?session_id=S` with
/// optional `user_id` and `resume`; anything else is refused with weir's
/// HTTP error body before the upgrade.
pub(crate) fn handshake(
    stream: TcpStream,
    max_frame_bytes: usize,
) -> io::Result<(WebSocket<ReadHalf>, Accepted)> {
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes));
    let mut accepted = None;
    #[allow(
        clippy::result_large_err,
        reason = "the shape of tungstenite's handshake callback; it runs once"
    )]
    let callback = |request: &Request, response: Response| match accept(request) {
        Ok(a) => {
            accepted = Some(a);
            Ok(response)
        }
        Err((status, error)) => Err(refusal(status, &error)),
    };
    let mut ws = tungstenite::accept_hdr_with_config(ReadHalf::new(stream), callback, Some(config))
        .map_err(|e| io::Error::other(format!("WebSocket handshake: {e}")))?;
    let accepted = accepted.ok_or_else(|| io::Error::other("WebSocket handshake refused"))?;
    ws.get_mut().handshake_done()?;
    Ok((ws, accepted))
}

/// Checks an upgrade request: its path and query.
pub(crate) fn accept(request: &Request) -> Result<Accepted, (u16, HttpError)> {
    let bad = |message: String| (400, HttpError::new(ErrorCode::BadRequest, message));
    if request.uri().path() != WS_PATH {
        let error = HttpError::new(
            ErrorCode::NotFound,
            format!("no WebSocket at {}", request.uri().path()),
        );
        return Err((404, error));
    }
    let query = request.uri().query().unwrap_or("");
    let session = query_param(query, "session_id")
        .map_err(bad)?
        .ok_or_else(|| bad("session_id is required".into()))?;
    let session = SessionId::parse(session).map_err(|e| bad(e.to_string()))?;
    let user = query_param(query, "user_id")
        .map_err(bad)?
        .unwrap_or_else(|| ANONYMOUS.into());
    let user = UserId::parse(user).map_err(|e| bad(e.to_string()))?;
    let resume = match query_param(query, "resume").map_err(bad)? {
        None => None,
        Some(r) => {
            let (id, seq) = r
                .rsplit_once(':')
                .ok_or_else(|| bad("resume must be MESSAGE_ID:SEQ".into()))?;
            let seq: Seq = seq
                .parse()
                .map_err(|_| bad("resume must be MESSAGE_ID:SEQ".into()))?;
            let id = MessageId::parse(id).map_err(|e| bad(format!("resume: {e}")))?;
            Some((id, seq))
        }
    };
    Ok(Accepted {
        user,
        session,
        resume,
    })
}

/// An HTTP refusal with weir's `{code, message}` body.
pub(crate) fn refusal(status: u16, error: &HttpError) -> ErrorResponse {
    let body = serde_json::to_string(error).unwrap_or_default();
    let mut response = ErrorResponse::new(Some(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The percent-decoded value of `name` in a query string (the first one).
pub(crate) fn query_param(query: &str, name: &str) -> Result<Option<String>, String> {
    let Some(raw) = query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    }) else {
        return Ok(None);
    };
    let invalid = || format!("{name} is not valid percent-encoded UTF-8");
    let mut bytes = Vec::with_capacity(raw.len());
    let mut rest = raw.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = tail
                .get(..2)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
            let hex = hex
                .and_then(|h| std::str::from_utf8(h).ok())
                .ok_or_else(invalid)?;
            bytes.push(u8::from_str_radix(hex, 16).map_err(|_| invalid())?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).map(Some).map_err(|_| invalid())
}
