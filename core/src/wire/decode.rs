//! Decoding of client frames (and, through the same helpers, HTTP bodies) with precise errors.
//!
//! The order of checks is fixed: size (before any parsing), UTF-8, JSON syntax, "is an
//! object", `type`, then the fields of that type in their documented order. The
//! first failing check is reported, naming the field. A JSON `null` counts as an
//! absent field. Fields the decoder does not know are ignored, so clients may
//! send newer fields to older servers.
//!
//! Even when a frame is rejected, a valid `request_id` in it is recovered
//! ([`FrameError::request_id`]), so the `error` frame can be matched to the request.

use serde_json::{Map, Value};

use super::client::{Cancel, Chat, ClientFrame, Ping, PingId, Resume};
use super::codes::{CloseCode, ErrorCode};
use super::server::ErrorFrame;
use super::{Limits, ServerFrame};
use crate::ids::{ClientMessageId, IdError, MessageId, RequestId};

/// The longest unknown `type` kept in [`DecodeError::UnknownType`], in characters.
const MAX_ECHOED_TYPE_CHARS: usize = 64;

/// Why an inbound frame or HTTP body was rejected.
///
/// Every variant is the peer's fault; none of them ends the connection except
/// [`DecodeError::FrameTooLarge`] and [`DecodeError::InvalidUtf8`] (see
/// [`DecodeError::close`]). The `Display`
/// text is meant for the `message` of the `error` frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame (or body) is longer than the configured limit; it was not parsed.
    /// The connection is closed with `1009`.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The frame's length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The frame's bytes are not valid UTF-8. A WebSocket text frame must be
    /// (RFC 6455 §8.1): the connection is closed with `1007`.
    #[error("the frame is not valid UTF-8")]
    InvalidUtf8,
    /// A WebSocket binary frame: the protocol's frames are JSON in text
    /// frames, so its bytes are not parsed at all. The connection stays open.
    #[error("binary frames are not accepted: send each frame as JSON in a text frame")]
    BinaryFrame,
    /// The frame is valid UTF-8 but not valid JSON; holds the parser's message.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// The frame is valid JSON but not an object.
    #[error("frame is not a JSON object")]
    NotAnObject,
    /// The object has no `type` field (or it is `null`).
    #[error("frame has no `type` field")]
    MissingType,
    /// `type` names no client frame; holds the type (cut to 64 characters).
    #[error("unknown frame type `{0}`")]
    UnknownType(String),
    /// A required field is absent or `null`.
    #[error("missing field `{field}`")]
    MissingField {
        /// The field's name.
        field: &'static str,
    },
    /// A field has the wrong JSON type (e.g. a string where a non-negative integer belongs).
    #[error("field `{field}` has the wrong type")]
    WrongType {
        /// The field's name.
        field: &'static str,
    },
    /// An id field is a string but not a valid id of its kind (empty, too long, bad characters).
    #[error("invalid `{field}`: {source}")]
    BadId {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        source: IdError,
    },
    /// `content` is empty or only whitespace.
    #[error("content is empty")]
    EmptyContent,
    /// `content`, after trimming, is longer than the configured limit.
    #[error("content of {len} bytes exceeds the limit of {max} bytes")]
    ContentTooLong {
        /// The trimmed content's length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
}

impl DecodeError {
    /// The error code to answer with: `too_large` for an oversized frame or content,
    /// `bad_request` for everything else.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::FrameTooLarge { .. } | Self::ContentTooLong { .. } => ErrorCode::TooLarge,
            _ => ErrorCode::BadRequest,
        }
    }

    /// The close code that must follow the `error` frame, if any: `1009` for an
    /// oversized frame, `1007` for a text frame that is not UTF-8, none
    /// otherwise (the connection stays open).
    #[must_use]
    pub fn close(&self) -> Option<CloseCode> {
        match self {
            Self::FrameTooLarge { .. } => Some(CloseCode::TooLarge),
            Self::InvalidUtf8 => Some(CloseCode::InvalidData),
            _ => None,
        }
    }
}

/// A rejected client frame: the reason, and the frame's `request_id` when it had a valid one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct FrameError {
    /// Why the frame was rejected.
    #[source]
    pub error: DecodeError,
    /// The frame's `request_id`, when present and valid, to echo in the `error` frame.
    pub request_id: Option<RequestId>,
}

impl FrameError {
    /// The error code to answer with (see [`DecodeError::code`]).
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        self.error.code()
    }

    /// The close code that must follow the `error` frame, if any (see [`DecodeError::close`]).
    #[must_use]
    pub fn close(&self) -> Option<CloseCode> {
        self.error.close()
    }

    /// The `error` frame that answers the rejected frame.
    #[must_use]
    pub fn to_server_frame(&self) -> ServerFrame {
        ServerFrame::Error(ErrorFrame {
            code: self.code(),
            message: self.error.to_string(),
            request_id: self.request_id.clone(),
            retry_after_ms: None,
        })
    }
}

impl From<DecodeError> for FrameError {
    fn from(error: DecodeError) -> Self {
        Self {
            error,
            request_id: None,
        }
    }
}

impl std::ops::Deref for FrameError {
    type Target = DecodeError;
    fn deref(&self) -> &DecodeError {
        &self.error
    }
}

/// Decodes one inbound WebSocket text frame.
///
/// Checks, in order: size (`bytes.len() > limits.max_frame_bytes` →
/// [`DecodeError::FrameTooLarge`], nothing parsed), UTF-8, JSON, object, `type`,
/// then the fields. `chat` content is trimmed and must then be 1..=`limits.max_content_bytes`
/// bytes. Unknown fields are ignored. Never panics.
pub fn decode_client_frame(bytes: &[u8], limits: &Limits) -> Result<ClientFrame, FrameError> {
    let value = parse_object_value(bytes, limits.max_frame_bytes)?;
    let Value::Object(obj) = value else {
        return Err(DecodeError::NotAnObject.into());
    };
    let fields = Fields(&obj);
    // Recovered before anything else can fail, so that every error answers the request.
    let request_id = fields.opt_id("request_id", RequestId::parse).ok().flatten();
    decode_fields(&fields, limits).map_err(|error| FrameError { error, request_id })
}

fn decode_fields(fields: &Fields<'_>, limits: &Limits) -> Result<ClientFrame, DecodeError> {
    let kind = match fields.get("type") {
        None => return Err(DecodeError::MissingType),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(DecodeError::WrongType { field: "type" }),
    };
    match kind {
        "chat" => Ok(ClientFrame::Chat(Chat {
            content: fields.content(limits.max_content_bytes)?,
            request_id: fields.opt_id("request_id", RequestId::parse)?,
            client_message_id: fields.opt_id("client_message_id", ClientMessageId::parse)?,
        })),
        "cancel" => Ok(ClientFrame::Cancel(Cancel {
            message_id: fields.opt_id("message_id", MessageId::parse)?,
            request_id: fields.opt_id("request_id", RequestId::parse)?,
        })),
        "resume" => Ok(ClientFrame::Resume(Resume {
            message_id: fields.req_id("message_id", MessageId::parse)?,
            after_seq: fields.req_u64("after_seq")?,
            request_id: fields.opt_id("request_id", RequestId::parse)?,
        })),
        "ping" => Ok(ClientFrame::Ping(Ping {
            id: fields.ping_id("id")?,
        })),
        other => Err(DecodeError::UnknownType(
            other.chars().take(MAX_ECHOED_TYPE_CHARS).collect(),
        )),
    }
}

/// Size check (on the bytes as received: JSON escapes count as sent), then
/// UTF-8, then JSON parse. Shared with the HTTP body decoders.
pub(super) fn parse_object_value(bytes: &[u8], max: usize) -> Result<Value, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::FrameTooLarge {
            len: bytes.len(),
            max,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
    serde_json::from_str(text).map_err(|e| DecodeError::InvalidJson(e.to_string()))
}

/// Field readers over a JSON object; each error names its field. `null` reads as absent.
pub(super) struct Fields<'a>(pub(super) &'a Map<String, Value>);

impl Fields<'_> {
    pub(super) fn get(&self, field: &str) -> Option<&Value> {
        match self.0.get(field) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    pub(super) fn opt_str(&self, field: &'static str) -> Result<Option<&str>, DecodeError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(DecodeError::WrongType { field }),
        }
    }

    pub(super) fn req_str(&self, field: &'static str) -> Result<&str, DecodeError> {
        self.opt_str(field)?
            .ok_or(DecodeError::MissingField { field })
    }

    pub(super) fn req_u64(&self, field: &'static str) -> Result<u64, DecodeError> {
        match self.get(field) {
            None => Err(DecodeError::MissingField { field }),
            Some(v) => v.as_u64().ok_or(DecodeError::WrongType { field }),
        }
    }

    pub(super) fn opt_id<T>(
        &self,
        field: &'static str,
        parse: fn(String) -> Result<T, IdError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.opt_str(field)? {
            None => Ok(None),
            Some(s) => parse(s.to_owned())
                .map(Some)
                .map_err(|source| DecodeError::BadId { field, source }),
        }
    }

    pub(super) fn req_id<T>(
        &self,
        field: &'static str,
        parse: fn(String) -> Result<T, IdError>,
    ) -> Result<T, DecodeError> {
        self.opt_id(field, parse)?
            .ok_or(DecodeError::MissingField { field })
    }

    /// `content`: required string, trimmed, 1..=`max` bytes after trimming.
    pub(super) fn content(&self, max: usize) -> Result<String, DecodeError> {
        let trimmed = self.req_str("content")?.trim();
        if trimmed.is_empty() {
            return Err(DecodeError::EmptyContent);
        }
        if trimmed.len() > max {
            return Err(DecodeError::ContentTooLong {
                len: trimmed.len(),
                max,
            });
        }
        Ok(trimmed.to_owned())
    }

    fn ping_id(&self, field: &'static str) -> Result<Option<PingId>, DecodeError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(PingId::Str(s.clone()))),
            Some(v) => v
                .as_i64()
                .map(|n| Some(PingId::Int(n)))
                .ok_or(DecodeError::WrongType { field }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &str) -> Result<ClientFrame, FrameError> {
        decode_client_frame(s.as_bytes(), &Limits::default())
    }

    fn err(s: &str) -> FrameError {
        match decode(s) {
            Ok(f) => panic!("expected an error for {s}, got {f:?}"),
            Err(e) => e,
        }
    }

    fn ok(s: &str) -> ClientFrame {
        match decode(s) {
            Ok(f) => f,
            Err(e) => panic!("expected {s} to decode, got {e}"),
        }
    }

    fn rid(s: &str) -> RequestId {
        match RequestId::parse(s) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    fn mid(s: &str) -> MessageId {
        match MessageId::parse(s) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    /// Asserts the variant, its error code, and that the connection stays open.
    fn assert_bad_request(e: &FrameError, expected: &DecodeError) {
        assert_eq!(&e.error, expected);
        assert_eq!(e.code(), ErrorCode::BadRequest);
        assert_eq!(e.close(), None);
    }

    #[test]
    fn valid_frames_decode() {
        assert_eq!(
            ok(
                r#"{"type":"chat","content":"  hello \n","request_id":"r1","client_message_id":"c1"}"#
            ),
            ClientFrame::Chat(Chat {
                content: "hello".into(),
                request_id: Some(rid("r1")),
                client_message_id: ClientMessageId::parse("c1").ok(),
            })
        );
        assert_eq!(
            ok(r#"{"type":"cancel"}"#),
            ClientFrame::Cancel(Cancel {
                message_id: None,
                request_id: None
            })
        );
        assert_eq!(
            ok(r#"{"type":"cancel","message_id":"m1","request_id":null}"#),
            ClientFrame::Cancel(Cancel {
                message_id: Some(mid("m1")),
                request_id: None
            })
        );
        assert_eq!(
            ok(r#"{"after_seq":0,"message_id":"m1","type":"resume"}"#),
            ClientFrame::Resume(Resume {
                message_id: mid("m1"),
                after_seq: 0,
                request_id: None
            })
        );
        assert_eq!(
            ok(r#"{"type":"ping"}"#),
            ClientFrame::Ping(Ping { id: None })
        );
        assert_eq!(
            ok(r#"{"type":"ping","id":42}"#),
            ClientFrame::Ping(Ping {
                id: Some(PingId::Int(42))
            })
        );
        assert_eq!(
            ok(r#"{"type":"ping","id":"abc"}"#),
            ClientFrame::Ping(Ping {
                id: Some(PingId::Str("abc".into()))
            })
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert_eq!(
            ok(r#"{"type":"ping","id":1,"future":{"nested":[1,2,3]}}"#),
            ClientFrame::Ping(Ping {
                id: Some(PingId::Int(1))
            })
        );
    }

    #[test]
    fn bad_json_is_bad_request() {
        let e = err(r#"{"type":"chat""#);
        assert!(matches!(e.error, DecodeError::InvalidJson(_)), "{e:?}");
        assert_eq!(e.code(), ErrorCode::BadRequest);
        assert_eq!(e.close(), None);
        assert!(matches!(err("").error, DecodeError::InvalidJson(_)));
    }

    #[test]
    fn invalid_utf8_is_bad_request_and_closes_with_1007() {
        // Invalid anywhere: before the JSON, inside a string, cut short at
        // the end; an encoded surrogate is not UTF-8 either.
        for bytes in [
            &b"\xff\xfe{}"[..],
            b"{\"type\":\"chat\",\"content\":\"a\xc3(\"}",
            b"{\"type\":\"ping\",\"id\":\"\xe2\x82\"}",
            b"{\"type\":\"ping\",\"id\":\"\xed\xa0\x80\"}",
        ] {
            let e = decode_client_frame(bytes, &Limits::default());
            let e = e.expect_err("not UTF-8");
            assert_eq!(e.error, DecodeError::InvalidUtf8);
            assert_eq!(e.code(), ErrorCode::BadRequest);
            assert_eq!(e.close(), Some(CloseCode::InvalidData));
        }
        // Escaped non-ASCII (and an escaped surrogate pair) is UTF-8 on
        // the wire: accepted.
        assert_eq!(
            ok(r#"{"type":"ping","id":"\u00e9\ud83d\ude00"}"#),
            ClientFrame::Ping(Ping {
                id: Some(PingId::Str("é😀".into()))
            })
        );
    }

    #[test]
    fn the_frame_limit_counts_the_bytes_as_sent_escapes_included() {
        // 2 000 `é`: 4 000 bytes of content, 12 000 bytes when escaped.
        let raw = format!(r#"{{"type":"chat","content":"{}"}}"#, "é".repeat(2_000));
        let escaped = format!(
            r#"{{"type":"chat","content":"{}"}}"#,
            "\\u00e9".repeat(2_000)
        );
        let limits = |max_frame_bytes| Limits {
            max_frame_bytes,
            max_content_bytes: 4_000,
        };
        let content = |bytes: &str, max| match decode_client_frame(bytes.as_bytes(), &limits(max)) {
            Ok(ClientFrame::Chat(c)) => Ok(c.content.len()),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.error),
        };
        // The content limit counts the decoded text: the same 4 000 bytes
        // both ways.
        assert_eq!(content(&raw, raw.len()), Ok(4_000));
        assert_eq!(content(&escaped, escaped.len()), Ok(4_000));
        // The frame limit counts what was sent: one byte under the escaped
        // frame's length refuses it, unparsed, and not the raw one.
        assert!(raw.len() < escaped.len() - 1);
        assert_eq!(
            content(&escaped, escaped.len() - 1),
            Err(DecodeError::FrameTooLarge {
                len: escaped.len(),
                max: escaped.len() - 1
            })
        );
        assert_eq!(content(&raw, escaped.len() - 1), Ok(4_000));
    }

    #[test]
    fn non_object_is_bad_request() {
        for s in ["[]", "null", "1", r#""chat""#, r#"[{"type":"ping"}]"#] {
            assert_bad_request(&err(s), &DecodeError::NotAnObject);
        }
    }

    #[test]
    fn missing_or_wrong_typed_type_is_bad_request() {
        assert_bad_request(&err(r#"{"content":"hi"}"#), &DecodeError::MissingType);
        assert_bad_request(&err(r#"{"type":null}"#), &DecodeError::MissingType);
        assert_bad_request(
            &err(r#"{"type":1}"#),
            &DecodeError::WrongType { field: "type" },
        );
    }

    #[test]
    fn unknown_type_is_bad_request() {
        assert_bad_request(
            &err(r#"{"type":"shout"}"#),
            &DecodeError::UnknownType("shout".into()),
        );
        assert_bad_request(
            &err(r#"{"type":"Chat"}"#),
            &DecodeError::UnknownType("Chat".into()),
        );
        let long = "x".repeat(1000);
        let e = err(&format!(r#"{{"type":"{long}"}}"#));
        assert_bad_request(&e, &DecodeError::UnknownType("x".repeat(64)));
    }

    #[test]
    fn missing_field_is_bad_request() {
        assert_bad_request(
            &err(r#"{"type":"chat"}"#),
            &DecodeError::MissingField { field: "content" },
        );
        assert_bad_request(
            &err(r#"{"type":"chat","content":null}"#),
            &DecodeError::MissingField { field: "content" },
        );
        assert_bad_request(
            &err(r#"{"type":"resume","after_seq":1}"#),
            &DecodeError::MissingField {
                field: "message_id",
            },
        );
        assert_bad_request(
            &err(r#"{"type":"resume","message_id":"m1"}"#),
            &DecodeError::MissingField { field: "after_seq" },
        );
    }

    #[test]
    fn wrong_typed_field_is_bad_request() {
        let cases = [
            (
                r#"{"type":"resume","message_id":"m1","after_seq":"x"}"#,
                "after_seq",
            ),
            (
                r#"{"type":"resume","message_id":"m1","after_seq":-1}"#,
                "after_seq",
            ),
            (
                r#"{"type":"resume","message_id":"m1","after_seq":1.5}"#,
                "after_seq",
            ),
            (
                r#"{"type":"resume","message_id":7,"after_seq":1}"#,
                "message_id",
            ),
            (r#"{"type":"chat","content":["hi"]}"#, "content"),
            (
                r#"{"type":"chat","content":"hi","client_message_id":1}"#,
                "client_message_id",
            ),
            (r#"{"type":"cancel","message_id":{}}"#, "message_id"),
            (r#"{"type":"cancel","request_id":true}"#, "request_id"),
            (r#"{"type":"ping","id":1.5}"#, "id"),
            (r#"{"type":"ping","id":[]}"#, "id"),
            (r#"{"type":"ping","id":18446744073709551615}"#, "id"),
        ];
        for (s, field) in cases {
            assert_bad_request(&err(s), &DecodeError::WrongType { field });
        }
    }

    #[test]
    fn bad_id_syntax_is_bad_request() {
        let long = "m".repeat(65);
        let e = err(&format!(
            r#"{{"type":"resume","message_id":"{long}","after_seq":1}}"#
        ));
        assert_bad_request(
            &e,
            &DecodeError::BadId {
                field: "message_id",
                source: IdError::TooLong {
                    kind: "message_id",
                    max: 64,
                },
            },
        );
        let e = err(r#"{"type":"cancel","message_id":""}"#);
        assert_bad_request(
            &e,
            &DecodeError::BadId {
                field: "message_id",
                source: IdError::Empty { kind: "message_id" },
            },
        );
        let e = err(r#"{"type":"chat","content":"hi","client_message_id":"a\u0007b"}"#);
        assert_bad_request(
            &e,
            &DecodeError::BadId {
                field: "client_message_id",
                source: IdError::BadChar {
                    kind: "client_message_id",
                },
            },
        );
        // An invalid request_id is itself the error, and cannot be echoed.
        let e = err(&format!(
            r#"{{"type":"chat","content":"hi","request_id":"{}"}}"#,
            "r".repeat(65)
        ));
        assert!(matches!(
            e.error,
            DecodeError::BadId {
                field: "request_id",
                ..
            }
        ));
        assert_eq!(e.request_id, None);
        // A 64-character message id is fine.
        let ok_id = "m".repeat(64);
        assert!(decode(&format!(r#"{{"type":"cancel","message_id":"{ok_id}"}}"#)).is_ok());
    }

    #[test]
    fn empty_or_whitespace_content_is_bad_request() {
        for content in ["", " ", "\\n\\t  ", "\\u3000"] {
            let e = err(&format!(r#"{{"type":"chat","content":"{content}"}}"#));
            assert_bad_request(&e, &DecodeError::EmptyContent);
        }
    }

    #[test]
    fn over_long_content_is_too_large_but_keeps_the_connection() {
        let limits = Limits {
            max_frame_bytes: 1024,
            max_content_bytes: 10,
        };
        let frame = r#"{"type":"chat","content":"  12345678901  ","request_id":"r9"}"#;
        let e = match decode_client_frame(frame.as_bytes(), &limits) {
            Err(e) => e,
            Ok(f) => panic!("{f:?}"),
        };
        assert_eq!(e.error, DecodeError::ContentTooLong { len: 11, max: 10 });
        assert_eq!(e.code(), ErrorCode::TooLarge);
        assert_eq!(e.close(), None);
        assert_eq!(e.request_id, Some(rid("r9")));
        // Exactly at the limit after trimming is accepted; multi-byte characters count in bytes.
        let frame = r#"{"type":"chat","content":"  1234567890  "}"#;
        assert!(decode_client_frame(frame.as_bytes(), &limits).is_ok());
        let frame = r#"{"type":"chat","content":"ééééé é"}"#;
        assert!(matches!(
            decode_client_frame(frame.as_bytes(), &limits),
            Err(FrameError {
                error: DecodeError::ContentTooLong { len: 13, max: 10 },
                ..
            })
        ));
    }

    #[test]
    fn oversized_frame_is_too_large_and_closes_with_1009() {
        let limits = Limits {
            max_frame_bytes: 16,
            max_content_bytes: 10,
        };
        // Not even JSON: the size check comes first.
        let e = match decode_client_frame(&[b'x'; 17], &limits) {
            Err(e) => e,
            Ok(f) => panic!("{f:?}"),
        };
        assert_eq!(e.error, DecodeError::FrameTooLarge { len: 17, max: 16 });
        assert_eq!(e.code(), ErrorCode::TooLarge);
        assert_eq!(e.close(), Some(CloseCode::TooLarge));
        assert_eq!(e.request_id, None);
        let at_limit = br#"{"type":"ping"} "#;
        assert_eq!(at_limit.len(), 16);
        assert!(decode_client_frame(at_limit, &limits).is_ok());
        let big = format!(r#"{{"type":"chat","content":"{}"}}"#, "a".repeat(70_000));
        assert!(matches!(
            decode(&big),
            Err(FrameError {
                error: DecodeError::FrameTooLarge { max: 65_536, .. },
                ..
            })
        ));
    }

    #[test]
    fn bad_frames_keep_their_valid_request_id() {
        let cases = [
            r#"{"type":"shout","request_id":"r1"}"#,
            r#"{"request_id":"r1"}"#,
            r#"{"type":"chat","request_id":"r1"}"#,
            r#"{"type":"chat","content":"   ","request_id":"r1"}"#,
            r#"{"type":"chat","content":"hi","request_id":"r1","client_message_id":""}"#,
            r#"{"type":"resume","message_id":"m1","after_seq":"x","request_id":"r1"}"#,
            r#"{"type":7,"request_id":"r1"}"#,
        ];
        for s in cases {
            let e = err(s);
            assert_eq!(e.request_id, Some(rid("r1")), "{s}");
            assert_eq!(e.code(), ErrorCode::BadRequest);
        }
    }

    #[test]
    fn frame_error_answers_with_an_error_frame() {
        let e = err(r#"{"type":"shout","request_id":"r1"}"#);
        assert_eq!(
            e.to_server_frame().encode(),
            r#"{"type":"error","code":"bad_request","message":"unknown frame type `shout`","request_id":"r1"}"#
        );
        let e = err("[]");
        assert_eq!(
            e.to_server_frame().encode(),
            r#"{"type":"error","code":"bad_request","message":"frame is not a JSON object"}"#
        );
    }

    #[test]
    fn deeply_nested_json_is_rejected_without_overflow() {
        let deep = format!(
            r#"{{"type":"ping","x":{}{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let limits = Limits {
            max_frame_bytes: 1 << 20,
            max_content_bytes: 10,
        };
        assert!(matches!(
            decode_client_frame(deep.as_bytes(), &limits),
            Err(FrameError {
                error: DecodeError::InvalidJson(_),
                ..
            })
        ));
    }

    #[test]
    fn client_frames_round_trip_through_encode() {
        let frames = [
            ClientFrame::Chat(Chat {
                content: "héllo 👋".into(),
                request_id: Some(rid("r1")),
                client_message_id: ClientMessageId::parse("k").ok(),
            }),
            ClientFrame::Cancel(Cancel {
                message_id: Some(mid("m")),
                request_id: Some(rid("r")),
            }),
            ClientFrame::Resume(Resume {
                message_id: mid("m"),
                after_seq: u64::MAX,
                request_id: None,
            }),
            ClientFrame::Ping(Ping {
                id: Some(PingId::Int(i64::MIN)),
            }),
        ];
        for f in frames {
            assert_eq!(decode(&super::super::encode_client_frame(&f)), Ok(f));
        }
    }
}
