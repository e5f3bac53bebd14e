//! Embedding proof: a weir server for one WebSocket connection, driven with
//! plain std threads and blocking sockets (tungstenite's sync API). No async
//! runtime anywhere.
//!
//! ```text
//! cargo run -p weir-core --example std_threads [-- --listen 127.0.0.1:8080]
//! ```
//!
//! It prints the address, accepts one connection on
//! `/v1/ws?session_id=S[&user_id=U][&resume=MESSAGE_ID:SEQ]` (PROTOCOL.md,
//! with `auth = none`), serves it with the in-memory store and the demo
//! generator, and exits when that connection is gone. Try it with any
//! WebSocket client, e.g. `websocat 'ws://ADDR/v1/ws?session_id=demo'`, then
//! send `{"type":"chat","content":"hi"}` and `{"type":"cancel"}`.
//!
//! The threads:
//!
//! - the **core thread** (the caller of [`serve`]) owns the [`Node`] and the
//!   in-memory store ([`MemoryStore`]: the store's reference [`Model`] and
//!   the node's subscriptions). It waits
//!   on one bounded channel with `recv_timeout` until the node's next
//!   deadline, feeds what arrives (or `handle_timeout`), and carries out
//!   every output: frames to the writer, store operations applied at once
//!   (their replies and the notices of subscribed topics fed straight back),
//!   generators started and aborted.
//! - the **reader** blocks on the socket and sends `Input::Frame`,
//!   `Input::Activity`, `Input::FrameTooLarge`, `Input::InvalidUtf8`,
//!   `Input::BinaryFrame` and `Input::Disconnected`.
//! - the **writer** is the only code that writes to the socket. It takes
//!   encoded frames, pings, pongs and closes from a bounded queue; when the
//!   queue is full the core is told `Input::SlowConsumer` (it closes with
//!   4008 and the client resumes). The reader's tungstenite would answer
//!   pings and closes by itself, a second writer: the reader's side of the
//!   socket ([`ReadHalf`]) drops those writes and the reader hands the pings
//!   and closes to the writer through the core thread instead.
//! - one thread per **generator**: the demo text
//!   ([`DemoText`](weir_core::demo::DemoText)) at a fixed pace, stopped by an
//!   [`AtomicBool`] when the core aborts it or the reply settles.
#![allow(
    clippy::disallowed_methods,
    reason = "this example is a runtime: it reads the clocks and paces its generator with \
              `thread::sleep`; weir-core's clippy.toml bans them for the sans-IO library code"
)]

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::io::{self};
use std::net::{Shutdown, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tungstenite::protocol::CloseFrame;
use weir_core::demo::{DemoPrompt, DemoText};
use weir_core::wire::Usage;
use weir_core::{
    CloseCode, Config, Event, GeneratorEvent, Input, MemoryStore, MessageId, Model, Node, NodeId,
    Output, SeededIds, SessionId, StoreConfig, UserId,
};

#[path = "std_threads/handshake.rs"]
mod handshake;
#[path = "std_threads/socket.rs"]
mod socket;

use handshake::{handshake, WS_PATH};
use socket::{read_loop, write_loop, Item, ToCore, CONN, WRITE_TIMEOUT};

/// This node's name.
const NODE_ID: &str = "std-threads";
/// Inputs waiting for the core thread (reader, generators). A full channel
/// makes them wait: backpressure, not loss.
const INBOX: usize = 256;
/// Items waiting for the writer; a full queue is a slow consumer.
const OUTBOX: usize = 1024;
/// How long the shutdown may take to settle the replies left.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often the core's wall clock is re-anchored.
const WALL_CLOCK_EVERY: Duration = Duration::from_secs(60);

/// How to serve.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Chunks per demo reply.
    pub(crate) chunks: u32,
    /// The pause before each demo chunk.
    pub(crate) pace: Duration,
    /// Shut down (close 1001, settle the replies) after this long, if the
    /// connection is still there.
    pub(crate) max_run: Option<Duration>,
    /// Seeds the node's ids.
    pub(crate) seed: u64,
}

impl Default for Options {
    /// The server's demo defaults: 40 chunks at 20 per second; no time
    /// limit; a seed from the OS's randomness.
    fn default() -> Self {
        Self {
            chunks: 40,
            pace: Duration::from_millis(50),
            max_run: None,
            seed: random_seed(),
        }
    }
}

/// What a finished [`serve`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Summary {
    /// The connection's user.
    pub(crate) user: UserId,
    /// Its conversation.
    pub(crate) session: SessionId,
    /// Frames handed to the writer.
    pub(crate) frames: u64,
    /// Replies that settled (`Event::ReplySettled`).
    pub(crate) replies_settled: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen = String::from("127.0.0.1:0");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            _ => return Err(format!("unknown argument {arg:?} (usage: [--listen ADDR])").into()),
        }
    }
    let listener = TcpListener::bind(&listen)?;
    let addr = listener.local_addr()?;
    #[allow(clippy::print_stdout, reason = "the address is this program's output")]
    {
        println!("ws://{addr}{WS_PATH}?session_id=demo");
    }
    let summary = serve(listener, Options::default())?;
    eprintln!("weir: done: {summary:?}");
    Ok(())
}

/// Accepts one connection on `listener` and serves it until it is gone (or
/// `options.max_run` has passed). Runs the core on the calling thread.
pub(crate) fn serve(listener: TcpListener, options: Options) -> io::Result<Summary> {
    let (stream, peer) = listener.accept()?;
    drop(listener); // one connection
    stream.set_nodelay(true)?;
    let config = Config::new(NodeId::parse(NODE_ID).map_err(io::Error::other)?);
    let (ws, accepted) = handshake(stream, config.limits.max_frame_bytes)?;
    eprintln!(
        "weir: {peer}: user {} on {}",
        accepted.user, accepted.session
    );
    let socket = &ws.get_ref().stream;
    let writer_socket = socket.try_clone()?;
    writer_socket.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let kill = socket.try_clone()?;

    let (tx, rx) = mpsc::sync_channel(INBOX);
    let (out_tx, out_rx) = mpsc::sync_channel(OUTBOX);
    let writer = spawn("weir-writer", move || write_loop(writer_socket, &out_rx))?;
    let reader = {
        let tx = tx.clone();
        spawn("weir-reader", move || read_loop(ws, &tx))?
    };

    let mut core = CoreThread::new(config, &options, out_tx, tx);
    core.feed(Input::Connect {
        conn: CONN,
        user: accepted.user.clone(),
        session: accepted.session.clone(),
        resume: accepted.resume,
        ip: None,
    });
    core.run(&rx);

    // Stop the generators; nobody reads their events (or the reader's) any
    // more. The writer sends what is queued, then shuts the socket down,
    // which also wakes the reader.
    let summary = Summary {
        user: accepted.user,
        session: accepted.session,
        frames: core.frames,
        replies_settled: core.replies_settled,
    };
    let generators = core.stop();
    drop(rx);
    let written = writer.join();
    let _ = kill.shutdown(Shutdown::Both); // the writer may not have got that far
    let read = reader.join();
    let generators = generators
        .into_iter()
        .map(JoinHandle::join)
        .collect::<Vec<_>>();
    if written.is_err() || read.is_err() || generators.iter().any(Result::is_err) {
        return Err(io::Error::other("a thread panicked"));
    }
    Ok(summary)
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name(name.into()).spawn(f)
}

// ----- the core thread -----------------------------------------------------

/// A running demo generator.
#[derive(Debug)]
struct Generator {
    abort: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// The state of the core thread: the node, the in-memory store, and the
/// runtime's side of the connection and the generators.
struct CoreThread {
    node: Node<SeededIds>,
    /// The in-memory store: its replies, and its notices on the topics the
    /// node subscribed to, are fed back (like the runtime's driver).
    store: MemoryStore,
    /// The writer's queue; `None` once the connection is released.
    writer: Option<SyncSender<Item>>,
    /// Whether a full queue was reported already.
    slow: bool,
    /// For the generators' events.
    tx: SyncSender<ToCore>,
    generators: HashMap<MessageId, Generator>,
    /// Aborted generators, until their threads end.
    stopping: Vec<JoinHandle<()>>,
    /// Inputs produced while carrying out outputs (store replies, notices,
    /// a slow consumer): fed before the next message.
    immediate: VecDeque<Input>,
    chunks: u32,
    pace: Duration,
    max_run: Option<Duration>,
    frames: u64,
    replies_settled: u64,
}

impl CoreThread {
    fn new(
        config: Config,
        options: &Options,
        writer: SyncSender<Item>,
        tx: SyncSender<ToCore>,
    ) -> Self {
        let unix_ms = unix_ms();
        Self {
            node: Node::new(
                config,
                SeededIds::new(options.seed),
                Instant::now(),
                unix_ms,
            ),
            // A new in-memory store: its epoch is the start time.
            store: MemoryStore::new(Model::new(StoreConfig::default(), unix_ms)),
            writer: Some(writer),
            slow: false,
            tx,
            generators: HashMap::new(),
            stopping: Vec::new(),
            immediate: VecDeque::new(),
            chunks: options.chunks,
            pace: options.pace,
            max_run: options.max_run,
            frames: 0,
            replies_settled: 0,
        }
    }

    /// Feeds one input and carries out everything that follows.
    fn feed(&mut self, input: Input) {
        self.node.handle_input(Instant::now(), input);
        self.drain();
    }

    /// The run loop: wait for a message or the next deadline, feed it, carry
    /// out the outputs. Once the connection is released (or `max_run` has
    /// passed) it shuts the node down and returns when every reply is
    /// settled, or after [`SHUTDOWN_GRACE`].
    fn run(&mut self, rx: &Receiver<ToCore>) {
        let start = Instant::now();
        let run_until = self.max_run.map(|d| start + d);
        let mut shutdown_until: Option<Instant> = None;
        let mut next_wall_clock = start + WALL_CLOCK_EVERY;
        loop {
            let now = Instant::now();
            match shutdown_until {
                Some(until) if self.node.is_drained() || now >= until => return,
                Some(_) => {}
                None if self.writer.is_none() || run_until.is_some_and(|t| now >= t) => {
                    shutdown_until = Some(now + SHUTDOWN_GRACE);
                    self.feed(Input::Shutdown);
                    continue;
                }
                None => {}
            }
            if now >= next_wall_clock {
                next_wall_clock = now + WALL_CLOCK_EVERY;
                self.feed(Input::WallClock { unix_ms: unix_ms() });
                continue;
            }
            let wake = [
                self.node.poll_timeout(),
                shutdown_until,
                run_until,
                Some(next_wall_clock),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_wall_clock);
            match rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(message) => self.on_message(message),
                Err(RecvTimeoutError::Timeout) => {
                    // Also when another deadline woke us: extra calls are harmless.
                    self.node.handle_timeout(Instant::now());
                    self.drain();
                }
                Err(RecvTimeoutError::Disconnected) => return, // cannot happen: we hold a sender
            }
            self.stopping.retain(|t| !t.is_finished());
        }
    }

    fn on_message(&mut self, message: ToCore) {
        match message {
            ToCore::Input(input) => {
                if let Input::Generator {
                    message_id,
                    event: GeneratorEvent::Finished { .. } | GeneratorEvent::Failed { .. },
                } = &input
                {
                    // Its thread ends by itself after its last event.
                    if let Some(g) = self.generators.remove(message_id) {
                        self.stopping.push(g.thread);
                    }
                }
                self.feed(input);
            }
            ToCore::Ping(payload) => {
                self.push(Item::Pong(payload));
                self.feed(Input::Activity { conn: CONN });
            }
            ToCore::PeerClosed(frame) => {
                self.push(Item::Close(frame.map(|f| CloseFrame {
                    code: f.code,
                    reason: "".into(),
                })));
                self.feed(Input::Disconnected { conn: CONN });
            }
        }
    }

    /// Carries out every output, feeding what that produces, until the node
    /// has nothing more to say.
    fn drain(&mut self) {
        loop {
            while let Some(output) = self.node.poll_output() {
                self.carry(output);
            }
            match self.immediate.pop_front() {
                Some(input) => self.node.handle_input(Instant::now(), input),
                None => return,
            }
        }
    }

    fn carry(&mut self, output: Output) {
        match output {
            // `encode` is serde_json, `type` first.
            Output::Send { conn, frame } if conn == CONN => self.send(frame.encode()),
            Output::SendMany { conns, frame } if conns.contains(&CONN) => {
                self.send(frame.encode());
            }
            Output::Send { .. } | Output::SendMany { .. } => {} // one connection only
            Output::Ping { .. } => self.push(Item::Ping),
            Output::Close { code, .. } => self.push(Item::Close(Some(close_frame(code)))),
            Output::Released { .. } => {
                // The writer sends what is queued and ends when the core
                // thread is done.
                self.writer_done();
            }
            Output::Store { op, request } => self.immediate.extend(self.store.apply(op, request)),
            Output::Subscribe(topic) => self.store.subscribe(&topic),
            Output::Unsubscribe(topic) => self.store.unsubscribe(&topic),
            Output::StartGenerator {
                message_id,
                context,
                ..
            } => self.start_generator(message_id, &context),
            Output::AbortGenerator { message_id } => self.abort_generator(&message_id),
            Output::HttpResponse { .. } => {} // no HTTP here
            Output::Event(event) => {
                eprintln!("weir: {event:?}");
                if let Event::ReplySettled { message_id, .. } = event {
                    self.replies_settled += 1;
                    self.abort_generator(&message_id);
                }
            }
        }
    }

    fn send(&mut self, text: String) {
        self.frames += 1;
        self.push(Item::Text(text));
    }

    /// Queues `item` for the writer; a full queue is a slow consumer.
    fn push(&mut self, item: Item) {
        let Some(writer) = &self.writer else {
            return; // released
        };
        match writer.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(Item::Close(_))) => {
                // Not even the close fits: end the socket.
                self.writer_done();
            }
            Err(TrySendError::Full(_)) => {
                if !std::mem::replace(&mut self.slow, true) {
                    self.immediate.push_back(Input::SlowConsumer { conn: CONN });
                }
            }
            // The writer failed and shut the socket down; the reader reports
            // it.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// No more items for the writer: it sends what it has, then shuts the
    /// socket down.
    fn writer_done(&mut self) {
        self.writer = None;
    }

    fn start_generator(&mut self, message_id: MessageId, context: &[weir_core::wire::Message]) {
        let abort = Arc::new(AtomicBool::new(false));
        let job = Demo {
            tx: self.tx.clone(),
            message_id: message_id.clone(),
            prompt: DemoPrompt::of(context),
            chunks: self.chunks,
            pace: self.pace,
            abort: abort.clone(),
        };
        match spawn("weir-generator", move || job.run()) {
            Ok(thread) => {
                if let Some(old) = self
                    .generators
                    .insert(message_id, Generator { abort, thread })
                {
                    old.abort.store(true, Ordering::Release);
                    self.stopping.push(old.thread);
                }
            }
            Err(e) => self.immediate.push_back(Input::Generator {
                message_id,
                event: GeneratorEvent::Failed {
                    reason: format!("could not start the generator: {e}"),
                    usage: None,
                },
            }),
        }
    }

    fn abort_generator(&mut self, message_id: &MessageId) {
        if let Some(g) = self.generators.remove(message_id) {
            g.abort.store(true, Ordering::Release);
            self.stopping.push(g.thread);
        }
    }

    /// Aborts every generator and lets go of the writer; returns the
    /// generators' threads to join.
    fn stop(mut self) -> Vec<JoinHandle<()>> {
        for (_, g) in self.generators.drain() {
            g.abort.store(true, Ordering::Release);
            self.stopping.push(g.thread);
        }
        std::mem::take(&mut self.stopping)
    }
}

fn close_frame(code: CloseCode) -> CloseFrame {
    CloseFrame {
        code: WsCloseCode::from(code.code()),
        reason: code.reason().into(),
    }
}

// ----- the demo generator --------------------------------------------------

/// One demo reply: [`DemoText`] of the prompt, one chunk per `pace`, then
/// `Finished` with word counts as usage.
struct Demo {
    tx: SyncSender<ToCore>,
    message_id: MessageId,
    prompt: DemoPrompt,
    chunks: u32,
    pace: Duration,
    abort: Arc<AtomicBool>,
}

impl Demo {
    fn run(self) {
        let event = |event| {
            ToCore::Input(Input::Generator {
                message_id: self.message_id.clone(),
                event,
            })
        };
        let mut sent = 0u64;
        for chunk in DemoText::new(&self.prompt.text, self.chunks) {
            thread::sleep(self.pace);
            if self.abort.load(Ordering::Acquire)
                || self.tx.send(event(GeneratorEvent::Delta(chunk))).is_err()
            {
                return;
            }
            sent += 1;
        }
        let usage = Some(Usage {
            prompt_tokens: self.prompt.tokens,
            completion_tokens: sent,
        });
        if !self.abort.load(Ordering::Acquire) {
            let _ = self.tx.send(event(GeneratorEvent::Finished { usage }));
        }
    }
}

// ----- clocks and seeds ----------------------------------------------------

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// 64 bits of the OS's randomness, through std's randomly keyed hasher.
fn random_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}
