//! weir-runtime-tokio: drives [`weir_core`] on tokio.
//!
//! **Skeleton.** Nothing is implemented yet; this crate arrives with the
//! milestone "server on tokio". What it will hold (see `DESIGN.md`,
//! "Runtimes"):
//!
//! - the run loop: accept, read, decode → `Node::handle_input`, drain
//!   `Node::poll_output` (send frames, run store operations, start and abort
//!   generators), then sleep until the next socket event, store reply,
//!   generator event or `Node::poll_timeout` — and no policy of its own;
//! - HTTP with hyper 1.x and WebSocket with async-tungstenite;
//! - exactly one writer task per connection, fed by a bounded queue; a full
//!   queue first merges pending deltas of the same reply into one `chunk`
//!   frame (`from_seq..=seq`) and only then closes with 4008;
//! - the in-memory store (the core's reference model behind a task) and the
//!   Redis store (one script per operation, one always-drained pub/sub
//!   connection, reconnect with backoff and resubscribe);
//! - generators (demo and OpenAI-compatible) as abortable tasks.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
