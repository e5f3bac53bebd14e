//! Helpers for the runtime's tests: a server on 127.0.0.1:0 on either
//! runtime, a real WebSocket client (async-tungstenite), a minimal HTTP/1.1
//! client. Every wait is bounded.
//!
//! Each test is an `async fn NAME(rt: Rt)`; [`both_runtimes!`] makes it two
//! tests, `tokio::NAME` and `smol::NAME`. The server runs on a thread of its
//! own, on the runtime the test names ([`start`]); the clients run on the
//! test's own tokio runtime, so the two share only sockets. The smol server
//! never runs inside a tokio context (the redis crate would pick tokio
//! there).
#![allow(dead_code)]

use std::any::Any;
use std::io;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};

use async_tungstenite::tokio::{client_async, TokioAdapter};
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_channel::oneshot;
use futures_util::StreamExt;
use tokio::net::{TcpSocket, TcpStream};
use weir_core::ids::NodeId;
use weir_core::wire::{decode_server_frame, Chunk, End, ServerFrame};
use weir_runtime::{GeneratorConfig, Runtime, RuntimeConfig, Server};
use weir_runtime_smol::Smol;
use weir_runtime_tokio::Tokio;

pub(crate) type Ws = WebSocketStream<TokioAdapter<TcpStream>>;

/// The runtime a test's server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rt {
    /// A multi-thread tokio runtime of its own (two workers), as `weir serve
    /// --runtime tokio` has.
    Tokio,
    /// `smol::block_on` on a thread of its own, its tasks on smol's global
    /// executor, as `weir serve --runtime smol` has.
    Smol,
}

/// Makes each named test body of the calling file (`async fn NAME(rt: Rt)`)
/// two tests, `tokio::NAME` and `smol::NAME`: a `#[tokio::test]` (the
/// clients' runtime) that runs the body with [`Rt::Tokio`] or [`Rt::Smol`].
/// In that file the `tokio` crate must be named `::tokio` (the module
/// `tokio` shadows it).
macro_rules! both_runtimes {
    ($($name:ident),+ $(,)?) => {
        $crate::support::both_runtimes!(@mod tokio Tokio $($name)+);
        $crate::support::both_runtimes!(@mod smol Smol $($name)+);
    };
    (@mod $module:ident $rt:ident $($name:ident)+) => {
        mod $module {
            $(
                #[::tokio::test]
                async fn $name() {
                    super::$name($crate::support::Rt::$rt).await;
                }
            )+
        }
    };
}
pub(crate) use both_runtimes;

/// What the server's thread ends with: `run()`'s result, or its panic.
type Outcome = std::thread::Result<io::Result<()>>;

/// A running server.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    /// Sent to, or dropped (also when a test fails): `run()`'s shutdown.
    stop: Option<oneshot::Sender<()>>,
    done: oneshot::Receiver<Outcome>,
}

/// A config for tests: demo replies of `chunks` chunks at `rate` per second.
pub(crate) fn config(chunks: u32, rate: f64) -> RuntimeConfig {
    let node = weir_core::Config::new(NodeId::parse("test-node").expect("valid node id"));
    let mut config = RuntimeConfig::new("127.0.0.1:0".parse().expect("valid address"), node);
    config.generator = GeneratorConfig::Demo {
        chunks,
        rate_per_sec: rate,
    };
    config
}

/// Binds and runs a server on `rt`, on a thread of its own; returns once it
/// listens (within `T`).
pub(crate) async fn start(rt: Rt, config: RuntimeConfig) -> TestServer {
    let (bound_tx, bound) = oneshot::channel();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let (done_tx, done) = oneshot::channel();
    let shutdown = async move {
        let _ = stop_rx.await;
    };
    std::thread::Builder::new()
        .name(format!("{rt:?} server"))
        .spawn(move || {
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| match rt {
                Rt::Tokio => tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a tokio runtime")
                    .block_on(serve::<Tokio>(config, bound_tx, shutdown)),
                // No tokio context on this thread, nor on smol's executor's.
                Rt::Smol => smol::block_on(serve::<Smol>(config, bound_tx, shutdown)),
            }));
            let _ = done_tx.send(outcome);
        })
        .expect("spawn the server's thread");
    match tokio::time::timeout(T, bound).await {
        Ok(Ok(addr)) => TestServer {
            addr,
            stop: Some(stop),
            done,
        },
        Ok(Err(oneshot::Canceled)) => panic!("the server did not bind: {:?}", outcome(done).await),
        Err(_) => panic!("the server did not bind within {T:?}"),
    }
}

/// `Server::bind`, its address to `bound`, then `run(shutdown)`.
async fn serve<R: Runtime>(
    config: RuntimeConfig,
    bound: oneshot::Sender<SocketAddr>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let server = Server::<R>::bind(config).await?;
    let _ = bound.send(server.local_addr());
    server.run(shutdown).await
}

/// What the server's thread ended with, within `T`; panics if `run()` did.
async fn outcome(done: oneshot::Receiver<Outcome>) -> io::Result<()> {
    match tokio::time::timeout(T, done).await {
        Ok(Ok(Ok(result))) => result,
        Ok(Ok(Err(panic))) => panic!("run() panicked: {}", panic_message(&*panic)),
        Ok(Err(oneshot::Canceled)) => panic!("the server's thread ended without a word"),
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

impl TestServer {
    /// Signals shutdown; `run` must return within `T`.
    pub(crate) fn signal_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// `run()`'s result, within `T` (after [`signal_shutdown`]); panics
    /// if `run()` panicked.
    ///
    /// [`signal_shutdown`]: Self::signal_shutdown
    pub(crate) async fn stopped(self) -> io::Result<()> {
        outcome(self.done).await
    }

    pub(crate) async fn shutdown(mut self) -> io::Result<()> {
        self.signal_shutdown();
        self.stopped().await
    }

    pub(crate) fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/v1/ws?{query}", self.addr)
    }

    /// A WebSocket to `/v1/ws?{query}`.
    pub(crate) async fn connect(&self, query: &str) -> Ws {
        self.try_connect(query).await.expect("WebSocket connects")
    }

    pub(crate) async fn try_connect(
        &self,
        query: &str,
    ) -> Result<Ws, async_tungstenite::tungstenite::Error> {
        let stream = TcpStream::connect(self.addr).await.expect("tcp connect");
        let (ws, _) = tokio::time::timeout(T, client_async(self.ws_url(query), stream))
            .await
            .expect("handshake in time")?;
        Ok(ws)
    }

    /// A WebSocket whose socket has a tiny receive buffer (a slow reader).
    pub(crate) async fn connect_small_buffer(&self, query: &str) -> Ws {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let stream = socket.connect(self.addr).await.expect("tcp connect");
        let (ws, _) = tokio::time::timeout(T, client_async(self.ws_url(query), stream))
            .await
            .expect("handshake in time")
            .expect("WebSocket connects");
        ws
    }

    /// A WebSocket with extra request headers.
    pub(crate) async fn connect_with_header(
        &self,
        query: &str,
        name: &'static str,
        value: &str,
    ) -> Result<Ws, async_tungstenite::tungstenite::Error> {
        let mut req = self.ws_url(query).into_client_request()?;
        req.headers_mut()
            .insert(name, value.parse().expect("header value"));
        let stream = TcpStream::connect(self.addr).await.expect("tcp connect");
        let (ws, _) = tokio::time::timeout(T, client_async(req, stream))
            .await
            .expect("handshake in time")?;
        Ok(ws)
    }

    pub(crate) async fn http(&self, method: &str, path: &str, body: &str) -> HttpResponse {
        http(self.addr, method, path, &[], body.as_bytes()).await
    }

    /// The value of an unlabelled metric, or of `name{labels}`.
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        let text = self.http("GET", "/metrics", "").await.body;
        text.lines()
            .find_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                (name == series).then(|| value.parse().ok()).flatten()
            })
            .unwrap_or_else(|| panic!("metric {series} in:\n{text}"))
    }
}

pub(crate) async fn send_json(ws: &mut Ws, value: serde_json::Value) {
    ws.send(Message::text(value.to_string()))
        .await
        .expect("send frame");
}

/// The next WebSocket message, within `T`.
pub(crate) async fn next_message(ws: &mut Ws) -> Option<Message> {
    tokio::time::timeout(T, ws.next())
        .await
        .expect("a message in time")
        .map(|m| m.expect("read from the WebSocket"))
}

/// The next server frame; panics on close.
pub(crate) async fn next_frame(ws: &mut Ws) -> ServerFrame {
    loop {
        match next_message(ws).await {
            Some(Message::Text(t)) => return decode_server_frame(&t).expect("a server frame"),
            Some(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

/// Frames until the server closes; returns them and the close code. Reads on
/// until the socket ends, which sends the client's answer to the close (as a
/// browser does at once).
pub(crate) async fn frames_until_close(ws: &mut Ws) -> (Vec<ServerFrame>, u16) {
    let mut frames = Vec::new();
    let code = loop {
        match next_message(ws).await {
            Some(Message::Text(t)) => frames.push(decode_server_frame(&t).expect("a server frame")),
            Some(Message::Close(Some(f))) => break u16::from(f.code),
            Some(Message::Close(None)) => break 1005,
            Some(_) => continue,
            None => panic!("the stream ended without a close frame after {frames:?}"),
        }
    };
    while let Ok(Some(Ok(_))) = tokio::time::timeout(T, ws.next()).await {}
    (frames, code)
}

/// `hello` and `history`.
pub(crate) async fn handshake(ws: &mut Ws) -> (ServerFrame, ServerFrame) {
    let hello = next_frame(ws).await;
    assert_eq!(hello.kind(), "hello", "{hello:?}");
    let history = next_frame(ws).await;
    assert_eq!(history.kind(), "history", "{history:?}");
    (hello, history)
}

/// Frames of one reply from now until its `end` (other frames are kept too).
pub(crate) async fn until_end(ws: &mut Ws) -> (Vec<ServerFrame>, End) {
    let mut frames = Vec::new();
    loop {
        let f = next_frame(ws).await;
        if let ServerFrame::End(end) = &f {
            return (frames, end.clone());
        }
        frames.push(f);
    }
}

pub(crate) fn chunks(frames: &[ServerFrame]) -> Vec<&Chunk> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Chunk(c) => Some(c),
            _ => None,
        })
        .collect()
}

/// Checks that `chunks` continue `after` without gaps or duplicates; returns
/// their text and last seq.
pub(crate) fn contiguous(after: u64, chunks: &[&Chunk]) -> (String, u64) {
    let mut last = after;
    let mut text = String::new();
    for c in chunks {
        assert_eq!(c.first_seq(), last + 1, "gap or duplicate at {c:?}");
        assert!(c.seq >= c.first_seq(), "{c:?}");
        last = c.seq;
        text.push_str(&c.delta);
    }
    (text, last)
}

// Shared with the end-to-end suite. (Each test binary uses its own part.)
#[allow(unused_imports)]
pub(crate) use weir_tests::{eventually, http_request as http, HttpResponse, T};
