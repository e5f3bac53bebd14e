//! weir-server: the `weir` binary.
//!
//! **Skeleton.** The binary (`src/main.rs`) only knows `--version` and
//! `--help`; `weir serve` says that the server is not built yet and exits with
//! code 2. What this crate will hold (see `DESIGN.md`, "Server binary"):
//!
//! - subcommands (`serve`, and operator helpers), configured by flags, `WEIR_*`
//!   environment variables and an optional TOML file, in that order of
//!   precedence;
//! - defaults: listen on 127.0.0.1:8080, the tokio runtime, the in-memory
//!   store, the demo generator, auth off with a loud warning;
//! - the choice of runtime, store and generator, the web page at `/`, the
//!   WebSocket and HTTP API of `PROTOCOL.md`, `/healthz`, `/readyz`,
//!   `/metrics`, `tracing` logs, and graceful shutdown.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
