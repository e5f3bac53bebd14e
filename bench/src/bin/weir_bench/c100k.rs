//! `weir_bench c100k`: many idle connections on one weir node with its
//! default heartbeats, then one reply fanned out to some of them.
//!
//! Per server (weir on each runtime, then bare_ws): N WebSocket connections
//! (weir: N − F on a conversation each, F on one shared conversation),
//! opened from 127.0.0.x; the connect rate; server RSS per connection; the
//! kernel's TCP memory per connection (`/proc/net/sockstat`, both ends of
//! each loopback connection); server CPU per second while idle over a window
//! of at least one heartbeat (weir pings every 15 s by default). Then, weir
//! only (started with `--chunk-timestamps`), one `chat` on the shared
//! conversation: each of its F clients measures every `chunk` frame's
//! latency, receive time − `ts_ns`, while the other N − F idle.

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use clap::Args;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, Instant};
use weir_bench::{percentile, tcp_sockstat, unix_ns, Runtime};

use crate::client::{connect, source_ip, wait_all, Tally};
use crate::server::{runtime_name, Server};
use crate::setup::Env;
use crate::{Cli, Res};

/// Targets of issue 16.
const TARGET_KIB_PER_CONN: f64 = 5.0;
const TARGET_IDLE_CPU_PERCENT: f64 = 5.0;

#[derive(Debug, Args)]
pub(crate) struct C100kArgs {
    /// Connections held open per server
    #[arg(long, default_value_t = 100_000)]
    pub(crate) conns: usize,
    /// Of them, this many share one conversation and get the fanned-out reply
    #[arg(long, default_value_t = 1_000)]
    fanout: usize,
    /// Chunks of the fanned-out reply (the demo generator, 100 chunks/s)
    #[arg(long, default_value_t = 100)]
    chunks: u32,
    /// Idle window for the CPU reading, seconds (weir's heartbeat is 15 s)
    #[arg(long, default_value_t = 30.0)]
    idle_secs: f64,
    /// Pause after every connection is established, before the readings, seconds
    #[arg(long, default_value_t = 3.0)]
    settle_secs: f64,
}

#[derive(Debug, Default)]
struct Run {
    server: &'static str,
    runtime: Option<Runtime>,
    conns: usize,
    established: usize,
    failed: usize,
    closed_early: usize,
    connect_secs: f64,
    rss_before_kib: u64,
    rss_after_kib: u64,
    /// Kernel TCP memory (pages of 4 KiB) before and after connecting.
    tcp_mem_before: u64,
    tcp_mem_after: u64,
    idle_cpu_percent: f64,
    /// Fan-out latencies (ns) of every chunk frame at every fan client.
    latencies: Vec<u64>,
    fan_frames_expected: usize,
    fan_ended: usize,
}

impl Run {
    fn kib_per_conn(&self) -> f64 {
        (self.rss_after_kib as f64 - self.rss_before_kib as f64) / self.established.max(1) as f64
    }

    fn kernel_kib_per_conn(&self) -> f64 {
        (self.tcp_mem_after as f64 - self.tcp_mem_before as f64) * 4.0
            / self.established.max(1) as f64
    }

    fn connect_rate(&self) -> f64 {
        self.established as f64 / self.connect_secs.max(1e-9)
    }

    fn ms(&self, p: f64) -> Option<f64> {
        percentile(&self.latencies, p).map(|ns| ns as f64 / 1e6)
    }
}

pub(crate) async fn c100k(
    cli: &Cli,
    args: &C100kArgs,
    weir: &Path,
    bare: &Path,
    env: &Env,
) -> Res<()> {
    env.print("c100k");
    let fanout = args.fanout.min(args.conns);
    println!(
        "params    conns {} per server ({} distinct conversations + {fanout} on one) · fan-out reply {} chunks \
         · idle window {} s · settle {} s · source addresses 127.0.0.1-{} · {} connects at a time \
         · weir: default heartbeat and idle timeout, --chunk-timestamps, --log error",
        args.conns,
        args.conns - fanout,
        args.chunks,
        args.idle_secs,
        args.settle_secs,
        cli.source_ips,
        cli.concurrency
    );
    println!();
    let mut runs = Vec::new();
    for &runtime in cli.rt.runtimes() {
        let extra: Vec<String> = [
            "--chunk-timestamps",
            "--demo-chunks",
            &args.chunks.to_string(),
            "--demo-rate",
            "100",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let server =
            Server::weir_default_heartbeat(weir, &cli.rt.weir_args(runtime), &extra).await?;
        runs.push(one(cli, args, env, server, "weir", Some(runtime), fanout).await?);
        sleep(Duration::from_secs(2)).await;
    }
    let server = Server::bare(bare, &[]).await?;
    runs.push(one(cli, args, env, server, "bare_ws", None, 0).await?);
    report(cli, args, env, &runs);
    Ok(())
}

fn report(cli: &Cli, args: &C100kArgs, env: &Env, runs: &[Run]) {
    println!();
    println!(
        "{:<8} {:<7} {:>7} {:>6} {:>10} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9}",
        "server",
        "runtime",
        "conns",
        "failed",
        "conn/s",
        "KiB/conn",
        "kern KiB",
        "idle CPU%",
        "fan p50",
        "fan p99",
        "fan end"
    );
    for r in runs {
        let ms = |p| {
            r.ms(p)
                .map_or_else(|| String::from("-"), |v| format!("{v:.2} ms"))
        };
        println!(
            "{:<8} {:<7} {:>7} {:>6} {:>10.0} {:>9.2} {:>9.2} {:>10.2} {:>9} {:>9} {:>9}",
            r.server,
            runtime_name(r.runtime),
            r.established,
            r.failed + r.closed_early,
            r.connect_rate(),
            r.kib_per_conn(),
            r.kernel_kib_per_conn(),
            r.idle_cpu_percent,
            ms(50.0),
            ms(99.0),
            if r.runtime.is_some() {
                format!("{}/{}", r.fan_ended, r.fan_frames_expected)
            } else {
                String::from("-")
            }
        );
    }
    println!();
    let mut all_met = true;
    for r in runs.iter().filter(|r| r.runtime.is_some()) {
        let name = runtime_name(r.runtime);
        let complete = r.established == r.conns && r.closed_early == 0;
        let mem_ok = complete && r.kib_per_conn() <= TARGET_KIB_PER_CONN;
        let cpu_ok = complete && r.idle_cpu_percent <= TARGET_IDLE_CPU_PERCENT;
        all_met &= mem_ok && cpu_ok;
        println!(
            "target    weir ({name}) ≤ {TARGET_KIB_PER_CONN} KiB per connection at {} connections with heartbeats: \
             {:.2} KiB → {}",
            args.conns,
            r.kib_per_conn(),
            if mem_ok { "met" } else { "NOT met" }
        );
        println!(
            "target    weir ({name}) idle CPU ≤ {TARGET_IDLE_CPU_PERCENT} % of one core with heartbeats: {:.2} % → {}",
            r.idle_cpu_percent,
            if cpu_ok { "met" } else { "NOT met" }
        );
        if r.closed_early + r.failed > 0 {
            println!(
                "warning   weir ({name}): {} failed, {} closed during the run",
                r.failed, r.closed_early
            );
        }
    }
    let params = json!({
        "conns": args.conns,
        "fanout": args.fanout,
        "chunks": args.chunks,
        "idle_secs": args.idle_secs,
        "settle_secs": args.settle_secs,
        "source_ips": cli.source_ips,
        "concurrency": cli.concurrency,
    });
    let mut out = env.result_json("c100k", &cli.rt, params);
    out["results"] = runs
        .iter()
        .map(|r| {
            json!({
                "server": r.server,
                "runtime": r.runtime.map(Runtime::name),
                "conns": r.conns,
                "established": r.established,
                "failed": r.failed,
                "closed_early": r.closed_early,
                "connect_secs": r.connect_secs,
                "connects_per_sec": r.connect_rate(),
                "rss_before_kib": r.rss_before_kib,
                "rss_after_kib": r.rss_after_kib,
                "kib_per_conn": r.kib_per_conn(),
                "kernel_tcp_kib_per_conn": r.kernel_kib_per_conn(),
                "idle_cpu_percent": r.idle_cpu_percent,
                "fan_latency_p50_ms": r.ms(50.0),
                "fan_latency_p99_ms": r.ms(99.0),
                "fan_latency_max_ms": r.ms(100.0),
                "fan_frames": r.latencies.len(),
                "fan_clients_ended": r.fan_ended,
            })
        })
        .collect();
    out["target_met"] = json!(all_met);
    println!("{out}");
}

/// What each fan client reports: chunk latencies (ns), and whether it saw
/// the `end`.
type FanLog = Arc<Mutex<(Vec<u64>, usize)>>;

async fn one(
    cli: &Cli,
    args: &C100kArgs,
    env: &Env,
    server: Server,
    name: &'static str,
    runtime: Option<Runtime>,
    fanout: usize,
) -> Res<Run> {
    let n = args.conns;
    let weir = runtime.is_some();
    sleep(Duration::from_millis(500)).await;
    let mut run = Run {
        server: name,
        runtime,
        conns: n,
        rss_before_kib: server.status_kib("VmRSS")?,
        tcp_mem_before: tcp_sockstat().map_or(0, |s| s.1),
        fan_frames_expected: fanout,
        ..Run::default()
    };
    let tally = Arc::new(Tally::default());
    let gate = Arc::new(Semaphore::new(cli.concurrency.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (go_tx, go_rx) = watch::channel(false);
    let log: FanLog = Arc::default();
    let mut clients = JoinSet::new();
    let started = Instant::now();
    for i in 0..n {
        // The last `fanout` clients share conversation `fan`.
        let fan = weir && i >= n - fanout;
        let path = match (weir, fan) {
            (false, _) => String::from("/"),
            (true, false) => format!("/v1/ws?session_id=s{i}&user_id=u{i}"),
            (true, true) => String::from("/v1/ws?session_id=fan&user_id=fan"),
        };
        let (addr, src) = (server.addr, source_ip(i, cli.source_ips));
        let (gate, tally, mut stop, mut go, log) = (
            gate.clone(),
            tally.clone(),
            stop_rx.clone(),
            go_rx.clone(),
            log.clone(),
        );
        let asker = fan && i == n - fanout;
        clients.spawn(async move {
            let Ok(permit) = gate.acquire_owned().await else {
                return;
            };
            let mut ws = match connect(addr, src, &path, weir).await {
                Ok(ws) => ws,
                Err(e) => return tally.fail(&e),
            };
            drop(permit);
            tally.ready.fetch_add(1, Relaxed);
            let mut lat = Vec::new();
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    r = go.changed(), if asker && r_ok(&go) => {
                        let _ = r;
                        let chat = json!({"type": "chat", "content": "fan out"}).to_string();
                        let _ = ws.send(Message::text(chat)).await;
                    }
                    msg = ws.next() => match msg {
                        Some(Ok(Message::Text(text))) if fan => {
                            let now = unix_ns();
                            let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                            match v["type"].as_str() {
                                Some("chunk") => {
                                    if let Some(ts) = v["ts_ns"].as_u64() {
                                        lat.push(now.saturating_sub(ts));
                                    }
                                }
                                Some("end") => {
                                    let mut l = log.lock().unwrap_or_else(PoisonError::into_inner);
                                    l.0.append(&mut lat);
                                    l.1 += 1;
                                }
                                _ => {}
                            }
                        }
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
    wait_all(&tally, n, started + Duration::from_secs(600)).await;
    run.connect_secs = started.elapsed().as_secs_f64();
    run.established = tally.ready.load(Relaxed);
    run.failed =
        tally.failed.load(Relaxed) + n.saturating_sub(run.established + tally.failed.load(Relaxed));
    sleep(Duration::from_secs_f64(args.settle_secs.max(0.0))).await;
    run.rss_after_kib = server.status_kib("VmRSS")?;
    run.tcp_mem_after = tcp_sockstat().map_or(0, |s| s.1);
    // Idle: every connection open, nothing sent but the heartbeats.
    let (t0, c0) = (Instant::now(), server.cpu_ticks());
    sleep(Duration::from_secs_f64(args.idle_secs.max(1.0))).await;
    let ticks = server.cpu_ticks().saturating_sub(c0) as f64;
    run.idle_cpu_percent = ticks / env.clk_tck / t0.elapsed().as_secs_f64() * 100.0;
    println!(
        "{name:<8} {:<7} {}/{n} established in {:.1} s · VmRSS {} → {} KiB · idle CPU {:.2} % · load average {}{}",
        runtime_name(runtime),
        run.established,
        run.connect_secs,
        run.rss_before_kib,
        run.rss_after_kib,
        run.idle_cpu_percent,
        weir_bench::load_average(),
        tally.first_error().map(|e| format!(" · first error: {e}")).unwrap_or_default()
    );
    if weir && fanout > 0 {
        let _ = go_tx.send(true);
        // The reply streams at 100 chunks/s: its length plus a margin.
        let deadline = Instant::now() + Duration::from_secs(u64::from(args.chunks) / 100 + 30);
        while Instant::now() < deadline {
            if log.lock().unwrap_or_else(PoisonError::into_inner).1 >= fanout {
                break;
            }
            sleep(Duration::from_millis(50)).await;
        }
        let mut l = log.lock().unwrap_or_else(PoisonError::into_inner);
        run.fan_ended = l.1;
        run.latencies = std::mem::take(&mut l.0);
        run.latencies.sort_unstable();
    }
    run.closed_early = tally.closed_early.load(Relaxed);
    server.stop().await;
    let _ = stop_tx.send(true);
    clients.shutdown().await;
    Ok(run)
}

/// The `go` signal has not come yet (the guard of the asker's branch).
fn r_ok(go: &watch::Receiver<bool>) -> bool {
    !*go.borrow()
}
