//! # weir-runtime-smol
//!
//! Drives the sans-IO [`weir_core`] on smol: the same server as
//! `weir-runtime-tokio` (HTTP with hyper 1.x, WebSocket with
//! async-tungstenite, the in-memory or the Redis store, the demo and openai
//! generators), because all of it is written once in `weir-runtime`. This
//! crate is only its smol glue: [`Smol`], the implementation of
//! [`weir_runtime::Runtime`] — tasks on smol's global executor
//! (`SMOL_THREADS` threads, default 1), async-io timers, async-net TCP,
//! `smol-hyper`'s futures-io adapter and timer for hyper — and
//! [`shutdown_signal`] on async-signal.
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
//! use weir_runtime_smol::{shutdown_signal, RuntimeConfig, Server};
//!
//! # fn serve() -> std::io::Result<()> {
//! let node_id = NodeId::parse("n1").expect("a valid node id");
//! let listen: SocketAddr = "127.0.0.1:8080".parse().expect("a valid address");
//! let config = RuntimeConfig::new(listen, weir_core::Config::new(node_id));
//! smol::block_on(async { Server::bind(config).await?.run(shutdown_signal()).await })
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use smol::net::{TcpListener, TcpStream};
use smol_hyper::rt::{FuturesIo, SmolTimer};

pub use weir_runtime::{
    openai, queue, Auth, GeneratorConfig, RedisSettings, Runtime, RuntimeConfig, StoreBackend,
};

/// A bound, not yet running weir server on smol.
pub type Server = weir_runtime::Server<Smol>;

/// weir's [`Runtime`] on smol: `smol::spawn`, `smol::Timer`, `smol::net`.
#[derive(Debug, Clone, Copy)]
pub enum Smol {}

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
        smol::spawn(future)
    }

    fn spawn_detached<F>(future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        smol::spawn(future).detach();
    }

    fn sleep(duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        let timer = smol::Timer::after(duration);
        async move {
            timer.await;
        }
    }

    fn timer() -> SmolTimer {
        SmolTimer::new()
    }

    async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::bind(addr).await
    }

    fn local_addr(listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(listener: &TcpListener) -> io::Result<Self::Io> {
        let (stream, _peer) = listener.accept().await?;
        // Replies stream in small frames: send each at once.
        let _ = stream.set_nodelay(true);
        Ok(FuturesIo::new(stream))
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

#[cfg(test)]
mod tests {
    /// Every open connection holds its reader and writer tasks, each as large
    /// as its future: they must stay small (the same bounds as on tokio).
    #[test]
    fn the_per_connection_futures_stay_small() {
        let (reader, writer) = weir_runtime::per_connection_future_sizes::<super::Smol>();
        assert!(reader <= 280, "reader future: {reader} bytes");
        assert!(writer <= 176, "writer future: {writer} bytes");
    }
}
