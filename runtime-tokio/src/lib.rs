//! # weir-runtime-tokio
//!
//! Drives the sans-IO [`weir_core`] on tokio: it accepts TCP connections,
//! serves HTTP with hyper 1.x and WebSocket with async-tungstenite (upgraded
//! through hyper), runs the node's timers, the in-memory or the Redis store
//! and the generators. It **holds no policy**: every decision is the core's.
//!
//! All of that is written once, runtime-neutral, in `weir-runtime`; this
//! crate is its tokio glue: [`Tokio`], the implementation of
//! [`weir_runtime::Runtime`] (tasks, sleeps, TCP, hyper-util's `TokioIo` and
//! `TokioTimer`), [`block_on`], which builds the tokio runtime a server
//! runs on, and [`shutdown_signal`]. The redis crate runs on tokio here
//! (`tokio-comp`), as it does inside any tokio context.
//!
//! ## Use
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use weir_core::ids::NodeId;
//! use weir_runtime_tokio::{block_on, shutdown_signal, RuntimeConfig, Server};
//!
//! # fn serve() -> std::io::Result<()> {
//! let node_id = NodeId::parse("n1").expect("a valid node id");
//! let listen: SocketAddr = "127.0.0.1:8080".parse().expect("a valid address");
//! let config = RuntimeConfig::new(listen, weir_core::Config::new(node_id));
//! // One worker thread per core.
//! block_on(None, async { Server::bind(config).await?.run(shutdown_signal()).await })?
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

pub use weir_runtime::{
    openai, Auth, AuthReloader, GeneratorConfig, RedisSettings, Runtime, RuntimeConfig,
    StoreBackend,
};

/// A bound, not yet running weir server on tokio (inside a tokio runtime).
pub type Server = weir_runtime::Server<Tokio>;

/// weir's [`Runtime`] on tokio: `tokio::spawn`, `tokio::time` (sleeps and the
/// clock), `tokio::net`.
/// Its functions must be called inside a tokio runtime.
#[derive(Debug, Clone, Copy)]
pub enum Tokio {}

/// A tokio task that is aborted when dropped.
#[derive(Debug)]
pub struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Future for Task {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Ended: by itself, aborted or panicked.
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl Runtime for Tokio {
    type Listener = TcpListener;
    type Io = TokioIo<TcpStream>;
    type Timer = TokioTimer;
    type Task = Task;

    fn spawn<F>(future: F) -> Task
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Task(tokio::spawn(future))
    }

    fn spawn_detached<F>(future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(tokio::spawn(future));
    }

    fn sleep(duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        tokio::time::sleep(duration)
    }

    /// tokio's clock, which its sleeps and timer measure against (and which
    /// a paused test runtime moves).
    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn timer() -> TokioTimer {
        TokioTimer::new()
    }

    async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::from_std(weir_runtime::listen_std(addr)?)
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
        Ok((TokioIo::new(stream), peer))
    }

    async fn connect(host: &str, port: u16) -> io::Result<Self::Io> {
        let stream = TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        Ok(TokioIo::new(stream))
    }
}

/// Resolves when the process receives SIGINT or SIGTERM (on other platforms:
/// Ctrl-C). If a handler cannot be installed, that signal is not waited for
/// (and an error is logged); if none can, this never resolves.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let wait = |kind: SignalKind, name: &'static str| async move {
            match signal(kind) {
                Ok(mut s) => {
                    s.recv().await;
                    tracing::info!("received {name}");
                }
                Err(e) => {
                    tracing::error!("cannot listen for {name}: {e}");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            () = wait(SignalKind::interrupt(), "SIGINT") => {}
            () = wait(SignalKind::terminate(), "SIGTERM") => {}
        }
    }
    #[cfg(not(unix))]
    {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    }
}

/// Calls `on_signal` each time the process receives SIGHUP (the binary
/// reloads its token auth keys then); never resolves. While it runs, SIGHUP
/// no longer ends the process. If the handler cannot be installed (or on
/// other platforms), this logs an error (on unix) and waits forever.
pub async fn hangup_signals(mut on_signal: impl FnMut() + Send) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut s) => {
                while s.recv().await.is_some() {
                    tracing::info!("received SIGHUP");
                    on_signal();
                }
            }
            Err(e) => tracing::error!("cannot listen for SIGHUP: {e}"),
        }
    }
    #[cfg(not(unix))]
    let _ = &mut on_signal;
    std::future::pending::<()>().await;
}

/// Runs `future` to completion on a new multi-threaded tokio runtime, with
/// I/O and timers enabled, whose `worker_threads` threads (one per core when
/// `None`) are named `weir-worker`. The runtime shuts down when this
/// returns.
///
/// # Errors
///
/// When the runtime cannot be built (its threads cannot be started).
pub fn block_on<F: Future>(
    worker_threads: Option<NonZeroUsize>,
    future: F,
) -> io::Result<F::Output> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = worker_threads {
        builder.worker_threads(threads.get());
    }
    let runtime = builder.enable_all().thread_name("weir-worker").build()?;
    Ok(runtime.block_on(future))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::num::NonZeroUsize;

    use weir_runtime::Runtime as _;

    /// `block_on` runs spawned tasks on its own `weir-worker` threads, as
    /// many as asked for.
    #[test]
    fn block_on_runs_tasks_on_the_requested_worker_threads() {
        let threads = super::block_on(Some(NonZeroUsize::MIN), async {
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    tokio::spawn(async {
                        tokio::task::yield_now().await;
                        let t = std::thread::current();
                        (t.id(), t.name().map(str::to_owned))
                    })
                })
                .collect();
            let mut seen = Vec::new();
            for task in tasks {
                seen.push(task.await.expect("the task ends"));
            }
            seen
        })
        .expect("a tokio runtime");
        assert!(
            threads
                .iter()
                .all(|(_, name)| name.as_deref() == Some("weir-worker")),
            "{threads:?}"
        );
        let ids: HashSet<_> = threads.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids.len(), 1, "{threads:?}");
    }

    /// A panicking task ends instead of panicking whoever awaits it (as on
    /// smol), and dropping a task aborts it.
    #[test]
    fn a_panic_stays_in_its_task_and_dropping_aborts() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        rt.block_on(async {
            super::Tokio::spawn(async { panic!("a task's own panic") }).await;
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = super::Tokio::spawn(async move {
                std::future::pending::<()>().await;
                drop(tx);
            });
            drop(task);
            // The aborted task dropped its future, and with it `tx`.
            let closed = tokio::time::timeout(std::time::Duration::from_secs(10), rx).await;
            assert!(matches!(closed, Ok(Err(_))), "{closed:?}");
        });
    }

    /// Every open connection holds its reader and writer tasks, each as large
    /// as its future: they must stay small. A tokio task cell is its future
    /// plus ~104 bytes, rounded up to 128; today the reader's future is 224
    /// bytes (a 384-byte cell; it was 1152 before its setup was boxed and its
    /// rare waits moved out of it; 216 before it owned the writer's task) and
    /// the writer's 144 (a 256-byte cell up to 152). The bounds leave some
    /// room for other compiler versions.
    #[test]
    fn the_per_connection_futures_stay_small() {
        let (reader, writer) = weir_runtime::per_connection_future_sizes::<super::Tokio>();
        assert!(reader <= 280, "reader future: {reader} bytes");
        assert!(writer <= 176, "writer future: {writer} bytes");
    }
}
