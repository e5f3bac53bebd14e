//! Timers are data: a table of named deadlines. [`Timers::next`] is what
//! `poll_timeout` returns; `handle_timeout` pops every due entry once, in
//! deadline order (ties in key order), and dispatches it through one `match`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::ids::{ConnId, ConvKey, MessageId, UserId};

/// What a deadline is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum TimerKey {
    /// A connection's next deadline: its heartbeat, its idle deadline, or
    /// (closing) its close deadline — one entry per connection, re-armed by
    /// itself, so inbound frames never touch the table.
    Conn(ConnId),
    /// Renew the lease of a reply this node produces.
    Renew(MessageId),
    /// Retry a failed store write of a reply this node produces.
    OwnerRetry(MessageId),
    /// Re-read a watched reply (catches lost notices; reaps dead owners).
    /// Boxed: rare, and it keeps every key small.
    Watch(Box<(ConvKey, MessageId)>),
    /// Move a user's presence on (debounce, expiry).
    Presence(UserId),
    /// Go on handing out a conversation's chunks: the last step handed out
    /// its share (`fanout_slice`) and more were deliverable. Set at the
    /// step's `now`; fires on the next call of `handle_timeout`, not in the
    /// one that set it. Boxed, like `Watch`.
    Pump(Box<ConvKey>),
    /// Read a conversation's snapshot again to learn the user turn of a
    /// reply heard of without its start: the last read failed. Boxed, like
    /// `Watch`.
    Learn(Box<ConvKey>),
    /// Reap expired leases store-wide and refresh this node's presence.
    Housekeeping,
    /// A dialect connection's renderer timer (the compat dialect's
    /// coalescing window).
    Dialect(ConnId),
}

/// The deadline table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct Timers {
    by_key: BTreeMap<TimerKey, Instant>,
    by_time: BTreeSet<(Instant, TimerKey)>,
}

impl Timers {
    /// Sets (or moves) `key` to fire at `at`.
    pub(crate) fn set(&mut self, key: TimerKey, at: Instant) {
        if let Some(old) = self.by_key.insert(key.clone(), at) {
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((at, key));
    }

    /// Sets `key` to fire at `at` unless it is already set to fire earlier.
    pub(crate) fn set_earliest(&mut self, key: TimerKey, at: Instant) {
        match self.by_key.get(&key) {
            Some(old) if *old <= at => {}
            _ => self.set(key, at),
        }
    }

    /// Removes `key`.
    pub(crate) fn cancel(&mut self, key: &TimerKey) {
        if let Some(old) = self.by_key.remove(key) {
            self.by_time.remove(&(old, key.clone()));
        }
    }

    /// Whether `key` is set (for the tests: the node has no use for it).
    #[cfg(test)]
    #[must_use]
    pub(crate) fn is_set(&self, key: &TimerKey) -> bool {
        self.by_key.contains_key(key)
    }

    /// The earliest deadline.
    #[must_use]
    pub(crate) fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest entry due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<TimerKey> {
        let (at, _) = self.by_time.first()?;
        if *at > now {
            return None;
        }
        let (_, key) = self.by_time.pop_first()?;
        self.by_key.remove(&key);
        Some(key)
    }

    /// How many deadlines are set (for the tests: the node has no use for it).
    #[cfg(test)]
    #[must_use]
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no deadline is set (for the tests: the node has no use for it).
    #[cfg(test)]
    #[must_use]
    pub(crate) fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The keys that are set (for checkers).
    pub(crate) fn keys(&self) -> impl Iterator<Item = &TimerKey> {
        self.by_key.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    // The table only compares instants, so any base will do; a test has no
    // `now` handed in, and `Instant` has no other public constructor.
    #[allow(clippy::disallowed_methods)]
    fn fires_in_deadline_order_once() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.set(TimerKey::Housekeeping, t0 + Duration::from_secs(3));
        t.set(TimerKey::Conn(ConnId(1)), t0 + Duration::from_secs(1));
        t.set(TimerKey::Conn(ConnId(1)), t0 + Duration::from_secs(2));
        t.set_earliest(TimerKey::Housekeeping, t0 + Duration::from_secs(5));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(t.pop_due(t0 + Duration::from_secs(1)), None);
        let now = t0 + Duration::from_secs(10);
        assert_eq!(t.pop_due(now), Some(TimerKey::Conn(ConnId(1))));
        assert_eq!(t.pop_due(now), Some(TimerKey::Housekeeping));
        assert_eq!(t.pop_due(now), None);
        assert!(t.is_empty());
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // as above: any base instant will do
    fn set_earliest_moves_only_earlier_and_cancel_forgets_the_key() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let user = TimerKey::Conn(ConnId(7));
        let mut t = Timers::default();
        assert!(t.is_empty());
        assert_eq!(t.len(), 0);
        assert!(!t.is_set(&user));

        // Unset: set_earliest sets it.
        t.set_earliest(user.clone(), at(5));
        assert!(t.is_set(&user));
        assert!(!t.is_empty());
        assert_eq!(t.next(), Some(at(5)));
        // Later or equal: kept. Earlier: moved.
        t.set_earliest(user.clone(), at(6));
        assert_eq!(t.next(), Some(at(5)));
        t.set_earliest(user.clone(), at(5));
        assert_eq!(t.next(), Some(at(5)));
        t.set_earliest(user.clone(), at(4));
        assert_eq!(t.next(), Some(at(4)));
        assert_eq!(t.len(), 1);

        t.set(TimerKey::Housekeeping, at(9));
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.keys().cloned().collect::<Vec<_>>(),
            vec![user.clone(), TimerKey::Housekeeping]
        );

        // Due exactly at its deadline.
        assert_eq!(t.pop_due(at(4)), Some(user.clone()));
        assert!(!t.is_set(&user));
        assert_eq!(t.len(), 1);

        // A cancelled key is gone from both the table and the order.
        t.cancel(&TimerKey::Housekeeping);
        assert!(!t.is_set(&TimerKey::Housekeeping));
        assert_eq!(t.next(), None);
        assert_eq!(t.pop_due(at(100)), None);
        assert!(t.is_empty());
        assert_eq!(t.keys().count(), 0);
    }
}
