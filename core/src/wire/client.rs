//! Client → server frames: `chat`, `cancel`, `resume`, `ping`.
//!
//! These types only serialize (for clients and tests, see [`encode_client_frame`]).
//! The server reads them with [`decode_client_frame`](super::decode_client_frame),
//! which validates every field and reports precisely what is wrong.

use serde::{Deserialize, Serialize};

use crate::ids::{ClientMessageId, MessageId, RequestId, Seq};

/// A decoded frame from a client.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// `chat`: a user turn that starts a new reply.
    Chat(Chat),
    /// `cancel`: cancel a reply (the current one when no `message_id` is given).
    Cancel(Cancel),
    /// `resume`: replay a reply's chunks after `after_seq`, then continue live.
    Resume(Resume),
    /// `ping`: answered with `pong`.
    Ping(Ping),
}

impl ClientFrame {
    /// The frame's `type` on the wire.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Chat(_) => "chat",
            Self::Cancel(_) => "cancel",
            Self::Resume(_) => "resume",
            Self::Ping(_) => "ping",
        }
    }

    /// The client's `request_id`, when the frame carries one.
    #[must_use]
    pub fn request_id(&self) -> Option<&RequestId> {
        match self {
            Self::Chat(c) => c.request_id.as_ref(),
            Self::Cancel(c) => c.request_id.as_ref(),
            Self::Resume(r) => r.request_id.as_ref(),
            Self::Ping(_) => None,
        }
    }
}

/// `chat`: a user turn.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Chat {
    /// The user's text, trimmed; 1..=`max_content_bytes` bytes.
    pub content: String,
    /// Echoed in the `ack` (and `user_message` to the sender) or `error` that answers this frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    /// Idempotency key: the same key in the same conversation never starts a second reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_message_id: Option<ClientMessageId>,
}

/// `cancel`: cancel a reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Cancel {
    /// The reply to cancel; `None` means the current or just-requested reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
    /// Echoed in the `cancel_result`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
}

/// `resume`: replay a reply from `after_seq + 1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Resume {
    /// The reply to resume.
    pub message_id: MessageId,
    /// The last `seq` the client has; replay starts at `after_seq + 1` (0 = from the start).
    pub after_seq: Seq,
    /// Echoed in an `error` that answers this frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
}

/// `ping`: answered with a `pong` that echoes `id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Ping {
    /// Echoed verbatim in the `pong`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<PingId>,
}

/// A `ping` id: a JSON string or an integer (in the `i64` range), echoed verbatim in `pong`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PingId {
    /// An integer id.
    Int(i64),
    /// A string id.
    Str(String),
}

/// Encodes `frame` as the JSON text a client sends (`type` first, absent optionals omitted).
#[must_use]
pub fn encode_client_frame(frame: &ClientFrame) -> String {
    // Serializing these plain types cannot fail (no maps with non-string keys,
    // no fallible Serialize impls); the fallback keeps this panic-free anyway.
    serde_json::to_string(frame).unwrap_or_else(|_| String::from(r#"{"type":"invalid"}"#))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id<T>(r: Result<T, crate::ids::IdError>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => panic!("test id: {e}"),
        }
    }

    #[test]
    fn chat_encodes_type_first_and_omits_absent_fields() {
        let f = ClientFrame::Chat(Chat {
            content: "hi".into(),
            request_id: Some(id(RequestId::parse("r1"))),
            client_message_id: None,
        });
        assert_eq!(
            encode_client_frame(&f),
            r#"{"type":"chat","content":"hi","request_id":"r1"}"#
        );
    }

    #[test]
    fn ping_ids_encode_verbatim() {
        let f = ClientFrame::Ping(Ping {
            id: Some(PingId::Int(-7)),
        });
        assert_eq!(encode_client_frame(&f), r#"{"type":"ping","id":-7}"#);
        let f = ClientFrame::Ping(Ping {
            id: Some(PingId::Str("7".into())),
        });
        assert_eq!(encode_client_frame(&f), r#"{"type":"ping","id":"7"}"#);
        let f = ClientFrame::Ping(Ping { id: None });
        assert_eq!(encode_client_frame(&f), r#"{"type":"ping"}"#);
    }

    #[test]
    fn resume_and_cancel_encode() {
        let f = ClientFrame::Resume(Resume {
            message_id: id(MessageId::parse("m1")),
            after_seq: 4,
            request_id: None,
        });
        assert_eq!(
            encode_client_frame(&f),
            r#"{"type":"resume","message_id":"m1","after_seq":4}"#
        );
        assert_eq!(f.kind(), "resume");
        let f = ClientFrame::Cancel(Cancel {
            message_id: None,
            request_id: None,
        });
        assert_eq!(encode_client_frame(&f), r#"{"type":"cancel"}"#);
    }
}
