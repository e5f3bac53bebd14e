//! `cluster_bench storm`: a node restarted under load (issue 16 point 3).
//!
//! Two nodes A and B on one `redis-server`; N clients on A, each in a
//! conversation of its own, from source addresses 127.0.0.1-K; a tenth of
//! them (`--streaming-percent`) follow a reply that A streams (demo
//! generator, still streaming when A goes away), the rest idle. Then A gets
//! SIGTERM (graceful: close 1001, its replies settle) and every client
//! reconnects to B, `--concurrency` at a time, resuming its reply with
//! `resume=MESSAGE_ID:LASTSEQ`. Then the same on a fresh Redis and fresh
//! nodes with A killed (SIGKILL): the replies end `failed` `owner_lost`
//! once their lease (`--lease-ttl`) ran out.
//!
//! Per phase: the time from the signal until every client is resumed (idle:
//! B's `history` came; streaming: the first frame of its reply on B, a chunk,
//! its `end` or `resume_unavailable`); the resume latency per streaming
//! client (reconnect start → that frame) and the reconnect latency of idle
//! ones (→ `history`); Redis commands per resumed client (`INFO stats`
//! `total_commands_processed` from the signal until every client is done,
//! and the top commands of `INFO commandstats`); and exactly-once per
//! streaming client: chunks by seq (a merged frame counts `from_seq..=seq`),
//! gaps, duplicates, and the text received against the reply's content in
//! history read afterwards on B. The clients are those of the end-to-end
//! test (`weir_tests::storm`, `tests/tests/storm.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{sleep, Instant};
use weir_bench::same_run::met;
use weir_bench::{load_average, Runtime};
use weir_tests::storm::{history_of, source_ip, storm_client, Follow, StormCtx};
use weir_tests::{Signal, WeirProcess, NO_CAPS};

use crate::{Cli, Pair, Stats};
use weir_tests::SharedRedis;

/// Targets of issue 16.
const TARGET_CLIENTS: usize = 20_000;
const TARGET_ALL_RESUMED_SECS: f64 = 10.0;
const TARGET_P99_MS: f64 = 50.0;
/// Open files beside the connections, per process (the bench's and each
/// node's: listeners, Redis, logs, the runtime's own).
const FD_SLACK: u64 = 256;

#[derive(Debug, Clone, Args)]
pub(crate) struct StormArgs {
    /// Clients, all on node A, each in a conversation of its own
    #[arg(long, default_value_t = TARGET_CLIENTS)]
    pub(crate) clients: usize,
    /// Of them, this percentage follow a reply streaming from A
    #[arg(long, default_value_t = 10)]
    streaming_percent: u32,
    /// The nodes' `--lease-ttl`, seconds (after SIGKILL a reply ends
    /// `owner_lost` once its lease ran out)
    #[arg(long, default_value_t = 2)]
    lease_ttl: u64,
    /// Chunks of each demo reply
    #[arg(long, default_value_t = 600)]
    chunks: u32,
    /// Chunks per second of each demo reply
    #[arg(long, default_value_t = 5)]
    rate: u32,
    /// How long the replies stream before the signal, seconds
    #[arg(long, default_value_t = 2.0)]
    stream_secs: f64,
    /// Source addresses 127.0.0.1-K the clients connect from
    #[arg(long, default_value_t = 16)]
    source_ips: u8,
    /// Chunks each streaming client forgets before it resumes (as if its
    /// last frames were in flight), so that B replays them from the store
    #[arg(long, default_value_t = 5)]
    forget: u64,
    /// Connects at a time (to A, then the reconnects to B)
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
}

impl StormArgs {
    /// The parameters, for the JSON line.
    pub(crate) fn json(&self) -> Value {
        json!({
            "clients": self.clients,
            "streaming_percent": self.streaming_percent,
            "lease_ttl_secs": self.lease_ttl,
            "chunks": self.chunks,
            "rate": self.rate,
            "stream_secs": self.stream_secs,
            "source_ips": self.source_ips,
            "concurrency": self.concurrency,
            "forget": self.forget,
        })
    }
}

/// Prints the machine, the versions and the limits the figures depend on;
/// returns them for the JSON line.
pub(crate) fn print_env(weir: &std::path::Path, nofile: u64) -> Value {
    let m = weir_bench::Machine::read();
    let version = std::process::Command::new(weir)
        .arg("version")
        .output()
        .map_or_else(
            |e| format!("unknown ({e})"),
            |o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
    let sysctl = |path: &str| {
        std::fs::read_to_string(path).map_or_else(|_| "?".to_owned(), |s| s.trim().to_owned())
    };
    let (somaxconn, ports) = (
        sysctl("/proc/sys/net/core/somaxconn"),
        sysctl("/proc/sys/net/ipv4/ip_local_port_range"),
    );
    println!(
        "# machine {} CPUs · {} · {:.1} GiB RAM · Linux {} · open files {nofile} · somaxconn {somaxconn} · ports {ports}",
        m.cpus,
        m.cpu_model,
        m.mem_total_kib as f64 / 1024.0 / 1024.0,
        m.kernel
    );
    println!(
        "# software {version} · weir-bench {} · {} · {} · the clients run in this process (tokio), the nodes and Redis beside it",
        env!("CARGO_PKG_VERSION"),
        env!("WEIR_BENCH_DEPS"),
        env!("WEIR_BENCH_RUSTC")
    );
    json!({
        "machine": {"cpus": m.cpus, "cpu_model": m.cpu_model, "mem_total_kib": m.mem_total_kib, "kernel": m.kernel},
        "versions": {"weir": version, "weir_bench": env!("CARGO_PKG_VERSION"), "deps": env!("WEIR_BENCH_DEPS"), "rustc": env!("WEIR_BENCH_RUSTC")},
        "nofile": nofile, "somaxconn": somaxconn, "ip_local_port_range": ports,
    })
}

/// Raises the soft open-files limit to the hard one (the nodes inherit it)
/// and checks that `clients` connections fit in this process and in a node.
pub(crate) fn raise_fd_limit(clients: usize) -> Result<u64, String> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).map_err(|e| e.to_string())?;
    let needed = clients as u64 + FD_SLACK;
    if limit < needed {
        return Err(format!(
            "{clients} clients need about {needed} open files in this process and in each weir node \
             ({clients} connections + {FD_SLACK}), but RLIMIT_NOFILE's hard limit is {limit} \
             (raising it needs CAP_SYS_RESOURCE, e.g. `ulimit -Hn` as root): \
             use --clients {} or fewer",
            limit.saturating_sub(FD_SLACK)
        ));
    }
    Ok(limit)
}

/// One phase: the signal, and what it measured.
#[derive(Debug)]
pub(crate) struct Phase {
    signal: &'static str,
    load: String,
    clients: usize,
    streaming: usize,
    connect_secs: f64,
    resumed: usize,
    failed: usize,
    first_error: Option<String>,
    close_codes: BTreeMap<String, usize>,
    /// Signal → the last client resumed (`None`: not all were).
    all_resumed_secs: Option<f64>,
    /// Signal → the last client done (its reply ended).
    all_done_secs: f64,
    /// Signal → the last client learned A was gone.
    all_closed_secs: f64,
    resume: Stats,
    reconnect_idle: Stats,
    /// Signal → each streaming client's `end`.
    end_after_signal: Stats,
    retries: u32,
    redis_commands: u64,
    top_commands: Vec<(String, u64)>,
    gaps: u32,
    duplicates: u32,
    mismatches: usize,
    no_end: usize,
    inexact: usize,
    chunks_from_b: usize,
    ends: BTreeMap<String, usize>,
}

impl Phase {
    fn exactly_once(&self) -> bool {
        self.resumed == self.clients
            && self.failed == 0
            && self.gaps + self.duplicates == 0
            && self.mismatches + self.no_end + self.inexact == 0
    }

    fn commands_per_client(&self) -> f64 {
        self.redis_commands as f64 / self.resumed.max(1) as f64
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "signal": self.signal,
            "load_average": self.load,
            "clients": self.clients,
            "streaming": self.streaming,
            "connect_secs": self.connect_secs,
            "resumed": self.resumed,
            "failed": self.failed,
            "first_error": self.first_error,
            "close_codes": self.close_codes,
            "all_resumed_secs": self.all_resumed_secs,
            "all_done_secs": self.all_done_secs,
            "all_closed_secs": self.all_closed_secs,
            "resume_first_frame_ms": self.resume.json(),
            "reconnect_idle_ms": self.reconnect_idle.json(),
            "end_after_signal_ms": self.end_after_signal.json(),
            "reconnect_retries": self.retries,
            "redis_commands": self.redis_commands,
            "redis_commands_per_resumed_client": self.commands_per_client(),
            "redis_top_commands": self.top_commands.iter().map(|(c, n)| json!([c, n])).collect::<Vec<_>>(),
            "gaps": self.gaps,
            "duplicates": self.duplicates,
            "mismatches": self.mismatches,
            "no_end": self.no_end,
            "resume_unavailable": self.inexact,
            "chunk_frames_from_b": self.chunks_from_b,
            "ends": self.ends,
            "exactly_once": self.exactly_once(),
        })
    }
}

/// Both phases of one pair of runtimes: SIGTERM on `redis`, then SIGKILL
/// on a fresh Redis.
pub(crate) async fn storm(
    redis: &SharedRedis,
    cli: &Cli,
    pair: Pair,
    args: &StormArgs,
) -> Vec<Phase> {
    let streaming = args.clients * args.streaming_percent.min(100) as usize / 100;
    println!(
        "clients {} ({streaming} streaming: demo replies of {} chunks at {}/s, streaming {} s before the signal) \
         · lease {} s · source addresses 127.0.0.1-{} · {} connects at a time · each streaming client forgets its last {} chunks before resuming",
        args.clients, args.chunks, args.rate, args.stream_secs, args.lease_ttl, args.source_ips, args.concurrency, args.forget
    );
    let mut phases = vec![phase(redis, cli, pair, args, Signal::Term).await];
    let fresh = SharedRedis::start_kind(redis.kind());
    phases.push(phase(&fresh, cli, pair, args, Signal::Kill).await);
    phases
}

fn start_node(
    redis: &SharedRedis,
    cli: &Cli,
    runtime: Runtime,
    id: &str,
    args: &StormArgs,
) -> WeirProcess {
    let (url, chunks, rate, lease) = (
        redis.url(),
        args.chunks.to_string(),
        args.rate.to_string(),
        args.lease_ttl.to_string(),
    );
    let threads = cli.rt.thread_args();
    let mut flags = vec![
        "--store",
        &url,
        "--node-id",
        id,
        "--demo-chunks",
        &chunks,
        "--demo-rate",
        &rate,
        "--lease-ttl",
        &lease,
        "--chunk-timestamps",
        "--log",
        "warn",
    ];
    flags.extend(threads.iter().map(String::as_str));
    flags.extend(NO_CAPS);
    WeirProcess::start_on(runtime, &flags)
}

/// Commands processed and calls per command, summed over every process of
/// `redis`.
fn redis_counts(redis: &SharedRedis) -> (u64, BTreeMap<String, u64>) {
    let mut total = 0;
    let mut per = BTreeMap::new();
    for s in redis.servers() {
        let (t, p) = crate::backend::redis_counts(s);
        total += t;
        for (cmd, n) in p {
            *per.entry(cmd).or_insert(0) += n;
        }
    }
    (total, per)
}

async fn wait_for(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            println!("warning: timed out after {limit:?} waiting for {what}");
            return;
        }
        sleep(Duration::from_millis(5)).await;
    }
}

fn since(t0: Instant, t: Option<Instant>) -> Option<Duration> {
    t.map(|t| t.saturating_duration_since(t0))
}

async fn phase(
    redis: &SharedRedis,
    cli: &Cli,
    pair: Pair,
    args: &StormArgs,
    signal: Signal,
) -> Phase {
    let name = if signal == Signal::Kill {
        "SIGKILL"
    } else {
        "SIGTERM"
    };
    let n = args.clients;
    let streaming = n * args.streaming_percent.min(100) as usize / 100;
    let mut a = start_node(redis, cli, pair.a, "node-a", args);
    let b = start_node(redis, cli, pair.b, "node-b", args);
    let limit = Duration::from_secs(300 + 4 * args.lease_ttl);
    let (ctx, go, stop) = StormCtx::new(a.addr(), b.addr(), (args.concurrency, args.forget), limit);
    let ctx = Arc::new(ctx);
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    // Streaming clients spread over the whole range of clients.
    let every = n.checked_div(streaming).unwrap_or(usize::MAX);
    let mut streams = 0;
    for i in 0..n {
        let s = streams < streaming && i % every == 0;
        streams += usize::from(s);
        tasks.spawn(storm_client(
            ctx.clone(),
            format!("s{i}"),
            source_ip(i, args.source_ips),
            s,
        ));
    }
    let c = ctx.clone();
    wait_for("the idle clients on A", Duration::from_secs(240), || {
        c.ready.load(Relaxed) + c.done.load(Relaxed) >= n - streaming
    })
    .await;
    let connect_secs = started.elapsed().as_secs_f64();
    let _ = go.send(true);
    wait_for(
        "the replies streaming on A",
        Duration::from_secs(60),
        || c.ready.load(Relaxed) + c.done.load(Relaxed) >= n,
    )
    .await;
    sleep(Duration::from_secs_f64(args.stream_secs.max(0.0))).await;
    let load = load_average();
    let (total0, per0) = redis_counts(redis);
    let t0 = Instant::now();
    a.signal(signal);
    wait_for("every client resumed and done", limit, || {
        c.done.load(Relaxed) >= n
    })
    .await;
    let all_done_secs = t0.elapsed().as_secs_f64();
    let (total1, per1) = redis_counts(redis);
    let _ = a.wait_exit(Duration::from_secs(30)).await;
    let _ = stop.send(true);
    let mut follows = Vec::with_capacity(n);
    while let Some(f) = tasks.join_next().await {
        if let Ok(f) = f {
            follows.push(f);
        }
    }
    let histories = histories(&b, &follows, args.source_ips).await;
    let mut top: Vec<(String, u64)> = per1
        .iter()
        .map(|(cmd, calls)| (cmd.clone(), calls - per0.get(cmd).copied().unwrap_or(0)))
        .filter(|(_, d)| *d > 0)
        .collect();
    top.sort_by_key(|c| std::cmp::Reverse(c.1));
    top.truncate(8);
    let mut p = Phase {
        signal: name,
        load,
        clients: n,
        streaming,
        connect_secs,
        resumed: 0,
        failed: 0,
        first_error: None,
        close_codes: BTreeMap::new(),
        all_resumed_secs: None,
        all_done_secs,
        all_closed_secs: 0.0,
        resume: Stats::of(&mut []),
        reconnect_idle: Stats::of(&mut []),
        end_after_signal: Stats::of(&mut []),
        retries: 0,
        redis_commands: total1.saturating_sub(total0),
        top_commands: top,
        gaps: 0,
        duplicates: 0,
        mismatches: 0,
        no_end: 0,
        inexact: 0,
        chunks_from_b: 0,
        ends: BTreeMap::new(),
    };
    tally(&mut p, t0, &follows, &histories);
    print_phase(&p, args);
    p
}

/// Each streaming client's reply in history on B: (content, status).
async fn histories(b: &WeirProcess, follows: &[Follow], ips: u8) -> Vec<Option<(String, String)>> {
    let gate = Arc::new(Semaphore::new(64));
    let mut set = JoinSet::new();
    for (i, f) in follows.iter().enumerate() {
        let (addr, gate, session, mid) = (
            b.addr(),
            gate.clone(),
            f.session.clone(),
            f.message_id.clone(),
        );
        set.spawn(async move {
            let Some(mid) = mid else { return (i, None) };
            let Ok(_permit) = gate.acquire().await else {
                return (i, None);
            };
            (
                i,
                history_of(addr, source_ip(i, ips), &session, &mid)
                    .await
                    .ok()
                    .flatten(),
            )
        });
    }
    let mut out = vec![None; follows.len()];
    while let Some(Ok((i, h))) = set.join_next().await {
        out[i] = h;
    }
    out
}

fn tally(p: &mut Phase, t0: Instant, follows: &[Follow], histories: &[Option<(String, String)>]) {
    let (mut resume, mut idle, mut ends) = (Vec::new(), Vec::new(), Vec::new());
    let mut last_resumed = Duration::ZERO;
    let mut last_closed = Duration::ZERO;
    for (f, h) in follows.iter().zip(histories) {
        if let Some(e) = &f.error {
            p.failed += 1;
            p.first_error
                .get_or_insert_with(|| format!("{}: {e}", f.session));
        }
        *p.close_codes
            .entry(
                f.close_code
                    .map_or_else(|| "none (reset)".to_owned(), |c| c.to_string()),
            )
            .or_default() += 1;
        p.retries += f.attempts.saturating_sub(1);
        last_closed = last_closed.max(since(t0, f.closed_at).unwrap_or_default());
        if let Some(r) = since(t0, f.resumed_at) {
            p.resumed += 1;
            last_resumed = last_resumed.max(r);
        }
        let took = f
            .resumed_at
            .zip(f.reconnect_at)
            .map(|(r, c)| r.saturating_duration_since(c));
        if !f.streaming {
            idle.extend(took);
            continue;
        }
        resume.extend(took);
        ends.extend(since(t0, f.ended_at));
        let v = f.verdict(h.as_ref().map(|(c, _)| c.as_str()));
        p.gaps += v.gaps;
        p.duplicates += v.duplicates;
        p.mismatches += usize::from(v.mismatch);
        p.no_end += usize::from(v.no_end);
        p.inexact += usize::from(v.inexact);
        p.chunks_from_b += f.spans.iter().filter(|s| s.on_b).count();
        let end = f.end.as_ref().map_or_else(
            || "none".to_owned(),
            |e| match e["reason"].as_str() {
                Some(r) => format!("{} {r}", e["status"].as_str().unwrap_or("?")),
                None => e["status"].as_str().unwrap_or("?").to_owned(),
            },
        );
        *p.ends.entry(end).or_default() += 1;
    }
    p.all_resumed_secs = (p.resumed == p.clients).then_some(last_resumed.as_secs_f64());
    p.all_closed_secs = last_closed.as_secs_f64();
    p.resume = Stats::of(&mut resume);
    p.reconnect_idle = Stats::of(&mut idle);
    p.end_after_signal = Stats::of(&mut ends);
}

fn print_phase(p: &Phase, args: &StormArgs) {
    println!();
    println!(
        "### {} to node A · {} clients ({} streaming) connected to A in {:.1} s · load average {} at the signal",
        p.signal, p.clients, p.streaming, p.connect_secs, p.load
    );
    println!(
        "resumed on B: {}/{} · failed {}{} · close codes from A: {:?} · reconnect retries {}",
        p.resumed,
        p.clients,
        p.failed,
        p.first_error
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
        p.close_codes,
        p.retries
    );
    println!(
        "signal → every client told A is gone {:.3} s · → every client resumed {} · → every reply ended {:.3} s",
        p.all_closed_secs,
        p.all_resumed_secs.map_or_else(|| "never (not all resumed)".to_owned(), |s| format!("{s:.3} s")),
        p.all_done_secs
    );
    println!(
        "resume latency, streaming (reconnect start → first frame of its reply on B): {}",
        p.resume
    );
    println!(
        "reconnect latency, idle (reconnect start → history on B): {}",
        p.reconnect_idle
    );
    println!(
        "signal → end of each reply: {} (lease {} s)",
        p.end_after_signal, args.lease_ttl
    );
    println!(
        "Redis commands from the signal until every client was done: {} ({:.2} per resumed client); top: {}",
        p.redis_commands,
        p.commands_per_client(),
        p.top_commands
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "exactly once, {} streaming clients: gaps {} · duplicates {} · text ≠ history {} · no end {} · \
         resume_unavailable {} · chunk frames from B {} · ends {:?}",
        p.streaming, p.gaps, p.duplicates, p.mismatches, p.no_end, p.inexact, p.chunks_from_b, p.ends
    );
}

/// The phases of every pair side by side, then the targets.
pub(crate) fn print_table(runs: &[(Pair, Vec<&Phase>)]) {
    println!(
        "{:<6} {:<7} {:>5} {:>7} {:>8} {:>9} {:>9}  {:<30}  {:<22} {:>8}  {:>4} {:>4} {:>4} {:>5}",
        "pair",
        "signal",
        "load",
        "clients",
        "resumed",
        "all res.",
        "all end",
        "resume streaming, ms",
        "reconnect idle, ms",
        "Redis",
        "gaps",
        "dups",
        "≠hist",
        "unav."
    );
    println!(
        "{:<6} {:<7} {:>5} {:>7} {:>8} {:>9} {:>9}  {:<30}  {:<22} {:>8}",
        "", "", "", "", "", "s", "s", "p50 / p99 / max", "p50 / p99", "/client"
    );
    for (pair, phases) in runs {
        for p in phases {
            println!(
                "{:<6} {:<7} {:>5} {:>7} {:>8} {:>9} {:>9.3}  {:<30}  {:<22} {:>8.2}  {:>4} {:>4} {:>4} {:>5}",
                pair.name(),
                p.signal,
                p.load,
                p.clients,
                p.resumed,
                p.all_resumed_secs.map_or_else(|| "-".to_owned(), |s| format!("{s:.3}")),
                p.all_done_secs,
                format!("{:.2} / {:.2} / {:.2}", p.resume.p50, p.resume.p99, p.resume.max),
                format!("{:.2} / {:.2}", p.reconnect_idle.p50, p.reconnect_idle.p99),
                p.commands_per_client(),
                p.gaps,
                p.duplicates,
                p.mismatches,
                p.inexact
            );
        }
    }
    println!();
    for (pair, phases) in runs {
        for p in phases {
            let within = p
                .all_resumed_secs
                .is_some_and(|s| s <= TARGET_ALL_RESUMED_SECS);
            let at = if p.clients < TARGET_CLIENTS {
                format!(
                    " (at {} clients: the target names {TARGET_CLIENTS})",
                    p.clients
                )
            } else {
                String::new()
            };
            println!(
                "target    {} {}: {TARGET_CLIENTS} clients all resumed exactly once within {TARGET_ALL_RESUMED_SECS} s \
                 of the signal: {}/{} resumed, exactly once {}, last at {} → {}{at}",
                pair.name(),
                p.signal,
                p.resumed,
                p.clients,
                if p.exactly_once() { "yes" } else { "no" },
                p.all_resumed_secs.map_or_else(|| "-".to_owned(), |s| format!("{s:.3} s")),
                met(within && p.exactly_once() && p.clients >= TARGET_CLIENTS)
            );
            println!(
                "target    {} {}: resume first-chunk p99 ≤ {TARGET_P99_MS} ms: {:.2} ms → {}{at}",
                pair.name(),
                p.signal,
                p.resume.p99,
                met(p.resume.n > 0 && p.resume.p99 <= TARGET_P99_MS && p.clients >= TARGET_CLIENTS)
            );
        }
    }
}
