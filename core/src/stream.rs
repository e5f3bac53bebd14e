//! The stream state machine: the life of one assistant reply, as the store
//! holds it (the store is where a reply's truth lives; nodes keep views).
//!
//! ```text
//!               start
//!                 │
//!                 ▼
//!    ┌─────── Active ───────────────┐
//!    │ cancel                        │ finish / fail / owner lease lost
//!    ▼                               ▼
//! Cancelling ── generator stops ─► Settled { outcome, final_seq }   ("completed-grace")
//!            ── or cancel deadline ─►   │ grace window elapses
//!                                       ▼
//!                                    Expired  (the record is dropped; history keeps the final message)
//! ```
//!
//! Expired is the absence of a record, so it has no variant here: a record
//! whose grace window has passed is dropped by the store.
//!
//! How a node asks for a cancel, and carries the decision made here out to
//! the producer and to every viewer, is told step by step in
//! [the life of a cancel](crate::node::cancel).
//!
//! Transitions are methods named by their trigger (`recv_cancel`,
//! `recv_settle`, `recv_reap`). They take the time of the operation in
//! wall-clock milliseconds, because leases and grace windows are cluster-wide
//! and every node (and Redis) must agree on them.
//!
//! Two choices that go beyond the table in DESIGN.md, both to keep invariant 2
//! ("`cancelled` answered implies outcome `cancelled`"):
//! - A reap of a **Cancelling** stream settles it `cancelled`, not
//!   `failed(owner_lost)`: its cancel was already answered `cancelled`.
//! - A Cancelling stream can be settled by any node once its cancel deadline
//!   has passed, even while the owner's lease is still valid — a live owner
//!   that missed the notice would otherwise hold it until the lease ran out.

use serde::{Deserialize, Serialize};

use crate::ids::Seq;
use crate::wire::ReplyStatus;

/// How a reply ended. Once set it never changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "status", content = "reason", rename_all = "snake_case")]
pub enum Outcome {
    /// The generator finished.
    Completed,
    /// A cancel took effect.
    Cancelled,
    /// The generator failed, or the owner was lost; the reason says which.
    Failed(String),
}

impl Outcome {
    /// The status on the wire.
    #[must_use]
    pub fn status(&self) -> ReplyStatus {
        match self {
            Self::Completed => ReplyStatus::Completed,
            Self::Cancelled => ReplyStatus::Cancelled,
            Self::Failed(_) => ReplyStatus::Failed,
        }
    }

    /// The failure reason, if failed.
    #[must_use]
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Failed(r) => Some(r),
            _ => None,
        }
    }
}

/// The reason a reaped reply failed: its owner stopped renewing its lease.
pub const OWNER_LOST: &str = "owner_lost";

/// A stream's state in the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StreamState {
    /// The generator runs; the owner appends chunks while its lease holds.
    Active {
        /// The owner's lease ends at this wall-clock time unless renewed.
        lease_until_ms: u64,
    },
    /// A cancel took effect: `final_seq` is fixed, no chunk is stored any
    /// more, and the owner is asked to stop its generator and settle.
    Cancelling {
        /// The last chunk of the cancelled reply.
        final_seq: Seq,
        /// The owner's lease (still renewable while it winds down).
        lease_until_ms: u64,
        /// After this, any node may settle the stream `cancelled`.
        deadline_ms: u64,
    },
    /// The reply has its outcome ("completed-grace"): the record stays so
    /// that late cancels and resumes are answered truthfully.
    Settled {
        /// How it ended.
        outcome: Outcome,
        /// Its last chunk.
        final_seq: Seq,
        /// The record is dropped (Expired) at this time.
        expires_at_ms: u64,
    },
}

/// The answer to a cancel, decided against the stream's state (see
/// [`StreamState::recv_cancel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelAnswer {
    /// The reply is (now) cancelled.
    Cancelled,
    /// The reply had already completed.
    Completed,
    /// The reply had already failed.
    Failed,
}

impl From<CancelAnswer> for crate::wire::CancelStatus {
    fn from(a: CancelAnswer) -> Self {
        match a {
            CancelAnswer::Cancelled => Self::Cancelled,
            CancelAnswer::Completed => Self::Completed,
            CancelAnswer::Failed => Self::Failed,
        }
    }
}

/// What settling asks for; a cancel that came first wins.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "reason", rename_all = "snake_case")]
pub enum SettleRequest {
    /// The generator finished.
    Completed,
    /// The generator failed.
    Failed(String),
    /// The owner stopped the generator after a cancel.
    Cancelled,
}

/// The durations that drive a stream's timers, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamTimers {
    /// How long a lease lasts from its last renewal.
    pub lease_ttl_ms: u64,
    /// How long a Cancelling stream waits for its owner to settle it.
    pub cancel_deadline_ms: u64,
    /// How long a Settled record is kept (the cancel grace window).
    pub grace_ms: u64,
}

impl Default for StreamTimers {
    fn default() -> Self {
        Self {
            lease_ttl_ms: 10_000,
            cancel_deadline_ms: 5_000,
            grace_ms: 30_000,
        }
    }
}

impl StreamState {
    /// A new stream, Active with a fresh lease.
    #[must_use]
    pub fn start(now_ms: u64, t: &StreamTimers) -> Self {
        Self::Active {
            lease_until_ms: now_ms.saturating_add(t.lease_ttl_ms),
        }
    }

    /// Whether the stream still produces (Active or Cancelling).
    #[must_use]
    pub fn is_live(&self) -> bool {
        !matches!(self, Self::Settled { .. })
    }

    /// The fixed last seq, once there is one (Cancelling or Settled).
    #[must_use]
    pub fn final_seq(&self) -> Option<Seq> {
        match self {
            Self::Active { .. } => None,
            Self::Cancelling { final_seq, .. } | Self::Settled { final_seq, .. } => {
                Some(*final_seq)
            }
        }
    }

    /// The lease deadline while live.
    #[must_use]
    pub fn lease_until_ms(&self) -> Option<u64> {
        match self {
            Self::Active { lease_until_ms } | Self::Cancelling { lease_until_ms, .. } => {
                Some(*lease_until_ms)
            }
            Self::Settled { .. } => None,
        }
    }

    /// Whether the Settled record's grace window has passed at `now_ms`.
    #[must_use]
    pub fn is_expired(&self, now_ms: u64) -> bool {
        matches!(self, Self::Settled { expires_at_ms, .. } if now_ms >= *expires_at_ms)
    }

    /// A cancel reaches the stream. `last_seq` is the last stored chunk.
    ///
    /// Active → Cancelling (fixing `final_seq = last_seq`) and `Cancelled`;
    /// Cancelling or Settled(cancelled) → `Cancelled` (idempotent);
    /// Settled(completed) → `Completed`; Settled(failed) → `Failed`.
    #[must_use]
    pub fn recv_cancel(&mut self, last_seq: Seq, now_ms: u64, t: &StreamTimers) -> CancelAnswer {
        match self {
            Self::Active { lease_until_ms } => {
                *self = Self::Cancelling {
                    final_seq: last_seq,
                    lease_until_ms: *lease_until_ms,
                    deadline_ms: now_ms.saturating_add(t.cancel_deadline_ms),
                };
                CancelAnswer::Cancelled
            }
            Self::Cancelling { .. } => CancelAnswer::Cancelled,
            Self::Settled { outcome, .. } => match outcome {
                Outcome::Completed => CancelAnswer::Completed,
                Outcome::Cancelled => CancelAnswer::Cancelled,
                Outcome::Failed(_) => CancelAnswer::Failed,
            },
        }
    }

    /// The owner settles the stream. Returns the outcome that holds
    /// afterwards, or `None` if the stream was already settled before (the
    /// request changes nothing then).
    ///
    /// Active → Settled(requested), with `final_seq = last_seq`;
    /// Cancelling → Settled(cancelled) whatever was requested: the cancel came
    /// first. An Active stream cannot be settled `Cancelled` (nothing cancelled
    /// it): that request settles it `failed`.
    #[must_use]
    pub fn recv_settle(
        &mut self,
        req: SettleRequest,
        last_seq: Seq,
        now_ms: u64,
        t: &StreamTimers,
    ) -> Option<Outcome> {
        let (outcome, final_seq) = match self {
            Self::Active { .. } => {
                let outcome = match req {
                    SettleRequest::Completed => Outcome::Completed,
                    SettleRequest::Failed(r) => Outcome::Failed(r),
                    SettleRequest::Cancelled => Outcome::Failed("aborted".to_owned()),
                };
                (outcome, last_seq)
            }
            Self::Cancelling { final_seq, .. } => (Outcome::Cancelled, *final_seq),
            Self::Settled { .. } => return None,
        };
        *self = Self::Settled {
            outcome: outcome.clone(),
            final_seq,
            expires_at_ms: now_ms.saturating_add(t.grace_ms),
        };
        Some(outcome)
    }

    /// The owner renews its lease. Returns false if the stream is settled.
    #[must_use]
    pub fn recv_renew(&mut self, now_ms: u64, t: &StreamTimers) -> bool {
        match self {
            Self::Active { lease_until_ms } | Self::Cancelling { lease_until_ms, .. } => {
                *lease_until_ms = (*lease_until_ms).max(now_ms.saturating_add(t.lease_ttl_ms));
                true
            }
            Self::Settled { .. } => false,
        }
    }

    /// Any node asks to reap. Returns the outcome if this call settled it.
    ///
    /// Active whose lease expired → Settled(failed `owner_lost`);
    /// Cancelling whose lease expired or whose cancel deadline passed →
    /// Settled(cancelled). Otherwise nothing changes.
    #[must_use]
    pub fn recv_reap(&mut self, last_seq: Seq, now_ms: u64, t: &StreamTimers) -> Option<Outcome> {
        let (outcome, final_seq) = match self {
            Self::Active { lease_until_ms } if now_ms >= *lease_until_ms => {
                (Outcome::Failed(OWNER_LOST.to_owned()), last_seq)
            }
            Self::Cancelling {
                final_seq,
                lease_until_ms,
                deadline_ms,
            } if now_ms >= *lease_until_ms || now_ms >= *deadline_ms => {
                (Outcome::Cancelled, *final_seq)
            }
            _ => return None,
        };
        *self = Self::Settled {
            outcome: outcome.clone(),
            final_seq,
            expires_at_ms: now_ms.saturating_add(t.grace_ms),
        };
        Some(outcome)
    }

    /// When a reap would first succeed, while live.
    #[must_use]
    pub fn reap_due_ms(&self) -> Option<u64> {
        match self {
            Self::Active { lease_until_ms } => Some(*lease_until_ms),
            Self::Cancelling {
                lease_until_ms,
                deadline_ms,
                ..
            } => Some((*lease_until_ms).min(*deadline_ms)),
            Self::Settled { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: StreamTimers = StreamTimers {
        lease_ttl_ms: 100,
        cancel_deadline_ms: 50,
        grace_ms: 1000,
    };

    #[test]
    fn cancel_on_active_fixes_final_seq() {
        let mut s = StreamState::start(0, &T);
        assert_eq!(s.recv_cancel(3, 10, &T), CancelAnswer::Cancelled);
        assert_eq!(s.final_seq(), Some(3));
        assert_eq!(s.recv_cancel(9, 11, &T), CancelAnswer::Cancelled);
        assert_eq!(s.final_seq(), Some(3));
    }

    #[test]
    fn cancel_wins_over_completed_when_first() {
        let mut s = StreamState::start(0, &T);
        let _ = s.recv_cancel(2, 10, &T);
        assert_eq!(
            s.recv_settle(SettleRequest::Completed, 5, 20, &T),
            Some(Outcome::Cancelled)
        );
        assert_eq!(s.final_seq(), Some(2));
    }

    #[test]
    fn cancel_during_grace_answers_completed() {
        let mut s = StreamState::start(0, &T);
        let _ = s.recv_settle(SettleRequest::Completed, 4, 20, &T);
        assert_eq!(s.recv_cancel(4, 30, &T), CancelAnswer::Completed);
        assert!(!s.is_expired(1019));
        assert!(s.is_expired(1020));
    }

    #[test]
    fn reap_needs_an_expired_lease() {
        let mut s = StreamState::start(0, &T);
        assert_eq!(s.recv_reap(1, 99, &T), None);
        assert!(s.recv_renew(50, &T));
        assert_eq!(s.recv_reap(1, 100, &T), None);
        assert_eq!(
            s.recv_reap(1, 150, &T),
            Some(Outcome::Failed(OWNER_LOST.into()))
        );
        assert!(!s.recv_renew(160, &T));
    }

    #[test]
    fn lease_until_is_the_live_lease_and_gone_once_settled() {
        let mut s = StreamState::start(5, &T);
        assert_eq!(s.lease_until_ms(), Some(105));
        assert!(s.recv_renew(50, &T));
        assert_eq!(s.lease_until_ms(), Some(150));
        let _ = s.recv_cancel(0, 60, &T);
        assert_eq!(s.lease_until_ms(), Some(150));
        let _ = s.recv_settle(SettleRequest::Cancelled, 0, 70, &T);
        assert_eq!(s.lease_until_ms(), None);
    }

    #[test]
    fn reaping_a_cancelling_stream_keeps_it_cancelled() {
        let mut s = StreamState::start(0, &T);
        let _ = s.recv_cancel(1, 10, &T);
        assert_eq!(s.reap_due_ms(), Some(60));
        assert_eq!(s.recv_reap(1, 59, &T), None);
        assert_eq!(s.recv_reap(1, 60, &T), Some(Outcome::Cancelled));
    }
}
