//! The `openai` generator inside the running server, on tokio and on smol,
//! against a scripted fake upstream on loopback (a raw TCP server writing
//! chunked SSE): real sockets, real WebSocket clients. The real model server
//! is exercised by `tests/tests/llm.rs`.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ::tokio::io::{AsyncReadExt, AsyncWriteExt};
use ::tokio::net::{TcpListener, TcpStream};
use ::tokio::sync::mpsc;
use serde_json::json;
use support::*;
use weir_core::wire::{CancelStatus, ReplyStatus, ServerFrame};
use weir_runtime::openai::{OpenAiConfig, Upstream};
use weir_runtime::GeneratorConfig;

both_runtimes! {
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

fn openai_config(upstream: SocketAddr) -> weir_runtime::RuntimeConfig {
    let mut c = config(1, 1.0);
    let upstream = Upstream::parse(&format!("http://{upstream}")).expect("a valid URL");
    c.generator = GeneratorConfig::Openai(OpenAiConfig::new(upstream, "fake"));
    c
}

async fn a_failing_upstream_reply_leaves_a_concurrent_reply_in_another_conversation_untouched(
    rt: Rt,
) {
    let (upstream, _closed) = fake_upstream(6, Duration::from_millis(50)).await;
    let server = start(rt, openai_config(upstream)).await;
    let mut a = server.connect("session_id=a&user_id=u").await;
    let mut b = server.connect("session_id=b&user_id=u").await;
    handshake(&mut a).await;
    handshake(&mut b).await;
    send_json(&mut a, json!({"type": "chat", "content": "stream please"})).await;
    send_json(&mut b, json!({"type": "chat", "content": "fail please"})).await;
    let ((a_frames, a_end), (b_frames, b_end)) =
        ::tokio::join!(until_end(&mut a), until_end(&mut b));

    assert_eq!(b_end.status, ReplyStatus::Failed);
    assert_eq!(b_end.reason.as_deref(), Some("upstream_status_503"));
    assert!(chunks(&b_frames).is_empty());

    assert_eq!(a_end.status, ReplyStatus::Completed);
    let (text, last) = contiguous(0, &chunks(&a_frames));
    assert_eq!(last, 6);
    assert_eq!(text, "w0 w1 w2 w3 w4 w5 ");
    let usage = a_end.usage.expect("the upstream's usage");
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (7, 6));

    assert_eq!(
        server
            .metric("weir_upstream_errors_total{kind=\"status\"}")
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric("weir_upstream_tokens_total{outcome=\"completed\",type=\"completion\"}")
            .await,
        6.0
    );
    drop((a, b));
    server.shutdown().await.expect("clean shutdown");
}

async fn a_cancel_closes_the_upstream_connection_at_once(rt: Rt) {
    let (upstream, mut closed) = fake_upstream(1000, Duration::from_millis(20)).await;
    let server = start(rt, openai_config(upstream)).await;
    let mut ws = server.connect("session_id=c&user_id=u").await;
    handshake(&mut ws).await;
    send_json(&mut ws, json!({"type": "chat", "content": "a long one"})).await;
    // Until chunk 3.
    let mut message_id = None;
    loop {
        match next_frame(&mut ws).await {
            ServerFrame::Ack(ack) => message_id = Some(ack.message_id),
            ServerFrame::Chunk(c) if c.seq >= 3 => break,
            _ => {}
        }
    }
    let mid = message_id.expect("an ack before the chunks");
    let asked = Instant::now();
    send_json(
        &mut ws,
        json!({"type": "cancel", "message_id": mid.as_str(), "request_id": "k"}),
    )
    .await;
    let (frames, end) = until_end(&mut ws).await;
    let result = frames
        .iter()
        .find_map(|f| match f {
            ServerFrame::CancelResult(r) => Some(r.clone()),
            _ => None,
        })
        .expect("a cancel_result");
    assert_eq!(result.status, CancelStatus::Cancelled);
    assert_eq!(end.status, ReplyStatus::Cancelled);

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
        .metric("weir_upstream_tokens_total{outcome=\"cancelled\",type=\"completion\"}")
        .await;
    assert!(counted >= 3.0, "{counted}");
    drop(ws);
    server.shutdown().await.expect("clean shutdown");
}
