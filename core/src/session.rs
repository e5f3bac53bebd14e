//! The session state machine: one connection.
//!
//! ```text
//! Handshake ─snapshot read─► Open ──close / idle timeout / slow consumer / shutdown──► Closing ──► Closed
//!     └─auth fails─► Closed (HTTP 401/403 before upgrade: the runtime never hands such a connection to the core)
//! ```
//!
//! - **Handshake**: the runtime authenticated the user and upgraded the
//!   socket; the core has subscribed to the conversation and asked the store
//!   for its snapshot. Frames that arrive now are held and handled once Open,
//!   so `hello` is always the first frame.
//! - **Open**: `hello` and `history` were sent. A heartbeat deadline sends a
//!   WebSocket ping; an idle deadline (reset by any inbound frame or pong)
//!   closes with 4000.
//! - **Closing**: the core asked the runtime to close; the close deadline
//!   releases the slot even if the socket never reports back.
//! - **Closed**: every trace of the connection is gone from the core
//!   (a Closed connection has no record; the core emits
//!   [`Output::Released`](crate::Output::Released)).
//!
//! A connection views replies through **cursors**: per reply, the last seq
//! it was given. Chunks go out strictly in seq order from the cursor, so a
//! connection never sees a gap or a duplicate (invariant 4).

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use crate::ids::{ConvKey, MessageId, RequestId, Seq, UserId};
use crate::wire::{CancelStatus, PresenceStatus};

/// A connection's state (Closed connections have no record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnState {
    /// Waiting for the conversation's snapshot; `hello` not sent yet.
    Handshake,
    /// Serving frames.
    Open,
    /// Asked to close; waiting for the runtime to report the socket gone.
    Closing,
}

/// A `cancel_result` that must wait until the connection has every chunk up
/// to `final_seq` (invariant 3: nothing of the reply follows it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct HeldCancelResult {
    pub(crate) request_id: Option<RequestId>,
    pub(crate) status: CancelStatus,
    pub(crate) final_seq: Seq,
    /// When the cancel frame arrived (for the cancel-to-quiet latency).
    pub(crate) since: Instant,
}

/// One connection's view of one reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Cursor {
    /// The last seq this connection was given (0: none).
    pub(crate) delivered: Seq,
    /// A cancel answer waiting for the chunks before it.
    pub(crate) held_cancel: Option<HeldCancelResult>,
    /// Made by a resume (not by `start` or a snapshot): if the reply cannot be
    /// found, the answer is `resume_unavailable`, not `end`.
    pub(crate) resumed: bool,
}

impl Cursor {
    pub(crate) fn at(delivered: Seq, resumed: bool) -> Self {
        Self {
            delivered,
            held_cancel: None,
            resumed,
        }
    }
}

/// A `chat` whose `Start` is at the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PendingChat {
    pub(crate) request_id: Option<RequestId>,
    /// A `cancel` without `message_id` arrived before the reply had an id;
    /// holds that cancel's `request_id` and when it arrived.
    pub(crate) cancel: Option<(Option<RequestId>, Instant)>,
}

/// The most frames a connection may send before it is Open.
pub(crate) const EARLY_FRAMES: usize = 16;

/// One connection's record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Connection {
    /// The conversation it watches; its `user` is the user the connection
    /// was authenticated as (a user watches only their own conversations).
    pub(crate) conv: ConvKey,
    pub(crate) state: ConnState,
    /// `resume=MESSAGE_ID:SEQ` from the connect URL.
    pub(crate) resume: Option<(MessageId, Seq)>,
    pub(crate) cursors: BTreeMap<MessageId, Cursor>,
    /// The replies whose `end` this connection got last (at most
    /// [`ENDED_MEMORY`]): a late notice about one must not start it again.
    pub(crate) ended: VecDeque<MessageId>,
    pub(crate) pending_chat: Option<PendingChat>,
    /// Frames that arrived during the handshake.
    pub(crate) early: VecDeque<Vec<u8>>,
    /// The user's presence as this connection last heard it (it is itself
    /// online, so it starts there and hears only changes).
    pub(crate) presence_seen: PresenceStatus,
    /// Closed with 4000 at this time unless a frame or pong moves it.
    pub(crate) idle_at: Instant,
    /// The next WebSocket ping (Open only).
    pub(crate) ping_at: Option<Instant>,
    /// Released at this time if still Closing.
    pub(crate) close_at: Option<Instant>,
}

/// How many ended replies a connection remembers.
pub(crate) const ENDED_MEMORY: usize = 4;

impl Connection {
    /// The user the connection was authenticated as.
    pub(crate) fn user(&self) -> &UserId {
        &self.conv.user
    }

    /// Records that this connection got `id`'s `end`.
    pub(crate) fn mark_ended(&mut self, id: MessageId) {
        self.ended.push_back(id);
        while self.ended.len() > ENDED_MEMORY {
            self.ended.pop_front();
        }
    }

    pub(crate) fn new(conv: ConvKey, resume: Option<(MessageId, Seq)>, idle_at: Instant) -> Self {
        Self {
            conv,
            state: ConnState::Handshake,
            resume,
            cursors: BTreeMap::new(),
            ended: VecDeque::new(),
            pending_chat: None,
            early: VecDeque::new(),
            presence_seen: PresenceStatus::Online,
            idle_at,
            ping_at: None,
            close_at: None,
        }
    }
}
