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
//!
//! `--weir PATH` names the binary (default: `weir` next to this executable,
//! so build with `cargo build --release -p weir-server -p weir-bench`).
//! Every wait is bounded. See docs/benchmarks.md.
#![forbid(unsafe_code)]
#![allow(
    clippy::print_stdout,
    reason = "printing the figures is this tool's job"
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use weir_tests::{Client, Frame, RedisServer, WeirProcess};

#[derive(Debug, Parser)]
#[command(name = "cluster_bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// The weir binary [default: `weir` next to this executable]
    #[arg(long, global = true, value_name = "PATH")]
    weir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let weir = cli.weir.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("weir")))
            .unwrap_or_else(|| PathBuf::from("weir"))
    });
    // WeirProcess runs $WEIR_BIN.
    std::env::set_var("WEIR_BIN", &weir);
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
    let redis = RedisServer::start();
    println!(
        "# cluster_bench: weir {} on redis-server port {}, {}",
        weir.display(),
        redis.port(),
        weir_bench::load_average()
    );
    match cli.command {
        Cmd::Cancel { cancels } => rt.block_on(cancel(&redis, cancels)),
        Cmd::Throughput {
            convs,
            chunks,
            rounds,
        } => rt.block_on(throughput(&redis, convs, chunks, rounds)),
    }
    ExitCode::SUCCESS
}

fn nodes(redis: &RedisServer, chunks: u32, rate: &str) -> (WeirProcess, WeirProcess) {
    let url = redis.url();
    let chunks = chunks.to_string();
    let start = |id: &str| {
        WeirProcess::start(&[
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
        ])
    };
    (start("node-a"), start("node-b"))
}

async fn cancel(redis: &RedisServer, n: usize) {
    let (a, b) = nodes(redis, 100_000, "2000");
    let mut on_a = a.ws("session_id=bench&user_id=u").await;
    let mut on_b = b.ws("session_id=bench&user_id=u").await;
    let mut to_result = Vec::with_capacity(n);
    let mut to_quiet_a = Vec::with_capacity(n);
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
    let metrics = b.metrics().await;
    println!("cancels: {n}");
    println!(
        "cancel sent to B -> cancel_result on B: {}",
        summary(&mut to_result)
    );
    println!(
        "cancel sent to B -> last chunk of the reply on A's client: {}",
        summary(&mut to_quiet_a)
    );
    println!(
        "B's weir_cancel_quiet_seconds: count {} sum {:.3}s (mean {:.3} ms)",
        metrics.get("weir_cancel_quiet_seconds_count"),
        metrics.get("weir_cancel_quiet_seconds_sum"),
        1000.0 * metrics.get("weir_cancel_quiet_seconds_sum")
            / metrics.get("weir_cancel_quiet_seconds_count").max(1.0)
    );
}

async fn throughput(redis: &RedisServer, convs: usize, chunks: u32, rounds: usize) {
    // As fast as the generator goes.
    let (a, b) = nodes(redis, chunks, "1000000000");
    let mut pairs = Vec::new();
    for c in 0..convs {
        let q = format!("session_id=t{c}&user_id=u{c}");
        let producer = a.ws(&q).await;
        let viewer = b.ws(&q).await;
        pairs.push((producer, viewer));
    }
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
    let span = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f),
        _ => started.elapsed(),
    };
    println!(
        "conversations: {convs}, replies each: {rounds}, chunks per reply: {chunks}; chunks received on B: {received}"
    );
    println!(
        "chunks/s through Redis (B's viewers, first to last chunk): {:.0}",
        received as f64 / span.as_secs_f64()
    );
    println!(
        "cross-node delivery delay (A's client -> B's client, per chunk): {}",
        summary(&mut delays)
    );
    let m = b.metrics().await;
    println!(
        "B: merged frames {}, notices dropped {}",
        m.get("weir_merged_frames_total"),
        m.get("weir_notices_dropped_total")
    );
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

fn summary(samples: &mut [Duration]) -> String {
    if samples.is_empty() {
        return "no samples".to_owned();
    }
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    format!(
        "n {} p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms max {:.2} ms",
        samples.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    )
}
