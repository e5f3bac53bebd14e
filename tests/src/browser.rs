//! What the browser tests share: finding `node` and Debian's Chromium, and
//! running a program (a Node script, a build) with a bound on its time.
//!
//! A missing tool fails the test and says what to install: a browser test
//! never passes without a browser.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `name` on the `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// `tests/browser`, where the browser drivers and their npm packages are.
/// Panics saying how to install them when `playwright-core` is missing.
#[must_use]
pub fn scripts_dir() -> PathBuf {
    let dir = crate::workspace_dir().join("tests").join("browser");
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .is_file(),
        "playwright-core is not installed in {}: run `npm ci --prefix tests/browser` \
         (`./scripts/test.sh --setup-only` does)",
        dir.display()
    );
    dir
}

/// The Chromium binary: `$CHROMIUM_PATH`, else `/usr/bin/chromium` (Debian
/// package `chromium`), else `chromium` on the `PATH`. Panics saying what to
/// install when there is none.
#[must_use]
pub fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM_PATH").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "CHROMIUM_PATH={} is not a file",
            path.display()
        );
        return path;
    }
    let default = Path::new("/usr/bin/chromium");
    if default.is_file() {
        return default.to_path_buf();
    }
    on_path("chromium").unwrap_or_else(|| {
        panic!(
            "Chromium is not installed: the browser test needs /usr/bin/chromium (Debian package \
             `chromium`; `./scripts/test.sh --setup-only` installs it), or CHROMIUM_PATH set to a \
             Chromium binary"
        )
    })
}

/// `node` on the `PATH`. Panics saying what to install when it is missing.
#[must_use]
pub fn node() -> PathBuf {
    on_path("node").unwrap_or_else(|| {
        panic!(
            "Node.js is not installed: the browser tests run scripts of tests/browser with `node` \
             (Debian package `nodejs`; `./scripts/test.sh --setup-only` installs it)"
        )
    })
}

/// What a program run by [`run_bounded`] did.
#[derive(Debug)]
pub struct Ran {
    /// It exited with status 0.
    pub success: bool,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// Runs `command` (its stdin closed, stdout and stderr captured) to its end.
/// Past `limit` it gets SIGTERM (playwright then closes its browser), 3 s
/// later SIGKILL, and the test fails with what it printed. Blocking: call it
/// from `spawn_blocking` in an async test.
#[must_use]
pub fn run_bounded(mut command: Command, limit: Duration) -> Ran {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (done_tx, done_rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        let status = child.wait();
        let _ = done_tx.send(());
        (status, out)
    });
    if done_rx.recv_timeout(limit).is_err() {
        for signal in ["TERM", "KILL"] {
            let _ = Command::new("sh")
                .arg("-c")
                .arg("kill -s \"$1\" \"$2\"")
                .arg("sh")
                .arg(signal)
                .arg(pid.to_string())
                .status();
            if done_rx.recv_timeout(Duration::from_secs(3)).is_ok() {
                break;
            }
        }
        let (_, out) = waiter.join().expect("the waiter thread");
        let err = err_reader.join().expect("the stderr thread");
        panic!("{shown} did not finish within {limit:?}\nstdout:\n{out}\nstderr:\n{err}");
    }
    let (status, stdout) = waiter.join().expect("the waiter thread");
    let stderr = err_reader.join().expect("the stderr thread");
    let status = status.unwrap_or_else(|e| panic!("wait for {shown}: {e}"));
    Ran {
        success: status.success(),
        stdout,
        stderr,
    }
}
