//! The server's settings: one [`Layer`] of optional values per source, merged
//! in order of precedence and checked by [`resolve`].
//!
//! A [`Layer`] is both the clap argument group of `weir serve` (each field is
//! a `--flag` that clap also reads from its `WEIR_*` variable, flag first) and
//! the schema of the TOML file (the same names with underscores). Nothing in a
//! layer has a default: a missing value falls through to the next layer, and
//! only [`resolve`] fills in the defaults, so "set in the file" and "left at
//! the default" can be told apart.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_core::ids::{IdError, NodeId};
use weir_core::presence::PresenceTimers;
use weir_core::store::StoreConfig;
use weir_core::stream::StreamTimers;
use weir_core::wire::Limits;
use weir_runtime::openai::{OpenAiConfig, Upstream, UpstreamUrlError};

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default chunks per demo reply.
pub const DEFAULT_DEMO_CHUNKS: u32 = 40;
/// Default demo pace, chunks per second.
pub const DEFAULT_DEMO_RATE: f64 = 20.0;
/// One more than the most worker threads accepted.
const MAX_WORKER_THREADS_EXCLUSIVE: usize = 1025;

/// Default per-connection outbound queue capacity, in frames.
pub const DEFAULT_QUEUE_CAPACITY: usize = 256;
/// Default longest wait for streams to settle on shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Default tracing filter.
pub const DEFAULT_LOG: &str = "info";
/// The node id used when no host name can be found.
pub const FALLBACK_NODE_ID: &str = "weir-1";

/// How clients prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No authentication: the user id is the `user_id` query parameter.
    None,
    /// HS256 JWT signed with `--jwt-secret`; the user is its `sub`.
    Token,
}

/// What produces the text of replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GeneratorKind {
    /// The built-in deterministic generator.
    Demo,
    /// An OpenAI-compatible upstream (`--upstream`, `--model`, …).
    Openai,
}

impl fmt::Display for GeneratorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GeneratorKind::Demo => "demo",
            GeneratorKind::Openai => "openai",
        })
    }
}

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
            RuntimeKind::Tokio => "tokio",
            RuntimeKind::Smol => "smol",
        })
    }
}

/// One source of settings: the command line with its environment variables,
/// or the TOML file. Every value is optional; see the [module docs](self).
///
/// Durations are in seconds and may be fractional (`--grace 0.5`).
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// Address to listen on, IP:PORT (port 0 picks a free one) [default: 127.0.0.1:8080]
    #[arg(long, env = "WEIR_LISTEN", value_name = "ADDR")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,

    /// The async runtime: tokio or smol [default: tokio]
    #[arg(long, env = "WEIR_RUNTIME", value_enum, value_name = "RUNTIME")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeKind>,

    /// Threads that run the server's tasks, on either runtime [default: one per core]
    #[arg(long, env = "WEIR_WORKER_THREADS", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,

    /// This node's name, 1-64 chars of A-Z a-z 0-9 _ - . : [default: HOSTNAME-PID]
    #[arg(long, env = "WEIR_NODE_ID", value_name = "ID")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,

    /// Client authentication [default: none]
    #[arg(long, env = "WEIR_AUTH", value_enum, value_name = "MODE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthMode>,

    /// HS256 secret for --auth token (prefer the environment variable: flags show in `ps`)
    #[arg(
        long,
        env = "WEIR_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<String>,

    /// What produces replies [default: demo]
    #[arg(long, env = "WEIR_GENERATOR", value_enum, value_name = "KIND")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorKind>,

    /// Chunks per demo reply [default: 40]
    #[arg(long, env = "WEIR_DEMO_CHUNKS", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demo_chunks: Option<u32>,

    /// Demo pace in chunks per second [default: 20]
    #[arg(long, env = "WEIR_DEMO_RATE", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demo_rate: Option<f64>,

    /// openai: the OpenAI-compatible server, http://HOST[:PORT][/BASE]; requests go to BASE/v1/chat/completions
    #[arg(long, env = "WEIR_UPSTREAM", value_name = "URL")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,

    /// openai: the `model` of each request (required with --generator openai)
    #[arg(long, env = "WEIR_MODEL", value_name = "NAME")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,

    /// openai: sent as `Authorization: Bearer KEY` (prefer the environment variable: flags show in `ps`)
    #[arg(long, env = "WEIR_API_KEY", value_name = "KEY", hide_env_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,

    /// openai: `max_tokens` of each reply [default: the server's]
    #[arg(long, env = "WEIR_MAX_TOKENS", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,

    /// openai: sampling `temperature`, 0 to 2 [default: the server's]
    #[arg(long, env = "WEIR_TEMPERATURE", value_name = "T")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,

    /// openai: sampling `seed`, for reproducible replies [default: the server's]
    #[arg(long, env = "WEIR_SEED", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,

    /// openai: a system message put before every conversation [default: none]
    #[arg(long, env = "WEIR_SYSTEM_PROMPT", value_name = "TEXT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,

    /// openai: the longest wait for the connection, the answer, and between two events; then the reply fails with upstream_timeout [default: 60]
    #[arg(long, env = "WEIR_UPSTREAM_TIMEOUT", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_timeout: Option<f64>,

    /// Cancel grace window: how long a finished reply's outcome is remembered [default: 30]
    #[arg(long, env = "WEIR_GRACE", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<f64>,

    /// How long a producer's lease lasts without renewal [default: 10]
    #[arg(long, env = "WEIR_LEASE_TTL", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<f64>,

    /// How long a cancelled reply waits for its producer to stop [default: 5]
    #[arg(long, env = "WEIR_CANCEL_DEADLINE", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_deadline: Option<f64>,

    /// How long a user stays online after their last connection closed [default: 5]
    #[arg(long, env = "WEIR_PRESENCE_DEBOUNCE", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_debounce: Option<f64>,

    /// How long a node's presence entries outlive it: a killed node's users go offline after this; above 2 (the refresh period) [default: 30]
    #[arg(long, env = "WEIR_PRESENCE_EXPIRY", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_expiry: Option<f64>,

    /// WebSocket ping interval on a quiet connection [default: 15]
    #[arg(long, env = "WEIR_HEARTBEAT", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<f64>,

    /// Close a connection silent for this long with 4000; must exceed --heartbeat [default: 60]
    #[arg(long, env = "WEIR_IDLE_TIMEOUT", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<f64>,

    /// Largest inbound frame or request body in bytes; larger closes with 1009 [default: 65536]
    #[arg(long, env = "WEIR_MAX_FRAME_BYTES", value_name = "BYTES")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frame_bytes: Option<usize>,

    /// Largest user text in bytes after trimming; below --max-frame-bytes [default: 32768]
    #[arg(long, env = "WEIR_MAX_CONTENT_BYTES", value_name = "BYTES")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_content_bytes: Option<usize>,

    /// Most messages sent in the `history` frame [default: 200]
    #[arg(long, env = "WEIR_HISTORY_LIMIT", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_limit: Option<usize>,

    /// Per-connection outbound queue, in frames [default: 256]
    #[arg(long, env = "WEIR_QUEUE_CAPACITY", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_capacity: Option<usize>,

    /// Longest wait for streams to settle on shutdown [default: 5]
    #[arg(long, env = "WEIR_SHUTDOWN_GRACE", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_grace: Option<f64>,

    /// Where the store lives: `memory` (this process only) or `redis://HOST:PORT[/DB]` (shared by many nodes) [default: memory]
    #[arg(long, env = "WEIR_STORE", value_name = "STORE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,

    /// Prefix of every Redis key and channel; nodes that share it share conversations [default: weir]
    #[arg(long, env = "WEIR_REDIS_PREFIX", value_name = "PREFIX")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_prefix: Option<String>,

    /// How long Redis keeps a conversation's history after its last message; 0 keeps it [default: 0]
    #[arg(long, env = "WEIR_HISTORY_RETENTION", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_retention: Option<f64>,

    /// How long connecting to Redis or one Redis request may take before the store counts as unreachable [default: 2]
    #[arg(long, env = "WEIR_STORE_TIMEOUT", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_timeout: Option<f64>,

    /// Log filter, tracing-subscriber EnvFilter syntax, e.g. "info,weir_runtime=debug" [default: info]
    #[arg(long, env = "WEIR_LOG", value_name = "FILTER")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

impl Layer {
    /// This layer, with each missing value taken from `lower`.
    #[must_use]
    pub fn or(self, lower: Layer) -> Layer {
        Layer {
            listen: self.listen.or(lower.listen),
            runtime: self.runtime.or(lower.runtime),
            worker_threads: self.worker_threads.or(lower.worker_threads),
            node_id: self.node_id.or(lower.node_id),
            auth: self.auth.or(lower.auth),
            jwt_secret: self.jwt_secret.or(lower.jwt_secret),
            generator: self.generator.or(lower.generator),
            demo_chunks: self.demo_chunks.or(lower.demo_chunks),
            demo_rate: self.demo_rate.or(lower.demo_rate),
            upstream: self.upstream.or(lower.upstream),
            model: self.model.or(lower.model),
            api_key: self.api_key.or(lower.api_key),
            max_tokens: self.max_tokens.or(lower.max_tokens),
            temperature: self.temperature.or(lower.temperature),
            seed: self.seed.or(lower.seed),
            system_prompt: self.system_prompt.or(lower.system_prompt),
            upstream_timeout: self.upstream_timeout.or(lower.upstream_timeout),
            grace: self.grace.or(lower.grace),
            lease_ttl: self.lease_ttl.or(lower.lease_ttl),
            cancel_deadline: self.cancel_deadline.or(lower.cancel_deadline),
            presence_debounce: self.presence_debounce.or(lower.presence_debounce),
            presence_expiry: self.presence_expiry.or(lower.presence_expiry),
            heartbeat: self.heartbeat.or(lower.heartbeat),
            idle_timeout: self.idle_timeout.or(lower.idle_timeout),
            max_frame_bytes: self.max_frame_bytes.or(lower.max_frame_bytes),
            max_content_bytes: self.max_content_bytes.or(lower.max_content_bytes),
            history_limit: self.history_limit.or(lower.history_limit),
            queue_capacity: self.queue_capacity.or(lower.queue_capacity),
            shutdown_grace: self.shutdown_grace.or(lower.shutdown_grace),
            store: self.store.or(lower.store),
            redis_prefix: self.redis_prefix.or(lower.redis_prefix),
            history_retention: self.history_retention.or(lower.history_retention),
            store_timeout: self.store_timeout.or(lower.store_timeout),
            log: self.log.or(lower.log),
        }
    }

    /// Parses a TOML document (`path` only names it in errors).
    pub fn from_toml(text: &str, path: &Path) -> Result<Layer, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::FileSyntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Reads and parses the TOML file at `path`.
    pub fn from_file(path: &Path) -> Result<Layer, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::FileRead {
            path: path.to_path_buf(),
            source: e,
        })?;
        Layer::from_toml(&text, path)
    }
}

/// Why the settings cannot be used. Each message names the setting as flag;
/// the same value may have come from its `WEIR_*` variable or the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file cannot be read.
    #[error("cannot read config file {}: {source}", path.display())]
    FileRead {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML for these settings (bad syntax,
    /// an unknown key, a wrongly typed value).
    #[error("config file {}: {message}", path.display())]
    FileSyntax {
        /// The file.
        path: PathBuf,
        /// What the parser said, with line and column.
        message: String,
    },
    /// `--listen` is not an IP:PORT address.
    #[error(
        "--listen {value:?}: expected IP:PORT, e.g. 127.0.0.1:8080, 0.0.0.0:8080 or [::1]:8080"
    )]
    BadListen {
        /// The value given.
        value: String,
    },
    /// `--node-id` breaks the node id syntax.
    #[error("--node-id {value:?}: {source} (1-64 characters of A-Z a-z 0-9 _ - . :)")]
    BadNodeId {
        /// The value given.
        value: String,
        /// Which rule it breaks.
        source: IdError,
    },
    /// `--auth token` without a secret.
    #[error("--auth token needs a secret: set --jwt-secret, WEIR_JWT_SECRET or jwt_secret in the config file")]
    MissingJwtSecret,
    /// A secret was given but auth is off: the operator probably meant
    /// `--auth token`; refusing is safer than serving without auth.
    #[error("a JWT secret is set but auth is none: add --auth token to require tokens, or drop the secret")]
    JwtSecretWithoutTokenAuth,
    /// `--generator openai` without `--upstream`.
    #[error("--generator openai needs --upstream URL, e.g. --upstream http://127.0.0.1:8000")]
    MissingUpstream,
    /// `--generator openai` without `--model`.
    #[error("--generator openai needs --model NAME (any name for a server with one model, e.g. llama.cpp's)")]
    MissingModel,
    /// `--upstream` is set but the generator is the demo: the operator
    /// probably meant `--generator openai`.
    #[error(
        "--upstream is set but the generator is demo: add --generator openai, or drop --upstream"
    )]
    UpstreamWithoutOpenai,
    /// `--upstream` cannot be used.
    #[error("--upstream {value:?}: {source}")]
    BadUpstream {
        /// The value given.
        value: String,
        /// Why not.
        source: UpstreamUrlError,
    },
    /// A value is out of range.
    #[error("--{flag} {value}: {rule}")]
    OutOfRange {
        /// The flag, without `--`.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is required.
        rule: &'static str,
    },
    /// The log filter does not parse.
    #[error("--log {value:?}: {message}")]
    BadLogFilter {
        /// The value given.
        value: String,
        /// What the parser said.
        message: String,
    },
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret's bytes.
    #[must_use]
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How clients are authenticated, with what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthSetting {
    /// Anyone can act as any user.
    None,
    /// HS256 JWT.
    Token {
        /// The shared secret.
        secret: Secret,
    },
}

/// The generator, with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum GeneratorSetting {
    /// The built-in demo generator.
    Demo {
        /// Chunks per reply, at least 1.
        chunks: u32,
        /// Chunks per second, positive.
        rate_per_sec: f64,
    },
    /// An OpenAI-compatible upstream (its `Debug` hides the API key).
    Openai(OpenAiConfig),
}

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSetting {
    /// In this process.
    Memory,
    /// In Redis.
    Redis {
        /// `redis://…`.
        url: String,
        /// Key and channel prefix.
        prefix: String,
        /// History retention (zero: kept).
        history_retention: Duration,
        /// Connect and request timeout.
        timeout: Duration,
    },
}

/// The effective, checked settings: every layer merged and every default
/// filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The async runtime.
    pub runtime: RuntimeKind,
    /// Threads that run tasks; `None`: one per core.
    pub worker_threads: Option<NonZeroUsize>,
    /// This node's name.
    pub node_id: NodeId,
    /// Client authentication.
    pub auth: AuthSetting,
    /// What produces replies.
    pub generator: GeneratorSetting,
    /// The cancel grace window.
    pub grace: Duration,
    /// The producer lease.
    pub lease_ttl: Duration,
    /// How long a cancelled reply waits for its producer.
    pub cancel_deadline: Duration,
    /// Presence debounce.
    pub presence_debounce: Duration,
    /// How long presence entries live without their node refreshing them.
    pub presence_expiry: Duration,
    /// WebSocket ping interval.
    pub heartbeat: Duration,
    /// Idle timeout (close 4000).
    pub idle_timeout: Duration,
    /// Inbound size limits.
    pub limits: Limits,
    /// Messages in the `history` frame.
    pub history_limit: usize,
    /// Per-connection outbound queue capacity.
    pub queue_capacity: usize,
    /// Longest wait for settling on shutdown.
    pub shutdown_grace: Duration,
    /// Where the store lives.
    pub store: StoreSetting,
    /// The tracing filter.
    pub log: String,
}

/// Merges the command line (flags, then their `WEIR_*` variables, as clap
/// already did) over the file, fills in defaults, and checks everything.
///
/// Precedence: `cli` > `file` > defaults.
pub fn resolve(cli: &Layer, file: &Layer) -> Result<Settings, ConfigError> {
    let m = cli.clone().or(file.clone());
    // Read while `m` is whole; only `--generator openai` uses it (below).
    let openai_setting = openai(&m);
    let defaults = weir_core::Config::new(default_node_id());

    let listen = parse_listen(m.listen.as_deref().unwrap_or(DEFAULT_LISTEN))?;
    let node_id = match m.node_id {
        Some(v) => NodeId::parse(v.clone())
            .map_err(|source| ConfigError::BadNodeId { value: v, source })?,
        None => defaults.node_id.clone(),
    };

    let auth = match (m.auth.unwrap_or(AuthMode::None), m.jwt_secret) {
        (AuthMode::None, None) => AuthSetting::None,
        (AuthMode::None, Some(_)) => return Err(ConfigError::JwtSecretWithoutTokenAuth),
        (AuthMode::Token, None) => return Err(ConfigError::MissingJwtSecret),
        (AuthMode::Token, Some(s)) if s.is_empty() => return Err(ConfigError::MissingJwtSecret),
        (AuthMode::Token, Some(s)) => AuthSetting::Token { secret: Secret(s) },
    };

    let generator = match m.generator.unwrap_or(GeneratorKind::Demo) {
        GeneratorKind::Demo => {
            let chunks = m.demo_chunks.unwrap_or(DEFAULT_DEMO_CHUNKS);
            if chunks == 0 {
                return Err(range("demo-chunks", chunks, "must be at least 1"));
            }
            let rate = m.demo_rate.unwrap_or(DEFAULT_DEMO_RATE);
            if !(rate.is_finite() && rate > 0.0) {
                return Err(range("demo-rate", rate, "must be a positive number"));
            }
            GeneratorSetting::Demo {
                chunks,
                rate_per_sec: rate,
            }
        }
        GeneratorKind::Openai => GeneratorSetting::Openai(openai_setting?),
    };
    if m.upstream.is_some() && !matches!(generator, GeneratorSetting::Openai(_)) {
        return Err(ConfigError::UpstreamWithoutOpenai);
    }

    let st = StreamTimers::default();
    let pt = PresenceTimers::default();
    let grace = secs("grace", m.grace, ms(st.grace_ms), Min::Zero)?;
    let lease_ttl = secs("lease-ttl", m.lease_ttl, ms(st.lease_ttl_ms), Min::Positive)?;
    let cancel_deadline = secs(
        "cancel-deadline",
        m.cancel_deadline,
        ms(st.cancel_deadline_ms),
        Min::Positive,
    )?;
    let presence_debounce = secs(
        "presence-debounce",
        m.presence_debounce,
        ms(pt.debounce_ms),
        Min::Zero,
    )?;
    let presence_expiry = secs(
        "presence-expiry",
        m.presence_expiry,
        ms(pt.entry_ttl_ms),
        Min::Positive,
    )?;
    if presence_expiry <= defaults.housekeeping {
        return Err(range(
            "presence-expiry",
            presence_expiry.as_secs_f64(),
            "must be longer than the presence refresh period (2 s)",
        ));
    }
    let heartbeat = secs("heartbeat", m.heartbeat, defaults.heartbeat, Min::Positive)?;
    let idle_timeout = secs(
        "idle-timeout",
        m.idle_timeout,
        defaults.idle_timeout,
        Min::Positive,
    )?;
    if idle_timeout <= heartbeat {
        return Err(range(
            "idle-timeout",
            idle_timeout.as_secs_f64(),
            "must be longer than --heartbeat (pongs answer the pings that keep a connection alive)",
        ));
    }
    let shutdown_grace = secs(
        "shutdown-grace",
        m.shutdown_grace,
        DEFAULT_SHUTDOWN_GRACE,
        Min::Zero,
    )?;

    let max_frame_bytes = m.max_frame_bytes.unwrap_or(Limits::DEFAULT_MAX_FRAME_BYTES);
    if max_frame_bytes < 1024 {
        return Err(range(
            "max-frame-bytes",
            max_frame_bytes,
            "must be at least 1024",
        ));
    }
    let max_content_bytes = m
        .max_content_bytes
        .unwrap_or(Limits::DEFAULT_MAX_CONTENT_BYTES);
    if max_content_bytes == 0 || max_content_bytes >= max_frame_bytes {
        return Err(range(
            "max-content-bytes",
            max_content_bytes,
            "must be at least 1 and below --max-frame-bytes (a chat frame carries the text plus JSON)",
        ));
    }
    let history_limit = m.history_limit.unwrap_or(defaults.history_limit);
    if history_limit == 0 {
        return Err(range("history-limit", history_limit, "must be at least 1"));
    }
    let worker_threads = match m.worker_threads {
        None => None,
        Some(n @ (0 | MAX_WORKER_THREADS_EXCLUSIVE..)) => {
            return Err(range(
                "worker-threads",
                n,
                "must be at least 1 and at most 1024",
            ));
        }
        Some(n) => NonZeroUsize::new(n),
    };
    let queue_capacity = m.queue_capacity.unwrap_or(DEFAULT_QUEUE_CAPACITY);
    if queue_capacity == 0 {
        return Err(range(
            "queue-capacity",
            queue_capacity,
            "must be at least 1",
        ));
    }

    let store = match m.store.as_deref().unwrap_or("memory") {
        "memory" => StoreSetting::Memory,
        url if url.starts_with("redis://") => {
            let prefix = m.redis_prefix.unwrap_or_else(|| "weir".to_owned());
            let prefix_ok = !prefix.is_empty()
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
            if !prefix_ok {
                return Err(range(
                    "redis-prefix",
                    prefix,
                    "must be 1 or more of A-Z a-z 0-9 _ - . :",
                ));
            }
            StoreSetting::Redis {
                url: url.to_owned(),
                prefix,
                history_retention: secs(
                    "history-retention",
                    m.history_retention,
                    Duration::ZERO,
                    Min::Zero,
                )?,
                timeout: secs(
                    "store-timeout",
                    m.store_timeout,
                    Duration::from_secs(2),
                    Min::Positive,
                )?,
            }
        }
        other => {
            return Err(range(
                "store",
                other,
                "must be `memory` or a redis://HOST:PORT URL",
            ))
        }
    };

    let log = m.log.unwrap_or_else(|| DEFAULT_LOG.to_owned());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
        return Err(ConfigError::BadLogFilter {
            value: log,
            message: e.to_string(),
        });
    }

    Ok(Settings {
        listen,
        runtime: m.runtime.unwrap_or_default(),
        worker_threads,
        node_id,
        auth,
        generator,
        grace,
        lease_ttl,
        cancel_deadline,
        presence_debounce,
        presence_expiry,
        heartbeat,
        idle_timeout,
        limits: Limits {
            max_frame_bytes,
            max_content_bytes,
        },
        history_limit,
        queue_capacity,
        shutdown_grace,
        store,
        log,
    })
}

impl Settings {
    /// The stream timers, the same for the node and the store.
    #[must_use]
    pub fn stream_timers(&self) -> StreamTimers {
        StreamTimers {
            lease_ttl_ms: millis(self.lease_ttl),
            cancel_deadline_ms: millis(self.cancel_deadline),
            grace_ms: millis(self.grace),
        }
    }

    /// The presence timers, the same for the node and the store.
    #[must_use]
    pub fn presence_timers(&self) -> PresenceTimers {
        PresenceTimers {
            debounce_ms: millis(self.presence_debounce),
            entry_ttl_ms: millis(self.presence_expiry),
        }
    }

    /// The node's core settings.
    #[must_use]
    pub fn node_config(&self) -> weir_core::Config {
        let mut c = weir_core::Config::new(self.node_id.clone());
        c.limits = self.limits;
        c.timers = self.stream_timers();
        c.presence = self.presence_timers();
        c.heartbeat = self.heartbeat;
        c.idle_timeout = self.idle_timeout;
        c.history_limit = self.history_limit;
        c
    }

    /// The store's settings. It keeps at least as much history as the
    /// `history` frame shows.
    #[must_use]
    pub fn store_config(&self) -> StoreConfig {
        let d = StoreConfig::default();
        StoreConfig {
            timers: self.stream_timers(),
            presence: self.presence_timers(),
            history_limit: d.history_limit.max(self.history_limit),
            ..d
        }
    }

    /// These settings as a fully populated layer: what `weir config` prints.
    /// The JWT secret and the API key are left out (each is replaced by a
    /// comment there).
    #[must_use]
    pub fn to_layer(&self) -> Layer {
        let auth = match self.auth {
            AuthSetting::None => AuthMode::None,
            AuthSetting::Token { .. } => AuthMode::Token,
        };
        let (generator, demo_chunks, demo_rate) = match self.generator {
            GeneratorSetting::Demo {
                chunks,
                rate_per_sec,
            } => (GeneratorKind::Demo, Some(chunks), Some(rate_per_sec)),
            GeneratorSetting::Openai(_) => (GeneratorKind::Openai, None, None),
        };
        let openai = match &self.generator {
            GeneratorSetting::Openai(c) => Some(c),
            GeneratorSetting::Demo { .. } => None,
        };
        Layer {
            listen: Some(self.listen.to_string()),
            runtime: Some(self.runtime),
            worker_threads: self.worker_threads.map(NonZeroUsize::get),
            node_id: Some(self.node_id.to_string()),
            auth: Some(auth),
            jwt_secret: None,
            generator: Some(generator),
            demo_chunks,
            demo_rate,
            upstream: openai.map(|c| c.upstream.to_string()),
            model: openai.map(|c| c.model.clone()),
            api_key: None,
            max_tokens: openai.and_then(|c| c.max_tokens),
            temperature: openai.and_then(|c| c.temperature),
            seed: openai.and_then(|c| c.seed),
            system_prompt: openai.and_then(|c| c.system_prompt.clone()),
            upstream_timeout: openai.map(|c| c.timeout.as_secs_f64()),
            grace: Some(self.grace.as_secs_f64()),
            lease_ttl: Some(self.lease_ttl.as_secs_f64()),
            cancel_deadline: Some(self.cancel_deadline.as_secs_f64()),
            presence_debounce: Some(self.presence_debounce.as_secs_f64()),
            presence_expiry: Some(self.presence_expiry.as_secs_f64()),
            heartbeat: Some(self.heartbeat.as_secs_f64()),
            idle_timeout: Some(self.idle_timeout.as_secs_f64()),
            max_frame_bytes: Some(self.limits.max_frame_bytes),
            max_content_bytes: Some(self.limits.max_content_bytes),
            history_limit: Some(self.history_limit),
            queue_capacity: Some(self.queue_capacity),
            shutdown_grace: Some(self.shutdown_grace.as_secs_f64()),
            store: Some(match &self.store {
                StoreSetting::Memory => "memory".to_owned(),
                StoreSetting::Redis { url, .. } => url.clone(),
            }),
            redis_prefix: match &self.store {
                StoreSetting::Memory => None,
                StoreSetting::Redis { prefix, .. } => Some(prefix.clone()),
            },
            history_retention: match &self.store {
                StoreSetting::Memory => None,
                StoreSetting::Redis {
                    history_retention, ..
                } => Some(history_retention.as_secs_f64()),
            },
            store_timeout: match &self.store {
                StoreSetting::Memory => None,
                StoreSetting::Redis { timeout, .. } => Some(timeout.as_secs_f64()),
            },
            log: Some(self.log.clone()),
        }
    }

    /// The effective configuration as a TOML document that `--config` reads
    /// back (the JWT secret is never printed).
    #[must_use]
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(&self.to_layer())
            .unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"));
        let secret = match self.auth {
            AuthSetting::None => "",
            AuthSetting::Token { .. } => "# jwt_secret is set (not shown)\n",
        };
        let api_key = match &self.generator {
            GeneratorSetting::Openai(c) if c.api_key.is_some() => "# api_key is set (not shown)\n",
            _ => "",
        };
        format!("# weir effective configuration\n{secret}{api_key}{body}")
    }
}

/// The `openai` generator's settings from the merged layer `m`.
fn openai(m: &Layer) -> Result<OpenAiConfig, ConfigError> {
    let url = m.upstream.as_deref().ok_or(ConfigError::MissingUpstream)?;
    let upstream = Upstream::parse(url).map_err(|source| ConfigError::BadUpstream {
        value: url.to_owned(),
        source,
    })?;
    let model = m
        .model
        .clone()
        .filter(|s| !s.trim().is_empty())
        .ok_or(ConfigError::MissingModel)?;
    if m.max_tokens == Some(0) {
        return Err(range("max-tokens", 0, "must be at least 1"));
    }
    if let Some(t) = m.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(range("temperature", t, "must be a number from 0 to 2"));
        }
    }
    let timeout = secs(
        "upstream-timeout",
        m.upstream_timeout,
        OpenAiConfig::DEFAULT_TIMEOUT,
        Min::Positive,
    )?;
    Ok(OpenAiConfig {
        api_key: m.api_key.clone().filter(|k| !k.is_empty()),
        max_tokens: m.max_tokens,
        temperature: m.temperature,
        seed: m.seed,
        system_prompt: m.system_prompt.clone().filter(|s| !s.is_empty()),
        timeout,
        ..OpenAiConfig::new(upstream, model)
    })
}

/// `HOSTNAME-PID`, cut and cleaned to the node id syntax, or
/// [`FALLBACK_NODE_ID`] when there is no usable host name.
#[must_use]
pub fn default_node_id() -> NodeId {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    node_id_from(&host, std::process::id())
}

/// `host-pid` in the node id syntax: characters outside it become `-`, the
/// host part is cut so that the whole fits 64 characters.
fn node_id_from(host: &str, pid: u32) -> NodeId {
    let suffix = format!("-{pid}");
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':') {
                c
            } else {
                '-'
            }
        })
        .take(NodeId::MAX_LEN - suffix.len())
        .collect();
    if host.is_empty() {
        return fallback_node_id();
    }
    NodeId::parse(format!("{host}{suffix}")).unwrap_or_else(|_| fallback_node_id())
}

fn fallback_node_id() -> NodeId {
    NodeId::parse(FALLBACK_NODE_ID).expect("FALLBACK_NODE_ID is a valid node id")
}

fn parse_listen(value: &str) -> Result<SocketAddr, ConfigError> {
    let bad = || ConfigError::BadListen {
        value: value.to_owned(),
    };
    if let Ok(a) = value.parse::<SocketAddr>() {
        return Ok(a);
    }
    // `localhost:PORT` is common enough to accept without a resolver.
    match value.strip_prefix("localhost:") {
        Some(port) => port
            .parse::<u16>()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p))
            .map_err(|_| bad()),
        None => Err(bad()),
    }
}

#[derive(Clone, Copy)]
enum Min {
    Zero,
    Positive,
}

fn secs(
    flag: &'static str,
    value: Option<f64>,
    default: Duration,
    min: Min,
) -> Result<Duration, ConfigError> {
    let Some(v) = value else {
        return Ok(default);
    };
    let (ok, rule) = match min {
        Min::Zero => (v >= 0.0, "must be a number of seconds, 0 or more"),
        Min::Positive => (v > 0.0, "must be a positive number of seconds"),
    };
    if !ok {
        return Err(range(flag, v, rule));
    }
    Duration::try_from_secs_f64(v).map_err(|_| range(flag, v, "is not a usable duration"))
}

fn range(flag: &'static str, value: impl fmt::Display, rule: &'static str) -> ConfigError {
    ConfigError::OutOfRange {
        flag,
        value: value.to_string(),
        rule,
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
