//! `weir_bench stalled`: weir's memory while a long reply fans out to N
//! connections of which some have stopped reading, against the same run with
//! every connection reading (issue 17 point 4: goal ≤ +10 % peak RSS with
//! 10 % stalled).
//!
//! Each run is a fresh `weir serve`: N clients on one conversation, of which
//! `stalled` connect with a 4 KiB receive buffer, read `hello` and `history`
//! and then nothing; the others read the whole reply. The server's `VmRSS` is
//! sampled every 50 ms from the `chat` to the last reader's `end`; the figure
//! is the peak of those samples (and `VmHWM`, the process's own peak).

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use clap::Args;
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout_at, Instant};
use weir_bench::{frame_type, ratio, scan_chunk, times, Runtime};

use crate::client::{connect, connect_small_buffer, source_ip, wait_all, Tally, Ws};
use crate::server::{runtime_name, server_label, Server};
use crate::setup::Env;
use crate::{Cli, Res};

/// The prompt of the reply (the demo text depends on it).
const PROMPT: &str = "bench stalled readers";
/// The WebSocket path of every client: one conversation.
const PATH: &str = "/v1/ws?session_id=stall&user_id=bench";
/// The receive buffer of a stalled client's socket.
const STALLED_RCVBUF: u32 = 4096;
/// The goal: peak RSS with stalled readers at most this times the peak without.
const GOAL: f64 = 1.10;

#[derive(Debug, Args)]
pub(crate) struct StalledArgs {
    /// Client connections, all on one conversation
    #[arg(long, default_value_t = 1000)]
    pub(crate) conns: usize,
    /// Percentage of the connections that stop reading
    #[arg(long, default_value_t = 10)]
    stalled_percent: usize,
    /// Chunks in the reply
    #[arg(long, default_value_t = 20_000)]
    chunks: u32,
    /// Chunks per second the reply is produced at (weir --demo-rate)
    #[arg(long, default_value_t = 4_000.0)]
    rate: f64,
    /// weir --stall-timeout, seconds [default: weir's]
    #[arg(long)]
    stall_timeout: Option<f64>,
}

#[derive(Debug)]
struct StalledResult {
    runtime: Runtime,
    stalled: usize,
    /// Readers that got every chunk in order and the `end`.
    complete: usize,
    readers: usize,
    /// Close codes the readers got instead of an `end`.
    closes: Vec<u16>,
    before_kib: u64,
    peak_kib: u64,
    hwm_kib: u64,
    reply_secs: f64,
}

pub(crate) async fn stalled(cli: &Cli, args: &StalledArgs, weir: &Path, env: &Env) -> Res<()> {
    env.print("stalled");
    let stalled = args.conns * args.stalled_percent.min(100) / 100;
    let (chunks, rate) = (args.chunks.to_string(), args.rate.to_string());
    let mut extra = vec![
        "--demo-chunks".to_owned(),
        chunks.clone(),
        "--demo-rate".to_owned(),
        rate.clone(),
    ];
    if let Some(s) = args.stall_timeout {
        extra.extend(["--stall-timeout".to_owned(), s.to_string()]);
    }
    println!(
        "params    conns {} on one conversation · stalled {stalled} ({} %, {STALLED_RCVBUF} B receive \
         buffer, not reading) · chunks {chunks} · rate {rate} chunks/s · weir {}",
        args.conns,
        args.stalled_percent,
        extra.join(" ")
    );
    println!();

    let mut results = Vec::new();
    for &runtime in cli.rt.runtimes() {
        for s in [0, stalled] {
            let server = Server::weir(weir, &cli.rt.weir_args(runtime), &extra).await?;
            results.push(run_one(cli, args, server, runtime, s).await?);
            sleep(Duration::from_secs(1)).await;
        }
    }

    println!();
    println!(
        "{:<7} {:>7} {:>9} {:>10} {:>10} {:>10} {:>9} {:>8}",
        "runtime", "stalled", "complete", "RSS before", "peak RSS", "VmHWM", "reply", "closes"
    );
    for r in &results {
        println!(
            "{:<7} {:>7} {:>5}/{:<3} {:>7} MiB {:>6} MiB {:>6} MiB {:>8.2}s {:>8}",
            r.runtime.name(),
            r.stalled,
            r.complete,
            r.readers,
            mib(r.before_kib),
            mib(r.peak_kib),
            mib(r.hwm_kib),
            r.reply_secs,
            r.closes.len()
        );
    }
    println!();
    let mut per_runtime = serde_json::Map::new();
    let mut all_met = true;
    for pair in results.chunks(2) {
        let [base, with] = pair else { continue };
        let peak = ratio(with.peak_kib as f64, base.peak_kib as f64);
        let whole = |r: &StalledResult| r.complete == r.readers;
        let met = whole(base) && whole(with) && peak.is_some_and(|p| p <= GOAL);
        all_met &= met;
        println!(
            "target    weir ({}) peak RSS with {} % stalled ≤ {GOAL}× with none: {} ({} → {} MiB) → {}",
            base.runtime.name(),
            args.stalled_percent,
            times(peak),
            mib(base.peak_kib),
            mib(with.peak_kib),
            if met { "met" } else { "NOT met" }
        );
        per_runtime.insert(
            base.runtime.name().to_owned(),
            json!({
                "peak_kib_none_stalled": base.peak_kib,
                "peak_kib_stalled": with.peak_kib,
                "hwm_kib_none_stalled": base.hwm_kib,
                "hwm_kib_stalled": with.hwm_kib,
                "peak_ratio": peak,
                "target_met": met,
            }),
        );
        for r in [base, with] {
            if !whole(r) {
                println!(
                    "warning   {} with {} stalled: {}/{} readers got the whole reply; closes {:?}",
                    server_label("weir", Some(r.runtime)),
                    r.stalled,
                    r.complete,
                    r.readers,
                    r.closes
                );
            }
        }
    }
    let mut out = env.json();
    out["bench"] = json!("stalled");
    out["params"] = json!({
        "conns": args.conns,
        "stalled": stalled,
        "chunks": args.chunks,
        "rate": args.rate,
        "stall_timeout": args.stall_timeout,
        "runtimes": cli.rt.runtimes().iter().map(|r| r.name()).collect::<Vec<_>>(),
    });
    out["results"] = results
        .iter()
        .map(|r| {
            json!({
                "runtime": r.runtime.name(),
                "stalled": r.stalled,
                "complete_readers": r.complete,
                "readers": r.readers,
                "closes": r.closes,
                "rss_before_kib": r.before_kib,
                "peak_rss_kib": r.peak_kib,
                "vm_hwm_kib": r.hwm_kib,
                "reply_secs": r.reply_secs,
            })
        })
        .collect();
    out["runtimes"] = serde_json::Value::Object(per_runtime);
    out["target_met"] = json!(all_met);
    println!("{out}");
    Ok(())
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// What one reader saw.
#[derive(Debug, Default)]
struct ReaderStats {
    chunks: u64,
    gaps: u64,
    ended: bool,
    close: Option<u16>,
}

async fn run_one(
    cli: &Cli,
    args: &StalledArgs,
    server: Server,
    runtime: Runtime,
    stalled: usize,
) -> Res<StalledResult> {
    let n = args.conns;
    let readers = n - stalled;
    let tally = Arc::new(Tally::default());
    let gate = Arc::new(Semaphore::new(cli.concurrency.max(1)));
    let deadline = Instant::now() + Duration::from_secs(cli.timeout_secs.min(600));
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let mut go_rx = Some(go_rx);
    let mut reading: JoinSet<Res<ReaderStats>> = JoinSet::new();
    let mut holding: JoinSet<Res<Ws>> = JoinSet::new();
    for i in 0..n {
        let (addr, src) = (server.addr, source_ip(i, cli.source_ips));
        let (gate, tally) = (gate.clone(), tally.clone());
        if i < readers {
            let go = if i == 0 { go_rx.take() } else { None };
            reading.spawn(async move {
                let permit = gate.acquire_owned().await?;
                let mut ws = connect(addr, src, PATH, true)
                    .await
                    .inspect_err(|e| tally.fail(e))?;
                drop(permit);
                tally.ready.fetch_add(1, Relaxed);
                if let Some(go) = go {
                    go.await?;
                    let chat =
                        format!(r#"{{"type":"chat","content":"{PROMPT}","request_id":"b"}}"#);
                    ws.send(Message::text(chat)).await?;
                }
                read(ws, deadline).await
            });
        } else {
            holding.spawn(async move {
                let permit = gate.acquire_owned().await?;
                let ws = connect_small_buffer(addr, src, PATH, STALLED_RCVBUF)
                    .await
                    .inspect_err(|e| tally.fail(e))?;
                drop(permit);
                tally.ready.fetch_add(1, Relaxed);
                Ok(ws)
            });
        }
    }
    let started = Instant::now();
    wait_all(&tally, n, started + Duration::from_secs(300)).await;
    let ready = tally.ready.load(Relaxed);
    if ready < n {
        return Err(format!(
            "weir ({}): only {ready}/{n} clients connected{}",
            runtime.name(),
            tally
                .first_error()
                .map(|e| format!(" (first error: {e})"))
                .unwrap_or_default()
        )
        .into());
    }
    // The stalled clients: held, never read again.
    let mut held = Vec::with_capacity(stalled);
    while let Some(joined) = holding.join_next().await {
        held.push(joined??);
    }
    sleep(Duration::from_millis(500)).await;
    let before_kib = server.status_kib("VmRSS")?;
    let t0 = Instant::now();
    go_tx.send(()).map_err(|_| "client 0 is gone")?;
    let mut peak_kib = before_kib;
    let mut stats = Vec::with_capacity(readers);
    loop {
        tokio::select! {
            joined = reading.join_next() => match joined {
                Some(joined) => stats.push(joined??),
                None => break,
            },
            () = sleep(Duration::from_millis(50)) => {
                peak_kib = peak_kib.max(server.status_kib("VmRSS")?);
            }
        }
    }
    let reply_secs = t0.elapsed().as_secs_f64();
    peak_kib = peak_kib.max(server.status_kib("VmRSS")?);
    let hwm_kib = server.status_kib("VmHWM")?;
    drop(held);
    server.stop().await;
    let m = u64::from(args.chunks);
    let r = StalledResult {
        runtime,
        stalled,
        complete: stats
            .iter()
            .filter(|s| s.ended && s.chunks == m && s.gaps == 0)
            .count(),
        readers,
        closes: stats.iter().filter_map(|s| s.close).collect(),
        before_kib,
        peak_kib,
        hwm_kib,
        reply_secs,
    };
    println!(
        "weir {:<5} {n} clients ({stalled} stalled) · {}/{readers} readers got all {m} chunks in {reply_secs:.2} s \
         · RSS {} MiB before, peak {} MiB",
        runtime_name(Some(runtime)),
        r.complete,
        mib(before_kib),
        mib(peak_kib)
    );
    Ok(r)
}

/// Reads one client's frames until the reply's `end`, a close or the
/// deadline, counting chunks (a merged frame counts every chunk it covers).
async fn read(mut ws: Ws, deadline: Instant) -> Res<ReaderStats> {
    let mut s = ReaderStats::default();
    let mut next = 1u64;
    loop {
        let msg = match timeout_at(deadline, ws.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(msg)) => msg?,
        };
        let frame = match msg {
            Message::Text(t) => t,
            Message::Close(close) => {
                s.close = Some(close.map_or(1005, |c| u16::from(c.code)));
                break;
            }
            _ => continue,
        };
        if let Some(span) = scan_chunk(frame.as_str()) {
            if span.from != next {
                s.gaps += 1;
            }
            next = span.seq + 1;
            s.chunks += span.chunks();
            continue;
        }
        if frame_type(frame.as_str()) == Some("end") {
            s.ended = true;
            break;
        }
    }
    Ok(s)
}
