//! `llm_bench`: time to first token and tokens per second of a real model,
//! straight from the model server and through weir, measured in the same
//! run, over loopback.
//!
//! It starts the model server (`scripts/llm-server.py` from the venv that
//! `scripts/llm-server.sh --setup-only` makes: llama.cpp's server with
//! SmolLM2-135M-Instruct) and `weir serve --generator openai` in front of
//! it, one weir process per runtime of `--runtime tokio|smol|both` (default
//! both), warms each path up, then takes turns, `--runs` times, between one
//! streamed request straight to the model server and one chat through each
//! weir (a fresh conversation each, so the prompt is one user turn either
//! way; the order rotates from run to run):
//!
//! - **direct**: `POST /v1/chat/completions` with `stream: true` over a raw
//!   HTTP/1.1 connection, its chunked body and SSE events decoded here;
//! - **weir**: a WebSocket `chat` on an already open connection; `chunk`s
//!   are the deltas.
//!
//! Each request has a prompt of its own (a numbered variant of the same
//! sentence, all of one length) so that llama.cpp's prompt cache favours
//! neither path. Both ask for `--max-tokens` tokens at temperature 0.
//!
//! Reported per path: time to first token (from just before the request is
//! written to the first non-empty delta) and the decode rate (deltas after
//! the first, divided by the time from the first to the last). Medians over
//! the runs, and each runtime's against direct's; every run is printed.
//! Figures, not a test: it fails nothing.
//!
//! ```sh
//! scripts/llm-server.sh --setup-only
//! cargo build --release -p weir-server -p weir-bench
//! target/release/llm_bench --runs 5 --max-tokens 64
//! ```
#![forbid(unsafe_code)]
#![allow(
    clippy::print_stdout,
    reason = "printing the figures is this tool's job"
)]

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use async_tungstenite::tokio::{client_async_with_config, TokioAdapter};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use clap::Parser;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{timeout, Instant};
use weir_bench::{client_ws_config, load_average, ratio, utc_now, Machine, Runtime, RuntimeOpts};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;
type Ws = WebSocketStream<TokioAdapter<TcpStream>>;

/// The longest one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
use weir_tests::llm::SEED;

/// Time to first token and tokens/s of a real model, direct vs through weir.
#[derive(Debug, Parser)]
#[command(name = "llm_bench", version)]
struct Cli {
    /// The weir binary [default: `weir` next to this executable]
    #[arg(long, value_name = "PATH")]
    weir: Option<PathBuf>,
    /// The model server's venv [default: .venv-llm at the workspace root, or $WEIR_LLM_VENV]
    #[arg(long, value_name = "PATH")]
    venv: Option<PathBuf>,
    /// Requests per path
    #[arg(long, default_value_t = 5)]
    runs: u32,
    /// max_tokens of each request
    #[arg(long, default_value_t = 64)]
    max_tokens: u32,
    /// The model server's CPU threads
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Upper bound of the whole run, seconds
    #[arg(long, default_value_t = 1800)]
    timeout_secs: u64,
    #[command(flatten)]
    rt: RuntimeOpts,
}

/// Where a request goes: straight to the model server, or through the weir
/// on a runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Direct,
    Weir(Runtime),
}

impl Route {
    /// `direct`, `weir/tokio`, `weir/smol`.
    fn name(self) -> String {
        match self {
            Self::Direct => String::from("direct"),
            Self::Weir(r) => format!("weir/{}", r.name()),
        }
    }
}

/// One measured request.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// From writing the request to the first non-empty delta.
    ttft: Duration,
    /// From the first delta to the last.
    decode: Duration,
    /// Non-empty deltas received.
    deltas: u64,
    /// Completion tokens as the model server counted them.
    tokens: u64,
}

impl Sample {
    /// Deltas after the first per second of decoding.
    fn rate(&self) -> f64 {
        let secs = self.decode.as_secs_f64();
        if self.deltas < 2 || secs <= 0.0 {
            return 0.0;
        }
        (self.deltas - 1) as f64 / secs
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("llm_bench: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let limit = Duration::from_secs(cli.timeout_secs);
    match rt.block_on(async { timeout(limit, run(&cli)).await }) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("llm_bench: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("llm_bench: the run took longer than {limit:?}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Res<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace folder")?
        .to_path_buf();
    let venv = cli
        .venv
        .clone()
        .or_else(|| std::env::var_os("WEIR_LLM_VENV").map(PathBuf::from))
        .unwrap_or_else(|| workspace.join(".venv-llm"));
    let weir_bin = match &cli.weir {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or("no folder for this executable")?
            .join("weir"),
    };
    let machine = Machine::read();
    println!("llm_bench {} — {}", env!("CARGO_PKG_VERSION"), utc_now());
    println!(
        "machine: {} CPUs ({}), {} MiB, kernel {}; load average before: {}",
        machine.cpus,
        machine.cpu_model,
        machine.mem_total_kib / 1024,
        machine.kernel,
        load_average()
    );
    println!(
        "model: SmolLM2-135M-Instruct Q4_1 on llama.cpp's server (xllamacpp), {} threads; \
         max_tokens {}, temperature 0, seed {SEED}; {} runs per path, taking turns",
        cli.threads, cli.max_tokens, cli.runs
    );

    let python = venv.join("bin").join("python");
    let script = workspace.join("scripts").join("llm-server.py");
    let threads = cli.threads.to_string();
    let (_model, model_url) = start(
        &python,
        &[
            script.to_string_lossy().as_ref(),
            "--port",
            "0",
            "--threads",
            &threads,
        ],
        "llm-server listening on http://",
    )
    .await?;
    let model_addr = model_url.clone();
    wait_health(&model_addr).await?;
    let upstream = format!("http://{model_addr}");
    println!("weir: {}, each a process of its own", cli.rt.describe());
    // One weir per runtime, all in front of the same model server; killed
    // when dropped.
    let mut weirs = Vec::new();
    for &runtime in cli.rt.runtimes() {
        let mut args: Vec<String> = ["serve", "--listen", "127.0.0.1:0", "--log", "error"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.extend(weir_tests::llm::openai_args(&upstream, cli.max_tokens));
        // Many requests of one user at once: the caps are not measured here.
        args.extend(weir_tests::NO_CAPS.iter().map(|s| (*s).to_owned()));
        args.extend(cli.rt.weir_args(runtime));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (child, addr) = start(&weir_bin, &args, "weir listening on http://").await?;
        weirs.push((runtime, child, addr));
    }
    let paths: Vec<Route> = std::iter::once(Route::Direct)
        .chain(weirs.iter().map(|(r, _, _)| Route::Weir(*r)))
        .collect();
    let request = |path: Route, n: u32| {
        let weir_addr = weirs
            .iter()
            .find(|(r, _, _)| Route::Weir(*r) == path)
            .map(|(_, _, addr)| addr.clone());
        let model_addr = model_addr.clone();
        let max_tokens = cli.max_tokens;
        async move {
            match weir_addr {
                None => direct(&model_addr, &prompt(n), max_tokens).await,
                Some(addr) => through_weir(&addr, &prompt(n), &format!("b{n}")).await,
            }
        }
    };

    // Warm-up, one of each (not counted).
    for (k, &path) in paths.iter().enumerate() {
        request(path, 900 + u32::try_from(k)?).await?;
    }

    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); paths.len()];
    println!(
        "\n{:>4}  {:<10}  {:>9}  {:>7}  {:>7}  {:>10}",
        "run", "path", "ttft ms", "deltas", "tokens", "tokens/s"
    );
    let k = u32::try_from(paths.len())?;
    for i in 0..cli.runs {
        // Each run starts with another path, so none is always first.
        for j in 0..k {
            let at = ((i + j) % k) as usize;
            let path = paths[at];
            let s = request(path, k * i + u32::try_from(at)?).await?;
            println!(
                "{i:>4}  {:<10}  {:>9.1}  {:>7}  {:>7}  {:>10.2}",
                path.name(),
                s.ttft.as_secs_f64() * 1e3,
                s.deltas,
                s.tokens,
                s.rate()
            );
            samples[at].push(s);
        }
    }

    let summary = |samples: &[Sample]| {
        let ttft = median(samples.iter().map(|s| s.ttft.as_secs_f64() * 1e3).collect());
        let rate = median(samples.iter().map(Sample::rate).collect());
        (ttft, rate)
    };
    let medians: Vec<(f64, f64)> = samples.iter().map(|s| summary(s)).collect();
    let (d_ttft, d_rate) = medians[0];
    println!("\nmedians over {} runs per path:", cli.runs);
    for (path, (ttft, rate)) in paths.iter().zip(&medians) {
        println!(
            "  {:<11} time to first token {ttft:.1} ms, {rate:.2} tokens/s",
            format!("{}:", path.name())
        );
    }
    let mut per_runtime = serde_json::Map::new();
    for (path, &(ttft, rate)) in paths.iter().zip(&medians).skip(1) {
        let Route::Weir(runtime) = *path else {
            continue;
        };
        let vs = ratio(rate, d_rate);
        println!(
            "  weir ({}) − direct: {:+.1} ms to first token; weir/direct tokens/s: {}",
            runtime.name(),
            ttft - d_ttft,
            vs.map_or_else(|| String::from("-"), |v| format!("{v:.3}"))
        );
        per_runtime.insert(
            runtime.name().to_owned(),
            json!({
                "ttft_ms_median": ttft,
                "tokens_per_s_median": rate,
                "ttft_minus_direct_ms": ttft - d_ttft,
                "tokens_per_s_vs_direct": vs,
            }),
        );
    }
    if let [_, (t_ttft, t_rate), (s_ttft, s_rate)] = medians.as_slice() {
        println!(
            "  smol − tokio: {:+.1} ms to first token; smol/tokio tokens/s: {}",
            s_ttft - t_ttft,
            ratio(*s_rate, *t_rate).map_or_else(|| String::from("-"), |v| format!("{v:.3}"))
        );
    }
    println!("load average after: {}", load_average());
    // `weir`: the first runtime's medians, as before (tokio unless
    // --runtime smol).
    let (w_ttft, w_rate) = medians.get(1).copied().unwrap_or((f64::NAN, f64::NAN));
    println!(
        "{}",
        json!({
            "tool": "llm_bench",
            "runs": cli.runs,
            "max_tokens": cli.max_tokens,
            "threads": cli.threads,
            "worker_threads": cli.rt.worker_threads,
            "direct": {"ttft_ms_median": d_ttft, "tokens_per_s_median": d_rate},
            "weir": {"ttft_ms_median": w_ttft, "tokens_per_s_median": w_rate},
            "runtimes": per_runtime,
        })
    );
    Ok(())
}

/// The prompt of request `n`: one sentence, the same length for every `n`
/// below 1000.
fn prompt(n: u32) -> String {
    format!("Tell me about rivers, please (request {n:03}).")
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Starts `program args…` (killed when the returned child is dropped) and
/// waits for `BANNER HOST:PORT` on its stdout.
async fn start(program: &Path, args: &[&str], banner: &str) -> Res<(Child, String)> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix(banner) {
                return Ok::<_, BoxError>(rest.trim().trim_end_matches('/').to_owned());
            }
        }
        Err(format!("{} ended before announcing its address", program.display()).into())
    })
    .await
    .map_err(|_| format!("{} did not announce its address", program.display()))??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, addr))
}

async fn wait_health(addr: &str) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Ok(status)) = timeout(Duration::from_secs(5), get_status(addr, "/health")).await {
            if status == 200 {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err("the model server's /health did not answer 200 within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get_status(addr: &str, path: &str) -> Res<u16> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    Ok(text.split(' ').nth(1).ok_or("no status")?.parse()?)
}

/// One streamed request straight to the model server.
async fn direct(addr: &str, prompt: &str, max_tokens: u32) -> Res<Sample> {
    let body = json!({
        "model": "smollm2",
        "messages": [{"role": "user", "content": prompt}],
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": SEED,
    })
    .to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: text/event-stream\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    timeout(REQUEST_TIMEOUT, async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let t0 = Instant::now();
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new(); // undecoded bytes
        let mut body = Vec::new(); // de-chunked body not yet split into events
        let mut head_done = false;
        let mut body_done = false;
        let mut first = None;
        let mut last = t0;
        let mut deltas = 0u64;
        let mut tokens = 0u64;
        let mut buf = [0u8; 8192];
        'read: loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if !head_done {
                let Some(end) = find(&raw, b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&raw[..end]).into_owned();
                if !head.starts_with("HTTP/1.1 200") {
                    return Err(format!("the model server answered {head}").into());
                }
                raw.drain(..end + 4);
                head_done = true;
            }
            // De-chunk every complete chunk.
            while let Some(line_end) = find(&raw, b"\r\n") {
                let size_text = String::from_utf8_lossy(&raw[..line_end]).into_owned();
                let size = usize::from_str_radix(size_text.trim(), 16)
                    .map_err(|e| format!("bad chunk size {size_text:?}: {e}"))?;
                if raw.len() < line_end + 2 + size + 2 {
                    break;
                }
                body.extend_from_slice(&raw[line_end + 2..line_end + 2 + size]);
                raw.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    body_done = true;
                    break;
                }
            }
            // Every complete SSE event.
            while let Some(end) = find(&body, b"\n\n") {
                let event = String::from_utf8_lossy(&body[..end]).into_owned();
                body.drain(..end + 2);
                for data in event.lines().filter_map(|l| l.strip_prefix("data: ")) {
                    if data.trim() == "[DONE]" {
                        break 'read;
                    }
                    let chunk: Value = serde_json::from_str(data)?;
                    if let Some(t) = chunk["usage"]["completion_tokens"].as_u64() {
                        tokens = t;
                    }
                    let content = chunk["choices"][0]["delta"]["content"]
                        .as_str()
                        .unwrap_or("");
                    if !content.is_empty() {
                        let now = Instant::now();
                        first.get_or_insert(now);
                        last = now;
                        deltas += 1;
                    }
                }
            }
            if body_done {
                break;
            }
        }
        let first = first.ok_or("no content from the model server")?;
        Ok(Sample {
            ttft: first - t0,
            decode: last - first,
            deltas,
            tokens,
        })
    })
    .await
    .map_err(|_| BoxError::from("a direct request timed out"))?
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One chat through weir, on a fresh conversation `session`.
async fn through_weir(addr: &str, prompt: &str, session: &str) -> Res<Sample> {
    timeout(REQUEST_TIMEOUT, async {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let url = format!("ws://{addr}/v1/ws?session_id={session}&user_id=bench");
        let (mut ws, _) = client_async_with_config(url, stream, Some(client_ws_config())).await?;
        // hello and history
        for _ in 0..2 {
            next_text(&mut ws).await?;
        }
        let t0 = Instant::now();
        ws.send(Message::text(
            json!({"type": "chat", "content": prompt, "request_id": "r"}).to_string(),
        ))
        .await?;
        let mut first = None;
        let mut last = t0;
        let mut deltas = 0u64;
        loop {
            let frame: Value = serde_json::from_str(&next_text(&mut ws).await?)?;
            match frame["type"].as_str() {
                Some("chunk") => {
                    let now = Instant::now();
                    first.get_or_insert(now);
                    last = now;
                    // A merged frame covers several deltas.
                    let seq = frame["seq"].as_u64().unwrap_or(0);
                    let from = frame["from_seq"].as_u64().unwrap_or(seq);
                    deltas += seq - from + 1;
                }
                Some("end") => {
                    if frame["status"] != "completed" {
                        return Err(format!("the reply ended {frame}").into());
                    }
                    let first = first.ok_or("no chunk through weir")?;
                    let _ = ws.close(None).await;
                    return Ok(Sample {
                        ttft: first - t0,
                        decode: last - first,
                        deltas,
                        tokens: frame["usage"]["completion_tokens"].as_u64().unwrap_or(0),
                    });
                }
                _ => {}
            }
        }
    })
    .await
    .map_err(|_| BoxError::from("a chat through weir timed out"))?
}

async fn next_text(ws: &mut Ws) -> Res<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err("the WebSocket closed".into()),
        }
    }
}
