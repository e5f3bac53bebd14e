//! One source of settings: [`Layer`], the command line's `weir serve`
//! arguments and the TOML file's schema at once, and how layers merge.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weir_runtime::{Auth, GeneratorConfig};

use super::{ConfigError, RuntimeKind};

/// How clients prove who they are: the kind of [`Auth`], as `--auth` and
/// the file's `auth` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No authentication: the user id is the `user_id` query parameter.
    None,
    /// A JWT verified by `--jwt-secret` (HS256), `--jwt-public-key` or
    /// `--jwt-jwks`; the user is its `sub`.
    Token,
}

impl From<&Auth> for AuthMode {
    fn from(auth: &Auth) -> Self {
        match auth {
            Auth::None => Self::None,
            Auth::Token(_) => Self::Token,
        }
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Token => "token",
        })
    }
}

/// On or off, as `--compat` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

impl fmt::Display for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::On => "on",
            Self::Off => "off",
        })
    }
}

/// What produces the text of replies: the kind of [`GeneratorConfig`], as
/// `--generator` and the file's `generator` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GeneratorKind {
    /// The built-in deterministic generator.
    Demo,
    /// An OpenAI-compatible upstream (`--upstream`, `--model`, …).
    Openai,
}

impl From<&GeneratorConfig> for GeneratorKind {
    fn from(generator: &GeneratorConfig) -> Self {
        match generator {
            GeneratorConfig::Demo { .. } => Self::Demo,
            GeneratorConfig::Openai(_) => Self::Openai,
        }
    }
}

impl fmt::Display for GeneratorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Demo => "demo",
            Self::Openai => "openai",
        })
    }
}

/// One source of settings: the command line with its environment variables,
/// or the TOML file. Every value is optional; see the
/// [module docs](super).
///
/// Durations are in seconds and may be fractional (`--grace 0.5`). The
/// default each flag's `--help` shows is added by
/// [`cli::command`](crate::cli::command), read from where it is defined.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// Address to listen on, IP:PORT (port 0 picks a free one)
    #[arg(long, env = "WEIR_LISTEN", value_name = "ADDR")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,

    /// The async runtime: tokio or smol
    #[arg(long, env = "WEIR_RUNTIME", value_enum, value_name = "RUNTIME")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeKind>,

    /// Threads that run the server's tasks, on either runtime
    #[arg(long, env = "WEIR_WORKER_THREADS", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,

    /// This node's name, 1-64 chars of A-Z a-z 0-9 _ - . :
    #[arg(long, env = "WEIR_NODE_ID", value_name = "ID")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,

    /// Client authentication
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

    /// PEM public key file (RSA, EC P-256/P-384 or Ed25519) for --auth token; reread on SIGHUP
    #[arg(long, env = "WEIR_JWT_PUBLIC_KEY", value_name = "PATH")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_public_key: Option<PathBuf>,

    /// JWKS file for --auth token, keys chosen by the token's kid; reread on SIGHUP
    #[arg(long, env = "WEIR_JWT_JWKS", value_name = "PATH")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_jwks: Option<PathBuf>,

    /// Accepted token audience (repeat or comma-separate for several); when set, a token's aud must name one; unset: aud is not checked
    #[arg(
        long,
        env = "WEIR_JWT_AUDIENCE",
        value_name = "AUD",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_audience: Option<Vec<String>>,

    /// Required token issuer (the iss claim); unset: iss is not checked
    #[arg(long, env = "WEIR_JWT_ISSUER", value_name = "ISS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_issuer: Option<String>,

    /// What produces replies
    #[arg(long, env = "WEIR_GENERATOR", value_enum, value_name = "KIND")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorKind>,

    /// Chunks per demo reply
    #[arg(long, env = "WEIR_DEMO_CHUNKS", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demo_chunks: Option<u32>,

    /// Demo pace in chunks per second
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

    /// openai: `max_tokens` of each reply
    #[arg(long, env = "WEIR_MAX_TOKENS", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,

    /// openai: sampling `temperature`, 0 to 2
    #[arg(long, env = "WEIR_TEMPERATURE", value_name = "T")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,

    /// openai: sampling `seed`, for reproducible replies
    #[arg(long, env = "WEIR_SEED", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,

    /// openai: a system message put before every conversation
    #[arg(long, env = "WEIR_SYSTEM_PROMPT", value_name = "TEXT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,

    /// openai: the longest wait for the connection, the answer, and between two events; then the reply fails with upstream_timeout
    #[arg(long, env = "WEIR_UPSTREAM_TIMEOUT", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_timeout: Option<f64>,

    /// Cancel grace window: how long a finished reply's outcome is remembered
    #[arg(long, env = "WEIR_GRACE", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<f64>,

    /// How long a producer's lease lasts without renewal
    #[arg(long, env = "WEIR_LEASE_TTL", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<f64>,

    /// How long a cancelled reply waits for its producer to stop
    #[arg(long, env = "WEIR_CANCEL_DEADLINE", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_deadline: Option<f64>,

    /// How long a user stays online after their last connection closed
    #[arg(long, env = "WEIR_PRESENCE_DEBOUNCE", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_debounce: Option<f64>,

    /// How long a node's presence entries outlive it: a killed node's users go offline after this; above 2 (the refresh period)
    #[arg(long, env = "WEIR_PRESENCE_EXPIRY", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_expiry: Option<f64>,

    /// WebSocket ping interval on a quiet connection
    #[arg(long, env = "WEIR_HEARTBEAT", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<f64>,

    /// Close a connection silent for this long with 4000; must exceed --heartbeat
    #[arg(long, env = "WEIR_IDLE_TIMEOUT", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<f64>,

    /// Largest inbound frame or request body in bytes on the wire (escapes count as sent); larger closes with 1009
    #[arg(long, env = "WEIR_MAX_FRAME_BYTES", value_name = "BYTES")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frame_bytes: Option<usize>,

    /// Largest user text in UTF-8 bytes after unescaping and trimming; below --max-frame-bytes
    #[arg(long, env = "WEIR_MAX_CONTENT_BYTES", value_name = "BYTES")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_content_bytes: Option<usize>,

    /// Most messages sent in the `history` frame
    #[arg(long, env = "WEIR_HISTORY_LIMIT", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_limit: Option<usize>,

    /// Per-connection outbound queue, in frames
    #[arg(long, env = "WEIR_QUEUE_CAPACITY", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_capacity: Option<usize>,

    /// Close a connection with 4008 when frames wait for it and none was written for this long
    #[arg(long, env = "WEIR_STALL_TIMEOUT", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_timeout: Option<f64>,

    /// Close a connection with 4008 when more reply text than this waits for it, in bytes
    #[arg(long, env = "WEIR_MAX_LAG_BYTES", value_name = "BYTES")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag_bytes: Option<usize>,

    /// Stamp `chunk` frames with `ts_ns`, the producing node's wall-clock time of the chunk's append (for load tools)
    #[arg(long, env = "WEIR_CHUNK_TIMESTAMPS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_timestamps: Option<bool>,

    /// Most open WebSocket connections per user, all nodes; 0: unlimited
    #[arg(long, env = "WEIR_MAX_CONNECTIONS_PER_USER", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_user: Option<u32>,

    /// Most replies streaming at once per user, across conversations, all nodes; 0: unlimited
    #[arg(long, env = "WEIR_MAX_STREAMS_PER_USER", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_streams_per_user: Option<u32>,

    /// Chats (WebSocket and HTTP) per minute per user, all nodes (token bucket); 0: unlimited
    #[arg(long, env = "WEIR_CHATS_PER_MINUTE", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chats_per_minute: Option<u32>,

    /// Chats a user may send at once before --chats-per-minute applies (the bucket's size)
    #[arg(long, env = "WEIR_CHAT_BURST", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_burst: Option<u32>,

    /// Most open WebSocket connections per client address, all nodes; 0: unlimited
    #[arg(long, env = "WEIR_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_ip: Option<u32>,

    /// A proxy (ADDR or ADDR/BITS) whose X-Forwarded-For names the client; repeatable
    #[arg(
        long = "trusted-proxy",
        env = "WEIR_TRUSTED_PROXY",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_proxy: Option<Vec<String>>,

    /// Longest wait for streams to settle on shutdown
    #[arg(long, env = "WEIR_SHUTDOWN_GRACE", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_grace: Option<f64>,

    /// The seed front end's compatibility surface: /ws/chat, /api/*, /health, /actuator/health
    #[arg(long, env = "WEIR_COMPAT", value_enum, value_name = "on|off")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compat: Option<Switch>,

    /// The path of the compat WebSocket (the page's VITE_WS_URL path)
    #[arg(long, env = "WEIR_COMPAT_WS_PATH", value_name = "PATH")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compat_ws_path: Option<String>,

    /// Text appended to a cancelled reply on the compat surface
    #[arg(long, env = "WEIR_COMPAT_CANCELLED_SUFFIX", value_name = "TEXT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compat_cancelled_suffix: Option<String>,

    /// Sentence after a failed reply's text on the compat surface
    #[arg(long, env = "WEIR_COMPAT_FAILURE_SENTENCE", value_name = "TEXT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compat_failure_sentence: Option<String>,

    /// The Vercel AI SDK's transports: /v1/ai-sdk/ws, /v1/ai-sdk/chat
    #[arg(long, env = "WEIR_AI_SDK", value_enum, value_name = "on|off")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_sdk: Option<Switch>,

    /// Origins allowed by CORS and on WebSocket upgrades (repeat or comma-separate; `*`: any)
    #[arg(
        long,
        env = "WEIR_CORS_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_origin: Option<Vec<String>>,

    /// Where the store lives: `memory` (this process only), `redis://HOST:PORT[/DB]` (shared by many nodes) or `redis-cluster://HOST:PORT[,HOST:PORT…]` (a Redis Cluster: seed nodes, the rest is discovered)
    #[arg(long, env = "WEIR_STORE", value_name = "STORE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,

    /// Prefix of every Redis key and channel; nodes that share it share conversations
    #[arg(long, env = "WEIR_REDIS_PREFIX", value_name = "PREFIX")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_prefix: Option<String>,

    /// How long Redis keeps a conversation's history after its last message; 0 keeps it
    #[arg(long, env = "WEIR_HISTORY_RETENTION", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_retention: Option<f64>,

    /// How long connecting to Redis or one Redis request may take before the store counts as unreachable
    #[arg(long, env = "WEIR_STORE_TIMEOUT", value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_timeout: Option<f64>,

    /// Log filter, tracing-subscriber EnvFilter syntax, e.g. "info,weir_runtime=debug"
    #[arg(long, env = "WEIR_LOG", value_name = "FILTER")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

impl Layer {
    /// This layer, with each missing value taken from `lower`.
    #[must_use]
    pub fn or(self, lower: Self) -> Self {
        Self {
            listen: self.listen.or(lower.listen),
            runtime: self.runtime.or(lower.runtime),
            worker_threads: self.worker_threads.or(lower.worker_threads),
            node_id: self.node_id.or(lower.node_id),
            auth: self.auth.or(lower.auth),
            jwt_secret: self.jwt_secret.or(lower.jwt_secret),
            jwt_public_key: self.jwt_public_key.or(lower.jwt_public_key),
            jwt_jwks: self.jwt_jwks.or(lower.jwt_jwks),
            jwt_audience: self.jwt_audience.or(lower.jwt_audience),
            jwt_issuer: self.jwt_issuer.or(lower.jwt_issuer),
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
            stall_timeout: self.stall_timeout.or(lower.stall_timeout),
            max_lag_bytes: self.max_lag_bytes.or(lower.max_lag_bytes),
            chunk_timestamps: self.chunk_timestamps.or(lower.chunk_timestamps),
            max_connections_per_user: self
                .max_connections_per_user
                .or(lower.max_connections_per_user),
            max_streams_per_user: self.max_streams_per_user.or(lower.max_streams_per_user),
            chats_per_minute: self.chats_per_minute.or(lower.chats_per_minute),
            chat_burst: self.chat_burst.or(lower.chat_burst),
            max_connections_per_ip: self.max_connections_per_ip.or(lower.max_connections_per_ip),
            trusted_proxy: self.trusted_proxy.or(lower.trusted_proxy),
            shutdown_grace: self.shutdown_grace.or(lower.shutdown_grace),
            compat: self.compat.or(lower.compat),
            compat_ws_path: self.compat_ws_path.or(lower.compat_ws_path),
            compat_cancelled_suffix: self
                .compat_cancelled_suffix
                .or(lower.compat_cancelled_suffix),
            compat_failure_sentence: self
                .compat_failure_sentence
                .or(lower.compat_failure_sentence),
            ai_sdk: self.ai_sdk.or(lower.ai_sdk),
            cors_origin: self.cors_origin.or(lower.cors_origin),
            store: self.store.or(lower.store),
            redis_prefix: self.redis_prefix.or(lower.redis_prefix),
            history_retention: self.history_retention.or(lower.history_retention),
            store_timeout: self.store_timeout.or(lower.store_timeout),
            log: self.log.or(lower.log),
        }
    }

    /// Parses a TOML document (`path` only names it in errors).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::FileSyntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Reads and parses the TOML file at `path`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::FileRead {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::from_toml(&text, path)
    }
}
