//! `weir_bench`: loads the `weir` binary and the bare baseline (`bare_ws`)
//! in the same run, over loopback, and prints what it measured.
//!
//! - `weir_bench idle --conns N`: opens N WebSocket connections to each
//!   server in turn (weir: a distinct conversation per connection, then all
//!   in one conversation; bare: plain connections), waits until every one is
//!   established (weir: got its `hello` and `history`), lets the server
//!   settle, and reports `(VmRSS after − VmRSS before) / N` per server.
//! - `weir_bench fanout --conns N --chunks M`: N clients on one conversation;
//!   one of them starts a reply of M chunks (weir: a `chat` with the demo
//!   generator; bare: a `go` message); every client counts the chunks it
//!   receives (a merged frame counts `seq − from_seq + 1`); reports the sum
//!   over clients divided by the time from the first chunk received by any
//!   client to the last chunk received by any client.
//!
//! weir runs on each runtime of `--runtime tokio|smol|both` (default both:
//! tokio, then smol, each a fresh process), and every weir figure is printed
//! per runtime beside bare's, with its ratio to bare's from the same run.
//!
//! The servers run as child processes (found next to this executable unless
//! `--weir` / `--bare` say otherwise) and are killed when the run ends, fails
//! or is interrupted. Every wait is bounded; `--timeout-secs` bounds the
//! whole run. The last line printed is the results as one JSON object.
//!
//! See `docs/benchmarks.md`.
#![forbid(unsafe_code)]
#![allow(
    clippy::print_stdout,
    reason = "printing the figures is this tool's job"
)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, timeout_at, Instant};
use weir_bench::{
    client_ws_config, cpu_ticks, frame_type, load_average, machine_busy_ticks, proc_status_kib,
    ratio, scan_chunk, times, utc_now, Machine, Runtime, RuntimeOpts, SERVER_MAX_FRAME,
    SERVER_READ_BUFFER, SERVER_WRITE_BUFFER,
};
use weir_core::demo::DemoText;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;
type Ws = WebSocketStream<TokioAdapter<TcpStream>>;

/// The prompt of the fan-out reply (the demo text depends on it).
const PROMPT: &str = "bench fan-out";
/// Heartbeat and idle timeout given to weir: far beyond any run, so nothing
/// closes and no ping traffic mixes into the figures.
const WEIR_HEARTBEAT_SECS: &str = "3600";
const WEIR_IDLE_TIMEOUT_SECS: &str = "7200";
/// How long one connection attempt (TCP + handshake + hello/history) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts per connection.
const CONNECT_ATTEMPTS: u32 = 3;

/// Loads weir and a bare async-tungstenite server over loopback and prints
/// the figures (see docs/benchmarks.md).
#[derive(Debug, Parser)]
#[command(name = "weir_bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// The weir binary [default: `weir` next to this executable]
    #[arg(long, global = true, value_name = "PATH")]
    weir: Option<PathBuf>,
    /// The baseline binary [default: `bare_ws` next to this executable]
    #[arg(long, global = true, value_name = "PATH")]
    bare: Option<PathBuf>,
    /// Upper bound of the whole run, in seconds
    #[arg(long, global = true, default_value_t = 900)]
    timeout_secs: u64,
    /// Client connections opened at the same time
    #[arg(long, global = true, default_value_t = 128)]
    concurrency: usize,
    /// Spread client connections over source addresses 127.0.0.1 ..= 127.0.0.K
    #[arg(long, global = true, default_value_t = 8, value_name = "K",
          value_parser = clap::value_parser!(u8).range(1..=254))]
    source_ips: u8,
    #[command(flatten)]
    rt: RuntimeOpts,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Server RSS per idle WebSocket connection, weir beside bare_ws.
    Idle(IdleArgs),
    /// Chunks per second delivered when one reply fans out to N connections.
    Fanout(FanoutArgs),
}

#[derive(Debug, Args)]
struct IdleArgs {
    /// Connections held open per server
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// Pause between "every connection established" and the RSS reading, seconds
    #[arg(long, default_value_t = 2.0)]
    settle_secs: f64,
    /// Skip the weir variant with every connection in one conversation
    #[arg(long)]
    skip_one_conversation: bool,
}

#[derive(Debug, Args)]
struct FanoutArgs {
    /// Client connections, all on one conversation
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Chunks in the reply
    #[arg(long, default_value_t = 2000)]
    chunks: u32,
    /// Chunks per second the reply is produced at (weir --demo-rate, bare_ws --rate)
    #[arg(long, default_value_t = 100_000.0)]
    rate: f64,
    /// Per-connection outbound queue in frames (weir --queue-capacity, bare_ws --queue-capacity)
    #[arg(long, default_value_t = 256)]
    queue_capacity: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weir_bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let limit = Duration::from_secs(cli.timeout_secs);
    let result: Res<()> = runtime.block_on(async {
        // Dropping `run` (on a signal or the time limit) kills the servers:
        // they are spawned with kill_on_drop.
        tokio::select! {
            r = timeout(limit, run(&cli)) => r.unwrap_or_else(|_| {
                Err(format!("the run took longer than --timeout-secs {}", cli.timeout_secs).into())
            }),
            () = interrupted() => Err("interrupted".into()),
        }
    });
    // Client tasks still open are not waited for.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

async fn run(cli: &Cli) -> Res<()> {
    let weir = binary("weir", cli.weir.as_deref())?;
    let bare = binary("bare_ws", cli.bare.as_deref())?;
    let conns = match &cli.command {
        Cmd::Idle(a) => a.conns,
        Cmd::Fanout(a) => a.conns,
    };
    if conns == 0 {
        return Err("--conns must be at least 1".into());
    }
    let nofile = raise_fd_limit(conns)?;
    check_ports(conns, cli.source_ips)?;
    let env = Env::read(&weir, nofile, &cli.rt).await;
    match &cli.command {
        Cmd::Idle(args) => idle(cli, args, &weir, &bare, &env).await,
        Cmd::Fanout(args) => fanout(cli, args, &weir, &bare, &env).await,
    }
}

// ---------------------------------------------------------------- set-up

/// `name` next to this executable, or `given`.
fn binary(name: &str, given: Option<&Path>) -> Res<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .ok_or("this executable has no folder")?
            .join(name),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: build it first with `cargo build --release -p weir-server -p weir-bench`",
            path.display()
        )
        .into())
    }
}

/// Raises the soft open-files limit to the hard limit (the servers inherit
/// it) and checks that `conns` connections fit.
fn raise_fd_limit(conns: usize) -> Res<u64> {
    let limit = rlimit::increase_nofile_limit(u64::MAX)?;
    let needed = conns as u64 + 256;
    if limit < needed {
        return Err(format!(
            "{conns} connections need about {needed} open files, but the hard limit is {limit} \
             (raise it, e.g. `ulimit -Hn`, or use a smaller --conns)"
        )
        .into());
    }
    Ok(limit)
}

/// Checks that the ephemeral port range holds `conns` connections spread
/// over `source_ips` source addresses.
fn check_ports(conns: usize, source_ips: u8) -> Res<()> {
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = range
        .split_whitespace()
        .filter_map(|s| s.parse::<usize>().ok());
    if let (Some(lo), Some(hi)) = (it.next(), it.next()) {
        let per_ip = conns.div_ceil(usize::from(source_ips));
        // Leave room for TIME_WAIT sockets of earlier runs.
        if per_ip > (hi - lo) / 2 {
            return Err(format!(
                "{per_ip} connections per source address exceed half the ephemeral port range \
                 {lo}-{hi}: use a larger --source-ips"
            )
            .into());
        }
    }
    Ok(())
}

/// Where and with what the figures were taken.
#[derive(Debug)]
struct Env {
    date: String,
    machine: Machine,
    weir_version: String,
    nofile: u64,
    clk_tck: f64,
    /// `RuntimeOpts::describe`.
    runtimes: String,
}

impl Env {
    async fn read(weir: &Path, nofile: u64, rt: &RuntimeOpts) -> Env {
        let weir_version = match Command::new(weir).arg("version").output().await {
            Ok(out) => String::from_utf8_lossy(&out.stdout)
                .lines()
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => format!("unknown ({e})"),
        };
        let clk_tck = match Command::new("getconf").arg("CLK_TCK").output().await {
            Ok(out) => String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(100.0),
            Err(_) => 100.0,
        };
        Env {
            date: utc_now(),
            machine: Machine::read(),
            weir_version,
            nofile,
            clk_tck,
            runtimes: rt.describe(),
        }
    }

    fn print(&self, what: &str) {
        let m = &self.machine;
        println!("weir_bench {what} · {}", self.date);
        println!(
            "machine   {} CPUs (nproc) · {} · {:.1} GiB RAM · Linux {}",
            m.cpus,
            m.cpu_model,
            m.mem_total_kib as f64 / 1024.0 / 1024.0,
            m.kernel
        );
        println!(
            "software  {} · weir-bench {} · {} · {}",
            self.weir_version,
            env!("CARGO_PKG_VERSION"),
            env!("WEIR_BENCH_DEPS"),
            env!("WEIR_BENCH_RUSTC")
        );
        println!(
            "setup     servers and clients share the machine's {} CPUs; clients run in this process on a \
             multi-thread tokio runtime; loopback only; open files limit {}; load average {} at start",
            m.cpus,
            self.nofile,
            load_average()
        );
        println!(
            "          bare_ws uses weir's WebSocket buffers: read {SERVER_READ_BUFFER} B, write \
             {SERVER_WRITE_BUFFER} B, max message/frame {SERVER_MAX_FRAME} B"
        );
        println!(
            "weir      {} · each a fresh process · bare_ws runs on tokio",
            self.runtimes
        );
    }

    fn json(&self) -> Value {
        let m = &self.machine;
        json!({
            "date": self.date,
            "machine": {
                "cpus": m.cpus,
                "cpu_model": m.cpu_model,
                "mem_total_kib": m.mem_total_kib,
                "kernel": m.kernel,
            },
            "versions": {
                "weir": self.weir_version,
                "weir_bench": env!("CARGO_PKG_VERSION"),
                "deps": env!("WEIR_BENCH_DEPS"),
                "rustc": env!("WEIR_BENCH_RUSTC"),
            },
        })
    }
}

// ---------------------------------------------------------------- servers

/// A server running as a child process; killed when dropped.
#[derive(Debug)]
struct Server {
    child: Child,
    pid: u32,
    addr: SocketAddr,
}

impl Server {
    /// Starts `program args…` and waits for the line `BANNER ADDR` on its
    /// stdout.
    async fn start(program: &Path, args: &[String], banner: &str) -> Res<Server> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let pid = child.id().ok_or("the server exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = timeout(Duration::from_secs(10), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix(banner) {
                    let rest = rest.trim().trim_end_matches('/');
                    return rest
                        .parse::<SocketAddr>()
                        .map_err(|e| BoxError::from(format!("bad address in {line:?}: {e}")));
                }
            }
            Err(BoxError::from(format!(
                "{} ended before announcing its address",
                program.display()
            )))
        })
        .await
        .map_err(|_| {
            format!(
                "{} did not announce its address within 10 s",
                program.display()
            )
        })??;
        // Keep the pipe drained so the server never blocks on stdout.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server { child, pid, addr })
    }

    /// `weir serve` with `runtime` (the `--runtime` and `--worker-threads`
    /// arguments of [`RuntimeOpts::weir_args`]) and `extra`.
    async fn weir(program: &Path, runtime: &[String], extra: &[String]) -> Res<Server> {
        let mut args: Vec<String> = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--node-id",
            "bench",
            "--log",
            "error",
            "--heartbeat",
            WEIR_HEARTBEAT_SECS,
            "--idle-timeout",
            WEIR_IDLE_TIMEOUT_SECS,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend_from_slice(runtime);
        args.extend_from_slice(extra);
        Server::start(program, &args, "weir listening on http://").await
    }

    async fn bare(program: &Path, extra: &[String]) -> Res<Server> {
        let mut args = vec![String::from("--listen"), String::from("127.0.0.1:0")];
        args.extend_from_slice(extra);
        Server::start(program, &args, "bare_ws listening on ws://").await
    }

    fn status_kib(&self, field: &str) -> Res<u64> {
        Ok(proc_status_kib(self.pid, field)?)
    }

    fn cpu_ticks(&self) -> u64 {
        cpu_ticks(Some(self.pid)).unwrap_or(0)
    }

    /// Kills the server and waits (bounded) for it to exit.
    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

// ---------------------------------------------------------------- clients

/// The source address of client `i`: 127.0.0.1 ..= 127.0.0.K in turn.
fn source_ip(i: usize, k: u8) -> Ipv4Addr {
    let k = usize::from(k.max(1));
    Ipv4Addr::new(127, 0, 0, u8::try_from(1 + i % k).unwrap_or(1))
}

/// Opens a WebSocket to `addr` from `src`, retrying a failed attempt.
async fn connect(addr: SocketAddr, src: Ipv4Addr, path: &str, history: bool) -> Res<Ws> {
    let mut last: Option<BoxError> = None;
    for attempt in 0..CONNECT_ATTEMPTS {
        if attempt > 0 {
            sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        match timeout(CONNECT_TIMEOUT, connect_once(addr, src, path, history)).await {
            Ok(Ok(ws)) => return Ok(ws),
            Ok(Err(e)) => last = Some(e),
            Err(_) => last = Some("connect timed out".into()),
        }
    }
    Err(last.unwrap_or_else(|| "no attempt".into()))
}

async fn connect_once(addr: SocketAddr, src: Ipv4Addr, path: &str, history: bool) -> Res<Ws> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src.into(), 0))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{addr}{path}");
    let (mut ws, _) =
        async_tungstenite::tokio::client_async_with_config(url, stream, Some(client_ws_config()))
            .await?;
    if history {
        // weir: `hello`, then `history`.
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => match frame_type(t.as_str()) {
                    Some("history") => break,
                    Some("error") => return Err(format!("weir answered {}", t.as_str()).into()),
                    _ => {}
                },
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err("closed before history".into()),
            }
        }
    }
    Ok(ws)
}

#[derive(Debug, Default)]
struct Tally {
    ready: AtomicUsize,
    failed: AtomicUsize,
    closed_early: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn fail(&self, e: &BoxError) {
        self.failed.fetch_add(1, Relaxed);
        let mut first = self
            .first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if first.is_none() {
            *first = Some(e.to_string());
        }
    }

    fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Waits (bounded by `deadline`) until `ready + failed` reaches `n`.
async fn wait_all(tally: &Tally, n: usize, deadline: Instant) {
    while tally.ready.load(Relaxed) + tally.failed.load(Relaxed) < n && Instant::now() < deadline {
        sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- idle

/// The WebSocket path of client `i`.
type WsPath = fn(usize) -> String;

#[derive(Debug)]
struct IdleResult {
    server: &'static str,
    /// weir's runtime; `None` for bare_ws.
    runtime: Option<Runtime>,
    variant: &'static str,
    conns: usize,
    established: usize,
    failed: usize,
    closed_early: usize,
    connect_secs: f64,
    before_kib: u64,
    after_kib: u64,
    anon_before_kib: u64,
    anon_after_kib: u64,
}

impl IdleResult {
    fn per_conn_kib(&self) -> f64 {
        (self.after_kib as f64 - self.before_kib as f64) / self.established.max(1) as f64
    }

    fn anon_per_conn_kib(&self) -> f64 {
        (self.anon_after_kib as f64 - self.anon_before_kib as f64) / self.established.max(1) as f64
    }
}

/// The runtime column of a result: weir's runtime, `-` for bare_ws.
fn runtime_name(runtime: Option<Runtime>) -> &'static str {
    runtime.map_or("-", Runtime::name)
}

/// `weir (tokio)`, `bare_ws`: a server as warnings name it.
fn server_label(server: &str, runtime: Option<Runtime>) -> String {
    runtime.map_or_else(|| server.to_owned(), |r| format!("{server} ({})", r.name()))
}

async fn idle(cli: &Cli, args: &IdleArgs, weir: &Path, bare: &Path, env: &Env) -> Res<()> {
    env.print("idle");
    println!(
        "params    conns {} per server · settle {} s · source addresses 127.0.0.1-{} · {} connects at a time \
             · weir --heartbeat {WEIR_HEARTBEAT_SECS} --idle-timeout {WEIR_IDLE_TIMEOUT_SECS} --log error",
        args.conns, args.settle_secs, cli.source_ips, cli.concurrency
    );
    println!();
    let mut results = Vec::new();

    // weir's variants: a conversation per connection, as real users would
    // have, and every connection on one conversation.
    let mut variants: Vec<(&'static str, WsPath)> = vec![("distinct conversations", |i| {
        format!("/v1/ws?session_id=s{i}&user_id=u{i}")
    })];
    if !args.skip_one_conversation {
        variants.push(("one conversation", |_| {
            String::from("/v1/ws?session_id=s0&user_id=u0")
        }));
    }
    for &runtime in cli.rt.runtimes() {
        for &(variant, path) in &variants {
            let server = Server::weir(weir, &cli.rt.weir_args(runtime), &[]).await?;
            let who = ("weir", Some(runtime));
            results.push(idle_one(cli, args, server, who, variant, true, path).await?);
            sleep(Duration::from_secs(1)).await;
        }
    }
    let server = Server::bare(bare, &[]).await?;
    results.push(
        idle_one(cli, args, server, ("bare_ws", None), "-", false, |_| {
            String::from("/")
        })
        .await?,
    );

    let bare_per = results
        .iter()
        .find(|r| r.server == "bare_ws")
        .map_or(f64::NAN, IdleResult::per_conn_kib);
    println!();
    println!(
        "{:<8} {:<7} {:<23} {:>7} {:>6} {:>9} {:>12} {:>12} {:>10} {:>10} {:>8}",
        "server",
        "runtime",
        "variant",
        "conns",
        "failed",
        "connect s",
        "RSS before",
        "RSS after",
        "KiB/conn",
        "anon/conn",
        "vs bare"
    );
    for r in &results {
        println!(
            "{:<8} {:<7} {:<23} {:>7} {:>6} {:>9.1} {:>8} KiB {:>8} KiB {:>10.2} {:>10.2} {:>8}",
            r.server,
            runtime_name(r.runtime),
            r.variant,
            r.established,
            r.failed + r.closed_early,
            r.connect_secs,
            r.before_kib,
            r.after_kib,
            r.per_conn_kib(),
            r.anon_per_conn_kib(),
            times(ratio(r.per_conn_kib(), bare_per))
        );
    }
    println!();
    // Per runtime: its distinct-conversations result, the one the target is about.
    let mut per_runtime = serde_json::Map::new();
    let mut all_met = true;
    for &runtime in cli.rt.runtimes() {
        let mine = |variant: &str| {
            results
                .iter()
                .find(|r| r.runtime == Some(runtime) && r.variant == variant)
        };
        let Some(main) = mine("distinct conversations") else {
            continue;
        };
        let per = main.per_conn_kib();
        let ok = per <= 8.0 && main.established == main.conns && main.closed_early == 0;
        all_met &= ok;
        println!(
            "target    weir ({}) ≤ 8 KiB per idle connection at {} connections (distinct conversations): \
             {per:.2} KiB → {}",
            runtime.name(),
            args.conns,
            if ok { "met" } else { "NOT met" }
        );
        let one = mine("one conversation");
        per_runtime.insert(
            runtime.name().to_owned(),
            json!({
                "kib_per_conn": per,
                "ratio_vs_bare": ratio(per, bare_per),
                "kib_per_conn_one_conversation": one.map(IdleResult::per_conn_kib),
                "ratio_vs_bare_one_conversation":
                    one.and_then(|o| ratio(o.per_conn_kib(), bare_per)),
                "connect_secs": main.connect_secs,
                "connect_secs_one_conversation": one.map(|o| o.connect_secs),
                "target_met": ok,
            }),
        );
    }
    let per = |runtime: &Runtime| per_runtime.get(runtime.name())?["kib_per_conn"].as_f64();
    if let [t, s] = cli.rt.runtimes() {
        println!(
            "runtimes  {} / {}: {} in memory per idle connection (distinct conversations)",
            s.name(),
            t.name(),
            times(per(s).zip(per(t)).and_then(|(s, t)| ratio(s, t)))
        );
    }
    for r in &results {
        if r.failed + r.closed_early > 0 {
            println!(
                "warning   {} ({}): {} connections failed, {} closed during the run",
                server_label(r.server, r.runtime),
                r.variant,
                r.failed,
                r.closed_early
            );
        }
    }
    let mut out = env.json();
    out["bench"] = json!("idle");
    out["params"] = json!({
        "conns": args.conns,
        "settle_secs": args.settle_secs,
        "source_ips": cli.source_ips,
        "concurrency": cli.concurrency,
        "runtimes": cli.rt.runtimes().iter().map(|r| r.name()).collect::<Vec<_>>(),
        "worker_threads": cli.rt.worker_threads,
        "server_ws": {"read_buffer": SERVER_READ_BUFFER, "write_buffer": SERVER_WRITE_BUFFER, "max_frame": SERVER_MAX_FRAME},
    });
    out["results"] = results
        .iter()
        .map(|r| {
            json!({
                "server": r.server,
                "runtime": r.runtime.map(Runtime::name),
                "variant": r.variant,
                "conns": r.conns,
                "established": r.established,
                "failed": r.failed,
                "closed_early": r.closed_early,
                "connect_secs": r.connect_secs,
                "rss_before_kib": r.before_kib,
                "rss_after_kib": r.after_kib,
                "rss_anon_before_kib": r.anon_before_kib,
                "rss_anon_after_kib": r.anon_after_kib,
                "kib_per_conn": r.per_conn_kib(),
                "ratio_vs_bare": ratio(r.per_conn_kib(), bare_per),
            })
        })
        .collect();
    out["runtimes"] = Value::Object(per_runtime);
    out["target_met"] = json!(all_met);
    println!("{out}");
    Ok(())
}

async fn idle_one(
    cli: &Cli,
    args: &IdleArgs,
    server: Server,
    (name, runtime): (&'static str, Option<Runtime>),
    variant: &'static str,
    history: bool,
    path: impl Fn(usize) -> String,
) -> Res<IdleResult> {
    let n = args.conns;
    sleep(Duration::from_millis(500)).await;
    let before_kib = server.status_kib("VmRSS")?;
    let anon_before_kib = server.status_kib("RssAnon")?;
    let tally = Arc::new(Tally::default());
    let gate = Arc::new(Semaphore::new(cli.concurrency.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut clients = JoinSet::new();
    let started = Instant::now();
    for i in 0..n {
        let (addr, src, path) = (server.addr, source_ip(i, cli.source_ips), path(i));
        let (gate, tally, mut stop) = (gate.clone(), tally.clone(), stop_rx.clone());
        clients.spawn(async move {
            let Ok(permit) = gate.acquire_owned().await else {
                return;
            };
            let mut ws = match connect(addr, src, &path, history).await {
                Ok(ws) => ws,
                Err(e) => return tally.fail(&e),
            };
            drop(permit);
            tally.ready.fetch_add(1, Relaxed);
            // Hold the connection; reading answers the server's pings.
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    msg = ws.next() => match msg {
                        Some(Ok(_)) => {}
                        _ => {
                            if !*stop.borrow() {
                                tally.closed_early.fetch_add(1, Relaxed);
                            }
                            return;
                        }
                    },
                }
            }
        });
    }
    let connect_deadline = started + Duration::from_secs(300);
    wait_all(&tally, n, connect_deadline).await;
    let connect_secs = started.elapsed().as_secs_f64();
    let established = tally.ready.load(Relaxed);
    sleep(Duration::from_secs_f64(args.settle_secs.max(0.0))).await;
    let after_kib = server.status_kib("VmRSS")?;
    let anon_after_kib = server.status_kib("RssAnon")?;
    let closed_early = tally.closed_early.load(Relaxed);
    let failed =
        tally.failed.load(Relaxed) + n.saturating_sub(established + tally.failed.load(Relaxed));
    println!(
        "{name:<8} {:<7} {variant:<23} {established}/{n} established in {connect_secs:.1} s · VmRSS {before_kib} → {after_kib} KiB{}",
        runtime_name(runtime),
        tally.first_error().map(|e| format!(" · first error: {e}")).unwrap_or_default()
    );
    // The server goes first, so its side of each connection is the one left
    // in TIME_WAIT and the clients' source ports are free for the next run.
    server.stop().await;
    let _ = stop_tx.send(true);
    clients.shutdown().await;
    Ok(IdleResult {
        server: name,
        runtime,
        variant,
        conns: n,
        established,
        failed,
        closed_early,
        connect_secs,
        before_kib,
        after_kib,
        anon_before_kib,
        anon_after_kib,
    })
}

// ---------------------------------------------------------------- fan-out

#[derive(Debug, Default)]
struct ClientStats {
    first: Option<Instant>,
    last: Option<Instant>,
    chunks: u64,
    frames: u64,
    merged: u64,
    bytes: u64,
    gaps: u64,
    ended: bool,
    final_seq: Option<u64>,
    /// Client 0 only: the reply's id and its text, to check against the demo text.
    message_id: Option<String>,
    text: Option<String>,
}

#[derive(Debug)]
struct FanoutResult {
    server: &'static str,
    /// weir's runtime; `None` for bare_ws.
    runtime: Option<Runtime>,
    conns: usize,
    chunks: u32,
    complete: usize,
    delivered: u64,
    frames: u64,
    merged: u64,
    bytes: u64,
    gaps: u64,
    wall_secs: f64,
    trigger_to_last_secs: f64,
    server_cpu_secs: f64,
    bench_cpu_secs: f64,
    /// CPU time of everything else on the machine during the reply: noise.
    other_cpu_secs: f64,
    text_ok: bool,
    message_id: Option<String>,
}

impl FanoutResult {
    fn chunks_per_sec(&self) -> f64 {
        self.delivered as f64 / self.wall_secs
    }

    fn frames_per_sec(&self) -> f64 {
        self.frames as f64 / self.wall_secs
    }
}

async fn fanout(cli: &Cli, args: &FanoutArgs, weir: &Path, bare: &Path, env: &Env) -> Res<()> {
    env.print("fanout");
    println!(
        "params    conns {} on one conversation · chunks {} · rate {} chunks/s · queue {} frames · \
         source addresses 127.0.0.1-{}",
        args.conns, args.chunks, args.rate, args.queue_capacity, cli.source_ips
    );
    let (chunks, rate, queue) = (
        args.chunks.to_string(),
        args.rate.to_string(),
        args.queue_capacity.to_string(),
    );
    println!(
        "          weir serve --demo-chunks {chunks} --demo-rate {rate} --queue-capacity {queue} · \
         bare_ws --rate {rate} --queue-capacity {queue}"
    );
    println!();

    let mut weirs = Vec::new();
    for &runtime in cli.rt.runtimes() {
        let server = Server::weir(
            weir,
            &cli.rt.weir_args(runtime),
            &[
                "--demo-chunks".into(),
                chunks.clone(),
                "--demo-rate".into(),
                rate.clone(),
                "--queue-capacity".into(),
                queue.clone(),
            ],
        )
        .await?;
        weirs.push(fanout_one(cli, args, env, server, ("weir", Some(runtime)), None).await?);
        sleep(Duration::from_secs(1)).await;
    }
    let server = Server::bare(
        bare,
        &["--rate".into(), rate, "--queue-capacity".into(), queue],
    )
    .await?;
    // The same message id as weir's reply: the same frames, byte for byte.
    let mid = weirs
        .iter()
        .find_map(|w| w.message_id.clone())
        .unwrap_or_else(|| String::from("1.00000000075bcd15a"));
    let b = fanout_one(cli, args, env, server, ("bare_ws", None), Some(mid)).await?;
    let all: Vec<&FanoutResult> = weirs.iter().chain([&b]).collect();

    println!();
    println!(
        "{:<8} {:<7} {:>6} {:>11} {:>9} {:>8} {:>9} {:>10} {:>12} {:>11} {:>9} {:>9} {:>9} {:>5} {:>8}",
        "server",
        "runtime",
        "conns",
        "delivered",
        "frames",
        "merged",
        "B/frame",
        "first→last",
        "chunks/s",
        "frames/s",
        "srv CPU",
        "bench CPU",
        "other CPU",
        "text",
        "vs bare"
    );
    for r in &all {
        println!(
            "{:<8} {:<7} {:>6} {:>11} {:>9} {:>8} {:>9.1} {:>9.3}s {:>12.0} {:>11.0} {:>8.2}s {:>8.2}s {:>8.2}s {:>5} {:>8}",
            r.server,
            runtime_name(r.runtime),
            r.complete,
            r.delivered,
            r.frames,
            r.merged,
            r.bytes as f64 / r.frames.max(1) as f64,
            r.wall_secs,
            r.chunks_per_sec(),
            r.frames_per_sec(),
            r.server_cpu_secs,
            r.bench_cpu_secs,
            r.other_cpu_secs,
            if r.text_ok { "ok" } else { "BAD" },
            times(ratio(r.chunks_per_sec(), b.chunks_per_sec()))
        );
    }
    println!();
    let whole = |r: &FanoutResult| r.complete == r.conns && r.gaps == 0 && r.text_ok;
    let mut per_runtime = serde_json::Map::new();
    let mut all_met = true;
    for w in &weirs {
        let name = runtime_name(w.runtime);
        let chunks_ratio = ratio(w.chunks_per_sec(), b.chunks_per_sec());
        let met = whole(w) && whole(&b) && chunks_ratio.is_some_and(|r| r >= 0.8);
        all_met &= met;
        println!(
            "target    weir ({name}) ≥ 0.8× bare in chunks/s delivered: {} → {}",
            times(chunks_ratio),
            if met { "met" } else { "NOT met" }
        );
        per_runtime.insert(
            name.to_owned(),
            json!({
                "chunks_per_sec": w.chunks_per_sec(),
                "frames_per_sec": w.frames_per_sec(),
                "server_cpu_secs": w.server_cpu_secs,
                "ratio_vs_bare": chunks_ratio,
                "frames_ratio_vs_bare": ratio(w.frames_per_sec(), b.frames_per_sec()),
                "target_met": met,
            }),
        );
    }
    if let [t, s] = weirs.as_slice() {
        println!(
            "runtimes  {} / {}: {} in chunks/s, {} in frames/s, {} in server CPU",
            runtime_name(s.runtime),
            runtime_name(t.runtime),
            times(ratio(s.chunks_per_sec(), t.chunks_per_sec())),
            times(ratio(s.frames_per_sec(), t.frames_per_sec())),
            times(ratio(s.server_cpu_secs, t.server_cpu_secs))
        );
    }
    for r in &all {
        if !whole(r) {
            println!(
                "warning   {}: {}/{} clients got the whole reply; {} gaps; text {}",
                server_label(r.server, r.runtime),
                r.complete,
                r.conns,
                r.gaps,
                if r.text_ok {
                    "ok"
                } else {
                    "differs from the demo text"
                }
            );
        }
    }
    for r in &all {
        if r.other_cpu_secs > 0.1 * r.server_cpu_secs.max(0.1) {
            println!(
                "warning   {}: other processes used {:.2} s of CPU during the reply: the machine was \
                 not quiet, run again",
                server_label(r.server, r.runtime),
                r.other_cpu_secs
            );
        }
    }
    let mut out = env.json();
    out["bench"] = json!("fanout");
    out["params"] = json!({
        "conns": args.conns,
        "chunks": args.chunks,
        "rate": args.rate,
        "queue_capacity": args.queue_capacity,
        "source_ips": cli.source_ips,
        "runtimes": cli.rt.runtimes().iter().map(|r| r.name()).collect::<Vec<_>>(),
        "worker_threads": cli.rt.worker_threads,
        "server_ws": {"read_buffer": SERVER_READ_BUFFER, "write_buffer": SERVER_WRITE_BUFFER, "max_frame": SERVER_MAX_FRAME},
    });
    out["results"] = all
        .iter()
        .map(|r| {
            json!({
                "server": r.server,
                "runtime": r.runtime.map(Runtime::name),
                "conns": r.conns,
                "chunks": r.chunks,
                "complete_clients": r.complete,
                "chunks_delivered": r.delivered,
                "frames": r.frames,
                "merged_frames": r.merged,
                "bytes": r.bytes,
                "gaps": r.gaps,
                "first_to_last_secs": r.wall_secs,
                "trigger_to_last_secs": r.trigger_to_last_secs,
                "chunks_per_sec": r.chunks_per_sec(),
                "frames_per_sec": r.frames_per_sec(),
                "server_cpu_secs": r.server_cpu_secs,
                "bench_cpu_secs": r.bench_cpu_secs,
                "other_cpu_secs": r.other_cpu_secs,
                "text_ok": r.text_ok,
            })
        })
        .collect();
    out["runtimes"] = Value::Object(per_runtime);
    // As before: the first weir run's (tokio unless --runtime smol).
    out["ratio_weir_vs_bare"] = json!(weirs
        .first()
        .and_then(|w| ratio(w.chunks_per_sec(), b.chunks_per_sec())));
    out["target_met"] = json!(all_met);
    println!("{out}");
    Ok(())
}

async fn fanout_one(
    cli: &Cli,
    args: &FanoutArgs,
    env: &Env,
    server: Server,
    (name, runtime): (&'static str, Option<Runtime>),
    bare_message_id: Option<String>,
) -> Res<FanoutResult> {
    let n = args.conns;
    let weir = bare_message_id.is_none();
    let path = if weir {
        "/v1/ws?session_id=fan&user_id=bench"
    } else {
        "/"
    };
    let tally = Arc::new(Tally::default());
    let gate = Arc::new(Semaphore::new(cli.concurrency.max(1)));
    let (go_tx, go_rx) = oneshot::channel::<String>();
    let mut go_rx = Some(go_rx);
    // Connecting, then the reply: bounded by the run's own limit too.
    let deadline = Instant::now() + Duration::from_secs(cli.timeout_secs.min(600));
    let mut clients: JoinSet<Res<ClientStats>> = JoinSet::new();
    for i in 0..n {
        let (addr, src) = (server.addr, source_ip(i, cli.source_ips));
        let (gate, tally) = (gate.clone(), tally.clone());
        let go = if i == 0 { go_rx.take() } else { None };
        clients.spawn(async move {
            let permit = gate.acquire_owned().await?;
            let ws = connect(addr, src, path, weir).await;
            let mut ws = ws.inspect_err(|e| tally.fail(e))?;
            drop(permit);
            tally.ready.fetch_add(1, Relaxed);
            let keep_text = go.is_some();
            if let Some(go) = go {
                let trigger = go.await?;
                ws.send(Message::text(trigger)).await?;
            }
            receive(ws, deadline, keep_text).await
        });
    }
    let started = Instant::now();
    wait_all(&tally, n, started + Duration::from_secs(300)).await;
    let ready = tally.ready.load(Relaxed);
    if ready < n {
        return Err(format!(
            "{}: only {ready}/{n} clients connected{}",
            server_label(name, runtime),
            tally
                .first_error()
                .map(|e| format!(" (first error: {e})"))
                .unwrap_or_default()
        )
        .into());
    }
    let connect_secs = started.elapsed().as_secs_f64();
    sleep(Duration::from_millis(500)).await;

    let trigger = match &bare_message_id {
        None => format!(r#"{{"type":"chat","content":"{PROMPT}","request_id":"bench"}}"#),
        Some(mid) => format!("go {} {n} {mid} {PROMPT}", args.chunks),
    };
    let (cpu0, self0, all0) = (
        server.cpu_ticks(),
        cpu_ticks(None).unwrap_or(0),
        machine_busy_ticks().unwrap_or(0),
    );
    let t0 = Instant::now();
    go_tx.send(trigger).map_err(|_| "client 0 is gone")?;
    let mut stats = Vec::with_capacity(n);
    while let Some(joined) = clients.join_next().await {
        stats.push(joined??);
    }
    let (cpu1, self1, all1) = (
        server.cpu_ticks(),
        cpu_ticks(None).unwrap_or(0),
        machine_busy_ticks().unwrap_or(0),
    );
    server.stop().await;

    let first = stats.iter().filter_map(|s| s.first).min();
    let last = stats.iter().filter_map(|s| s.last).max();
    let wall_secs = match (first, last) {
        (Some(f), Some(l)) => (l - f).as_secs_f64(),
        _ => f64::NAN,
    };
    let trigger_to_last_secs = last.map_or(f64::NAN, |l| (l - t0).as_secs_f64());
    let m = u64::from(args.chunks);
    let expected_text = DemoText::full(PROMPT, args.chunks);
    let text_ok = stats
        .iter()
        .any(|s| s.text.as_deref() == Some(expected_text.as_str()));
    let message_id = stats.iter().find_map(|s| s.message_id.clone());
    let r = FanoutResult {
        server: name,
        runtime,
        conns: n,
        chunks: args.chunks,
        complete: stats
            .iter()
            .filter(|s| s.ended && s.chunks == m && s.gaps == 0 && s.final_seq == Some(m))
            .count(),
        delivered: stats.iter().map(|s| s.chunks).sum(),
        frames: stats.iter().map(|s| s.frames).sum(),
        merged: stats.iter().map(|s| s.merged).sum(),
        bytes: stats.iter().map(|s| s.bytes).sum(),
        gaps: stats.iter().map(|s| s.gaps).sum(),
        wall_secs,
        trigger_to_last_secs,
        server_cpu_secs: cpu1.saturating_sub(cpu0) as f64 / env.clk_tck,
        bench_cpu_secs: self1.saturating_sub(self0) as f64 / env.clk_tck,
        other_cpu_secs: all1
            .saturating_sub(all0)
            .saturating_sub(cpu1.saturating_sub(cpu0))
            .saturating_sub(self1.saturating_sub(self0)) as f64
            / env.clk_tck,
        text_ok,
        message_id,
    };
    println!(
        "{name:<8} {:<7} {n} clients connected in {connect_secs:.1} s · {} of {} chunks delivered · \
         first→last chunk {:.3} s · chat→last chunk {:.3} s · {:.0} chunks/s",
        runtime_name(runtime),
        r.delivered,
        m * n as u64,
        r.wall_secs,
        r.trigger_to_last_secs,
        r.chunks_per_sec()
    );
    Ok(r)
}

/// Reads one client's frames until the reply's `end` (or the deadline),
/// counting chunks. `keep_text`: also collect the reply's id and text.
async fn receive(mut ws: Ws, deadline: Instant, keep_text: bool) -> Res<ClientStats> {
    let mut s = ClientStats {
        text: keep_text.then(String::new),
        ..ClientStats::default()
    };
    let mut next = 1u64;
    loop {
        let msg = match timeout_at(deadline, ws.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(msg)) => msg?,
        };
        let Message::Text(t) = msg else { continue };
        let frame = t.as_str();
        if let Some(span) = scan_chunk(frame) {
            let now = Instant::now();
            s.first.get_or_insert(now);
            s.last = Some(now);
            if span.from != next {
                s.gaps += 1;
            }
            next = span.seq + 1;
            s.chunks += span.chunks();
            s.frames += 1;
            s.merged += u64::from(span.is_merged());
            s.bytes += frame.len() as u64;
            if let Some(text) = s.text.as_mut() {
                let v: Value = serde_json::from_str(frame)?;
                text.push_str(v["delta"].as_str().unwrap_or_default());
                if s.message_id.is_none() {
                    s.message_id = v["message_id"].as_str().map(str::to_owned);
                }
            }
            continue;
        }
        match frame_type(frame) {
            Some("end") => {
                let v: Value = serde_json::from_str(frame)?;
                s.ended = v["status"] == "completed";
                s.final_seq = v["final_seq"].as_u64();
                break;
            }
            Some("error") => return Err(format!("server error: {frame}").into()),
            _ => {}
        }
    }
    Ok(s)
}
