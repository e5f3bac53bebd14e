//! The Vercel AI SDK's own chat transports against the real `weir` process
//! (PROTOCOL.md, "AI SDK transports"): `tests/ai-sdk/transports.mjs` drives
//! `WebSocketChatTransport` and `DefaultChatTransport` from the pinned `ai`
//! package (and a raw socket client for what the classes hide:
//! `lastSequence`, the frames after an abort, bad frames), on both runtimes,
//! single node and two nodes on one Redis.
//!
//! Needs `node` and `tests/ai-sdk/node_modules` (`./scripts/test.sh`
//! installs them with `npm ci`); without them this test fails and says what
//! to install. Every wait is bounded; no assertion is about speed.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use weir_tests::{workspace_dir, RedisServer, Runtime, WeirProcess};

/// Demo replies long enough to stop and resume mid-way (about 1.5 s).
const DEMO: [&str; 4] = ["--demo-chunks", "60", "--demo-rate", "40"];
/// The longest one scenario may run (the script gives up by itself at 60 s).
const NODE_TIMEOUT: Duration = Duration::from_secs(90);

fn script_dir() -> PathBuf {
    let dir = workspace_dir().join("tests").join("ai-sdk");
    assert!(
        dir.join("node_modules/ai/package.json").is_file(),
        "the AI SDK is not installed in {}: run `npm ci --prefix tests/ai-sdk` \
         (`./scripts/test.sh --setup-only` does)",
        dir.display()
    );
    dir
}

/// Runs `node transports.mjs SCENARIO A [B]` and fails the test with its
/// output unless it printed `ok SCENARIO`.
fn scenario(name: &str, a: &WeirProcess, b: Option<&WeirProcess>) {
    scenario_with_env(name, a, b, &[]);
}

/// [`scenario`] with `env` set for the script.
fn scenario_with_env(name: &str, a: &WeirProcess, b: Option<&WeirProcess>, env: &[(&str, &str)]) {
    let dir = script_dir();
    let mut args = vec![name.to_owned(), a.url("")];
    args.extend(b.map(|b| b.url("")));
    let mut child = Command::new("node")
        .arg(dir.join("transports.mjs"))
        .args(&args)
        .envs(env.iter().copied())
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("spawn node ({e}): Node.js is needed (Debian package `nodejs`)")
        });
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (done_tx, done_rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let (mut out, mut err) = (String::new(), String::new());
        let _ = stdout.read_to_string(&mut out);
        let _ = stderr.read_to_string(&mut err);
        let status = child.wait();
        let _ = done_tx.send(());
        (status, out, err)
    });
    if done_rx.recv_timeout(NODE_TIMEOUT).is_err() {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status();
    }
    let (status, out, err) = waiter.join().expect("the waiter thread");
    let ok = status.is_ok_and(|s| s.success()) && out.contains(&format!("ok {name}"));
    assert!(
        ok,
        "scenario {name} failed\nstdout:\n{out}\nstderr:\n{err}\nweir log (A):\n{}",
        a.log()
    );
}

fn single(names: &[&str]) {
    let weir = WeirProcess::start(&DEMO);
    for name in names {
        scenario(name, &weir, None);
    }
}

async fn over_the_socket_replies_stream_stop_fences_resume_is_exact_chats_interleave_busy_and_bad_frames_are_errors(
) {
    single(&[
        "ws_reply_assembles",
        "ws_stop_fences",
        "ws_resume_exact",
        "ws_two_chats_one_socket",
        "ws_busy",
        "ws_bad_frames",
    ]);
}

async fn over_http_replies_stream_resume_is_exact_stop_fences_and_busy_is_409() {
    single(&[
        "http_reply_assembles",
        "http_resume_exact",
        "http_last_event_id",
        "http_stop_on_other_node",
        "http_busy",
    ]);
}

async fn on_two_nodes_a_reply_of_node_a_resumes_exactly_on_node_b_and_a_stop_sent_to_b_fences_it() {
    let redis = RedisServer::start();
    let rt = Runtime::current();
    let a = WeirProcess::start_on_redis(rt, &redis, "a", (60, 40), &[]);
    let b = WeirProcess::start_on_redis(rt, &redis, "b", (60, 40), &[]);
    for name in [
        "ws_resume_exact",
        "http_resume_exact",
        "http_last_event_id",
        "http_stop_on_other_node",
    ] {
        scenario(name, &a, Some(&b));
    }
}

/// An HS256 token of `user` signed with `secret`.
fn token(secret: &str, user: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &weir_tests::json!({"sub": user, "exp": weir_tests::now_secs() + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("a JWT")
}

async fn under_token_auth_another_users_chat_of_the_same_id_is_another_conversation_its_resume_is_empty_and_its_stop_stops_nothing(
) {
    let secret = "ai-sdk-test-secret-of-32-bytes!!";
    let mut args = DEMO.to_vec();
    args.extend(["--auth", "token", "--jwt-secret", secret]);
    let weir = WeirProcess::start(&args);
    let (a, b) = (token(secret, "ada"), token(secret, "bob"));
    scenario_with_env(
        "other_users_chat",
        &weir,
        None,
        &[("WEIR_TEST_TOKEN_A", &a), ("WEIR_TEST_TOKEN_B", &b)],
    );
}

weir_tests::both_runtimes! {
    under_token_auth_another_users_chat_of_the_same_id_is_another_conversation_its_resume_is_empty_and_its_stop_stops_nothing,
    over_the_socket_replies_stream_stop_fences_resume_is_exact_chats_interleave_busy_and_bad_frames_are_errors,
    over_http_replies_stream_resume_is_exact_stop_fences_and_busy_is_409,
    on_two_nodes_a_reply_of_node_a_resumes_exactly_on_node_b_and_a_stop_sent_to_b_fences_it,
}
