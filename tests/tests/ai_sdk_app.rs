//! The `useChat` example app (`examples/ai-sdk-chat`: Vite + React,
//! `@ai-sdk/react`) in a real browser against the real `weir` process, over
//! each of the SDK's stock transports. The test builds the app (`vite build`
//! into the target dir), serves the built files from a loopback origin of
//! its own (so CORS and `--cors-origin` are part of it), and runs
//! `tests/browser/ai_sdk_app.mjs` in headless Chromium: send, watch the reply
//! stream, Stop (the reply ends cancelled on exactly the text weir's history
//! keeps, nothing after), send again, reload mid-reply (the same reply comes
//! back, goes on and completes with exactly the history's text, once). A
//! screenshot of the page at the end goes to
//! `<target>/ai-sdk-chat/RUNTIME-TRANSPORT.png` (the path is printed).
//!
//! With the demo generator on both runtimes; with the `openai` generator in
//! front of a real model (`#[ignore]`d: `./scripts/test.sh` runs it in its
//! LLM stage, alone).
//!
//! Needs `node`, `chromium`, `tests/browser/node_modules` and
//! `examples/ai-sdk-chat/node_modules` (`./scripts/test.sh` installs all of
//! them); without one this test fails and says what to install.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use weir_tests::browser::{chromium, node, run_bounded};
use weir_tests::llm::LlmServer;
use weir_tests::{
    read_http_request, target_dir, workspace_dir, DemoText, Runtime, Value, WeirProcess,
};

const CHUNKS: u32 = 100;
const RATE: u32 = 40;
/// The prompts: the reply to the first is stopped, the page is reloaded in
/// the middle of the reply to the second.
const DEMO_PROMPTS: [&str; 2] = ["stop me in the useChat app", "reload me in the useChat app"];
/// Prompts that make the model write at length (up to `MODEL_TOKENS`).
const MODEL_PROMPTS: [&str; 2] = [
    "Write a long story about a river and the people who live beside it.",
    "Write a long essay about the history of bridges.",
];
const MODEL_TOKENS: u32 = 250;
/// The longest `vite build` may take (about 15 s on 2 cores).
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest the browser script may run with the demo generator (it gives
/// up by itself 30 s earlier), and with a real model on a busy machine.
const NODE_TIMEOUT: Duration = Duration::from_secs(180);
const NODE_TIMEOUT_MODEL: Duration = Duration::from_secs(600);

fn app_dir() -> PathBuf {
    let dir = workspace_dir().join("examples").join("ai-sdk-chat");
    assert!(
        dir.join("node_modules/vite/package.json").is_file()
            && dir
                .join("node_modules/@ai-sdk/react/package.json")
                .is_file(),
        "the example app's packages are not installed in {}: run `npm ci --prefix \
         examples/ai-sdk-chat` (`./scripts/test.sh --setup-only` does)",
        dir.display()
    );
    dir
}

/// Builds the app once per test process (`vite build`, its output in
/// `<target>/ai-sdk-chat/dist`); the folder of the built files.
fn built_app() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let app = app_dir();
        let out = target_dir().join("ai-sdk-chat").join("dist");
        let started = Instant::now();
        let mut command = Command::new(node());
        command
            .arg(app.join("node_modules/vite/bin/vite.js"))
            .arg("build")
            .arg("--outDir")
            .arg(&out)
            .arg("--emptyOutDir")
            .args(["--logLevel", "error"])
            .current_dir(&app);
        let ran = run_bounded(command, BUILD_TIMEOUT);
        assert!(
            ran.success && out.join("index.html").is_file(),
            "vite build of {} failed\nstdout:\n{}\nstderr:\n{}",
            app.display(),
            ran.stdout,
            ran.stderr
        );
        eprintln!(
            "built the useChat app into {} in {:?}",
            out.display(),
            started.elapsed()
        );
        out
    })
}

/// The `Content-Type` of a built file.
fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// Serves the files of `dir` on a loopback port of its own (another origin
/// than weir's; `/` is `index.html`, a missing file 404): its origin,
/// `http://127.0.0.1:PORT`. The task ends with the test's runtime.
async fn serve_dir(dir: &'static Path) -> String {
    let listener = ::tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port for the app");
    let addr: SocketAddr = listener.local_addr().expect("its address");
    ::tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            ::tokio::spawn(async move {
                use ::tokio::io::AsyncWriteExt;
                let request = read_http_request(&mut stream).await;
                let target = request.split_whitespace().nth(1).unwrap_or("/");
                let path = target.split(['?', '#']).next().unwrap_or("/");
                let path = if path == "/" { "/index.html" } else { path };
                let relative = Path::new(path.trim_start_matches('/'));
                let safe = relative
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)));
                let file = dir.join(relative);
                let (status, kind, body) = match std::fs::read(&file) {
                    Ok(body) if safe => ("200 OK", content_type(&file), body),
                    _ => ("404 Not Found", "text/plain", b"not found".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
                     Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

/// The messages of chat `id` (user `anonymous`) in weir's history.
async fn history(weir: &WeirProcess, id: &str) -> Vec<Value> {
    let r = weir
        .http("GET", &format!("/v1/sessions/{id}/messages"), "")
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["messages"].as_array().expect("messages").clone()
}

fn entry<'a>(history: &'a [Value], id: &str) -> &'a Value {
    history
        .iter()
        .find(|m| m["message_id"] == id)
        .unwrap_or_else(|| panic!("{id} in the history {history:#?}"))
}

/// Runs the browser script on the app served at `origin`, talking to
/// `weir` over `transport` (`ws` or `http`) with the `generator`'s prompts,
/// and checks what the page showed against weir's history: the stopped
/// reply's text and the reloaded reply's text. `full_reply` is the whole
/// text of the reloaded reply when it is known beforehand (the demo
/// generator's).
async fn drive_the_app(
    weir: &WeirProcess,
    origin: &str,
    transport: &str,
    generator: &str,
    full_reply: Option<&str>,
) {
    let prompts = if generator == "demo" {
        DEMO_PROMPTS
    } else {
        MODEL_PROMPTS
    };
    let chat = format!("app-{generator}-{transport}-{}", std::process::id());
    let url = format!(
        "{origin}/?weir={}&transport={transport}&chat={chat}",
        weir.url("")
    );
    let shot = target_dir().join("ai-sdk-chat").join(format!(
        "{}-{generator}-{transport}.png",
        Runtime::current().name()
    ));
    let args = vec![
        url,
        prompts[0].to_owned(),
        prompts[1].to_owned(),
        shot.display().to_string(),
    ];
    let limit = if generator == "demo" {
        NODE_TIMEOUT
    } else {
        NODE_TIMEOUT_MODEL
    };
    let started = Instant::now();
    let ran = ::tokio::task::spawn_blocking(move || {
        let dir = weir_tests::browser::scripts_dir();
        let mut command = Command::new(node());
        command
            .arg(dir.join("ai_sdk_app.mjs"))
            .args(&args)
            .current_dir(&dir)
            .env("CHROMIUM_PATH", chromium())
            .env(
                "OVERALL_MS",
                (limit - Duration::from_secs(30)).as_millis().to_string(),
            );
        run_bounded(command, limit)
    })
    .await
    .expect("the node runner");
    assert!(
        ran.success,
        "the useChat app over {transport} failed\nstdout:\n{}\nstderr:\n{}\nweir's log:\n{}",
        ran.stdout,
        ran.stderr,
        weir.log()
    );
    eprintln!(
        "the useChat app over {transport}: {:?}; screenshot: {}",
        started.elapsed(),
        shot.display()
    );
    let line = ran
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in:\n{}", ran.stdout));
    let result: Value = serde_json::from_str(line).expect("RESULT is JSON");
    assert_eq!(result["page_errors"], serde_json::json!([]), "{result}");
    let history = history(weir, &chat).await;

    // 1. It streamed (growing text), Stop ended it cancelled on exactly the
    // text weir keeps, and nothing followed.
    let stop = &result["stop"];
    let samples: Vec<&str> = stop["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(samples.len() >= 3, "it streamed: {stop}");
    for pair in samples.windows(2) {
        assert!(
            pair[1].len() > pair[0].len() && pair[1].starts_with(pair[0]),
            "the text grows: {stop}"
        );
    }
    assert_eq!(stop["status"], "cancelled", "{stop}");
    assert_eq!(stop["status_later"], "cancelled", "{stop}");
    assert_eq!(stop["text_later"], stop["text"], "nothing after the stop");
    let stopped = entry(&history, stop["message_id"].as_str().expect("id"));
    assert_eq!(stopped["status"], "cancelled", "{stopped}");
    assert_eq!(
        stopped["content"], stop["text"],
        "the page ends on weir's text"
    );
    assert_eq!(
        result["stopped_text_after_reload"], stop["text"],
        "after the reload the history shows the same text"
    );

    // 2. After the reload the same reply showed up, went on streaming and
    // completed with exactly the history's text, once.
    let reload = &result["reload"];
    let after = reload["lengths_after_reload"].as_array().expect("lengths");
    assert!(
        !after.is_empty(),
        "the reply streamed on after the reload: {reload}"
    );
    assert_eq!(reload["prefixes_of_final"], true, "{reload}");
    assert_eq!(reload["status"], "completed", "{reload}");
    assert_eq!(reload["text_later"], reload["text"], "{reload}");
    let text = reload["text"].as_str().expect("text");
    let before = reload["before_text"].as_str().expect("before_text");
    assert!(
        before.len() < text.len() && text.starts_with(before),
        "{reload}"
    );
    let completed = entry(&history, reload["message_id"].as_str().expect("id"));
    assert_eq!(completed["status"], "completed", "{completed}");
    assert_eq!(completed["content"], text, "the page shows weir's text");
    if let Some(full) = full_reply {
        assert_eq!(text, full, "the whole reply, no gap, no repeat");
    }
    let roles: Vec<&str> = result["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["role"].as_str())
        .collect();
    assert_eq!(
        roles,
        ["user", "assistant", "user", "assistant"],
        "{result}"
    );
    assert_eq!(history.len(), 4, "{history:#?}");
}

async fn demo_weir() -> (WeirProcess, String) {
    let origin = serve_dir(built_app()).await;
    let (chunks, rate) = (CHUNKS.to_string(), RATE.to_string());
    let weir = WeirProcess::start(&[
        "--demo-chunks",
        &chunks,
        "--demo-rate",
        &rate,
        "--cors-origin",
        &origin,
    ]);
    (weir, origin)
}

async fn the_use_chat_app_over_the_websocket_streams_stops_on_the_kept_text_and_a_reload_mid_reply_continues_to_the_exact_text(
) {
    let (weir, origin) = demo_weir().await;
    let full = DemoText::full(DEMO_PROMPTS[1], CHUNKS);
    drive_the_app(&weir, &origin, "ws", "demo", Some(&full)).await;
}

async fn the_use_chat_app_over_http_streams_stops_on_the_kept_text_and_a_reload_mid_reply_continues_to_the_exact_text(
) {
    let (weir, origin) = demo_weir().await;
    let full = DemoText::full(DEMO_PROMPTS[1], CHUNKS);
    drive_the_app(&weir, &origin, "http", "demo", Some(&full)).await;
}

async fn the_use_chat_app_on_a_real_model_stops_and_resumes_over_both_transports() {
    let origin = serve_dir(built_app()).await;
    let mut llm = LlmServer::start(2);
    llm.ready().await;
    let mut args = weir_tests::llm::openai_args(&llm.url(), MODEL_TOKENS);
    args.extend(["--upstream-timeout", "30", "--cors-origin", &origin].map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let weir = WeirProcess::start(&args);
    for transport in ["ws", "http"] {
        drive_the_app(&weir, &origin, transport, "openai", None).await;
    }
}

weir_tests::both_runtimes! {
    the_use_chat_app_over_the_websocket_streams_stops_on_the_kept_text_and_a_reload_mid_reply_continues_to_the_exact_text,
    the_use_chat_app_over_http_streams_stops_on_the_kept_text_and_a_reload_mid_reply_continues_to_the_exact_text,
    #[ignore = "needs the model server: scripts/test.sh runs it in the LLM stage, alone"]
    the_use_chat_app_on_a_real_model_stops_and_resumes_over_both_transports,
}
