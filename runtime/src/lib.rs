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
//! | `config` | [`RuntimeConfig`] and its parts ([`Auth`], [`GeneratorConfig`], [`StoreBackend`]): the configuration's one vocabulary, each default defined once |
//! | `driver` | the one task that owns the [`Node`](weir_core::Node) and the store |
//! | `mailbox` | what the other tasks send the driver, and its side of a WebSocket |
//! | `server` | the accept loop and the graceful shutdown |
//! | `http` | the hyper service: routing, bodies, the WebSocket upgrade, `/healthz`, `/readyz`, `/metrics`, the page |
//! | `ws` | per WebSocket: one reader task and exactly one writer task |
//! | `queue` | the per-connection bounded outbound queue (merges chunk frames when full); its loom models include the file by path (`verification/tests/loom_queue.rs`) |
//! | `auth` | `Auth::None` (user from the query) and JWTs: claim rules, keys (HS256 secret, PEM, JWKS) and their reload |
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
//!   `OutQueue`s (`queue.rs`), which wake their writers; a frame is encoded once
//!   and the same encoded bytes go to every connection of a `SendMany`; a
//!   push that overflows is fed back at once as `Input::SlowConsumer` (the
//!   core then closes with 4008), and one that takes a queue to its
//!   high-water mark as `Input::WriteBlocked` (the core then holds the
//!   connection's chunks back in its views until the writer, having drained
//!   the queue, sends `Input::Writable`);
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
use std::sync::Arc;

mod ai_sdk;
mod answer;
mod auth;
mod client_ip;
mod compat;
mod config;
mod driver;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod generator;
mod http;
mod io;
mod mailbox;
mod metrics;
pub mod openai;
mod query;
pub(crate) mod queue;
mod redis_pubsub;
mod redis_store;
mod rt;
mod server;
mod sync;
mod ws;

pub use client_ip::{client_ip, BadCidr, Cidr};
pub use config::{
    Auth, CompatConfig, GeneratorConfig, RedisSettings, RuntimeConfig, StoreBackend, TokenAuth,
    TokenKey,
};
pub use rt::{listen_std, Runtime, LISTEN_BACKLOG, SEND_BUFFER_BYTES};

/// A bound, not yet running weir server on runtime `R`.
pub struct Server<R: Runtime> {
    listener: R::Listener,
    local_addr: SocketAddr,
    config: RuntimeConfig,
    auth: Arc<auth::Authenticator>,
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
    /// differ from the node's (they are cluster-wide and must agree) or
    /// when the token auth's key file cannot be read or holds no usable key.
    pub async fn bind(config: RuntimeConfig) -> std::io::Result<Self> {
        if config.store.timers != config.node.timers
            || config.store.presence != config.node.presence
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the store's stream and presence timers must equal the node's",
            ));
        }
        let auth = auth::Authenticator::new(&config.auth).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("token auth keys: {e}"),
            )
        })?;
        let listener = R::bind(config.listen).await?;
        let local_addr = R::local_addr(&listener)?;
        if let Auth::Token(t) = &config.auth {
            if t.audiences.is_empty() && !matches!(t.key, TokenKey::Secret(_)) {
                tracing::warn!(
                    "token auth with public keys but no audience: a token these keys signed for \
                     any other application is accepted too; configure the audience (--jwt-audience)"
                );
            }
        }
        if config.auth == Auth::None {
            tracing::warn!(
                "authentication is off (auth = none): anyone can act as any user_id; \
                 use token auth outside development"
            );
        }
        Ok(Self {
            listener,
            local_addr,
            config,
            auth: Arc::new(auth),
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
        server::run::<R>(
            self.listener,
            self.local_addr,
            self.config,
            self.auth,
            shutdown,
        )
        .await
    }

    /// A handle that reloads the token auth's key files (the binary calls it
    /// on SIGHUP); it keeps working while the server runs.
    #[must_use]
    pub fn auth_reloader(&self) -> AuthReloader {
        AuthReloader(self.auth.clone())
    }
}

/// Reloads the keys of token auth ([`Server::auth_reloader`]).
#[derive(Clone)]
pub struct AuthReloader(Arc<auth::Authenticator>);

impl fmt::Debug for AuthReloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AuthReloader").field(&self.0).finish()
    }
}

impl AuthReloader {
    /// Reads the PEM or JWKS file again and puts its keys in force; when that
    /// fails the old keys stay. Logs the outcome (info, or error with the
    /// reason) and returns how many keys are in force, or the reason.
    /// Nothing to do without token auth or with an HS256 secret.
    pub fn reload(&self) -> Result<usize, String> {
        let result = self.0.reload();
        match &result {
            Ok(0) => tracing::info!("no token auth keys to reload (auth is none)"),
            Ok(n) => tracing::info!(keys = n, "token auth keys reloaded"),
            Err(e) => tracing::error!("token auth keys not reloaded, the old keys stay: {e}"),
        }
        result
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
