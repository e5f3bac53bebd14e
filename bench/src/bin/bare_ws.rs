//! `bare_ws`: the baseline WebSocket server of the benchmarks — tokio and
//! async-tungstenite 0.35 with none of weir's logic, written the way a careful
//! hand-written server would be:
//!
//! - it accepts on `--listen` (default `127.0.0.1:0`) and prints
//!   `bare_ws listening on ws://ADDR` on stdout once bound;
//! - every connection gets a reader task and one writer task fed by a bounded
//!   channel (`--queue-capacity` messages, 256 like weir's queue), with
//!   weir's WebSocket buffer sizes (read 1 KiB, write 4 KiB, 64 KiB frame
//!   limit);
//! - idle, it only holds connections: the reader reads (tungstenite answers
//!   pings) and the writer waits;
//! - a text message `go CHUNKS CLIENTS MESSAGE_ID PROMPT` from any client
//!   starts one broadcast: once `CLIENTS` connections are open (at most 10 s
//!   of waiting), the same `CHUNKS` chunk frames — byte for byte what weir sends
//!   for a reply to `PROMPT` with the demo generator — go to every open
//!   connection at `--rate` chunks per second (0: as fast as the writers take
//!   them), then an `end` frame. Each frame is encoded once and shared; it is
//!   queued with `try_send`, and only a full channel makes the broadcaster
//!   wait (lossless backpressure, no merging).
//!
//! The server runs until it is killed.
#![forbid(unsafe_code)]
#![allow(
    clippy::print_stdout,
    reason = "announcing the bound address is part of its interface"
)]

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketSender;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use weir_bench::{chunk_frame, end_frame, server_ws_config};
use weir_core::demo::DemoText;

/// The bare WebSocket baseline of weir's benchmarks.
#[derive(Debug, Parser)]
#[command(name = "bare_ws")]
struct Args {
    /// Address to listen on (port 0: any free port)
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Broadcast pace in chunks per second (0: as fast as the writers take them)
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Per-connection outbound channel, in messages
    #[arg(long, default_value_t = 256)]
    queue_capacity: usize,
}

/// The open connections' outbound channels.
#[derive(Debug, Default)]
struct Shared {
    conns: Mutex<HashMap<u64, mpsc::Sender<Message>>>,
    broadcasting: AtomicBool,
}

impl Shared {
    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::Sender<Message>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

type Sink = WebSocketSender<TokioAdapter<TcpStream>>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    println!("bare_ws listening on ws://{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let shared = Arc::new(Shared::default());
    let next_id = AtomicU64::new(1);
    let args = Arc::new(args);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(connection(stream, id, shared.clone(), args.clone()));
            }
            Err(e) => {
                eprintln!("bare_ws: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// One connection: the handshake, then this task reads while a writer task
/// drains the connection's channel.
async fn connection(stream: TcpStream, id: u64, shared: Arc<Shared>, args: Arc<Args>) {
    let _ = stream.set_nodelay(true);
    let Ok(ws) =
        async_tungstenite::tokio::accept_async_with_config(stream, Some(server_ws_config())).await
    else {
        return;
    };
    let (sink, mut stream) = ws.split();
    let (tx, rx) = mpsc::channel(args.queue_capacity.max(1));
    shared.conns().insert(id, tx);
    let writer = tokio::spawn(write_loop(sink, rx));
    while let Some(msg) = stream.next().await {
        match msg {
            Ok(Message::Text(text)) => {
                if let Some(go) = Go::parse(text.as_str()) {
                    if !shared.broadcasting.swap(true, Ordering::AcqRel) {
                        tokio::spawn(broadcast(shared.clone(), go, args.rate));
                    }
                }
            }
            // Pings are answered by tungstenite; a close is answered on the
            // next read, which then ends the stream.
            Ok(_) => {}
            Err(_) => break,
        }
    }
    shared.conns().remove(&id);
    writer.abort();
}

/// The connection's one writer: sends what its channel brings, flushing when
/// the channel is empty.
async fn write_loop(mut sink: Sink, mut rx: mpsc::Receiver<Message>) {
    while let Some(msg) = rx.recv().await {
        if sink.feed(msg).await.is_err() {
            return;
        }
        while let Ok(msg) = rx.try_recv() {
            if sink.feed(msg).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// A broadcast order: `go CHUNKS CLIENTS MESSAGE_ID PROMPT`.
#[derive(Debug)]
struct Go {
    chunks: u32,
    clients: usize,
    message_id: String,
    prompt: String,
}

impl Go {
    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.splitn(5, ' ');
        if parts.next()? != "go" {
            return None;
        }
        Some(Self {
            chunks: parts.next()?.parse().ok()?,
            clients: parts.next()?.parse().ok()?,
            message_id: parts.next()?.to_owned(),
            prompt: parts.next().unwrap_or_default().to_owned(),
        })
    }
}

/// Sends the reply's chunks, then its end, to every open connection.
async fn broadcast(shared: Arc<Shared>, go: Go, rate: f64) {
    // Wait (bounded) until every expected client is registered.
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.conns().len() < go.clients && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let targets: Vec<mpsc::Sender<Message>> = shared.conns().values().cloned().collect();
    let mut ticker = (rate.is_finite() && rate > 0.0).then(|| {
        let period = Duration::from_secs_f64(1.0 / rate);
        let mut t = interval_at(Instant::now() + period, period);
        // Like weir's demo generator: late ticks are made up at once.
        t.set_missed_tick_behavior(MissedTickBehavior::Burst);
        t
    });
    let mut seq = 0u64;
    for delta in DemoText::new(&go.prompt, go.chunks) {
        match ticker.as_mut() {
            Some(t) => {
                t.tick().await;
            }
            None => tokio::task::yield_now().await,
        }
        seq += 1;
        // Encoded once; each clone shares the bytes.
        let msg = Message::text(chunk_frame(&go.message_id, seq, &delta));
        for tx in &targets {
            send(tx, msg.clone()).await;
        }
    }
    let end = Message::text(end_frame(&go.message_id, seq));
    for tx in &targets {
        send(tx, end.clone()).await;
    }
    shared.broadcasting.store(false, Ordering::Release);
}

/// Queues `msg` for one connection: at once when there is room, else waits
/// for room (never drops). `try_send` first, because the awaiting `send`
/// spends tokio's cooperative budget: with hundreds of connections the
/// broadcaster would yield after every message, and every writer would then
/// write (and the kernel deliver) one frame at a time.
async fn send(tx: &mpsc::Sender<Message>, msg: Message) {
    match tx.try_send(msg) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(msg)) => {
            let _ = tx.send(msg).await;
        }
    }
}
