//! [`resolve`]: the merged layers, checked, filling the runtime's
//! configuration; what a layer leaves unset keeps the default of the type
//! that uses it.
//!
//! The checks run in a fixed order (listen, node id, auth, generator, the
//! timers, the limits, threads and queue, the store, the log filter), so
//! that of several bad values the same one is always reported.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use weir_core::caps::Caps;
use weir_core::ids::NodeId;
use weir_core::presence::PresenceTimers;
use weir_core::stream::StreamTimers;
use weir_core::wire::Limits;
use weir_runtime::openai::{OpenAiConfig, Upstream};
use weir_runtime::{
    Auth, Cidr, GeneratorConfig, RedisSettings, RuntimeConfig, StoreBackend, TokenAuth, TokenKey,
};

use super::{AuthMode, ConfigError, GeneratorKind, Layer, Settings, Switch};

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default tracing filter.
pub const DEFAULT_LOG: &str = "info";
/// The node id used when no host name can be found.
pub const FALLBACK_NODE_ID: &str = "weir-1";
/// The most worker threads accepted.
pub const MAX_WORKER_THREADS: usize = 1024;
/// `--store` for [`StoreBackend::Memory`].
pub const MEMORY_STORE: &str = "memory";

/// Merges the command line (flags, then their `WEIR_*` variables, as clap
/// already did) over the file, fills in defaults, and checks everything.
///
/// Precedence: `cli` > `file` > defaults.
pub fn resolve(cli: &Layer, file: &Layer) -> Result<Settings, ConfigError> {
    let m = cli.clone().or(file.clone());
    // Read while `m` is whole; only `--generator openai` uses it (below).
    let openai_config = openai(&m);

    let listen = parse_listen(m.listen.as_deref().unwrap_or(DEFAULT_LISTEN))?;
    let node_id = match m.node_id {
        Some(v) => NodeId::parse(v.clone())
            .map_err(|source| ConfigError::BadNodeId { value: v, source })?,
        None => default_node_id(),
    };

    let mode = m.auth.unwrap_or_else(|| AuthMode::from(&Auth::default()));
    let auth = token_auth(
        mode,
        m.jwt_secret,
        m.jwt_public_key,
        m.jwt_jwks,
        m.jwt_audience,
        m.jwt_issuer,
    )?;

    let kind = m
        .generator
        .unwrap_or_else(|| GeneratorKind::from(&GeneratorConfig::default()));
    let generator = match kind {
        GeneratorKind::Demo => {
            let chunks = m
                .demo_chunks
                .unwrap_or(GeneratorConfig::DEFAULT_DEMO_CHUNKS);
            if chunks == 0 {
                return Err(range("demo-chunks", chunks, "must be at least 1"));
            }
            let rate = m.demo_rate.unwrap_or(GeneratorConfig::DEFAULT_DEMO_RATE);
            if !(rate.is_finite() && rate > 0.0) {
                return Err(range("demo-rate", rate, "must be a positive number"));
            }
            GeneratorConfig::Demo {
                chunks,
                rate_per_sec: rate,
            }
        }
        GeneratorKind::Openai => GeneratorConfig::Openai(openai_config?),
    };
    if m.upstream.is_some() && !matches!(generator, GeneratorConfig::Openai(_)) {
        return Err(ConfigError::UpstreamWithoutOpenai);
    }

    // The node's defaults; the store's are derived from the node's by
    // `RuntimeConfig::new`.
    let d = weir_core::Config::new(node_id);
    let grace = secs("grace", m.grace, ms(d.timers.grace_ms), Min::Zero)?;
    let lease_ttl = secs(
        "lease-ttl",
        m.lease_ttl,
        ms(d.timers.lease_ttl_ms),
        Min::Positive,
    )?;
    let cancel_deadline = secs(
        "cancel-deadline",
        m.cancel_deadline,
        ms(d.timers.cancel_deadline_ms),
        Min::Positive,
    )?;
    let presence_debounce = secs(
        "presence-debounce",
        m.presence_debounce,
        ms(d.presence.debounce_ms),
        Min::Zero,
    )?;
    let presence_expiry = secs(
        "presence-expiry",
        m.presence_expiry,
        ms(d.presence.entry_ttl_ms),
        Min::Positive,
    )?;
    if presence_expiry <= d.housekeeping {
        return Err(range(
            "presence-expiry",
            presence_expiry.as_secs_f64(),
            format!(
                "must be longer than the presence refresh period ({} s)",
                d.housekeeping.as_secs_f64()
            ),
        ));
    }
    let heartbeat = secs("heartbeat", m.heartbeat, d.heartbeat, Min::Positive)?;
    let idle_timeout = secs(
        "idle-timeout",
        m.idle_timeout,
        d.idle_timeout,
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
        RuntimeConfig::DEFAULT_SHUTDOWN_GRACE,
        Min::Zero,
    )?;

    let max_frame_bytes = m.max_frame_bytes.unwrap_or(d.limits.max_frame_bytes);
    if max_frame_bytes < 1024 {
        return Err(range(
            "max-frame-bytes",
            max_frame_bytes,
            "must be at least 1024",
        ));
    }
    let max_content_bytes = m.max_content_bytes.unwrap_or(d.limits.max_content_bytes);
    if max_content_bytes == 0 || max_content_bytes >= max_frame_bytes {
        return Err(range(
            "max-content-bytes",
            max_content_bytes,
            "must be at least 1 and below --max-frame-bytes (a chat frame carries the text plus JSON)",
        ));
    }
    let history_limit = m.history_limit.unwrap_or(d.history_limit);
    if history_limit == 0 {
        return Err(range("history-limit", history_limit, "must be at least 1"));
    }
    let worker_threads = match m.worker_threads.map(|n| (n, NonZeroUsize::new(n))) {
        None => None,
        Some((_, Some(n))) if n.get() <= MAX_WORKER_THREADS => Some(n),
        Some((n, _)) => {
            return Err(range(
                "worker-threads",
                n,
                format!("must be at least 1 and at most {MAX_WORKER_THREADS}"),
            ));
        }
    };
    let queue_capacity = m
        .queue_capacity
        .unwrap_or(RuntimeConfig::DEFAULT_QUEUE_CAPACITY);
    if queue_capacity == 0 {
        return Err(range(
            "queue-capacity",
            queue_capacity,
            "must be at least 1",
        ));
    }
    let stall_timeout = secs(
        "stall-timeout",
        m.stall_timeout,
        d.stall_timeout,
        Min::Positive,
    )?;
    let max_lag_bytes = m.max_lag_bytes.unwrap_or(d.max_lag_bytes);
    if max_lag_bytes == 0 {
        return Err(range("max-lag-bytes", max_lag_bytes, "must be at least 1"));
    }

    let r = Caps::RECOMMENDED;
    let caps = Caps {
        connections_per_user: m.max_connections_per_user.unwrap_or(r.connections_per_user),
        streams_per_user: m.max_streams_per_user.unwrap_or(r.streams_per_user),
        chats_per_minute: m.chats_per_minute.unwrap_or(r.chats_per_minute),
        chat_burst: m.chat_burst.unwrap_or(r.chat_burst),
        connections_per_ip: m.max_connections_per_ip.unwrap_or(r.connections_per_ip),
    };
    if caps.chats_per_minute > 0 && caps.chat_burst == 0 {
        return Err(range(
            "chat-burst",
            0,
            "must be at least 1 while --chats-per-minute is set",
        ));
    }
    let mut trusted_proxies = Vec::new();
    for p in m.trusted_proxy.unwrap_or_default() {
        match p.parse::<Cidr>() {
            Ok(c) => trusted_proxies.push(c),
            Err(e) => return Err(range("trusted-proxy", p, e.to_string())),
        }
    }

    // The Redis settings are read (and checked) only for a Redis store.
    let store_backend = match m.store.as_deref() {
        None => StoreBackend::default(),
        Some(MEMORY_STORE) => StoreBackend::Memory,
        Some(url) if url.starts_with("redis://") || url.starts_with("redis-cluster://") => {
            let d = RedisSettings::new(url);
            let prefix = m.redis_prefix.unwrap_or(d.prefix);
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
            StoreBackend::Redis(RedisSettings {
                prefix,
                history_retention: secs(
                    "history-retention",
                    m.history_retention,
                    d.history_retention,
                    Min::Zero,
                )?,
                timeout: secs("store-timeout", m.store_timeout, d.timeout, Min::Positive)?,
                ..d
            })
        }
        Some(other) => return Err(range(
            "store",
            other,
            "must be `memory`, a redis://HOST:PORT URL or redis-cluster://HOST:PORT[,HOST:PORT…]",
        )),
    };

    let log = m.log.unwrap_or_else(|| DEFAULT_LOG.to_owned());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
        return Err(ConfigError::BadLogFilter {
            value: log,
            message: e.to_string(),
        });
    }

    let node = weir_core::Config {
        limits: Limits {
            max_frame_bytes,
            max_content_bytes,
        },
        timers: StreamTimers {
            lease_ttl_ms: millis(lease_ttl),
            cancel_deadline_ms: millis(cancel_deadline),
            grace_ms: millis(grace),
        },
        presence: PresenceTimers {
            debounce_ms: millis(presence_debounce),
            entry_ttl_ms: millis(presence_expiry),
        },
        heartbeat,
        idle_timeout,
        stall_timeout,
        max_lag_bytes,
        chunk_timestamps: m.chunk_timestamps.unwrap_or(d.chunk_timestamps),
        history_limit,
        caps,
        compat: weir_core::dialect::compat::CompatSettings {
            cancelled_suffix: m
                .compat_cancelled_suffix
                .clone()
                .unwrap_or(d.compat.cancelled_suffix.clone()),
            failure_sentence: m
                .compat_failure_sentence
                .clone()
                .unwrap_or(d.compat.failure_sentence.clone()),
            ..d.compat.clone()
        },
        ..d
    };
    let compat = weir_runtime::CompatConfig {
        enabled: m.compat != Some(Switch::Off),
        ws_path: m
            .compat_ws_path
            .clone()
            .unwrap_or_else(|| weir_runtime::CompatConfig::DEFAULT_WS_PATH.to_owned()),
    };
    if !compat.ws_path.starts_with('/') {
        return Err(ConfigError::BadCompatWsPath {
            value: compat.ws_path,
        });
    }
    let cors_origins = m
        .cors_origin
        .clone()
        .unwrap_or_else(|| vec![RuntimeConfig::DEFAULT_CORS_ORIGIN.to_owned()]);
    Ok(Settings {
        runtime: m.runtime.unwrap_or_default(),
        worker_threads,
        log,
        server: RuntimeConfig {
            store_backend,
            auth,
            generator,
            queue_capacity,
            shutdown_grace,
            trusted_proxies,
            compat,
            ai_sdk: m.ai_sdk != Some(Switch::Off),
            cors_origins,
            ..RuntimeConfig::new(listen, node)
        },
    })
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
    let d = OpenAiConfig::new(upstream, model);
    let timeout = secs(
        "upstream-timeout",
        m.upstream_timeout,
        d.timeout,
        Min::Positive,
    )?;
    Ok(OpenAiConfig {
        api_key: m.api_key.clone().filter(|k| !k.is_empty()),
        max_tokens: m.max_tokens,
        temperature: m.temperature,
        seed: m.seed,
        system_prompt: m.system_prompt.clone().filter(|s| !s.is_empty()),
        timeout,
        ..d
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
pub(super) fn node_id_from(host: &str, pid: u32) -> NodeId {
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

/// [`FALLBACK_NODE_ID`] as a node id.
#[must_use]
pub fn fallback_node_id() -> NodeId {
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

fn range(
    flag: &'static str,
    value: impl fmt::Display,
    rule: impl Into<Cow<'static, str>>,
) -> ConfigError {
    ConfigError::OutOfRange {
        flag,
        value: value.to_string(),
        rule: rule.into(),
    }
}

/// Milliseconds (the core's timers) as a duration.
pub(super) fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The token auth settings: with `--auth token` exactly one key (secret, PEM
/// file or JWKS file), with `--auth none` none of them. The key files are
/// read when the server starts (`Server::bind`), not here.
fn token_auth(
    mode: AuthMode,
    secret: Option<String>,
    public_key: Option<PathBuf>,
    jwks: Option<PathBuf>,
    audience: Option<Vec<String>>,
    issuer: Option<String>,
) -> Result<Auth, ConfigError> {
    if mode == AuthMode::None {
        if secret.is_some() {
            return Err(ConfigError::JwtSecretWithoutTokenAuth);
        }
        let set = [
            ("--jwt-public-key", public_key.is_some()),
            ("--jwt-jwks", jwks.is_some()),
            ("--jwt-audience", audience.is_some()),
            ("--jwt-issuer", issuer.is_some()),
        ];
        if let Some((setting, _)) = set.into_iter().find(|(_, is_set)| *is_set) {
            return Err(ConfigError::TokenSettingWithoutTokenAuth { setting });
        }
        return Ok(Auth::None);
    }
    let secret = secret.filter(|s| !s.is_empty());
    let key = match (secret, public_key, jwks) {
        (None, None, None) => return Err(ConfigError::MissingJwtSecret),
        (Some(s), None, None) => TokenKey::Secret(s.into_bytes()),
        (None, Some(p), None) => TokenKey::PublicKeyPem(p),
        (None, None, Some(p)) => TokenKey::Jwks(p),
        _ => return Err(ConfigError::SeveralJwtKeys),
    };
    let mut t = TokenAuth::new(key);
    if let Some(audience) = audience {
        t.audiences = audience
            .iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        if t.audiences.is_empty() {
            return Err(ConfigError::EmptyTokenSetting {
                setting: "--jwt-audience",
            });
        }
    }
    if let Some(issuer) = issuer {
        if issuer.is_empty() {
            return Err(ConfigError::EmptyTokenSetting {
                setting: "--jwt-issuer",
            });
        }
        t.issuer = Some(issuer);
    }
    Ok(Auth::Token(t))
}
