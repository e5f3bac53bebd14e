//! [`Settings`] back as a [`Layer`]: what `weir config` prints, in the
//! format `--config` reads.

use std::num::NonZeroUsize;
use std::time::Duration;

use weir_runtime::{Auth, GeneratorConfig, StoreBackend, TokenKey};

use super::resolve::{ms, MEMORY_STORE};
use super::{AuthMode, GeneratorKind, Layer, Settings, Switch};

/// `--store` for `store`: [`MEMORY_STORE`] or the Redis URL.
#[must_use]
pub fn store_spec(store: &StoreBackend) -> &str {
    match store {
        StoreBackend::Memory => MEMORY_STORE,
        StoreBackend::Redis(r) => &r.url,
    }
}

/// Milliseconds as seconds, the unit of every duration setting.
fn ms_secs(v: u64) -> f64 {
    ms(v).as_secs_f64()
}

impl Settings {
    /// These settings as a fully populated layer: what `weir config` prints.
    /// The JWT secret and the API key are left out (each is replaced by a
    /// comment there), and so are the settings of the generator and the
    /// store that are not in use.
    #[must_use]
    pub fn to_layer(&self) -> Layer {
        let c = &self.server;
        let (demo_chunks, demo_rate) = match c.generator {
            GeneratorConfig::Demo {
                chunks,
                rate_per_sec,
            } => (Some(chunks), Some(rate_per_sec)),
            GeneratorConfig::Openai(_) => (None, None),
        };
        let openai = match &c.generator {
            GeneratorConfig::Openai(o) => Some(o),
            GeneratorConfig::Demo { .. } => None,
        };
        let token = match &c.auth {
            Auth::Token(t) => Some(t),
            Auth::None => None,
        };
        let redis = match &c.store_backend {
            StoreBackend::Redis(r) => Some(r),
            StoreBackend::Memory => None,
        };
        Layer {
            listen: Some(c.listen.to_string()),
            runtime: Some(self.runtime),
            worker_threads: self.worker_threads.map(NonZeroUsize::get),
            node_id: Some(c.node.node_id.to_string()),
            auth: Some(AuthMode::from(&c.auth)),
            jwt_secret: None,
            jwt_public_key: token.and_then(|t| match &t.key {
                TokenKey::PublicKeyPem(p) => Some(p.clone()),
                _ => None,
            }),
            jwt_jwks: token.and_then(|t| match &t.key {
                TokenKey::Jwks(p) => Some(p.clone()),
                _ => None,
            }),
            jwt_audience: token
                .filter(|t| !t.audiences.is_empty())
                .map(|t| t.audiences.clone()),
            jwt_issuer: token.and_then(|t| t.issuer.clone()),
            generator: Some(GeneratorKind::from(&c.generator)),
            demo_chunks,
            demo_rate,
            upstream: openai.map(|o| o.upstream.to_string()),
            model: openai.map(|o| o.model.clone()),
            api_key: None,
            max_tokens: openai.and_then(|o| o.max_tokens),
            temperature: openai.and_then(|o| o.temperature),
            seed: openai.and_then(|o| o.seed),
            system_prompt: openai.and_then(|o| o.system_prompt.clone()),
            upstream_timeout: openai.map(|o| o.timeout.as_secs_f64()),
            grace: Some(ms_secs(c.node.timers.grace_ms)),
            lease_ttl: Some(ms_secs(c.node.timers.lease_ttl_ms)),
            cancel_deadline: Some(ms_secs(c.node.timers.cancel_deadline_ms)),
            presence_debounce: Some(ms_secs(c.node.presence.debounce_ms)),
            presence_expiry: Some(ms_secs(c.node.presence.entry_ttl_ms)),
            heartbeat: Some(c.node.heartbeat.as_secs_f64()),
            idle_timeout: Some(c.node.idle_timeout.as_secs_f64()),
            max_frame_bytes: Some(c.node.limits.max_frame_bytes),
            max_content_bytes: Some(c.node.limits.max_content_bytes),
            history_limit: Some(c.node.history_limit),
            queue_capacity: Some(c.queue_capacity),
            stall_timeout: Some(c.node.stall_timeout.as_secs_f64()),
            max_lag_bytes: Some(c.node.max_lag_bytes),
            chunk_timestamps: Some(c.node.chunk_timestamps),
            max_connections_per_user: Some(c.node.caps.connections_per_user),
            max_streams_per_user: Some(c.node.caps.streams_per_user),
            chats_per_minute: Some(c.node.caps.chats_per_minute),
            chat_burst: Some(c.node.caps.chat_burst),
            max_connections_per_ip: Some(c.node.caps.connections_per_ip),
            trusted_proxy: (!c.trusted_proxies.is_empty())
                .then(|| c.trusted_proxies.iter().map(ToString::to_string).collect()),
            shutdown_grace: Some(c.shutdown_grace.as_secs_f64()),
            compat: Some(if c.compat.enabled {
                Switch::On
            } else {
                Switch::Off
            }),
            compat_ws_path: Some(c.compat.ws_path.clone()),
            compat_cancelled_suffix: Some(c.node.compat.cancelled_suffix.clone()),
            compat_failure_sentence: Some(c.node.compat.failure_sentence.clone()),
            ai_sdk: Some(if c.ai_sdk { Switch::On } else { Switch::Off }),
            cors_origin: Some(c.cors_origins.clone()),
            store: Some(store_spec(&c.store_backend).to_owned()),
            redis_prefix: redis.map(|r| r.prefix.clone()),
            history_retention: redis.map(|r| r.history_retention.as_secs_f64()),
            store_timeout: redis.map(|r| r.timeout.as_secs_f64()),
            log: Some(self.log.clone()),
        }
    }

    /// The effective configuration as a TOML document that `--config` reads
    /// back (the JWT secret and the API key are never printed).
    #[must_use]
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(&self.to_layer())
            .unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"));
        let secret = match &self.server.auth {
            Auth::Token(t) if matches!(t.key, TokenKey::Secret(_)) => {
                "# jwt_secret is set (not shown)\n"
            }
            _ => "",
        };
        let api_key = match &self.server.generator {
            GeneratorConfig::Openai(o) if o.api_key.is_some() => "# api_key is set (not shown)\n",
            _ => "",
        };
        format!("# weir effective configuration\n{secret}{api_key}{body}")
    }
}

/// A duration as `weir config` prints it and `--help` shows it: seconds.
#[must_use]
pub fn secs_shown(d: Duration) -> String {
    d.as_secs_f64().to_string()
}
