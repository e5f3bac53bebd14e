//! WebSocket protocol edges (issue 17 point 7), in process on tokio and on
//! smol with real sockets on loopback: a text frame that is not UTF-8 gets
//! `bad_request` and close 1007 (whole or fragmented), a binary frame gets
//! `bad_request` even when it holds a valid frame's JSON and the connection
//! stays, and the frame limit counts the bytes on the wire (escapes as sent)
//! while the content limit counts the decoded text.

use weir_tests::tungstenite::protocol::frame::coding::{Data, OpCode};
use weir_tests::tungstenite::protocol::frame::Frame as WsFrame;
use weir_tests::tungstenite::Message;
use weir_tests::{demo_config, json, Client, InProcess};

weir_tests::both_runtimes! {
    a_text_frame_that_is_not_utf8_gets_bad_request_and_close_1007,
    a_fragmented_text_message_that_is_not_utf8_gets_close_1007,
    a_binary_frame_gets_bad_request_even_with_valid_json_and_the_connection_stays,
    the_frame_limit_counts_bytes_on_the_wire_and_the_content_limit_the_decoded_text,
}

/// A raw text frame (`fin`: the last of its message) of any bytes.
fn text_frame(bytes: &[u8], fin: bool) -> Message {
    Message::Frame(WsFrame::message(
        bytes.to_vec(),
        OpCode::Data(Data::Text),
        fin,
    ))
}

/// Reads to the server's close: exactly one `error` `bad_request`, then 1007.
async fn expect_bad_request_then_1007(ws: &mut Client) {
    let (frames, code) = ws.frames_until_close().await;
    assert_eq!(code, 1007, "{frames:#?}");
    assert_eq!(frames.len(), 1, "{frames:#?}");
    assert!(frames[0].is("error"), "{frames:#?}");
    assert_eq!(frames[0]["code"], "bad_request", "{frames:#?}");
}

async fn a_text_frame_that_is_not_utf8_gets_bad_request_and_close_1007() {
    let server = InProcess::start(demo_config(4, 1000.0)).await;
    let mut same = server.ws("session_id=s&user_id=u").await;
    let mut ws = server.ws("session_id=s&user_id=u").await;
    ws.send_message(text_frame(b"{\"type\":\"ping\",\"id\":\"\xff\"}", true))
        .await;
    expect_bad_request_then_1007(&mut ws).await;
    // The other connection of the conversation carries on, and so does a new one.
    assert!(same.ping("same").await.is_empty());
    let mut fresh = server.ws("session_id=s&user_id=u").await;
    assert!(fresh.ping("fresh").await.is_empty());
    drop((ws, same, fresh));
    server.shutdown().await.expect("clean shutdown");
}

async fn a_fragmented_text_message_that_is_not_utf8_gets_close_1007() {
    let server = InProcess::start(demo_config(4, 1000.0)).await;
    let mut ws = server.ws("session_id=s&user_id=u").await;
    // Valid so far; the continuation holds a cut-short sequence and then
    // ASCII, which no later byte can repair.
    ws.send_message(text_frame(b"{\"type\":\"ping\",\"id\":\"a", false))
        .await;
    ws.send_message(Message::Frame(WsFrame::message(
        b"\xe2\x82\"}".to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await;
    expect_bad_request_then_1007(&mut ws).await;
    drop(ws);
    server.shutdown().await.expect("clean shutdown");
}

async fn a_binary_frame_gets_bad_request_even_with_valid_json_and_the_connection_stays() {
    let server = InProcess::start(demo_config(4, 1000.0)).await;
    let mut ws = server.ws("session_id=s&user_id=u").await;
    let ping = json!({"type": "ping", "id": "in-binary"}).to_string();
    ws.send_message(Message::binary(ping.into_bytes())).await;
    let e = ws.next_frame().await;
    assert!(e.is("error"), "a binary frame is not read as JSON: {e:?}");
    assert_eq!(e["code"], "bad_request", "{e:?}");
    assert!(e.str("message").contains("binary"), "{e:?}");
    assert!(ws.ping("after-binary").await.is_empty());
    drop(ws);
    server.shutdown().await.expect("clean shutdown");
}

/// `{"type":"chat","content":"…"}` around `content` (already JSON-escaped),
/// padded with `a` to exactly `len` bytes.
fn chat_of_len(content: &str, len: usize) -> String {
    let bare = format!(r#"{{"type":"chat","content":"{content}"}}"#);
    let pad = len.checked_sub(bare.len()).expect("room for the padding");
    format!(
        r#"{{"type":"chat","content":"{content}{}"}}"#,
        "a".repeat(pad)
    )
}

async fn the_frame_limit_counts_bytes_on_the_wire_and_the_content_limit_the_decoded_text() {
    // The default limits: 64 KiB frames, 32 KiB content.
    let server = InProcess::start(demo_config(4, 1000.0)).await;
    let mut ws = server.ws("session_id=s&user_id=u").await;

    // 10 000 `é` escaped as `\u00e9`: 60 000 bytes on the wire, 20 000 of
    // content. Padded to exactly 64 KiB on the wire: accepted.
    let escaped = "\\u00e9".repeat(10_000);
    let at_limit = chat_of_len(&escaped, 65_536);
    ws.send_text(at_limit).await;
    let (_, ack) = ws.next_of("ack").await;
    let mid = ack.str("message_id").to_owned();
    let (_, end) = ws.until_end_of(&mid).await;
    assert_eq!(end["status"], "completed");
    let history = server.messages("s", "?user_id=u").await;
    let turn = history[0]["content"].as_str().expect("content").to_owned();
    let overhead = r#"{"type":"chat","content":""}"#.len();
    assert_eq!(turn.len(), 20_000 + (65_536 - 60_000 - overhead));
    assert!(turn.starts_with("éé"));

    // 32 768 bytes of `é` sent as UTF-8: the content limit, counted on the
    // decoded text, is met exactly.
    ws.send_json(json!({"type": "chat", "content": "é".repeat(16_384)}))
        .await;
    let (_, ack) = ws.next_of("ack").await;
    let (_, end) = ws.until_end_of(ack.str("message_id")).await;
    assert_eq!(end["status"], "completed");

    // One byte more on the wire than 64 KiB (the same 20 000 bytes of
    // content and one more `a`): 1009.
    ws.send_text(chat_of_len(&escaped, 65_537)).await;
    let (frames, code) = ws.frames_until_close().await;
    assert_eq!(code, 1009, "{frames:#?}");
    assert!(
        frames
            .iter()
            .all(|f| f.is("error") && f["code"] == "too_large"),
        "{frames:#?}"
    );
    drop(ws);
    server.shutdown().await.expect("clean shutdown");
}
