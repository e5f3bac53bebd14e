//! The `openai` generator: replies streamed from any OpenAI-compatible
//! `POST /v1/chat/completions` server (vLLM, llama.cpp's server, Ollama,
//! OpenAI through a TLS proxy) with `stream: true`.
//!
//! This module is **runtime-neutral**: it speaks HTTP/1.1 with hyper 1.x's
//! client connection ([`hyper::client::conn::http1`]) over any
//! [`hyper::rt::Read`] + [`hyper::rt::Write`] stream, waits with any
//! [`hyper::rt::Timer`], parses the event stream with `sse-stream`, and
//! spawns nothing: the connection's future is driven inside the
//! generation's own future. It uses no tokio and no smol: `openai/task.rs`
//! runs [`generate`] as a task of any [`Runtime`](crate::Runtime), with that
//! runtime's TCP connect and timer, and does the metrics.
//!
//! # One generation
//!
//! 1. Connect (a fresh TCP connection per reply, never pooled: closing it is
//!    how a cancel reaches the model server).
//! 2. `POST {upstream}/v1/chat/completions` with the conversation as
//!    `messages` (the system prompt first, then every turn with text, oldest
//!    first, the new user turn last), `stream: true`,
//!    `stream_options.include_usage: true`, and `model`, `max_tokens`,
//!    `temperature`, `seed` as configured; `Authorization: Bearer` when an
//!    API key is set.
//! 3. Each `data:` event's `choices[].delta.content` becomes one
//!    [`GeneratorEvent::Delta`]; `usage` is remembered; `data: [DONE]` (or the
//!    end of the body after a `finish_reason`) ends the reply with
//!    [`GeneratorEvent::Finished`].
//! 4. Anything else ends it with [`GeneratorEvent::Failed`] and the reason
//!    of [`UpstreamError::reason`]. Nothing is ever retried or reconnected:
//!    a retry would produce a different text after the chunks already sent.
//!
//! # Cancel
//!
//! The runtime aborts the generation by dropping its future (aborting the
//! task). Because the connection is owned by that future, dropping it
//! closes the socket at once; the model server sees the client gone and
//! frees its slot (llama.cpp, vLLM and Ollama all stop generating on a
//! closed connection).
//!
//! # Usage
//!
//! `end.usage` is what the upstream reported (`stream_options.include_usage`)
//! — on completed replies and on failed ones that got that far. Otherwise it
//! is left out: PROTOCOL.md's `usage` carries both `prompt_tokens` and
//! `completion_tokens`, and without the upstream's report the prompt's token
//! count is unknown (weir has no tokenizer). [`Tally`] also counts the
//! content deltas received: most servers stream one token per delta, so that
//! count is the completion-token *estimate* used for replies the upstream
//! never reported on (cancelled or failed ones) in the metrics.

use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper::rt::{Read, Timer, Write};
use hyper::{header, Method, Request, Uri};
use sse_stream::SseStream;
use weir_core::wire::{Message, MessageStatus, Role, Usage};
use weir_core::GeneratorEvent;

pub(crate) mod task;
mod wire;

use wire::{ChatChunk, ChatMessage, ChatRequest, StreamOptions};

/// The most bytes of an error response's body kept for the log.
const ERROR_BODY_LIMIT: usize = 4096;
/// The most characters of upstream text quoted in a log line.
const QUOTE_LIMIT: usize = 300;

/// Where the upstream is: an `http://host[:port][/base]` URL. Requests go to
/// `{base}/v1/chat/completions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Host name or IP address, without brackets.
    host: String,
    port: u16,
    /// `host[:port]` as written, for the `Host` header.
    authority: String,
    /// The path before `/v1/chat/completions`, without a trailing `/`.
    base_path: String,
}

/// Why an upstream URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamUrlError {
    /// It does not parse as an absolute URL.
    #[error("not a URL like http://127.0.0.1:8000 ({0})")]
    Syntax(String),
    /// `https://`: weir has no TLS client yet.
    #[error(
        "https is not supported yet (weir has no TLS client built in): use an http:// upstream, \
         e.g. a model server on loopback, or a TLS-terminating proxy in front of a remote one"
    )]
    Https,
    /// A scheme other than `http`.
    #[error("the scheme must be http://")]
    Scheme,
    /// User info, a query or a fragment, which the upstream URL cannot carry
    /// (the API key has its own setting).
    #[error("no user info, query or fragment allowed (use --api-key for credentials)")]
    Extra,
}

impl Upstream {
    /// Parses `http://host[:port][/base]` (port 80 when absent).
    pub fn parse(url: &str) -> Result<Self, UpstreamUrlError> {
        let uri: Uri = url
            .trim()
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| UpstreamUrlError::Syntax(e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(UpstreamUrlError::Https),
            Some(_) => return Err(UpstreamUrlError::Scheme),
            None => return Err(UpstreamUrlError::Syntax("no scheme".to_owned())),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| UpstreamUrlError::Syntax("no host".to_owned()))?;
        if authority.as_str().contains('@') || uri.query().is_some() {
            return Err(UpstreamUrlError::Extra);
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(UpstreamUrlError::Syntax("no host".to_owned()));
        }
        Ok(Self {
            host,
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The host to connect to (an IPv6 address without brackets).
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The request path: `{base}/v1/chat/completions`.
    #[must_use]
    pub fn chat_completions_path(&self) -> String {
        format!("{}/v1/chat/completions", self.base_path)
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.base_path)
    }
}

/// The `openai` generator's settings.
#[derive(Clone, PartialEq)]
pub struct OpenAiConfig {
    /// The server.
    pub upstream: Upstream,
    /// The `model` of each request.
    pub model: String,
    /// Sent as `Authorization: Bearer …` when set. Never printed.
    pub api_key: Option<String>,
    /// `max_tokens` (the server's default when `None`).
    pub max_tokens: Option<u32>,
    /// `temperature` (the server's default when `None`).
    pub temperature: Option<f64>,
    /// `seed` (the server's default when `None`).
    pub seed: Option<u64>,
    /// A system message put before the conversation.
    pub system_prompt: Option<String>,
    /// The longest wait for the connection, for the response's headers, and
    /// between two events of the stream; beyond it the reply fails with
    /// `upstream_timeout`. (Comment lines such as llama.cpp's SSE pings are
    /// not events.)
    pub timeout: Duration,
}

impl OpenAiConfig {
    /// The default [`timeout`](Self::timeout): 60 s.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

    /// Settings for `model` at `upstream`, every option at the server's
    /// default and the default timeout.
    #[must_use]
    pub fn new(upstream: Upstream, model: impl Into<String>) -> Self {
        Self {
            upstream,
            model: model.into(),
            api_key: None,
            max_tokens: None,
            temperature: None,
            seed: None,
            system_prompt: None,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// The JSON body of the request for `context`.
    fn request_body(&self, context: &[Message]) -> Vec<u8> {
        let request = ChatRequest {
            model: &self.model,
            messages: messages(self.system_prompt.as_deref(), context),
            stream: true,
            stream_options: StreamOptions {
                include_usage: true,
            },
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            seed: self.seed,
        };
        // Plain strings and numbers: serializing cannot fail (a NaN
        // temperature becomes `null`, which the server answers).
        serde_json::to_vec(&request).unwrap_or_default()
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("upstream", &format_args!("{}", self.upstream))
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("max_tokens", &self.max_tokens)
            .field("temperature", &self.temperature)
            .field("seed", &self.seed)
            .field("system_prompt", &self.system_prompt)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The conversation as chat messages: the system prompt, then each turn
/// that has text (a reply that failed before its first chunk has none),
/// oldest first. Cancelled and failed replies go in with the text their
/// reader saw.
fn messages<'a>(system: Option<&'a str>, context: &'a [Message]) -> Vec<ChatMessage<'a>> {
    let system = system.filter(|s| !s.is_empty()).map(|s| ChatMessage {
        role: "system",
        content: s,
    });
    let turns = context
        .iter()
        .filter(|m| !m.content.is_empty() && m.status != MessageStatus::Streaming)
        .map(|m| ChatMessage {
            role: match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            },
            content: &m.content,
        });
    system.into_iter().chain(turns).collect()
}

/// What kind of failure an [`UpstreamError`] is (the label of the
/// `weir_upstream_errors_total` metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The connection could not be made.
    Unreachable,
    /// The upstream was silent for longer than the timeout.
    Timeout,
    /// The upstream answered with a status other than 2xx.
    Status,
    /// The answer was not a well-formed chat completion stream.
    Malformed,
    /// The connection ended before the reply did.
    Closed,
    /// The upstream reported an error inside the stream.
    Reported,
}

impl ErrorKind {
    /// Every kind, in the order the metrics list them.
    pub const ALL: [Self; 6] = [
        Self::Unreachable,
        Self::Timeout,
        Self::Status,
        Self::Malformed,
        Self::Closed,
        Self::Reported,
    ];

    /// Its name: `unreachable`, `timeout`, `status`, `malformed`, `closed`,
    /// `reported`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Timeout => "timeout",
            Self::Status => "status",
            Self::Malformed => "malformed",
            Self::Closed => "closed",
            Self::Reported => "reported",
        }
    }
}

/// Why a generation failed. [`reason`](Self::reason) is what the client
/// sees as `end.reason`; the `Display` text, with the details, goes to the
/// log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// Connecting failed (refused, no route, unknown host).
    /// Reason: `upstream_unreachable`.
    #[error("cannot connect to the upstream: {0}")]
    Unreachable(String),
    /// No connection, no response headers, or no event within the timeout.
    /// Reason: `upstream_timeout`.
    #[error("the upstream sent nothing for {0:?}")]
    Timeout(Duration),
    /// A non-2xx answer. Reason: `upstream_status_<code>`, e.g.
    /// `upstream_status_503`.
    #[error("the upstream answered {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The start of the body, for the log.
        body: String,
    },
    /// Not a chat completion event stream: a wrong content type, invalid
    /// HTTP, invalid UTF-8, an event whose data is not a chunk's JSON.
    /// Reason: `upstream_malformed`.
    #[error("the upstream's answer is malformed: {0}")]
    Malformed(String),
    /// The connection closed (or was reset) before `[DONE]` or a
    /// `finish_reason`: e.g. the model server died. Reason: `upstream_closed`.
    #[error("the upstream connection ended before the reply did: {0}")]
    Closed(String),
    /// The stream carried an `error` object. Reason: `upstream_error`.
    #[error("the upstream reported an error: {0}")]
    Reported(String),
}

impl UpstreamError {
    /// The `end.reason` of a reply that failed this way.
    #[must_use]
    pub fn reason(&self) -> String {
        match self {
            Self::Unreachable(_) => "upstream_unreachable".to_owned(),
            Self::Timeout(_) => "upstream_timeout".to_owned(),
            Self::Status { status, .. } => format!("upstream_status_{status}"),
            Self::Malformed(_) => "upstream_malformed".to_owned(),
            Self::Closed(_) => "upstream_closed".to_owned(),
            Self::Reported(_) => "upstream_error".to_owned(),
        }
    }

    /// Its kind.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Unreachable(_) => ErrorKind::Unreachable,
            Self::Timeout(_) => ErrorKind::Timeout,
            Self::Status { .. } => ErrorKind::Status,
            Self::Malformed(_) => ErrorKind::Malformed,
            Self::Closed(_) => ErrorKind::Closed,
            Self::Reported(_) => ErrorKind::Reported,
        }
    }

    /// A hyper error of the exchange (sending the request, reading the
    /// body): invalid HTTP is malformed, anything else means the
    /// connection is gone.
    fn from_hyper(e: &hyper::Error) -> Self {
        if e.is_parse() || e.is_parse_status() {
            Self::Malformed(e.to_string())
        } else {
            Self::Closed(e.to_string())
        }
    }
}

/// What a generation received so far. The caller owns it and passes it in
/// by reference, so that a generation that is dropped half-way (aborted)
/// can still be accounted for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Non-empty content deltas received (and passed on).
    pub content_deltas: u64,
    /// From the start of the generation (before connecting) to the first
    /// content delta.
    pub first_token: Option<Duration>,
    /// The token counts the upstream reported, if it did.
    pub reported: Option<Usage>,
}

impl Tally {
    /// Completion tokens: the upstream's count, else the number of content
    /// deltas (an estimate: servers stream about one token per delta).
    #[must_use]
    pub fn completion_tokens(&self) -> u64 {
        self.reported
            .map_or(self.content_deltas, |u| u.completion_tokens)
    }

    /// Prompt tokens, known only from the upstream's report.
    #[must_use]
    pub fn prompt_tokens(&self) -> Option<u64> {
        self.reported.map(|u| u.prompt_tokens)
    }
}

/// How a generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The reply is complete; `Finished` was emitted.
    Completed,
    /// The reply failed; `Failed` was emitted with the error's reason.
    Failed(UpstreamError),
    /// Nobody listened any more (`emit` answered `false`); the generation
    /// stopped and emitted nothing more.
    Unheard,
}

/// Why the exchange stopped early.
enum Stop {
    Failed(UpstreamError),
    Unheard,
}

impl From<UpstreamError> for Stop {
    fn from(e: UpstreamError) -> Self {
        Self::Failed(e)
    }
}

/// Produces one reply: connects with `connect`, streams the completion of
/// `context` (the conversation's turns, the new user turn last), and emits
/// each content delta and then exactly one `Finished` or `Failed` through
/// `emit` (which answers `false` once nobody listens; the generation then
/// stops at once). Every wait is bounded by `config.timeout`, measured with
/// `timer`; `tally` follows what arrived.
///
/// Runtime-neutral: `connect` yields any hyper IO, and the HTTP connection
/// is driven inside this future (nothing is spawned), so dropping the future
/// closes the connection.
pub async fn generate<C, IO, T, E, F>(
    config: &OpenAiConfig,
    connect: C,
    timer: &T,
    context: &[Message],
    tally: &mut Tally,
    mut emit: E,
) -> Ended
where
    C: Future<Output = std::io::Result<IO>>,
    IO: Read + Write + Unpin,
    T: Timer + ?Sized,
    E: FnMut(GeneratorEvent) -> F,
    F: Future<Output = bool>,
{
    // The runtime's clock (hyper's timer reads it).
    let started = timer.now();
    let body = Bytes::from(config.request_body(context));
    let result = async {
        let io = within(timer, config.timeout, connect)
            .await?
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        exchange(config, io, timer, body, started, tally, &mut emit).await
    }
    .await;
    match result {
        Ok(()) => {
            let usage = tally.reported;
            if emit(GeneratorEvent::Finished { usage }).await {
                Ended::Completed
            } else {
                Ended::Unheard
            }
        }
        Err(Stop::Failed(e)) => {
            let event = GeneratorEvent::Failed {
                reason: e.reason(),
                usage: tally.reported,
            };
            if emit(event).await {
                Ended::Failed(e)
            } else {
                Ended::Unheard
            }
        }
        Err(Stop::Unheard) => Ended::Unheard,
    }
}

/// The HTTP exchange over `io`, with hyper's connection driven beside it.
async fn exchange<IO, T, E, F>(
    config: &OpenAiConfig,
    io: IO,
    timer: &T,
    body: Bytes,
    started: Instant,
    tally: &mut Tally,
    emit: &mut E,
) -> Result<(), Stop>
where
    IO: Read + Write + Unpin,
    T: Timer + ?Sized,
    E: FnMut(GeneratorEvent) -> F,
    F: Future<Output = bool>,
{
    let (mut sender, conn) = within(timer, config.timeout, http1::handshake(io))
        .await?
        .map_err(|e| UpstreamError::from_hyper(&e))?;
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(config.upstream.chat_completions_path())
        .header(header::HOST, &config.upstream.authority)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "text/event-stream");
    if let Some(key) = &config.api_key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| UpstreamError::Malformed(format!("cannot build the request: {e}")))?;

    let work = async {
        let response = within(timer, config.timeout, sender.send_request(request))
            .await?
            .map_err(|e| UpstreamError::from_hyper(&e))?;
        let status = response.status();
        if !status.is_success() {
            let body = within(
                timer,
                config.timeout,
                Limited::new(response.into_body(), ERROR_BODY_LIMIT).collect(),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| quote(&String::from_utf8_lossy(&b.to_bytes())))
            .unwrap_or_default();
            return Err(UpstreamError::Status {
                status: status.as_u16(),
                body,
            }
            .into());
        }
        if let Some(kind) = response.headers().get(header::CONTENT_TYPE) {
            let kind = kind.to_str().unwrap_or("");
            if !kind.trim_start().starts_with("text/event-stream") {
                return Err(UpstreamError::Malformed(format!(
                    "expected text/event-stream, got {}",
                    quote(kind)
                ))
                .into());
            }
        }
        let mut events = SseStream::new(response.into_body());
        let mut finish_reason = false;
        loop {
            let event = match within(timer, config.timeout, events.next()).await? {
                None => break,
                Some(Ok(event)) => event,
                Some(Err(e)) => return Err(sse_error(e).into()),
            };
            let Some(data) = event.data else {
                continue; // an event without data (only `id:` or `retry:`)
            };
            if data.trim() == "[DONE]" {
                return Ok(());
            }
            let chunk: ChatChunk = serde_json::from_str(&data).map_err(|e| {
                UpstreamError::Malformed(format!("event data {}: {e}", quote(&data)))
            })?;
            if let Some(error) = chunk.error {
                return Err(UpstreamError::Reported(quote(&error.to_string())).into());
            }
            if let Some(usage) = chunk.usage {
                tally.reported = Some(usage.into());
            }
            for choice in chunk.choices {
                finish_reason |= choice.finish_reason.is_some();
                let Some(text) = choice.delta.and_then(|d| d.content) else {
                    continue;
                };
                if text.is_empty() {
                    continue;
                }
                tally
                    .first_token
                    .get_or_insert_with(|| timer.now().saturating_duration_since(started));
                tally.content_deltas += 1;
                if !emit(GeneratorEvent::Delta(text)).await {
                    return Err(Stop::Unheard);
                }
            }
        }
        if finish_reason {
            // Some servers end the body without `[DONE]`; a finish_reason
            // already said the reply is whole.
            Ok(())
        } else {
            Err(UpstreamError::Closed(
                "the event stream ended without [DONE] or a finish_reason".to_owned(),
            )
            .into())
        }
    };
    // Drive the connection and the exchange together. If the connection
    // ends first (closed, reset, or done after the last byte), the exchange
    // still reads what hyper buffered and then sees the end or the error.
    let work = pin!(work);
    let conn = pin!(conn);
    match select(conn, work).await {
        Either::Left((_, work)) => work.await,
        Either::Right((result, _)) => result,
    }
}

/// An error of the SSE decoder: a failed body read is the connection's,
/// anything else (bad UTF-8) is malformed.
fn sse_error(e: sse_stream::Error) -> UpstreamError {
    match e {
        sse_stream::Error::Body(inner) => match inner.downcast_ref::<hyper::Error>() {
            Some(h) => UpstreamError::from_hyper(h),
            None => UpstreamError::Closed(inner.to_string()),
        },
        other => UpstreamError::Malformed(other.to_string()),
    }
}

/// `fut`, unless `limit` passes first.
async fn within<T, F>(timer: &T, limit: Duration, fut: F) -> Result<F::Output, UpstreamError>
where
    T: Timer + ?Sized,
    F: Future,
{
    let fut = pin!(fut);
    match select(fut, timer.sleep(limit)).await {
        Either::Left((output, _)) => Ok(output),
        Either::Right(((), _)) => Err(UpstreamError::Timeout(limit)),
    }
}

/// `text` cut to [`QUOTE_LIMIT`] characters, quoted, for the log.
fn quote(text: &str) -> String {
    let mut cut: String = text.chars().take(QUOTE_LIMIT).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

#[cfg(test)]
mod tests;
