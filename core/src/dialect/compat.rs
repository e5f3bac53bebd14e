//! The seed front end's dialect: `GET /ws/chat` (PROTOCOL.md, "Compatibility
//! surface"; `compat-seed.md` rows G1–G13).
//!
//! **Codec.** The page sends only `{"type":"ping"}`. `{"type":"ping"}` →
//! `{"type":"pong"}`, text `ping` → text `pong`, `{"type":"heartbeat"}` →
//! `{"type":"heartbeat_ack"}`; anything else is ignored (and logged by the
//! runtime through [`Event::FrameIgnored`](crate::Event::FrameIgnored)),
//! never answered with an `error` frame: the page would lose its Cancel
//! button.
//!
//! **Renderer.** What the node sends a connection, in the seed's shape:
//!
//! | native frame | `/ws/chat` |
//! | --- | --- |
//! | `hello` | `{"type":"welcome","sessionId":S,"timestamp":ISO-8601}` |
//! | `history` | `{"type":"history","messages":[ChatMessage…]}`, then the **catch-up**: the streaming reply's snapshot as a `message` (`is_complete:false`) and the final `message` of the latest settled reply and of every settled reply created within the resume window |
//! | `start`, `chunk` | `{"type":"message","data":ChatMessage}` with the **accumulated** text, `is_complete:false`, at most one per [`CompatSettings::window`] per connection (50 ms once the text grew by an eighth, else 1 s; a timer sends what waited) |
//! | `end` | exactly one final `message`: `is_complete:true`, `chunk:null`, the final text (+ the cancelled suffix or the failure suffix); nothing of that reply after it |
//! | `user_message`, `ack`, `cancel_result`, `presence`, `pong`, `error`, `resume_unavailable` | nothing (no echo of user turns; no error frames) |

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::RenderCtx;
use crate::ids::{MessageId, SessionId, UserId};
use crate::wire::{DialectFrame, Message, MessageStatus, ReplyStatus, Role, ServerFrame};

/// The seed's marker of a cancelled reply, appended to its text.
pub const DEFAULT_CANCELLED_SUFFIX: &str = "\n\n[Đã hủy]";
/// The seed's apology for a failed reply.
pub const DEFAULT_FAILURE_SENTENCE: &str = "Xin lỗi, đã có lỗi xảy ra khi xử lý yêu cầu của bạn.";
/// The user under `auth = none` when the page names none.
pub const DEFAULT_USER: &str = "default_user";

/// The compat dialect's settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CompatSettings {
    /// Appended to a cancelled reply's text, live and in history.
    pub cancelled_suffix: String,
    /// A failed reply's text is followed by `"\n\n"` and this sentence.
    pub failure_sentence: String,
    /// At most one non-final `message` frame per connection per this long,
    /// and only when the text has grown enough since the last one (see
    /// [`CompatSettings::window`]).
    pub coalesce: Duration,
    /// The longest wait between two non-final `message` frames while text
    /// keeps coming, however little (see [`CompatSettings::window`]).
    pub coalesce_max: Duration,
}

impl Default for CompatSettings {
    fn default() -> Self {
        Self {
            cancelled_suffix: DEFAULT_CANCELLED_SUFFIX.to_owned(),
            failure_sentence: DEFAULT_FAILURE_SENTENCE.to_owned(),
            coalesce: Duration::from_millis(50),
            coalesce_max: Duration::from_secs(1),
        }
    }
}

impl CompatSettings {
    /// The text must have grown by at least `1 / GROWTH_DIVISOR` of what the
    /// last frame carried before the next frame goes out inside
    /// [`coalesce_max`](Self::coalesce_max).
    pub const GROWTH_DIVISOR: usize = 8;

    /// The wait after a non-final frame whose longest text was `sent_bytes`
    /// long, now that the longest waiting text is `now_bytes` long:
    /// [`coalesce`](Self::coalesce) once the text has grown by an eighth,
    /// else [`coalesce_max`](Self::coalesce_max).
    ///
    /// Every such frame repeats the whole text so far, so a fixed window
    /// would send bytes in proportion to the text's length times the
    /// reply's duration. Waiting for the text to grow by a fraction makes
    /// the sizes of successive frames a geometric series: the bytes stay
    /// within a constant multiple of the final text whatever the
    /// generator's pace, while a short reply still updates every 50 ms and
    /// a long one at least once per `coalesce_max`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use weir_core::dialect::compat::CompatSettings;
    ///
    /// let s = CompatSettings::default();
    /// assert_eq!(s.window(800, 900), Duration::from_millis(50));
    /// assert_eq!(s.window(800, 850), Duration::from_secs(1));
    /// ```
    #[must_use]
    pub fn window(&self, sent_bytes: usize, now_bytes: usize) -> Duration {
        let grown = now_bytes >= sent_bytes.saturating_add(sent_bytes / Self::GROWTH_DIVISOR);
        if grown {
            self.coalesce
        } else {
            self.coalesce_max.max(self.coalesce)
        }
    }

    /// The text the page shows for a message of `status` whose own text is
    /// `text`.
    #[must_use]
    pub fn shown_text(&self, text: &str, status: MessageStatus) -> String {
        match status {
            MessageStatus::Cancelled => format!("{text}{}", self.cancelled_suffix),
            MessageStatus::Failed => format!("{text}\n\n{}", self.failure_sentence),
            MessageStatus::Completed | MessageStatus::Streaming => text.to_owned(),
        }
    }
}

/// What a client frame on `/ws/chat` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompatRequest {
    /// `{"type":"ping"}`: answer `{"type":"pong"}`.
    Ping,
    /// Text `ping`: answer text `pong`.
    TextPing,
    /// `{"type":"heartbeat"}`: answer `{"type":"heartbeat_ack"}`.
    Heartbeat,
    /// Anything else: ignored (the reason is for the log).
    Ignored(&'static str),
}

impl CompatRequest {
    /// The answer, if any.
    #[must_use]
    pub fn answer(self) -> Option<DialectFrame> {
        match self {
            Self::Ping => Some(DialectFrame::new("pong", r#"{"type":"pong"}"#.to_owned())),
            Self::TextPing => Some(DialectFrame::new("pong", "pong".to_owned())),
            Self::Heartbeat => Some(DialectFrame::new(
                "heartbeat_ack",
                r#"{"type":"heartbeat_ack"}"#.to_owned(),
            )),
            Self::Ignored(_) => None,
        }
    }
}

/// Decodes one client frame of `/ws/chat`. Never fails: what it does not
/// know is [`CompatRequest::Ignored`].
#[must_use]
pub fn decode_compat_frame(bytes: &[u8]) -> CompatRequest {
    if bytes.trim_ascii() == b"ping" {
        return CompatRequest::TextPing;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return CompatRequest::Ignored("not JSON");
    };
    match value.get("type").and_then(serde_json::Value::as_str) {
        Some("ping") => CompatRequest::Ping,
        Some("heartbeat") => CompatRequest::Heartbeat,
        Some(_) => CompatRequest::Ignored("unknown type"),
        None => CompatRequest::Ignored("no type"),
    }
}

/// The seed's `ChatMessage`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    /// The message's id.
    pub message_id: MessageId,
    /// The conversation.
    pub session_id: SessionId,
    /// Its user.
    pub user_id: UserId,
    /// `user` or `assistant`.
    pub role: Role,
    /// All the text so far (with the cancelled or failure suffix once settled so).
    pub content: String,
    /// The same as `content` while streaming (the seed's quirk), `null` once settled.
    pub chunk: Option<String>,
    /// Creation time, Unix epoch milliseconds.
    pub timestamp: u64,
    /// `status != streaming`.
    pub is_complete: bool,
}

impl ChatMessage {
    /// A native message of `session` / `user` in the seed's shape.
    #[must_use]
    pub fn from_message(
        m: &Message,
        session: &SessionId,
        user: &UserId,
        settings: &CompatSettings,
    ) -> Self {
        let streaming = m.status == MessageStatus::Streaming;
        let content = settings.shown_text(&m.content, m.status);
        Self {
            message_id: m.message_id.clone(),
            session_id: session.clone(),
            user_id: user.clone(),
            role: m.role,
            chunk: streaming.then(|| content.clone()),
            content,
            timestamp: m.created_at_ms,
            is_complete: !streaming,
        }
    }
}

#[derive(Serialize)]
struct MessageFrame<'a> {
    r#type: &'static str,
    data: &'a ChatMessage,
}

#[derive(Serialize)]
struct HistoryFrame<'a> {
    r#type: &'static str,
    messages: &'a [ChatMessage],
}

#[derive(Serialize)]
struct WelcomeFrame<'a> {
    r#type: &'static str,
    #[serde(rename = "sessionId")]
    session_id: &'a SessionId,
    timestamp: String,
}

fn json(value: &impl Serialize) -> String {
    // Plain structs of strings and numbers: serializing cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// `{"type":"message","data":m}`.
#[must_use]
pub fn message_frame(m: &ChatMessage) -> DialectFrame {
    DialectFrame::new(
        "message",
        json(&MessageFrame {
            r#type: "message",
            data: m,
        }),
    )
}

/// One reply this connection is being shown.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LiveText {
    content: String,
    created_at_ms: u64,
    /// Text arrived that no frame showed yet.
    dirty: bool,
}

/// How many ended replies a connection remembers (late frames about them
/// are dropped, so nothing follows a final frame).
const ENDED_MEMORY: usize = 8;

/// One `/ws/chat` connection's renderer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CompatConn {
    session: SessionId,
    user: UserId,
    replies: BTreeMap<MessageId, LiveText>,
    ended: VecDeque<MessageId>,
    /// When the last non-final `message` frame went out, and the length of
    /// the longest text it carried.
    last_sent: Option<(Instant, usize)>,
    /// When the text that waits goes out.
    due: Option<Instant>,
}

impl CompatConn {
    /// The renderer of a connection of `user` to `session`.
    #[must_use]
    pub fn new(session: SessionId, user: UserId) -> Self {
        Self {
            session,
            user,
            replies: BTreeMap::new(),
            ended: VecDeque::new(),
            last_sent: None,
            due: None,
        }
    }

    /// When [`CompatConn::handle_timeout`] should run.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.due
    }

    /// Sends the text that waited for the coalescing window, if it is over.
    pub fn handle_timeout(&mut self, ctx: &RenderCtx<'_>, out: &mut Vec<DialectFrame>) {
        if self.due.is_some_and(|due| ctx.now >= due) {
            self.due = None;
            self.flush(ctx, out);
        }
    }

    fn chat_message(&self, id: &MessageId, live: &LiveText) -> ChatMessage {
        ChatMessage {
            message_id: id.clone(),
            session_id: self.session.clone(),
            user_id: self.user.clone(),
            role: Role::Assistant,
            content: live.content.clone(),
            chunk: Some(live.content.clone()),
            timestamp: live.created_at_ms,
            is_complete: false,
        }
    }

    /// Sends every reply's waiting text now if the window allows, else arms
    /// the timer for the window's end.
    fn flush(&mut self, ctx: &RenderCtx<'_>, out: &mut Vec<DialectFrame>) {
        if !self.replies.values().any(|r| r.dirty) {
            return;
        }
        let dirty = || self.replies.iter().filter(|(_, r)| r.dirty);
        let bytes = dirty().map(|(_, r)| r.content.len()).max().unwrap_or(0);
        if let Some((last, sent)) = self.last_sent {
            let open_at = last + ctx.compat.window(sent, bytes);
            if ctx.now < open_at {
                self.due = Some(self.due.map_or(open_at, |d| d.min(open_at)));
                return;
            }
        }
        let frames: Vec<DialectFrame> = dirty()
            .map(|(id, r)| message_frame(&self.chat_message(id, r)))
            .collect();
        out.extend(frames);
        for r in self.replies.values_mut() {
            r.dirty = false;
        }
        self.last_sent = Some((ctx.now, bytes));
        self.due = None;
    }

    fn live(&mut self, id: &MessageId, wall_ms: u64) -> Option<&mut LiveText> {
        if self.ended.contains(id) {
            return None;
        }
        Some(self.replies.entry(id.clone()).or_insert(LiveText {
            content: String::new(),
            created_at_ms: wall_ms,
            dirty: false,
        }))
    }

    fn end(&mut self, id: &MessageId) {
        self.replies.remove(id);
        self.ended.push_back(id.clone());
        while self.ended.len() > ENDED_MEMORY {
            self.ended.pop_front();
        }
        if !self.replies.values().any(|r| r.dirty) {
            self.due = None;
        }
    }

    /// Renders one frame the node sends this connection.
    pub fn render(
        &mut self,
        ctx: &RenderCtx<'_>,
        frame: &ServerFrame,
        out: &mut Vec<DialectFrame>,
    ) {
        match frame {
            ServerFrame::Hello(_) => out.push(DialectFrame::new(
                "welcome",
                json(&WelcomeFrame {
                    r#type: "welcome",
                    session_id: &self.session,
                    timestamp: iso8601(ctx.wall_ms),
                }),
            )),
            ServerFrame::History(h) => self.history(ctx, &h.messages, out),
            ServerFrame::Start(s) => {
                if let Some(live) = self.live(&s.message_id, ctx.wall_ms) {
                    live.dirty = true;
                    self.flush(ctx, out);
                }
            }
            ServerFrame::Chunk(c) => {
                if let Some(live) = self.live(&c.message_id, ctx.wall_ms) {
                    live.content.push_str(&c.delta);
                    live.dirty = true;
                    self.flush(ctx, out);
                }
            }
            ServerFrame::End(e) => {
                if self.ended.contains(&e.message_id) {
                    return;
                }
                let live = self.replies.get(&e.message_id);
                let m = Message {
                    message_id: e.message_id.clone(),
                    role: Role::Assistant,
                    content: live.map(|l| l.content.clone()).unwrap_or_default(),
                    status: match e.status {
                        ReplyStatus::Completed => MessageStatus::Completed,
                        ReplyStatus::Cancelled => MessageStatus::Cancelled,
                        ReplyStatus::Failed => MessageStatus::Failed,
                    },
                    created_at_ms: live.map_or(ctx.wall_ms, |l| l.created_at_ms),
                    seq: e.final_seq,
                };
                let cm = ChatMessage::from_message(&m, &self.session, &self.user, ctx.compat);
                out.push(message_frame(&cm));
                self.end(&e.message_id);
            }
            ServerFrame::Dialect(f) => out.push(f.clone()),
            ServerFrame::UserMessage(_)
            | ServerFrame::Ack(_)
            | ServerFrame::CancelResult(_)
            | ServerFrame::ResumeUnavailable(_)
            | ServerFrame::Presence(_)
            | ServerFrame::Pong(_)
            | ServerFrame::Error(_) => {}
        }
    }

    /// `history`, then the catch-up.
    fn history(&mut self, ctx: &RenderCtx<'_>, messages: &[Message], out: &mut Vec<DialectFrame>) {
        let shown: Vec<ChatMessage> = messages
            .iter()
            .map(|m| ChatMessage::from_message(m, &self.session, &self.user, ctx.compat))
            .collect();
        out.push(DialectFrame::new(
            "history",
            json(&HistoryFrame {
                r#type: "history",
                messages: &shown,
            }),
        ));
        let latest_settled = messages
            .iter()
            .rposition(|m| m.role == Role::Assistant && m.status != MessageStatus::Streaming);
        for (i, (m, cm)) in messages.iter().zip(&shown).enumerate() {
            if m.role != Role::Assistant {
                continue;
            }
            if m.status == MessageStatus::Streaming {
                // The live reply goes on from here on this connection.
                self.replies.insert(
                    m.message_id.clone(),
                    LiveText {
                        content: m.content.clone(),
                        created_at_ms: m.created_at_ms,
                        dirty: false,
                    },
                );
                self.last_sent = Some((ctx.now, cm.content.len()));
                out.push(message_frame(cm));
            } else if Some(i) == latest_settled
                || m.created_at_ms.saturating_add(ctx.resume_window_ms) >= ctx.wall_ms
            {
                out.push(message_frame(cm));
            }
        }
    }
}

/// `unix_ms` as ISO-8601 UTC with milliseconds (`2026-12-03T12:00:00.000Z`).
#[must_use]
pub fn iso8601(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let ms = unix_ms % 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (h, mi, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Days to civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

#[cfg(test)]
mod tests;
