//! The `openai` generator inside the running server, on tokio and on smol,
//! against a scripted fake upstream on loopback (a raw TCP server writing
//! chunked SSE): real sockets, real WebSocket clients. The real model server
//! is exercised by `tests/tests/llm.rs`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ::tokio::io::{AsyncReadExt, AsyncWriteExt};
use ::tokio::net::{TcpListener, TcpStream};
use ::tokio::sync::mpsc;
use weir_runtime::openai::{OpenAiConfig, Upstream};
use weir_runtime::{GeneratorConfig, RuntimeConfig};
use weir_tests::{chunks, contiguous, demo_config, json, only, InProcess, T};

weir_tests::both_runtimes! {
    a_failing_upstream_reply_leaves_a_concurrent_reply_in_another_conversation_untouched,
    a_cancel_closes_the_upstream_connection_at_once,
}

/// A fake upstream: a prompt containing "fail" gets a 503; any other gets
/// `deltas` deltas, one per `gap`, then usage and `[DONE]`. Each time a
/// client closes a connection mid-stream, `closed` gets the number of
/// deltas written before.
async fn fake_upstream(deltas: usize, gap: Duration) -> (SocketAddr, mpsc::Receiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (closed_tx, closed) = mpsc::channel(16);
    ::tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let closed_tx = closed_tx.clone();
            ::tokio::spawn(answer(stream, deltas, gap, closed_tx));
        }
    });
    (addr, closed)
}

async fn answer(mut stream: TcpStream, deltas: usize, gap: Duration, closed: mpsc::Sender<usize>) {
    let request = weir_tests::read_http_request(&mut stream).await;
    if request.contains("fail") {
        let body = r#"{"error":{"message":"overloaded"}}"#;
        let _ = stream
            .write_all(
                format!(
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
        return;
    }
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let event = |data: String| {
        let e = format!("data: {data}\n\n");
        format!("{:x}\r\n{e}\r\n", e.len())
    };
    for i in 0..deltas {
        let data = json!({"choices": [{"index": 0, "delta": {"content": format!("w{i} ")}}]});
        // A write to a closed socket fails at once or at the next one;
        // a read of 0 bytes says the same sooner.
        let mut probe = [0u8; 1];
        ::tokio::select! {
            r = stream.read(&mut probe) => {
                if matches!(r, Ok(0) | Err(_)) {
                    let _ = closed.send(i).await;
                    return;
                }
            }
            () = ::tokio::time::sleep(gap) => {}
        }
        if stream
            .write_all(event(data.to_string()).as_bytes())
            .await
            .is_err()
        {
            let _ = closed.send(i).await;
            return;
        }
    }
    let tail = [
        event(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#.to_owned()),
        event(format!(
            r#"{{"choices":[],"usage":{{"prompt_tokens":7,"completion_tokens":{deltas}}}}}"#
        )),
        event("[DONE]".to_owned()),
        "0\r\n\r\n".to_owned(),
    ];
    for part in tail {
        let _ = stream.write_all(part.as_bytes()).await;
    }
}

fn openai_config(upstream: SocketAddr) -> RuntimeConfig {
    let mut c = demo_config(1, 1.0);
    let upstream = Upstream::parse(&format!("http://{upstream}")).expect("a valid URL");
    c.generator = GeneratorConfig::Openai(OpenAiConfig::new(upstream, "fake"));
    c
}

async fn a_failing_upstream_reply_leaves_a_concurrent_reply_in_another_conversation_untouched() {
    let (upstream, _closed) = fake_upstream(6, Duration::from_millis(50)).await;
    let server = InProcess::start(openai_config(upstream)).await;
    let mut a = server.ws("session_id=a&user_id=u").await;
    let mut b = server.ws("session_id=b&user_id=u").await;
    a.chat("stream please", "r1").await;
    b.chat("fail please", "r2").await;
    let ((a_frames, a_end), (b_frames, b_end)) = ::tokio::join!(a.until_end(), b.until_end());

    assert_eq!(b_end["status"], "failed");
    assert_eq!(b_end["reason"], "upstream_status_503");
    assert!(chunks(&b_frames).is_empty());

    assert_eq!(a_end["status"], "completed");
    let (text, last) = contiguous(0, &chunks(&a_frames));
    assert_eq!(last, 6);
    assert_eq!(text, "w0 w1 w2 w3 w4 w5 ");
    let usage = &a_end["usage"];
    assert_eq!(
        (&usage["prompt_tokens"], &usage["completion_tokens"]),
        (&json!(7), &json!(6)),
        "the upstream's usage: {a_end:?}"
    );

    let metrics = server.metrics().await;
    assert_eq!(
        metrics.get("weir_upstream_errors_total{kind=\"status\"}"),
        1.0
    );
    assert_eq!(
        metrics.get("weir_upstream_tokens_total{outcome=\"completed\",type=\"completion\"}"),
        6.0
    );
    drop((a, b));
    server.shutdown().await.expect("clean shutdown");
}

async fn a_cancel_closes_the_upstream_connection_at_once() {
    let (upstream, mut closed) = fake_upstream(1000, Duration::from_millis(20)).await;
    let server = InProcess::start(openai_config(upstream)).await;
    let mut ws = server.ws("session_id=c&user_id=u").await;
    ws.chat("a long one", "r1").await;
    let frames = ws.until_seq(None, 3).await;
    let mid = only(&frames, "ack").str("message_id").to_owned();
    let asked = Instant::now();
    ws.cancel(Some(&mid), "k").await;
    let (frames, end) = ws.until_end().await;
    assert_eq!(only(&frames, "cancel_result")["status"], "cancelled");
    assert_eq!(end["status"], "cancelled");

    let written = ::tokio::time::timeout(T, closed.recv())
        .await
        .expect("the upstream sees the close in time")
        .expect("a close report");
    let after = asked.elapsed();
    assert!(written < 1000, "cut mid-stream after {written} deltas");
    assert!(
        after < Duration::from_secs(1),
        "the upstream saw the close {after:?} after the cancel"
    );
    // The aborted generation is counted as cancelled (an estimate).
    let counted = server
        .metrics()
        .await
        .get("weir_upstream_tokens_total{outcome=\"cancelled\",type=\"completion\"}");
    assert!(counted >= 3.0, "{counted}");
    drop(ws);
    server.shutdown().await.expect("clean shutdown");
}
