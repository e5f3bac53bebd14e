use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use clap::Parser;
use weir_core::ids::NodeId;
use weir_core::store::StoreConfig;
use weir_core::stream::StreamTimers;
use weir_core::wire::Limits;
use weir_runtime::{Auth, GeneratorConfig, RedisSettings, StoreBackend};

use super::resolve::{ms, node_id_from};
use super::*;
use crate::cli::{Cli, Command, ServeArgs};

/// Tests that parse the command line read the process environment, which
/// tests that set `WEIR_*` variables change: they take this lock.
static ENV: Mutex<()> = Mutex::new(());

fn env_lock() -> std::sync::MutexGuard<'static, ()> {
    ENV.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn parse(args: &[&str]) -> ServeArgs {
    let cli = Cli::try_parse_from(std::iter::once("weir").chain(args.iter().copied()))
        .expect("arguments parse");
    match cli.command {
        Command::Serve(a) | Command::Config(a) => a,
        Command::Version => panic!("not a serve command"),
    }
}

fn toml_layer(text: &str) -> Layer {
    Layer::from_toml(text, Path::new("test.toml")).expect("valid TOML")
}

fn err(cli: Layer, file: Layer) -> String {
    resolve(&cli, &file)
        .expect_err("settings must be rejected")
        .to_string()
}

#[test]
fn defaults_apply_when_nothing_is_set() {
    let s = resolve(&Layer::default(), &Layer::default()).unwrap();
    assert_eq!(s.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(s.server.auth, Auth::None);
    assert_eq!(
        s.server.generator,
        GeneratorConfig::Demo {
            chunks: 40,
            rate_per_sec: 20.0
        }
    );
    assert_eq!(ms(s.server.node.timers.grace_ms), Duration::from_secs(30));
    assert_eq!(
        ms(s.server.node.timers.lease_ttl_ms),
        Duration::from_secs(10)
    );
    assert_eq!(
        ms(s.server.node.timers.cancel_deadline_ms),
        Duration::from_secs(5)
    );
    assert_eq!(
        ms(s.server.node.presence.debounce_ms),
        Duration::from_secs(5)
    );
    assert_eq!(s.server.node.heartbeat, Duration::from_secs(15));
    assert_eq!(s.server.node.idle_timeout, Duration::from_secs(60));
    assert_eq!(s.server.node.limits, Limits::default());
    assert_eq!(s.server.node.history_limit, 200);
    assert_eq!(s.server.queue_capacity, 256);
    assert_eq!(s.server.node.stall_timeout, Duration::from_secs(10));
    assert_eq!(s.server.node.max_lag_bytes, 1 << 20);
    assert_eq!(s.server.shutdown_grace, Duration::from_secs(5));
    assert_eq!(s.log, "info");
    assert_eq!(s.server.node.node_id, default_node_id());
}

#[test]
fn flag_beats_file_and_file_beats_default() {
    let cli = Layer {
        demo_chunks: Some(7),
        grace: Some(2.5),
        ..Layer::default()
    };
    let file = toml_layer("demo_chunks = 10\ndemo_rate = 100\ngrace = 9\n");
    let s = resolve(&cli, &file).unwrap();
    let GeneratorConfig::Demo {
        chunks,
        rate_per_sec,
    } = s.server.generator
    else {
        panic!("the demo generator");
    };
    assert_eq!(chunks, 7, "flag beats file");
    assert!(
        (rate_per_sec - 100.0).abs() < f64::EPSILON,
        "file beats default"
    );
    assert_eq!(
        ms(s.server.node.timers.grace_ms),
        Duration::from_millis(2500),
        "flag beats file"
    );
    assert_eq!(
        s.server.node.heartbeat,
        Duration::from_secs(15),
        "default when unset"
    );
}

#[test]
fn flag_beats_env_and_env_beats_file() {
    let _g = env_lock();
    std::env::set_var("WEIR_DEMO_CHUNKS", "11");
    std::env::set_var("WEIR_GRACE", "3");
    std::env::set_var("WEIR_LISTEN", "127.0.0.1:9001");
    let args = parse(&["serve", "--demo-chunks", "12"]);
    std::env::remove_var("WEIR_DEMO_CHUNKS");
    std::env::remove_var("WEIR_GRACE");
    std::env::remove_var("WEIR_LISTEN");

    let file =
        toml_layer("demo_chunks = 13\ngrace = 4\nlisten = \"127.0.0.1:9002\"\nheartbeat = 5\n");
    let s = resolve(&args.layer, &file).unwrap();
    assert_eq!(
        s.server.generator,
        GeneratorConfig::Demo {
            chunks: 12,
            rate_per_sec: 20.0
        },
        "flag beats env"
    );
    assert_eq!(
        ms(s.server.node.timers.grace_ms),
        Duration::from_secs(3),
        "env beats file"
    );
    assert_eq!(
        s.server.listen,
        "127.0.0.1:9001".parse().unwrap(),
        "env beats file"
    );
    assert_eq!(
        s.server.node.heartbeat,
        Duration::from_secs(5),
        "file beats default"
    );
}

#[test]
fn every_flag_has_its_documented_name() {
    let _g = env_lock();
    let a = parse(&[
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--node-id",
        "n1",
        "--auth",
        "token",
        "--jwt-secret",
        "s3cret",
        "--generator",
        "demo",
        "--demo-chunks",
        "5",
        "--demo-rate",
        "50",
        "--grace",
        "1",
        "--config",
        "/dev/null",
        "--heartbeat",
        "2",
        "--idle-timeout",
        "6",
        "--lease-ttl",
        "3",
        "--cancel-deadline",
        "1.5",
        "--presence-debounce",
        "0",
        "--max-frame-bytes",
        "4096",
        "--max-content-bytes",
        "1000",
        "--history-limit",
        "20",
        "--queue-capacity",
        "8",
        "--stall-timeout",
        "2.5",
        "--max-lag-bytes",
        "4096",
        "--shutdown-grace",
        "0.5",
        "--log",
        "debug",
    ]);
    assert_eq!(a.config.as_deref(), Some(Path::new("/dev/null")));
    let s = a.settings().unwrap();
    assert_eq!(s.server.listen, "0.0.0.0:0".parse().unwrap());
    assert_eq!(s.server.node.node_id.as_str(), "n1");
    assert_eq!(s.server.auth, Auth::hs256(b"s3cret".to_vec()));
    assert_eq!(
        s.server.generator,
        GeneratorConfig::Demo {
            chunks: 5,
            rate_per_sec: 50.0
        }
    );
    assert_eq!(ms(s.server.node.timers.grace_ms), Duration::from_secs(1));
    assert_eq!(s.server.node.heartbeat, Duration::from_secs(2));
    assert_eq!(s.server.node.idle_timeout, Duration::from_secs(6));
    assert_eq!(
        ms(s.server.node.timers.lease_ttl_ms),
        Duration::from_secs(3)
    );
    assert_eq!(
        ms(s.server.node.timers.cancel_deadline_ms),
        Duration::from_millis(1500)
    );
    assert_eq!(ms(s.server.node.presence.debounce_ms), Duration::ZERO);
    assert_eq!(s.server.node.limits.max_frame_bytes, 4096);
    assert_eq!(s.server.node.limits.max_content_bytes, 1000);
    assert_eq!(s.server.node.history_limit, 20);
    assert_eq!(s.server.queue_capacity, 8);
    assert_eq!(s.server.node.stall_timeout, Duration::from_millis(2500));
    assert_eq!(s.server.node.max_lag_bytes, 4096);
    assert_eq!(s.server.shutdown_grace, Duration::from_millis(500));
    assert_eq!(s.log, "debug");
}

#[test]
fn config_and_version_subcommands_parse() {
    let _g = env_lock();
    let cli = Cli::try_parse_from(["weir", "config", "--demo-rate", "5"]).unwrap();
    assert!(matches!(cli.command, Command::Config(a) if a.layer.demo_rate == Some(5.0)));
    let cli = Cli::try_parse_from(["weir", "version"]).unwrap();
    assert!(matches!(cli.command, Command::Version));
    assert!(Cli::try_parse_from(["weir", "serve", "--auth", "maybe"]).is_err());
    assert!(Cli::try_parse_from(["weir", "serve", "--no-such-flag"]).is_err());
}

#[test]
fn file_keys_mirror_flag_names() {
    let file = toml_layer(
        r#"
        listen = "127.0.0.1:0"
        node_id = "from-file"
        auth = "token"
        jwt_secret = "k"
        generator = "demo"
        demo_chunks = 3
        demo_rate = 2.5
        grace = 1
        lease_ttl = 4
        cancel_deadline = 2
        presence_debounce = 0.25
        heartbeat = 1
        idle_timeout = 3
        max_frame_bytes = 2048
        max_content_bytes = 100
        history_limit = 5
        queue_capacity = 16
        worker_threads = 3
        shutdown_grace = 1
        log = "warn"
        "#,
    );
    let s = resolve(&Layer::default(), &file).unwrap();
    assert_eq!(s.server.node.node_id.as_str(), "from-file");
    assert_eq!(
        ms(s.server.node.presence.debounce_ms),
        Duration::from_millis(250)
    );
    assert_eq!(s.server.queue_capacity, 16);
    assert_eq!(s.worker_threads.map(NonZeroUsize::get), Some(3));
    assert_eq!(s.log, "warn");
}

#[test]
fn unknown_or_mistyped_file_key_is_an_error() {
    let e = Layer::from_toml("demo_chunk = 3\n", Path::new("w.toml")).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("w.toml") && msg.contains("demo_chunk"),
        "{msg}"
    );
    assert!(Layer::from_toml("demo_chunks = \"many\"\n", Path::new("w.toml")).is_err());
    assert!(Layer::from_toml("auth = \"maybe\"\n", Path::new("w.toml")).is_err());
}

#[test]
fn missing_config_file_is_an_error() {
    let args = ServeArgs {
        config: Some("/nonexistent/weir.toml".into()),
        ..ServeArgs::default()
    };
    let msg = args.settings().unwrap_err().to_string();
    assert!(msg.contains("/nonexistent/weir.toml"), "{msg}");
}

#[test]
fn bad_listen_address_is_rejected() {
    for bad in [
        "8080",
        "localhost",
        "127.0.0.1",
        "1.2.3.4:99999",
        "example.com:80",
        "",
    ] {
        let cli = Layer {
            listen: Some(bad.into()),
            ..Layer::default()
        };
        let msg = err(cli, Layer::default());
        assert!(msg.contains("--listen"), "{bad}: {msg}");
    }
}

#[test]
fn listen_accepts_ipv4_ipv6_and_localhost() {
    for (given, want) in [
        ("0.0.0.0:80", "0.0.0.0:80"),
        ("[::1]:8080", "[::1]:8080"),
        ("localhost:9000", "127.0.0.1:9000"),
    ] {
        let cli = Layer {
            listen: Some(given.into()),
            ..Layer::default()
        };
        assert_eq!(
            resolve(&cli, &Layer::default()).unwrap().server.listen,
            want.parse().unwrap()
        );
    }
}

#[test]
fn bad_node_id_is_rejected() {
    for bad in ["", "has space", "slash/id", &"x".repeat(65)] {
        let cli = Layer {
            node_id: Some(bad.into()),
            ..Layer::default()
        };
        let msg = err(cli, Layer::default());
        assert!(msg.contains("--node-id"), "{bad}: {msg}");
    }
}

#[test]
fn default_node_id_is_host_and_pid_in_node_id_syntax() {
    let id = default_node_id();
    assert!(NodeId::parse(id.as_str()).is_ok());
    assert_eq!(node_id_from("web 01\n", 42).as_str(), "web-01-42");
    assert_eq!(node_id_from("", 42).as_str(), FALLBACK_NODE_ID);
    assert_eq!(node_id_from("  \n", 42).as_str(), FALLBACK_NODE_ID);
    let long = node_id_from(&"h".repeat(200), 4_000_000_000);
    assert_eq!(long.as_str().len(), 64);
    assert!(long.as_str().ends_with("-4000000000"));
}

#[test]
fn token_auth_without_secret_is_rejected() {
    let cli = Layer {
        auth: Some(AuthMode::Token),
        ..Layer::default()
    };
    assert!(err(cli.clone(), Layer::default()).contains("--jwt-secret"));
    let empty = Layer {
        jwt_secret: Some(String::new()),
        ..cli
    };
    assert!(err(empty, Layer::default()).contains("--jwt-secret"));
}

#[test]
fn secret_without_token_auth_is_rejected() {
    let cli = Layer {
        jwt_secret: Some("k".into()),
        ..Layer::default()
    };
    assert!(err(cli, Layer::default()).contains("--auth token"));
}

#[test]
fn token_auth_secret_may_come_from_the_file_and_never_shows() {
    let cli = Layer {
        auth: Some(AuthMode::Token),
        ..Layer::default()
    };
    let file = toml_layer("jwt_secret = \"topsecret\"\n");
    let s = resolve(&cli, &file).unwrap();
    let Auth::Token(weir_runtime::TokenAuth {
        key: weir_runtime::TokenKey::Secret(secret),
        ..
    }) = &s.server.auth
    else {
        panic!("token auth expected");
    };
    assert_eq!(secret.as_slice(), b"topsecret");
    assert!(!format!("{s:?}").contains("topsecret"));
    let toml = s.to_toml();
    assert!(!toml.contains("topsecret"), "{toml}");
    assert!(toml.contains("jwt_secret is set"), "{toml}");
}

fn openai_layer() -> Layer {
    Layer {
        generator: Some(GeneratorKind::Openai),
        upstream: Some("http://127.0.0.1:8000".into()),
        model: Some("smollm2".into()),
        ..Layer::default()
    }
}

#[test]
fn openai_generator_takes_its_settings_with_the_servers_defaults() {
    let s = resolve(&openai_layer(), &Layer::default()).unwrap();
    let GeneratorConfig::Openai(c) = &s.server.generator else {
        panic!("the openai generator");
    };
    assert_eq!(c.upstream.host(), "127.0.0.1");
    assert_eq!(c.upstream.port(), 8000);
    assert_eq!(c.model, "smollm2");
    assert_eq!(c.api_key, None);
    assert_eq!(c.max_tokens, None);
    assert_eq!(c.temperature, None);
    assert_eq!(c.seed, None);
    assert_eq!(c.system_prompt, None);
    assert_eq!(c.timeout, Duration::from_secs(60));
}

#[test]
fn openai_flags_and_env_have_their_documented_names() {
    let _g = env_lock();
    std::env::set_var("WEIR_API_KEY", "sk-from-env");
    std::env::set_var("WEIR_MODEL", "env-model");
    let args = parse(&[
        "serve",
        "--generator",
        "openai",
        "--upstream",
        "http://localhost:11434/",
        "--model",
        "flag-model",
        "--max-tokens",
        "100",
        "--temperature",
        "0",
        "--seed",
        "7",
        "--system-prompt",
        "Be brief.",
        "--upstream-timeout",
        "30",
    ]);
    std::env::remove_var("WEIR_API_KEY");
    std::env::remove_var("WEIR_MODEL");
    let s = args.settings().unwrap();
    let GeneratorConfig::Openai(c) = &s.server.generator else {
        panic!("the openai generator");
    };
    assert_eq!(c.upstream.to_string(), "http://localhost:11434");
    assert_eq!(c.model, "flag-model", "flag beats env");
    assert_eq!(c.api_key.as_deref(), Some("sk-from-env"));
    assert_eq!(c.max_tokens, Some(100));
    assert_eq!(c.temperature, Some(0.0));
    assert_eq!(c.seed, Some(7));
    assert_eq!(c.system_prompt.as_deref(), Some("Be brief."));
    assert_eq!(c.timeout, Duration::from_secs(30));
    assert!(!format!("{s:?}").contains("sk-from-env"));
}

#[test]
fn openai_settings_may_come_from_the_file_and_the_key_never_shows() {
    let file = toml_layer(
        r#"
        generator = "openai"
        upstream = "http://127.0.0.1:8000"
        model = "m"
        api_key = "sk-file-secret"
        temperature = 0.5
        "#,
    );
    let s = resolve(&Layer::default(), &file).unwrap();
    let GeneratorConfig::Openai(c) = &s.server.generator else {
        panic!("the openai generator");
    };
    assert_eq!(c.api_key.as_deref(), Some("sk-file-secret"));
    let toml = s.to_toml();
    assert!(!toml.contains("sk-file-secret"), "{toml}");
    assert!(toml.contains("api_key is set"), "{toml}");
    let back = resolve(&Layer::default(), &toml_layer(&toml)).unwrap();
    let GeneratorConfig::Openai(b) = &back.server.generator else {
        panic!("the openai generator");
    };
    assert_eq!(b.upstream, c.upstream);
    assert_eq!(b.model, c.model);
    assert_eq!(b.temperature, c.temperature);
    assert_eq!(b.timeout, c.timeout);
}

#[test]
fn openai_without_upstream_or_model_is_rejected_with_what_to_add() {
    let no_upstream = Layer {
        upstream: None,
        ..openai_layer()
    };
    assert!(err(no_upstream, Layer::default()).contains("needs --upstream"));
    let no_model = Layer {
        model: None,
        ..openai_layer()
    };
    assert!(err(no_model, Layer::default()).contains("needs --model"));
}

#[test]
fn upstream_urls_that_cannot_work_are_rejected() {
    for (bad, says) in [
        ("https://api.openai.com", "https is not supported"),
        ("127.0.0.1:8000", "--upstream"),
        ("http://user:pw@host:1", "user info"),
    ] {
        let cli = Layer {
            upstream: Some(bad.into()),
            ..openai_layer()
        };
        let msg = err(cli, Layer::default());
        assert!(
            msg.starts_with("--upstream") && msg.contains(says),
            "{bad}: {msg}"
        );
    }
}

#[test]
fn upstream_with_the_demo_generator_is_rejected() {
    let cli = Layer {
        upstream: Some("http://127.0.0.1:8000".into()),
        ..Layer::default()
    };
    assert!(err(cli, Layer::default()).contains("add --generator openai"));
}

#[test]
fn out_of_range_openai_numbers_are_rejected() {
    for (cli, flag) in [
        (
            Layer {
                max_tokens: Some(0),
                ..openai_layer()
            },
            "--max-tokens",
        ),
        (
            Layer {
                temperature: Some(2.5),
                ..openai_layer()
            },
            "--temperature",
        ),
        (
            Layer {
                temperature: Some(f64::NAN),
                ..openai_layer()
            },
            "--temperature",
        ),
        (
            Layer {
                upstream_timeout: Some(0.0),
                ..openai_layer()
            },
            "--upstream-timeout",
        ),
    ] {
        let msg = err(cli, Layer::default());
        assert!(msg.starts_with(flag), "{flag}: {msg}");
    }
}

#[test]
fn out_of_range_numbers_are_rejected() {
    let cases: Vec<(Layer, &str)> = vec![
        (
            Layer {
                demo_rate: Some(0.0),
                ..Layer::default()
            },
            "--demo-rate",
        ),
        (
            Layer {
                demo_rate: Some(f64::NAN),
                ..Layer::default()
            },
            "--demo-rate",
        ),
        (
            Layer {
                demo_chunks: Some(0),
                ..Layer::default()
            },
            "--demo-chunks",
        ),
        (
            Layer {
                grace: Some(-1.0),
                ..Layer::default()
            },
            "--grace",
        ),
        (
            Layer {
                grace: Some(f64::INFINITY),
                ..Layer::default()
            },
            "--grace",
        ),
        (
            Layer {
                lease_ttl: Some(0.0),
                ..Layer::default()
            },
            "--lease-ttl",
        ),
        (
            Layer {
                heartbeat: Some(0.0),
                ..Layer::default()
            },
            "--heartbeat",
        ),
        (
            Layer {
                heartbeat: Some(30.0),
                idle_timeout: Some(30.0),
                ..Layer::default()
            },
            "--idle-timeout",
        ),
        (
            Layer {
                max_frame_bytes: Some(10),
                ..Layer::default()
            },
            "--max-frame-bytes",
        ),
        (
            Layer {
                max_frame_bytes: Some(4096),
                max_content_bytes: Some(4096),
                ..Layer::default()
            },
            "--max-content-bytes",
        ),
        (
            Layer {
                history_limit: Some(0),
                ..Layer::default()
            },
            "--history-limit",
        ),
        (
            Layer {
                queue_capacity: Some(0),
                ..Layer::default()
            },
            "--queue-capacity",
        ),
        (
            Layer {
                stall_timeout: Some(0.0),
                ..Layer::default()
            },
            "--stall-timeout",
        ),
        (
            Layer {
                max_lag_bytes: Some(0),
                ..Layer::default()
            },
            "--max-lag-bytes",
        ),
    ];
    for (cli, flag) in cases {
        let msg = err(cli, Layer::default());
        assert!(msg.starts_with(flag), "{flag}: {msg}");
    }
}

#[test]
fn zero_grace_and_zero_debounce_are_allowed() {
    let cli = Layer {
        grace: Some(0.0),
        presence_debounce: Some(0.0),
        ..Layer::default()
    };
    let s = resolve(&cli, &Layer::default()).unwrap();
    assert_eq!(s.server.node.timers.grace_ms, 0);
    assert_eq!(s.server.node.presence.debounce_ms, 0);
}

#[test]
fn bad_log_filter_is_rejected() {
    let cli = Layer {
        log: Some("weir=loud".into()),
        ..Layer::default()
    };
    assert!(err(cli, Layer::default()).starts_with("--log"));
}

#[test]
fn timers_reach_both_node_and_store() {
    let cli = Layer {
        grace: Some(1.5),
        lease_ttl: Some(3.0),
        cancel_deadline: Some(2.0),
        presence_debounce: Some(0.75),
        heartbeat: Some(4.0),
        idle_timeout: Some(9.0),
        history_limit: Some(2000),
        max_frame_bytes: Some(8192),
        max_content_bytes: Some(4000),
        ..Layer::default()
    };
    let s = resolve(&cli, &Layer::default()).unwrap();
    let node = s.server.node.clone();
    let store = s.server.store;
    let want = StreamTimers {
        lease_ttl_ms: 3000,
        cancel_deadline_ms: 2000,
        grace_ms: 1500,
    };
    assert_eq!(node.timers, want);
    assert_eq!(store.timers, want);
    assert_eq!(node.presence.debounce_ms, 750);
    assert_eq!(node.presence, store.presence);
    assert_eq!(node.heartbeat, Duration::from_secs(4));
    assert_eq!(node.idle_timeout, Duration::from_secs(9));
    assert_eq!(node.history_limit, 2000);
    assert_eq!(
        store.history_limit, 2000,
        "the store keeps what history shows"
    );
    assert_eq!(node.limits.max_frame_bytes, 8192);
    assert_eq!(node.limits.max_content_bytes, 4000);
    assert_eq!(node.node_id, s.server.node.node_id);
}

#[test]
fn store_keeps_its_default_history_when_the_frame_shows_less() {
    let s = resolve(&Layer::default(), &Layer::default()).unwrap();
    assert_eq!(
        s.server.store.history_limit,
        StoreConfig::default().history_limit
    );
}

#[test]
fn printed_configuration_reads_back_to_the_same_settings() {
    let cli = Layer {
        listen: Some("[::1]:0".into()),
        node_id: Some("printed".into()),
        demo_chunks: Some(9),
        demo_rate: Some(7.5),
        grace: Some(0.25),
        log: Some("info,weir_runtime_tokio=debug".into()),
        ..Layer::default()
    };
    let s = resolve(&cli, &Layer::default()).unwrap();
    let printed = s.to_toml();
    let back = resolve(&Layer::default(), &toml_layer(&printed)).unwrap();
    assert_eq!(back, s, "{printed}");
}

#[test]
fn worker_threads_default_to_one_per_core_and_must_be_1_to_1024() {
    let s = resolve(&Layer::default(), &Layer::default()).unwrap();
    assert_eq!(s.worker_threads, None);
    for (n, ok) in [(0, false), (1, true), (1024, true), (1025, false)] {
        let cli = Layer {
            worker_threads: Some(n),
            ..Layer::default()
        };
        match resolve(&cli, &Layer::default()) {
            Ok(s) => {
                assert!(ok, "{n} accepted");
                assert_eq!(s.worker_threads.map(NonZeroUsize::get), Some(n));
                // It survives the round trip through the printed TOML.
                let back = resolve(&Layer::default(), &toml_layer(&s.to_toml())).unwrap();
                assert_eq!(back.worker_threads, s.worker_threads);
            }
            Err(e) => {
                assert!(!ok, "{n} refused: {e}");
                assert!(e.to_string().contains("worker-threads"), "{e}");
            }
        }
    }
}

#[test]
fn redis_store_takes_its_settings_with_the_runtimes_defaults() {
    let cli = Layer {
        store: Some("redis://127.0.0.1:6379/2".into()),
        ..Layer::default()
    };
    let s = resolve(&cli, &Layer::default()).unwrap();
    assert_eq!(
        s.server.store_backend,
        StoreBackend::Redis(RedisSettings {
            url: "redis://127.0.0.1:6379/2".into(),
            prefix: "weir".into(),
            history_retention: Duration::ZERO,
            timeout: Duration::from_secs(2),
        })
    );
}

#[test]
fn redis_flags_env_and_file_keys_have_their_documented_names() {
    let _g = env_lock();
    std::env::set_var("WEIR_STORE", "redis://127.0.0.1:6379");
    std::env::set_var("WEIR_STORE_TIMEOUT", "0.5");
    let args = parse(&[
        "serve",
        "--redis-prefix",
        "flag-p",
        "--history-retention",
        "60",
    ]);
    std::env::remove_var("WEIR_STORE");
    std::env::remove_var("WEIR_STORE_TIMEOUT");
    let file = toml_layer(
        "store = \"redis://file:1\"\nredis_prefix = \"file-p\"\nhistory_retention = 5\nstore_timeout = 9\n",
    );
    let s = resolve(&args.layer, &file).unwrap();
    assert_eq!(
        s.server.store_backend,
        StoreBackend::Redis(RedisSettings {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "flag-p".into(),
            history_retention: Duration::from_secs(60),
            timeout: Duration::from_millis(500),
        }),
        "flags and env beat the file"
    );
    let s = resolve(&Layer::default(), &file).unwrap();
    assert_eq!(
        s.server.store_backend,
        StoreBackend::Redis(RedisSettings {
            url: "redis://file:1".into(),
            prefix: "file-p".into(),
            history_retention: Duration::from_secs(5),
            timeout: Duration::from_secs(9),
        })
    );
}

#[test]
fn redis_settings_are_neither_checked_nor_printed_with_the_memory_store() {
    let cli = Layer {
        redis_prefix: Some("not a prefix".into()),
        history_retention: Some(-1.0),
        store_timeout: Some(0.0),
        ..Layer::default()
    };
    let s = resolve(&cli, &Layer::default()).unwrap();
    assert_eq!(s.server.store_backend, StoreBackend::Memory);
    let toml = s.to_toml();
    assert!(toml.contains("store = \"memory\""), "{toml}");
    for key in ["redis_prefix", "history_retention", "store_timeout"] {
        assert!(!toml.contains(key), "{key}: {toml}");
    }
}

#[test]
fn bad_store_and_redis_values_are_rejected() {
    let redis = |layer: Layer| Layer {
        store: Some("redis://127.0.0.1:6379".into()),
        ..layer
    };
    for (cli, says) in [
        (
            Layer {
                store: Some("postgres://x".into()),
                ..Layer::default()
            },
            "--store postgres://x: must be `memory`, a redis://HOST:PORT URL or redis-cluster://HOST:PORT[,HOST:PORT…]",
        ),
        (
            redis(Layer {
                redis_prefix: Some("a b".into()),
                ..Layer::default()
            }),
            "--redis-prefix a b: must be 1 or more of A-Z a-z 0-9 _ - . :",
        ),
        (
            redis(Layer {
                redis_prefix: Some(String::new()),
                ..Layer::default()
            }),
            "--redis-prefix : must be 1 or more",
        ),
        (
            redis(Layer {
                history_retention: Some(-1.0),
                ..Layer::default()
            }),
            "--history-retention -1: must be a number of seconds, 0 or more",
        ),
        (
            redis(Layer {
                store_timeout: Some(0.0),
                ..Layer::default()
            }),
            "--store-timeout 0: must be a positive number of seconds",
        ),
    ] {
        let msg = err(cli, Layer::default());
        assert!(msg.starts_with(says), "{says}: {msg}");
    }
}

#[test]
fn presence_expiry_must_exceed_the_refresh_period() {
    let with = |secs: f64| Layer {
        presence_expiry: Some(secs),
        ..Layer::default()
    };
    assert_eq!(
        err(with(2.0), Layer::default()),
        "--presence-expiry 2: must be longer than the presence refresh period (2 s)"
    );
    assert!(err(with(0.0), Layer::default()).starts_with("--presence-expiry 0: must be a positive"));
    let s = resolve(&with(2.5), &Layer::default()).unwrap();
    assert_eq!(s.server.node.presence.entry_ttl_ms, 2500);
    assert_eq!(s.server.store.presence, s.server.node.presence);
}

#[test]
fn out_of_range_messages_name_the_flag_value_and_rule() {
    for (cli, want) in [
        (
            Layer {
                worker_threads: Some(1025),
                ..Layer::default()
            },
            "--worker-threads 1025: must be at least 1 and at most 1024".to_owned(),
        ),
        (
            Layer {
                heartbeat: Some(90.0),
                ..Layer::default()
            },
            "--idle-timeout 60: must be longer than --heartbeat (pongs answer the pings that keep a connection alive)".to_owned(),
        ),
        (
            Layer {
                shutdown_grace: Some(-1.0),
                ..Layer::default()
            },
            "--shutdown-grace -1: must be a number of seconds, 0 or more".to_owned(),
        ),
        (
            Layer {
                grace: Some(1e300),
                ..Layer::default()
            },
            format!("--grace {}: is not a usable duration", 1e300_f64),
        ),
    ] {
        assert_eq!(err(cli, Layer::default()), want);
    }
}

#[test]
fn of_several_bad_values_the_first_in_check_order_is_reported() {
    let cli = Layer {
        listen: Some("bad".into()),
        grace: Some(-1.0),
        queue_capacity: Some(0),
        log: Some("x=y".into()),
        ..Layer::default()
    };
    assert!(err(cli.clone(), Layer::default()).starts_with("--listen"));
    let cli = Layer {
        listen: None,
        ..cli
    };
    assert!(err(cli.clone(), Layer::default()).starts_with("--grace"));
    let cli = Layer { grace: None, ..cli };
    assert!(err(cli.clone(), Layer::default()).starts_with("--queue-capacity"));
    let cli = Layer {
        queue_capacity: None,
        ..cli
    };
    assert!(err(cli, Layer::default()).starts_with("--log"));
    // The generator's settings are checked before the timers.
    let cli = Layer {
        demo_chunks: Some(0),
        grace: Some(-1.0),
        ..Layer::default()
    };
    assert!(err(cli, Layer::default()).starts_with("--demo-chunks"));
}

#[test]
fn printed_default_configuration_is_the_documented_one() {
    let cli = Layer {
        node_id: Some("n1".into()),
        ..Layer::default()
    };
    let s = resolve(&cli, &Layer::default()).unwrap();
    assert_eq!(s.to_toml(), DEFAULT_CONFIG_TOML);
}

/// `weir config --node-id n1`, as it printed before the settings became the
/// runtime's types.
const DEFAULT_CONFIG_TOML: &str = "# weir effective configuration
listen = \"127.0.0.1:8080\"
runtime = \"tokio\"
node_id = \"n1\"
auth = \"none\"
generator = \"demo\"
demo_chunks = 40
demo_rate = 20.0
grace = 30.0
lease_ttl = 10.0
cancel_deadline = 5.0
presence_debounce = 5.0
presence_expiry = 30.0
heartbeat = 15.0
idle_timeout = 60.0
max_frame_bytes = 65536
max_content_bytes = 32768
history_limit = 200
queue_capacity = 256
stall_timeout = 10.0
max_lag_bytes = 1048576
chunk_timestamps = false
max_connections_per_user = 100
max_streams_per_user = 10
chats_per_minute = 60
chat_burst = 20
max_connections_per_ip = 1000
shutdown_grace = 5.0
compat = \"on\"
compat_ws_path = \"/ws/chat\"
compat_cancelled_suffix = \"\"\"


[Đã hủy]\"\"\"
compat_failure_sentence = \"Xin lỗi, đã có lỗi xảy ra khi xử lý yêu cầu của bạn.\"
ai_sdk = \"on\"
cors_origin = [\"http://localhost:3000\"]
store = \"memory\"
log = \"info\"
";

#[test]
fn printed_redis_and_openai_configuration_reads_back_to_the_same_settings() {
    let cli = Layer {
        node_id: Some("printed".into()),
        generator: Some(GeneratorKind::Openai),
        upstream: Some("http://127.0.0.1:8000/base".into()),
        model: Some("m".into()),
        max_tokens: Some(5),
        temperature: Some(0.5),
        seed: Some(3),
        system_prompt: Some("Be brief.".into()),
        upstream_timeout: Some(2.5),
        store: Some("redis://127.0.0.1:6379/2".into()),
        redis_prefix: Some("p1".into()),
        history_retention: Some(3600.0),
        store_timeout: Some(0.5),
        runtime: Some(RuntimeKind::Smol),
        worker_threads: Some(3),
        ..Layer::default()
    };
    let s = resolve(&cli, &Layer::default()).unwrap();
    let printed = s.to_toml();
    let back = resolve(&Layer::default(), &toml_layer(&printed)).unwrap();
    assert_eq!(back, s, "{printed}");
}

#[test]
fn mode_and_kind_names_are_the_flags_values() {
    use clap::ValueEnum;
    for mode in AuthMode::value_variants() {
        let name = mode.to_possible_value().unwrap();
        assert_eq!(mode.to_string(), name.get_name());
    }
    for kind in GeneratorKind::value_variants() {
        let name = kind.to_possible_value().unwrap();
        assert_eq!(kind.to_string(), name.get_name());
    }
    for kind in RuntimeKind::value_variants() {
        let name = kind.to_possible_value().unwrap();
        assert_eq!(kind.to_string(), name.get_name());
    }
}

#[test]
fn token_auth_takes_a_pem_or_jwks_path_audiences_and_an_issuer_and_prints_them_back() {
    let _g = env_lock();
    let a = parse(&[
        "serve",
        "--auth",
        "token",
        "--jwt-jwks",
        "/etc/weir/jwks.json",
        "--jwt-audience",
        "api://weir, chat",
        "--jwt-audience",
        "other",
        "--jwt-issuer",
        "https://idp.example/",
    ]);
    let s = a.settings().unwrap();
    let Auth::Token(t) = &s.server.auth else {
        panic!("token auth expected");
    };
    assert_eq!(
        t.key,
        weir_runtime::TokenKey::Jwks("/etc/weir/jwks.json".into())
    );
    assert_eq!(t.audiences, ["api://weir", "chat", "other"]);
    assert_eq!(t.issuer.as_deref(), Some("https://idp.example/"));
    let back = resolve(&Layer::default(), &toml_layer(&s.to_toml())).unwrap();
    assert_eq!(back.server.auth, s.server.auth);

    let pem = resolve(
        &Layer {
            auth: Some(AuthMode::Token),
            jwt_public_key: Some("/k.pem".into()),
            ..Layer::default()
        },
        &Layer::default(),
    )
    .unwrap();
    let Auth::Token(t) = &pem.server.auth else {
        panic!("token auth expected");
    };
    assert_eq!(t.key, weir_runtime::TokenKey::PublicKeyPem("/k.pem".into()));
    assert!(t.audiences.is_empty() && t.issuer.is_none());
}

#[test]
fn token_auth_takes_exactly_one_key_and_its_settings_need_token_auth() {
    let token = Layer {
        auth: Some(AuthMode::Token),
        ..Layer::default()
    };
    let two = Layer {
        jwt_secret: Some("k".into()),
        jwt_jwks: Some("/j.json".into()),
        ..token.clone()
    };
    assert!(err(two, Layer::default()).contains("exclude each other"));
    let empty_iss = Layer {
        jwt_secret: Some("k".into()),
        jwt_issuer: Some(String::new()),
        ..token.clone()
    };
    assert!(err(empty_iss, Layer::default()).contains("--jwt-issuer"));
    let empty_aud = Layer {
        jwt_secret: Some("k".into()),
        jwt_audience: Some(vec![" ".into()]),
        ..token
    };
    assert!(err(empty_aud, Layer::default()).contains("--jwt-audience"));
    for (flag, layer) in [
        (
            "--jwt-public-key",
            Layer {
                jwt_public_key: Some("/k.pem".into()),
                ..Layer::default()
            },
        ),
        (
            "--jwt-audience",
            Layer {
                jwt_audience: Some(vec!["a".into()]),
                ..Layer::default()
            },
        ),
        (
            "--jwt-issuer",
            Layer {
                jwt_issuer: Some("i".into()),
                ..Layer::default()
            },
        ),
    ] {
        let e = err(layer, Layer::default());
        assert!(e.contains(flag) && e.contains("--auth token"), "{e}");
    }
}

#[test]
fn caps_default_to_the_recommended_values_and_zero_turns_one_off() {
    let _env = env_lock();
    let s = parse(&["serve"]).settings().unwrap();
    assert_eq!(s.server.node.caps, weir_core::caps::Caps::RECOMMENDED);
    assert!(s.server.trusted_proxies.is_empty());
    let s = parse(&[
        "serve",
        "--max-connections-per-user",
        "0",
        "--max-streams-per-user",
        "3",
        "--chats-per-minute",
        "6",
        "--chat-burst",
        "2",
        "--max-connections-per-ip",
        "50",
        "--trusted-proxy",
        "10.0.0.0/8,::1",
        "--trusted-proxy",
        "192.168.1.1",
    ])
    .settings()
    .unwrap();
    let caps = s.server.node.caps;
    assert_eq!(
        (
            caps.connections_per_user,
            caps.streams_per_user,
            caps.chats_per_minute,
            caps.chat_burst,
            caps.connections_per_ip
        ),
        (0, 3, 6, 2, 50)
    );
    let shown: Vec<String> = s
        .server
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(shown, ["10.0.0.0/8", "::1/128", "192.168.1.1/32"]);
    // Printed and read back, the same settings.
    let again = resolve(&Layer::default(), &toml_layer(&s.to_toml())).unwrap();
    assert_eq!(again.server.node.caps, caps);
    assert_eq!(again.server.trusted_proxies, s.server.trusted_proxies);
}

#[test]
fn a_bad_trusted_proxy_or_a_rate_without_burst_is_rejected() {
    let cli = Layer {
        trusted_proxy: Some(vec!["10.0.0.0/40".into()]),
        ..Layer::default()
    };
    assert!(err(cli, Layer::default()).starts_with("--trusted-proxy"));
    let cli = Layer {
        chat_burst: Some(0),
        ..Layer::default()
    };
    assert!(err(cli, Layer::default()).starts_with("--chat-burst"));
    let cli = Layer {
        chat_burst: Some(0),
        chats_per_minute: Some(0),
        ..Layer::default()
    };
    assert!(
        resolve(&cli, &Layer::default()).is_ok(),
        "no rate, no burst needed"
    );
}
