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
//! - `weir_bench c100k --conns N`: N connections with weir's default
//!   heartbeats (N − 1 000 conversations of one, 1 000 on one): RSS, kernel
//!   TCP memory and idle CPU per connection, the connect rate, and the
//!   latency (receive time − `ts_ns`) of one reply fanned out to the 1 000;
//!   bare_ws at N in the same run.
//! - `weir_bench resume --resumes R --chunks M`: weir only; a stored reply
//!   of M chunks resumed from seq 0 by R connections in turn, on the
//!   producing node and on another node on Redis: connect → first and last
//!   replayed chunk, frames per replay, exactness, Redis commands per resume.
//! - `weir_bench stalled --conns N --stalled-percent P`: weir only; N clients
//!   on one conversation and a long reply, once with every client reading
//!   and once with P % of them stalled (they stop reading after `history`);
//!   reports the server's peak RSS (`VmHWM`) of each run and their ratio.
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
//!
//! The code, one file per part of a run: `setup` (the binaries, the open
//! files limit, the source ports, the machine), `server` (weir or bare_ws as
//! a child process), `client` (connecting from many source addresses, the
//! tally of connections), then one file per benchmark: `idle`, `fanout`,
//! `stalled`, `c100k`, `resume`.
#![forbid(unsafe_code)]
#![allow(
    clippy::print_stdout,
    reason = "printing the figures is this tool's job"
)]

mod c100k;
mod client;
mod fanout;
mod idle;
mod resume;
mod server;
mod setup;
mod stalled;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::time::timeout;
use weir_bench::RuntimeOpts;

use c100k::{c100k, C100kArgs};
use fanout::{fanout, FanoutArgs};
use idle::{idle, IdleArgs};
use resume::{resume, ResumeArgs};
use setup::{binary, check_ports, raise_fd_limit, Env};
use stalled::{stalled, StalledArgs};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;

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
    /// Server peak RSS while a reply fans out with some readers stalled, against none.
    Stalled(StalledArgs),
    /// 100 000 connections with heartbeats: RSS and idle CPU per connection, connect rate, fan-out latency.
    C100k(C100kArgs),
    /// Resume latency of a stored reply, on its node and on another node on Redis.
    Resume(ResumeArgs),
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
    // Every benchmark but `stalled` and `resume` loads bare_ws too.
    let bare = || binary("bare_ws", cli.bare.as_deref());
    let conns = match &cli.command {
        Cmd::Idle(a) => a.conns,
        Cmd::Fanout(a) => a.conns,
        Cmd::Stalled(a) => a.conns,
        Cmd::C100k(a) => a.conns,
        Cmd::Resume(a) => a.resumes.min(1000),
    };
    if conns == 0 {
        return Err("--conns must be at least 1".into());
    }
    let nofile = raise_fd_limit(conns)?;
    check_ports(conns, cli.source_ips)?;
    let env = Env::read(&weir, nofile, &cli.rt).await;
    match &cli.command {
        Cmd::Idle(args) => idle(cli, args, &weir, &bare()?, &env).await,
        Cmd::Fanout(args) => fanout(cli, args, &weir, &bare()?, &env).await,
        Cmd::Stalled(args) => stalled(cli, args, &weir, &env).await,
        Cmd::C100k(args) => c100k(cli, args, &weir, &bare()?, &env).await,
        Cmd::Resume(args) => resume(cli, args, &weir, &env).await,
    }
}
