//! weir-tests: black-box end-to-end tests of the real `weir` binary.
//!
//! This library is the tests' toolbox; the tests live in `tests/tests/`:
//!
//! - `e2e.rs`: the protocol against a real `weir serve` process, with real
//!   WebSocket and HTTP clients over loopback;
//! - `browser.rs`: the web page in a real headless Chromium, driven by
//!   `tests/browser/*.mjs` (playwright-core);
//! - `llm.rs`: the `openai` generator in front of a real model server
//!   ([`llm::LlmServer`]).
//!
//! # What it offers
//!
//! - [`Runtime`] and [`both_runtimes!`]: the suite is written once and runs
//!   against both runtimes: each test is an `async fn`, and
//!   `both_runtimes! { name, … }` makes it two tests, `tokio::name` and
//!   `smol::name`, whose [`WeirProcess::start`] runs `weir serve --runtime
//!   tokio` or `--runtime smol`. (The clients stay on tokio: the server is
//!   another process.)
//! - [`WeirProcess`]: starts `target/debug/weir serve` (or `$WEIR_BIN`) on a
//!   free loopback port with the given flags, its output captured in a temp
//!   log file (printed when a test fails), waits until `/healthz` answers, and
//!   kills the process when dropped, so no test leaves an orphan behind.
//! - [`Client`]: a real WebSocket client (async-tungstenite) that reads
//!   protocol frames as JSON ([`Frame`]): the names in the assertions are the
//!   names of `PROTOCOL.md`, not those of a Rust type.
//! - [`http_request`]: a minimal HTTP/1.1 client; [`Metrics`]: `/metrics`
//!   parsed.
//!
//! Every wait is bounded (by [`T`] unless said otherwise); every address is on
//! loopback.
//!
//! The binary must be built first: `cargo build -p weir-server --bin weir`
//! (`./scripts/test.sh` does it before `cargo test`). A missing or stale
//! binary fails the test with a message saying so.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod llm;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_tungstenite::tokio::{client_async, TokioAdapter};
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

mod redis_server;

pub use async_tungstenite::tungstenite;
pub use redis_server::RedisServer;
pub use serde_json::{json, Value};
pub use weir_core::demo::DemoText;

/// The longest any single wait in a test may take.
pub const T: Duration = Duration::from_secs(10);

/// A WebSocket client stream over loopback TCP.
pub type Ws = WebSocketStream<TokioAdapter<TcpStream>>;

// ---------------------------------------------------------------------------
// Finding the binary
// ---------------------------------------------------------------------------

/// The workspace root (the parent of this package).
#[must_use]
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent folder")
        .to_path_buf()
}

/// The cargo target folder: `$CARGO_TARGET_DIR` (relative to the workspace
/// root when relative), else `<workspace>/target`.
#[must_use]
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_relative() {
                workspace_dir().join(dir)
            } else {
                dir
            }
        }
        _ => workspace_dir().join("target"),
    }
}

/// The `weir` binary under test: `$WEIR_BIN`, else
/// `<target>/debug/weir`. Panics with instructions when it is missing, or
/// when it is older than one of the sources it was built from (cargo's
/// dep-info file `weir.d` beside it lists them).
#[must_use]
pub fn weir_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("WEIR_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "WEIR_BIN={} is not a file: point it at a built `weir` binary",
            bin.display()
        );
        return bin;
    }
    let bin = target_dir()
        .join("debug")
        .join(format!("weir{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the weir binary is missing: {} does not exist.\n\
         The end-to-end tests run the real binary; build it first with\n\
         \n    cargo build -p weir-server --bin weir\n\n\
         (./scripts/test.sh does this before `cargo test`), or set WEIR_BIN to a built binary.",
        bin.display()
    );
    if let Some(newer) = newer_source(&bin) {
        panic!(
            "the weir binary {} is stale: {} changed after it was built.\n\
             Rebuild it with\n\n    cargo build -p weir-server --bin weir\n\n\
             (./scripts/test.sh does this before `cargo test`), or set WEIR_BIN to the binary to test.",
            bin.display(),
            newer.display()
        );
    }
    bin
}

/// A source file of `bin` (per its dep-info file) modified after `bin`.
fn newer_source(bin: &Path) -> Option<PathBuf> {
    let built = std::fs::metadata(bin).and_then(|m| m.modified()).ok()?;
    let dep_info = std::fs::read_to_string(bin.with_extension("d")).ok()?;
    // `TARGET: DEP DEP …` on one line; spaces inside paths are escaped.
    let (_, deps) = dep_info.lines().next()?.split_once(": ")?;
    let mut paths = Vec::new();
    let mut current = String::new();
    let mut chars = deps.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ' ' => paths.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    paths.push(current);
    paths
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .find(|p| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > built)
        })
}

// ---------------------------------------------------------------------------
// The process
// ---------------------------------------------------------------------------

/// A signal for [`WeirProcess::signal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: graceful shutdown.
    Term,
    /// SIGINT: graceful shutdown too (Ctrl-C).
    Int,
    /// SIGKILL: the process dies at once.
    Kill,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Int => "INT",
            Signal::Kill => "KILL",
        }
    }
}

/// The async runtime of a `weir serve` process (`--runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `--runtime tokio`.
    Tokio,
    /// `--runtime smol`.
    Smol,
}

impl Runtime {
    /// Both, in the order their tests are named.
    pub const ALL: [Runtime; 2] = [Runtime::Tokio, Runtime::Smol];

    /// The value of `--runtime`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Tokio => "tokio",
            Runtime::Smol => "smol",
        }
    }

    /// The runtime [`WeirProcess::start`] uses on this thread: the one that
    /// [`Runtime::use_on_this_thread`] set (which [`both_runtimes!`] does
    /// for each test), else `$WEIR_TEST_RUNTIME` (`tokio` or `smol`), else
    /// tokio.
    #[must_use]
    pub fn current() -> Runtime {
        CURRENT_RUNTIME.with(Cell::get).unwrap_or_else(|| {
            match std::env::var("WEIR_TEST_RUNTIME").as_deref() {
                Ok("smol") => Runtime::Smol,
                _ => Runtime::Tokio,
            }
        })
    }

    /// Makes this the runtime of every [`WeirProcess::start`] on this
    /// thread (a `#[tokio::test]` runs its body on its own thread).
    pub fn use_on_this_thread(self) {
        CURRENT_RUNTIME.with(|c| c.set(Some(self)));
    }
}

thread_local! {
    static CURRENT_RUNTIME: Cell<Option<Runtime>> = const { Cell::new(None) };
}

/// Makes each named `async fn` of the calling module (a test body, taking
/// no arguments) two tests: `tokio::NAME` and `smol::NAME`, each a
/// `#[tokio::test]` (the clients' runtime) that sets [`Runtime`] for the
/// processes it starts and runs the body.
///
/// Attributes written before a name (`#[ignore = "…"]`) go on both of its
/// tests.
///
/// Inside a test file that uses it, the `tokio` crate must be named
/// `::tokio` (the module `tokio` shadows it).
#[macro_export]
macro_rules! both_runtimes {
    ($($(#[$attr:meta])* $name:ident),+ $(,)?) => {
        mod tokio {
            $(
                #[::tokio::test]
                $(#[$attr])*
                async fn $name() {
                    $crate::Runtime::Tokio.use_on_this_thread();
                    super::$name().await;
                }
            )+
        }
        mod smol {
            $(
                #[::tokio::test]
                $(#[$attr])*
                async fn $name() {
                    $crate::Runtime::Smol.use_on_this_thread();
                    super::$name().await;
                }
            )+
        }
    };
}

static NEXT_LOG: AtomicU64 = AtomicU64::new(0);

/// A new log file in the temp dir, `weir-KIND-PID-N-NANOS.log`, open for
/// appending.
pub(crate) fn temp_log(kind: &str) -> (PathBuf, File) {
    let path = std::env::temp_dir().join(format!(
        "weir-{kind}-{}-{}-{}.log",
        std::process::id(),
        NEXT_LOG.fetch_add(1, Ordering::Relaxed),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("create log file {}: {e}", path.display()));
    (path, file)
}

/// A running `weir serve` process on a free loopback port. Killed (SIGKILL)
/// when dropped if it is still running; when the test is failing, its log is
/// printed to stderr and kept on disk.
#[derive(Debug)]
pub struct WeirProcess {
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
    exit: Option<ExitStatus>,
}

impl WeirProcess {
    /// Starts `weir serve --listen 127.0.0.1:0 ARGS…` and waits (at most
    /// [`T`]) until it listens and `GET /healthz` answers 200, then (within
    /// the same bound, without failing) until `GET /readyz` does.
    ///
    /// The port is chosen by the kernel when the server binds (port 0) and
    /// read from the line `weir listening on http://ADDR` that `weir serve`
    /// prints once bound: unlike picking a free port first and passing it
    /// on, this cannot race with another process taking the port in between.
    /// `WEIR_*` variables of the test's environment are not passed on, so
    /// only `args` configure the server. The runtime is
    /// [`Runtime::current`]'s.
    #[must_use]
    pub fn start(args: &[&str]) -> WeirProcess {
        WeirProcess::start_on(Runtime::current(), args)
    }

    /// [`WeirProcess::start`] with `--runtime runtime`.
    #[must_use]
    pub fn start_on(runtime: Runtime, args: &[&str]) -> WeirProcess {
        let bin = weir_bin();
        let (log_path, log) = temp_log("e2e");
        let err_log = log.try_clone().expect("duplicate the log file handle");
        let mut cmd = Command::new(&bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--runtime")
            .arg(runtime.name())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err_log));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WEIR_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut process = WeirProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_path,
            exit: None,
        };
        let deadline = Instant::now() + T;
        process.addr = loop {
            if let Some(addr) = announced_addr(&process.log()) {
                break addr;
            }
            process.assert_running("before listening");
            assert!(
                Instant::now() < deadline,
                "weir did not print `weir listening on …` within {T:?} (args {args:?})"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        loop {
            if blocking_get_status(process.addr, "/healthz") == Some(200) {
                break;
            }
            process.assert_running("before /healthz answered");
            assert!(
                Instant::now() < deadline,
                "GET /healthz did not answer 200 within {T:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Ready too (the Redis store connects just after the server
        // listens; a client before that gets `unavailable`), unless it
        // cannot be: a test that starts a node without its store finds
        // `/readyz` 503 itself.
        while blocking_get_status(process.addr, "/readyz") != Some(200) && Instant::now() < deadline
        {
            process.assert_running("before /readyz answered");
            std::thread::sleep(Duration::from_millis(10));
        }
        process
    }

    fn assert_running(&mut self, when: &str) {
        if let Some(status) = self.child.try_wait().expect("try_wait on weir") {
            self.exit = Some(status);
            panic!("weir exited ({status}) {when}; its log:\n{}", self.log());
        }
    }

    /// The address it listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://ADDR` + `path`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `ws://ADDR/v1/ws?` + `query`.
    #[must_use]
    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/v1/ws?{query}", self.addr)
    }

    /// Everything it printed so far (stdout and stderr).
    #[must_use]
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    }

    /// A WebSocket to `/v1/ws?{query}` whose `hello` and `history` have been
    /// read (they are in [`Client::hello`] and [`Client::history`]).
    pub async fn ws(&self, query: &str) -> Client {
        let mut client = self.connect(query).await;
        client.handshake().await;
        client
    }

    /// A WebSocket to `/v1/ws?{query}`, nothing read yet.
    pub async fn connect(&self, query: &str) -> Client {
        self.try_connect(query)
            .await
            .unwrap_or_else(|e| panic!("WebSocket to /v1/ws?{query} upgrades: {e}"))
    }

    /// Like [`connect`](Self::connect), but returns the handshake's failure
    /// (e.g. `tungstenite::Error::Http` with the refusal's status).
    pub async fn try_connect(&self, query: &str) -> Result<Client, tungstenite::Error> {
        self.try_connect_with_headers(query, &[]).await
    }

    /// A WebSocket upgrade request with extra headers.
    pub async fn try_connect_with_headers(
        &self,
        query: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<Client, tungstenite::Error> {
        let mut request = self.ws_url(query).into_client_request()?;
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(*name, value.parse().expect("a valid header value"));
        }
        let stream = tokio::time::timeout(T, TcpStream::connect(self.addr))
            .await
            .expect("TCP connect in time")
            .expect("TCP connect");
        let (ws, _) = tokio::time::timeout(T, client_async(request, stream))
            .await
            .expect("WebSocket handshake in time")?;
        Ok(Client::new(ws))
    }

    /// A WebSocket whose socket has a receive buffer of `rcvbuf` bytes (the
    /// kernel may round it), for a client that stops reading; nothing read.
    pub async fn connect_small_buffer(&self, query: &str, rcvbuf: u32) -> Client {
        let socket = TcpSocket::new_v4().expect("TCP socket");
        socket.set_recv_buffer_size(rcvbuf).expect("set SO_RCVBUF");
        let stream = tokio::time::timeout(T, socket.connect(self.addr))
            .await
            .expect("TCP connect in time")
            .expect("TCP connect");
        let (ws, _) = tokio::time::timeout(T, client_async(self.ws_url(query), stream))
            .await
            .expect("WebSocket handshake in time")
            .expect("WebSocket upgrades");
        Client::new(ws)
    }

    /// One HTTP request (fresh connection) with a text body.
    pub async fn http(&self, method: &str, path: &str, body: &str) -> HttpResponse {
        http_request(self.addr, method, path, &[], body.as_bytes()).await
    }

    /// One HTTP request with extra headers.
    pub async fn http_with_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> HttpResponse {
        http_request(self.addr, method, path, headers, body.as_bytes()).await
    }

    /// `GET /metrics`, parsed.
    pub async fn metrics(&self) -> Metrics {
        let r = self.http("GET", "/metrics", "").await;
        assert_eq!(r.status, 200, "GET /metrics: {r:?}");
        Metrics::parse(&r.body)
    }

    /// Sends `signal` to the process (with the shell's `kill`, which every
    /// POSIX `sh` has built in).
    pub fn signal(&self, signal: Signal) {
        let status = Command::new("sh")
            .arg("-c")
            .arg("kill -s \"$1\" \"$2\"")
            .arg("sh")
            .arg(signal.name())
            .arg(self.pid().to_string())
            .status()
            .expect("run sh -c kill");
        assert!(status.success(), "kill -s {} {}", signal.name(), self.pid());
    }

    /// Waits until the process exits, at most `timeout`; panics if it does
    /// not.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on weir") {
                self.exit = Some(status);
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "weir (pid {}) did not exit within {timeout:?}",
                self.pid()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for WeirProcess {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            let mut out = std::io::stderr().lock();
            let _ = writeln!(
                out,
                "---- weir (pid {}, {}) log, last {} lines; kept at {} ----",
                self.child.id(),
                self.addr,
                tail.len(),
                self.log_path.display()
            );
            for line in tail.iter().rev() {
                let _ = writeln!(out, "{line}");
            }
            let _ = writeln!(out, "---- end of weir log ----");
        } else {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

/// The address of the line `weir listening on http://ADDR`.
fn announced_addr(log: &str) -> Option<SocketAddr> {
    log.lines().find_map(|line| {
        line.strip_prefix("weir listening on http://")
            .and_then(|a| a.trim().parse().ok())
    })
}

/// The status of a blocking `GET path`, or `None` if it did not answer.
fn blocking_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.split(' ').nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

/// One server frame, as the JSON object it was on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame(pub Value);

impl Deref for Frame {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.0
    }
}

impl Frame {
    /// Parses a text frame; panics unless it is a JSON object whose first
    /// member is a string `type` (PROTOCOL.md: "`type` first").
    #[must_use]
    pub fn parse(text: &str) -> Frame {
        let value: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("a server frame is not JSON ({e}): {text}"));
        assert!(
            text.trim_start().starts_with("{\"type\":"),
            "`type` is not the first member: {text}"
        );
        assert!(value["type"].is_string(), "no string `type`: {text}");
        Frame(value)
    }

    /// Its `type`.
    #[must_use]
    pub fn kind(&self) -> &str {
        self.0["type"].as_str().unwrap_or("")
    }

    /// Whether its `type` is `kind`.
    #[must_use]
    pub fn is(&self, kind: &str) -> bool {
        self.kind() == kind
    }

    /// The string `field`; panics if absent or not a string.
    #[must_use]
    pub fn str(&self, field: &str) -> &str {
        self.0[field]
            .as_str()
            .unwrap_or_else(|| panic!("no string `{field}` in {}", self.0))
    }

    /// The non-negative integer `field`; panics if absent or not one.
    #[must_use]
    pub fn u64(&self, field: &str) -> u64 {
        self.0[field]
            .as_u64()
            .unwrap_or_else(|| panic!("no integer `{field}` in {}", self.0))
    }

    /// The frame as a [`Chunk`], if it is a `chunk`.
    #[must_use]
    pub fn as_chunk(&self) -> Option<Chunk> {
        if !self.is("chunk") {
            return None;
        }
        Some(Chunk {
            message_id: self.str("message_id").to_owned(),
            seq: self.u64("seq"),
            from_seq: self.0.get("from_seq").and_then(Value::as_u64),
            delta: self.str("delta").to_owned(),
        })
    }
}

/// A `chunk` frame's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The reply.
    pub message_id: String,
    /// The last seq it covers.
    pub seq: u64,
    /// The first seq it covers, on a merged frame.
    pub from_seq: Option<u64>,
    /// The text.
    pub delta: String,
}

impl Chunk {
    /// The first seq it covers.
    #[must_use]
    pub fn first_seq(&self) -> u64 {
        self.from_seq.unwrap_or(self.seq)
    }
}

/// The chunks among `frames`, of any reply.
#[must_use]
pub fn chunks(frames: &[Frame]) -> Vec<Chunk> {
    frames.iter().filter_map(Frame::as_chunk).collect()
}

/// The chunks of reply `message_id` among `frames`.
#[must_use]
pub fn chunks_of(frames: &[Frame], message_id: &str) -> Vec<Chunk> {
    chunks(frames)
        .into_iter()
        .filter(|c| c.message_id == message_id)
        .collect()
}

/// Checks that `chunks` continue seq `after` without a gap or a duplicate
/// (merged frames included); returns their text and the last seq.
#[must_use]
pub fn contiguous(after: u64, chunks: &[Chunk]) -> (String, u64) {
    let mut last = after;
    let mut text = String::new();
    for c in chunks {
        assert_eq!(
            c.first_seq(),
            last + 1,
            "gap or duplicate: after seq {last} came {c:?}"
        );
        assert!(c.seq >= c.first_seq(), "from_seq after seq: {c:?}");
        last = c.seq;
        text.push_str(&c.delta);
    }
    (text, last)
}

/// The first `n` chunks of the demo reply to `prompt` (of `total` chunks).
#[must_use]
pub fn demo_prefix(prompt: &str, total: u32, n: u64) -> String {
    DemoText::new(prompt, total)
        .take(usize::try_from(n).expect("a small count"))
        .collect()
}

// ---------------------------------------------------------------------------
// The WebSocket client
// ---------------------------------------------------------------------------

/// A WebSocket connection to `/v1/ws`.
#[derive(Debug)]
pub struct Client {
    ws: Ws,
    /// The `hello` frame, once [`handshake`](Self::handshake) read it.
    pub hello: Option<Frame>,
    /// The `history` frame, once [`handshake`](Self::handshake) read it.
    pub history: Option<Frame>,
}

impl Client {
    fn new(ws: Ws) -> Client {
        Client {
            ws,
            hello: None,
            history: None,
        }
    }

    /// The underlying stream.
    pub fn ws_mut(&mut self) -> &mut Ws {
        &mut self.ws
    }

    /// Reads `hello` and `history` (the first two frames) and returns them.
    pub async fn handshake(&mut self) -> (Frame, Frame) {
        let hello = self.next_frame().await;
        assert!(hello.is("hello"), "first frame: {hello:?}");
        let history = self.next_frame().await;
        assert!(history.is("history"), "second frame: {history:?}");
        self.hello = Some(hello.clone());
        self.history = Some(history.clone());
        (hello, history)
    }

    /// The messages of the `history` frame read by the handshake.
    #[must_use]
    pub fn history_messages(&self) -> Vec<Value> {
        self.history.as_ref().expect("handshake read the history").0["messages"]
            .as_array()
            .expect("history.messages is a list")
            .clone()
    }

    /// Sends a WebSocket message.
    pub async fn send_message(&mut self, message: Message) {
        tokio::time::timeout(T, self.ws.send(message))
            .await
            .expect("send in time")
            .expect("send a WebSocket message");
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.send_message(Message::text(text.into())).await;
    }

    /// Frames up to and including the first chunk (of reply `mid`, when
    /// given) whose `seq` reaches `seq`.
    pub async fn until_seq(&mut self, mid: Option<&str>, seq: u64) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            let f = self.next_frame().await;
            let reached = f
                .as_chunk()
                .is_some_and(|c| mid.is_none_or(|m| c.message_id == m) && c.seq >= seq);
            frames.push(f);
            if reached {
                return frames;
            }
        }
    }

    /// Sends a JSON value as a text frame.
    pub async fn send_json(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    /// Sends `chat`.
    pub async fn chat(&mut self, content: &str, request_id: &str) {
        self.send_json(json!({"type": "chat", "content": content, "request_id": request_id}))
            .await;
    }

    /// Sends `cancel` for `message_id` (or, with `None`, without one).
    pub async fn cancel(&mut self, message_id: Option<&str>, request_id: &str) {
        let mut frame = json!({"type": "cancel", "request_id": request_id});
        if let Some(id) = message_id {
            frame["message_id"] = json!(id);
        }
        self.send_json(frame).await;
    }

    /// The next WebSocket message within [`T`] (`None`: the stream ended).
    pub async fn next_message(&mut self) -> Option<Message> {
        tokio::time::timeout(T, self.ws.next())
            .await
            .unwrap_or_else(|_| panic!("no WebSocket message within {T:?}"))
            .map(|m| m.expect("read from the WebSocket"))
    }

    /// The next protocol frame within [`T`]; skips WebSocket pings and
    /// pongs; panics on a close, a binary message or the stream's end.
    pub async fn next_frame(&mut self) -> Frame {
        loop {
            match self.next_message().await {
                Some(Message::Text(text)) => return Frame::parse(&text),
                Some(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }

    /// Frames until one of type `kind`; returns those before it and it.
    pub async fn next_of(&mut self, kind: &str) -> (Vec<Frame>, Frame) {
        let mut before = Vec::new();
        loop {
            let f = self.next_frame().await;
            if f.is(kind) {
                return (before, f);
            }
            before.push(f);
        }
    }

    /// Frames until an `end` (of any reply); returns those before it and the
    /// `end`.
    pub async fn until_end(&mut self) -> (Vec<Frame>, Frame) {
        self.next_of("end").await
    }

    /// Sends `ping` with `id` and reads until its `pong`; returns the frames
    /// that came before it. As the server writes a connection's frames in
    /// order, this is a barrier: whatever the server sent before it handled
    /// the ping is in the result.
    pub async fn ping(&mut self, id: &str) -> Vec<Frame> {
        self.send_json(json!({"type": "ping", "id": id})).await;
        let mut before = Vec::new();
        loop {
            let f = self.next_frame().await;
            if f.is("pong") && f["id"] == id {
                return before;
            }
            before.push(f);
        }
    }

    /// Frames until the server closes; returns them and the close code
    /// (1005 when the close frame had none). Reads on until the stream ends,
    /// which sends the client's answer to the close, as a browser does.
    pub async fn frames_until_close(&mut self) -> (Vec<Frame>, u16) {
        let mut frames = Vec::new();
        let code = loop {
            match self.next_message().await {
                Some(Message::Text(text)) => frames.push(Frame::parse(&text)),
                Some(Message::Close(Some(f))) => break u16::from(f.code),
                Some(Message::Close(None)) => break 1005,
                Some(_) => {}
                None => panic!("the stream ended without a close frame after {frames:?}"),
            }
        };
        while let Ok(Some(Ok(_))) = tokio::time::timeout(T, self.ws.next()).await {}
        (frames, code)
    }

    /// Closes the connection (1000) and reads until the stream ends.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(T, self.ws.close(None)).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(T, self.ws.next()).await {}
    }
}

/// The HTTP status of a refused WebSocket upgrade; panics if it was not
/// refused with an HTTP answer.
#[must_use]
pub fn refusal_status(result: &Result<Client, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got the error {e}"),
        Ok(_) => panic!("expected an HTTP refusal, got an upgrade"),
    }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The status line and headers.
    pub head: String,
    /// The body (de-chunked).
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON; panics if it is not.
    #[must_use]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("a JSON body ({e}): {self:?}"))
    }

    /// The value of header `name` (case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), the
/// whole exchange within [`T`].
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("TCP connect");
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !body.is_empty() {
            request.push_str("Content-Type: application/json\r\n");
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        stream.write_all(&bytes).await.expect("write the request");
        let mut buf = Vec::new();
        stream
            .read_to_end(&mut buf)
            .await
            .expect("read the response");
        buf
    };
    let buf = tokio::time::timeout(T, exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer to {method} {path} within {T:?}"));
    let text = String::from_utf8(buf).expect("a UTF-8 response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("a response head: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status code: {head}"));
    let mut response = HttpResponse {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    };
    if response
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        response.body = dechunk(body);
    }
    response
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|e| panic!("a chunk size ({e}): {size:?}"));
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

/// `/metrics` (Prometheus text format) parsed: series → value.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The text as served.
    pub text: String,
    values: BTreeMap<String, f64>,
}

impl Metrics {
    /// Parses the exposition text.
    #[must_use]
    pub fn parse(text: &str) -> Metrics {
        let values = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect();
        Metrics {
            text: text.to_owned(),
            values,
        }
    }

    /// The value of `series` (`name` or `name{labels}` exactly as served);
    /// panics if absent.
    #[must_use]
    pub fn get(&self, series: &str) -> f64 {
        *self
            .values
            .get(series)
            .unwrap_or_else(|| panic!("no metric {series} in:\n{}", self.text))
    }
}

// ---------------------------------------------------------------------------
// Misc
// ---------------------------------------------------------------------------

/// Reads one HTTP request from `stream` (as a fake upstream server does):
/// its head and its `Content-Length` body. Returns what arrived: the whole
/// request, or less when the peer closed first or [`T`] ran out.
pub async fn read_http_request(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Ok(Ok(n)) = tokio::time::timeout(T, stream.read(&mut buf)).await else {
            return String::from_utf8_lossy(&data).into_owned();
        };
        if n == 0 {
            return String::from_utf8_lossy(&data).into_owned();
        }
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
    }
}

/// Polls `check` every 10 ms until it holds, at most [`T`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + T;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {T:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Seconds since the Unix epoch.
#[must_use]
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}
