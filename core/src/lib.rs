//! # weir-core
//!
//! The sans-IO core of weir: every decision of a weir node — the stream,
//! cancel and session state machines, presence, the wire protocol and the
//! store's semantics — as plain data structures that are driven by inputs
//! and drained of outputs.
//!
//! ## What the core never does
//!
//! - **No I/O.** It never touches a socket, a file or Redis. Frames arrive
//!   as bytes in [`Input::Frame`] and leave as [`ServerFrame`]s
//!   in [`Output::Send`]; store operations leave as [`Output::Store`] and
//!   their replies come back as [`Input::StoreReply`].
//! - **No clock.** Every call that depends on time takes `now`
//!   (a monotonic [`Instant`](std::time::Instant)); wall-clock time is
//!   anchored once at [`Node::new`] and re-anchored by [`Input::WallClock`].
//!   A clippy configuration in this crate forbids `Instant::now`,
//!   `SystemTime::now` and `thread::sleep`.
//! - **No async runtime, no threads, no locks.** One owner drives a
//!   [`Node`]; timers are deadlines ([`Node::poll_timeout`]), never sleeps.
//! - **No randomness of its own.** Ids come from an injected
//!   [`IdSource`](ids::IdSource); [`SeededIds`] reproduces a
//!   run from a seed.
//!
//! ## The run loop a runtime writes
//!
//! Feed one input, drain every output, then sleep until the next socket
//! event, store reply, generator event or [`Node::poll_timeout`]. Extra polls
//! and extra [`Node::handle_timeout`] calls are harmless. Here the "runtime"
//! is a few lines around the in-memory store
//! ([`MemoryStore`]: the store's reference [`Model`] and the node's
//! subscriptions) and a fake socket. Everything it names is re-exported at
//! the crate's root (see the map below):
//!
//! ```
//! use std::collections::VecDeque;
//! use std::time::{Duration, Instant};
//! use weir_core::{
//!     Config, ConnId, GeneratorEvent, Input, MemoryStore, Model, Node, NodeId, Output, SeededIds,
//!     ServerFrame, SessionId, StoreConfig, UserId,
//! };
//!
//! let start = Instant::now(); // a runtime reads its clock; the core never does
//! let mut node = Node::new(
//!     Config::new(NodeId::parse("n1").unwrap()),
//!     SeededIds::new(42),
//!     start,
//!     1_700_000_000_000,
//! );
//! let mut store = MemoryStore::new(Model::new(StoreConfig::default(), 1));
//! let mut inbox: VecDeque<Input> = VecDeque::new(); // socket reads, store replies, notices, generator events
//! let mut socket: Vec<ServerFrame> = Vec::new(); // what the client would receive
//! let conn = ConnId(1);
//!
//! inbox.push_back(Input::Connect {
//!     conn,
//!     user: UserId::parse("alice").unwrap(),
//!     session: SessionId::parse("chat-1").unwrap(),
//!     resume: None,
//! });
//! inbox.push_back(Input::Frame { conn, bytes: br#"{"type":"chat","content":"hi"}"#.to_vec() });
//!
//! let mut now = start;
//! for _ in 0..100 {
//!     // 1. Feed what arrived (or fire the timers that are due).
//!     match inbox.pop_front() {
//!         Some(input) => node.handle_input(now, input),
//!         None => match node.poll_timeout() {
//!             Some(deadline) if deadline <= now + Duration::from_secs(1) => {
//!                 now = deadline;
//!                 node.handle_timeout(now);
//!             }
//!             _ => break, // nothing due soon: a runtime would sleep on its sockets
//!         },
//!     }
//!     // 2. Carry out every output.
//!     while let Some(output) = node.poll_output() {
//!         match output {
//!             Output::Send { frame, .. } => socket.push(frame),
//!             Output::SendMany { frame, .. } => socket.push(frame), // one connection here
//!             // The in-memory store: apply atomically; feed back the reply and
//!             // the notices on subscribed topics.
//!             Output::Store { op, request } => inbox.extend(store.apply(op, request)),
//!             Output::Subscribe(topic) => store.subscribe(&topic),
//!             Output::Unsubscribe(topic) => store.unsubscribe(&topic),
//!             Output::StartGenerator { message_id, .. } => {
//!                 // A real generator runs as a task; this one answers at once.
//!                 for word in ["Hello", ", ", "Alice"] {
//!                     inbox.push_back(Input::Generator {
//!                         message_id: message_id.clone(),
//!                         event: GeneratorEvent::Delta(word.into()),
//!                     });
//!                 }
//!                 inbox.push_back(Input::Generator {
//!                     message_id,
//!                     event: GeneratorEvent::Finished { usage: None },
//!                 });
//!             }
//!             Output::AbortGenerator { .. } => {} // stop the task
//!             Output::Close { conn, .. } => inbox.push_back(Input::Disconnected { conn }),
//!             Output::Ping { .. } | Output::Released { .. } => {}
//!             Output::HttpResponse { .. } => {} // no HTTP requests in this example
//!             Output::Event(_) => {}
//!         }
//!     }
//! }
//!
//! let kinds: Vec<&str> = socket.iter().map(ServerFrame::kind).collect();
//! assert_eq!(
//!     kinds,
//!     ["hello", "history", "ack", "user_message", "start", "chunk", "chunk", "chunk", "end"]
//! );
//! let text: String = socket
//!     .iter()
//!     .filter_map(|f| match f {
//!         ServerFrame::Chunk(c) => Some(c.delta.as_str()),
//!         _ => None,
//!     })
//!     .collect();
//! assert_eq!(text, "Hello, Alice");
//! ```
//!
//! ## Embedding without an async runtime
//!
//! Nothing above needs async: `examples/std_threads.rs` is a whole weir
//! server for one WebSocket connection on plain std threads and blocking
//! sockets (tungstenite's sync API, a dev-dependency only). A core thread
//! owns the [`Node`] and the in-memory store and waits on one channel with
//! `recv_timeout` until [`Node::poll_timeout`]; a reader thread sends it the
//! frames, exactly one writer thread writes to the socket, and each demo
//! generator is a thread stopped by an abort flag. Run it and connect to the
//! URL it prints:
//!
//! ```text
//! cargo run -p weir-core --example std_threads [-- --listen 127.0.0.1:8080]
//! ```
//!
//! `tests/std_threads_example.rs` runs it over loopback with a real
//! WebSocket client: a chat streams the demo reply, a cancel fences the
//! next one.
//!
//! ## Map of the crate
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`node`] | [`Node`]: the driver — connections, conversation views, the replies this node produces |
//! | [`node::cancel`] | **the life of a cancel**, from the frame to `end`: where it is decided and how it is carried out |
//! | [`api`] | [`Input`], [`Output`], [`Event`], [`GeneratorEvent`] |
//! | [`stream`] | the stream state machine (Active → Cancelling → Settled → Expired) and the cancel decision |
//! | [`session`] | the connection state machine (Handshake → Open → Closing → Closed) and cursors |
//! | [`presence`] | presence per user (online → lingering → offline, with debounce and expiry) |
//! | [`store`] | store operations, replies, notices, the pure reference [`Model`] and the in-memory store behind a runtime ([`MemoryStore`]) |
//! | `timer` (private) | timers as a table of deadlines, behind [`Node::poll_timeout`] and [`Node::handle_timeout`] |
//! | [`wire`] | every frame and HTTP body of protocol v1, with decoding errors mapped to error codes |
//! | [`ids`] | validated identifiers and the injected id source |
//! | [`config`] | a node's settings |
//! | [`dialect`] | the other protocols a connection may speak (the seed's `/ws/chat`): a codec and a renderer per dialect over the same node |
//! | [`demo`] | the demo generator's deterministic text |
//!
//! The state machines' diagrams are in each module's docs; the invariants the
//! node keeps, and how, are in [`node`]'s.
//!
//! ### Re-exported at the root
//!
//! What a runtime's run loop touches, so that it needs one `use weir_core::{…}`:
//!
//! | from | items |
//! | --- | --- |
//! | [`node`], [`config`] | [`Node`], [`Config`] |
//! | [`api`] | [`Input`], [`Output`], [`Event`], [`GeneratorEvent`], [`HttpRequest`], [`HttpReqId`], [`OpId`] |
//! | [`ids`] | the ids an input or output carries ([`ConnId`], [`UserId`], [`SessionId`], [`MessageId`], [`Seq`]), the node's own [`NodeId`], and the seeded id source [`SeededIds`] |
//! | [`store`] | the in-memory store behind a runtime: [`MemoryStore`], its [`Model`] and the model's [`StoreConfig`] |
//! | [`wire`] | what `Send` and `Close` carry: [`ServerFrame`], [`CloseCode`] |
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod config;
pub mod demo;
pub mod dialect;
pub mod ids;
pub mod node;
pub mod presence;
pub mod session;
pub mod store;
pub mod stream;
pub(crate) mod timer;
pub mod wire;

pub use api::{Event, GeneratorEvent, HttpReqId, HttpRequest, Input, OpId, Output};
pub use config::Config;
pub use ids::{ConnId, MessageId, NodeId, SeededIds, Seq, SessionId, UserId};
pub use node::Node;
pub use store::{MemoryStore, Model, StoreConfig};
pub use wire::{CloseCode, ServerFrame};
