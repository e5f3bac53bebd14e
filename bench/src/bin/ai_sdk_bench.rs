//! `ai_sdk_bench`: the Vercel AI SDK's transports (`/v1/ai-sdk/ws` and the
//! event stream of `POST /v1/ai-sdk/chat`) against the native `/v1/ws`, one
//! `weir` process over loopback, in the same run (issue 14).
//!
//! `ai_sdk_bench --chunks M --rate R --conns K --rounds N`: one node with
//! `--chunk-timestamps`, demo replies of M chunks at up to R per second.
//! Each round watches one reply per transport with K fresh connections of
//! that kind only, in turn (native, socket, event stream):
//!
//! - native: K `/v1/ws` connections, one of them sends the chat;
//! - socket: K `/v1/ai-sdk/ws` sockets, one sends it (`send`), the others
//!   `resume` it once it streams (the SDK's `reconnectToStream`);
//! - event stream: one `POST /v1/ai-sdk/chat`, then K − 1
//!   `GET /v1/ai-sdk/chat/{id}/stream`.
//!
//! Per transport: the server's CPU time over the reply (from before the
//! send until every connection has the reply's end) per chunk, and the
//! time from the generator to the client of every chunk (receive time −
//! its `ts_ns`, the producer's append time: on `chunk` frames natively, as
//! `providerMetadata.weir.ts_ns` of each `text-delta` in the AI SDK's), counting only
//! chunks produced after the last connection joined (a resume's catch-up
//! is not live). Target: each dialect's CPU per chunk within
//! `--max-ratio` (1.5) × native, summed over the rounds. `met`/`NOT met`
//! per line, the JSON line last. See docs/benchmarks.md.
#![forbid(unsafe_code)]
#![allow(
    clippy::print_stdout,
    reason = "printing the figures is this tool's job"
)]

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde_json::{json, Value};
use tokio::task::JoinSet;
use weir_bench::same_run::{cpu_us_per_chunk, met, node_args, percentiles_ms, SameRunOpts};
use weir_bench::{cpu_ticks, number_after, scan_chunk, unix_ns, Runtime};
use weir_tests::tungstenite::Message;
use weir_tests::{AiSdkSocket, SseStream, WeirProcess};

#[derive(Debug, Parser)]
#[command(name = "ai_sdk_bench", version)]
struct Cli {
    #[command(flatten)]
    same_run: SameRunOpts,
    /// Chunks of each reply.
    #[arg(long, default_value_t = 2000)]
    chunks: u32,
    /// Chunks per second of the demo generator.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Connections of each kind.
    #[arg(long, default_value_t = 10)]
    conns: usize,
    /// Rounds (one reply per transport each).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// The target: a dialect's CPU per chunk at most this many times
    /// native.
    #[arg(long, default_value_t = 1.5)]
    max_ratio: f64,
}

/// A transport: its route, as printed, and its key in the JSON line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kind {
    route: &'static str,
    key: &'static str,
}

const NATIVE: Kind = Kind {
    route: "/v1/ws",
    key: "native",
};
const SOCKET: Kind = Kind {
    route: "/v1/ai-sdk/ws",
    key: "ai_sdk_ws",
};
const EVENT_STREAM: Kind = Kind {
    route: "/v1/ai-sdk/chat (SSE)",
    key: "ai_sdk_sse",
};

/// What one reply over one transport cost and took.
#[derive(Debug, Default)]
struct Tally {
    ticks: u64,
    chunks: u32,
    /// Generator → client of each live chunk frame (a native frame may
    /// carry several chunks: one sample, its last chunk's time).
    latency: Vec<Duration>,
}

/// One chunk received at `now_ns` with `ts_ns`: its latency, when it was
/// produced after `joined_ns`.
fn live(latency: &mut Vec<Duration>, joined_ns: u64, ts_ns: Option<u64>, now_ns: u64) {
    if let Some(ts) = ts_ns.filter(|ts| *ts >= joined_ns) {
        latency.push(Duration::from_nanos(now_ns.saturating_sub(ts)));
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let same_run = cli.same_run.clone();
    same_run.run("ai_sdk_bench", Duration::from_secs(1800), |runtime| {
        bench(runtime, cli)
    })
}

async fn bench(runtime: Runtime, cli: Cli) -> Value {
    let (c, r) = (cli.chunks.to_string(), cli.rate.to_string());
    let args = node_args(&[
        "--demo-chunks",
        c.as_str(),
        "--demo-rate",
        r.as_str(),
        "--chunk-timestamps",
    ]);
    let node = WeirProcess::start_on(runtime, &args);
    // The order each round runs them in.
    let mut tallies: Vec<(Kind, Tally)> = [NATIVE, SOCKET, EVENT_STREAM]
        .into_iter()
        .map(|k| (k, Tally::default()))
        .collect();
    for round in 0..cli.rounds {
        for (kind, tally) in &mut tallies {
            let chat = format!("bench-{}-{round}", kind.key);
            let (ticks, latency) = if *kind == NATIVE {
                native(&node, &chat, cli.conns).await
            } else if *kind == SOCKET {
                socket(&node, &chat, cli.conns).await
            } else {
                event_stream(&node, &chat, cli.conns).await
            };
            tally.ticks += ticks;
            tally.chunks += cli.chunks;
            tally.latency.extend(latency);
        }
    }
    println!(
        "reply: {} chunks at up to {}/s; {} fresh connections of each kind per reply; {} rounds",
        cli.chunks, cli.rate, cli.conns, cli.rounds
    );
    let native_us = cpu_us_per_chunk(tallies[0].1.ticks, tallies[0].1.chunks);
    let mut out = json!({
        "bench": "ai_sdk",
        "chunks": cli.chunks,
        "rate": cli.rate,
        "conns": cli.conns,
        "rounds": cli.rounds,
        "max_ratio": cli.max_ratio,
    });
    let mut all_met = true;
    for (kind, tally) in &mut tallies {
        let us = cpu_us_per_chunk(tally.ticks, tally.chunks);
        let (p50, p99) = percentiles_ms(&mut tally.latency);
        let ratio = us / native_us.max(f64::MIN_POSITIVE);
        let verdict = if *kind == NATIVE {
            String::from("baseline")
        } else {
            let ok = ratio <= cli.max_ratio;
            all_met &= ok;
            format!(
                "{ratio:.2}x native, target <= {}x: {}",
                cli.max_ratio,
                met(ok)
            )
        };
        println!(
            "{:<22} server CPU per chunk ({} conns) {us:>8.1} µs ({verdict}); \
             generator -> client p50 {p50:.2} ms, p99 {p99:.2} ms ({} samples)",
            kind.route,
            cli.conns,
            tally.latency.len()
        );
        out[kind.key] = json!({
            "cpu_us_per_chunk": us,
            "ratio_vs_native": ratio,
            "latency_ms": {"p50": p50, "p99": p99, "samples": tally.latency.len()},
        });
    }
    out["met"] = json!(all_met);
    out
}

/// The server's CPU ticks so far.
fn ticks(node: &WeirProcess) -> u64 {
    cpu_ticks(Some(node.pid())).unwrap_or(0)
}

/// Reads every connection to the reply's end with `reader` (a task each):
/// the server's CPU ticks since `before` and every latency.
async fn read_all<C, F, Fut>(
    node: &WeirProcess,
    before: u64,
    conns: Vec<C>,
    reader: F,
) -> (u64, Vec<Duration>)
where
    F: Fn(C, u64) -> Fut,
    Fut: std::future::Future<Output = Vec<Duration>> + Send + 'static,
{
    let joined = unix_ns();
    let mut tasks = JoinSet::new();
    for c in conns {
        tasks.spawn(reader(c, joined));
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.expect("a client task"));
    }
    (ticks(node).saturating_sub(before), all)
}

/// Reads a native connection's frames to the reply's `end`.
async fn native_reader(mut c: weir_tests::Client, joined: u64) -> Vec<Duration> {
    let mut latency = Vec::new();
    loop {
        let Some(m) = c.next_message().await else {
            panic!("a native connection closed");
        };
        let Message::Text(t) = m else { continue };
        let now = unix_ns();
        if scan_chunk(t.as_str()).is_some() {
            live(
                &mut latency,
                joined,
                number_after(t.as_str(), r#""ts_ns":"#),
                now,
            );
        } else if t.as_str().starts_with(r#"{"type":"end""#) {
            return latency;
        }
    }
}

async fn native(node: &WeirProcess, chat: &str, conns: usize) -> (u64, Vec<Duration>) {
    let q = format!("session_id={chat}&user_id=demo_user");
    let mut clients = Vec::with_capacity(conns);
    for _ in 0..conns {
        clients.push(node.ws(&q).await);
    }
    let before = ticks(node);
    clients[0].chat("a reply to measure", "r1").await;
    read_all(node, before, clients, native_reader).await
}

/// Reads a socket's frames of `request` to its `end`.
async fn socket_reader(mut s: AiSdkSocket, joined: u64) -> Vec<Duration> {
    let mut latency = Vec::new();
    loop {
        let t = s
            .next_text()
            .await
            .unwrap_or_else(|code| panic!("an AI SDK socket closed ({code})"));
        let now = unix_ns();
        if t.starts_with(r#"{"type":"chunk""#) {
            live(&mut latency, joined, number_after(&t, r#""ts_ns":"#), now);
        } else if t.starts_with(r#"{"type":"end""#) {
            return latency;
        } else if !t.starts_with(r#"{"type":"start""#) {
            panic!("an AI SDK socket got {t}");
        }
    }
}

async fn socket(node: &WeirProcess, chat: &str, conns: usize) -> (u64, Vec<Duration>) {
    let mut sockets = Vec::with_capacity(conns);
    for _ in 0..conns {
        sockets.push(AiSdkSocket::connect(node, "", None).await);
    }
    let before = ticks(node);
    sockets[0].send_chat("r1", chat, "a reply to measure").await;
    // Once it streams, the others resume it.
    loop {
        let f = sockets[0].next_frame().await;
        if f["type"] == "chunk" {
            break;
        }
    }
    for (i, s) in sockets.iter_mut().enumerate().skip(1) {
        s.resume(&format!("q{i}"), chat, None).await;
        let f = s.next_frame().await;
        assert_eq!(f["type"], "start", "the resume found the reply: {f}");
    }
    read_all(node, before, sockets, socket_reader).await
}

/// Reads an event stream to its `[DONE]`.
async fn sse_reader(mut s: SseStream, joined: u64) -> Vec<Duration> {
    let mut latency = Vec::new();
    loop {
        let Some(e) = s.next_event().await else {
            panic!("an event stream ended without [DONE]");
        };
        let now = unix_ns();
        if e.data == "[DONE]" {
            return latency;
        }
        live(
            &mut latency,
            joined,
            number_after(&e.data, r#""ts_ns":"#),
            now,
        );
    }
}

async fn event_stream(node: &WeirProcess, chat: &str, conns: usize) -> (u64, Vec<Duration>) {
    let before = ticks(node);
    let first = SseStream::post_chat(node, chat, "a reply to measure", &[], None).await;
    assert_eq!(first.status, 200, "{}", first.head);
    let mut streams = vec![first];
    for _ in 1..conns {
        let s = SseStream::resume(node, chat, None, &[]).await;
        assert_eq!(s.status, 200, "the resume found the reply: {}", s.head);
        streams.push(s);
    }
    read_all(node, before, streams, sse_reader).await
}
