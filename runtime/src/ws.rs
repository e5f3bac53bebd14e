//! One WebSocket: after hyper's upgrade, a reader task and exactly one writer
//! task.
//!
//! - The **writer** is the only code that writes to the socket. It waits on
//!   the connection's [`OutQueue`] ([`OutQueue::poll_take`]: woken once when
//!   the queue goes from empty to non-empty), then feeds tungstenite every
//!   item it finds and flushes once when the queue is empty. A frame arrives
//!   already encoded (and shared with the other connections it goes to): its
//!   text becomes the text message as it is, without a copy or a second
//!   encoding; only a chunk frame merged in the queue is encoded here.
//!   `Item::Ping` becomes a WebSocket ping (the queue hands it out before
//!   its frames, so a full queue never holds a ping back); `Item::Close(code)`
//!   sends the close frame and ends the writer. Every item it takes counts as
//!   progress, which the driver watches for stalls. A pop that drains a
//!   blocked queue (the core stopped handing it chunks) is reported to the
//!   driver as `Input::Writable`.
//! - The **reader** turns text messages into `Input::Frame`, binary ones
//!   into `Input::BinaryFrame` (without their payload), pings and pongs into
//!   `Input::Activity`, a message over the size limit into
//!   `Input::FrameTooLarge`, a text message that is not UTF-8 into
//!   `Input::InvalidUtf8`, and the end of the socket into
//!   `Input::Disconnected`. The size limit counts the payload bytes as they
//!   arrive (tungstenite's `max_frame_size` and `max_message_size`), so no
//!   message larger than the core's frame limit is ever buffered. After the
//!   last two the reader stops reading and lets the writer send the core's
//!   answer and close (1009, 1007). It keeps reading after the peer's close
//!   frame so that tungstenite can answer it before the socket is dropped.
//!
//! The driver's [`ConnHandle`] releases both: dropping it aborts the writer
//! and stops the reader.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::{WebSocketReceiver, WebSocketSender, WebSocketStream};
use futures_channel::oneshot;
use futures_util::future::{select, Either};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use weir_core::ids::{ConnId, MessageId, Seq, SessionId, UserId};
use weir_core::wire::{CloseCode, ServerFrame};
use weir_core::Input;

use crate::io::HyperIo;
use crate::mailbox::{ConnHandle, ToDriver};
use crate::metrics::Metrics;
use crate::queue::{Item, OutQueue};
use crate::rt::{timeout, Runtime};

type Io = HyperIo<Upgraded>;

/// Per-connection read buffer. Tungstenite zero-fills it to its capacity on
/// the first read, so every open connection pays for it in full: with 4000
/// idle connections a 1 KiB buffer measured ~9 KiB RSS per connection where
/// 4 KiB measured ~12 KiB, and at 19 000 idle connections (`weir_bench
/// c100k`) 256 B measured 5.27 KiB where 1 KiB measured 6.05 KiB. Inbound
/// frames are small JSON (a ping, a cancel, a chat); a larger one is simply
/// read in several steps (the message buffer grows as needed, up to the
/// frame limit).
const READ_BUFFER: usize = 256;

/// What a connection needs from the server.
#[derive(Debug, Clone)]
pub(crate) struct WsSettings {
    pub(crate) config: WebSocketConfig,
    pub(crate) queue_capacity: usize,
    /// How long the reader waits for the writer to send the close after an
    /// oversized or non-UTF-8 message (the core's close timeout).
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
    /// The client's address ([`client_ip`](crate::client_ip)).
    pub(crate) ip: std::net::IpAddr,
    pub(crate) dialect: weir_core::dialect::Dialect,
}

/// Serves one WebSocket once hyper hands over the upgraded socket; runs as
/// the connection's reader task.
///
/// The task lives as long as the connection, and a task is as large as its
/// future's largest state plus everything the future captured, so: the
/// setup (whose waits hold the socket before the split and the `Connect`
/// message) is boxed and freed once done, and the future keeps only the
/// few values the reading needs.
pub(crate) fn serve<R: Runtime>(
    settings: WsSettings,
    tx: async_channel::Sender<ToDriver>,
    metrics: Arc<Metrics>,
    accepted: Accepted,
    on_upgrade: OnUpgrade,
) -> impl Future<Output = ()> + Send + 'static {
    let setup = Box::pin(connect::<R>(settings, tx, metrics, accepted, on_upgrade));
    async move { read_loop::<R>(setup.await).await }
}

/// The reader's side of a registered connection.
struct Registered<R: Runtime> {
    conn: ConnId,
    /// The socket's receiving half.
    stream: WebSocketReceiver<Io>,
    tx: async_channel::Sender<ToDriver>,
    /// Resolves when the driver releases the connection.
    stop: oneshot::Receiver<()>,
    /// The connection's writer task: the reader owns it, so that dropping
    /// it (when the reader ends, which is when the driver released the
    /// connection or is gone) aborts the writer.
    writer: R::Task,
    /// How long to wait for the writer after an oversized or non-UTF-8 message.
    close_timeout: Duration,
}

/// Waits for the upgrade, starts the writer and registers the connection
/// with the driver.
async fn connect<R: Runtime>(
    settings: WsSettings,
    tx: async_channel::Sender<ToDriver>,
    metrics: Arc<Metrics>,
    accepted: Accepted,
    on_upgrade: OnUpgrade,
) -> Option<Registered<R>> {
    let Accepted {
        conn,
        user,
        session,
        resume,
        ip,
        dialect,
    } = accepted;
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(%conn, "upgrade failed: {e}");
            return None;
        }
    };
    let io = HyperIo(upgraded);
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(settings.config)).await;
    let (sink, stream) = ws.split();
    let queue = Arc::new(OutQueue::new(settings.queue_capacity));
    let notices = tx.clone();
    queue.set_on_writable(Box::new(move || {
        // A full mailbox drops it: the driver's periodic look at the queues
        // finds the queue unblocked and tells the core then.
        let _ = notices.try_send(ToDriver::Input(Input::Writable { conn }));
    }));
    let writer = R::spawn(write_loop(sink, queue.clone(), metrics));
    let (stop_tx, stop_rx) = oneshot::channel();
    let handle = ConnHandle::new(queue, stop_tx);
    let connect = ToDriver::Connect {
        conn,
        user,
        session,
        resume,
        ip,
        dialect,
        handle,
    };
    // On failure the handle comes back inside the error and is dropped, and
    // so is the writer (which aborts it).
    tx.send(connect).await.ok()?;
    Some(Registered {
        conn,
        stream,
        tx,
        stop: stop_rx,
        writer,
        close_timeout: settings.close_timeout,
    })
}

/// What the reader makes of a message from the socket. Small: it is what
/// the reader task holds while it waits for room in the driver's channel
/// (a task is as large as its largest wait).
enum Read {
    /// A text frame for the core.
    Frame(Vec<u8>),
    /// A binary frame (its payload is dropped at once).
    Binary,
    /// A ping or pong: the client is alive.
    Activity,
    /// Nothing for the driver (the peer's close, which the next read
    /// answers).
    Nothing,
    /// A message over the size limit, of this many bytes.
    TooLarge(usize),
    /// A text message that is not UTF-8.
    InvalidUtf8,
    /// The socket ended or failed.
    Gone,
}

impl Read {
    /// Takes `msg` by value, so that nothing of it stays in the reader task
    /// across its next wait.
    fn from(conn: ConnId, msg: Option<Result<Message, WsError>>) -> Self {
        match msg {
            // Reuses the message's buffer when it is not shared.
            Some(Ok(Message::Text(text))) => Self::Frame(Vec::from(bytes::Bytes::from(text))),
            // The core answers a binary frame `bad_request`.
            Some(Ok(Message::Binary(_))) => Self::Binary,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Self::Activity,
            // Keep reading: the next read sends tungstenite's answer to the
            // close and then ends the stream.
            Some(Ok(Message::Close(_) | Message::Frame(_))) => Self::Nothing,
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, .. }))) => {
                Self::TooLarge(size)
            }
            Some(Err(WsError::Utf8(_))) => Self::InvalidUtf8,
            Some(Err(e)) => {
                tracing::debug!(%conn, "socket error: {e}");
                Self::Gone
            }
            None => Self::Gone,
        }
    }
}

async fn read_loop<R: Runtime>(mut registered: Option<Registered<R>>) {
    // Used in place, not moved out into locals: a local takes room in the
    // task beside the argument it came from.
    let Some(r) = registered.as_mut() else {
        return; // not registered: the setup failed
    };
    loop {
        // The stop first, then the socket (a `poll_fn`: smaller than
        // `select!`'s state).
        let next = std::future::poll_fn(|cx| {
            if Pin::new(&mut r.stop).poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            r.stream
                .poll_next_unpin(cx)
                .map(|msg| Some(Read::from(r.conn, msg)))
        });
        let read = match next.await {
            None => return, // released by the driver
            Some(Read::Nothing) => continue,
            Some(read @ (Read::TooLarge(_) | Read::InvalidUtf8)) => {
                let conn = r.conn;
                let input = match read {
                    Read::TooLarge(len) => Input::FrameTooLarge { conn, len },
                    _ => Input::InvalidUtf8 { conn },
                };
                // Rare: boxed, so that its waits do not make every reader
                // task larger (in a statement of its own: a temporary lives
                // to the end of its statement, across the wait).
                let wait = Box::pin(unreadable::<R>(
                    conn,
                    input,
                    &r.tx,
                    &mut r.stop,
                    &mut r.writer,
                    r.close_timeout,
                ));
                wait.await;
                return;
            }
            Some(read) => read,
        };
        let conn = r.conn;
        let (input, gone) = match read {
            Read::Frame(bytes) => (Input::Frame { conn, bytes }, false),
            Read::Binary => (Input::BinaryFrame { conn }, false),
            Read::Activity => (Input::Activity { conn }, false),
            // (`Nothing`, `TooLarge` and `InvalidUtf8` were handled above.)
            Read::Gone | Read::Nothing | Read::TooLarge(_) | Read::InvalidUtf8 => {
                (Input::Disconnected { conn }, true)
            }
        };
        // Waiting for room is rare (the driver's channel is full) and its
        // future large: boxed, so that the task does not hold its room (and
        // made in a statement of its own: the `try_send` result is a
        // temporary that would otherwise live across the wait).
        let wait = match r.tx.try_send(ToDriver::Input(input)) {
            Ok(()) => None,
            Err(async_channel::TrySendError::Full(msg)) => Some(Box::pin(r.tx.send(msg))),
            Err(async_channel::TrySendError::Closed(_)) => return,
        };
        if let Some(wait) = wait {
            if wait.await.is_err() {
                return; // the driver is gone
            }
        }
        if gone {
            // The writer lives until the driver releases the connection.
            let _ = (&mut r.stop).await;
            return;
        }
    }
}

/// A message the reader cannot go on from (`input`: over the size limit, or
/// text that is not UTF-8): the core answers with an error frame and a close
/// (1009, 1007); let the writer send them before the socket is reported gone.
async fn unreadable<R: Runtime>(
    conn: ConnId,
    input: Input,
    tx: &async_channel::Sender<ToDriver>,
    stop: &mut oneshot::Receiver<()>,
    writer: &mut R::Task,
    close_timeout: Duration,
) {
    if tx.send(ToDriver::Input(input)).await.is_err() {
        return;
    }
    let writer_ended = timeout::<R, _>(close_timeout, writer);
    if let Either::Left(_) = select(&mut *stop, Box::pin(writer_ended)).await {
        return; // released by the driver
    }
    if tx
        .send(ToDriver::Input(Input::Disconnected { conn }))
        .await
        .is_ok()
    {
        let _ = stop.await;
    }
}

/// The connection's one writer: waits for its queue to have an item, feeds
/// every item the queue holds, flushes once it is empty, and waits again.
/// When a pop drains a blocked queue to its low-water mark, it tells the
/// driver (`Input::Writable`), so that the core hands the connection what it
/// held back (see the queue's credit).
///
/// (Messages are made inside the `feed` calls: a local moved into a future
/// still takes room in the task across the wait.)
async fn write_loop(mut sink: WebSocketSender<Io>, queue: Arc<OutQueue>, metrics: Arc<Metrics>) {
    loop {
        // `None`: released (closed and drained); the driver aborts this task
        // then anyway.
        let Some(mut popped) = std::future::poll_fn(|cx| queue.poll_take(cx)).await else {
            return;
        };
        let mut chunks = 0;
        loop {
            if popped.writable {
                // Before the write, so that the core's next step overlaps it.
                queue.notify_writable();
            }
            let item = popped.item;
            if let Item::Close(code) = item {
                metrics.chunks_sent.fetch_add(chunks, Relaxed);
                // Sends everything fed before, then the close frame (`feed`
                // and `flush`: what `send` does, in a smaller future).
                if sink.feed(close_message(code)).await.is_ok() {
                    let _ = sink.flush().await;
                }
                return;
            }
            if sink.feed(message(item, &mut chunks)).await.is_err() {
                return; // the socket failed; the reader reports it
            }
            match queue.take() {
                Some(next) => popped = next,
                None => break,
            }
        }
        metrics.chunks_sent.fetch_add(chunks, Relaxed);
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// The WebSocket message of a queued item other than `Close`, counting the
/// chunks it carries into `chunks`. An encoded frame's text is sent as it is
/// (shared, not copied); a merged chunk frame is encoded here.
fn message(item: Item, chunks: &mut u64) -> Message {
    match item {
        Item::Frame(encoded) => {
            if let ServerFrame::Chunk(c) = encoded.frame() {
                *chunks += chunk_count(c);
            }
            Message::Text(encoded.text().clone())
        }
        Item::Merged(chunk) => {
            *chunks += chunk_count(&chunk);
            Message::text(ServerFrame::Chunk(*chunk).encode())
        }
        Item::Ping => Message::Ping(Default::default()),
        Item::Close(code) => close_message(code),
    }
}

/// How many chunks a (possibly merged) chunk frame carries.
fn chunk_count(chunk: &weir_core::wire::Chunk) -> u64 {
    chunk
        .seq
        .saturating_sub(chunk.first_seq())
        .saturating_add(1)
}

fn close_message(code: CloseCode) -> Message {
    Message::Close(Some(CloseFrame {
        code: WsCloseCode::from(code.code()),
        reason: code.reason().into(),
    }))
}

/// The sizes of the reader's and the writer's futures on `R` (see
/// [`crate::per_connection_future_sizes`]).
#[allow(unreachable_code, clippy::diverging_sub_expression)]
pub(crate) fn future_sizes<R: Runtime>() -> (usize, usize) {
    /// The size of what `f` would return, without calling it.
    fn size_of_return<F, T>(_: F) -> usize
    where
        F: FnOnce() -> T,
    {
        size_of::<T>()
    }
    let reader = size_of_return(|| {
        serve::<R>(
            unreachable!(),
            unreachable!(),
            unreachable!(),
            unreachable!(),
            unreachable!(),
        )
    });
    let writer = size_of_return(|| write_loop(unreachable!(), unreachable!(), unreachable!()));
    (reader, writer)
}
