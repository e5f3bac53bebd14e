//! Bodies of the HTTP API (`/v1/...`).
//!
//! Request bodies are read by hand-written decoders with the same precise errors
//! (and the same `content` rules) as WebSocket frames; answer an error with
//! [`HttpError::from`] and its [`HttpError::status`]. Response bodies are plain
//! serde types.

use serde::{Deserialize, Serialize};

use super::decode::{parse_object_value, DecodeError, Fields};
use super::server::{CancelStatus, Message, PresenceStatus};
use super::{ErrorCode, Limits};
use crate::ids::{ClientMessageId, MessageId, Seq, SessionId, UserId};

/// The largest accepted `POST …/cancel` body, in bytes (a cancel body is tiny).
pub const MAX_CANCEL_BODY_BYTES: usize = 4096;

/// `POST /v1/sessions/{session_id}/messages` body.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PostMessageRequest {
    /// The user's text, trimmed; 1..=`max_content_bytes` bytes.
    pub content: String,
    /// Idempotency key (see the `chat` frame).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_message_id: Option<ClientMessageId>,
}

/// Decodes a `POST …/messages` body: at most `limits.max_frame_bytes` bytes
/// ([`DecodeError::FrameTooLarge`] → 413), a JSON object, `content` as in `chat`.
/// Unknown fields are ignored.
pub fn decode_post_message(
    bytes: &[u8],
    limits: &Limits,
) -> Result<PostMessageRequest, DecodeError> {
    let value = parse_object_value(bytes, limits.max_frame_bytes)?;
    let serde_json::Value::Object(obj) = value else {
        return Err(DecodeError::NotAnObject);
    };
    let fields = Fields(&obj);
    Ok(PostMessageRequest {
        content: fields.content(limits.max_content_bytes)?,
        client_message_id: fields.opt_id("client_message_id", ClientMessageId::parse)?,
    })
}

/// `202` answer to `POST …/messages`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PostMessageAccepted {
    /// The user turn's id.
    pub user_message_id: MessageId,
    /// The reply's id.
    pub message_id: MessageId,
}

/// An error body: `{code, message}`, sent with [`HttpError::status`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HttpError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// A human-readable explanation.
    pub message: String,
    /// With `rate_limited` (429): when trying again may succeed, in
    /// milliseconds (the runtime also sends it as `Retry-After`, in whole
    /// seconds rounded up); omitted otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl HttpError {
    /// An error body with `code` and `message`.
    #[must_use]
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// A `rate_limited` (429) body: over a cap, try again in
    /// `retry_after_ms`.
    #[must_use]
    pub fn rate_limited(message: impl Into<String>, retry_after_ms: u64) -> Self {
        Self {
            code: ErrorCode::RateLimited,
            message: message.into(),
            retry_after_ms: Some(retry_after_ms),
        }
    }

    /// The HTTP status to send it with.
    #[must_use]
    pub fn status(&self) -> u16 {
        self.code.http_status()
    }
}

impl From<&DecodeError> for HttpError {
    fn from(e: &DecodeError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

impl From<DecodeError> for HttpError {
    fn from(e: DecodeError) -> Self {
        Self::from(&e)
    }
}

/// `POST /v1/sessions/{session_id}/cancel` body.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CancelRequest {
    /// The reply to cancel; `None`: the conversation's current reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
}

/// Decodes a `POST …/cancel` body. An empty (or all-whitespace) body, `{}` and
/// `{"message_id":null}` all mean "no `message_id`". Bodies over
/// [`MAX_CANCEL_BODY_BYTES`] are rejected unparsed. Unknown fields are ignored.
pub fn decode_cancel_request(bytes: &[u8]) -> Result<CancelRequest, DecodeError> {
    if bytes.len() <= MAX_CANCEL_BODY_BYTES && bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(CancelRequest { message_id: None });
    }
    let value = parse_object_value(bytes, MAX_CANCEL_BODY_BYTES)?;
    let serde_json::Value::Object(obj) = value else {
        return Err(DecodeError::NotAnObject);
    };
    Ok(CancelRequest {
        message_id: Fields(&obj).opt_id("message_id", MessageId::parse)?,
    })
}

/// Answer to `POST …/cancel`: `200` with `{message_id, status, final_seq}`, or
/// `404` with `{message_id, status: "not_found"}` (`message_id` is `null` when
/// none was asked for). `final_seq` is omitted when absent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CancelResponse {
    /// The reply the cancel was decided on (or the one asked for).
    #[serde(default)]
    pub message_id: Option<MessageId>,
    /// The answer.
    pub status: CancelStatus,
    /// The reply's last chunk number; absent for `not_found`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_seq: Option<Seq>,
}

impl CancelResponse {
    /// The HTTP status to send it with: `404` for `not_found`, else `200`.
    #[must_use]
    pub fn status_code(&self) -> u16 {
        match self.status {
            CancelStatus::NotFound => 404,
            _ => 200,
        }
    }
}

/// `200` answer to `GET /v1/sessions/{session_id}/messages`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MessagesResponse {
    /// The conversation.
    pub session_id: SessionId,
    /// Its messages, oldest first.
    pub messages: Vec<Message>,
}

/// `200` answer to `GET /v1/users/{user_id}/presence`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PresenceResponse {
    /// The user.
    pub user_id: UserId,
    /// Their status.
    pub status: PresenceStatus,
    /// How many connections they have open, cluster-wide.
    pub connections: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_json<T: Serialize>(v: &T) -> String {
        serde_json::to_string(v).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn post_message_applies_content_rules() {
        let limits = Limits::default();
        assert_eq!(
            decode_post_message(
                br#"{"content":" hi ","client_message_id":"k1","x":1}"#,
                &limits
            ),
            Ok(PostMessageRequest {
                content: "hi".into(),
                client_message_id: ClientMessageId::parse("k1").ok()
            })
        );
        let e = decode_post_message(br#"{"content":"  "}"#, &limits);
        assert_eq!(e, Err(DecodeError::EmptyContent));
        let e = decode_post_message(br#"{}"#, &limits);
        assert_eq!(e, Err(DecodeError::MissingField { field: "content" }));
        let e = decode_post_message(br#"{"content":1}"#, &limits);
        assert_eq!(e, Err(DecodeError::WrongType { field: "content" }));
        let e = decode_post_message(b"[]", &limits);
        assert_eq!(e, Err(DecodeError::NotAnObject));
        let small = Limits {
            max_frame_bytes: 100,
            max_content_bytes: 3,
        };
        let e = decode_post_message(br#"{"content":"abcd"}"#, &small);
        assert_eq!(e, Err(DecodeError::ContentTooLong { len: 4, max: 3 }));
        let err = HttpError::from(e.err().unwrap_or(DecodeError::NotAnObject));
        assert_eq!(err.status(), 413);
        assert_eq!(
            to_json(&err),
            r#"{"code":"too_large","message":"content of 4 bytes exceeds the limit of 3 bytes"}"#
        );
        let e = decode_post_message(&[b' '; 101], &small);
        assert_eq!(e, Err(DecodeError::FrameTooLarge { len: 101, max: 100 }));
        assert!(matches!(
            decode_post_message(b"{", &limits),
            Err(DecodeError::InvalidJson(_))
        ));
    }

    #[test]
    fn cancel_body_may_be_empty() {
        assert_eq!(
            decode_cancel_request(b""),
            Ok(CancelRequest { message_id: None })
        );
        assert_eq!(
            decode_cancel_request(b" \n"),
            Ok(CancelRequest { message_id: None })
        );
        assert_eq!(
            decode_cancel_request(b"{}"),
            Ok(CancelRequest { message_id: None })
        );
        assert_eq!(
            decode_cancel_request(br#"{"message_id":null}"#),
            Ok(CancelRequest { message_id: None })
        );
        assert_eq!(
            decode_cancel_request(br#"{"message_id":"m1"}"#),
            Ok(CancelRequest {
                message_id: MessageId::parse("m1").ok()
            })
        );
        assert!(matches!(
            decode_cancel_request(br#"{"message_id":""}"#),
            Err(DecodeError::BadId {
                field: "message_id",
                ..
            })
        ));
        assert_eq!(
            decode_cancel_request(br#"{"message_id":3}"#),
            Err(DecodeError::WrongType {
                field: "message_id"
            })
        );
        assert_eq!(
            decode_cancel_request(b"null"),
            Err(DecodeError::NotAnObject)
        );
        let big = vec![b' '; MAX_CANCEL_BODY_BYTES + 1];
        assert!(matches!(
            decode_cancel_request(&big),
            Err(DecodeError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn cancel_responses_encode_per_protocol() {
        let not_found = CancelResponse {
            message_id: MessageId::parse("m1").ok(),
            status: CancelStatus::NotFound,
            final_seq: None,
        };
        assert_eq!(
            to_json(&not_found),
            r#"{"message_id":"m1","status":"not_found"}"#
        );
        assert_eq!(not_found.status_code(), 404);
        let none = CancelResponse {
            message_id: None,
            status: CancelStatus::NotFound,
            final_seq: None,
        };
        assert_eq!(
            to_json(&none),
            r#"{"message_id":null,"status":"not_found"}"#
        );
        let done = CancelResponse {
            message_id: MessageId::parse("m1").ok(),
            status: CancelStatus::Completed,
            final_seq: Some(7),
        };
        assert_eq!(
            to_json(&done),
            r#"{"message_id":"m1","status":"completed","final_seq":7}"#
        );
        assert_eq!(done.status_code(), 200);
        let back: Result<CancelResponse, _> = serde_json::from_str(&to_json(&done));
        assert_eq!(back.ok(), Some(done));
    }

    #[test]
    fn other_bodies_encode() {
        let accepted = PostMessageAccepted {
            user_message_id: MessageId::parse("u1").unwrap_or_else(|e| panic!("{e}")),
            message_id: MessageId::parse("a1").unwrap_or_else(|e| panic!("{e}")),
        };
        assert_eq!(
            to_json(&accepted),
            r#"{"user_message_id":"u1","message_id":"a1"}"#
        );
        let presence = PresenceResponse {
            user_id: UserId::parse("u").unwrap_or_else(|e| panic!("{e}")),
            status: PresenceStatus::Online,
            connections: 2,
        };
        assert_eq!(
            to_json(&presence),
            r#"{"user_id":"u","status":"online","connections":2}"#
        );
        let messages = MessagesResponse {
            session_id: SessionId::parse("s").unwrap_or_else(|e| panic!("{e}")),
            messages: vec![],
        };
        assert_eq!(to_json(&messages), r#"{"session_id":"s","messages":[]}"#);
        let busy = HttpError::new(ErrorCode::Busy, "a reply is still streaming");
        assert_eq!(busy.status(), 409);
        assert_eq!(
            to_json(&busy),
            r#"{"code":"busy","message":"a reply is still streaming"}"#
        );
    }
}
