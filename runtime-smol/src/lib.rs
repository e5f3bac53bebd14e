//! # weir-runtime-smol
//!
//! Drives the sans-IO [`weir_core`] on smol: the same server as
//! `weir-runtime-tokio` (HTTP with hyper 1.x, WebSocket with
//! async-tungstenite, the in-memory or the Redis store, the demo and openai
//! generators), because all of it is written once in `weir-runtime`. This
//! crate is only its smol glue: [`Smol`], the implementation of
//! [`weir_runtime::Runtime`] — tasks on a multi-threaded
//! [`smol::Executor`] of this crate (one thread per core unless
//! [`set_worker_threads`] says otherwise, like tokio's multi-threaded
//! runtime), async-io timers, async-net TCP, `smol-hyper`'s futures-io adapter
//! and timer for hyper — [`block_on`], which runs a server's future while
//! those threads run its tasks, and [`shutdown_signal`] on async-signal.
//!
//! It starts no tokio runtime. The redis crate is built with `smol-comp` here
//! and runs its connections on smol **unless it finds a tokio context**, so
//! a smol server must not be run from inside one (nor its tests).
//!
//! ## Use
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use weir_core::ids::NodeId;
//! use weir_runtime_smol::{block_on, shutdown_signal, RuntimeConfig, Server};
//!
//! # fn serve() -> std::io::Result<()> {
//! let node_id = NodeId::parse("n1").expect("a valid node id");
//! let listen: SocketAddr = "127.0.0.1:8080".parse().expect("a valid address");
//! let config = RuntimeConfig::new(listen, weir_core::Config::new(node_id));
//! // One executor thread per core.
//! block_on(None, async { Server::bind(config).await?.run(shutdown_signal()).await })
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::panic::AssertUnwindSafe;
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use smol::future::FutureExt as _;
use smol::net::{TcpListener, TcpStream};
use smol::Executor;
use smol_hyper::rt::{FuturesIo, SmolTimer};

pub use weir_runtime::{
    openai, Auth, AuthReloader, GeneratorConfig, RedisSettings, Runtime, RuntimeConfig,
    StoreBackend,
};

/// A bound, not yet running weir server on smol.
pub type Server = weir_runtime::Server<Smol>;

/// weir's [`Runtime`] on smol: tasks on this crate's executor threads,
/// `smol::Timer`, `smol::net`.
#[derive(Debug, Clone, Copy)]
pub enum Smol {}

/// The executor every [`Smol`] task runs on, driven by
/// [`worker_threads`] threads of its own (started at the first spawn). Unlike
/// smol's global executor (one thread unless `SMOL_THREADS` says otherwise),
/// it uses every core by default, as tokio's multi-threaded runtime does.
static EXECUTOR: Executor<'static> = Executor::new();

/// The number of executor threads, fixed at the first spawn.
static WORKER_THREADS: OnceLock<NonZeroUsize> = OnceLock::new();

/// Sets how many threads run the tasks of every smol server in this process.
/// It must be called before the first server is bound (before the first
/// task is spawned); once the number is fixed, this returns it as the error.
///
/// Without a call the number is `SMOL_THREADS` when that is set to a
/// positive number, else one thread per core
/// ([`std::thread::available_parallelism`]).
///
/// # Errors
///
/// The number already in force, when it was fixed before this call.
pub fn set_worker_threads(threads: NonZeroUsize) -> Result<(), NonZeroUsize> {
    WORKER_THREADS.set(threads).map_err(|_| worker_threads())
}

/// The number of threads that run (or will run) the executor.
#[must_use]
pub fn worker_threads() -> NonZeroUsize {
    *WORKER_THREADS.get_or_init(|| {
        std::env::var("SMOL_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .or_else(|| std::thread::available_parallelism().ok())
            .unwrap_or(NonZeroUsize::MIN)
    })
}

/// Runs `future` to completion on this thread while the executor's threads
/// run the tasks it spawns. `worker_threads` sets their number (see
/// [`set_worker_threads`]; `None`: `SMOL_THREADS`, else one per core); when
/// the number was already fixed in this process, a warning is logged and it
/// stays. No tokio runtime is started.
pub fn block_on<F: Future>(worker_threads: Option<NonZeroUsize>, future: F) -> F::Output {
    if let Some(threads) = worker_threads {
        if let Err(fixed) = set_worker_threads(threads) {
            tracing::warn!("the smol executor already runs {fixed} threads");
        }
    }
    smol::block_on(future)
}

/// The executor, its threads started on the first call.
fn executor() -> &'static Executor<'static> {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let threads = worker_threads().get();
        for i in 0..threads {
            let started = std::thread::Builder::new()
                .name(format!("weir-smol-{i}"))
                .spawn(|| loop {
                    // A task's panic is caught in its own future (see
                    // `spawn`); this only guards the thread itself.
                    let _ = std::panic::catch_unwind(|| {
                        smol::block_on(EXECUTOR.run(std::future::pending::<()>()));
                    });
                });
            if let Err(e) = started {
                tracing::error!("cannot start executor thread {i} of {threads}: {e}");
                assert!(i > 0, "no executor thread could be started: {e}");
            }
        }
    });
    &EXECUTOR
}

/// `future` as a task that ends, not panics, when `future` panics (the panic
/// message has been printed by the panic hook): one failing connection must
/// not take down whoever awaits it, the same as a tokio task's `JoinError`.
async fn isolated<F>(future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let _ = AssertUnwindSafe(future).catch_unwind().await;
}

impl Runtime for Smol {
    type Listener = TcpListener;
    type Io = FuturesIo<TcpStream>;
    type Timer = SmolTimer;
    /// smol's task: cancelled when dropped.
    type Task = smol::Task<()>;

    fn spawn<F>(future: F) -> smol::Task<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        executor().spawn(isolated(future))
    }

    fn spawn_detached<F>(future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        executor().spawn(isolated(future)).detach();
    }

    fn sleep(duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        let timer = smol::Timer::after(duration);
        async move {
            timer.await;
        }
    }

    /// The clock async-io's timers measure against.
    fn now() -> Instant {
        Instant::now()
    }

    fn timer() -> SmolTimer {
        SmolTimer::new()
    }

    async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::try_from(weir_runtime::listen_std(addr)?)
    }

    fn local_addr(listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(listener: &TcpListener) -> io::Result<(Self::Io, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        // Replies stream in small frames: send each at once.
        let _ = stream.set_nodelay(true);
        let _ =
            socket2::SockRef::from(&stream).set_send_buffer_size(weir_runtime::SEND_BUFFER_BYTES);
        Ok((FuturesIo::new(stream), peer))
    }

    async fn connect(host: &str, port: u16) -> io::Result<Self::Io> {
        let stream = TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        Ok(FuturesIo::new(stream))
    }
}

/// Resolves when the process receives SIGINT or SIGTERM. If the handlers
/// cannot be installed, this logs an error and never resolves.
pub async fn shutdown_signal() {
    use async_signal::{Signal, Signals};
    use smol::stream::StreamExt;
    match Signals::new([Signal::Int, Signal::Term]) {
        Ok(mut signals) => {
            if let Some(Ok(signal)) = signals.next().await {
                tracing::info!("received {signal:?}");
                return;
            }
            std::future::pending::<()>().await;
        }
        Err(e) => {
            tracing::error!("cannot listen for SIGINT and SIGTERM: {e}");
            std::future::pending::<()>().await;
        }
    }
}

/// Calls `on_signal` each time the process receives SIGHUP (the binary
/// reloads its token auth keys then); never resolves. While it runs, SIGHUP
/// no longer ends the process. If the handler cannot be installed, this logs
/// an error and waits forever.
pub async fn hangup_signals(mut on_signal: impl FnMut() + Send) {
    use async_signal::{Signal, Signals};
    use smol::stream::StreamExt;
    match Signals::new([Signal::Hup]) {
        Ok(mut signals) => {
            while let Some(signal) = signals.next().await {
                if signal.is_ok() {
                    tracing::info!("received SIGHUP");
                    on_signal();
                }
            }
        }
        Err(e) => tracing::error!("cannot listen for SIGHUP: {e}"),
    }
    std::future::pending::<()>().await;
}

#[cfg(test)]
mod tests {
    use weir_runtime::Runtime as _;

    /// Tasks run on the executor's own threads, as many as `block_on` was
    /// asked for, and a panicking task ends instead of panicking whoever
    /// awaits it. (The only test of this binary that spawns: the first
    /// spawn fixes the number of threads.)
    #[test]
    fn tasks_run_on_the_worker_threads_and_a_panic_stays_in_its_task() {
        let asked = std::num::NonZeroUsize::new(3).expect("3 is not zero");
        let threads = asked.get();
        let names = super::block_on(Some(asked), async {
            let (tx, rx) = smol::channel::unbounded();
            let tasks: Vec<_> = (0..threads * 4)
                .map(|_| {
                    let tx = tx.clone();
                    super::Smol::spawn(async move {
                        let name = std::thread::current().name().map(str::to_owned);
                        let _ = tx.send(name).await;
                    })
                })
                .collect();
            for task in tasks {
                task.await;
            }
            drop(tx);
            let mut names = Vec::new();
            while let Ok(name) = rx.recv().await {
                names.push(name.unwrap_or_default());
            }
            super::Smol::spawn(async { panic!("a task's own panic") }).await;
            names
        });
        assert_eq!(super::worker_threads(), asked, "block_on set the number");
        assert_eq!(names.len(), threads * 4);
        assert!(
            names.iter().all(|n| n.starts_with("weir-smol-")),
            "{names:?}"
        );
        // The number is fixed once tasks ran: block_on keeps it.
        assert_eq!(
            super::set_worker_threads(std::num::NonZeroUsize::MIN),
            Err(asked)
        );
        super::block_on(Some(std::num::NonZeroUsize::MIN), async {});
        assert_eq!(super::worker_threads(), asked);
    }

    /// Every open connection holds its reader and writer tasks, each as large
    /// as its future: they must stay small (the same bounds as on tokio).
    #[test]
    fn the_per_connection_futures_stay_small() {
        let (reader, writer) = weir_runtime::per_connection_future_sizes::<super::Smol>();
        assert!(reader <= 280, "reader future: {reader} bytes");
        assert!(writer <= 176, "writer future: {writer} bytes");
    }
}
