//! The command line: subcommands and their arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::settings::{ConfigError, Layer, Settings};

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
