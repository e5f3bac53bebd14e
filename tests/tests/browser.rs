//! The web page in a real browser: headless Chromium (Debian's `chromium`)
//! driven by `tests/browser/page.mjs` (playwright-core from npm) against the
//! page the real `weir` process serves at `/`.
//!
//! Needs `node`, `chromium` and `tests/browser/node_modules`;
//! `./scripts/test.sh` installs all three. When one is missing this test
//! fails and says what to install: it never passes without a browser.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use weir_tests::{workspace_dir, DemoText, Value, WeirProcess};

const CHUNKS: u32 = 100;
const RATE: u32 = 40;
const PROMPT_CANCEL: &str = "cancel me in the browser";
const PROMPT_RELOAD: &str = "reload me in the browser";
/// The longest the browser script may run (it gives up by itself at 90 s).
const NODE_TIMEOUT: Duration = Duration::from_secs(120);

/// `name` on the PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn chromium() -> PathBuf {
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

fn node() -> PathBuf {
    on_path("node").unwrap_or_else(|| {
        panic!(
            "Node.js is not installed: the browser test runs tests/browser/page.mjs with `node` \
             (Debian package `nodejs`; `./scripts/test.sh --setup-only` installs it)"
        )
    })
}

fn browser_dir() -> PathBuf {
    let dir = workspace_dir().join("tests").join("browser");
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .is_file(),
        "playwright-core is not installed in {}: run `npm ci --prefix tests/browser` \
         (`./scripts/test.sh --setup-only` does)",
        dir.display()
    );
    dir
}

/// Runs `node page.mjs ARGS…`; returns (success, stdout, stderr). Killed
/// after `NODE_TIMEOUT`.
fn run_node(args: &[String]) -> (bool, String, String) {
    let node = node();
    let chromium = chromium();
    let dir = browser_dir();
    let mut child = Command::new(&node)
        .arg(dir.join("page.mjs"))
        .args(args)
        .current_dir(&dir)
        .env("CHROMIUM_PATH", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", node.display()));
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
    if done_rx.recv_timeout(NODE_TIMEOUT).is_err() {
        // Ask politely (playwright closes the browser on SIGTERM), then not.
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
        panic!(
            "node page.mjs did not finish within {NODE_TIMEOUT:?}\nstdout:\n{out}\nstderr:\n{err}"
        );
    }
    let (status, out) = waiter.join().expect("the waiter thread");
    let err = err_reader.join().expect("the stderr thread");
    let status = status.expect("wait for node");
    (status.success(), out, err)
}

/// The assistant message `id` in the server's history of `session`.
async fn history_entry(weir: &WeirProcess, session: &str, user: &str, id: &str) -> Value {
    let r = weir
        .http(
            "GET",
            &format!("/v1/sessions/{session}/messages?user_id={user}"),
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["message_id"] == id).cloned())
        .unwrap_or_else(|| panic!("{id} in the history of {session}: {}", r.body))
}

async fn browser_streams_a_reply_cancels_it_and_a_reload_mid_reply_continues_to_the_full_text() {
    let weir = WeirProcess::start(&[
        "--demo-chunks",
        &CHUNKS.to_string(),
        "--demo-rate",
        &RATE.to_string(),
    ]);
    let args = vec![
        weir.url(""),
        PROMPT_CANCEL.to_owned(),
        PROMPT_RELOAD.to_owned(),
    ];
    let (ok, out, err) = ::tokio::task::spawn_blocking(move || run_node(&args))
        .await
        .expect("the node runner");
    assert!(
        ok,
        "the browser scenario failed\nstdout:\n{out}\nstderr:\n{err}"
    );
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in:\n{out}\nstderr:\n{err}"));
    let result: Value = serde_json::from_str(line).expect("RESULT is JSON");
    assert_eq!(
        result["page_errors"],
        serde_json::json!([]),
        "uncaught errors in the page"
    );

    // 1. It streamed (the text grew while data-status was streaming), then
    // Cancel showed the cancelled state with exactly the server's text.
    let cancel = &result["cancel"];
    let first = cancel["first_len"].as_u64().expect("first_len");
    let grown = cancel["grown_len"].as_u64().expect("grown_len");
    assert!(first > 0 && grown > first, "streaming text grows: {cancel}");
    assert_eq!(cancel["status"], "cancelled", "{cancel}");
    assert_eq!(cancel["status_later"], "cancelled", "{cancel}");
    assert_eq!(
        cancel["text_later"], cancel["text"],
        "nothing appended after cancel"
    );
    let text = cancel["text"].as_str().expect("text");
    let full = DemoText::full(PROMPT_CANCEL, CHUNKS);
    assert!(
        text.len() < full.len() && full.starts_with(text),
        "the cancelled text is a proper prefix of the demo reply: {text:?}"
    );
    let session = cancel["session"].as_str().expect("session");
    let id = cancel["message_id"].as_str().expect("message_id");
    let entry = history_entry(&weir, session, "alice", id).await;
    assert_eq!(entry["status"], "cancelled");
    assert_eq!(entry["content"], text, "the page shows the server's text");

    // 1b. Cancel right after Send.
    let quick = &result["quick_cancel"];
    assert_eq!(quick["status"], "cancelled", "{quick}");
    let id = quick["message_id"].as_str().expect("message_id");
    let entry = history_entry(&weir, session, "alice", id).await;
    assert_eq!(entry["status"], "cancelled");
    assert_eq!(entry["content"], quick["text"]);

    // 2. After the reload the same reply was still streaming, went on, and
    // finished with exactly the demo text, once.
    let reload = &result["reload"];
    let full = DemoText::full(PROMPT_RELOAD, CHUNKS);
    assert_eq!(
        reload["after_status"], "streaming",
        "the reply is shown continuing after the reload: {reload}"
    );
    let after = reload["after_len"].as_u64().expect("after_len");
    assert!(
        after >= reload["before_len"].as_u64().expect("before_len"),
        "the reload kept the text shown: {reload}"
    );
    assert!(
        usize::try_from(after).expect("small") < full.len(),
        "{reload}"
    );
    assert_eq!(reload["status"], "completed", "{reload}");
    assert_eq!(
        reload["text"],
        full.as_str(),
        "the full demo text, no gap, no repeat"
    );
    assert_eq!(reload["assistant_count"], 1, "{reload}");
    let session = reload["session"].as_str().expect("session");
    let id = reload["message_id"].as_str().expect("message_id");
    let entry = history_entry(&weir, session, "bob", id).await;
    assert_eq!(entry["status"], "completed");
    assert_eq!(entry["content"], full.as_str());
}

weir_tests::both_runtimes! {
    browser_streams_a_reply_cancels_it_and_a_reload_mid_reply_continues_to_the_full_text,
}
