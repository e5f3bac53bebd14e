//! A real server in the test's process (feature `in-process`): what
//! [`WeirProcess`](crate::WeirProcess) is for the binary, for
//! `weir_runtime::Server` itself, configured by a [`RuntimeConfig`] rather
//! than by flags.
//!
//! The server runs on a thread of its own, on the runtime of the test
//! ([`Runtime::current`]): a multi-thread tokio runtime of two workers, as
//! `weir serve --runtime tokio` has, or `smol::block_on` with its tasks on
//! smol's global executor, as `weir serve --runtime smol` has. The smol
//! server never runs inside a tokio context (the redis crate would pick
//! tokio there). The clients run on the test's own tokio runtime, so the two
//! share only sockets.

use std::any::Any;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::panic::{self, AssertUnwindSafe};

use tokio::sync::oneshot;
use weir_core::ids::NodeId;
use weir_runtime::{GeneratorConfig, RuntimeConfig, Server};
use weir_runtime_smol::Smol;
use weir_runtime_tokio::Tokio;

use crate::{Endpoint, Runtime, T};

/// What the server's thread ends with: `run()`'s result, or its panic.
type Outcome = std::thread::Result<io::Result<()>>;

/// A config for tests: node `test-node` on 127.0.0.1:0, the in-memory
/// store, no auth, demo replies of `chunks` chunks at `rate` per second.
#[must_use]
pub fn demo_config(chunks: u32, rate: f64) -> RuntimeConfig {
    let node = weir_core::Config::new(NodeId::parse("test-node").expect("a valid node id"));
    let mut config = RuntimeConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), node);
    config.generator = GeneratorConfig::Demo {
        chunks,
        rate_per_sec: rate,
    };
    config
}

/// A running in-process server. Dropping it signals shutdown (the server's
/// thread finishes on its own); [`InProcess::shutdown`] also waits for
/// `run()` and returns its result.
///
/// Its clients are those of its [`Endpoint`] (`server.ws(…)`,
/// `server.http(…)`).
#[derive(Debug)]
pub struct InProcess {
    endpoint: Endpoint,
    /// Sent to, or dropped (also when a test fails): `run()`'s shutdown.
    stop: Option<oneshot::Sender<()>>,
    done: oneshot::Receiver<Outcome>,
}

impl InProcess {
    /// Binds and runs a server on the test's runtime ([`Runtime::current`]);
    /// returns once it listens (within [`T`]).
    pub async fn start(config: RuntimeConfig) -> InProcess {
        InProcess::start_on(Runtime::current(), config).await
    }

    /// [`InProcess::start`] on `runtime`.
    pub async fn start_on(runtime: Runtime, config: RuntimeConfig) -> InProcess {
        let (bound_tx, bound) = oneshot::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done) = oneshot::channel();
        let shutdown = async move {
            let _ = stop_rx.await;
        };
        std::thread::Builder::new()
            .name(format!("{} server", runtime.name()))
            .spawn(move || {
                let outcome = panic::catch_unwind(AssertUnwindSafe(|| match runtime {
                    Runtime::Tokio => tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .expect("a tokio runtime")
                        .block_on(serve::<Tokio>(config, bound_tx, shutdown)),
                    // No tokio context on this thread, nor on smol's
                    // executor's.
                    Runtime::Smol => smol::block_on(serve::<Smol>(config, bound_tx, shutdown)),
                }));
                let _ = done_tx.send(outcome);
            })
            .expect("spawn the server's thread");
        match tokio::time::timeout(T, bound).await {
            Ok(Ok(addr)) => InProcess {
                endpoint: Endpoint::new(addr),
                stop: Some(stop),
                done,
            },
            Ok(Err(_)) => panic!("the server did not bind: {:?}", outcome(done).await),
            Err(_) => panic!("the server did not bind within {T:?}"),
        }
    }

    /// Signals shutdown (`run()`'s shutdown future completes).
    pub fn signal_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// `run()`'s result, within [`T`] (after
    /// [`signal_shutdown`](Self::signal_shutdown)); panics if `run()`
    /// panicked.
    pub async fn stopped(self) -> io::Result<()> {
        outcome(self.done).await
    }

    /// Signals shutdown and returns `run()`'s result, within [`T`].
    pub async fn shutdown(mut self) -> io::Result<()> {
        self.signal_shutdown();
        self.stopped().await
    }
}

/// The clients of a server are those of its address.
impl Deref for InProcess {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

/// `Server::bind`, its address to `bound`, then `run(shutdown)`.
async fn serve<R: weir_runtime::Runtime>(
    config: RuntimeConfig,
    bound: oneshot::Sender<SocketAddr>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let server = Server::<R>::bind(config).await?;
    let _ = bound.send(server.local_addr());
    server.run(shutdown).await
}

/// What the server's thread ended with, within [`T`]; panics if `run()` did.
async fn outcome(done: oneshot::Receiver<Outcome>) -> io::Result<()> {
    match tokio::time::timeout(T, done).await {
        Ok(Ok(Ok(result))) => result,
        Ok(Ok(Err(panic))) => panic!("run() panicked: {}", panic_message(&*panic)),
        Ok(Err(_)) => panic!("the server's thread ended without a word"),
        Err(_) => panic!("run() did not return within {T:?}"),
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}
