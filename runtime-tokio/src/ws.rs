//! One WebSocket: after hyper's upgrade, a reader task and exactly one writer
//! task.
//!
//! - The **writer** is the only code that writes to the socket. It pops the
//!   connection's [`OutQueue`] (woken by a [`Notify`]), encodes each frame
//!   with `ServerFrame::encode`, and flushes when the queue is empty;
//!   `Item::Ping` becomes a WebSocket ping; `Item::Close(code)` sends the
//!   close frame and ends the writer.
//! - The **reader** turns text (and binary) messages into `Input::Frame`,
//!   pings and pongs into `Input::Activity`, a message over the size limit
//!   into `Input::FrameTooLarge`, and the end of the socket into
//!   `Input::Disconnected`. It keeps reading after the peer's close frame so
//!   that tungstenite can answer it before the socket is dropped.
//!
//! The driver's [`ConnHandle`] releases both: dropping it aborts the writer
//! and stops the reader.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::{WebSocketReceiver, WebSocketSender, WebSocketStream};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use weir_core::ids::{ConnId, MessageId, Seq, SessionId, UserId};
use weir_core::wire::{CloseCode, ServerFrame};
use weir_core::Input;

use crate::driver::{ConnHandle, ToDriver};
use crate::metrics::Metrics;
use crate::queue::{Item, OutQueue};

type Io = TokioAdapter<TokioIo<Upgraded>>;

/// Per-connection read buffer. Tungstenite zero-fills it to its capacity on
/// the first read, so every open connection pays for it in full: with 4000
/// idle connections a 1 KiB buffer measured ~9 KiB RSS per connection where
/// 4 KiB measured ~12 KiB. Inbound frames are small JSON; a larger one is
/// simply read in several steps (the message buffer grows as needed, up to
/// the frame limit).
const READ_BUFFER: usize = 1024;

/// What a connection needs from the server.
#[derive(Debug, Clone)]
pub(crate) struct WsSettings {
    pub(crate) config: WebSocketConfig,
    pub(crate) queue_capacity: usize,
    /// How long the reader waits for the writer to send the close after an
    /// oversized message (the core's close timeout).
    pub(crate) close_timeout: Duration,
}

impl WsSettings {
    /// Buffers sized for many idle connections: a [`READ_BUFFER`] read
    /// buffer (not tungstenite's 128 KiB), writes go out once 4 KiB are
    /// buffered or the queue is empty, and no inbound message or frame may
    /// exceed the core's frame limit.
    pub(crate) fn new(
        max_frame_bytes: usize,
        queue_capacity: usize,
        close_timeout: Duration,
    ) -> Self {
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(4 * 1024)
            .max_message_size(Some(max_frame_bytes))
            .max_frame_size(Some(max_frame_bytes));
        Self {
            config,
            queue_capacity,
            close_timeout,
        }
    }
}

/// The authenticated, validated parameters of an upgrade.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) conn: ConnId,
    pub(crate) user: UserId,
    pub(crate) session: SessionId,
    pub(crate) resume: Option<(MessageId, Seq)>,
}

/// Serves one WebSocket once hyper hands over the upgraded socket; runs as
/// the connection's reader task.
pub(crate) async fn serve(
    settings: WsSettings,
    tx: mpsc::Sender<ToDriver>,
    metrics: Arc<Metrics>,
    accepted: Accepted,
    on_upgrade: OnUpgrade,
) {
    let Accepted {
        conn,
        user,
        session,
        resume,
    } = accepted;
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(%conn, "upgrade failed: {e}");
            return;
        }
    };
    let io = TokioAdapter::new(TokioIo::new(upgraded));
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(settings.config)).await;
    let (sink, stream) = ws.split();
    let queue = Arc::new(OutQueue::new(settings.queue_capacity));
    let notify = Arc::new(Notify::new());
    let writer = tokio::spawn(write_loop(sink, queue.clone(), notify.clone(), metrics));
    let (stop_tx, stop_rx) = oneshot::channel();
    let handle = ConnHandle {
        queue,
        notify,
        writer: writer.abort_handle(),
        _stop: stop_tx,
        merged_seen: 0,
    };
    let connect = ToDriver::Connect {
        conn,
        user,
        session,
        resume,
        handle,
    };
    // On failure the handle comes back inside the error and is dropped,
    // which aborts the writer.
    if tx.send(connect).await.is_err() {
        return;
    }
    read_loop(conn, stream, &tx, stop_rx, writer, settings.close_timeout).await;
}

async fn read_loop(
    conn: ConnId,
    mut stream: WebSocketReceiver<Io>,
    tx: &mpsc::Sender<ToDriver>,
    mut stop: oneshot::Receiver<()>,
    mut writer: JoinHandle<()>,
    close_timeout: Duration,
) {
    let input = |i: Input| ToDriver::Input(i);
    loop {
        let msg = tokio::select! {
            biased;
            _ = &mut stop => return, // released by the driver
            msg = stream.next() => msg,
        };
        let sent = match msg {
            Some(Ok(Message::Text(text))) => {
                tx.send(input(Input::Frame {
                    conn,
                    // Reuses the message's buffer when it is not shared.
                    bytes: Vec::from(bytes::Bytes::from(text)),
                }))
                .await
            }
            // The core answers a binary frame `bad_request`.
            Some(Ok(Message::Binary(bytes))) => {
                tx.send(input(Input::Frame {
                    conn,
                    bytes: Vec::from(bytes),
                }))
                .await
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                tx.send(input(Input::Activity { conn })).await
            }
            // Keep reading: the next read sends tungstenite's answer to the
            // close and then ends the stream.
            Some(Ok(Message::Close(_) | Message::Frame(_))) => Ok(()),
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, .. }))) => {
                if tx
                    .send(input(Input::FrameTooLarge { conn, len: size }))
                    .await
                    .is_err()
                {
                    return;
                }
                // The core answers with an error frame and a 1009 close: let
                // the writer send them before the socket is reported gone.
                tokio::select! {
                    biased;
                    _ = &mut stop => return,
                    _ = tokio::time::timeout(close_timeout, &mut writer) => {}
                }
                let _ = tx.send(input(Input::Disconnected { conn })).await;
                return;
            }
            Some(Err(e)) => {
                tracing::debug!(%conn, "socket error: {e}");
                let _ = tx.send(input(Input::Disconnected { conn })).await;
                return;
            }
            None => {
                let _ = tx.send(input(Input::Disconnected { conn })).await;
                return;
            }
        };
        if sent.is_err() {
            return; // the driver is gone
        }
    }
}

/// The connection's one writer.
async fn write_loop(
    mut sink: WebSocketSender<Io>,
    queue: Arc<OutQueue>,
    notify: Arc<Notify>,
    metrics: Arc<Metrics>,
) {
    loop {
        let mut unflushed = false;
        while let Some(item) = queue.pop() {
            let result = match item {
                Item::Frame(frame) => {
                    if let ServerFrame::Chunk(c) = &frame {
                        let chunks = c.seq.saturating_sub(c.first_seq()).saturating_add(1);
                        metrics.chunks_sent.fetch_add(chunks, Relaxed);
                    }
                    unflushed = true;
                    sink.feed(Message::text(frame.encode())).await
                }
                Item::Ping => {
                    unflushed = true;
                    sink.feed(Message::Ping(Default::default())).await
                }
                Item::Close(code) => {
                    // Sends everything fed before, then the close frame.
                    let _ = sink.send(close_message(code)).await;
                    return;
                }
            };
            if result.is_err() {
                return; // the socket failed; the reader reports it
            }
        }
        if unflushed && sink.flush().await.is_err() {
            return;
        }
        if queue.is_closed() {
            if queue.is_empty() {
                return; // released, and everything sent
            }
            continue;
        }
        notify.notified().await;
    }
}

fn close_message(code: CloseCode) -> Message {
    Message::Close(Some(CloseFrame {
        code: WsCloseCode::from(code.code()),
        reason: code.reason().into(),
    }))
}
