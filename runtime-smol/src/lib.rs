//! weir-runtime-smol: drives [`weir_core`] on smol.
//!
//! **Skeleton.** Nothing is implemented yet. It will be the same runtime as
//! `weir-runtime-tokio` on smol (see `DESIGN.md`, "Runtimes"): the run loop
//! around `Node::handle_input` / `Node::poll_output` / `Node::poll_timeout`,
//! hyper 1.x and async-tungstenite, one writer per connection behind a bounded
//! queue, the in-memory and Redis stores, and abortable generators — holding
//! no policy, since every decision is the core's.
//!
//! Its tests must not run inside a tokio context: the `redis` crate picks
//! tokio when it sees one.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
