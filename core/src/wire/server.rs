//! Server → client frames and the `Message` shape they share with the HTTP API.
//!
//! Every frame is a JSON object whose first key is `type`. Optional fields are
//! omitted when absent, except `cancel_result.message_id`, which is `null` when
//! nothing was found. Decoding ([`decode_server_frame`]) ignores unknown fields.

use serde::{Deserialize, Serialize};

use super::client::PingId;
use super::codes::ErrorCode;
use crate::ids::{MessageId, NodeId, RequestId, Seq, SessionId, UserId};

/// The protocol version sent in `hello.protocol`.
pub const PROTOCOL_VERSION: u32 = 1;

/// A frame from the server, tagged by `type` (`snake_case`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// `hello`: the first frame of a connection.
    Hello(Hello),
    /// `history`: the second frame, the conversation's recent messages.
    History(History),
    /// `user_message`: a user turn was accepted.
    UserMessage(UserMessage),
    /// `ack`: the answer to `chat`, before any chunk of its reply.
    Ack(Ack),
    /// `start`: a reply begins.
    Start(Start),
    /// `chunk`: text of a reply (possibly several chunks merged, see the module docs of `wire`).
    Chunk(Chunk),
    /// `end`: the last frame of a reply.
    End(End),
    /// `cancel_result`: the answer to `cancel`.
    CancelResult(CancelResult),
    /// `resume_unavailable`: a resume cannot be served exactly.
    ResumeUnavailable(ResumeUnavailable),
    /// `presence`: the same user's presence changed.
    Presence(Presence),
    /// `pong`: the answer to `ping`.
    Pong(Pong),
    /// `error`: a request failed; the connection stays open unless a close follows.
    Error(ErrorFrame),
    /// A frame of another dialect ([`dialect`](crate::dialect)), already
    /// rendered: its text is sent as it is. Never decoded.
    #[serde(skip)]
    Dialect(DialectFrame),
}

/// A frame rendered by a connection's [dialect](crate::dialect): its final
/// text (a JSON object, or plain text such as the seed's `pong`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialectFrame {
    /// The frame's kind, for logs and tests (`"message"`, `"welcome"`, …).
    pub kind: &'static str,
    /// The text sent on the wire.
    pub text: String,
}

impl DialectFrame {
    /// A rendered frame of `kind` with wire text `text`.
    #[must_use]
    pub fn new(kind: &'static str, text: String) -> Self {
        Self { kind, text }
    }
}

impl ServerFrame {
    /// The frame as JSON text, `type` first.
    #[must_use]
    pub fn encode(&self) -> String {
        if let Self::Dialect(f) = self {
            return f.text.clone();
        }
        // Serializing these plain types cannot fail (no maps with non-string keys,
        // no fallible Serialize impls); the fallback keeps this panic-free anyway.
        serde_json::to_string(self).unwrap_or_else(|_| {
            String::from(r#"{"type":"error","code":"internal","message":"frame encoding failed"}"#)
        })
    }

    /// Appends the frame's JSON text to `out` (to reuse a buffer).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        if let Self::Dialect(f) = self {
            out.extend_from_slice(f.text.as_bytes());
            return;
        }
        let start = out.len();
        if serde_json::to_writer(&mut *out, self).is_err() {
            out.truncate(start);
            out.extend_from_slice(self.encode().as_bytes());
        }
    }

    /// The frame's `type` on the wire.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::History(_) => "history",
            Self::UserMessage(_) => "user_message",
            Self::Ack(_) => "ack",
            Self::Start(_) => "start",
            Self::Chunk(_) => "chunk",
            Self::End(_) => "end",
            Self::CancelResult(_) => "cancel_result",
            Self::ResumeUnavailable(_) => "resume_unavailable",
            Self::Presence(_) => "presence",
            Self::Pong(_) => "pong",
            Self::Error(_) => "error",
            Self::Dialect(f) => f.kind,
        }
    }
}

/// Decodes a server frame (for clients and tests). Ids are validated; unknown fields are ignored.
pub fn decode_server_frame(text: &str) -> Result<ServerFrame, serde_json::Error> {
    serde_json::from_str(text)
}

macro_rules! into_frame {
    ($($variant:ident($ty:ident)),* $(,)?) => {
        $(
            impl From<$ty> for ServerFrame {
                fn from(frame: $ty) -> Self {
                    ServerFrame::$variant(frame)
                }
            }
        )*
    };
}

into_frame!(
    Hello(Hello),
    History(History),
    UserMessage(UserMessage),
    Ack(Ack),
    Start(Start),
    Chunk(Chunk),
    End(End),
    CancelResult(CancelResult),
    ResumeUnavailable(ResumeUnavailable),
    Presence(Presence),
    Pong(Pong),
    Error(ErrorFrame),
);

/// `hello`: the first frame of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version, [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The conversation this connection belongs to.
    pub session_id: SessionId,
    /// The authenticated user.
    pub user_id: UserId,
    /// This connection's id (opaque).
    pub connection_id: String,
    /// The node serving this connection.
    pub node_id: NodeId,
    /// How often the server pings, in milliseconds.
    pub heartbeat_ms: u64,
    /// How long after its end a reply can still be resumed exactly, in milliseconds.
    pub resume_window_ms: u64,
}

/// `history`: the conversation's recent messages, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct History {
    /// The messages, oldest first (at most the configured count).
    pub messages: Vec<Message>,
}

/// `user_message`: a user turn was accepted; sent to every connection of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserMessage {
    /// The user turn's id.
    pub message_id: MessageId,
    /// The (trimmed) text.
    pub content: String,
    /// When it was accepted, Unix epoch milliseconds.
    pub created_at_ms: u64,
    /// The `chat`'s `request_id`: only on the sender's connection; omitted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
}

/// `ack`: the answer to `chat`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ack {
    /// The `chat`'s `request_id`; omitted when it had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    /// The user turn's id.
    pub user_message_id: MessageId,
    /// The reply's id.
    pub message_id: MessageId,
}

/// `start`: a reply begins.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Start {
    /// The reply's id.
    pub message_id: MessageId,
    /// The user turn it answers.
    pub reply_to: MessageId,
}

/// `chunk`: text of a reply.
///
/// A plain chunk covers exactly `seq` and has no `from_seq`. A merged chunk covers
/// `from_seq..=seq` and its `delta` is the concatenation of those chunks' deltas.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Chunk {
    /// The reply's id.
    pub message_id: MessageId,
    /// The (last) chunk number this frame covers.
    pub seq: Seq,
    /// The text.
    pub delta: String,
    /// On a merged frame only: the first chunk number it covers; omitted otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_seq: Option<Seq>,
    /// With `--chunk-timestamps` only: when the producing node appended the
    /// (last) chunk this frame covers, Unix epoch nanoseconds; omitted
    /// otherwise (docs/protocol-notes.md, "Chunk timestamps").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_ns: Option<u64>,
}

impl Chunk {
    /// The first chunk number this frame covers (`from_seq`, or `seq` for a plain chunk).
    #[must_use]
    pub fn first_seq(&self) -> Seq {
        self.from_seq.unwrap_or(self.seq)
    }
}

/// `end`: the last frame of a reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct End {
    /// The reply's id.
    pub message_id: MessageId,
    /// How it ended.
    pub status: ReplyStatus,
    /// The last chunk number of the reply (0 when it has none).
    pub final_seq: Seq,
    /// Why it failed; omitted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Token counts, when known; omitted otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// `cancel_result`: the answer to `cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CancelResult {
    /// The `cancel`'s `request_id`; omitted when it had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    /// The reply the cancel was decided on; `null` when nothing was found.
    #[serde(default)]
    pub message_id: Option<MessageId>,
    /// The answer.
    pub status: CancelStatus,
    /// The reply's last chunk number; omitted for `not_found`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_seq: Option<Seq>,
}

/// `resume_unavailable`: a resume cannot be served exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResumeUnavailable {
    /// The reply that was to be resumed.
    pub message_id: MessageId,
    /// Why not.
    pub reason: ResumeUnavailableReason,
    /// The reply as known now, when its final text is still known; omitted otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Message>,
}

/// `presence`: a presence change of the same user on other devices.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Presence {
    /// The user.
    pub user_id: UserId,
    /// Their new status.
    pub status: PresenceStatus,
}

/// `pong`: the answer to `ping`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pong {
    /// The ping's `id`, verbatim; omitted when the ping had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<PingId>,
}

/// `error`: a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// What kind of failure.
    pub code: ErrorCode,
    /// A human-readable explanation.
    pub message: String,
    /// The failed request's `request_id`, when it answers one; omitted otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    /// With `rate_limited`: when trying again may succeed, in milliseconds;
    /// omitted otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// A message in `history`, snapshots and the HTTP API.
///
/// For a streaming reply `content` holds chunks `1..=seq`; for a settled one `seq`
/// is its `final_seq`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    /// The message's id.
    pub message_id: MessageId,
    /// Who wrote it.
    pub role: Role,
    /// Its text (so far).
    pub content: String,
    /// Where it stands.
    pub status: MessageStatus,
    /// When it was created, Unix epoch milliseconds.
    pub created_at_ms: u64,
    /// The last chunk number that `content` holds.
    pub seq: Seq,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A user turn.
    User,
    /// An assistant reply.
    Assistant,
}

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Finished normally (user turns are always completed).
    Completed,
    /// Cancelled.
    Cancelled,
    /// Failed.
    Failed,
    /// Still being produced.
    Streaming,
}

/// How a reply ended (`end.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyStatus {
    /// Finished normally.
    Completed,
    /// Cancelled.
    Cancelled,
    /// Failed.
    Failed,
}

impl From<ReplyStatus> for MessageStatus {
    fn from(s: ReplyStatus) -> Self {
        match s {
            ReplyStatus::Completed => Self::Completed,
            ReplyStatus::Cancelled => Self::Cancelled,
            ReplyStatus::Failed => Self::Failed,
        }
    }
}

/// The answer to a cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelStatus {
    /// The reply is (or already was) cancelled.
    Cancelled,
    /// The reply had already completed.
    Completed,
    /// The reply had already failed.
    Failed,
    /// No such reply (unknown, expired, or someone else's).
    NotFound,
}

impl From<ReplyStatus> for CancelStatus {
    fn from(s: ReplyStatus) -> Self {
        match s {
            ReplyStatus::Completed => Self::Completed,
            ReplyStatus::Cancelled => Self::Cancelled,
            ReplyStatus::Failed => Self::Failed,
        }
    }
}

/// Why a resume cannot be served exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeUnavailableReason {
    /// The reply ended longer ago than the resume window.
    Expired,
    /// The chunk log was lost (e.g. the store restarted): continuity cannot be proven.
    EpochChanged,
    /// No such reply in this conversation.
    Unknown,
}

/// A user's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    /// At least one connection is open (or the user is lingering).
    Online,
    /// No connection anywhere.
    Offline,
}

/// Token counts of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mid(s: &str) -> MessageId {
        match MessageId::parse(s) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    fn rid(s: &str) -> RequestId {
        match RequestId::parse(s) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    fn round_trips(frame: &ServerFrame, json: &str) {
        assert_eq!(frame.encode(), json);
        match decode_server_frame(json) {
            Ok(back) => assert_eq!(&back, frame),
            Err(e) => panic!("{json}: {e}"),
        }
        let mut buf = b"prefix".to_vec();
        frame.encode_into(&mut buf);
        assert_eq!(&buf[6..], json.as_bytes());
    }

    #[test]
    fn plain_chunk_omits_from_seq() {
        let f = ServerFrame::Chunk(Chunk {
            message_id: mid("m1"),
            seq: 3,
            delta: "hi".into(),
            from_seq: None,
            ts_ns: None,
        });
        round_trips(
            &f,
            r#"{"type":"chunk","message_id":"m1","seq":3,"delta":"hi"}"#,
        );
    }

    #[test]
    fn merged_chunk_carries_from_seq() {
        let c = Chunk {
            message_id: mid("m1"),
            seq: 5,
            delta: "abc".into(),
            from_seq: Some(3),
            ts_ns: None,
        };
        assert_eq!(c.first_seq(), 3);
        round_trips(
            &c.into(),
            r#"{"type":"chunk","message_id":"m1","seq":5,"delta":"abc","from_seq":3}"#,
        );
    }

    #[test]
    fn not_found_cancel_result_has_null_message_id_and_no_final_seq() {
        let f = ServerFrame::CancelResult(CancelResult {
            request_id: Some(rid("r1")),
            message_id: None,
            status: CancelStatus::NotFound,
            final_seq: None,
        });
        round_trips(
            &f,
            r#"{"type":"cancel_result","request_id":"r1","message_id":null,"status":"not_found"}"#,
        );
        let f = ServerFrame::CancelResult(CancelResult {
            request_id: None,
            message_id: Some(mid("m1")),
            status: CancelStatus::Cancelled,
            final_seq: Some(4),
        });
        round_trips(
            &f,
            r#"{"type":"cancel_result","message_id":"m1","status":"cancelled","final_seq":4}"#,
        );
    }

    #[test]
    fn hello_and_history_encode_type_first() {
        let hello = ServerFrame::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            session_id: SessionId::parse("s1").unwrap_or_else(|e| panic!("{e}")),
            user_id: UserId::parse("u1").unwrap_or_else(|e| panic!("{e}")),
            connection_id: "c7".into(),
            node_id: NodeId::parse("n1").unwrap_or_else(|e| panic!("{e}")),
            heartbeat_ms: 15_000,
            resume_window_ms: 30_000,
        });
        round_trips(
            &hello,
            r#"{"type":"hello","protocol":1,"session_id":"s1","user_id":"u1","connection_id":"c7","node_id":"n1","heartbeat_ms":15000,"resume_window_ms":30000}"#,
        );
        let history = ServerFrame::History(History {
            messages: vec![Message {
                message_id: mid("m1"),
                role: Role::Assistant,
                content: "hi".into(),
                status: MessageStatus::Streaming,
                created_at_ms: 5,
                seq: 2,
            }],
        });
        round_trips(
            &history,
            r#"{"type":"history","messages":[{"message_id":"m1","role":"assistant","content":"hi","status":"streaming","created_at_ms":5,"seq":2}]}"#,
        );
    }

    #[test]
    fn end_omits_absent_reason_and_usage() {
        let f = ServerFrame::End(End {
            message_id: mid("m1"),
            status: ReplyStatus::Completed,
            final_seq: 9,
            reason: None,
            usage: Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 9,
            }),
        });
        round_trips(
            &f,
            r#"{"type":"end","message_id":"m1","status":"completed","final_seq":9,"usage":{"prompt_tokens":3,"completion_tokens":9}}"#,
        );
        let f = ServerFrame::End(End {
            message_id: mid("m1"),
            status: ReplyStatus::Failed,
            final_seq: 0,
            reason: Some("owner_lost".into()),
            usage: None,
        });
        round_trips(
            &f,
            r#"{"type":"end","message_id":"m1","status":"failed","final_seq":0,"reason":"owner_lost"}"#,
        );
    }

    #[test]
    fn small_frames_encode_exactly() {
        round_trips(
            &ServerFrame::Ack(Ack {
                request_id: Some(rid("r1")),
                user_message_id: mid("u"),
                message_id: mid("a"),
            }),
            r#"{"type":"ack","request_id":"r1","user_message_id":"u","message_id":"a"}"#,
        );
        round_trips(
            &ServerFrame::UserMessage(UserMessage {
                message_id: mid("u"),
                content: "hey".into(),
                created_at_ms: 1,
                request_id: None,
            }),
            r#"{"type":"user_message","message_id":"u","content":"hey","created_at_ms":1}"#,
        );
        round_trips(
            &ServerFrame::Start(Start {
                message_id: mid("a"),
                reply_to: mid("u"),
            }),
            r#"{"type":"start","message_id":"a","reply_to":"u"}"#,
        );
        round_trips(
            &ServerFrame::ResumeUnavailable(ResumeUnavailable {
                message_id: mid("a"),
                reason: ResumeUnavailableReason::EpochChanged,
                snapshot: None,
            }),
            r#"{"type":"resume_unavailable","message_id":"a","reason":"epoch_changed"}"#,
        );
        round_trips(
            &ServerFrame::Presence(Presence {
                user_id: UserId::parse("u1").unwrap_or_else(|e| panic!("{e}")),
                status: PresenceStatus::Offline,
            }),
            r#"{"type":"presence","user_id":"u1","status":"offline"}"#,
        );
        round_trips(
            &ServerFrame::Pong(Pong {
                id: Some(PingId::Int(7)),
            }),
            r#"{"type":"pong","id":7}"#,
        );
        round_trips(
            &ServerFrame::Pong(Pong {
                id: Some(PingId::Str("7".into())),
            }),
            r#"{"type":"pong","id":"7"}"#,
        );
        round_trips(&ServerFrame::Pong(Pong { id: None }), r#"{"type":"pong"}"#);
        round_trips(
            &ServerFrame::Error(ErrorFrame {
                code: ErrorCode::Busy,
                message: "busy".into(),
                request_id: None,
                retry_after_ms: None,
            }),
            r#"{"type":"error","code":"busy","message":"busy"}"#,
        );
    }

    #[test]
    fn decoding_validates_ids_and_ignores_unknown_fields() {
        let long = "m".repeat(65);
        assert!(decode_server_frame(&format!(
            r#"{{"type":"start","message_id":"{long}","reply_to":"u"}}"#
        ))
        .is_err());
        assert!(decode_server_frame(r#"{"type":"nope"}"#).is_err());
        let f =
            decode_server_frame(r#"{"type":"start","message_id":"a","reply_to":"u","extra":[1]}"#);
        assert_eq!(
            f.ok(),
            Some(ServerFrame::Start(Start {
                message_id: mid("a"),
                reply_to: mid("u")
            }))
        );
    }

    #[test]
    fn reply_status_converts_to_message_and_cancel_status() {
        assert_eq!(
            MessageStatus::from(ReplyStatus::Cancelled),
            MessageStatus::Cancelled
        );
        assert_eq!(
            CancelStatus::from(ReplyStatus::Failed),
            CancelStatus::Failed
        );
    }
}
