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
//!
//! Delivery is **pulled**: while the runtime reports the connection's
//! outbound queue full ([`Input::WriteBlocked`](crate::Input::WriteBlocked))
//! its cursors do not move, and the chunks it has not had stay in the
//! conversation's view (held once for every connection), not in a copy of
//! its own; once the writer drained the queue
//! ([`Input::Writable`](crate::Input::Writable)) it gets them from its
//! cursors on, merged. A connection that cannot keep up so costs its bounded
//! queue and a cursor; its lag is what its cursors are behind by, and past
//! the lag bound it is closed with 4008 (it resumes).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

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

/// An inbound WebSocket data frame, as the core handles it (and holds it
/// during the handshake, in order).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Inbound {
    /// A text frame's bytes, to decode.
    Text(Vec<u8>),
    /// A binary frame (its payload dropped): answered `bad_request`.
    Binary,
}

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
    pub(crate) early: VecDeque<Inbound>,
    /// The user's presence as this connection last heard it (it is itself
    /// online, so it starts there and hears only changes).
    pub(crate) presence_seen: PresenceStatus,
    /// Closed with 4000 at this time unless a frame or pong moves it.
    pub(crate) idle_at: Instant,
    /// The next WebSocket ping (Open only).
    pub(crate) ping_at: Option<Instant>,
    /// Released at this time if still Closing.
    pub(crate) close_at: Option<Instant>,
    /// The lag at the runtime's last look
    /// ([`Input::QueueLag`](crate::Input::QueueLag)): the reply text queued
    /// plus the text its cursors are behind by.
    pub(crate) lag_seen: usize,
    /// The runtime reported its outbound queue full
    /// ([`Input::WriteBlocked`](crate::Input::WriteBlocked)) and not drained
    /// since: delivery hands it nothing, its cursors keep their place.
    pub(crate) blocked: bool,
}

/// What a connection's timer asks of the node when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnTimer {
    /// Closing, and the close deadline passed: release the slot.
    Release,
    /// No frame or pong within the idle timeout: close with 4000.
    IdleTimeout,
    /// Send a WebSocket ping if `ping`, and fire again at `until`.
    Wait { ping: bool, until: Option<Instant> },
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

    /// Inbound activity moves the idle deadline (not while Closing). The
    /// timer is not moved: when it fires early it re-arms itself, so a frame
    /// costs no timer-table work.
    pub(crate) fn touch(&mut self, now: Instant, idle_timeout: Duration) {
        if self.state != ConnState::Closing {
            self.idle_at = now + idle_timeout;
        }
    }

    /// Whether a writer that has taken nothing since `since` has stalled at
    /// `now`: the connection is Open (a Closing one is on its way out; a
    /// Handshake one has nothing queued) and `since` is at least
    /// `stall_timeout` ago.
    #[must_use]
    pub(crate) fn is_stalled(&self, now: Instant, since: Instant, stall_timeout: Duration) -> bool {
        self.state == ConnState::Open && now.saturating_duration_since(since) >= stall_timeout
    }

    /// Begins closing: returns the deadline to release the slot at, or
    /// `None` if it was already closing.
    #[must_use]
    pub(crate) fn start_closing(
        &mut self,
        now: Instant,
        close_timeout: Duration,
    ) -> Option<Instant> {
        if self.state == ConnState::Closing {
            return None;
        }
        self.state = ConnState::Closing;
        self.early.clear();
        let close_at = now + close_timeout;
        self.close_at = Some(close_at);
        Some(close_at)
    }

    /// The connection's one timer fired at `now`: the next of its heartbeat,
    /// its idle deadline and (Closing) its close deadline.
    #[must_use]
    pub(crate) fn on_timer(&mut self, now: Instant, heartbeat: Duration) -> ConnTimer {
        match self.state {
            ConnState::Closing => {
                if self.close_at.is_some_and(|at| now >= at) {
                    ConnTimer::Release
                } else {
                    ConnTimer::Wait {
                        ping: false,
                        until: self.close_at,
                    }
                }
            }
            ConnState::Handshake | ConnState::Open => {
                if now >= self.idle_at {
                    return ConnTimer::IdleTimeout;
                }
                let ping = self.ping_at.is_some_and(|at| now >= at);
                if ping {
                    self.ping_at = Some(now + heartbeat);
                }
                let next = self.ping_at.map_or(self.idle_at, |p| p.min(self.idle_at));
                ConnTimer::Wait {
                    ping,
                    until: Some(next),
                }
            }
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
            lag_seen: 0,
            blocked: false,
        }
    }

    /// The runtime's look at the reply text queued for the connection
    /// (`lag` bytes): whether it is past `max_lag_bytes` at this look and at
    /// the last one and has not shrunk in between (the client falls further
    /// behind). A lag that shrinks is a client catching up, e.g. after a
    /// resume that queued a whole backlog at once: it is left to read.
    #[must_use]
    pub(crate) fn lagging(&mut self, lag: usize, max_lag_bytes: usize) -> bool {
        let lagging = lag > max_lag_bytes && self.lag_seen > max_lag_bytes && lag >= self.lag_seen;
        self.lag_seen = lag;
        lagging
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SessionId;

    const SEC: Duration = Duration::from_secs(1);

    // The connection only compares instants, so any base will do; a test has
    // no `now` handed in, and `Instant` has no other public constructor.
    #[allow(clippy::disallowed_methods)]
    fn start() -> Instant {
        Instant::now()
    }

    fn conn(now: Instant) -> Connection {
        let conv = ConvKey::new(
            UserId::parse("alice").unwrap(),
            SessionId::parse("s").unwrap(),
        );
        Connection::new(conv, None, now + 10 * SEC)
    }

    #[test]
    fn the_connection_names_its_user() {
        let c = conn(start());
        assert_eq!(c.user().as_str(), "alice");
    }

    #[test]
    fn the_last_four_ended_replies_are_remembered() {
        let mut c = conn(start());
        let id = |n: usize| MessageId::parse(format!("m{n}")).unwrap();
        for n in 0..ENDED_MEMORY {
            c.mark_ended(id(n));
        }
        assert!((0..ENDED_MEMORY).all(|n| c.ended.contains(&id(n))));
        c.mark_ended(id(ENDED_MEMORY));
        assert!(!c.ended.contains(&id(0)));
        assert_eq!(c.ended.len(), ENDED_MEMORY);
    }

    #[test]
    fn activity_moves_the_idle_deadline_but_not_while_closing() {
        let t0 = start();
        let mut c = conn(t0);
        c.touch(t0 + 5 * SEC, 10 * SEC);
        assert_eq!(c.idle_at, t0 + 15 * SEC);
        assert_eq!(c.start_closing(t0 + 6 * SEC, SEC), Some(t0 + 7 * SEC));
        c.touch(t0 + 6 * SEC, 10 * SEC);
        assert_eq!(c.idle_at, t0 + 15 * SEC);
    }

    #[test]
    fn closing_twice_keeps_the_first_deadline() {
        let t0 = start();
        let mut c = conn(t0);
        c.early.push_back(Inbound::Text(b"early".to_vec()));
        assert_eq!(c.start_closing(t0, SEC), Some(t0 + SEC));
        assert!(
            c.early.is_empty(),
            "frames held for the handshake are dropped"
        );
        assert_eq!(c.start_closing(t0 + SEC, SEC), None);
        assert_eq!(c.close_at, Some(t0 + SEC));
    }

    #[test]
    fn an_early_timer_rearms_at_the_idle_deadline() {
        let t0 = start();
        let mut c = conn(t0);
        c.touch(t0 + 5 * SEC, 10 * SEC);
        assert_eq!(
            c.on_timer(t0 + 10 * SEC, 3 * SEC),
            ConnTimer::Wait {
                ping: false,
                until: Some(t0 + 15 * SEC)
            }
        );
        assert_eq!(c.on_timer(t0 + 15 * SEC, 3 * SEC), ConnTimer::IdleTimeout);
    }

    #[test]
    fn a_due_heartbeat_pings_and_rearms_at_the_next_deadline() {
        let t0 = start();
        let mut c = conn(t0);
        c.state = ConnState::Open;
        c.ping_at = Some(t0 + 3 * SEC);
        assert_eq!(
            c.on_timer(t0 + 3 * SEC, 3 * SEC),
            ConnTimer::Wait {
                ping: true,
                until: Some(t0 + 6 * SEC)
            }
        );
        assert_eq!(
            c.on_timer(t0 + 9 * SEC, 3 * SEC),
            ConnTimer::Wait {
                ping: true,
                until: Some(t0 + 10 * SEC)
            },
            "the idle deadline comes before the next ping"
        );
    }

    #[test]
    fn a_lag_past_the_bound_that_does_not_shrink_between_two_looks_is_lagging() {
        let mut c = conn(start());
        assert!(!c.lagging(2, 1), "one look past the bound is not enough");
        assert!(c.lagging(2, 1), "two looks, not shrinking");
        assert!(c.lagging(3, 1), "grew");
        assert!(
            !c.lagging(2, 1),
            "a lag that shrank is a client catching up"
        );
        assert!(c.lagging(2, 1), "past the bound again, not shrinking");
        assert!(!c.lagging(1, 1), "at the bound is not past it");
        assert!(!c.lagging(5, 1), "the look before was not past the bound");
        assert!(!c.lagging(0, 0), "nothing queued");
    }

    #[test]
    fn an_open_connection_has_stalled_once_its_writer_waited_the_stall_timeout() {
        let t0 = start();
        let mut c = conn(t0);
        assert!(
            !c.is_stalled(t0 + 20 * SEC, t0, 10 * SEC),
            "not while in the handshake"
        );
        c.state = ConnState::Open;
        assert!(!c.is_stalled(t0 + 9 * SEC, t0, 10 * SEC));
        assert!(c.is_stalled(t0 + 10 * SEC, t0, 10 * SEC));
        assert!(
            !c.is_stalled(t0, t0 + SEC, 10 * SEC),
            "a `since` after `now` is no stall"
        );
        let _ = c.start_closing(t0 + 11 * SEC, SEC);
        assert!(
            !c.is_stalled(t0 + 20 * SEC, t0, 10 * SEC),
            "a closing connection is already on its way out"
        );
    }

    #[test]
    fn a_closing_connection_is_released_at_its_close_deadline() {
        let t0 = start();
        let mut c = conn(t0);
        let close_at = c.start_closing(t0, 2 * SEC).unwrap();
        assert_eq!(
            c.on_timer(t0 + SEC, SEC),
            ConnTimer::Wait {
                ping: false,
                until: Some(close_at)
            }
        );
        assert_eq!(c.on_timer(close_at, SEC), ConnTimer::Release);
    }
}
