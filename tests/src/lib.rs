//! weir-tests: the one harness of weir's end-to-end tests, in process and
//! black box.
//!
//! Two suites use it, each scenario in one of them:
//!
//! - in process, `runtime/tests/*.rs` (with the feature `in-process`): the
//!   protocol, the HTTP API, auth, fan-out, resume, slow readers, the
//!   `openai` generator against a fake upstream — a real server
//!   (`InProcess`) on a thread of the test, reached over loopback with real
//!   clients; no binary needed, and the config is set directly;
//! - black box, `tests/tests/`, against the real `weir` process
//!   ([`WeirProcess`]), where the process matters: `e2e.rs` (signals, exit
//!   codes, flags, the page and probes of the binary), `cluster.rs` (real
//!   nodes over a real Redis), `browser.rs` and `ai_sdk_app.rs` (the web page
//!   and the `useChat` example app in a real headless Chromium, driven by
//!   `tests/browser/*.mjs`; [`browser`] finds `node` and Chromium and runs
//!   them with a time bound), `llm.rs` (the `openai`
//!   generator in front of a real model server, [`llm::LlmServer`]),
//!   `storm.rs` (a node stopped or killed under many clients, each resuming
//!   on another node exactly once; its clients, [`storm`], are also those
//!   of the `cluster_bench storm` benchmark).
//!
//! # What it offers
//!
//! - [`Runtime`] and [`both_runtimes!`]: a suite is written once and runs on
//!   both runtimes: each test is an `async fn` taking no argument, and
//!   `both_runtimes! { name, … }` makes it two tests, `tokio::name` and
//!   `smol::name`, whose servers ([`WeirProcess::start`],
//!   `InProcess::start`) run on tokio or on smol. (The clients stay on
//!   tokio: they share only sockets with the server.)
//! - [`Endpoint`]: what a test does with a server, wherever it runs: a real
//!   WebSocket client ([`Client`]) that reads protocol frames as JSON
//!   ([`Frame`]), so the names in the assertions are the names of
//!   `PROTOCOL.md`, not those of a Rust type; [`http_request`], a minimal
//!   HTTP/1.1 client; [`Metrics`], `/metrics` parsed. [`WeirProcess`] and
//!   `InProcess` deref to theirs.
//! - [`WeirProcess`]: starts `target/debug/weir serve` (or `$WEIR_BIN`) on a
//!   free loopback port with the given flags, its output captured in a temp
//!   log file (printed when a test fails), waits until `/healthz` answers, and
//!   kills the process when dropped, so no test leaves an orphan behind.
//! - `InProcess` (feature `in-process`): `weir_runtime::Server` bound to
//!   127.0.0.1:0 on a thread of its own, on the test's runtime, until it is
//!   shut down or dropped.
//!
//! Every wait is bounded (by [`T`] unless said otherwise); every address is on
//! loopback.
//!
//! The black-box suites need the binary built first: `cargo build -p
//! weir-server --bin weir` (`./scripts/test.sh` does it before `cargo
//! test`). A missing or stale binary fails the test with a message saying
//! so.
//!
//! # A new in-process test file
//!
//! In `runtime/tests/NAME.rs` (weir-runtime has this crate as a
//! dev-dependency, with `in-process`):
//!
//! ```ignore
//! use weir_tests::{demo_config, InProcess, json};
//!
//! weir_tests::both_runtimes! { a_chat_streams_to_the_end }
//!
//! async fn a_chat_streams_to_the_end() {
//!     let server = InProcess::start(demo_config(10, 1000.0)).await;
//!     let mut ws = server.ws("session_id=s&user_id=u").await;
//!     ws.chat("hi", "r1").await;
//!     let (_, end) = ws.until_end().await;
//!     assert_eq!(end["status"], "completed");
//!     server.shutdown().await.expect("clean shutdown");
//! }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod browser;
pub mod llm;
pub mod storm;

mod ai_sdk;
mod client;
mod compat;
mod endpoint;
mod http;
#[cfg(feature = "in-process")]
mod in_process;
mod process;
mod redis_cluster;
mod redis_server;
mod shared_redis;

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::WebSocketStream;
use tokio::net::TcpStream;

pub use ai_sdk::{ai_sdk_chat_body, ui_user_message, AiSdkSocket, SseEvent, SseStream};
pub use async_tungstenite::tungstenite;
pub use client::{
    chunks, chunks_of, contiguous, demo_prefix, only, position, refusal_status, Chunk, Client,
    Frame,
};
pub use compat::{refusal_status_of, CompatClient};
pub use endpoint::Endpoint;
pub use http::{http_request, http_request_within, read_http_request, HttpResponse, Metrics};
#[cfg(feature = "in-process")]
pub use in_process::{demo_config, InProcess};
pub use process::{target_dir, weir_bin, workspace_dir, Signal, WeirProcess, NO_CAPS};
pub use redis_cluster::RedisCluster;
pub use redis_server::RedisServer;
pub use serde_json::{json, Value};
pub use shared_redis::{RedisKind, SharedRedis, StoreUrl};
pub use weir_core::demo::DemoText;

/// The longest any single wait in a test may take.
pub const T: Duration = Duration::from_secs(10);

/// The smallest receive buffer a test client that stops reading should ask
/// for ([`Endpoint::connect_small_buffer`] says why not less).
pub const SMALL_RCVBUF: u32 = 16 * 1024;

/// A WebSocket client stream over loopback TCP.
pub type Ws = WebSocketStream<TokioAdapter<TcpStream>>;

/// The async runtime of a server under test: `weir serve --runtime`, or the
/// runtime an in-process server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `--runtime tokio`.
    Tokio,
    /// `--runtime smol`.
    Smol,
}

impl Runtime {
    /// Both, in the order their tests are named.
    pub const ALL: [Self; 2] = [Self::Tokio, Self::Smol];

    /// The value of `--runtime`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Tokio => "tokio",
            Self::Smol => "smol",
        }
    }

    /// The runtime the servers started on this thread run on
    /// ([`WeirProcess::start`], `InProcess::start`): the one that
    /// [`Runtime::use_on_this_thread`] set (which [`both_runtimes!`] does
    /// for each test), else `$WEIR_TEST_RUNTIME` (`tokio` or `smol`), else
    /// tokio.
    #[must_use]
    pub fn current() -> Self {
        CURRENT_RUNTIME.with(Cell::get).unwrap_or_else(|| {
            match std::env::var("WEIR_TEST_RUNTIME").as_deref() {
                Ok("smol") => Self::Smol,
                _ => Self::Tokio,
            }
        })
    }

    /// Makes this the runtime of every server started on this thread (a `#[tokio::test]` runs its body on its own thread).
    pub fn use_on_this_thread(self) {
        CURRENT_RUNTIME.with(|c| c.set(Some(self)));
    }
}

thread_local! {
    static CURRENT_RUNTIME: Cell<Option<Runtime>> = const { Cell::new(None) };
}

/// Makes each named `async fn` of the calling module (a test body, taking
/// no arguments) two tests: `tokio::NAME` and `smol::NAME`, each a
/// `#[tokio::test]` (the clients' runtime) that sets [`Runtime`] for the
/// servers it starts (in process or not) and runs the body.
///
/// Attributes written before a name (`#[ignore = "…"]`) go on both of its
/// tests.
///
/// Inside a test file that uses it, the `tokio` crate must be named
/// `::tokio` (the module `tokio` shadows it).
#[macro_export]
macro_rules! both_runtimes {
    ($($(#[$attr:meta])* $name:ident),+ $(,)?) => {
        mod tokio {
            $(
                #[::tokio::test]
                $(#[$attr])*
                async fn $name() {
                    $crate::Runtime::Tokio.use_on_this_thread();
                    super::$name().await;
                }
            )+
        }
        mod smol {
            $(
                #[::tokio::test]
                $(#[$attr])*
                async fn $name() {
                    $crate::Runtime::Smol.use_on_this_thread();
                    super::$name().await;
                }
            )+
        }
    };
}

/// [`both_runtimes!`] on one `redis-server`, and again on a Redis Cluster:
/// each body named after `everywhere:` becomes four tests, `tokio::NAME`
/// and `smol::NAME` (one Redis) and `cluster::tokio::NAME` and
/// `cluster::smol::NAME`, each setting [`Runtime`] and [`RedisKind`] for
/// the servers it starts ([`SharedRedis::start`]); a body named after
/// `one_redis_only:` becomes the first two.
#[macro_export]
macro_rules! runtimes_and_redis {
    (everywhere: $($name:ident),+ ; one_redis_only: $($one:ident),* $(,)?) => {
        $crate::both_runtimes! { $($name,)+ $($one),* }
        mod cluster {
            mod tokio {
                $(
                    #[::tokio::test]
                    async fn $name() {
                        $crate::Runtime::Tokio.use_on_this_thread();
                        $crate::RedisKind::Cluster.use_on_this_thread();
                        super::super::$name().await;
                    }
                )+
            }
            mod smol {
                $(
                    #[::tokio::test]
                    async fn $name() {
                        $crate::Runtime::Smol.use_on_this_thread();
                        $crate::RedisKind::Cluster.use_on_this_thread();
                        super::super::$name().await;
                    }
                )+
            }
        }
    };
}

static NEXT_LOG: AtomicU64 = AtomicU64::new(0);

/// A new log file in the temp dir, `weir-KIND-PID-N-NANOS.log`, open for
/// appending.
pub(crate) fn temp_log(kind: &str) -> (PathBuf, File) {
    let path = std::env::temp_dir().join(format!(
        "weir-{kind}-{}-{}-{}.log",
        std::process::id(),
        NEXT_LOG.fetch_add(1, Ordering::Relaxed),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("create log file {}: {e}", path.display()));
    (path, file)
}

// ---------------------------------------------------------------------------
// Waits and clocks
// ---------------------------------------------------------------------------

/// Polls `check` every 10 ms until it holds, at most [`T`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + T;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {T:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Seconds since the Unix epoch.
#[must_use]
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}
