//! `weir_bench idle`: server RSS per idle WebSocket connection.

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, Instant};
use weir_bench::{
    ratio, times, Runtime, SERVER_MAX_FRAME, SERVER_READ_BUFFER, SERVER_WRITE_BUFFER,
};

use crate::client::{connect, source_ip, wait_all, Tally};
use crate::server::{
    runtime_name, server_label, Server, WEIR_HEARTBEAT_SECS, WEIR_IDLE_TIMEOUT_SECS,
};
use crate::setup::Env;
use crate::{Cli, Res};

#[derive(Debug, Args)]
pub(crate) struct IdleArgs {
    /// Connections held open per server
    #[arg(long, default_value_t = 10_000)]
    pub(crate) conns: usize,
    /// Pause between "every connection established" and the RSS reading, seconds
    #[arg(long, default_value_t = 2.0)]
    settle_secs: f64,
    /// Skip the weir variant with every connection in one conversation
    #[arg(long)]
    skip_one_conversation: bool,
}

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

pub(crate) async fn idle(
    cli: &Cli,
    args: &IdleArgs,
    weir: &Path,
    bare: &Path,
    env: &Env,
) -> Res<()> {
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
