//! The wire protocol (version 1): WebSocket frames and HTTP bodies, as typed values.
//!
//! `PROTOCOL.md` is the contract; this module is its executable form. It does no
//! I/O: the runtime hands in the bytes of one inbound text frame and gets a
//! [`ClientFrame`] or a [`FrameError`]; it hands out [`ServerFrame::encode`]d text.
//!
//! ```text
//! inbound text frame ──► decode_client_frame(bytes, &limits) ──► Ok(ClientFrame)  → the session
//!                                                            └─► Err(FrameError)  → send error.to_server_frame(),
//!                                                                                   then close if error.close() is Some
//! ServerFrame ──► encode() ──► outbound text frame
//! ```
//!
//! # Decoding
//!
//! [`decode_client_frame`] checks, in this order, and reports the first failure
//! as a [`DecodeError`] that names the offending field:
//!
//! 1. size: longer than [`Limits::max_frame_bytes`] → [`DecodeError::FrameTooLarge`]
//!    (code `too_large`, close `1009`); the bytes are not parsed at all;
//! 2. UTF-8 → [`DecodeError::InvalidUtf8`] (code `bad_request`, close `1007`);
//! 3. JSON syntax → [`DecodeError::InvalidJson`];
//! 4. a JSON object → [`DecodeError::NotAnObject`];
//! 5. `type`: present, a string, and known → [`DecodeError::MissingType`],
//!    [`DecodeError::WrongType`], [`DecodeError::UnknownType`];
//! 6. the fields of that type, in the order listed on each struct →
//!    [`DecodeError::MissingField`], [`DecodeError::WrongType`], [`DecodeError::BadId`],
//!    and for `chat` [`DecodeError::EmptyContent`] / [`DecodeError::ContentTooLong`]
//!    (content is trimmed first; the trimmed text is what is kept).
//!
//! A `null` field counts as absent; unknown fields are ignored (forward
//! compatibility). A valid `request_id` is recovered even from a rejected frame
//! ([`FrameError::request_id`]), so the `error` can be matched to its request.
//! Every error is `bad_request` except the two size errors (`too_large`); only
//! an oversized frame (`1009`) and one that is not UTF-8 (`1007`) close the
//! connection. The decoder never panics.
//!
//! A WebSocket binary frame is not decoded at all: the core answers it with
//! [`DecodeError::BinaryFrame`] (`bad_request`, the connection stays open).
//!
//! # Sizes
//!
//! [`Limits::max_frame_bytes`] counts the bytes on the wire: the payload of
//! one WebSocket message as the client sent it (for a fragmented message,
//! all its fragments together), or an HTTP request body as received — JSON
//! escapes count as sent, so `"\u00e9"` is 8 bytes where `"é"` is 4. The
//! runtime stops reading a message at the limit (nothing larger is buffered)
//! and reports [`Input::FrameTooLarge`](crate::Input::FrameTooLarge); the
//! decoder checks the same length again. [`Limits::max_content_bytes`]
//! counts the UTF-8 bytes of the decoded, trimmed `content`, whatever
//! escapes carried it.
//!
//! # Frames
//!
//! Every server frame is one JSON object with `type` as its first key. Optional
//! fields are omitted when absent, with one exception: `cancel_result.message_id`
//! is `null` when the cancel found nothing (`status: "not_found"`, no `final_seq`).
//!
//! ## Merged chunks
//!
//! A reply's text travels as [`Chunk`] frames numbered `seq` = 1, 2, 3 … without
//! gaps; concatenating the `delta`s in `seq` order gives the reply. A plain chunk
//! covers exactly its `seq` and carries no `from_seq`:
//!
//! ```json
//! {"type":"chunk","message_id":"m1","seq":3,"delta":"hi"}
//! ```
//!
//! A connection that reads too slowly may instead receive one merged frame: its
//! `from_seq` is the first seq it covers, its `seq` the last, and its `delta` the
//! concatenation of the deltas `from_seq..=seq`:
//!
//! ```json
//! {"type":"chunk","message_id":"m1","seq":6,"delta":"hello world","from_seq":4}
//! ```
//!
//! A client tracks the last `seq` it has seen; the next frame's first seq
//! ([`Chunk::first_seq`]: `from_seq`, or `seq` when absent) is always that plus
//! one. Resume with `after_seq` = the last `seq` seen works the same either way.
//!
//! # HTTP
//!
//! The bodies of the `/v1` HTTP API are in [`http`]; request bodies follow the
//! same decoding rules (without the `type` step).

mod client;
mod codes;
mod decode;
pub mod http;
mod server;

pub use client::{encode_client_frame, Cancel, Chat, ClientFrame, Ping, PingId, Resume};
pub use codes::{CloseCode, ErrorCode};
pub use decode::{decode_client_frame, DecodeError, FrameError};
pub use server::{
    decode_server_frame, Ack, CancelResult, CancelStatus, Chunk, DialectFrame, End, ErrorFrame,
    Hello, History, Message, MessageStatus, Pong, Presence, PresenceStatus, ReplyStatus,
    ResumeUnavailable, ResumeUnavailableReason, Role, ServerFrame, Start, Usage, UserMessage,
    PROTOCOL_VERSION,
};

/// Size limits for inbound frames and user text (configurable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// The largest accepted inbound frame (or request body), in bytes on the
    /// wire (see [Sizes](self#sizes)); larger frames are rejected unparsed and
    /// close the WebSocket with `1009`.
    pub max_frame_bytes: usize,
    /// The largest accepted user text, in UTF-8 bytes after unescaping and
    /// trimming.
    pub max_content_bytes: usize,
}

impl Limits {
    /// Default [`Limits::max_frame_bytes`]: 64 KiB.
    pub const DEFAULT_MAX_FRAME_BYTES: usize = 65_536;
    /// Default [`Limits::max_content_bytes`]: 32 KiB.
    pub const DEFAULT_MAX_CONTENT_BYTES: usize = 32_768;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: Self::DEFAULT_MAX_FRAME_BYTES,
            max_content_bytes: Self::DEFAULT_MAX_CONTENT_BYTES,
        }
    }
}
