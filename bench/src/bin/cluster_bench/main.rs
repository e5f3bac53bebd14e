//! `cluster_bench`: two real `weir` nodes on one real `redis-server`, over
//! loopback; prints what it measured (figures, not assertions).
//!
//! - `cluster_bench cancel --cancels N`: a client on node A chats; a client
//!   on node B, watching the same conversation, cancels the reply once it has
//!   seen a few chunks. Per cancel: the time from sending `cancel` to B until
//!   B's `cancel_result`, and until the last chunk of the reply that A's
//!   client receives (0 when none comes after the cancel was sent). Both
//!   clients live in this process, so both times are on one clock. Also B's
//!   own `weir_cancel_quiet_seconds` histogram (cancel arrival → answer).
//! - `cluster_bench throughput --convs C --chunks M`: C conversations, each
//!   with a producer client on A and a viewer on B; every reply M chunks as
//!   fast as the demo generator goes. Reports the chunks B's viewers
//!   received per second (everything crossed Redis), and per chunk the delay
//!   between A's client and B's client receiving it (cross-node delivery).
//! - `cluster_bench storm --clients N`: N clients on node A (a tenth of them
//!   following a reply A streams) reconnect to node B and resume when A gets
//!   SIGTERM, then again when A is killed: time until all are resumed,
//!   resume latency, Redis commands per client, exactly-once (`storm.rs`).
//!
//! Each runs on every pair of runtimes that `--runtime tokio|smol|both`
//! (default both) names, one after the other in the same run, each pair on
//! a `redis-server` of its own: both nodes on tokio, both on smol, and (with
//! both, unless `--skip-mixed`) node A on tokio with node B on smol. The
//! figures of every pair are printed as they come, then side by side in one
//! table, and last as one JSON object with a section per pair.
//!
//! `--weir PATH` names the binary (default: `weir` next to this executable,
//! so build with `cargo build --release -p weir-server -p weir-bench`).
//! Every wait is bounded (each frame within 10 s; the whole run within
//! `--timeout-secs`); the nodes and Redis are killed when the run ends.
//! See docs/benchmarks.md.
#![forbid(unsafe_code)]
#![allow(
    clippy::print_stdout,
    reason = "printing the figures is this tool's job"
)]

mod backend;
mod storm;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use weir_bench::{load_average, ratio, times, utc_now, Runtime, RuntimeChoice, RuntimeOpts};
use weir_tests::{Client, Frame, WeirProcess};

use backend::{describe, Meter, RedisChoice, RedisCost};
use weir_tests::{RedisKind as Kind, SharedRedis};

#[derive(Debug, Parser)]
#[command(name = "cluster_bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// The weir binary [default: `weir` next to this executable]
    #[arg(long, global = true, value_name = "PATH")]
    weir: Option<PathBuf>,
    #[command(flatten)]
    rt: RuntimeOpts,
    /// With `--runtime both`: skip the mixed pair (node A on tokio, node B on smol)
    #[arg(long, global = true)]
    skip_mixed: bool,
    /// The Redis the nodes share: one `redis-server`, a Redis Cluster of
    /// three masters with a replica each, or both in the same run
    #[arg(long, global = true, value_enum, default_value_t = RedisChoice::One)]
    redis: RedisChoice,
    /// Upper bound of the whole run, in seconds
    #[arg(long, global = true, default_value_t = 900)]
    timeout_secs: u64,
}

#[derive(Debug, Clone, Subcommand)]
enum Cmd {
    /// Cross-node cancel latency.
    Cancel {
        /// How many replies to cancel.
        #[arg(long, default_value_t = 1000)]
        cancels: usize,
    },
    /// Chunks per second through Redis, and cross-node delivery delay.
    Throughput {
        /// Conversations producing at once.
        #[arg(long, default_value_t = 20)]
        convs: usize,
        /// Chunks per reply.
        #[arg(long, default_value_t = 5000)]
        chunks: u32,
        /// Replies per conversation.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
    },
    /// A node stopped (SIGTERM), then killed (SIGKILL), under N clients that
    /// resume on the other node.
    Storm(storm::StormArgs),
}

/// The runtimes of the two nodes of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pair {
    /// Node A's: it produces every reply.
    a: Runtime,
    /// Node B's: it cancels (`cancel`) or views (`throughput`).
    b: Runtime,
}

impl Pair {
    /// `tokio`, `smol`, or `mixed` (A and B on different runtimes).
    fn name(self) -> &'static str {
        if self.a == self.b {
            self.a.name()
        } else {
            "mixed"
        }
    }

    /// The pairs a run measures, in order.
    fn chosen(cli: &Cli) -> Vec<Self> {
        let mut pairs: Vec<Self> = cli
            .rt
            .runtimes()
            .iter()
            .map(|&r| Self { a: r, b: r })
            .collect();
        if cli.rt.runtime == RuntimeChoice::Both && !cli.skip_mixed {
            pairs.push(Self {
                a: Runtime::Tokio,
                b: Runtime::Smol,
            });
        }
        pairs
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let weir = weir_bench::same_run::weir_bin(cli.weir.clone());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cluster_bench: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pairs = Pair::chosen(&cli);
    let date = utc_now();
    let mut env = Value::Null;
    if let Cmd::Storm(args) = &cli.command {
        match storm::raise_fd_limit(args.clients) {
            Ok(limit) => env = storm::print_env(&weir, limit),
            Err(e) => {
                eprintln!("cluster_bench storm: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "# cluster_bench: weir {} · {} · {} pair(s): {} · {} · load average {}",
        weir.display(),
        date,
        pairs.len(),
        pairs
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", "),
        cli.rt.describe(),
        load_average()
    );
    let limit = Duration::from_secs(cli.timeout_secs);
    let runs = rt.block_on(async {
        tokio::time::timeout(limit, async {
            let mut runs = Vec::new();
            for &pair in &pairs {
                for &kind in cli.redis.kinds() {
                    runs.push((pair, kind, one_pair(&cli, pair, kind).await));
                }
            }
            runs
        })
        .await
    });
    // Dropping the nodes and Redis (done by now) killed them.
    let Ok(runs) = runs else {
        eprintln!(
            "cluster_bench: the run took longer than --timeout-secs {}",
            cli.timeout_secs
        );
        return ExitCode::FAILURE;
    };
    println!();
    let (bench, params) = match cli.command {
        Cmd::Cancel { cancels } => {
            print_cancel_table(&runs);
            ("cancel", json!({ "cancels": cancels }))
        }
        Cmd::Throughput {
            convs,
            chunks,
            rounds,
        } => {
            print_throughput_table(&runs);
            (
                "throughput",
                json!({ "convs": convs, "chunks": chunks, "rounds": rounds }),
            )
        }
        Cmd::Storm(ref args) => {
            let phases: Vec<(Pair, Vec<&storm::Phase>)> = runs
                .iter()
                .filter_map(|(pair, _, run)| match run {
                    RunResult::Storm(p) => Some((*pair, p.iter().collect())),
                    _ => None,
                })
                .collect();
            storm::print_table(&phases);
            ("storm", args.json())
        }
    };
    let mut sections = serde_json::Map::new();
    for (pair, kind, run) in &runs {
        let mut v = run.json();
        v["node_a"] = json!(pair.a.name());
        v["node_b"] = json!(pair.b.name());
        v["redis"] = json!(kind.name());
        sections.insert(label(*pair, *kind, cli.redis), v);
    }
    println!(
        "{}",
        json!({
            "tool": "cluster_bench",
            "bench": bench,
            "date": date,
            "params": params,
            "worker_threads": cli.rt.worker_threads,
            "env": env,
            "runs": sections,
        })
    );
    ExitCode::SUCCESS
}

/// A run's name: the pair's, and the Redis's when a run has both.
fn label(pair: Pair, kind: Kind, choice: RedisChoice) -> String {
    if choice == RedisChoice::Both {
        format!("{}/{}", pair.name(), kind.name())
    } else {
        pair.name().to_owned()
    }
}

/// The runs of a `cluster_bench` invocation: a pair of runtimes on one
/// kind of Redis, and what it measured.
type Runs = [(Pair, Kind, RunResult)];

/// What one pair of nodes measured.
#[derive(Debug)]
enum RunResult {
    Cancel(CancelResult),
    Throughput(ThroughputResult),
    /// The SIGTERM phase, then the SIGKILL one.
    Storm(Vec<storm::Phase>),
}

impl RunResult {
    fn json(&self) -> Value {
        match self {
            Self::Cancel(c) => json!({
                "load_average": c.load,
                "cancels": c.to_result.n,
                "cancel_to_result_ms": c.to_result.json(),
                "cancel_to_last_chunk_on_a_ms": c.to_quiet_a.json(),
                "b_cancel_quiet_mean_ms": c.quiet_mean_ms,
                "redis_cost": c.redis.json(c.to_result.n as u64),
            }),
            Self::Throughput(t) => json!({
                "load_average": t.load,
                "chunks_received_on_b": t.received,
                "chunks_per_sec": t.chunks_per_sec,
                "delivery_delay_ms": t.delay.json(),
                "b_merged_frames": t.merged,
                "b_notices_dropped": t.notices_dropped,
                "redis_cost": t.redis.json(t.received),
            }),
            Self::Storm(phases) => json!({
                "phases": phases.iter().map(storm::Phase::json).collect::<Vec<_>>(),
            }),
        }
    }
}

/// Starts Redis and the two nodes of `pair`, runs the command, stops them.
async fn one_pair(cli: &Cli, pair: Pair, kind: Kind) -> RunResult {
    let redis = SharedRedis::start_kind(kind);
    let load = load_average();
    println!();
    println!(
        "## {}: node A on {}, node B on {} · {} · load average {load}",
        label(pair, kind, cli.redis),
        pair.a.name(),
        pair.b.name(),
        describe(&redis)
    );
    match cli.command {
        Cmd::Cancel { cancels } => {
            RunResult::Cancel(cancel(&redis, cli, pair, load, cancels).await)
        }
        Cmd::Throughput {
            convs,
            chunks,
            rounds,
        } => RunResult::Throughput(
            throughput(&redis, cli, pair, load, (convs, chunks, rounds)).await,
        ),
        Cmd::Storm(ref args) => RunResult::Storm(storm::storm(&redis, cli, pair, args).await),
    }
}

fn nodes(
    redis: &SharedRedis,
    cli: &Cli,
    pair: Pair,
    chunks: u32,
    rate: &str,
) -> (WeirProcess, WeirProcess) {
    let url = redis.url();
    let chunks = chunks.to_string();
    let threads = cli.rt.thread_args();
    let start = |runtime: Runtime, id: &str| {
        let mut args = vec![
            "--store",
            &url,
            "--node-id",
            id,
            "--demo-chunks",
            &chunks,
            "--demo-rate",
            rate,
            "--log",
            "warn",
            "--queue-capacity",
            "4096",
        ];
        args.extend(threads.iter().map(String::as_str));
        // Crowds of one user on one address: the caps are not measured here.
        args.extend(weir_tests::NO_CAPS);
        WeirProcess::start_on(runtime, &args)
    };
    (start(pair.a, "node-a"), start(pair.b, "node-b"))
}

#[derive(Debug)]
struct CancelResult {
    load: String,
    to_result: Stats,
    to_quiet_a: Stats,
    quiet_mean_ms: f64,
    redis: RedisCost,
}

async fn cancel(
    redis: &SharedRedis,
    cli: &Cli,
    pair: Pair,
    load: String,
    n: usize,
) -> CancelResult {
    let (a, b) = nodes(redis, cli, pair, 100_000, "2000");
    let mut on_a = a.ws("session_id=bench&user_id=u").await;
    let mut on_b = b.ws("session_id=bench&user_id=u").await;
    let mut to_result = Vec::with_capacity(n);
    let mut to_quiet_a = Vec::with_capacity(n);
    let meter = Meter::start(redis);
    for i in 0..n {
        on_a.chat("cancel me", &format!("r{i}")).await;
        let (_, ack) = on_a.next_of("ack").await;
        let mid = ack.str("message_id").to_owned();
        // B has seen the reply stream for a few chunks.
        loop {
            let f = on_b.next_frame().await;
            if f.as_chunk()
                .is_some_and(|c| c.message_id == mid && c.seq >= 3)
            {
                break;
            }
        }
        let sent = Instant::now();
        on_b.cancel(Some(&mid), &format!("c{i}")).await;
        // B's `end` may come before or after its `cancel_result`.
        let mut b_ended = false;
        let result = loop {
            let f = on_b.next_frame().await;
            if f.is("cancel_result") {
                break f;
            }
            b_ended |= f.is("end") && f["message_id"] == mid.as_str();
        };
        to_result.push(sent.elapsed());
        assert_eq!(result["status"], "cancelled", "{result:?}");
        // A's client: the last chunk of this reply, then its end.
        let mut last_chunk: Option<Instant> = None;
        loop {
            let f = on_a.next_frame().await;
            let now = Instant::now();
            if f.as_chunk().is_some_and(|c| c.message_id == mid) {
                last_chunk = Some(now);
            }
            if f.is("end") && f["message_id"] == mid.as_str() {
                break;
            }
        }
        to_quiet_a.push(last_chunk.map_or(Duration::ZERO, |t| t.saturating_duration_since(sent)));
        while !b_ended {
            let f = on_b.next_frame().await;
            b_ended = f.is("end") && f["message_id"] == mid.as_str();
        }
    }
    let cost = meter.finish(redis);
    let metrics = b.metrics().await;
    let (to_result, to_quiet_a) = (Stats::of(&mut to_result), Stats::of(&mut to_quiet_a));
    let quiet_mean_ms = 1000.0 * metrics.get("weir_cancel_quiet_seconds_sum")
        / metrics.get("weir_cancel_quiet_seconds_count").max(1.0);
    println!("cancels: {n}");
    println!("cancel sent to B -> cancel_result on B: {to_result}");
    println!("cancel sent to B -> last chunk of the reply on A's client: {to_quiet_a}");
    println!(
        "B's weir_cancel_quiet_seconds: count {} sum {:.3}s (mean {quiet_mean_ms:.3} ms)",
        metrics.get("weir_cancel_quiet_seconds_count"),
        metrics.get("weir_cancel_quiet_seconds_sum"),
    );
    cost.print("cancels", n as u64);
    CancelResult {
        load,
        to_result,
        to_quiet_a,
        quiet_mean_ms,
        redis: cost,
    }
}

#[derive(Debug)]
struct ThroughputResult {
    load: String,
    received: u64,
    chunks_per_sec: f64,
    delay: Stats,
    merged: f64,
    notices_dropped: f64,
    redis: RedisCost,
}

async fn throughput(
    redis: &SharedRedis,
    cli: &Cli,
    pair: Pair,
    load: String,
    (convs, chunks, rounds): (usize, u32, usize),
) -> ThroughputResult {
    // As fast as the generator goes.
    let (a, b) = nodes(redis, cli, pair, chunks, "1000000000");
    let mut pairs = Vec::new();
    for c in 0..convs {
        let q = format!("session_id=t{c}&user_id=u{c}");
        let producer = a.ws(&q).await;
        let viewer = b.ws(&q).await;
        pairs.push((producer, viewer));
    }
    let meter = Meter::start(redis);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (c, (producer, viewer)) in pairs.into_iter().enumerate() {
        tasks.spawn(run_pair(c, producer, viewer, rounds));
    }
    let mut delays = Vec::new();
    let mut received = 0u64;
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    while let Some(done) = tasks.join_next().await {
        let (d, n, f, l) = done.unwrap_or_else(|e| panic!("a client task failed: {e}"));
        delays.extend(d);
        received += n;
        first = Some(first.map_or(f, |x: Instant| x.min(f)));
        last = Some(last.map_or(l, |x: Instant| x.max(l)));
    }
    let cost = meter.finish(redis);
    let span = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f),
        _ => started.elapsed(),
    };
    println!(
        "conversations: {convs}, replies each: {rounds}, chunks per reply: {chunks}; chunks received on B: {received}"
    );
    let chunks_per_sec = received as f64 / span.as_secs_f64();
    let delay = Stats::of(&mut delays);
    println!("chunks/s through Redis (B's viewers, first to last chunk): {chunks_per_sec:.0}");
    println!("cross-node delivery delay (A's client -> B's client, per chunk): {delay}");
    let m = b.metrics().await;
    let (merged, notices_dropped) = (
        m.get("weir_merged_frames_total"),
        m.get("weir_notices_dropped_total"),
    );
    println!("B: merged frames {merged}, notices dropped {notices_dropped}");
    cost.print("chunks", received);
    ThroughputResult {
        load,
        received,
        chunks_per_sec,
        delay,
        merged,
        notices_dropped,
        redis: cost,
    }
}

/// One conversation: `rounds` replies; returns per-chunk delays, chunks
/// received on B, and B's first and last chunk times.
async fn run_pair(
    c: usize,
    mut producer: Client,
    mut viewer: Client,
    rounds: usize,
) -> (Vec<Duration>, u64, Instant, Instant) {
    let mut delays = Vec::new();
    let mut received = 0u64;
    let mut first = None;
    let mut last = Instant::now();
    for r in 0..rounds {
        producer.chat("throughput", &format!("r{c}-{r}")).await;
        let (_, ack) = producer.next_of("ack").await;
        let mid = ack.str("message_id").to_owned();
        // Read both sides concurrently: A's times per seq, then B's.
        let a_side = async {
            let mut at: HashMap<u64, Instant> = HashMap::new();
            loop {
                let f = producer.next_frame().await;
                let now = Instant::now();
                if let Some(ch) = f.as_chunk().filter(|ch| ch.message_id == mid) {
                    for s in ch.first_seq()..=ch.seq {
                        at.insert(s, now);
                    }
                }
                if is_end(&f, &mid) {
                    return at;
                }
            }
        };
        let b_side = async {
            let mut at: Vec<(u64, Instant)> = Vec::new();
            loop {
                let f = viewer.next_frame().await;
                let now = Instant::now();
                if let Some(ch) = f.as_chunk().filter(|ch| ch.message_id == mid) {
                    for s in ch.first_seq()..=ch.seq {
                        at.push((s, now));
                    }
                }
                if is_end(&f, &mid) {
                    return at;
                }
            }
        };
        let (a_at, b_at) = tokio::join!(a_side, b_side);
        for (s, t) in &b_at {
            first.get_or_insert(*t);
            last = *t;
            if let Some(ta) = a_at.get(s) {
                delays.push(t.saturating_duration_since(*ta));
            }
        }
        received += b_at.len() as u64;
    }
    (delays, received, first.unwrap_or(last), last)
}

fn is_end(f: &Frame, mid: &str) -> bool {
    f.is("end") && f["message_id"] == mid
}

/// Percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Stats {
    n: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Stats {
    /// Sorts `samples` and reads the percentiles (all 0 when empty).
    fn of(samples: &mut [Duration]) -> Self {
        samples.sort();
        let at = |q: f64| {
            let i = ((samples.len().saturating_sub(1)) as f64 * q).round() as usize;
            samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Self {
            n: samples.len(),
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: at(1.0),
        }
    }

    /// `p50 / p90 / p99 / max` for the tables.
    fn short(&self) -> String {
        format!(
            "{:.2} / {:.2} / {:.2} / {:.2}",
            self.p50, self.p90, self.p99, self.max
        )
    }

    fn json(&self) -> Value {
        json!({"n": self.n, "p50": self.p50, "p90": self.p90, "p99": self.p99, "max": self.max})
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.n == 0 {
            return f.write_str("no samples");
        }
        write!(
            f,
            "n {} p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms max {:.2} ms",
            self.n, self.p50, self.p90, self.p99, self.max
        )
    }
}

/// The runs side by side: one row each, then smol's figures against
/// tokio's and the cluster's against one Redis's (each pair with itself).
fn print_cancel_table(runs: &Runs) {
    println!(
        "{:<7} {:<7} {:<6} {:<6} {:>5}  {:<36}  {:<36}  {:>9}  {:>10}",
        "pair",
        "redis",
        "node A",
        "node B",
        "load",
        "cancel → cancel_result on B, ms",
        "cancel → last chunk on A, ms",
        "B quiet",
        "Redis CPU"
    );
    println!(
        "{:<7} {:<7} {:<6} {:<6} {:>5}  {:<36}  {:<36}  {:>9}  {:>10}",
        "",
        "",
        "",
        "",
        "",
        "p50 / p90 / p99 / max",
        "p50 / p90 / p99 / max",
        "mean, ms",
        "ms/cancel"
    );
    let mut p50_p99 = HashMap::new();
    for (pair, kind, run) in runs {
        let RunResult::Cancel(c) = run else { continue };
        println!(
            "{:<7} {:<7} {:<6} {:<6} {:>5}  {:<36}  {:<36}  {:>9.3}  {:>10.3}",
            pair.name(),
            kind.name(),
            pair.a.name(),
            pair.b.name(),
            c.load,
            c.to_result.short(),
            c.to_quiet_a.short(),
            c.quiet_mean_ms,
            c.redis.per_million(c.to_result.n as u64) / 1000.0
        );
        p50_p99.insert((pair.name(), *kind), (c.to_result.p50, c.to_result.p99));
    }
    for kind in [Kind::One, Kind::Cluster] {
        if let (Some(t), Some(s)) = (p50_p99.get(&("tokio", kind)), p50_p99.get(&("smol", kind))) {
            println!(
                "smol / tokio on {}: cancel → cancel_result p50 {}, p99 {}",
                kind.name(),
                times(ratio(s.0, t.0)),
                times(ratio(s.1, t.1))
            );
        }
    }
    for name in ["tokio", "smol", "mixed"] {
        if let (Some(o), Some(c)) = (
            p50_p99.get(&(name, Kind::One)),
            p50_p99.get(&(name, Kind::Cluster)),
        ) {
            println!(
                "cluster / one Redis ({name}): cancel → cancel_result p50 {}, p99 {}",
                times(ratio(c.0, o.0)),
                times(ratio(c.1, o.1))
            );
        }
    }
}

fn print_throughput_table(runs: &Runs) {
    println!(
        "{:<7} {:<7} {:<6} {:<6} {:>5}  {:>9}  {:>11}  {:<36}  {:>7}  {:>11}  {:>10}",
        "pair",
        "redis",
        "node A",
        "node B",
        "load",
        "chunks",
        "chunks/s",
        "A → B delay, ms",
        "merged",
        "Redis CPU s",
        "publishing"
    );
    println!(
        "{:<7} {:<7} {:<6} {:<6} {:>5}  {:>9}  {:>11}  {:<36}  {:>7}  {:>11}  {:>10}",
        "",
        "",
        "",
        "",
        "",
        "on B",
        "on B",
        "p50 / p90 / p99 / max",
        "on B",
        "per M chunks",
        "processes"
    );
    let mut rates = HashMap::new();
    for (pair, kind, run) in runs {
        let RunResult::Throughput(t) = run else {
            continue;
        };
        println!(
            "{:<7} {:<7} {:<6} {:<6} {:>5}  {:>9}  {:>11.0}  {:<36}  {:>7}  {:>11.1}  {:>6} of {}",
            pair.name(),
            kind.name(),
            pair.a.name(),
            pair.b.name(),
            t.load,
            t.received,
            t.chunks_per_sec,
            t.delay.short(),
            t.merged,
            t.redis.per_million(t.received),
            t.redis.publishing(),
            t.redis.shards.len()
        );
        rates.insert(
            (pair.name(), *kind),
            (t.chunks_per_sec, t.redis.per_million(t.received)),
        );
    }
    for kind in [Kind::One, Kind::Cluster] {
        if let (Some(t), Some(s)) = (rates.get(&("tokio", kind)), rates.get(&("smol", kind))) {
            println!(
                "smol / tokio on {}: {} in chunks/s",
                kind.name(),
                times(ratio(s.0, t.0))
            );
        }
    }
    for name in ["tokio", "smol", "mixed"] {
        if let (Some(o), Some(c)) = (
            rates.get(&(name, Kind::One)),
            rates.get(&(name, Kind::Cluster)),
        ) {
            println!(
                "cluster / one Redis ({name}): {} in chunks/s, {} in Redis CPU per chunk",
                times(ratio(c.0, o.0)),
                times(ratio(c.1, o.1))
            );
        }
    }
}
