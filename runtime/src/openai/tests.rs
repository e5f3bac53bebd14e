//! The upstream client against a scripted fake upstream: a raw TCP server
//! on loopback that reads the request and writes a chunked HTTP/1.1
//! response step by step. Real sockets and real parsing; only the model is
//! fake, which is what error injection needs (the real model server is
//! exercised by `tests/tests/llm.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use weir_core::ids::{MessageId, Seq};
use weir_core::wire::{Message, MessageStatus, Role, Usage};
use weir_core::GeneratorEvent;

use super::*;

/// The longest any test waits for anything.
const T: Duration = Duration::from_secs(10);

/// One step of the fake upstream's answer.
#[derive(Debug, Clone)]
enum Step {
    /// Raw bytes (the status line and headers).
    Raw(String),
    /// One HTTP chunk holding this text.
    Chunk(String),
    /// An SSE event `data: …` as one HTTP chunk.
    Data(String),
    /// The last chunk (`0\r\n\r\n`).
    End,
    /// A pause.
    Sleep(u64),
    /// Close the connection (as a dying server does).
    Close,
}

fn head(status: &str, content_type: &str) -> Step {
    Step::Raw(format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ))
}

fn sse_head() -> Step {
    head("200 OK", "text/event-stream")
}

fn delta(text: &str) -> Step {
    Step::Data(
        serde_json::json!({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}], "object": "chat.completion.chunk"})
            .to_string(),
    )
}

fn finish() -> Step {
    Step::Data(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#.to_owned())
}

fn usage(prompt: u64, completion: u64) -> Step {
    Step::Data(format!(
        r#"{{"choices":[],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}}}}"#,
        prompt + completion
    ))
}

fn done() -> Step {
    Step::Data("[DONE]".to_owned())
}

/// What the fake upstream saw.
#[derive(Debug)]
struct Seen {
    /// The request: head and body.
    request: String,
    /// How long after the script ended the client closed its side (`None`:
    /// not within [`T`]).
    closed_after: Option<Duration>,
}

/// A fake upstream that answers one connection with `script`.
struct Fake {
    addr: SocketAddr,
    seen: oneshot::Receiver<Seen>,
}

impl Fake {
    async fn start(script: Vec<Step>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, seen) = oneshot::channel();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let request = weir_tests::read_http_request(&mut stream).await;
            assert!(request.contains("\r\n\r\n"), "a whole request: {request:?}");
            for step in script {
                let bytes = match step {
                    Step::Raw(s) => s,
                    Step::Chunk(s) => format!("{:x}\r\n{s}\r\n", s.len()),
                    Step::Data(d) => {
                        let s = format!("data: {d}\n\n");
                        format!("{:x}\r\n{s}\r\n", s.len())
                    }
                    Step::End => "0\r\n\r\n".to_owned(),
                    Step::Sleep(ms) => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        continue;
                    }
                    Step::Close => {
                        drop(stream);
                        let _ = tx.send(Seen {
                            request,
                            closed_after: None,
                        });
                        return;
                    }
                };
                if stream.write_all(bytes.as_bytes()).await.is_err() {
                    break; // the client went away
                }
            }
            // Wait for the client to close its side.
            let started = tokio::time::Instant::now();
            let mut buf = [0u8; 256];
            let closed_after = loop {
                match tokio::time::timeout(T, stream.read(&mut buf)).await {
                    Ok(Ok(0) | Err(_)) => break Some(started.elapsed()),
                    Ok(Ok(_)) => {}
                    Err(_) => break None,
                }
            };
            let _ = tx.send(Seen {
                request,
                closed_after,
            });
        });
        Self { addr, seen }
    }

    fn config(&self) -> OpenAiConfig {
        let mut c = OpenAiConfig::new(
            Upstream::parse(&format!("http://{}", self.addr)).unwrap(),
            "test-model",
        );
        c.timeout = Duration::from_secs(5);
        c
    }

    async fn seen(self) -> Seen {
        tokio::time::timeout(T, self.seen)
            .await
            .expect("the fake upstream finishes in time")
            .expect("the fake upstream reports")
    }
}

async fn connect_to(upstream: &Upstream) -> std::io::Result<TokioIo<TcpStream>> {
    let stream = TcpStream::connect((upstream.host(), upstream.port())).await?;
    Ok(TokioIo::new(stream))
}

fn msg(role: Role, content: &str, status: MessageStatus) -> Message {
    Message {
        message_id: MessageId::parse("m1").unwrap(),
        role,
        content: content.to_owned(),
        status,
        created_at_ms: 0,
        seq: Seq::default(),
    }
}

fn context(prompt: &str) -> Vec<Message> {
    vec![msg(Role::User, prompt, MessageStatus::Completed)]
}

/// Runs one generation against `config`; returns its events, how it ended
/// and its tally.
async fn run(config: &OpenAiConfig, context: &[Message]) -> (Vec<GeneratorEvent>, Ended, Tally) {
    let mut events = Vec::new();
    let mut tally = Tally::default();
    let ended = tokio::time::timeout(
        T,
        generate(
            config,
            connect_to(&config.upstream),
            &TokioTimer::new(),
            context,
            &mut tally,
            |e| {
                events.push(e);
                async { true }
            },
        ),
    )
    .await
    .expect("the generation ends in time");
    (events, ended, tally)
}

fn deltas(events: &[GeneratorEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            GeneratorEvent::Delta(d) => Some(d.as_str()),
            _ => None,
        })
        .collect()
}

fn failed_reason(events: &[GeneratorEvent]) -> String {
    match events.last() {
        Some(GeneratorEvent::Failed { reason, .. }) => reason.clone(),
        other => panic!("the last event is Failed, got {other:?} in {events:?}"),
    }
}

#[tokio::test]
async fn streams_the_deltas_then_finished_with_the_reported_usage() {
    let fake = Fake::start(vec![
        sse_head(),
        Step::Data(
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}"#.to_owned(),
        ),
        delta("Rivers"),
        delta(" flow"),
        delta("."),
        finish(),
        usage(35, 3),
        done(),
        Step::End,
    ])
    .await;
    let mut config = fake.config();
    config.api_key = Some("sk-test".to_owned());
    config.max_tokens = Some(64);
    config.temperature = Some(0.0);
    config.seed = Some(42);
    config.system_prompt = Some("Be brief.".to_owned());
    let context = vec![
        msg(Role::User, "hello", MessageStatus::Completed),
        msg(Role::Assistant, "", MessageStatus::Failed),
        msg(Role::User, "again", MessageStatus::Completed),
        msg(Role::Assistant, "Hi th", MessageStatus::Cancelled),
        msg(Role::User, "tell me about rivers", MessageStatus::Completed),
    ];
    let (events, ended, tally) = run(&config, &context).await;
    let usage = Some(Usage {
        prompt_tokens: 35,
        completion_tokens: 3,
    });
    assert_eq!(
        events,
        vec![
            GeneratorEvent::Delta("Rivers".into()),
            GeneratorEvent::Delta(" flow".into()),
            GeneratorEvent::Delta(".".into()),
            GeneratorEvent::Finished { usage },
        ]
    );
    assert_eq!(ended, Ended::Completed);
    assert_eq!(tally.content_deltas, 3);
    assert_eq!(tally.reported, usage);
    assert!(tally.first_token.is_some());

    let seen = fake.seen().await;
    let (head, body) = seen.request.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
        "{head}"
    );
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("authorization: bearer sk-test\r\n"),
        "{head}"
    );
    assert!(
        lower.contains("content-type: application/json\r\n"),
        "{head}"
    );
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "model": "test-model",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hello"},
                {"role": "user", "content": "again"},
                {"role": "assistant", "content": "Hi th"},
                {"role": "user", "content": "tell me about rivers"},
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": 64,
            "temperature": 0.0,
            "seed": 42,
        })
    );
}

#[tokio::test]
async fn requests_go_under_the_upstreams_base_path_without_credentials_when_no_key_is_set() {
    let fake = Fake::start(vec![sse_head(), delta("ok"), finish(), done(), Step::End]).await;
    let mut config = fake.config();
    config.upstream = Upstream::parse(&format!("http://{}/llm/", fake.addr)).unwrap();
    let (events, ended, _) = run(&config, &context("hi")).await;
    assert_eq!(ended, Ended::Completed);
    assert_eq!(deltas(&events), "ok");
    let seen = fake.seen().await;
    assert!(
        seen.request
            .starts_with("POST /llm/v1/chat/completions HTTP/1.1\r\n"),
        "{}",
        seen.request
    );
    assert!(!seen.request.to_ascii_lowercase().contains("authorization"));
}

#[tokio::test]
async fn a_body_that_ends_after_a_finish_reason_without_done_completes_without_usage() {
    let fake = Fake::start(vec![
        sse_head(),
        delta("a"),
        delta("b"),
        finish(),
        Step::End,
    ])
    .await;
    let (events, ended, tally) = run(&fake.config(), &context("hi")).await;
    assert_eq!(ended, Ended::Completed);
    assert_eq!(deltas(&events), "ab");
    assert_eq!(
        events.last(),
        Some(&GeneratorEvent::Finished { usage: None })
    );
    assert_eq!(
        tally.completion_tokens(),
        2,
        "counted: the upstream did not report"
    );
    assert_eq!(tally.prompt_tokens(), None);
}

#[tokio::test]
async fn a_refused_connection_fails_upstream_unreachable() {
    // A port that was just free: bind, note it, close.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let config = OpenAiConfig::new(Upstream::parse(&format!("http://{addr}")).unwrap(), "m");
    let (events, ended, _) = run(&config, &context("hi")).await;
    assert_eq!(failed_reason(&events), "upstream_unreachable");
    assert_eq!(events.len(), 1, "nothing but the failure: {events:?}");
    assert!(matches!(
        ended,
        Ended::Failed(UpstreamError::Unreachable(_))
    ));
}

#[tokio::test]
async fn a_503_fails_upstream_status_503_with_the_body_in_the_error() {
    let body = r#"{"error":{"message":"Loading model","code":503}}"#;
    let fake = Fake::start(vec![
        head("503 Service Unavailable", "application/json"),
        Step::Chunk(body.to_owned()),
        Step::End,
    ])
    .await;
    let (events, ended, _) = run(&fake.config(), &context("hi")).await;
    assert_eq!(failed_reason(&events), "upstream_status_503");
    match ended {
        Ended::Failed(UpstreamError::Status { status, body }) => {
            assert_eq!(status, 503);
            assert!(body.contains("Loading model"), "{body}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_401_fails_upstream_status_401() {
    let fake = Fake::start(vec![
        head("401 Unauthorized", "application/json"),
        Step::Chunk(r#"{"error":"bad key"}"#.to_owned()),
        Step::End,
    ])
    .await;
    let (events, ended, _) = run(&fake.config(), &context("hi")).await;
    assert_eq!(failed_reason(&events), "upstream_status_401");
    assert!(matches!(ended, Ended::Failed(ref e) if e.kind() == ErrorKind::Status));
}

#[tokio::test]
async fn event_data_that_is_not_a_chunk_fails_upstream_malformed_after_the_good_deltas() {
    let fake = Fake::start(vec![
        sse_head(),
        delta("good"),
        Step::Data("{not json".to_owned()),
        delta("never"),
        done(),
        Step::End,
    ])
    .await;
    let (events, ended, tally) = run(&fake.config(), &context("hi")).await;
    assert_eq!(deltas(&events), "good");
    assert_eq!(failed_reason(&events), "upstream_malformed");
    assert!(matches!(ended, Ended::Failed(UpstreamError::Malformed(_))));
    assert_eq!(tally.content_deltas, 1);
}

#[tokio::test]
async fn invalid_utf8_in_the_stream_fails_upstream_malformed() {
    // The fake's steps are text; these bytes are not UTF-8, so write them
    // from a listener of its own.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let _ = weir_tests::read_http_request(&mut s).await;
        let mut bytes =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        let event: &[u8] = b"data: \xff\xfe\n\n";
        bytes.extend_from_slice(format!("{:x}\r\n", event.len()).as_bytes());
        bytes.extend_from_slice(event);
        bytes.extend_from_slice(b"\r\n0\r\n\r\n");
        s.write_all(&bytes).await.unwrap();
        tokio::time::sleep(T).await;
    });
    let config = OpenAiConfig::new(Upstream::parse(&format!("http://{addr}")).unwrap(), "m");
    let (events, _, _) = run(&config, &context("hi")).await;
    assert_eq!(failed_reason(&events), "upstream_malformed");
}

#[tokio::test]
async fn a_json_answer_instead_of_an_event_stream_fails_upstream_malformed() {
    let fake = Fake::start(vec![
        head("200 OK", "application/json"),
        Step::Chunk(r#"{"choices":[{"message":{"content":"hi"}}]}"#.to_owned()),
        Step::End,
    ])
    .await;
    let (events, _, _) = run(&fake.config(), &context("hi")).await;
    assert_eq!(failed_reason(&events), "upstream_malformed");
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn an_error_event_in_the_stream_fails_upstream_error() {
    let fake = Fake::start(vec![
        sse_head(),
        delta("par"),
        Step::Data(r#"{"error":{"code":500,"message":"context full"}}"#.to_owned()),
        Step::End,
    ])
    .await;
    let (events, ended, _) = run(&fake.config(), &context("hi")).await;
    assert_eq!(deltas(&events), "par");
    assert_eq!(failed_reason(&events), "upstream_error");
    match ended {
        Ended::Failed(UpstreamError::Reported(text)) => assert!(text.contains("context full")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn silence_beyond_the_timeout_fails_upstream_timeout_after_the_deltas_so_far() {
    let fake = Fake::start(vec![sse_head(), delta("slow"), Step::Sleep(3_000)]).await;
    let mut config = fake.config();
    config.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let (events, ended, _) = run(&config, &context("hi")).await;
    assert_eq!(deltas(&events), "slow");
    assert_eq!(failed_reason(&events), "upstream_timeout");
    assert_eq!(ended, Ended::Failed(UpstreamError::Timeout(config.timeout)));
    assert!(started.elapsed() < Duration::from_millis(2_500));
    // The generation's end closed the connection.
    let seen = fake.seen().await;
    assert!(seen.closed_after.is_some());
}

#[tokio::test]
async fn no_response_headers_within_the_timeout_fails_upstream_timeout() {
    let fake = Fake::start(vec![Step::Sleep(3_000)]).await;
    let mut config = fake.config();
    config.timeout = Duration::from_millis(300);
    let (events, _, _) = run(&config, &context("hi")).await;
    assert_eq!(failed_reason(&events), "upstream_timeout");
}

#[tokio::test]
async fn a_connection_closed_mid_stream_fails_upstream_closed_with_the_counted_deltas() {
    // Chunks, then the server goes away without the last chunk.
    let fake = Fake::start(vec![sse_head(), delta("one"), delta(" two"), Step::Close]).await;
    let (events, ended, tally) = run(&fake.config(), &context("hi")).await;
    assert_eq!(deltas(&events), "one two");
    assert_eq!(failed_reason(&events), "upstream_closed");
    assert!(matches!(ended, Ended::Failed(UpstreamError::Closed(_))));
    assert_eq!(tally.completion_tokens(), 2);
    match events.last() {
        Some(GeneratorEvent::Failed { usage, .. }) => {
            assert_eq!(*usage, None, "the prompt's tokens are unknown")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn dropping_the_generation_closes_the_upstream_connection_at_once() {
    let mut script = vec![sse_head(), delta("first")];
    for _ in 0..50 {
        script.push(Step::Sleep(100));
        script.push(delta(" more"));
    }
    let fake = Fake::start(script).await;
    let config = fake.config();
    let (first_tx, first_rx) = oneshot::channel::<()>();
    let mut first_tx = Some(first_tx);
    let context = context("hi");
    let mut tally = Tally::default();
    let task = async {
        generate(
            &config,
            connect_to(&config.upstream),
            &TokioTimer::new(),
            &context,
            &mut tally,
            |_| {
                if let Some(tx) = first_tx.take() {
                    let _ = tx.send(());
                }
                async { true }
            },
        )
        .await
    };
    // Run the generation until its first delta, then drop it (an abort).
    tokio::select! {
        _ = task => panic!("the generation ended by itself"),
        _ = first_rx => {}
        () = tokio::time::sleep(T) => panic!("no first delta"),
    }
    let dropped = Instant::now();
    let seen = fake.seen().await;
    // The fake notices the close when its next write fails or its read
    // sees EOF: within one of its 100 ms pauses.
    assert!(
        dropped.elapsed() < Duration::from_secs(2),
        "the upstream saw the close only after {:?}",
        dropped.elapsed()
    );
    assert!(seen.closed_after.is_some());
}

#[tokio::test]
async fn a_listener_that_stops_listening_stops_the_generation() {
    let fake = Fake::start(vec![sse_head(), delta("a"), delta("b"), done(), Step::End]).await;
    let mut tally = Tally::default();
    let config = fake.config();
    let ended = generate(
        &config,
        connect_to(&config.upstream),
        &TokioTimer::new(),
        &context("hi"),
        &mut tally,
        |_| async { false },
    )
    .await;
    assert_eq!(ended, Ended::Unheard);
    assert_eq!(tally.content_deltas, 1);
}

#[test]
fn upstream_urls_parse_with_defaults_and_refuse_what_cannot_work() {
    let u = Upstream::parse("http://127.0.0.1:8000").unwrap();
    assert_eq!((u.host(), u.port()), ("127.0.0.1", 8000));
    assert_eq!(u.chat_completions_path(), "/v1/chat/completions");
    assert_eq!(u.to_string(), "http://127.0.0.1:8000");
    let u = Upstream::parse("http://localhost/base/").unwrap();
    assert_eq!((u.host(), u.port()), ("localhost", 80));
    assert_eq!(u.chat_completions_path(), "/base/v1/chat/completions");
    let u = Upstream::parse("http://[::1]:9000").unwrap();
    assert_eq!((u.host(), u.port()), ("::1", 9000));
    assert_eq!(
        Upstream::parse("https://api.openai.com"),
        Err(UpstreamUrlError::Https)
    );
    assert_eq!(Upstream::parse("ftp://x"), Err(UpstreamUrlError::Scheme));
    assert_eq!(
        Upstream::parse("http://u:p@x:1"),
        Err(UpstreamUrlError::Extra)
    );
    assert_eq!(
        Upstream::parse("http://x:1/?a=b"),
        Err(UpstreamUrlError::Extra)
    );
    assert!(matches!(
        Upstream::parse("127.0.0.1:8000"),
        Err(UpstreamUrlError::Syntax(_))
    ));
    assert!(matches!(
        Upstream::parse("not a url"),
        Err(UpstreamUrlError::Syntax(_))
    ));
}

#[test]
fn the_api_key_never_shows_in_debug_output() {
    let mut c = OpenAiConfig::new(Upstream::parse("http://127.0.0.1:1").unwrap(), "m");
    c.api_key = Some("sk-very-secret".to_owned());
    let text = format!("{c:?}");
    assert!(!text.contains("sk-very-secret"), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
}

#[test]
fn reasons_name_the_failure() {
    let cases = [
        (
            UpstreamError::Unreachable("x".into()),
            "upstream_unreachable",
        ),
        (
            UpstreamError::Timeout(Duration::from_secs(1)),
            "upstream_timeout",
        ),
        (
            UpstreamError::Status {
                status: 429,
                body: String::new(),
            },
            "upstream_status_429",
        ),
        (UpstreamError::Malformed("x".into()), "upstream_malformed"),
        (UpstreamError::Closed("x".into()), "upstream_closed"),
        (UpstreamError::Reported("x".into()), "upstream_error"),
    ];
    for (error, reason) in cases {
        assert_eq!(error.reason(), reason);
    }
}
