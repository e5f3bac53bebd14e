//! # weir-runtime
//!
//! What weir's two runtimes share: everything that drives the sans-IO
//! [`weir_core`] and is not about one async runtime. It is written once
//! against the small [`Runtime`] trait (spawn an abortable task, sleep, bind,
//! accept and connect TCP, hyper's timer), and `weir-runtime-tokio` and
//! `weir-runtime-smol` are that trait's two implementations plus their
//! entry points. It **holds no policy**: what to send, when to close, what a
//! cancel answers, when a heartbeat is due, who may see what — every
//! decision is the core's.
//!
//! Its channels and notifications are runtime-neutral (`async-channel`,
//! `futures-channel`'s oneshot, `event-listener`), its HTTP is hyper 1.x and
//! its WebSocket async-tungstenite over futures-io, and its Redis the `redis`
//! crate with no runtime feature of its own (each runtime crate adds
//! `tokio-comp` or `smol-comp`; the redis crate uses tokio inside a tokio
//! context and smol outside one).
//!
//! ## What it holds
//!
//! | module | what |
//! | --- | --- |
//! | [`Runtime`] | the trait a runtime implements |
//! | `driver` | the one task that owns the [`Node`](weir_core::Node) and the store |
//! | `mailbox` | what the other tasks send the driver, and its side of a WebSocket |
//! | `server` | the accept loop and the graceful shutdown |
//! | `http` | the hyper service: routing, bodies, the WebSocket upgrade, `/healthz`, `/readyz`, `/metrics`, the page |
//! | `ws` | per WebSocket: one reader task and exactly one writer task |
//! | [`queue`] | the per-connection bounded outbound queue (merges chunk frames when full) |
//! | `auth` | `Auth::None` (user from the query) and HS256 JWTs |
//! | `query` | percent-decoding of query parameters and path segments |
//! | `generator` | generators as abortable tasks: the demo generator |
//! | [`openai`] | the `openai` generator: an OpenAI-compatible upstream |
//! | `redis_store` | the Redis store: operations, supervisor, pub/sub |
//! | `metrics` | counters and the Prometheus text |
//!
//! ## The driver
//!
//! ```text
//!  accept loop ──► hyper connection ──► HTTP API request ──┐
//!                        └─► WebSocket upgrade             │   channel (bounded)
//!  reader task (per WebSocket): frames, pongs, close ──────┼──────────────────► driver task
//!  generator tasks: deltas, finish ────────────────────────┘                    owns Node + Model
//!                                                                                 │
//!  writer task (per WebSocket) ◄── OutQueue ◄── Output::Send/SendMany/Ping/Close ─┤
//!  HTTP response (oneshot)     ◄── Output::HttpResponse ◄─────────────────────────┘
//! ```
//!
//! One driver task owns the [`Node`](weir_core::Node) and the in-memory store
//! (the core's reference [`Model`](weir_core::store::Model): the in-memory
//! store *is* `Model::apply`). It waits for the next message on its channel
//! or for [`Node::poll_timeout`](weir_core::Node::poll_timeout), feeds the
//! input (or `handle_timeout`), and then drains every output:
//!
//! - `Send` / `SendMany` / `Ping` / `Close` go into the connections'
//!   [`queue::OutQueue`]s, which wake their writers; a frame is encoded once
//!   and the same encoded bytes go to every connection of a `SendMany`; a
//!   push that overflows is fed back at once as `Input::SlowConsumer` (the
//!   core then closes with 4008);
//! - `Store` is applied to the model synchronously; its reply, and every
//!   published notice on a topic this node subscribed to, are fed back before
//!   the next channel message;
//! - `StartGenerator` / `AbortGenerator` spawn and abort generator tasks;
//! - `HttpResponse` answers the waiting request; `Released` drops the
//!   connection's socket; `Event` becomes metrics and log lines.
//!
//! Each WebSocket has exactly one writer task, the only code that writes to
//! its socket, fed by its bounded queue; frames of one connection are never
//! interleaved. Its reader task turns text frames into `Input::Frame`, pongs
//! into `Input::Activity`, an oversized frame into `Input::FrameTooLarge` and
//! the end of the socket into `Input::Disconnected`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

mod auth;
mod driver;
mod generator;
mod http;
mod io;
mod mailbox;
mod metrics;
pub mod openai;
mod query;
pub mod queue;
mod redis_store;
mod rt;
mod server;
mod sync;
mod ws;

pub use rt::Runtime;

/// Everything a [`Server`] needs.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The address to listen on (port 0: any free port, see [`Server::local_addr`]).
    pub listen: SocketAddr,
    /// The node's settings: node id, limits, timers, heartbeat, idle timeout…
    pub node: weir_core::Config,
    /// The store's settings (both backends); its stream and presence timers
    /// must equal the node's ([`Server::bind`] refuses a mismatch).
    pub store: weir_core::store::StoreConfig,
    /// Where the store lives: in this process (default) or in Redis.
    pub store_backend: StoreBackend,
    /// How clients authenticate.
    pub auth: Auth,
    /// What produces the replies.
    pub generator: GeneratorConfig,
    /// The HTML page served at `GET /` (`None`: `/` answers 404).
    pub page: Option<String>,
    /// Capacity of each connection's outbound queue, in frames (default 256).
    pub queue_capacity: usize,
    /// The longest [`Server::run`] waits, after its shutdown signal, for
    /// connections to close and replies to settle (default 5 s).
    pub shutdown_grace: Duration,
}

impl RuntimeConfig {
    /// Default queue capacity, in frames.
    pub const DEFAULT_QUEUE_CAPACITY: usize = 256;
    /// Default shutdown grace.
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

    /// A configuration for `node` listening on `listen`, with the store's
    /// timers taken from `node`, [`Auth::None`], the default demo generator,
    /// no page, and the default queue capacity and shutdown grace.
    #[must_use]
    pub fn new(listen: SocketAddr, node: weir_core::Config) -> Self {
        let store = weir_core::store::StoreConfig {
            timers: node.timers,
            presence: node.presence,
            ..weir_core::store::StoreConfig::default()
        };
        Self {
            listen,
            node,
            store,
            store_backend: StoreBackend::Memory,
            auth: Auth::None,
            generator: GeneratorConfig::default(),
            page: None,
            queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
            shutdown_grace: Self::DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreBackend {
    /// In this process: the core's reference model (one node only).
    #[default]
    Memory,
    /// In Redis, shared by every node that names the same server and prefix.
    Redis(RedisSettings),
}

/// How to reach the Redis store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// The prefix of every key and channel (default `weir`).
    pub prefix: String,
    /// How long a conversation's history is kept after its last message
    /// (zero: forever; it is always capped at the history limit).
    pub history_retention: Duration,
    /// How long connecting or one request may take before the store counts
    /// as unreachable.
    pub timeout: Duration,
}

impl RedisSettings {
    /// Settings for `url` with the default prefix, history kept forever,
    /// and a 2 s timeout.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: weir_store_redis::DEFAULT_PREFIX.to_owned(),
            history_retention: Duration::ZERO,
            timeout: Duration::from_secs(2),
        }
    }
}

/// How clients authenticate (PROTOCOL.md, "Authentication").
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// No authentication (development): the user is the `user_id` query
    /// parameter, `anonymous` when absent. The server logs a warning.
    None,
    /// An HS256 JWT signed with `secret`, from `Authorization: Bearer …` or
    /// the `token` query parameter; `sub` is the user id and `exp` is
    /// required (no leeway). Anything else answers 401 before any upgrade.
    Token {
        /// The shared HMAC secret.
        secret: Vec<u8>,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            // Never print the secret.
            Auth::Token { secret } => f
                .debug_struct("Token")
                .field("secret", &format_args!("<{} bytes>", secret.len()))
                .finish(),
        }
    }
}

/// What produces the replies.
#[derive(Debug, Clone, PartialEq)]
pub enum GeneratorConfig {
    /// The built-in demo generator: deterministic text
    /// ([`DemoText`](weir_core::demo::DemoText) of the last user message),
    /// `chunks` chunks per reply, `rate_per_sec` chunks per second (a rate
    /// that is not a positive finite number means "as fast as possible").
    Demo {
        /// Chunks per reply.
        chunks: u32,
        /// Chunks per second.
        rate_per_sec: f64,
    },
    /// An OpenAI-compatible upstream (`POST /v1/chat/completions` with
    /// `stream: true`): one HTTP request per reply over a fresh connection,
    /// closed at once when the reply is cancelled; never retried. Errors
    /// end the reply `failed` with a reason from
    /// [`UpstreamError::reason`](openai::UpstreamError::reason). See
    /// [`openai`].
    Openai(openai::OpenAiConfig),
}

impl Default for GeneratorConfig {
    /// The demo generator: 40 chunks at 20 per second.
    fn default() -> Self {
        GeneratorConfig::Demo {
            chunks: 40,
            rate_per_sec: 20.0,
        }
    }
}

/// A bound, not yet running weir server on runtime `R`.
pub struct Server<R: Runtime> {
    listener: R::Listener,
    local_addr: SocketAddr,
    config: RuntimeConfig,
}

impl<R: Runtime> fmt::Debug for Server<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Server<R> {
    /// Binds the listening socket. Fails when the address cannot be bound, or
    /// with [`std::io::ErrorKind::InvalidInput`] when the store's timers
    /// differ from the node's (they are cluster-wide and must agree).
    pub async fn bind(config: RuntimeConfig) -> std::io::Result<Self> {
        if config.store.timers != config.node.timers
            || config.store.presence != config.node.presence
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the store's stream and presence timers must equal the node's",
            ));
        }
        let listener = R::bind(config.listen).await?;
        let local_addr = R::local_addr(&listener)?;
        if config.auth == Auth::None {
            tracing::warn!(
                "authentication is off (auth = none): anyone can act as any user_id; \
                 use token auth outside development"
            );
        }
        Ok(Server {
            listener,
            local_addr,
            config,
        })
    }

    /// The address the server listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully: stops
    /// accepting, has the core close every WebSocket with 1001 and settle the
    /// replies this node produces, waits until that is done (or
    /// [`RuntimeConfig::shutdown_grace`] has passed), lets open HTTP requests
    /// finish, and returns `Ok(())`.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        server::run::<R>(self.listener, self.local_addr, self.config, shutdown).await
    }
}

/// The size in bytes of the futures of one WebSocket's reader and writer
/// tasks on runtime `R` (each open connection holds both): for the runtime
/// crates' tests that keep them small.
#[doc(hidden)]
#[must_use]
pub fn per_connection_future_sizes<R: Runtime>() -> (usize, usize) {
    ws::future_sizes::<R>()
}
