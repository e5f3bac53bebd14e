//! `weir_bench fanout`: chunks per second when one reply fans out to N
//! connections.

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use clap::Args;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout_at, Instant};
use weir_bench::{
    cpu_ticks, frame_type, machine_busy_ticks, ratio, scan_chunk, times, Runtime, SERVER_MAX_FRAME,
    SERVER_READ_BUFFER, SERVER_WRITE_BUFFER,
};
use weir_core::demo::DemoText;

use crate::client::{connect, source_ip, wait_all, Tally, Ws};
use crate::server::{runtime_name, server_label, Server};
use crate::setup::Env;
use crate::{Cli, Res};

/// The prompt of the fan-out reply (the demo text depends on it).
const PROMPT: &str = "bench fan-out";

#[derive(Debug, Args)]
pub(crate) struct FanoutArgs {
    /// Client connections, all on one conversation
    #[arg(long, default_value_t = 1000)]
    pub(crate) conns: usize,
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

pub(crate) async fn fanout(
    cli: &Cli,
    args: &FanoutArgs,
    weir: &Path,
    bare: &Path,
    env: &Env,
) -> Res<()> {
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
