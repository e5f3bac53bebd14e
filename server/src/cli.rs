//! The command line: subcommands and their arguments, and the default each
//! setting's `--help` shows.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use weir_core::caps::Caps;
use weir_runtime::openai::OpenAiConfig;
use weir_runtime::{Auth, GeneratorConfig, RedisSettings, RuntimeConfig, StoreBackend};

use crate::settings::{
    fallback_node_id, secs_shown, store_spec, AuthMode, ConfigError, GeneratorKind, Layer,
    RuntimeKind, Settings, DEFAULT_LISTEN, DEFAULT_LOG,
};

/// weir: streams AI replies to browsers over WebSocket.
///
/// Settings come from flags, then WEIR_* environment variables, then the
/// TOML file given by --config (keys are the long flag names with
/// underscores, e.g. `demo_chunks = 10`), then defaults.
#[derive(Debug, Parser)]
#[command(name = "weir", version, arg_required_else_help = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Print the effective configuration as TOML (readable by --config) and exit.
    Config(ServeArgs),
    /// Print the version and the wire protocol version.
    Version,
}

/// The arguments of `weir serve` and `weir config`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML file with settings; flags and WEIR_* variables override it
    #[arg(long, env = "WEIR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The settings.
    #[command(flatten)]
    pub layer: Layer,
}

impl ServeArgs {
    /// Reads the `--config` file, if any, and resolves the settings.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let file = match &self.config {
            Some(path) => Layer::from_file(path)?,
            None => Layer::default(),
        };
        crate::settings::resolve(&self.layer, &file)
    }
}

/// The command line's definition: the derived [`Cli`], with each setting's
/// default (from [`shown_defaults`]) at the end of its help, as
/// `[default: …]`.
///
/// The layer's flags cannot carry clap defaults (`default_value_t`): clap
/// would then fill them in, and a flag left unset would hide the file's value.
#[must_use]
pub fn command() -> clap::Command {
    let defaults = shown_defaults();
    let with_defaults = |cmd: clap::Command| {
        defaults.iter().fold(cmd, |cmd, (id, shown)| {
            cmd.mut_arg(*id, |arg| {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                arg.help(format!("{help} [default: {shown}]"))
            })
        })
    };
    Cli::command()
        .mut_subcommand("serve", with_defaults)
        .mut_subcommand("config", with_defaults)
}

/// Parses the process's arguments with [`command`]; on a usage error (or
/// `--help`, `--version`) prints it and exits, as clap's `Parser::parse` does.
#[must_use]
pub fn parse() -> Cli {
    let mut command = command();
    let matches = command.get_matches_mut();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command).exit())
}

/// The default each setting shows in `--help`, by argument id (the
/// [`Layer`] field), each read from where the default is defined: the
/// runtime's and the core's configuration types, or the settings module for
/// what only the binary uses. A setting with no default (the secrets, the
/// upstream and its model) is not listed.
#[must_use]
pub fn shown_defaults() -> Vec<(&'static str, String)> {
    let node = weir_core::Config::new(fallback_node_id());
    let ms = |v: u64| secs_shown(Duration::from_millis(v));
    vec![
        ("listen", DEFAULT_LISTEN.to_owned()),
        ("runtime", RuntimeKind::default().to_string()),
        ("worker_threads", "one per core".to_owned()),
        ("node_id", "HOSTNAME-PID".to_owned()),
        ("auth", AuthMode::from(&Auth::default()).to_string()),
        (
            "generator",
            GeneratorKind::from(&GeneratorConfig::default()).to_string(),
        ),
        (
            "demo_chunks",
            GeneratorConfig::DEFAULT_DEMO_CHUNKS.to_string(),
        ),
        ("demo_rate", GeneratorConfig::DEFAULT_DEMO_RATE.to_string()),
        ("max_tokens", "the server's".to_owned()),
        ("temperature", "the server's".to_owned()),
        ("seed", "the server's".to_owned()),
        ("system_prompt", "none".to_owned()),
        (
            "upstream_timeout",
            secs_shown(OpenAiConfig::DEFAULT_TIMEOUT),
        ),
        ("grace", ms(node.timers.grace_ms)),
        ("lease_ttl", ms(node.timers.lease_ttl_ms)),
        ("cancel_deadline", ms(node.timers.cancel_deadline_ms)),
        ("presence_debounce", ms(node.presence.debounce_ms)),
        ("presence_expiry", ms(node.presence.entry_ttl_ms)),
        ("heartbeat", secs_shown(node.heartbeat)),
        ("idle_timeout", secs_shown(node.idle_timeout)),
        ("max_frame_bytes", node.limits.max_frame_bytes.to_string()),
        (
            "max_content_bytes",
            node.limits.max_content_bytes.to_string(),
        ),
        ("history_limit", node.history_limit.to_string()),
        (
            "queue_capacity",
            RuntimeConfig::DEFAULT_QUEUE_CAPACITY.to_string(),
        ),
        ("stall_timeout", secs_shown(node.stall_timeout)),
        (
            "max_lag_bytes",
            weir_core::Config::DEFAULT_MAX_LAG_BYTES.to_string(),
        ),
        (
            "max_connections_per_user",
            Caps::RECOMMENDED.connections_per_user.to_string(),
        ),
        (
            "max_streams_per_user",
            Caps::RECOMMENDED.streams_per_user.to_string(),
        ),
        (
            "chats_per_minute",
            Caps::RECOMMENDED.chats_per_minute.to_string(),
        ),
        ("chat_burst", Caps::RECOMMENDED.chat_burst.to_string()),
        (
            "max_connections_per_ip",
            Caps::RECOMMENDED.connections_per_ip.to_string(),
        ),
        ("trusted_proxy", "none".to_owned()),
        (
            "shutdown_grace",
            secs_shown(RuntimeConfig::DEFAULT_SHUTDOWN_GRACE),
        ),
        ("compat", "on".to_owned()),
        (
            "compat_ws_path",
            weir_runtime::CompatConfig::DEFAULT_WS_PATH.to_owned(),
        ),
        (
            "compat_cancelled_suffix",
            format!("{:?}", node.compat.cancelled_suffix),
        ),
        ("compat_failure_sentence", "the seed's apology".to_owned()),
        ("ai_sdk", "on".to_owned()),
        ("chunk_timestamps", "false".to_owned()),
        ("cors_origin", RuntimeConfig::DEFAULT_CORS_ORIGIN.to_owned()),
        ("store", store_spec(&StoreBackend::default()).to_owned()),
        ("redis_prefix", RedisSettings::DEFAULT_PREFIX.to_owned()),
        (
            "history_retention",
            secs_shown(RedisSettings::DEFAULT_HISTORY_RETENTION),
        ),
        ("store_timeout", secs_shown(RedisSettings::DEFAULT_TIMEOUT)),
        ("log", DEFAULT_LOG.to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_command() -> clap::Command {
        command()
            .find_subcommand("serve")
            .expect("a serve subcommand")
            .clone()
    }

    fn help_of(cmd: &clap::Command, id: &str) -> String {
        cmd.get_arguments()
            .find(|a| a.get_id() == id)
            .and_then(clap::Arg::get_help)
            .map(ToString::to_string)
            .unwrap_or_else(|| panic!("no help for {id}"))
    }

    /// The settings that have no default: the secrets, and what the openai
    /// generator requires.
    const NO_DEFAULT: [&str; 9] = [
        "config",
        "jwt_secret",
        "jwt_public_key",
        "jwt_jwks",
        "jwt_audience",
        "jwt_issuer",
        "upstream",
        "model",
        "api_key",
    ];

    #[test]
    fn help_shows_each_default_read_from_where_it_is_defined() {
        let serve = serve_command();
        assert_eq!(
            help_of(&serve, "queue_capacity"),
            "Per-connection outbound queue, in frames [default: 256]"
        );
        assert_eq!(
            help_of(&serve, "shutdown_grace"),
            "Longest wait for streams to settle on shutdown [default: 5]"
        );
        assert_eq!(
            help_of(&serve, "demo_rate"),
            "Demo pace in chunks per second [default: 20]"
        );
        assert_eq!(
            help_of(&serve, "store_timeout"),
            "How long connecting to Redis or one Redis request may take before the store counts as unreachable [default: 2]"
        );
        assert_eq!(
            help_of(&serve, "redis_prefix"),
            "Prefix of every Redis key and channel; nodes that share it share conversations [default: weir]"
        );
        for (id, shown) in shown_defaults() {
            let help = help_of(&serve, id);
            assert!(
                help.ends_with(&format!(" [default: {shown}]")),
                "{id}: {help}"
            );
            assert_eq!(help.matches("[default:").count(), 1, "{id}: {help}");
        }
        for arg in serve.get_arguments() {
            let id = arg.get_id().as_str();
            let shown = shown_defaults().iter().any(|(d, _)| *d == id);
            assert!(
                shown || NO_DEFAULT.contains(&id) || id == "help",
                "{id} shows no default"
            );
        }
    }

    #[test]
    fn config_shows_the_same_help_as_serve() {
        let cli = command();
        let serve = cli.find_subcommand("serve").expect("serve");
        let config = cli.find_subcommand("config").expect("config");
        for arg in serve.get_arguments() {
            let id = arg.get_id().as_str();
            if id != "help" {
                assert_eq!(help_of(serve, id), help_of(config, id), "{id}");
            }
        }
    }

    #[test]
    fn help_names_the_presence_refresh_period_the_core_uses() {
        let refresh = weir_core::Config::new(fallback_node_id()).housekeeping;
        let help = help_of(&serve_command(), "presence_expiry");
        assert!(
            help.contains(&format!(
                "above {} (the refresh period)",
                secs_shown(refresh)
            )),
            "{help}"
        );
    }

    /// The table of settings in the crate docs: (flag cell, env cell, file
    /// key cell, default cell) per row.
    fn documented_settings() -> Vec<[String; 4]> {
        include_str!("lib.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! | `--"))
            .map(|row| {
                let row = format!("`--{}", row.replace("\\|", "/"));
                let cells: Vec<String> = row
                    .split('|')
                    .map(|c| c.trim().to_owned())
                    .filter(|c| !c.is_empty())
                    .collect();
                cells.try_into().expect("four cells in each row")
            })
            .collect()
    }

    #[test]
    fn the_documented_table_names_every_setting_and_its_default() {
        let serve = serve_command();
        let rows = documented_settings();
        let settings: Vec<_> = serve
            .get_arguments()
            .filter(|a| !matches!(a.get_id().as_str(), "help" | "config"))
            .collect();
        assert_eq!(rows.len(), settings.len(), "one row per setting");
        for arg in settings {
            let id = arg.get_id().as_str();
            let row = rows
                .iter()
                .find(|r| r[2] == format!("`{id}`"))
                .unwrap_or_else(|| panic!("{id} is not documented"));
            let long = arg.get_long().expect("a long flag");
            assert!(row[0].starts_with(&format!("`--{long}")), "{id}: {row:?}");
            let env = arg.get_env().expect("an env var").to_string_lossy();
            assert_eq!(row[1], format!("`{env}`"), "{id}");
            assert_eq!(env, format!("WEIR_{}", id.to_uppercase()), "{id}");
            if let Some((_, shown)) = shown_defaults().into_iter().find(|(d, _)| *d == id) {
                assert!(row[3].contains(&shown), "{id}: {shown} vs {row:?}");
            }
        }
    }
}
