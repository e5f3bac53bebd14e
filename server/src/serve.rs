//! Running the commands: settings → [`RuntimeConfig`] → the chosen runtime
//! (tokio, or smol without any tokio runtime) → its `Server`.

use std::future::Future;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use weir_runtime::{Auth, AuthReloader, GeneratorConfig, Runtime, RuntimeConfig, Server};

use crate::cli::{Cli, Command, ServeArgs};
use crate::page;
use crate::settings::{ConfigError, RuntimeKind, Settings};

/// Exit code for a configuration error (the same as clap's usage errors).
pub const EXIT_CONFIG: u8 = 2;
/// Exit code when the server cannot start or fails while running.
pub const EXIT_FAILURE: u8 = 1;

/// Runs a parsed command line; the process exits with the returned code.
#[must_use]
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Version => {
            #[allow(clippy::print_stdout)] // the answer goes to stdout, for scripts
            {
                println!("weir {}", env!("CARGO_PKG_VERSION"));
                println!("protocol {}", weir_core::wire::PROTOCOL_VERSION);
            }
            ExitCode::SUCCESS
        }
        Command::Config(args) => match args.settings() {
            Ok(s) => {
                #[allow(clippy::print_stdout)]
                {
                    print!("{}", s.to_toml());
                }
                ExitCode::SUCCESS
            }
            Err(e) => config_error(&e),
        },
        Command::Serve(args) => serve(&args),
    }
}

/// The runtime configuration for `settings`, with the web page at `/`.
///
/// The stream timers (grace, lease, cancel deadline) and the presence timers
/// are the same for the node and the store ([`resolve`](crate::settings::resolve)
/// builds both from one node configuration): they are cluster-wide and the
/// runtime refuses a mismatch.
#[must_use]
pub fn runtime_config(settings: &Settings) -> RuntimeConfig {
    RuntimeConfig {
        page: Some(page::page()),
        ..settings.server.clone()
    }
}

/// Every connection is an open file: the soft limit (often 1 024) goes up to
/// the hard one, the most a process may raise it to by itself. Past that, the
/// hard limit is the one OS setting to raise (docs/operations.md).
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::info!(open_files = n, "open-files limit"),
        Err(e) => tracing::warn!("cannot raise the open-files limit: {e}"),
    }
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("weir: configuration error: {e}");
    ExitCode::from(EXIT_CONFIG)
}

fn init_logging(filter: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|e| e.to_string())
}

fn serve(args: &ServeArgs) -> ExitCode {
    let settings = match args.settings() {
        Ok(s) => s,
        Err(e) => return config_error(&e),
    };
    if let Err(e) = init_logging(&settings.log) {
        eprintln!("weir: cannot set up logging: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let config = runtime_config(&settings);
    raise_open_files_limit();
    let generator = match &config.generator {
        GeneratorConfig::Demo {
            chunks,
            rate_per_sec,
        } => format!("demo ({chunks} chunks at {rate_per_sec}/s)"),
        GeneratorConfig::Openai(c) => format!("openai (model {:?} at {})", c.model, c.upstream),
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        node_id = %config.node.node_id,
        runtime = %settings.runtime,
        worker_threads = %settings
            .worker_threads
            .map_or_else(|| "one per core".to_owned(), |n| n.to_string()),
        generator = %generator,
        grace_s = Duration::from_millis(config.node.timers.grace_ms).as_secs_f64(),
        "weir starting"
    );
    if config.auth == Auth::None {
        tracing::warn!(
            "!!! AUTH IS OFF (--auth none): anyone who can reach {} can act as ANY user by \
             choosing user_id. Use --auth token --jwt-secret … for anything but local development.",
            config.listen
        );
    }

    let listen = config.listen;
    let threads = settings.worker_threads;
    let result = match settings.runtime {
        RuntimeKind::Tokio => weir_runtime_tokio::block_on(
            threads,
            serve_on::<weir_runtime_tokio::Tokio, _>(
                config,
                listen,
                weir_runtime_tokio::shutdown_signal(),
                |keys| weir_runtime_tokio::hangup_signals(move || drop(keys.reload())),
            ),
        )
        .unwrap_or_else(|e| {
            tracing::error!("cannot start the tokio runtime: {e}");
            Err(())
        }),
        // No tokio runtime: the redis crate then runs on smol too.
        RuntimeKind::Smol => weir_runtime_smol::block_on(
            threads,
            serve_on::<weir_runtime_smol::Smol, _>(
                config,
                listen,
                weir_runtime_smol::shutdown_signal(),
                |keys| weir_runtime_smol::hangup_signals(move || drop(keys.reload())),
            ),
        ),
    };
    match result {
        Ok(()) => {
            tracing::info!("weir stopped");
            ExitCode::SUCCESS
        }
        Err(()) => ExitCode::from(EXIT_FAILURE),
    }
}

/// Binds, announces the address, and serves on runtime `R` until
/// `shutdown`, with the task `on_hangup` makes of the token auth's key
/// reloader running meanwhile (SIGHUP reloads the keys; the reloader logs
/// how it went).
async fn serve_on<R: Runtime, H: Future<Output = ()> + Send + 'static>(
    config: RuntimeConfig,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_hangup: impl FnOnce(AuthReloader) -> H,
) -> Result<(), ()> {
    let server = match Server::<R>::bind(config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot start on {listen}: {e}");
            return Err(());
        }
    };
    // Aborted when dropped, after the server stopped.
    let _hangups = R::spawn(on_hangup(server.auth_reloader()));
    let addr = server.local_addr();
    tracing::info!("weir listening on http://{addr}");
    #[allow(clippy::print_stdout)] // scripts read the bound address (port 0) from stdout
    {
        println!("weir listening on http://{addr}");
    }
    server.run(shutdown).await.map_err(|e| {
        tracing::error!("server failed: {e}");
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{resolve, Layer};

    fn settings(layer: Layer) -> Settings {
        resolve(&layer, &Layer::default()).unwrap()
    }

    #[test]
    fn runtime_config_carries_every_setting() {
        let s = settings(Layer {
            listen: Some("127.0.0.1:0".into()),
            auth: Some(crate::settings::AuthMode::Token),
            jwt_secret: Some("k3y".into()),
            demo_chunks: Some(6),
            demo_rate: Some(100.0),
            grace: Some(2.0),
            lease_ttl: Some(4.0),
            presence_debounce: Some(1.0),
            queue_capacity: Some(8),
            shutdown_grace: Some(0.5),
            ..Layer::default()
        });
        let c = runtime_config(&s);
        assert_eq!(c.listen, s.server.listen);
        assert_eq!(c.node.timers.grace_ms, 2000);
        assert_eq!(c.store.timers.grace_ms, 2000);
        assert_eq!(c.node.timers.lease_ttl_ms, 4000);
        assert_eq!(c.store.timers, c.node.timers);
        assert_eq!(c.node.presence.debounce_ms, 1000);
        assert_eq!(c.store.presence, c.node.presence);
        assert_eq!(c.auth, Auth::hs256(b"k3y".to_vec()));
        assert_eq!(
            c.generator,
            GeneratorConfig::Demo {
                chunks: 6,
                rate_per_sec: 100.0
            }
        );
        assert_eq!(c.queue_capacity, 8);
        assert_eq!(c.shutdown_grace, Duration::from_millis(500));
        assert_eq!(c.page.as_deref(), Some(page::page().as_str()));
    }

    #[test]
    fn openai_settings_reach_the_runtime() {
        let s = settings(Layer {
            generator: Some(crate::settings::GeneratorKind::Openai),
            upstream: Some("http://127.0.0.1:8000".into()),
            model: Some("smollm2".into()),
            api_key: Some("sk-x".into()),
            max_tokens: Some(32),
            temperature: Some(0.0),
            seed: Some(42),
            system_prompt: Some("Be brief.".into()),
            upstream_timeout: Some(2.5),
            ..Layer::default()
        });
        let GeneratorConfig::Openai(c) = runtime_config(&s).generator else {
            panic!("the openai generator");
        };
        assert_eq!(c.upstream.to_string(), "http://127.0.0.1:8000");
        assert_eq!(c.model, "smollm2");
        assert_eq!(c.api_key.as_deref(), Some("sk-x"));
        assert_eq!(c.max_tokens, Some(32));
        assert_eq!(c.temperature, Some(0.0));
        assert_eq!(c.seed, Some(42));
        assert_eq!(c.system_prompt.as_deref(), Some("Be brief."));
        assert_eq!(c.timeout, Duration::from_millis(2500));
    }

    #[test]
    fn default_settings_give_no_auth_and_the_default_demo() {
        let c = runtime_config(&settings(Layer::default()));
        assert_eq!(c.auth, Auth::None);
        assert_eq!(c.generator, GeneratorConfig::default());
        assert_eq!(c.queue_capacity, RuntimeConfig::DEFAULT_QUEUE_CAPACITY);
        assert_eq!(c.shutdown_grace, RuntimeConfig::DEFAULT_SHUTDOWN_GRACE);
    }

    #[test]
    fn runtime_accepts_the_built_config() {
        let s = settings(Layer {
            listen: Some("127.0.0.1:0".into()),
            grace: Some(1.0),
            ..Layer::default()
        });
        let server = weir_runtime_tokio::block_on(
            Some(std::num::NonZeroUsize::MIN),
            weir_runtime_tokio::Server::bind(runtime_config(&s)),
        )
        .unwrap()
        .unwrap();
        assert!(server.local_addr().port() != 0);
    }

    #[test]
    fn the_smol_runtime_accepts_the_built_config() {
        let s = settings(Layer {
            listen: Some("127.0.0.1:0".into()),
            runtime: Some(RuntimeKind::Smol),
            ..Layer::default()
        });
        assert_eq!(s.runtime, RuntimeKind::Smol);
        let server =
            weir_runtime_smol::block_on(None, weir_runtime_smol::Server::bind(runtime_config(&s)))
                .unwrap();
        assert!(server.local_addr().port() != 0);
    }
}
