//! The runtime's share of the AI SDK's HTTP transport (PROTOCOL.md, "AI SDK
//! transports"): `POST /v1/ai-sdk/chat` and `GET /v1/ai-sdk/chat/{id}/stream`
//! answered with a server-sent-event stream.
//!
//! Each response is a connection of the core
//! ([`Input::AiSdkStream`](weir_core::Input::AiSdkStream)) with an outbound
//! queue like a WebSocket's. The core's first frame on it is the status
//! ([`STATUS`]: `200`, `204`, or an error's status and JSON body); the
//! frames after it are the event stream's text, which a pump task moves
//! from the queue into the response body. The stream ends when the core
//! releases the connection (after `data: [DONE]`) or closes it (a client
//! that cannot keep up: it resumes with `Last-Event-ID`). A client that goes
//! away is reported as `Input::Disconnected`: that never cancels the reply.
//! What a request means stays the core's ([`weir_core::dialect::ai_sdk`]).

use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use http_body_util::{Either, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use weir_core::dialect::ai_sdk::{StreamRequest, STATUS};
use weir_core::ids::ConnId;
use weir_core::wire::ServerFrame;
use weir_core::Input;

use crate::answer::{error, read_body};
use crate::auth::Authenticator;
use crate::mailbox::{ConnHandle, ToDriver};
use crate::query::Query;
use crate::queue::{Item, OutQueue};
use crate::rt::{timeout, Runtime};

/// The body of any answer: a whole one, or an event stream.
pub(crate) type Body = Either<Full<Bytes>, SseBody>;

/// The body of an event stream.
pub(crate) type SseBody = StreamBody<mpsc::Receiver<Result<Frame<Bytes>, Infallible>>>;

/// How long a request waits for the core's status (a safety net, like the
/// HTTP API's).
const STATUS_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest the pump waits for the client to read an event.
const BODY_WAIT: Duration = Duration::from_secs(30);

/// Events the pump may have handed the body and the client not read yet.
const BODY_EVENTS: usize = 16;

/// An event-stream route.
#[derive(Debug)]
pub(crate) enum StreamRoute {
    /// `POST /v1/ai-sdk/chat`.
    Chat,
    /// `GET /v1/ai-sdk/chat/{id}/stream` (the raw path segment).
    Resume(String),
}

/// What an event-stream request needs of the server.
#[derive(Debug)]
pub(crate) struct StreamCtx<'a> {
    pub(crate) tx: &'a async_channel::Sender<ToDriver>,
    pub(crate) auth: &'a Authenticator,
    pub(crate) next_conn: &'a std::sync::atomic::AtomicU64,
    pub(crate) max_body_bytes: usize,
    pub(crate) queue_capacity: usize,
}

/// Whether a request is for an event-stream route (`enabled`: the AI SDK
/// routes are served).
pub(crate) fn stream_route(
    enabled: bool,
    segments: &[&str],
    method: &Method,
) -> Option<StreamRoute> {
    if !enabled {
        return None;
    }
    match (segments, method) {
        (["v1", "ai-sdk", "chat"], &Method::POST) => Some(StreamRoute::Chat),
        (["v1", "ai-sdk", "chat", id, "stream"], &Method::GET) => {
            Some(StreamRoute::Resume((*id).to_owned()))
        }
        _ => None,
    }
}

fn whole(resp: crate::answer::Resp) -> Response<Body> {
    resp.map(Either::Left)
}

/// Answers an event-stream route.
pub(crate) async fn stream<R: Runtime>(
    shared: StreamCtx<'_>,
    req: Request<Incoming>,
    route: StreamRoute,
) -> Response<Body> {
    let query = Query::parse(req.uri().query());
    let user = match shared.auth.user(req.headers(), &query) {
        Ok(u) => u,
        Err(e) => return whole(error(&e)),
    };
    let request = match route {
        StreamRoute::Chat => match read_body(req, shared.max_body_bytes).await {
            Ok(body) => StreamRequest::Chat { body },
            Err(e) => return whole(error(&e)),
        },
        StreamRoute::Resume(id) => {
            let chat = match crate::answer::parse_session(&id) {
                Ok(c) => c,
                Err(e) => return whole(error(&e)),
            };
            let after = req
                .headers()
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .or_else(|| query.get("after").and_then(Result::ok).map(str::to_owned));
            let after = match after.map(|a| a.trim().parse::<u64>()) {
                None => None,
                Some(Ok(n)) => Some(n),
                Some(Err(_)) => {
                    return whole(error(&crate::answer::bad_request(
                        "Last-Event-ID / after must be a whole number",
                    )))
                }
            };
            StreamRequest::Resume { chat, after }
        }
    };
    let conn = ConnId(shared.next_conn.fetch_add(1, Relaxed));
    let queue = Arc::new(OutQueue::new(shared.queue_capacity));
    let (stop_tx, stop_rx) = oneshot::channel();
    let handle = ConnHandle::new(queue.clone(), stop_tx);
    let sent = shared
        .tx
        .send(ToDriver::Stream {
            conn,
            user,
            request,
            handle,
        })
        .await;
    if sent.is_err() {
        return whole(error(&weir_core::wire::http::HttpError::new(
            weir_core::wire::ErrorCode::Unavailable,
            "the server is shutting down",
        )));
    }
    let first = timeout::<R, _>(
        STATUS_TIMEOUT,
        std::future::poll_fn(|cx| queue.poll_take(cx)),
    )
    .await;
    let status = match first.map(|p| p.map(|p| p.item)) {
        Ok(Some(Item::Frame(encoded))) => match encoded.frame() {
            ServerFrame::Dialect(f) if f.kind == STATUS => f.text.clone(),
            _ => String::new(),
        },
        _ => String::new(),
    };
    let (code, body) = status.split_once(' ').unwrap_or((status.as_str(), ""));
    match code {
        "200" => {}
        "204" => {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::NO_CONTENT;
            return whole(resp);
        }
        _ => {
            let Ok(code) = code.parse::<u16>() else {
                return whole(error(&weir_core::wire::http::HttpError::new(
                    weir_core::wire::ErrorCode::Unavailable,
                    "no answer in time; the request may or may not have taken effect",
                )));
            };
            return whole(crate::answer::json(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                body.to_owned(),
            ));
        }
    }
    let (tx, rx) = mpsc::channel(BODY_EVENTS);
    R::spawn_detached(pump::<R>(conn, queue, tx, stop_rx, shared.tx.clone()));
    let mut resp = Response::new(Either::Right(StreamBody::new(rx)));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        HeaderName::from_static("x-vercel-ai-ui-message-stream"),
        HeaderValue::from_static("v1"),
    );
    h.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    resp
}

/// Moves the event stream's frames from the queue into the body until the
/// core releases the connection (the queue closes: what it holds still
/// goes out) or closes it; a client that went away, or that has read
/// nothing for [`BODY_WAIT`], is reported gone (never a cancel).
async fn pump<R: Runtime>(
    conn: ConnId,
    queue: Arc<OutQueue>,
    mut body: mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
    stop: oneshot::Receiver<()>,
    driver: async_channel::Sender<ToDriver>,
) {
    loop {
        let Some(popped) = std::future::poll_fn(|cx| queue.poll_take(cx)).await else {
            return;
        };
        if popped.writable {
            // The queue drained below its low-water mark: the core may hand
            // this response what it held back (the queue's credit).
            let _ = driver.send(ToDriver::Input(Input::Writable { conn })).await;
        }
        // A heartbeat is an SSE comment (clients skip it): a response has no
        // inbound frames, so the body taking it is the sign of life that
        // keeps the connection's idle deadline moving, as a pong does.
        let (text, ping) = match popped.item {
            Item::Frame(encoded) => (Bytes::from(encoded.frame().encode()), false),
            Item::Ping => (Bytes::from_static(b": ping\n\n"), true),
            Item::Merged(_) => continue,
            Item::Close(_) => return,
        };
        let ready =
            timeout::<R, _>(BODY_WAIT, std::future::poll_fn(|cx| body.poll_ready(cx))).await;
        let sent = match ready {
            Ok(Ok(())) => body.start_send(Ok(Frame::data(text))).is_ok(),
            _ => false,
        };
        if sent && ping {
            let _ = driver.send(ToDriver::Input(Input::Activity { conn })).await;
        }
        if !sent {
            // The client is gone: the reply goes on.
            let _ = driver
                .send(ToDriver::Input(Input::Disconnected { conn }))
                .await;
            let _ = stop.await;
            return;
        }
    }
}
