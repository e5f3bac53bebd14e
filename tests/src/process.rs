//! The `weir` process under test: finding the binary, starting `weir serve`
//! on a free loopback port, signals, its log.

use std::fs::File;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{temp_log, Endpoint, Runtime, StoreUrl, T};

/// `weir serve` flags that turn every cap off (issue 17 point 5): for the
/// tests and benchmarks that are about something else and open more
/// connections or chats per user or per address than the caps' defaults
/// allow (a crowd of one user on one address).
pub const NO_CAPS: [&str; 8] = [
    "--max-connections-per-user",
    "0",
    "--max-streams-per-user",
    "0",
    "--chats-per-minute",
    "0",
    "--max-connections-per-ip",
    "0",
];

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
    /// SIGHUP: the token auth's key files are read again.
    Hup,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Self::Term => "TERM",
            Self::Int => "INT",
            Self::Kill => "KILL",
            Self::Hup => "HUP",
        }
    }
}

/// A running `weir serve` process on a free loopback port. Killed (SIGKILL)
/// when dropped if it is still running; when the test is failing, its log is
/// printed to stderr and kept on disk.
///
/// Its clients are those of its [`Endpoint`] (`weir.ws(…)`, `weir.http(…)`).
#[derive(Debug)]
pub struct WeirProcess {
    child: Child,
    endpoint: Endpoint,
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
    pub fn start(args: &[&str]) -> Self {
        Self::start_on(Runtime::current(), args)
    }

    /// [`WeirProcess::start`] with `--runtime runtime`.
    #[must_use]
    pub fn start_on(runtime: Runtime, args: &[&str]) -> Self {
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
        let mut process = Self {
            child,
            endpoint: Endpoint::new(SocketAddr::from(([127, 0, 0, 1], 0))),
            log_path,
            exit: None,
        };
        let deadline = Instant::now() + T;
        process.endpoint = Endpoint::new(loop {
            if let Some(addr) = announced_addr(&process.log()) {
                break addr;
            }
            process.assert_running("before listening");
            assert!(
                Instant::now() < deadline,
                "weir did not print `weir listening on …` within {T:?} (args {args:?})"
            );
            std::thread::sleep(Duration::from_millis(10));
        });
        loop {
            if blocking_get_status(process.addr(), "/healthz") == Some(200) {
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
        while blocking_get_status(process.addr(), "/readyz") != Some(200)
            && Instant::now() < deadline
        {
            process.assert_running("before /readyz answered");
            std::thread::sleep(Duration::from_millis(10));
        }
        process
    }

    /// A node of a deployment on `redis`: [`WeirProcess::start_on`] with
    /// `--store` `redis`'s URL, `--node-id node_id`, demo replies of `chunks`
    /// chunks at up to `rate` per second, and `extra` flags.
    #[must_use]
    pub fn start_on_redis(
        runtime: Runtime,
        redis: &impl StoreUrl,
        node_id: &str,
        (chunks, rate): (u64, u64),
        extra: &[&str],
    ) -> Self {
        let (url, chunks, rate) = (redis.store_url(), chunks.to_string(), rate.to_string());
        let mut args = vec![
            "--store",
            url.as_str(),
            "--node-id",
            node_id,
            "--demo-chunks",
            chunks.as_str(),
            "--demo-rate",
            rate.as_str(),
        ];
        args.extend_from_slice(extra);
        Self::start_on(runtime, &args)
    }

    fn assert_running(&mut self, when: &str) {
        if let Some(status) = self.child.try_wait().expect("try_wait on weir") {
            self.exit = Some(status);
            panic!("weir exited ({status}) {when}; its log:\n{}", self.log());
        }
    }

    /// Its process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
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

/// The clients of a process are those of its address.
impl Deref for WeirProcess {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
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
                self.addr(),
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
