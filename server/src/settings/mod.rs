//! The server's settings: one [`Layer`] of optional values per source,
//! merged in order of precedence and checked by [`resolve`] into
//! [`Settings`], whose heart is the runtime's own [`RuntimeConfig`].
//!
//! A [`Layer`] is both the clap argument group of `weir serve` (each field is
//! a `--flag` that clap also reads from its `WEIR_*` variable, flag first) and
//! the schema of the TOML file (the same names with underscores). Nothing in a
//! layer has a default: a missing value falls through to the next layer, and
//! only [`resolve`] fills in the defaults, so "set in the file" and "left at
//! the default" can be told apart.
//!
//! There is one vocabulary: what a layer sets lands in the runtime's types
//! ([`RuntimeConfig`], [`Auth`](weir_runtime::Auth),
//! [`GeneratorConfig`](weir_runtime::GeneratorConfig),
//! [`StoreBackend`](weir_runtime::StoreBackend)) and the core's
//! ([`weir_core::Config`]), and each default is the one defined next to the
//! type that uses it (`RuntimeConfig::DEFAULT_QUEUE_CAPACITY`,
//! `GeneratorConfig::default()`, `RedisSettings::new`, `weir_core::Config::new`
//! …). Only what the binary alone uses is defined here: the listen address,
//! the log filter, the node id's fallback, the runtime's kind and threads.
//!
//! - `layer`: [`Layer`], its merge, the TOML file;
//! - `resolve`: [`resolve`], the defaults and the checks;
//! - `print`: [`Settings::to_toml`], what `weir config` prints;
//! - `error`: [`ConfigError`].

use std::fmt;
use std::num::NonZeroUsize;

use serde::{Deserialize, Serialize};
use weir_runtime::RuntimeConfig;

mod error;
mod layer;
mod print;
mod resolve;

pub use error::ConfigError;
pub use layer::{AuthMode, GeneratorKind, Layer, Switch};
pub use print::{secs_shown, store_spec};
pub use resolve::{
    default_node_id, fallback_node_id, resolve, DEFAULT_LISTEN, DEFAULT_LOG, FALLBACK_NODE_ID,
    MAX_WORKER_THREADS, MEMORY_STORE,
};

/// Which async runtime drives the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// tokio's multi-threaded runtime.
    #[default]
    Tokio,
    /// smol: weir-runtime-smol's multi-threaded executor. No tokio runtime is
    /// started.
    Smol,
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tokio => "tokio",
            Self::Smol => "smol",
        })
    }
}

/// The effective, checked settings: every layer merged and every default
/// filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The async runtime.
    pub runtime: RuntimeKind,
    /// Threads that run tasks; `None`: one per core.
    pub worker_threads: Option<NonZeroUsize>,
    /// The tracing filter.
    pub log: String,
    /// Everything the server runs with, in the runtime's vocabulary; its
    /// `page` is left `None` (the binary adds the web page when it serves).
    pub server: RuntimeConfig,
}

#[cfg(test)]
mod tests;
