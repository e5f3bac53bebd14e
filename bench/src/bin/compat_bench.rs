//! `compat_bench`: the seed front end's surface (`/ws/chat`, `/api/*`)
//! against the native one, real `weir` processes over loopback, each line
//! `met`/`NOT met` against a target or a same-run baseline, a JSON line last.
//!
//! - `compat_bench cancel --cancels N`: two nodes on one `redis-server`. The
//!   page's WebSocket (`/ws/chat`) on node A; its send (`POST /api/chat`) and
//!   its Cancel (`POST /api/cancel`, no user: found by session and id) on
//!   node B, once the page has the reply's id from a frame. Per cancel: the
//!   time from sending the POST to the page's final frame
//!   (`is_complete: true`). Baseline, same run: the native cancel
//!   (`POST /v1/sessions/S/cancel` on B → `end` on a `/v1/ws` client on A).
//!   Target: p99 ≤ 100 ms.
//! - `compat_bench bytes --chunks M --rate R --conns K`: one node. K page
//!   connections (`/ws/chat`) and K native ones (`/v1/ws`) watch the same
//!   M-chunk reply; bytes received per connection, each side. Then the same
//!   reply watched by K native connections only, and by K page connections
//!   only: the server's CPU time per chunk of each. Target: page bytes ≤
//!   `--max-ratio` (default 4) × native bytes.
//!
//! `--weir PATH` (default: `weir` next to this executable). Every wait is
//! bounded; the processes are killed when the run ends. See
//! docs/benchmarks.md.
#![forbid(unsafe_code)]
#![allow(
    clippy::print_stdout,
    reason = "printing the figures is this tool's job"
)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use weir_bench::same_run::{cpu_us_per_chunk, met, node_args, percentiles_ms, SameRunOpts};
use weir_bench::{cpu_ticks, Runtime};
use weir_tests::{CompatClient, RedisServer, WeirProcess};

#[derive(Debug, Parser)]
#[command(name = "compat_bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    #[command(flatten)]
    same_run: SameRunOpts,
}

#[derive(Debug, Clone, Subcommand)]
enum Cmd {
    /// One-click cancel from another node.
    Cancel {
        /// How many replies to cancel.
        #[arg(long, default_value_t = 200)]
        cancels: usize,
    },
    /// Bytes per connection and CPU per chunk, `/ws/chat` against `/v1/ws`.
    Bytes {
        /// Chunks of the reply.
        #[arg(long, default_value_t = 2000)]
        chunks: u32,
        /// Chunks per second of the demo generator.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Connections of each kind.
        #[arg(long, default_value_t = 20)]
        conns: usize,
        /// The target: page bytes at most this many times the native bytes.
        #[arg(long, default_value_t = 4.0)]
        max_ratio: f64,
    },
}

const S: &str = "session_1796272685223";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command;
    cli.same_run.run(
        "compat_bench",
        Duration::from_secs(900),
        |runtime| async move {
            match command {
                Cmd::Cancel { cancels } => cancel(runtime, cancels).await,
                Cmd::Bytes {
                    chunks,
                    rate,
                    conns,
                    max_ratio,
                } => bytes(runtime, chunks, rate, conns, max_ratio).await,
            }
        },
    )
}

async fn post(node: &WeirProcess, path: &str, body: &Value) -> Value {
    let r = node.http("POST", path, &body.to_string()).await;
    assert!(r.status < 300, "{path}: {r:?}");
    r.json()
}

async fn cancel(runtime: Runtime, n: usize) -> Value {
    let redis = RedisServer::start();
    let args = node_args(&[]);
    let pace = (100_000, 2_000);
    let a = WeirProcess::start_on_redis(runtime, &redis, "node-a", pace, &args);
    let b = WeirProcess::start_on_redis(runtime, &redis, "node-b", pace, &args);
    let mut page = a.compat_ws(S).await;
    page.handshake().await;
    let mut native = a.ws(&format!("session_id={S}&user_id=demo_user")).await;
    let (mut compat_ms, mut native_ms) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        // The page's way: send and Cancel over HTTP on B, stream on A.
        let body =
            json!({"session_id": S, "message": format!("cancel me {i}"), "user_id": "demo_user"});
        let mid = post(&b, "/api/chat", &body).await["message_id"]
            .as_str()
            .expect("message_id")
            .to_owned();
        loop {
            let f = page.next_json().await;
            if f["data"]["message_id"] == mid.as_str() {
                break;
            }
        }
        let sent = Instant::now();
        let answer = post(
            &b,
            "/api/cancel",
            &json!({"session_id": S, "message_id": mid}),
        )
        .await;
        assert_eq!(answer["status"], "cancelled", "one click: {answer}");
        page.until_final(&mid).await;
        compat_ms.push(sent.elapsed());
        native.until_end_of(&mid).await;
        // The native way, same nodes: POST on B, `end` on A.
        native.chat(&format!("native {i}"), &format!("r{i}")).await;
        let (_, ack) = native.next_of("ack").await;
        let mid = ack.str("message_id").to_owned();
        native.until_seq(Some(&mid), 1).await;
        let sent = Instant::now();
        let path = format!("/v1/sessions/{S}/cancel?user_id=demo_user");
        let answer = post(&b, &path, &json!({"message_id": mid})).await;
        assert_eq!(answer["status"], "cancelled", "{answer}");
        native.until_end_of(&mid).await;
        native_ms.push(sent.elapsed());
        loop {
            let f = page.next_json().await;
            if f["data"]["message_id"] == mid.as_str() && f["data"]["is_complete"] == true {
                break;
            }
        }
    }
    let (c50, c99) = percentiles_ms(&mut compat_ms);
    let (n50, n99) = percentiles_ms(&mut native_ms);
    println!("cancels: {n} each way; page on node A, POSTs on node B");
    println!(
        "page: POST /api/cancel on B -> final frame on A: p50 {c50:.2} ms, p99 {c99:.2} ms \
         (target p99 <= 100 ms: {})",
        met(c99 <= 100.0)
    );
    println!(
        "native baseline: POST /v1/sessions/S/cancel on B -> end on A: p50 {n50:.2} ms, p99 {n99:.2} ms \
         (page p99 within 2x of native + 10 ms: {})",
        met(c99 <= 2.0 * n99 + 10.0)
    );
    json!({
        "bench": "cancel",
        "cancels": n,
        "page_cancel_to_final_ms": {"p50": c50, "p99": c99},
        "native_cancel_to_end_ms": {"p50": n50, "p99": n99},
        "target_p99_ms": 100,
        "met": c99 <= 100.0,
    })
}

/// Text bytes of a `/ws/chat` connection until the final frame of `mid`.
async fn page_bytes(mut page: CompatClient, mid: String) -> u64 {
    let mut total = 0u64;
    loop {
        let text = page.next_text().await;
        total += text.len() as u64;
        let f: Value = serde_json::from_str(&text).unwrap_or_default();
        if f["data"]["message_id"] == mid.as_str() && f["data"]["is_complete"] == true {
            return total;
        }
    }
}

/// Text bytes of a `/v1/ws` connection until the `end` of `mid`.
async fn native_bytes(mut client: weir_tests::Client, mid: String) -> u64 {
    let mut total = 0u64;
    loop {
        let Some(m) = client.next_message().await else {
            panic!("the native connection closed");
        };
        if let weir_tests::tungstenite::Message::Text(t) = m {
            total += t.len() as u64;
            let f: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
            if f["type"] == "end" && f["message_id"] == mid.as_str() {
                return total;
            }
        }
    }
}

/// One reply watched by `pages` page and `natives` native connections: the
/// bytes each kind received (mean per connection) and the server's CPU
/// ticks meanwhile.
async fn one_reply(
    node: &WeirProcess,
    session: &str,
    pages: usize,
    natives: usize,
) -> (f64, f64, u64) {
    let q = format!("session_id={session}&user_id=demo_user");
    let mut page_conns = Vec::new();
    for _ in 0..pages {
        let mut p = node
            .try_compat_ws(&format!("{q}&token=dev-token"), &[])
            .await
            .expect("upgrades");
        p.handshake().await;
        page_conns.push(p);
    }
    let mut native_conns = Vec::new();
    for _ in 0..natives {
        native_conns.push(node.ws(&q).await);
    }
    let before = cpu_ticks(Some(node.pid())).unwrap_or(0);
    let body = json!({"session_id": session, "message": "bytes", "user_id": "demo_user"});
    let mid = post(node, "/api/chat", &body).await["message_id"]
        .as_str()
        .expect("message_id")
        .to_owned();
    let mut tasks = tokio::task::JoinSet::new();
    for p in page_conns {
        let mid = mid.clone();
        tasks.spawn(async move { (true, page_bytes(p, mid).await) });
    }
    for c in native_conns {
        let mid = mid.clone();
        tasks.spawn(async move { (false, native_bytes(c, mid).await) });
    }
    let (mut page_total, mut native_total) = (0u64, 0u64);
    while let Some(done) = tasks.join_next().await {
        match done.expect("a client task") {
            (true, b) => page_total += b,
            (false, b) => native_total += b,
        }
    }
    let ticks = cpu_ticks(Some(node.pid()))
        .unwrap_or(0)
        .saturating_sub(before);
    let mean = |total: u64, n: usize| if n == 0 { 0.0 } else { total as f64 / n as f64 };
    (mean(page_total, pages), mean(native_total, natives), ticks)
}

async fn bytes(runtime: Runtime, chunks: u32, rate: u32, conns: usize, max_ratio: f64) -> Value {
    let (c, r) = (chunks.to_string(), rate.to_string());
    let mut args = vec!["--demo-chunks", c.as_str(), "--demo-rate", r.as_str()];
    args.extend(node_args(&[]));
    let node = WeirProcess::start_on(runtime, &args);
    let (page, native, _) = one_reply(&node, "bytes_both", conns, conns).await;
    let ratio = page / native.max(1.0);
    let (_, _, native_ticks) = one_reply(&node, "cpu_native", 0, conns).await;
    let (_, _, page_ticks) = one_reply(&node, "cpu_page", conns, 0).await;
    let (native_us, page_us) = (
        cpu_us_per_chunk(native_ticks, chunks),
        cpu_us_per_chunk(page_ticks, chunks),
    );
    println!("reply: {chunks} chunks at up to {rate}/s; {conns} connections of each kind");
    println!(
        "bytes per connection: /ws/chat {page:.0}, /v1/ws {native:.0}: {ratio:.2}x \
         (target <= {max_ratio}x: {})",
        met(ratio <= max_ratio)
    );
    println!(
        "server CPU per chunk ({conns} connections): /ws/chat {page_us:.1} µs, /v1/ws {native_us:.1} µs \
         ({:.2}x native)",
        page_us / native_us.max(f64::MIN_POSITIVE)
    );
    json!({
        "bench": "bytes",
        "chunks": chunks,
        "rate": rate,
        "conns": conns,
        "page_bytes_per_conn": page,
        "native_bytes_per_conn": native,
        "ratio": ratio,
        "max_ratio": max_ratio,
        "met": ratio <= max_ratio,
        "cpu_us_per_chunk": {"page": page_us, "native": native_us},
    })
}
