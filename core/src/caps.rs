//! Caps on what one user (or one client address) may hold or start: the
//! settings ([`Caps`]), the kinds of cap ([`Cap`]) and the two pure
//! decisions the store makes for them — a set of expiring slots
//! ([`Slots`]: connections, streaming replies) and a token bucket
//! ([`Rate`], [`Bucket`]: chats per minute).
//!
//! The decisions are made by the store ([`StoreOp::Admit`]), so every node
//! of a cluster counts against the same slots and the same bucket; the
//! node only asks, holds what it was given, keeps it alive and gives it
//! back (`node/caps.rs`).
//!
//! Time is integer milliseconds chosen by the caller, as everywhere in the
//! store; the bucket counts in integer units (one token is [`UNIT`] units,
//! and a rate of `n` per minute adds `n` units per millisecond), so the
//! in-memory model and the Redis script agree to the unit.
//!
//! [`StoreOp::Admit`]: crate::store::StoreOp::Admit

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Units per token: a rate of `n` chats per minute refills `n` units per
/// millisecond.
pub const UNIT: u64 = 60_000;

/// The `retry_after_ms` of a refusal by a slot cap (connections, streaming
/// replies): a slot frees when something ends, which no one can predict, so
/// this is a hint to wait a little rather than retry at once.
pub const SLOT_RETRY_AFTER_MS: u64 = 1_000;

/// The caps a node enforces. `0` turns a cap off (unlimited).
///
/// [`Caps::default`] is all off, what the core's tests and a bare
/// [`Config::new`](crate::Config::new) get; `weir serve` sets the operator
/// defaults ([`Caps::RECOMMENDED`], in `docs/operations.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Caps {
    /// Open WebSocket connections per user, all nodes.
    pub connections_per_user: u32,
    /// Replies streaming at once per user, across conversations, all nodes.
    pub streams_per_user: u32,
    /// Chats (WebSocket `chat` and HTTP posts) per minute per user, all
    /// nodes: the bucket's refill rate.
    pub chats_per_minute: u32,
    /// How many chats a user may send at once before the rate applies: the
    /// bucket's size (at least 1 while `chats_per_minute` is set).
    pub chat_burst: u32,
    /// Open WebSocket connections per client address, all nodes.
    pub connections_per_ip: u32,
}

impl Caps {
    /// The defaults of `weir serve` (see `docs/operations.md` for why).
    pub const RECOMMENDED: Self = Self {
        connections_per_user: 100,
        streams_per_user: 10,
        chats_per_minute: 60,
        chat_burst: 20,
        connections_per_ip: 1_000,
    };

    /// The chat rate, if that cap is on.
    #[must_use]
    pub fn chat_rate(&self) -> Option<Rate> {
        (self.chats_per_minute > 0).then(|| Rate {
            per_minute: self.chats_per_minute,
            burst: self.chat_burst.max(1),
        })
    }

    /// Whether any cap applies to a new chat.
    #[must_use]
    pub fn limit_chats(&self) -> bool {
        self.streams_per_user > 0 || self.chats_per_minute > 0
    }
}

/// Which cap refused something: the `cap` label of the refusal metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cap {
    /// [`Caps::connections_per_user`].
    UserConnections,
    /// [`Caps::connections_per_ip`].
    IpConnections,
    /// [`Caps::streams_per_user`].
    UserStreams,
    /// [`Caps::chats_per_minute`].
    ChatRate,
}

impl Cap {
    /// The name (metric label, logs).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserConnections => "user_connections",
            Self::IpConnections => "ip_connections",
            Self::UserStreams => "user_streams",
            Self::ChatRate => "chat_rate",
        }
    }

    /// Every cap, for metrics that list each label.
    pub const ALL: [Self; 4] = [
        Self::UserConnections,
        Self::IpConnections,
        Self::UserStreams,
        Self::ChatRate,
    ];
}

/// A token bucket's settings: `per_minute` tokens a minute, at most `burst`
/// saved up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rate {
    /// Refill rate, tokens per minute (at least 1).
    pub per_minute: u32,
    /// The bucket's size in tokens (at least 1).
    pub burst: u32,
}

/// A token bucket's state: `units` (one token is [`UNIT`]) as of `at_ms`.
/// No bucket at all is a full one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Bucket {
    /// What is in the bucket, in units.
    pub units: u64,
    /// When `units` was counted (never moves back).
    pub at_ms: u64,
}

impl Rate {
    /// The bucket's size in units.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        u64::from(self.burst.max(1)) * UNIT
    }

    fn refill(&self) -> u64 {
        u64::from(self.per_minute.max(1))
    }

    /// Takes one token at `at_ms` from `bucket` (`None`: full): the bucket
    /// after, or how many milliseconds until a token is there. A clock that
    /// moves back refills nothing.
    ///
    /// # Errors
    /// The bucket holds less than one token: the wait, at least 1 ms.
    pub fn take(&self, bucket: Option<Bucket>, at_ms: u64) -> Result<Bucket, u64> {
        let cap = self.capacity();
        let (units, last) = bucket.map_or((cap, at_ms), |b| (b.units, b.at_ms));
        let elapsed = at_ms.saturating_sub(last);
        let units = units
            .saturating_add(elapsed.saturating_mul(self.refill()))
            .min(cap);
        let at_ms = at_ms.max(last);
        if units >= UNIT {
            Ok(Bucket {
                units: units - UNIT,
                at_ms,
            })
        } else {
            Err((UNIT - units).div_ceil(self.refill()))
        }
    }

    /// How long after `bucket.at_ms` the bucket is full again (then it can
    /// be forgotten: no bucket is a full one).
    #[must_use]
    pub fn full_after_ms(&self, bucket: &Bucket) -> u64 {
        (self.capacity().saturating_sub(bucket.units)).div_ceil(self.refill())
    }
}

/// A set of slots, each held by a named holder until it is released or its
/// expiry passes (the holder's node refreshes it while it lives, so a dead
/// node's slots free themselves).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Slots {
    /// Holder → when its slot expires (ms).
    held: BTreeMap<String, u64>,
}

impl Slots {
    /// How many slots are held (expired ones included until the next
    /// [`purge`](Self::purge)).
    #[must_use]
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether none is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Drops the slots whose expiry is at or before `at_ms`.
    pub fn purge(&mut self, at_ms: u64) {
        self.held.retain(|_, exp| *exp > at_ms);
    }

    /// Whether `holder` holds a slot (after a [`purge`](Self::purge)).
    #[must_use]
    pub fn holds(&self, holder: &str) -> bool {
        self.held.contains_key(holder)
    }

    /// Whether one more holder fits under `limit` (a holder that already
    /// holds a slot always fits: acquiring is idempotent).
    #[must_use]
    pub fn fits(&self, holder: &str, limit: u32) -> bool {
        self.holds(holder) || self.held.len() < limit as usize
    }

    /// Gives (or refreshes) `holder` a slot until `expires_ms`.
    pub fn insert(&mut self, holder: String, expires_ms: u64) {
        self.held.insert(holder, expires_ms);
    }

    /// Moves the expiry of each of `holders` that holds a slot.
    pub fn keep(&mut self, holders: &[String], expires_ms: u64) {
        for h in holders {
            if let Some(exp) = self.held.get_mut(h) {
                *exp = expires_ms;
            }
        }
    }

    /// Frees `holder`'s slot, if it holds one.
    pub fn release(&mut self, holder: &str) {
        self.held.remove(holder);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PER_MIN_60: Rate = Rate {
        per_minute: 60,
        burst: 3,
    };

    #[test]
    fn a_new_bucket_is_full_and_gives_its_burst_at_once() {
        let mut b = None;
        for _ in 0..3 {
            b = Some(PER_MIN_60.take(b, 1_000).unwrap());
        }
        assert_eq!(b.unwrap().units, 0);
        // 60 a minute: one token a second.
        assert_eq!(PER_MIN_60.take(b, 1_000), Err(1_000));
    }

    #[test]
    fn the_bucket_refills_at_the_rate_and_the_wait_is_exact() {
        let empty = Some(Bucket {
            units: 0,
            at_ms: 10_000,
        });
        assert_eq!(PER_MIN_60.take(empty, 10_999), Err(1));
        let b = PER_MIN_60.take(empty, 11_000).unwrap();
        assert_eq!(
            b,
            Bucket {
                units: 0,
                at_ms: 11_000
            }
        );
        // 7 a minute: a token every 60000/7 = 8571.43 ms, rounded up.
        let slow = Rate {
            per_minute: 7,
            burst: 1,
        };
        let b = slow.take(None, 0).unwrap();
        assert_eq!(slow.take(Some(b), 0), Err(8_572));
        assert!(slow.take(Some(b), 8_571).is_err());
        assert!(slow.take(Some(b), 8_572).is_ok());
    }

    #[test]
    fn the_bucket_never_holds_more_than_its_burst() {
        let b = Some(Bucket { units: 0, at_ms: 0 });
        // An hour idle saves up 3 tokens, not 60.
        let mut b = Some(PER_MIN_60.take(b, 3_600_000).unwrap());
        for _ in 0..2 {
            b = Some(PER_MIN_60.take(b, 3_600_000).unwrap());
        }
        assert!(PER_MIN_60.take(b, 3_600_000).is_err());
        // A clock that leaps from 0 cannot overflow.
        let huge = Rate {
            per_minute: u32::MAX,
            burst: u32::MAX,
        };
        let full = Some(Bucket { units: 0, at_ms: 0 });
        assert!(huge.take(full, u64::MAX).is_ok());
    }

    #[test]
    fn a_clock_that_moves_back_refills_nothing() {
        let b = Some(Bucket {
            units: 0,
            at_ms: 5_000,
        });
        assert_eq!(PER_MIN_60.take(b, 1_000), Err(1_000));
        let after = PER_MIN_60.take(b, 6_000).unwrap();
        assert_eq!(after.at_ms, 6_000);
    }

    #[test]
    fn full_after_is_when_the_bucket_is_full_again() {
        let b = PER_MIN_60.take(None, 0).unwrap();
        assert_eq!(PER_MIN_60.full_after_ms(&b), 1_000);
        let full = Bucket {
            units: PER_MIN_60.capacity(),
            at_ms: 0,
        };
        assert_eq!(PER_MIN_60.full_after_ms(&full), 0);
    }

    #[test]
    fn slots_fit_up_to_the_limit_and_a_holder_fits_again() {
        let mut s = Slots::default();
        assert!(s.fits("a", 2));
        s.insert("a".into(), 100);
        s.insert("b".into(), 100);
        assert!(!s.fits("c", 2));
        assert!(s.fits("a", 2), "acquiring twice is idempotent");
        s.release("a");
        assert!(s.fits("c", 2));
    }

    #[test]
    fn slots_expire_at_their_expiry_unless_kept() {
        let mut s = Slots::default();
        s.insert("a".into(), 100);
        s.insert("b".into(), 100);
        s.keep(&["b".into(), "ghost".into()], 200);
        s.purge(99);
        assert_eq!(s.len(), 2);
        s.purge(100);
        assert!(!s.holds("a"));
        assert!(s.holds("b"));
        assert!(!s.holds("ghost"), "keep does not create a slot");
        s.purge(200);
        assert!(s.is_empty());
    }
}
