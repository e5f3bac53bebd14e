//! Pages in a real browser: headless Chromium (Debian's `chromium`) driven
//! by playwright-core (npm) against the real `weir` process —
//! `tests/browser/page.mjs` on the page weir serves at `/`, and
//! `tests/browser/seed.mjs` on a stand-in for the seed's React front end
//! (`tests/browser/seed_page.html`, `compat-seed.md`) served by the test from
//! another loopback origin, talking to weir's compatibility surface.
//!
//! Needs `node`, `chromium` and `tests/browser/node_modules`;
//! `./scripts/test.sh` installs all three. When one is missing this test
//! fails and says what to install: it never passes without a browser.

use std::process::Command;
use std::time::Duration;

use weir_tests::browser::{chromium, node, run_bounded};
use weir_tests::{
    read_http_request, workspace_dir, DemoText, RedisServer, Runtime, Value, WeirProcess,
};

const CHUNKS: u32 = 100;
const RATE: u32 = 40;
const PROMPT_CANCEL: &str = "cancel me in the browser";
const PROMPT_RELOAD: &str = "reload me in the browser";
/// The longest the browser script may run (it gives up by itself at 90 s).
const NODE_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `node SCRIPT ARGS…` (a script of `tests/browser`); returns
/// (success, stdout, stderr). Killed after `NODE_TIMEOUT`.
fn run_node(script: &str, args: &[String]) -> (bool, String, String) {
    let dir = weir_tests::browser::scripts_dir();
    let mut command = Command::new(node());
    command
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .env("CHROMIUM_PATH", chromium());
    let ran = run_bounded(command, NODE_TIMEOUT);
    (ran.success, ran.stdout, ran.stderr)
}

/// Runs a browser script; its `RESULT` line as JSON.
async fn browse(script: &'static str, args: Vec<String>) -> Value {
    let (ok, out, err) = ::tokio::task::spawn_blocking(move || run_node(script, &args))
        .await
        .expect("the node runner");
    assert!(
        ok,
        "the browser scenario {script} failed\nstdout:\n{out}\nstderr:\n{err}"
    );
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in:\n{out}\nstderr:\n{err}"));
    serde_json::from_str(line).expect("RESULT is JSON")
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
    let result = browse("page.mjs", args).await;
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

/// Serves `tests/browser/seed_page.html` to every request on a loopback
/// port of its own (another origin than weir's): its origin
/// (`http://127.0.0.1:PORT`). The task ends with the test's runtime.
async fn serve_seed_page() -> String {
    let html = std::fs::read(workspace_dir().join("tests/browser/seed_page.html"))
        .expect("tests/browser/seed_page.html");
    let listener = ::tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port for the page");
    let origin = format!("http://{}", listener.local_addr().expect("its address"));
    ::tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let html = html.clone();
            ::tokio::spawn(async move {
                use ::tokio::io::AsyncWriteExt;
                let _ = read_http_request(&mut stream).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                    html.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&html).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    origin
}

/// The seed front end, unchanged in behaviour, served from another origin:
/// its WebSocket on `ws_node`, its HTTP calls (send, Cancel) on `api_node`.
async fn seed_front_end_on(ws_node: &WeirProcess, api_node: &WeirProcess, origin: &str) {
    let ws = format!("ws://{}/ws/chat", ws_node.addr());
    let api = format!("http://{}/api", api_node.addr());
    let url = format!("{origin}/?ws={ws}&api={api}");
    let result = browse(
        "seed.mjs",
        vec![url, PROMPT_CANCEL.to_owned(), PROMPT_RELOAD.to_owned()],
    )
    .await;
    assert_eq!(result["page_errors"], serde_json::json!([]), "{result}");
    assert_eq!(
        result["parse_errors"], 0,
        "the page threw on a frame: {result}"
    );
    assert_eq!(
        result["alerts"],
        serde_json::json!([]),
        "the page alerted: {result}"
    );

    // 1. Streamed as growing text; one click on Cancel ended the bubble with
    // the suffix, the Cancel button went, nothing followed.
    let cancel = &result["cancel"];
    let samples: Vec<&str> = cancel["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for pair in samples.windows(2) {
        assert!(
            pair[1].len() > pair[0].len() && pair[1].starts_with(pair[0]),
            "{cancel}"
        );
    }
    assert_eq!(cancel["cancel_posts"], 1, "one click: {cancel}");
    assert_eq!(cancel["cancel_answers"], serde_json::json!(["cancelled"]));
    assert_eq!(cancel["cancel_shown"], false, "{cancel}");
    assert_eq!(cancel["input_disabled"], false, "{cancel}");
    assert_eq!(cancel["complete_later"], true, "{cancel}");
    assert_eq!(
        cancel["text_later"], cancel["text"],
        "nothing after the end"
    );
    let text = cancel["text"].as_str().expect("text");
    let shown = text
        .strip_suffix("\n\n[Đã hủy]")
        .unwrap_or_else(|| panic!("the cancelled suffix: {text:?}"));
    let full = DemoText::full(PROMPT_CANCEL, CHUNKS);
    assert!(
        shown.len() < full.len() && full.starts_with(shown),
        "a proper prefix of the demo reply: {shown:?}"
    );
    assert_eq!(
        result["first_text_after_reload"], text,
        "history shows the same text"
    );

    // 2. The second send was not busy; after a reload mid-reply the reply
    // came back from history and catch-up, went on and completed with the
    // full text, in one bubble; the optimistic bubbles are gone (a reload
    // reads history only).
    let reload = &result["reload"];
    assert_eq!(reload["after_shown"], true, "{reload}");
    assert_eq!(
        reload["text"],
        DemoText::full(PROMPT_RELOAD, CHUNKS).as_str(),
        "{reload}"
    );
    assert_eq!(reload["text_later"], reload["text"]);
    assert_eq!(reload["cancel_shown"], false);
    assert_eq!(reload["input_disabled"], false);
    let bubbles = reload["bubbles"].as_array().expect("bubbles");
    let roles: Vec<&str> = bubbles.iter().filter_map(|b| b["role"].as_str()).collect();
    assert_eq!(
        roles,
        ["user", "assistant", "user", "assistant"],
        "{reload}"
    );
    assert!(bubbles.iter().all(|b| b["complete"] == true), "{reload}");
    assert!(
        bubbles
            .iter()
            .all(|b| !b["id"].as_str().unwrap_or("temp_").starts_with("temp_")),
        "{reload}"
    );
}

async fn the_seed_front_end_from_another_origin_streams_cancels_in_one_click_and_reloads_to_the_final_text(
) {
    let origin = serve_seed_page().await;
    let (chunks, rate) = (CHUNKS.to_string(), RATE.to_string());
    let weir = WeirProcess::start(&[
        "--demo-chunks",
        &chunks,
        "--demo-rate",
        &rate,
        "--cors-origin",
        &origin,
    ]);
    seed_front_end_on(&weir, &weir, &origin).await;
}

async fn the_seed_front_end_with_its_websocket_on_node_a_and_its_calls_on_node_b_cancels_in_one_click(
) {
    let origin = serve_seed_page().await;
    let redis = RedisServer::start();
    let rt = Runtime::current();
    let pace = (u64::from(CHUNKS), u64::from(RATE));
    let flags = ["--cors-origin", origin.as_str()];
    let a = WeirProcess::start_on_redis(rt, &redis, "a", pace, &flags);
    let b = WeirProcess::start_on_redis(rt, &redis, "b", pace, &flags);
    seed_front_end_on(&a, &b, &origin).await;
}

weir_tests::both_runtimes! {
    browser_streams_a_reply_cancels_it_and_a_reload_mid_reply_continues_to_the_full_text,
    the_seed_front_end_from_another_origin_streams_cancels_in_one_click_and_reloads_to_the_final_text,
    the_seed_front_end_with_its_websocket_on_node_a_and_its_calls_on_node_b_cancels_in_one_click,
}
