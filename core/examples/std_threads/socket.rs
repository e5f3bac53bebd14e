//! The std-threads example's socket: the reader thread and the one writer.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::time::Duration;

use tungstenite::error::{CapacityError, Error as WsError};
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Bytes, Message, WebSocket};
use weir_core::{ConnId, Input};

/// The one connection's number.
pub(crate) const CONN: ConnId = ConnId(1);
/// How long one write may block before the writer gives the socket up.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

// ----- the reader ----------------------------------------------------------

/// The reader's side of the socket. Reads go to the socket; writes only
/// during the handshake (the `101` response). After it, the only writes the
/// reader's tungstenite makes are its own answers to pings and closes: they
/// are dropped here, and the reader hands those to the one writer instead.
#[derive(Debug)]
pub(crate) struct ReadHalf {
    pub(crate) stream: TcpStream,
    handshake_done: bool,
}

impl ReadHalf {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            handshake_done: false,
        }
    }

    /// After the `101`: reads block without a timeout, and the reader's
    /// own writes are dropped from now on.
    pub(crate) fn handshake_done(&mut self) -> io::Result<()> {
        self.stream.set_read_timeout(None)?;
        self.handshake_done = true;
        Ok(())
    }
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for ReadHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.handshake_done {
            Ok(buf.len())
        } else {
            self.stream.write(buf)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.handshake_done {
            Ok(())
        } else {
            self.stream.flush()
        }
    }
}

/// What the reader and the generators send the core thread.
#[derive(Debug)]
pub(crate) enum ToCore {
    /// Feed this.
    Input(Input),
    /// The client pinged: the writer answers, and it is a sign of life.
    Ping(Bytes),
    /// The client sent its close frame: the writer answers, and the socket
    /// is done.
    PeerClosed(Option<CloseFrame>),
}

/// Reads until the socket ends; reports everything to the core thread.
pub(crate) fn read_loop(mut ws: WebSocket<ReadHalf>, tx: &SyncSender<ToCore>) {
    let input = |input| ToCore::Input(input);
    loop {
        let (message, last) = match ws.read() {
            Ok(Message::Text(text)) => (
                input(Input::Frame {
                    conn: CONN,
                    bytes: text.as_str().as_bytes().to_vec(),
                }),
                false,
            ),
            // The core answers a binary frame `bad_request`.
            Ok(Message::Binary(_)) => (input(Input::BinaryFrame { conn: CONN }), false),
            Ok(Message::Ping(payload)) => (ToCore::Ping(payload), false),
            Ok(Message::Pong(_)) => (input(Input::Activity { conn: CONN }), false),
            Ok(Message::Close(frame)) => (ToCore::PeerClosed(frame), true),
            Ok(Message::Frame(_)) => continue,
            Err(
                e @ (WsError::Capacity(CapacityError::MessageTooLong { .. }) | WsError::Utf8(_)),
            ) => {
                // The core answers with an error and a close (1009, 1007),
                // which the writer sends before it shuts the socket down.
                let unreadable = input(match e {
                    WsError::Capacity(CapacityError::MessageTooLong { size, .. }) => {
                        Input::FrameTooLarge {
                            conn: CONN,
                            len: size,
                        }
                    }
                    _ => Input::InvalidUtf8 { conn: CONN },
                });
                if tx.send(unreadable).is_err() {
                    return;
                }
                (input(Input::Disconnected { conn: CONN }), true)
            }
            Err(_) => (input(Input::Disconnected { conn: CONN }), true),
        };
        if tx.send(message).is_err() || last {
            return;
        }
    }
}

// ----- the writer ----------------------------------------------------------

/// What the writer sends.
#[derive(Debug)]
pub(crate) enum Item {
    /// A frame's JSON text.
    Text(String),
    /// A WebSocket ping.
    Ping,
    /// The answer to the client's ping.
    Pong(Bytes),
    /// A close frame; nothing is written after it.
    Close(Option<CloseFrame>),
}

/// The connection's one writer: writes every item it can take without
/// waiting, flushes, waits for the next. When the queue's sender is gone
/// (the core thread is done) or a write fails, it shuts the socket down.
pub(crate) fn write_loop(socket: TcpStream, items: &Receiver<Item>) {
    let config = WebSocketConfig::default()
        .read_buffer_size(64) // never reads
        .write_buffer_size(4 * 1024);
    let mut ws = WebSocket::from_raw_socket(socket, Role::Server, Some(config));
    let mut closed = false;
    'wait: while let Ok(mut item) = items.recv() {
        loop {
            if !closed {
                let message = match item {
                    Item::Text(text) => Message::text(text),
                    Item::Ping => Message::Ping(Bytes::new()),
                    Item::Pong(payload) => Message::Pong(payload),
                    Item::Close(frame) => {
                        closed = true;
                        Message::Close(frame)
                    }
                };
                if ws.write(message).is_err() {
                    break 'wait;
                }
            }
            match items.try_recv() {
                Ok(next) => item = next,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => break 'wait,
            }
        }
        if !closed && ws.flush().is_err() {
            break;
        }
    }
    // A close frame is flushed by `write` itself; flush anything else left.
    let _ = ws.flush();
    let _ = ws.get_ref().shutdown(Shutdown::Both);
}
