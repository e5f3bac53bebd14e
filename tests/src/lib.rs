//! weir-tests: black-box end-to-end tests of the real `weir` binary.
//!
//! **Skeleton.** No tests live here yet; they need the server, which arrives
//! with the milestone "server on tokio". What this crate will hold (see
//! `DESIGN.md`, "Tests"): helpers that start `weir` processes and a real
//! `redis-server` on free ports, real WebSocket clients, and one suite written
//! once and run against both runtimes — single node, several nodes sharing
//! Redis, cancel from another node, resume across nodes, node death.
//!
//! `./scripts/test.sh` already installs `redis-server` when it is missing, so
//! these tests can rely on it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
