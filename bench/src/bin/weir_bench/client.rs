//! The load's clients: connecting from many source addresses, and a tally of
//! how many are up.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_util::StreamExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep, timeout, Instant};
use weir_bench::{client_ws_config, frame_type};

use crate::{BoxError, Res};

pub(crate) type Ws = WebSocketStream<TokioAdapter<TcpStream>>;

/// How long one connection attempt (TCP + handshake + hello/history) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts per connection.
const CONNECT_ATTEMPTS: u32 = 3;

/// The source address of client `i`: 127.0.0.1 ..= 127.0.0.K in turn.
pub(crate) fn source_ip(i: usize, k: u8) -> Ipv4Addr {
    let k = usize::from(k.max(1));
    Ipv4Addr::new(127, 0, 0, u8::try_from(1 + i % k).unwrap_or(1))
}

/// Opens a WebSocket to `addr` from `src`, retrying a failed attempt.
pub(crate) async fn connect(addr: SocketAddr, src: Ipv4Addr, path: &str, history: bool) -> Res<Ws> {
    let mut last: Option<BoxError> = None;
    for attempt in 0..CONNECT_ATTEMPTS {
        if attempt > 0 {
            sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        match timeout(
            CONNECT_TIMEOUT,
            connect_once(addr, src, path, history, None),
        )
        .await
        {
            Ok(Ok(ws)) => return Ok(ws),
            Ok(Err(e)) => last = Some(e),
            Err(_) => last = Some("connect timed out".into()),
        }
    }
    Err(last.unwrap_or_else(|| "no attempt".into()))
}

/// [`connect`] with a receive buffer of `rcvbuf` bytes on the client's
/// socket (the kernel may round it): for a client that stops reading, so
/// that its buffers fill soon.
pub(crate) async fn connect_small_buffer(
    addr: SocketAddr,
    src: Ipv4Addr,
    path: &str,
    rcvbuf: u32,
) -> Res<Ws> {
    timeout(
        CONNECT_TIMEOUT,
        connect_once(addr, src, path, true, Some(rcvbuf)),
    )
    .await
    .map_err(|_| BoxError::from("connect timed out"))?
}

async fn connect_once(
    addr: SocketAddr,
    src: Ipv4Addr,
    path: &str,
    history: bool,
    rcvbuf: Option<u32>,
) -> Res<Ws> {
    let socket = TcpSocket::new_v4()?;
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size)?;
    }
    socket.bind(SocketAddr::new(src.into(), 0))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{addr}{path}");
    let (mut ws, _) =
        async_tungstenite::tokio::client_async_with_config(url, stream, Some(client_ws_config()))
            .await?;
    if history {
        // weir: `hello`, then `history`.
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => match frame_type(t.as_str()) {
                    Some("history") => break,
                    Some("error") => return Err(format!("weir answered {}", t.as_str()).into()),
                    _ => {}
                },
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err("closed before history".into()),
            }
        }
    }
    Ok(ws)
}

#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) ready: AtomicUsize,
    pub(crate) failed: AtomicUsize,
    pub(crate) closed_early: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    pub(crate) fn fail(&self, e: &BoxError) {
        self.failed.fetch_add(1, Relaxed);
        let mut first = self
            .first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if first.is_none() {
            *first = Some(e.to_string());
        }
    }

    pub(crate) fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Waits (bounded by `deadline`) until `ready + failed` reaches `n`.
pub(crate) async fn wait_all(tally: &Tally, n: usize, deadline: Instant) {
    while tally.ready.load(Relaxed) + tally.failed.load(Relaxed) < n && Instant::now() < deadline {
        sleep(Duration::from_millis(20)).await;
    }
}
