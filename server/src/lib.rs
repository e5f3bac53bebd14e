//! weir-server: the `weir` binary — configuration, the server on tokio or
//! smol, and the web chat page.
//!
//! # Commands
//!
//! - `weir serve [FLAGS]` runs the server until SIGINT or SIGTERM, then shuts
//!   down gracefully (clients get close 1001) and exits 0. It prints
//!   `weir listening on http://ADDR` on stdout once bound (with
//!   `--listen 127.0.0.1:0`, that is how a script learns the port); logs go
//!   to stderr.
//! - `weir config [FLAGS]` prints the effective configuration as TOML, in the
//!   format `--config` reads (the JWT secret is never printed).
//! - `weir version` prints the version and the wire protocol version.
//!
//! Exit codes: 0 success; 2 a usage or configuration error (the message says
//! which setting and why); 1 the server could not start (e.g. the address is
//! in use) or failed.
//!
//! # Configuration precedence
//!
//! Every setting can come from a flag, an environment variable, or the TOML
//! file named by `--config FILE` (or `WEIR_CONFIG`), and otherwise has a
//! default. The first of these that sets it wins:
//!
//! 1. the flag, e.g. `--demo-chunks 10`;
//! 2. its environment variable: `WEIR_` and the flag name in upper case with
//!    underscores, e.g. `WEIR_DEMO_CHUNKS=10`;
//! 3. the file: the flag name with underscores, e.g. `demo_chunks = 10`
//!    (unknown keys are an error, so a typo does not pass silently);
//! 4. the default.
//!
//! | flag | env | file key | default |
//! | --- | --- | --- | --- |
//! | `--listen ADDR` | `WEIR_LISTEN` | `listen` | `127.0.0.1:8080` |
//! | `--runtime tokio\|smol` | `WEIR_RUNTIME` | `runtime` | `tokio` |
//! | `--worker-threads N` | `WEIR_WORKER_THREADS` | `worker_threads` | one per core |
//! | `--node-id ID` | `WEIR_NODE_ID` | `node_id` | `HOSTNAME-PID` (or `weir-1`) |
//! | `--auth none\|token` | `WEIR_AUTH` | `auth` | `none` (a loud warning is logged) |
//! | `--jwt-secret S` | `WEIR_JWT_SECRET` | `jwt_secret` | with `token`: one of the three keys; refused with `none` |
//! | `--jwt-public-key PATH` | `WEIR_JWT_PUBLIC_KEY` | `jwt_public_key` | with `token`: one of the three keys (reread on SIGHUP) |
//! | `--jwt-jwks PATH` | `WEIR_JWT_JWKS` | `jwt_jwks` | with `token`: one of the three keys (reread on SIGHUP) |
//! | `--jwt-audience AUD[,AUD…]` | `WEIR_JWT_AUDIENCE` | `jwt_audience` | none: `aud` is not checked |
//! | `--jwt-issuer ISS` | `WEIR_JWT_ISSUER` | `jwt_issuer` | none: `iss` is not checked |
//! | `--generator demo\|openai` | `WEIR_GENERATOR` | `generator` | `demo` |
//! | `--demo-chunks N` | `WEIR_DEMO_CHUNKS` | `demo_chunks` | 40 |
//! | `--demo-rate N` (chunks/s) | `WEIR_DEMO_RATE` | `demo_rate` | 20 |
//! | `--upstream URL` | `WEIR_UPSTREAM` | `upstream` | required with `openai` |
//! | `--model NAME` | `WEIR_MODEL` | `model` | required with `openai` |
//! | `--api-key KEY` | `WEIR_API_KEY` | `api_key` | none |
//! | `--max-tokens N` | `WEIR_MAX_TOKENS` | `max_tokens` | the server's (the upstream decides) |
//! | `--temperature T` | `WEIR_TEMPERATURE` | `temperature` | the server's (the upstream decides) |
//! | `--seed N` | `WEIR_SEED` | `seed` | the server's (the upstream decides) |
//! | `--system-prompt TEXT` | `WEIR_SYSTEM_PROMPT` | `system_prompt` | none |
//! | `--upstream-timeout SECS` | `WEIR_UPSTREAM_TIMEOUT` | `upstream_timeout` | 60 |
//! | `--grace SECS` | `WEIR_GRACE` | `grace` | 30 |
//! | `--lease-ttl SECS` | `WEIR_LEASE_TTL` | `lease_ttl` | 10 |
//! | `--cancel-deadline SECS` | `WEIR_CANCEL_DEADLINE` | `cancel_deadline` | 5 |
//! | `--presence-debounce SECS` | `WEIR_PRESENCE_DEBOUNCE` | `presence_debounce` | 5 |
//! | `--presence-expiry SECS` | `WEIR_PRESENCE_EXPIRY` | `presence_expiry` | 30 (above 2) |
//! | `--heartbeat SECS` | `WEIR_HEARTBEAT` | `heartbeat` | 15 |
//! | `--idle-timeout SECS` | `WEIR_IDLE_TIMEOUT` | `idle_timeout` | 60 |
//! | `--max-frame-bytes N` | `WEIR_MAX_FRAME_BYTES` | `max_frame_bytes` | 65536 |
//! | `--max-content-bytes N` | `WEIR_MAX_CONTENT_BYTES` | `max_content_bytes` | 32768 |
//! | `--history-limit N` | `WEIR_HISTORY_LIMIT` | `history_limit` | 200 |
//! | `--queue-capacity N` | `WEIR_QUEUE_CAPACITY` | `queue_capacity` | 256 |
//! | `--stall-timeout SECS` | `WEIR_STALL_TIMEOUT` | `stall_timeout` | 10 |
//! | `--max-lag-bytes N` | `WEIR_MAX_LAG_BYTES` | `max_lag_bytes` | 1048576 |
//! | `--max-connections-per-user N` | `WEIR_MAX_CONNECTIONS_PER_USER` | `max_connections_per_user` | 100 (0: unlimited) |
//! | `--max-streams-per-user N` | `WEIR_MAX_STREAMS_PER_USER` | `max_streams_per_user` | 10 (0: unlimited) |
//! | `--chats-per-minute N` | `WEIR_CHATS_PER_MINUTE` | `chats_per_minute` | 60 (0: unlimited) |
//! | `--chat-burst N` | `WEIR_CHAT_BURST` | `chat_burst` | 20 |
//! | `--max-connections-per-ip N` | `WEIR_MAX_CONNECTIONS_PER_IP` | `max_connections_per_ip` | 1000 (0: unlimited) |
//! | `--trusted-proxy CIDR` (repeatable) | `WEIR_TRUSTED_PROXY` | `trusted_proxy` | none (a comma-separated list in the variable, a list in the file) |
//! | `--shutdown-grace SECS` | `WEIR_SHUTDOWN_GRACE` | `shutdown_grace` | 5 |
//! | `--compat on\|off` | `WEIR_COMPAT` | `compat` | `on` |
//! | `--compat-ws-path PATH` | `WEIR_COMPAT_WS_PATH` | `compat_ws_path` | `/ws/chat` |
//! | `--compat-cancelled-suffix TEXT` | `WEIR_COMPAT_CANCELLED_SUFFIX` | `compat_cancelled_suffix` | `"\n\n[Đã hủy]"` |
//! | `--compat-failure-sentence TEXT` | `WEIR_COMPAT_FAILURE_SENTENCE` | `compat_failure_sentence` | the seed's apology |
//! | `--ai-sdk on\|off` | `WEIR_AI_SDK` | `ai_sdk` | on |
//! | `--chunk-timestamps [BOOL]` | `WEIR_CHUNK_TIMESTAMPS` | `chunk_timestamps` | false |
//! | `--cors-origin ORIGIN[,ORIGIN…]` | `WEIR_CORS_ORIGIN` | `cors_origin` | `http://localhost:3000` |
//! | `--store memory\|redis://HOST:PORT[/DB]` | `WEIR_STORE` | `store` | `memory` |
//! | `--redis-prefix P` | `WEIR_REDIS_PREFIX` | `redis_prefix` | `weir` |
//! | `--history-retention SECS` | `WEIR_HISTORY_RETENTION` | `history_retention` | 0 (kept) |
//! | `--store-timeout SECS` | `WEIR_STORE_TIMEOUT` | `store_timeout` | 2 |
//! | `--log FILTER` | `WEIR_LOG` | `log` | `info` |
//!
//! Durations are seconds and may be fractional (`--grace 0.5`). The grace
//! window, lease and cancel deadline go to both the node and the store, as
//! do the presence debounce and expiry.
//!
//! Each default is defined once, next to the type that uses it: the node's
//! in `weir_core::Config::new` (and the timers' `Default`s), the server's in
//! `weir_runtime::RuntimeConfig`, `GeneratorConfig`, `RedisSettings` and
//! `OpenAiConfig`, the binary's own (listen address, log filter) in
//! [`settings`]. `--help` shows them from there
//! ([`cli::shown_defaults`]), and a test checks this table against them.
//!
//! ```toml
//! # weir.toml
//! listen = "0.0.0.0:8080"
//! auth = "token"          # the secret is better given as WEIR_JWT_SECRET
//! demo_chunks = 10
//! grace = 60
//! ```
//!
//! # Layout
//!
//! - [`cli`]: the clap command line, and the default each `--help` shows;
//! - [`settings`]: the [`Layer`](settings::Layer) of optional values (one per
//!   source), [`resolve`](settings::resolve) (merge, defaults, validation)
//!   into the checked [`Settings`](settings::Settings) — the runtime's
//!   `RuntimeConfig` plus the runtime's kind, its threads and the log
//!   filter — and `weir config`'s TOML;
//! - [`serve`]: running the commands on the runtime the settings name
//!   (each runtime crate's `block_on` builds it);
//! - [`page`]: the web page at `/` (`assets/`), embedded at compile time.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cli;
pub mod page;
pub mod serve;
pub mod settings;

pub use serve::run;
