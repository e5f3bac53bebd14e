//! The seed's HTTP bodies (PROTOCOL.md, "Compatibility surface"):
//! `POST /api/chat`, `GET /api/history/{session_id}`, and the `{detail}`
//! error body the page shows in its alert.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::compat::ChatMessage;
use crate::ids::{MessageId, SessionId, UserId};
use crate::store::StoreError;
use crate::wire::Limits;

/// How the user of a compat request is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompatUser {
    /// `auth = none`: the body's `user_id` when it names one, else the
    /// request's user; a cancel (which names none) finds its reply by
    /// `session_id` and `message_id`.
    FromBody,
    /// Token auth: the token's user, always (a cancel of another user's
    /// reply answers `not_found`).
    Authenticated,
}

/// An error answer: the status and `{detail}` (a sentence a person can read).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CompatError {
    /// The HTTP status (not in the body).
    #[serde(skip)]
    pub status: u16,
    /// What went wrong, for the page's alert.
    pub detail: String,
    /// Over a cap (429): how long to wait before trying again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl CompatError {
    /// `status` with `detail`.
    #[must_use]
    pub fn new(status: u16, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            retry_after_ms: None,
        }
    }

    /// 429 over a cap: `detail` and `retry_after_ms` (the runtime adds
    /// `Retry-After`).
    #[must_use]
    pub fn rate_limited(detail: impl Into<String>, retry_after_ms: u64) -> Self {
        Self {
            retry_after_ms: Some(retry_after_ms),
            ..Self::new(429, detail)
        }
    }

    /// 400 with `detail`.
    #[must_use]
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(400, detail)
    }

    /// The answer to a failed store operation.
    #[must_use]
    pub fn store(error: &StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => {
                Self::new(503, "The store cannot be reached; nothing was changed.")
            }
            StoreError::Refused(_) => Self::new(
                503,
                "The store is full; nothing was changed. Try again later.",
            ),
            StoreError::Internal(_) => Self::new(500, "Internal error in the store."),
        }
    }
}

/// `POST /api/chat` `{session_id, message, user_id?}` (extra fields ignored).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CompatChatRequest {
    /// The conversation.
    pub session_id: SessionId,
    /// The user turn, trimmed.
    pub message: String,
    /// The user named in the body (used under `auth = none`).
    pub user_id: Option<UserId>,
}

fn field<'a>(
    obj: &'a serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, CompatError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(CompatError::bad_request(format!("{name} must be a string"))),
    }
}

/// Decodes a `POST /api/chat` body: 400 for bad JSON, a missing or bad
/// `session_id`, an empty `message`; 413 for a `message` over the limit.
pub fn decode_compat_chat(bytes: &[u8], limits: &Limits) -> Result<CompatChatRequest, CompatError> {
    if bytes.len() > limits.max_frame_bytes {
        return Err(CompatError::new(413, "The request is too large."));
    }
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(bytes) else {
        return Err(CompatError::bad_request("The body must be a JSON object."));
    };
    let session_id = field(&obj, "session_id")?
        .ok_or_else(|| CompatError::bad_request("session_id is required."))?;
    let session_id = SessionId::parse(session_id)
        .map_err(|e| CompatError::bad_request(format!("session_id: {e}")))?;
    let message = field(&obj, "message")?.unwrap_or("").trim();
    if message.is_empty() {
        return Err(CompatError::bad_request("The message is empty."));
    }
    if message.len() > limits.max_content_bytes {
        return Err(CompatError::new(
            413,
            format!(
                "The message is too long ({} bytes; at most {}).",
                message.len(),
                limits.max_content_bytes
            ),
        ));
    }
    let user_id = match field(&obj, "user_id")? {
        None | Some("") => None,
        Some(u) => {
            Some(UserId::parse(u).map_err(|e| CompatError::bad_request(format!("user_id: {e}")))?)
        }
    };
    Ok(CompatChatRequest {
        session_id,
        message: message.to_owned(),
        user_id,
    })
}

/// `200` answer to `POST /api/chat`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CompatChatAccepted {
    /// Always `"streaming"`.
    pub status: String,
    /// The reply's id.
    pub message_id: MessageId,
    /// The conversation.
    pub session_id: SessionId,
    /// A sentence for the log.
    pub message: String,
}

/// `200` answer to `GET /api/history/{session_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CompatHistory {
    /// The conversation.
    pub session_id: SessionId,
    /// Its messages, oldest first.
    pub messages: Vec<ChatMessage>,
    /// How many.
    pub count: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &str) -> Result<CompatChatRequest, CompatError> {
        decode_compat_chat(body.as_bytes(), &Limits::default())
    }

    #[test]
    fn the_seed_body_decodes_and_extra_fields_are_ignored() {
        let r =
            decode(r#"{"session_id":"session_1","message":" hi ","user_id":"demo_user","x":1}"#)
                .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(r.message, "hi");
        assert_eq!(
            r.user_id.map(|u| u.to_string()),
            Some("demo_user".to_owned())
        );
    }

    #[test]
    fn bad_bodies_get_a_detail_with_their_status() {
        for (body, status) in [
            ("{", 400),
            ("[]", 400),
            (r#"{"message":"hi"}"#, 400),
            (r#"{"session_id":"a b","message":"hi"}"#, 400),
            (r#"{"session_id":"s","message":"   "}"#, 400),
            (r#"{"session_id":"s","message":7}"#, 400),
        ] {
            let e = decode(body)
                .err()
                .unwrap_or_else(|| panic!("{body} is refused"));
            assert_eq!(e.status, status, "{body}");
            assert!(!e.detail.is_empty());
        }
        let long = format!(
            r#"{{"session_id":"s","message":"{}"}}"#,
            "a".repeat(Limits::default().max_content_bytes + 1)
        );
        assert_eq!(decode(&long).err().map(|e| e.status), Some(413));
        let json = serde_json::to_string(&CompatError::bad_request("x")).unwrap_or_default();
        assert_eq!(json, r#"{"detail":"x"}"#);
    }
}
