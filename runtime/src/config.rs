//! The server's configuration: one vocabulary, from the `weir` binary's
//! flags to the driver. Each default is defined here, next to the type that
//! uses it (or in `weir-core` for the node's and the store's own settings),
//! and read from here by the binary's `--help`, its `weir config` output and
//! its docs.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::openai;

/// Everything a [`Server`](crate::Server) needs.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// The address to listen on (port 0: any free port, see
    /// [`Server::local_addr`](crate::Server::local_addr)).
    pub listen: SocketAddr,
    /// The node's settings: node id, limits, timers, heartbeat, idle timeout…
    pub node: weir_core::Config,
    /// The store's settings (both backends); its stream and presence timers
    /// must equal the node's ([`Server::bind`](crate::Server::bind) refuses
    /// a mismatch).
    pub store: weir_core::store::StoreConfig,
    /// Where the store lives: in this process (default) or in Redis.
    pub store_backend: StoreBackend,
    /// How clients authenticate.
    pub auth: Auth,
    /// What produces the replies.
    pub generator: GeneratorConfig,
    /// The HTML page served at `GET /` (`None`: `/` answers 404).
    pub page: Option<String>,
    /// Capacity of each connection's outbound queue, in frames
    /// ([`DEFAULT_QUEUE_CAPACITY`](Self::DEFAULT_QUEUE_CAPACITY)).
    pub queue_capacity: usize,
    /// The longest [`Server::run`](crate::Server::run) waits, after its
    /// shutdown signal, for connections to close and replies to settle
    /// ([`DEFAULT_SHUTDOWN_GRACE`](Self::DEFAULT_SHUTDOWN_GRACE)).
    pub shutdown_grace: Duration,
    /// Proxies whose `X-Forwarded-For` names the client, for the
    /// per-address connection cap (`--trusted-proxy`; none by default: the
    /// TCP peer is the client).
    pub trusted_proxies: Vec<crate::Cidr>,
    /// The compatibility surface for the seed front end (PROTOCOL.md,
    /// "Compatibility surface"): on by default.
    pub compat: CompatConfig,
    /// Serve the Vercel AI SDK's transports (PROTOCOL.md, "AI SDK
    /// transports": `/v1/ai-sdk/*`): on by default.
    pub ai_sdk: bool,
    /// The origins allowed by CORS on every HTTP route and on WebSocket
    /// upgrades (`*`: any)
    /// ([`DEFAULT_CORS_ORIGIN`](Self::DEFAULT_CORS_ORIGIN)).
    pub cors_origins: Vec<String>,
}

/// The compatibility surface's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompatConfig {
    /// Serve `/ws/chat`, `/api/*`, `/health` and `/actuator/health`.
    pub enabled: bool,
    /// The path of the seed's WebSocket
    /// ([`DEFAULT_WS_PATH`](Self::DEFAULT_WS_PATH)).
    pub ws_path: String,
}

impl CompatConfig {
    /// The seed front end's default `VITE_WS_URL` path.
    pub const DEFAULT_WS_PATH: &'static str = "/ws/chat";
}

impl Default for CompatConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ws_path: Self::DEFAULT_WS_PATH.to_owned(),
        }
    }
}

impl RuntimeConfig {
    /// The seed front end's dev-server origin, allowed by default.
    pub const DEFAULT_CORS_ORIGIN: &'static str = "http://localhost:3000";
    /// Default queue capacity: 256 frames.
    pub const DEFAULT_QUEUE_CAPACITY: usize = 256;
    /// Default shutdown grace: 5 s.
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

    /// A configuration for `node` listening on `listen`, with the store
    /// derived from `node` (its stream and presence timers, and at least as
    /// much history as the `history` frame shows), the default
    /// [`StoreBackend`], [`Auth`] and [`GeneratorConfig`], no page, and the
    /// default queue capacity, lag bound and shutdown grace.
    #[must_use]
    pub fn new(listen: SocketAddr, node: weir_core::Config) -> Self {
        let d = weir_core::store::StoreConfig::default();
        let store = weir_core::store::StoreConfig {
            timers: node.timers,
            presence: node.presence,
            history_limit: d.history_limit.max(node.history_limit),
            ..d
        };
        Self {
            listen,
            node,
            store,
            store_backend: StoreBackend::default(),
            auth: Auth::default(),
            generator: GeneratorConfig::default(),
            page: None,
            queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
            shutdown_grace: Self::DEFAULT_SHUTDOWN_GRACE,
            trusted_proxies: Vec::new(),
            compat: CompatConfig::default(),
            ai_sdk: true,
            cors_origins: vec![Self::DEFAULT_CORS_ORIGIN.to_owned()],
        }
    }
}

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreBackend {
    /// In this process: the core's reference model (one node only).
    #[default]
    Memory,
    /// In Redis, shared by every node that names the same server and prefix.
    Redis(RedisSettings),
}

/// How to reach the Redis store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// The prefix of every key and channel
    /// ([`DEFAULT_PREFIX`](Self::DEFAULT_PREFIX)).
    pub prefix: String,
    /// How long a conversation's history is kept after its last message
    /// (zero: forever; it is always capped at the history limit)
    /// ([`DEFAULT_HISTORY_RETENTION`](Self::DEFAULT_HISTORY_RETENTION)).
    pub history_retention: Duration,
    /// How long connecting or one request may take before the store counts
    /// as unreachable ([`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT)).
    pub timeout: Duration,
}

impl RedisSettings {
    /// Default key and channel prefix: `weir`, the Redis store's own.
    pub const DEFAULT_PREFIX: &'static str = weir_store_redis::DEFAULT_PREFIX;
    /// Default history retention: zero, history is kept.
    pub const DEFAULT_HISTORY_RETENTION: Duration = Duration::ZERO;
    /// Default connect and request timeout: 2 s.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    /// Settings for `url` with the default prefix, history retention and
    /// timeout.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            history_retention: Self::DEFAULT_HISTORY_RETENTION,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// How clients authenticate (PROTOCOL.md, "Authentication").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Auth {
    /// No authentication (development), the default: the user is the
    /// `user_id` query parameter, `anonymous` when absent. The server logs a
    /// warning.
    #[default]
    None,
    /// A JWT from `Authorization: Bearer …` or the `token` query parameter
    /// (both given: they must be the same token); `sub` is the user id.
    /// Anything else answers 401 before any upgrade.
    Token(TokenAuth),
}

impl Auth {
    /// Token auth with HS256 tokens signed with `secret`, no audience and no
    /// issuer required.
    #[must_use]
    pub fn hs256(secret: impl Into<Vec<u8>>) -> Self {
        Self::Token(TokenAuth::new(TokenKey::Secret(secret.into())))
    }
}

/// What a token must be to be accepted (`--auth token`).
///
/// `exp` is required and checked without leeway; `nbf` and `iat`, when
/// present, may be at most [`LEEWAY`](Self::LEEWAY) in the future. When
/// [`audiences`](Self::audiences) is empty a token's `aud` is not looked at
/// (identity providers always send one; set the audience to check it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAuth {
    /// The key (or keys) that verify signatures; the algorithm follows from
    /// the key, never from the token alone.
    pub key: TokenKey,
    /// Accepted audiences: when not empty, a token's `aud` (a string or an
    /// array) must name at least one of them (`--jwt-audience`).
    pub audiences: Vec<String>,
    /// The required `iss`, if any (`--jwt-issuer`).
    pub issuer: Option<String>,
}

impl TokenAuth {
    /// How far in the future a token's `nbf` and `iat` may be: 30 s. Clocks
    /// of identity providers and nodes synchronised by NTP differ by well
    /// under a second, but a host that just resumed or a provider behind a
    /// drifting clock can be seconds off, and a freshly issued token must
    /// not fail "not yet valid". 30 s covers that while a pre-dated token
    /// buys at most 30 s. `exp` gets no leeway (a late clock only shortens a
    /// token's life).
    pub const LEEWAY: Duration = Duration::from_secs(30);

    /// Tokens verified by `key`, no audience and no issuer required.
    #[must_use]
    pub fn new(key: TokenKey) -> Self {
        Self {
            key,
            audiences: Vec::new(),
            issuer: None,
        }
    }
}

/// Where the verifying key of [`TokenAuth`] comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenKey {
    /// An HMAC secret: HS256 tokens (`--jwt-secret`). Never printed.
    Secret(Vec<u8>),
    /// A PEM public key file (`--jwt-public-key`): RSA (RS256/384/512,
    /// PS256/384/512), EC P-256 or P-384 (ES256, ES384) or Ed25519 (EdDSA).
    /// Read at start and again on every reload (SIGHUP for the binary).
    PublicKeyPem(PathBuf),
    /// A JWKS file (`--jwt-jwks`), as an identity provider publishes it: a
    /// token's `kid` picks the key, the key's `alg` (or its type and curve)
    /// the algorithm. Read at start and on every reload.
    Jwks(PathBuf),
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Never print the secret.
            Self::Secret(secret) => write!(f, "Secret(<{} bytes>)", secret.len()),
            Self::PublicKeyPem(path) => f.debug_tuple("PublicKeyPem").field(path).finish(),
            Self::Jwks(path) => f.debug_tuple("Jwks").field(path).finish(),
        }
    }
}

/// What produces the replies.
#[derive(Debug, Clone, PartialEq)]
pub enum GeneratorConfig {
    /// The built-in demo generator: deterministic text
    /// ([`DemoText`](weir_core::demo::DemoText) of the last user message),
    /// `chunks` chunks per reply, `rate_per_sec` chunks per second (a rate
    /// that is not a positive finite number means "as fast as possible").
    Demo {
        /// Chunks per reply.
        chunks: u32,
        /// Chunks per second.
        rate_per_sec: f64,
    },
    /// An OpenAI-compatible upstream (`POST /v1/chat/completions` with
    /// `stream: true`): one HTTP request per reply over a fresh connection,
    /// closed at once when the reply is cancelled; never retried. Errors
    /// end the reply `failed` with a reason from
    /// [`UpstreamError::reason`](openai::UpstreamError::reason). See
    /// [`openai`].
    Openai(openai::OpenAiConfig),
}

impl GeneratorConfig {
    /// Default chunks per demo reply: 40.
    pub const DEFAULT_DEMO_CHUNKS: u32 = 40;
    /// Default demo pace: 20 chunks per second.
    pub const DEFAULT_DEMO_RATE: f64 = 20.0;
}

impl Default for GeneratorConfig {
    /// The demo generator: [`DEFAULT_DEMO_CHUNKS`](Self::DEFAULT_DEMO_CHUNKS)
    /// chunks at [`DEFAULT_DEMO_RATE`](Self::DEFAULT_DEMO_RATE) per second.
    fn default() -> Self {
        Self::Demo {
            chunks: Self::DEFAULT_DEMO_CHUNKS,
            rate_per_sec: Self::DEFAULT_DEMO_RATE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> weir_core::Config {
        weir_core::Config::new(weir_core::ids::NodeId::parse("n1").expect("a valid node id"))
    }

    #[test]
    fn the_store_takes_the_nodes_timers_and_keeps_at_least_its_history() {
        let mut n = node();
        n.timers.grace_ms = 1234;
        n.presence.debounce_ms = 77;
        let c = RuntimeConfig::new("127.0.0.1:0".parse().expect("an address"), n.clone());
        assert_eq!(c.store.timers, n.timers);
        assert_eq!(c.store.presence, n.presence);
        let d = weir_core::store::StoreConfig::default();
        assert_eq!(
            c.store.history_limit, d.history_limit,
            "the store's own is larger"
        );
        n.history_limit = d.history_limit * 2;
        let c = RuntimeConfig::new("127.0.0.1:0".parse().expect("an address"), n);
        assert_eq!(c.store.history_limit, d.history_limit * 2);
    }

    #[test]
    fn the_defaults_are_the_documented_constants() {
        let c = RuntimeConfig::new("127.0.0.1:0".parse().expect("an address"), node());
        assert_eq!(c.queue_capacity, 256);
        assert_eq!(c.node.max_lag_bytes, 1 << 20);
        assert_eq!(c.node.stall_timeout, Duration::from_secs(10));
        assert_eq!(c.shutdown_grace, Duration::from_secs(5));
        assert_eq!(c.auth, Auth::None);
        assert_eq!(c.store_backend, StoreBackend::Memory);
        assert_eq!(
            c.generator,
            GeneratorConfig::Demo {
                chunks: 40,
                rate_per_sec: 20.0
            }
        );
        let r = RedisSettings::new("redis://h:1");
        assert_eq!(
            (r.prefix.as_str(), r.history_retention, r.timeout),
            ("weir", Duration::ZERO, Duration::from_secs(2))
        );
    }

    #[test]
    fn the_jwt_secret_never_shows_in_debug_output() {
        let auth = Auth::hs256(b"topsecret".to_vec());
        let shown = format!("{auth:?}");
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(shown.contains("<9 bytes>"), "{shown}");
    }
}
