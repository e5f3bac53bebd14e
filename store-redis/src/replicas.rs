//! Replicated deciding writes: a settle or a cancel is answered only once
//! the replicas of its shard have it.
//!
//! Redis replicates asynchronously, so a master that dies may have
//! acknowledged writes its replica never got, and the replica it is failed
//! over to comes back without them. Lost chunks are found by the store
//! itself (an append or a settle whose producer knows a later seq is answered
//! `gap`), but a lost **settle** or **cancel** leaves nothing to find: the
//! record simply says what it said before. A client told `end` would see the
//! reply streaming again on a resume, then reaped `owner_lost`; a client told
//! `cancelled` would see the owner go on.
//!
//! So, on a Redis Cluster, each settle and cancel is followed by `WAIT n ms`
//! in the same pipeline (one connection, retried whole by the redis crate,
//! so the `WAIT` always counts the call it follows on the master that ran
//! it), `n` being the replicas `CLUSTER SLOTS` lists for the conversation's
//! slot (Redis leaves out the ones it marks failed, and the ones that have
//! not yet acknowledged any write):
//!
//! - The call also writes the conversation's fence key (`P:{c:U/S}:fence`,
//!   60 s, `KEYS[2]` of the script), so that it replicates even when it
//!   changes nothing (a settle sent again after a timeout finds the reply
//!   already settled): `WAIT` counts the connection's last write, which is
//!   then never older than the first attempt's.
//! - A settle's `settled` notice is not published by the script but after
//!   the `WAIT`, by this crate: no node tells its clients `end` before the
//!   replicas have the settle.
//! - Fewer than `n` confirmations within the wait is
//!   [`Failure::Unreplicated`], told to the core as `unavailable`: whether it
//!   took effect is unknown. The core sends a settle again after
//!   `store_retry` (it is idempotent, and on a promoted replica that lacks
//!   it, it now takes effect there); a cancel is answered `unavailable` and
//!   the client may send it again. Clients get the reply's `end`, and the
//!   canceller its `cancel_result`, only once the replicas have the record.
//! - The connection these calls go over is not the operations' own (the
//!   runtime keeps a second one: Redis holds a connection's later commands
//!   while its `WAIT` blocks), so a replica that lags holds up settles and
//!   cancels, never appends and renewals.
//!
//! What it costs: one replica round trip per settle and per cancel; appends,
//! the bulk of the writes, wait for nothing. On one Redis nothing waits.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::Value;

use crate::{slot, Failure};

/// Slots in a Redis Cluster.
const SLOTS: usize = 16_384;

/// How many replicas each slot's deciding writes wait for, and how long.
/// Cheap to share (`Clone`): the runtime refreshes it from `CLUSTER SLOTS`,
/// every [`RedisStore`](crate::RedisStore) clone reads it.
#[derive(Debug, Clone)]
pub struct Replication(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    per_slot: RwLock<Vec<u8>>,
    wait: Duration,
}

impl Replication {
    /// No replicas known yet (nothing waits until [`Self::learn`] or
    /// [`Self::refresh`]); a deciding write waits at most `wait` for them.
    #[must_use]
    pub fn new(wait: Duration) -> Self {
        Self(Arc::new(Inner {
            per_slot: RwLock::new(vec![0; SLOTS]),
            wait,
        }))
    }

    /// The replicas a write to `key` waits for.
    #[must_use]
    pub fn replicas_of(&self, key: &str) -> u8 {
        self.0
            .per_slot
            .read()
            .ok()
            .and_then(|s| s.get(usize::from(slot(key))).copied())
            .unwrap_or(0)
    }

    /// How long a deciding write waits for its replicas.
    #[must_use]
    pub fn wait(&self) -> Duration {
        self.0.wait
    }

    /// Takes the replica counts from a `CLUSTER SLOTS` answer (each range:
    /// first slot, last slot, master, then one entry per replica). Slots no
    /// range names wait for none. Returns the ranges read.
    pub fn learn(&self, cluster_slots: &Value) -> usize {
        let Value::Array(ranges) = cluster_slots else {
            return 0;
        };
        let mut per_slot = vec![0u8; SLOTS];
        let mut read = 0;
        for range in ranges {
            let Value::Array(parts) = range else {
                continue;
            };
            let (Some(Value::Int(from)), Some(Value::Int(to))) = (parts.first(), parts.get(1))
            else {
                continue;
            };
            let (Ok(from), Ok(to)) = (usize::try_from(*from), usize::try_from(*to)) else {
                continue;
            };
            let replicas = u8::try_from(parts.len().saturating_sub(3)).unwrap_or(u8::MAX);
            for s in per_slot.iter_mut().take(to.min(SLOTS - 1) + 1).skip(from) {
                *s = replicas;
            }
            read += 1;
        }
        if let Ok(mut s) = self.0.per_slot.write() {
            *s = per_slot;
        }
        read
    }

    /// Reads `CLUSTER SLOTS` over `conn` and [learns](Self::learn) it.
    ///
    /// # Errors
    ///
    /// Redis could not be asked.
    pub async fn refresh<C: ConnectionLike>(&self, conn: &mut C) -> Result<usize, Failure> {
        let v: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
        Ok(self.learn(&v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(b"127.0.0.1".to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn each_slot_waits_for_the_replicas_its_range_lists() {
        let r = Replication::new(Duration::from_millis(500));
        let slots = Value::Array(vec![
            Value::Array(vec![Value::Int(0), Value::Int(5460), node(1), node(4)]),
            Value::Array(vec![Value::Int(5461), Value::Int(10922), node(2)]),
            Value::Array(vec![
                Value::Int(10923),
                Value::Int(16383),
                node(3),
                node(5),
                node(6),
            ]),
        ]);
        assert_eq!(r.learn(&slots), 3);
        // `{a}` hashes to slot 15495, `{b}` to 3300, `{c}` to 7365.
        assert_eq!(r.replicas_of("p:{b}:conv"), 1);
        assert_eq!(r.replicas_of("p:{c}:conv"), 0);
        assert_eq!(r.replicas_of("p:{a}:conv"), 2);
        // A later answer replaces the whole map.
        let fewer = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(16383),
            node(1),
        ])]);
        assert_eq!(r.learn(&fewer), 1);
        assert_eq!(r.replicas_of("p:{a}:conv"), 0);
        assert_eq!(r.learn(&Value::Nil), 0);
    }
}
