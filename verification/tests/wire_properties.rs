//! Properties of the wire protocol codec (`weir_core::wire`).
//!
//! - every valid client frame survives encode → decode unchanged;
//! - every server frame survives encode → decode unchanged, with `type` first;
//! - no input — random bytes, JSON-ish fragments, near-valid frames — panics the
//!   decoder, and every rejection maps to a code (and a close only when oversized);
//! - oversized frames are rejected by size alone, before any parsing;
//! - a rejected frame still yields its valid `request_id`.

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};
use weir_core::ids::{ClientMessageId, IdError, MessageId, NodeId, RequestId, SessionId, UserId};
use weir_core::wire::{
    decode_client_frame, decode_server_frame, encode_client_frame, Ack, Cancel, CancelResult,
    CancelStatus, Chat, Chunk, ClientFrame, CloseCode, DecodeError, End, ErrorCode, ErrorFrame,
    FrameError, Hello, History, Limits, Message, MessageStatus, Ping, PingId, Pong, Presence,
    PresenceStatus, ReplyStatus, Resume, ResumeUnavailable, ResumeUnavailableReason, Role,
    ServerFrame, Start, Usage, UserMessage,
};

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// Strings of 1..=max printable characters (any Unicode, no control characters),
/// mixed with short ASCII ones that look like real ids.
fn printable(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_-]{1,12}",
        proptest::collection::vec(
            any::<char>().prop_filter("printable", |c| !c.is_control()),
            1..=max
        )
        .prop_map(|cs| cs.into_iter().collect::<String>()),
    ]
}

fn arb_message_id() -> impl Strategy<Value = MessageId> {
    printable(MessageId::MAX_LEN).prop_filter_map("valid message id", |s| MessageId::parse(s).ok())
}

fn arb_request_id() -> impl Strategy<Value = RequestId> {
    printable(RequestId::MAX_LEN).prop_filter_map("valid request id", |s| RequestId::parse(s).ok())
}

fn arb_client_message_id() -> impl Strategy<Value = ClientMessageId> {
    printable(ClientMessageId::MAX_LEN).prop_filter_map("valid client message id", |s| {
        ClientMessageId::parse(s).ok()
    })
}

fn arb_user_id() -> impl Strategy<Value = UserId> {
    printable(UserId::MAX_LEN).prop_filter_map("valid user id", |s| UserId::parse(s).ok())
}

fn arb_session_id() -> impl Strategy<Value = SessionId> {
    "[A-Za-z0-9_.:-]{1,128}".prop_filter_map("valid session id", |s| SessionId::parse(s).ok())
}

fn arb_node_id() -> impl Strategy<Value = NodeId> {
    "[A-Za-z0-9_.:-]{1,64}".prop_filter_map("valid node id", |s| NodeId::parse(s).ok())
}

/// Valid `chat` content: non-empty, already trimmed, any Unicode (incl. inner
/// newlines and control characters), within the default limit.
fn arb_content() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 ,.!?]{1,80}",
        any::<String>(),
        proptest::collection::vec(any::<char>(), 1..200).prop_map(|cs| cs.into_iter().collect()),
    ]
    .prop_filter_map("non-empty after trimming", |s| {
        let t = s.trim();
        (!t.is_empty()).then(|| t.to_owned())
    })
}

fn arb_ping_id() -> impl Strategy<Value = PingId> {
    prop_oneof![
        any::<i64>().prop_map(PingId::Int),
        any::<String>().prop_map(PingId::Str)
    ]
}

fn arb_client_frame() -> impl Strategy<Value = ClientFrame> {
    let rid = || proptest::option::of(arb_request_id());
    prop_oneof![
        (
            arb_content(),
            rid(),
            proptest::option::of(arb_client_message_id())
        )
            .prop_map(
                |(content, request_id, client_message_id)| ClientFrame::Chat(Chat {
                    content,
                    request_id,
                    client_message_id
                })
            ),
        (proptest::option::of(arb_message_id()), rid()).prop_map(|(message_id, request_id)| {
            ClientFrame::Cancel(Cancel {
                message_id,
                request_id,
            })
        }),
        (arb_message_id(), any::<u64>(), rid()).prop_map(|(message_id, after_seq, request_id)| {
            ClientFrame::Resume(Resume {
                message_id,
                after_seq,
                request_id,
            })
        }),
        proptest::option::of(arb_ping_id()).prop_map(|id| ClientFrame::Ping(Ping { id })),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    (
        arb_message_id(),
        select(vec![Role::User, Role::Assistant]),
        any::<String>(),
        select(vec![
            MessageStatus::Completed,
            MessageStatus::Cancelled,
            MessageStatus::Failed,
            MessageStatus::Streaming,
        ]),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(message_id, role, content, status, created_at_ms, seq)| Message {
                message_id,
                role,
                content,
                status,
                created_at_ms,
                seq,
            },
        )
}

fn arb_reply_status() -> impl Strategy<Value = ReplyStatus> {
    select(vec![
        ReplyStatus::Completed,
        ReplyStatus::Cancelled,
        ReplyStatus::Failed,
    ])
}

fn arb_server_frame() -> impl Strategy<Value = ServerFrame> {
    let rid = || proptest::option::of(arb_request_id());
    prop_oneof![
        (
            any::<u32>(),
            arb_session_id(),
            arb_user_id(),
            any::<String>(),
            arb_node_id(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(
                |(
                    protocol,
                    session_id,
                    user_id,
                    connection_id,
                    node_id,
                    heartbeat_ms,
                    resume_window_ms,
                )| {
                    ServerFrame::Hello(Hello {
                        protocol,
                        session_id,
                        user_id,
                        connection_id,
                        node_id,
                        heartbeat_ms,
                        resume_window_ms,
                    })
                }
            ),
        proptest::collection::vec(arb_message(), 0..4)
            .prop_map(|messages| ServerFrame::History(History { messages })),
        (arb_message_id(), any::<String>(), any::<u64>(), rid()).prop_map(
            |(message_id, content, created_at_ms, request_id)| ServerFrame::UserMessage(
                UserMessage {
                    message_id,
                    content,
                    created_at_ms,
                    request_id
                }
            )
        ),
        (rid(), arb_message_id(), arb_message_id()).prop_map(
            |(request_id, user_message_id, message_id)| ServerFrame::Ack(Ack {
                request_id,
                user_message_id,
                message_id
            })
        ),
        (arb_message_id(), arb_message_id()).prop_map(|(message_id, reply_to)| ServerFrame::Start(
            Start {
                message_id,
                reply_to
            }
        )),
        (
            arb_message_id(),
            any::<u64>(),
            any::<String>(),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>())
        )
            .prop_map(
                |(message_id, seq, delta, from_seq, ts_ns)| ServerFrame::Chunk(Chunk {
                    message_id,
                    seq,
                    delta,
                    from_seq,
                    ts_ns
                })
            ),
        (
            arb_message_id(),
            arb_reply_status(),
            any::<u64>(),
            proptest::option::of(any::<String>()),
            proptest::option::of((any::<u64>(), any::<u64>()))
        )
            .prop_map(|(message_id, status, final_seq, reason, usage)| {
                ServerFrame::End(End {
                    message_id,
                    status,
                    final_seq,
                    reason,
                    usage: usage.map(|(prompt_tokens, completion_tokens)| Usage {
                        prompt_tokens,
                        completion_tokens,
                    }),
                })
            }),
        (
            rid(),
            proptest::option::of(arb_message_id()),
            select(vec![
                CancelStatus::Cancelled,
                CancelStatus::Completed,
                CancelStatus::Failed,
                CancelStatus::NotFound
            ]),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(request_id, message_id, status, final_seq)| {
                ServerFrame::CancelResult(CancelResult {
                    request_id,
                    message_id,
                    status,
                    final_seq,
                })
            }),
        (
            arb_message_id(),
            select(vec![
                ResumeUnavailableReason::Expired,
                ResumeUnavailableReason::EpochChanged,
                ResumeUnavailableReason::Unknown
            ]),
            proptest::option::of(arb_message())
        )
            .prop_map(|(message_id, reason, snapshot)| {
                ServerFrame::ResumeUnavailable(ResumeUnavailable {
                    message_id,
                    reason,
                    snapshot,
                })
            }),
        (
            arb_user_id(),
            select(vec![PresenceStatus::Online, PresenceStatus::Offline])
        )
            .prop_map(|(user_id, status)| ServerFrame::Presence(Presence { user_id, status })),
        proptest::option::of(arb_ping_id()).prop_map(|id| ServerFrame::Pong(Pong { id })),
        (select(ErrorCode::ALL.to_vec()), any::<String>(), rid()).prop_map(
            |(code, message, request_id)| ServerFrame::Error(ErrorFrame {
                code,
                message,
                request_id,
                retry_after_ms: None,
            })
        ),
    ]
}

/// Limits: usually the defaults, sometimes tiny ones that make the size checks fire.
fn arb_limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        3 => Just(Limits::default()),
        1 => (0usize..512, 0usize..64).prop_map(|(max_frame_bytes, max_content_bytes)| Limits {
            max_frame_bytes,
            max_content_bytes
        }),
    ]
}

const FRAGMENTS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\",
    " ",
    "\n",
    "null",
    "true",
    "false",
    "0",
    "-1",
    "1.5",
    "1e400",
    "18446744073709551616",
    "\"type\"",
    "\"chat\"",
    "\"cancel\"",
    "\"resume\"",
    "\"ping\"",
    "\"pong\"",
    "\"content\"",
    "\"request_id\"",
    "\"client_message_id\"",
    "\"message_id\"",
    "\"after_seq\"",
    "\"id\"",
    "\"  hi  \"",
    "\"\"",
    "\"   \"",
    "\"r1\"",
    "\"m1\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"é👋\"",
    "{\"type\":\"chat\",",
    "{\"type\":\"resume\",",
    "{\"type\":\"cancel\"}",
    "{\"type\":\"ping\"}",
    "\"request_id\":\"r1\"",
    "\"content\":\"hello\"",
    "\u{0}",
    "\u{feff}",
];

/// JSON-ish text: concatenated fragments, escaped arbitrary strings and numbers.
fn arb_jsonish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => select(FRAGMENTS).prop_map(String::from),
        1 => any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

/// A JSON leaf or small container, for replacing fields of valid frames.
fn arb_json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        "[ \t\n]{0,3}".prop_map(Value::from),
        "m{60,70}".prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
        Just(json!(["chat"])),
    ]
}

const FIELDS: &[&str] = &[
    "type",
    "content",
    "request_id",
    "client_message_id",
    "message_id",
    "after_seq",
    "id",
    "extra",
];

/// A valid client frame with a few fields removed or replaced by arbitrary JSON.
fn arb_near_valid_frame() -> impl Strategy<Value = String> {
    let mutation = (select(FIELDS), proptest::option::of(arb_json_value()));
    (
        arb_client_frame(),
        proptest::collection::vec(mutation, 0..4),
    )
        .prop_map(|(frame, mutations)| {
            let mut value: Value =
                serde_json::from_str(&encode_client_frame(&frame)).unwrap_or_default();
            if let Some(obj) = value.as_object_mut() {
                for (field, replacement) in mutations {
                    match replacement {
                        None => obj.remove(field),
                        Some(v) => obj.insert(field.to_owned(), v),
                    };
                }
            }
            value.to_string()
        })
}

// ---------------------------------------------------------------------------
// Checks shared by several properties
// ---------------------------------------------------------------------------

/// What every decoder answer must satisfy, whatever the input.
fn check_decode_outcome(
    bytes: &[u8],
    limits: &Limits,
    result: &Result<ClientFrame, FrameError>,
) -> Result<(), TestCaseError> {
    match result {
        Ok(frame) => {
            prop_assert!(bytes.len() <= limits.max_frame_bytes);
            if let ClientFrame::Chat(chat) = frame {
                prop_assert_eq!(chat.content.trim(), chat.content.as_str());
                prop_assert!(!chat.content.is_empty());
                prop_assert!(chat.content.len() <= limits.max_content_bytes);
            }
            // What was accepted re-encodes to something that decodes to the same frame.
            let unbounded = Limits {
                max_frame_bytes: usize::MAX,
                ..*limits
            };
            let again = decode_client_frame(encode_client_frame(frame).as_bytes(), &unbounded);
            prop_assert_eq!(again.as_ref(), Ok(frame));
        }
        Err(e) => {
            let too_large = matches!(
                e.error,
                DecodeError::FrameTooLarge { .. } | DecodeError::ContentTooLong { .. }
            );
            let expected_code = if too_large {
                ErrorCode::TooLarge
            } else {
                ErrorCode::BadRequest
            };
            prop_assert_eq!(e.code(), expected_code);
            match e.error {
                DecodeError::FrameTooLarge { len, max } => {
                    prop_assert_eq!(len, bytes.len());
                    prop_assert_eq!(max, limits.max_frame_bytes);
                    prop_assert!(len > max);
                    prop_assert_eq!(e.close(), Some(CloseCode::TooLarge));
                    prop_assert_eq!(&e.request_id, &None);
                }
                DecodeError::InvalidUtf8 => {
                    prop_assert!(std::str::from_utf8(bytes).is_err());
                    prop_assert_eq!(e.close(), Some(CloseCode::InvalidData));
                }
                _ => prop_assert_eq!(e.close(), None),
            }
            // The error frame that answers it is itself a valid server frame.
            let answer = e.to_server_frame();
            let decoded = decode_server_frame(&answer.encode());
            prop_assert_eq!(decoded.as_ref().ok(), Some(&answer));
        }
    }
    Ok(())
}

fn type_is_first(json: &str, kind: &str) -> bool {
    json.starts_with(&format!("{{\"type\":\"{kind}\""))
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn every_valid_client_frame_round_trips(frame in arb_client_frame()) {
        let text = encode_client_frame(&frame);
        prop_assert!(type_is_first(&text, frame.kind()), "{}", text);
        let decoded = decode_client_frame(text.as_bytes(), &Limits::default());
        prop_assert_eq!(decoded, Ok(frame));
    }

    #[test]
    fn every_server_frame_round_trips(frame in arb_server_frame()) {
        let text = frame.encode();
        prop_assert!(type_is_first(&text, frame.kind()), "{}", text);
        let decoded = decode_server_frame(&text);
        prop_assert_eq!(decoded.ok(), Some(frame));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(
        input in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..2048),
            arb_jsonish().prop_map(String::into_bytes),
            arb_near_valid_frame().prop_map(String::into_bytes),
        ],
        limits in arb_limits(),
    ) {
        let result = decode_client_frame(&input, &limits);
        check_decode_outcome(&input, &limits, &result)?;
    }

    #[test]
    fn oversized_frames_are_rejected_before_parsing(
        max in 0usize..512,
        extra in 1usize..512,
        filler in any::<u8>(),
        frame in arb_client_frame(),
    ) {
        // Bytes that are not even JSON: only a size check can produce FrameTooLarge.
        let junk = vec![filler; max + extra];
        let limits = Limits { max_frame_bytes: max, ..Limits::default() };
        let e = decode_client_frame(&junk, &limits);
        prop_assert_eq!(
            e.as_ref().err().map(|e| &e.error),
            Some(&DecodeError::FrameTooLarge { len: max + extra, max })
        );
        let e = e.err().unwrap_or_else(|| DecodeError::NotAnObject.into());
        prop_assert_eq!(e.code(), ErrorCode::TooLarge);
        prop_assert_eq!(e.close(), Some(CloseCode::TooLarge));

        // A valid frame one byte over the limit is rejected unparsed (so its
        // request_id is not recovered); at the limit it is accepted.
        let text = encode_client_frame(&frame);
        let over = Limits { max_frame_bytes: text.len() - 1, ..Limits::default() };
        let e = decode_client_frame(text.as_bytes(), &over);
        prop_assert_eq!(
            e,
            Err(FrameError {
                error: DecodeError::FrameTooLarge { len: text.len(), max: text.len() - 1 },
                request_id: None,
            })
        );
        let exact = Limits { max_frame_bytes: text.len(), ..Limits::default() };
        prop_assert_eq!(decode_client_frame(text.as_bytes(), &exact), Ok(frame));
    }

    #[test]
    fn decode_errors_keep_a_valid_request_id(
        request_id in arb_request_id(),
        broken in arb_broken_frame(),
        extra in arb_json_value(),
    ) {
        let (mut value, expected) = broken;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("request_id".into(), Value::from(request_id.as_str()));
            obj.insert("x_future_field".into(), extra);
        }
        let text = value.to_string();
        let result = decode_client_frame(text.as_bytes(), &small_content_limits());
        let e = match result {
            Ok(frame) => return Err(TestCaseError::fail(format!("{text} decoded to {frame:?}"))),
            Err(e) => e,
        };
        prop_assert_eq!(&e.error, &expected, "{}", text);
        prop_assert_eq!(e.request_id.as_ref(), Some(&request_id));
        match e.to_server_frame() {
            ServerFrame::Error(ErrorFrame { code, request_id: echoed, .. }) => {
                prop_assert_eq!(code, expected.code());
                prop_assert_eq!(echoed, Some(request_id));
            }
            other => return Err(TestCaseError::fail(format!("not an error frame: {other:?}"))),
        }
    }
}

const SMALL_CONTENT: usize = 16;

fn small_content_limits() -> Limits {
    Limits {
        max_content_bytes: SMALL_CONTENT,
        ..Limits::default()
    }
}

fn obj(value: Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(m),
        _ => Value::Object(Map::new()),
    }
}

fn bad_id(s: &str) -> IdError {
    MessageId::parse(s)
        .err()
        .unwrap_or(IdError::Empty { kind: "message_id" })
}

/// A frame (without `request_id`) that the decoder must reject, and the exact error.
fn arb_broken_frame() -> impl Strategy<Value = (Value, DecodeError)> {
    let bad_message_id = prop_oneof![Just(String::new()), "m{65,80}", "[a-z]{0,5}\\x07[a-z]{0,5}",];
    let wrong_seq = prop_oneof![
        "[a-z]{0,4}".prop_map(Value::from),
        (i64::MIN..0).prop_map(Value::from),
        Just(json!(1.5)),
        Just(json!(true)),
        Just(json!([1])),
    ];
    let whitespace = proptest::collection::vec(
        select(vec![' ', '\t', '\n', '\r', '\u{3000}', '\u{a0}']),
        0..8,
    )
    .prop_map(|cs| cs.into_iter().collect::<String>());
    prop_oneof![
        "[a-z_]{1,12}"
            .prop_filter("unknown type", |t| !["chat", "cancel", "resume", "ping"]
                .contains(&t.as_str()))
            .prop_map(|t| (obj(json!({ "type": t })), DecodeError::UnknownType(t))),
        Just((obj(json!({ "content": "hi" })), DecodeError::MissingType)),
        any::<i64>().prop_map(|n| (
            obj(json!({ "type": n })),
            DecodeError::WrongType { field: "type" }
        )),
        Just((
            obj(json!({ "type": "chat" })),
            DecodeError::MissingField { field: "content" }
        )),
        any::<i64>().prop_map(|n| (
            obj(json!({ "type": "chat", "content": n })),
            DecodeError::WrongType { field: "content" }
        )),
        whitespace.prop_map(|w| (
            obj(json!({ "type": "chat", "content": w })),
            DecodeError::EmptyContent
        )),
        "[a-z]{17,40}".prop_map(|c| {
            let len = c.len();
            (
                obj(json!({ "type": "chat", "content": c })),
                DecodeError::ContentTooLong {
                    len,
                    max: SMALL_CONTENT,
                },
            )
        }),
        bad_message_id.clone().prop_map(|k| {
            let source = match ClientMessageId::parse(k.clone()) {
                Err(e) => e,
                Ok(_) => IdError::Empty {
                    kind: "client_message_id",
                },
            };
            (
                obj(json!({ "type": "chat", "content": "hi", "client_message_id": k })),
                DecodeError::BadId {
                    field: "client_message_id",
                    source,
                },
            )
        }),
        bad_message_id.prop_map(|m| {
            let source = bad_id(&m);
            (
                obj(json!({ "type": "cancel", "message_id": m })),
                DecodeError::BadId {
                    field: "message_id",
                    source,
                },
            )
        }),
        Just((
            obj(json!({ "type": "resume", "after_seq": 1 })),
            DecodeError::MissingField {
                field: "message_id"
            }
        )),
        Just((
            obj(json!({ "type": "resume", "message_id": "m1" })),
            DecodeError::MissingField { field: "after_seq" }
        )),
        wrong_seq.prop_map(|v| (
            obj(json!({ "type": "resume", "message_id": "m1", "after_seq": v })),
            DecodeError::WrongType { field: "after_seq" }
        )),
    ]
}
