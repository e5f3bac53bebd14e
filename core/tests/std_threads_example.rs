//! Runs `examples/std_threads.rs` — weir-core driven by std threads and
//! blocking sockets, no async runtime — on loopback and talks to it with a
//! real blocking tungstenite client, checking the wire protocol
//! (PROTOCOL.md). Every wait is bounded by a socket read timeout or a
//! channel timeout.

#[path = "../examples/std_threads.rs"]
#[allow(
    dead_code,
    reason = "the example's `main` and its argument parsing are not used by the tests"
)]
mod example;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use tungstenite::error::Error as WsError;
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tungstenite::{Message, WebSocket};
use weir_core::demo::DemoText;
use weir_core::wire::{decode_server_frame, CancelStatus, ReplyStatus, ServerFrame};

use example::{Options, Summary};

/// Chunks per demo reply in these tests.
const CHUNKS: u32 = 40;
/// The longest any single read may wait.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest the server may take to return after its connection ends.
const SERVER_TIMEOUT: Duration = Duration::from_secs(15);

fn options() -> Options {
    Options {
        chunks: CHUNKS,
        pace: Duration::from_millis(10),
        // A bound on the whole run, whatever the test does.
        max_run: Some(Duration::from_secs(60)),
        seed: 7,
    }
}

/// A server for one connection on a free loopback port, run in a thread;
/// its result arrives on the returned channel.
fn start(options: Options) -> (SocketAddr, mpsc::Receiver<io::Result<Summary>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    let (done, result) = mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(example::serve(listener, options));
    });
    (addr, result)
}

/// A TCP connection to `addr` with bounded reads and writes.
fn tcp(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT).expect("connect");
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(READ_TIMEOUT))
        .expect("write timeout");
    stream
}

/// A blocking WebSocket client.
struct Client {
    ws: WebSocket<TcpStream>,
}

impl Client {
    /// Connects to `ws://addr/v1/ws?query` (tungstenite's client handshake
    /// over a stream whose reads are bounded).
    fn connect(addr: SocketAddr, query: &str) -> Self {
        let url = format!("ws://{addr}/v1/ws?{query}");
        let (ws, response) = tungstenite::client(url.as_str(), tcp(addr)).expect("handshake");
        assert_eq!(response.status(), 101);
        Self { ws }
    }

    fn send(&mut self, json: &str) {
        self.ws.send(Message::text(json)).expect("send");
    }

    /// The next weir frame (WebSocket pings and pongs skipped).
    fn next(&mut self) -> ServerFrame {
        loop {
            match self.ws.read().expect("a frame within the read timeout") {
                Message::Text(text) => {
                    return decode_server_frame(text.as_str()).expect("a weir frame");
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected WebSocket message {other:?}"),
            }
        }
    }

    /// Closes the WebSocket and reads until the server's close is seen.
    fn close(mut self) {
        self.ws.close(None).expect("close");
        loop {
            match self.ws.read() {
                Ok(Message::Close(_) | Message::Ping(_) | Message::Pong(_)) => {}
                Ok(other) => panic!("a frame after the client's close: {other:?}"),
                Err(WsError::ConnectionClosed) => return,
                Err(e) => panic!("closing: {e}"),
            }
        }
    }
}

/// Waits (bounded) for the server thread's result.
fn finished(result: &mpsc::Receiver<io::Result<Summary>>) -> io::Result<Summary> {
    result
        .recv_timeout(SERVER_TIMEOUT)
        .expect("the server returns once its connection is gone")
}

#[test]
fn a_chat_streams_the_demo_reply_and_a_cancel_fences_the_next_one() {
    let (addr, result) = start(options());
    let mut client = Client::connect(addr, "session_id=s-1&user_id=alice");

    // hello, then history.
    let ServerFrame::Hello(hello) = client.next() else {
        panic!("hello first")
    };
    assert_eq!(hello.protocol, 1);
    assert_eq!(hello.session_id.as_str(), "s-1");
    assert_eq!(hello.user_id.as_str(), "alice");
    let ServerFrame::History(history) = client.next() else {
        panic!("history second")
    };
    assert!(history.messages.is_empty());

    // A chat: ack, user_message, start, chunks 1..=n, end completed n.
    let prompt = "tell me about rivers";
    client.send(&format!(
        r#"{{"type":"chat","content":"{prompt}","request_id":"r1"}}"#
    ));
    let ServerFrame::Ack(ack) = client.next() else {
        panic!("ack first")
    };
    assert_eq!(ack.request_id.as_ref().map(|r| r.as_str()), Some("r1"));
    let ServerFrame::UserMessage(user_message) = client.next() else {
        panic!("user_message after ack")
    };
    assert_eq!(user_message.message_id, ack.user_message_id);
    assert_eq!(user_message.content, prompt);
    assert_eq!(
        user_message.request_id.as_ref().map(|r| r.as_str()),
        Some("r1")
    );
    let ServerFrame::Start(start) = client.next() else {
        panic!("start after user_message")
    };
    assert_eq!(start.message_id, ack.message_id);
    assert_eq!(start.reply_to, ack.user_message_id);
    let mut text = String::new();
    let mut seq = 0;
    let end = loop {
        match client.next() {
            ServerFrame::Chunk(chunk) => {
                assert_eq!(chunk.message_id, ack.message_id);
                assert_eq!(chunk.first_seq(), seq + 1, "chunks are contiguous");
                seq = chunk.seq;
                text.push_str(&chunk.delta);
            }
            ServerFrame::End(end) => break end,
            other => panic!("unexpected {other:?} during the reply"),
        }
    };
    assert_eq!(seq, u64::from(CHUNKS));
    assert_eq!(text, DemoText::full(prompt, CHUNKS));
    assert_eq!(end.message_id, ack.message_id);
    assert_eq!(end.status, ReplyStatus::Completed);
    assert_eq!(end.final_seq, u64::from(CHUNKS));
    assert_eq!(
        end.usage.map(|u| u.completion_tokens),
        Some(u64::from(CHUNKS))
    );

    // A second chat, cancelled after its third chunk: cancel_result
    // cancelled F, chunks 1..=F before it, none after it, end cancelled F.
    let prompt = "and about herons";
    client.send(&format!(
        r#"{{"type":"chat","content":"{prompt}","request_id":"r2"}}"#
    ));
    let ServerFrame::Ack(ack) = client.next() else {
        panic!("ack first")
    };
    assert!(matches!(client.next(), ServerFrame::UserMessage(_)));
    assert!(matches!(client.next(), ServerFrame::Start(_)));
    let mut text = String::new();
    let mut seq = 0;
    let mut cancel_sent = false;
    let mut cancel_result = None;
    let mut end = None;
    while cancel_result.is_none() || end.is_none() {
        match client.next() {
            ServerFrame::Chunk(chunk) => {
                assert!(
                    cancel_result.is_none(),
                    "no chunk after cancel_result: {chunk:?}"
                );
                assert!(end.is_none(), "no chunk after end: {chunk:?}");
                assert_eq!(chunk.message_id, ack.message_id);
                assert_eq!(chunk.first_seq(), seq + 1, "chunks are contiguous");
                seq = chunk.seq;
                text.push_str(&chunk.delta);
                if seq >= 3 && !cancel_sent {
                    cancel_sent = true;
                    client.send(&format!(
                        r#"{{"type":"cancel","message_id":"{}","request_id":"c1"}}"#,
                        ack.message_id.as_str()
                    ));
                }
            }
            ServerFrame::CancelResult(r) => cancel_result = Some(r),
            ServerFrame::End(e) => end = Some(e),
            other => panic!("unexpected {other:?} during the cancelled reply"),
        }
    }
    let (cancel_result, end) = (cancel_result.unwrap(), end.unwrap());
    assert_eq!(
        cancel_result.request_id.as_ref().map(|r| r.as_str()),
        Some("c1")
    );
    assert_eq!(cancel_result.message_id.as_ref(), Some(&ack.message_id));
    assert_eq!(cancel_result.status, CancelStatus::Cancelled);
    let final_seq = cancel_result.final_seq.expect("final_seq with cancelled");
    assert_eq!(
        seq, final_seq,
        "every chunk up to final_seq came before cancel_result"
    );
    assert!(
        (3..u64::from(CHUNKS)).contains(&final_seq),
        "cancelled mid-reply: final_seq {final_seq}"
    );
    let final_chunks = u32::try_from(final_seq).unwrap();
    assert_eq!(
        text,
        DemoText::new(prompt, CHUNKS)
            .take(final_chunks as usize)
            .collect::<String>()
    );
    assert_eq!(end.message_id, ack.message_id);
    assert_eq!(end.status, ReplyStatus::Cancelled);
    assert_eq!(end.final_seq, final_seq);

    // Nothing of it follows: the next frame is the answer to a ping sent
    // after the generator would have produced more chunks.
    #[allow(
        clippy::disallowed_methods,
        reason = "a test waits like a client: long enough for chunks that must not come"
    )]
    thread::sleep(Duration::from_millis(100));
    client.send(r#"{"type":"ping","id":"p1"}"#);
    let ServerFrame::Pong(_) = client.next() else {
        panic!("pong, and no chunk after the cancel")
    };

    // A WebSocket ping is answered (by the one writer) with its payload.
    client
        .ws
        .send(Message::Ping("are you there".into()))
        .unwrap();
    match client.ws.read().unwrap() {
        Message::Pong(payload) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("a pong, not {other:?}"),
    }

    // Closing the connection ends the server.
    client.close();
    let summary = finished(&result).unwrap();
    assert_eq!(summary.user.as_str(), "alice");
    assert_eq!(summary.session.as_str(), "s-1");
    assert_eq!(summary.replies_settled, 2);
}

#[test]
fn an_upgrade_without_session_id_is_refused_with_400() {
    let (addr, result) = start(options());
    let url = format!("ws://{addr}/v1/ws?user_id=alice");
    match tungstenite::client(url.as_str(), tcp(addr)) {
        Err(HandshakeError::Failure(WsError::Http(response))) => {
            assert_eq!(response.status(), 400);
            let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
            assert!(body.contains(r#""code":"bad_request""#), "{body}");
            assert!(body.contains("session_id"), "{body}");
        }
        Ok(_) => panic!("the upgrade must be refused"),
        Err(e) => panic!("unexpected handshake error: {e}"),
    }
    assert!(
        finished(&result).is_err(),
        "serve reports the refused handshake"
    );
}

#[test]
fn a_bounded_run_closes_with_1001_and_settles_the_reply() {
    let (addr, result) = start(Options {
        max_run: Some(Duration::from_millis(300)),
        pace: Duration::from_millis(50), // the reply would take 2 s
        ..options()
    });
    let mut client = Client::connect(addr, "session_id=s-2");
    let ServerFrame::Hello(hello) = client.next() else {
        panic!("hello first")
    };
    assert_eq!(hello.user_id.as_str(), "anonymous");
    assert!(matches!(client.next(), ServerFrame::History(_)));
    client.send(r#"{"type":"chat","content":"a long story"}"#);
    let mut frames = Vec::new();
    let close = loop {
        match client.ws.read().expect("a message within the read timeout") {
            Message::Text(text) => frames.push(decode_server_frame(text.as_str()).unwrap()),
            Message::Close(frame) => break frame,
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(WsCloseCode::from(1001)));
    let kinds: Vec<&str> = frames.iter().map(ServerFrame::kind).collect();
    assert_eq!(
        kinds[..4],
        ["ack", "user_message", "start", "chunk"],
        "{kinds:?}"
    );
    // Shutdown closes first (a client reconnects elsewhere and resumes),
    // then settles the reply this node produced.
    let seqs: Vec<u64> = frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Chunk(c) => Some(c.seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(seqs.len() < CHUNKS as usize, "cut short: {kinds:?}");
    // Tungstenite answers the close; the server then returns.
    let _ = client.ws.flush();
    let summary = finished(&result).unwrap();
    assert_eq!(summary.replies_settled, 1, "the shutdown settled the reply");
}
