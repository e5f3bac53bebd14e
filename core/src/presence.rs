//! Presence of one user, cluster-wide: online while any connection is open
//! anywhere, lingering for a debounce window after the last one closes, then
//! offline.
//!
//! ```text
//!            join                      leave (last connection)
//! Offline ─────────► Online ───────────────────────────► Lingering { until }
//!    ▲                  ▲   join (no notice: no flap)          │
//!    │                  └──────────────────────────────────────┤
//!    │          debounce elapsed, or every entry expired       │
//!    └─────────────────────────────────────────────────────────┘
//! ```
//!
//! Entries carry an expiry that their node refreshes; a node that dies stops
//! refreshing, so its connections stop counting within `entry_ttl`.
//! Lingering still counts as `online` on the wire.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{ConnId, NodeId};
use crate::wire::PresenceStatus;

/// Presence timings, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PresenceTimers {
    /// How long a user lingers after the last connection closed.
    pub debounce_ms: u64,
    /// How long a connection entry lives without a refresh from its node.
    pub entry_ttl_ms: u64,
}

impl Default for PresenceTimers {
    fn default() -> Self {
        Self {
            debounce_ms: 5_000,
            entry_ttl_ms: 30_000,
        }
    }
}

/// A user's presence state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PresenceState {
    /// No connection, and the debounce window has passed.
    Offline,
    /// At least one connection is open.
    Online,
    /// The last connection closed; offline at `until_ms` unless one joins.
    Lingering {
        /// When the user goes offline.
        until_ms: u64,
    },
}

impl PresenceState {
    /// The status on the wire (lingering counts as online).
    #[must_use]
    pub fn status(&self) -> PresenceStatus {
        match self {
            Self::Offline => PresenceStatus::Offline,
            Self::Online | Self::Lingering { .. } => PresenceStatus::Online,
        }
    }
}

/// One user's presence record: its connection entries and its state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserPresence {
    /// Open connections, with the time each entry expires.
    pub entries: BTreeMap<(NodeId, ConnId), u64>,
    /// The state.
    pub state: PresenceState,
}

impl Default for UserPresence {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            state: PresenceState::Offline,
        }
    }
}

impl UserPresence {
    /// A connection joined. Returns the new wire status if it changed.
    #[must_use]
    pub fn join(
        &mut self,
        node: NodeId,
        conn: ConnId,
        now_ms: u64,
        t: &PresenceTimers,
    ) -> Option<PresenceStatus> {
        let before = self.state.status();
        self.entries
            .insert((node, conn), now_ms.saturating_add(t.entry_ttl_ms));
        self.state = PresenceState::Online;
        changed(before, self.state.status())
    }

    /// A connection left. Returns the new wire status if it changed (it never
    /// does at once: the user lingers).
    #[must_use]
    pub fn leave(
        &mut self,
        node: &NodeId,
        conn: ConnId,
        now_ms: u64,
        t: &PresenceTimers,
    ) -> Option<PresenceStatus> {
        self.entries.remove(&(node.clone(), conn));
        self.expire(now_ms, t)
    }

    /// A node refreshes its entries.
    pub fn refresh(&mut self, node: &NodeId, now_ms: u64, t: &PresenceTimers) {
        for ((n, _), exp) in self.entries.iter_mut() {
            if n == node && *exp > now_ms {
                *exp = now_ms.saturating_add(t.entry_ttl_ms);
            }
        }
    }

    /// Drops expired entries and moves the state on with time. Returns the
    /// new wire status if it changed.
    #[must_use]
    pub fn expire(&mut self, now_ms: u64, t: &PresenceTimers) -> Option<PresenceStatus> {
        let before = self.state.status();
        let had_expired = {
            let n = self.entries.len();
            self.entries.retain(|_, exp| *exp > now_ms);
            self.entries.len() != n
        };
        if self.entries.is_empty() {
            self.state = match self.state {
                // Entries that expired belong to a dead node: its debounce
                // was the expiry itself.
                PresenceState::Online if had_expired => PresenceState::Offline,
                PresenceState::Online => PresenceState::Lingering {
                    until_ms: now_ms.saturating_add(t.debounce_ms),
                },
                PresenceState::Lingering { until_ms } if now_ms >= until_ms => {
                    PresenceState::Offline
                }
                s => s,
            };
        }
        changed(before, self.state.status())
    }

    /// The next time [`UserPresence::expire`] would change something.
    #[must_use]
    pub fn next_due_ms(&self) -> Option<u64> {
        let entry = self.entries.values().min().copied();
        let linger = match self.state {
            PresenceState::Lingering { until_ms } => Some(until_ms),
            _ => None,
        };
        match (entry, linger) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the record holds nothing worth keeping.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.entries.is_empty() && self.state == PresenceState::Offline
    }
}

fn changed(before: PresenceStatus, after: PresenceStatus) -> Option<PresenceStatus> {
    (before != after).then_some(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: PresenceTimers = PresenceTimers {
        debounce_ms: 50,
        entry_ttl_ms: 1000,
    };

    fn node(s: &str) -> NodeId {
        NodeId::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn reconnect_inside_debounce_does_not_flap() {
        let mut p = UserPresence::default();
        assert_eq!(
            p.join(node("a"), ConnId(1), 0, &T),
            Some(PresenceStatus::Online)
        );
        assert_eq!(p.leave(&node("a"), ConnId(1), 10, &T), None);
        assert_eq!(p.join(node("b"), ConnId(2), 40, &T), None);
        assert_eq!(p.expire(200, &T), None);
        assert_eq!(p.state, PresenceState::Online);
    }

    #[test]
    fn offline_after_debounce() {
        let mut p = UserPresence::default();
        let _ = p.join(node("a"), ConnId(1), 0, &T);
        let _ = p.leave(&node("a"), ConnId(1), 10, &T);
        assert_eq!(p.next_due_ms(), Some(60));
        assert_eq!(p.expire(59, &T), None);
        assert_eq!(p.expire(60, &T), Some(PresenceStatus::Offline));
        assert!(p.is_idle());
    }

    #[test]
    fn dead_node_entries_expire() {
        let mut p = UserPresence::default();
        let _ = p.join(node("a"), ConnId(1), 0, &T);
        p.refresh(&node("a"), 500, &T);
        assert_eq!(p.expire(1499, &T), None);
        assert_eq!(p.expire(1500, &T), Some(PresenceStatus::Offline));
    }

    #[test]
    fn refresh_extends_only_the_nodes_live_entries() {
        let mut p = UserPresence::default();
        let _ = p.join(node("a"), ConnId(1), 0, &T);
        let _ = p.join(node("b"), ConnId(2), 0, &T);
        // Another node's entry is not extended.
        p.refresh(&node("a"), 500, &T);
        assert_eq!(p.entries[&(node("a"), ConnId(1))], 1500);
        assert_eq!(p.entries[&(node("b"), ConnId(2))], 1000);
        // An entry due exactly now has expired: a refresh does not revive it.
        p.refresh(&node("b"), 1000, &T);
        assert_eq!(p.entries[&(node("b"), ConnId(2))], 1000);
        assert_eq!(p.expire(1000, &T), None);
        assert_eq!(p.entries.len(), 1);
        assert!(!p.is_idle());
    }

    #[test]
    fn lingering_and_online_records_are_not_idle() {
        let mut p = UserPresence::default();
        assert!(p.is_idle());
        let _ = p.join(node("a"), ConnId(1), 0, &T);
        assert!(!p.is_idle(), "online");
        let _ = p.leave(&node("a"), ConnId(1), 10, &T);
        assert!(p.entries.is_empty());
        assert!(!p.is_idle(), "lingering");
        assert_eq!(p.expire(60, &T), Some(PresenceStatus::Offline));
        assert!(p.is_idle());
    }
}
