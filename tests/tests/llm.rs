//! The `openai` generator end to end: the real `weir` process in front of a
//! real model server (llama.cpp's server with SmolLM2-135M-Instruct, see
//! `weir_tests::llm`), with real WebSocket clients. Temperature 0 and a
//! fixed seed make the model's text reproducible.
//!
//! The tests that need the model are `#[ignore]`d: the model is CPU-bound,
//! so `./scripts/test.sh` runs them in a stage of their own, after
//! `cargo test --workspace`, one at a time:
//!
//! ```sh
//! scripts/llm-server.sh --setup-only   # the venv, once
//! cargo build -p weir-server --bin weir
//! cargo test -p weir-tests --test llm -- --ignored --test-threads=1
//! ```
//!
//! The test without the model (an unreachable upstream) runs with the rest.

use std::time::{Duration, Instant};

use weir_tests::llm::LlmServer;
use weir_tests::{chunks, contiguous, eventually, json, Frame, WeirProcess};

use weir_tests::llm::SEED;
const PROMPT: &str = "Tell me about rivers.";

/// `weir serve` with the openai generator in front of `upstream`.
fn weir(upstream: &str, max_tokens: u32) -> WeirProcess {
    let mut args = weir_tests::llm::openai_args(upstream, max_tokens);
    args.extend(["--upstream-timeout".to_owned(), "30".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    WeirProcess::start(&args)
}

/// A started and healthy model server (2 threads: the machine's cores).
async fn model() -> LlmServer {
    let mut llm = LlmServer::start(2);
    llm.ready().await;
    llm
}

/// The one frame of type `kind` among `frames`.
fn only<'a>(frames: &'a [Frame], kind: &str) -> &'a Frame {
    let found: Vec<&Frame> = frames.iter().filter(|f| f.is(kind)).collect();
    assert_eq!(found.len(), 1, "exactly one `{kind}` in {frames:#?}");
    found[0]
}

/// The same request, straight to the model server (not streamed).
async fn direct(llm: &LlmServer, max_tokens: u32) -> serde_json::Value {
    llm.complete(&json!({
        "model": "smollm2",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": SEED,
    }))
    .await
}

async fn a_real_models_reply_streams_through_weir_exactly_as_the_model_server_writes_it() {
    const MAX: u32 = 24;
    let llm = model().await;
    let weir = weir(&llm.url(), MAX);
    let mut ws = weir.ws("session_id=llm1&user_id=u").await;
    let started = Instant::now();
    ws.chat(PROMPT, "r1").await;
    let (frames, end) = ws.until_end().await;
    let mid = only(&frames, "ack").str("message_id").to_owned();
    assert_eq!(only(&frames, "start")["message_id"], mid.as_str());
    let first_chunk = frames.iter().position(|f| f.is("chunk")).expect("a chunk");
    assert!(
        frames[first_chunk..].iter().all(|f| f.is("chunk")),
        "nothing but chunks after the first: {frames:#?}"
    );
    let (text, last) = contiguous(0, &chunks(&frames));
    assert!(last >= 2, "the reply came in several chunks: {frames:#?}");
    assert_eq!(end["message_id"], mid.as_str());
    assert_eq!(end["status"], "completed", "{end:?}");
    assert_eq!(end.u64("final_seq"), last);
    eprintln!(
        "through weir: {last} chunks in {:?}: {text:?}",
        started.elapsed()
    );

    // The same request straight to the model server gives the same text.
    let answer = direct(&llm, MAX).await;
    let want = answer["choices"][0]["message"]["content"]
        .as_str()
        .expect("the answer's text");
    assert_eq!(text, want, "weir passes the model's text on unchanged");

    // History holds it.
    let r = weir
        .http("GET", "/v1/sessions/llm1/messages?user_id=u", "")
        .await;
    let messages = r.json()["messages"].as_array().expect("messages").clone();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1]["content"], text.as_str());
    assert_eq!(messages[1]["status"], "completed");
}

async fn end_carries_the_prompt_and_completion_tokens_the_model_server_counted() {
    const MAX: u32 = 8;
    let llm = model().await;
    let weir = weir(&llm.url(), MAX);
    let mut ws = weir.ws("session_id=llm2&user_id=u").await;
    ws.chat(PROMPT, "r1").await;
    let (frames, end) = ws.until_end().await;
    assert_eq!(end["status"], "completed", "{end:?}");
    let usage = &end["usage"];
    let prompt = usage["prompt_tokens"]
        .as_u64()
        .expect("usage.prompt_tokens");
    let completion = usage["completion_tokens"]
        .as_u64()
        .expect("usage.completion_tokens");
    assert_eq!(completion, u64::from(MAX), "the reply hit max_tokens");
    let (_, last) = contiguous(0, &chunks(&frames));
    assert!(
        last >= 1 && last <= completion,
        "one chunk per token at most: {last} chunks, {completion} tokens"
    );

    let answer = direct(&llm, MAX).await;
    assert_eq!(answer["usage"]["prompt_tokens"].as_u64(), Some(prompt));
    assert_eq!(
        answer["usage"]["completion_tokens"].as_u64(),
        Some(completion)
    );

    let m = weir.metrics().await;
    assert_eq!(
        m.get("weir_upstream_tokens_total{outcome=\"completed\",type=\"prompt\"}"),
        prompt as f64
    );
    assert_eq!(
        m.get("weir_upstream_tokens_total{outcome=\"completed\",type=\"completion\"}"),
        completion as f64
    );
    assert_eq!(m.get("weir_upstream_first_token_seconds_count"), 1.0);
}

async fn cancel_mid_reply_frees_the_model_servers_slot_and_no_chunk_follows_cancel_result() {
    const MAX: u32 = 400;
    let llm = model().await;
    let weir = weir(&llm.url(), MAX);
    let mut ws = weir.ws("session_id=llm3&user_id=u").await;
    ws.chat(PROMPT, "r1").await;
    let mut frames = ws.until_seq(None, 3).await;
    let mid = only(&frames, "ack").str("message_id").to_owned();
    assert!(llm.busy().await, "the model server is generating the reply");

    let cancelled = Instant::now();
    ws.cancel(Some(&mid), "k1").await;
    let (rest, end) = ws.until_end().await;
    frames.extend(rest);
    let at = frames
        .iter()
        .position(|f| f.is("cancel_result"))
        .expect("a cancel_result");
    let result = &frames[at];
    assert_eq!(result["status"], "cancelled", "{result:?}");
    let final_seq = result.u64("final_seq");
    let (_, last) = contiguous(0, &chunks(&frames[..at]));
    assert_eq!(last, final_seq);
    assert!(
        chunks(&frames[at..]).is_empty(),
        "a chunk after cancel_result: {frames:#?}"
    );
    assert_eq!(end["status"], "cancelled");
    assert_eq!(end.u64("final_seq"), final_seq);
    assert!(final_seq < u64::from(MAX), "cut mid-way: {final_seq}");

    // The model server stops: its slot is free long before 400 tokens.
    eventually("the model server's slot is free", || async {
        !llm.busy().await
    })
    .await;
    let freed = cancelled.elapsed();
    eprintln!("cancel → upstream slot free: {freed:?} (final_seq {final_seq})");
    assert_eq!(llm.metrics().await.get("llamacpp:requests_processing"), 0.0);

    // Nothing more of the reply on the connection.
    ::tokio::time::sleep(Duration::from_millis(500)).await;
    let extra = ws.ping("quiet").await;
    assert!(extra.is_empty(), "nothing after the end: {extra:#?}");

    // weir counted the aborted generation's tokens (deltas received; those
    // after the cancel were dropped, so at least final_seq).
    let m = weir.metrics().await;
    let counted = m.get("weir_upstream_tokens_total{outcome=\"cancelled\",type=\"completion\"}");
    assert!(counted >= final_seq as f64, "{counted} < {final_seq}");
    assert_eq!(m.get("weir_replies_total{outcome=\"cancelled\"}"), 1.0);
}

async fn the_model_server_killed_mid_reply_ends_the_reply_failed_and_weir_serves_on() {
    const MAX: u32 = 400;
    let mut llm = model().await;
    let weir = weir(&llm.url(), MAX);
    let mut ws = weir.ws("session_id=llm4&user_id=u").await;
    ws.chat(PROMPT, "r1").await;
    let mut frames = ws.until_seq(None, 2).await;
    let mid = only(&frames, "ack").str("message_id").to_owned();

    llm.kill();
    let (rest, end) = ws.until_end().await;
    frames.extend(rest);
    assert_eq!(end["message_id"], mid.as_str());
    assert_eq!(end["status"], "failed", "{end:?}");
    assert_eq!(end["reason"], "upstream_closed", "{end:?}");
    let (_, last) = contiguous(0, &chunks(&frames));
    assert_eq!(end.u64("final_seq"), last);

    // weir is up, the connection too, and the next reply fails at once
    // with its own reason (nothing listens there any more).
    assert_eq!(weir.http("GET", "/healthz", "").await.status, 200);
    ws.chat("still there?", "r2").await;
    let (_, end2) = ws.until_end().await;
    assert_eq!(end2["status"], "failed");
    assert_eq!(end2["reason"], "upstream_unreachable");

    let m = weir.metrics().await;
    assert_eq!(m.get("weir_upstream_errors_total{kind=\"closed\"}"), 1.0);
    assert_eq!(
        m.get("weir_upstream_errors_total{kind=\"unreachable\"}"),
        1.0
    );
    assert_eq!(m.get("weir_replies_total{outcome=\"failed\"}"), 2.0);
}

/// No model needed: runs with the rest of the suite.
async fn an_unreachable_upstream_ends_each_reply_failed_and_the_connection_stays_usable() {
    // A loopback port that was just free.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let upstream = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    let weir = weir(&upstream, 16);
    let mut ws = weir.ws("session_id=down&user_id=u").await;
    for rid in ["r1", "r2"] {
        ws.chat(PROMPT, rid).await;
        let (frames, end) = ws.until_end().await;
        assert!(chunks(&frames).is_empty());
        assert_eq!(end["status"], "failed", "{end:?}");
        assert_eq!(end["reason"], "upstream_unreachable");
        assert_eq!(end.u64("final_seq"), 0);
        assert!(end.get("usage").is_none(), "nothing is known: {end:?}");
    }
    assert!(ws.ping("alive").await.is_empty());
    assert_eq!(weir.http("GET", "/healthz", "").await.status, 200);
    let m = weir.metrics().await;
    assert_eq!(
        m.get("weir_upstream_errors_total{kind=\"unreachable\"}"),
        2.0
    );
}

weir_tests::both_runtimes! {
    #[ignore = "needs the model server: scripts/test.sh runs them alone"]
    a_real_models_reply_streams_through_weir_exactly_as_the_model_server_writes_it,
    #[ignore = "needs the model server: scripts/test.sh runs them alone"]
    end_carries_the_prompt_and_completion_tokens_the_model_server_counted,
    #[ignore = "needs the model server: scripts/test.sh runs them alone"]
    cancel_mid_reply_frees_the_model_servers_slot_and_no_chunk_follows_cancel_result,
    #[ignore = "needs the model server: scripts/test.sh runs them alone"]
    the_model_server_killed_mid_reply_ends_the_reply_failed_and_weir_serves_on,
    an_unreachable_upstream_ends_each_reply_failed_and_the_connection_stays_usable,
}
