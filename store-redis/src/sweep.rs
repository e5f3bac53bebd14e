//! [`StoreOp::Sweep`] and the two indexes it walks: `P:{i:N}:live`
//! (conversations that may hold a live reply, scored at or before its reap
//! due time) and `P:{i:N}:presence` (users scored by when their presence
//! next moves on by itself), each split into [`PARTITIONS`] keys with hash
//! tags of their own so that no shard of a Redis Cluster holds them all; a
//! sweep walks every partition, one key at a time. Both are hints kept by the operations: a failure to update one is
//! not the operation's failure, and a late hint only makes a sweep reap
//! later, bounded by the lease (see the crate docs).
//!
//! [`StoreOp::Sweep`]: weir_core::store::StoreOp::Sweep

use redis::aio::ConnectionLike;
use redis::Value;
use weir_core::ids::{ConvKey, MessageId, UserId};
use weir_core::store::{Epoch, StoreReply};
use weir_core::stream::Outcome;

use crate::decode::{decode_presence, Fields};
use crate::keys::PARTITIONS;
use crate::plan::{Call, Target};
use crate::{epoch_ttl_ms, Failure, Flags, RedisStore};

/// Removes a sweep-index entry only if it is due (a reply started since has
/// a later due time and stays).
pub(crate) const UNINDEX: &str = r"
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) <= tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
";

/// Sets a sweep-index entry: `ZADD KEYS[1] [ARGV[1]] ARGV[2] ARGV[3]` (the
/// option `LT`/`XX`, or none when empty), then the index's expiry `ARGV[4]`
/// ms (none when empty). `allow-oom`: a full Redis still keeps the hints of
/// what it still carries out (a settle, a presence entry), so a sweep finds
/// them.
pub(crate) const INDEX: &str = r"#!lua flags=allow-oom
if ARGV[1] == '' then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
else
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2], ARGV[3])
end
if ARGV[4] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return 1
";

impl RedisStore {
    /// Adds `conv` to the sweep index, due no later than `due_ms`. Only a
    /// hint, so a failure is not the operation's failure.
    pub(crate) async fn index<C: ConnectionLike>(&self, conn: &mut C, conv: &ConvKey, due_ms: u64) {
        let index = self.index_key(Self::conv_partition(conv));
        let _ignored: Result<Value, _> = self
            .scripts
            .index
            .key(&index)
            .arg("LT")
            .arg(due_ms)
            .arg(self.conv_key(conv))
            .arg(epoch_ttl_ms())
            .invoke_async(conn)
            .await;
    }

    /// Keeps the presence index at the user's next due time (or drops the
    /// user when nothing is due). A hint, like the live index.
    pub(crate) async fn presence_indexed<C: ConnectionLike>(
        &self,
        conn: &mut C,
        user: &UserId,
        at_ms: u64,
        reply: &StoreReply,
    ) {
        let index = self.presence_index_key(Self::user_partition(user));
        let due = match reply {
            StoreReply::Presence { due_ms, .. } => *due_ms,
            _ => None,
        };
        let result: Result<Value, _> = match due {
            Some(due) => {
                self.scripts
                    .index
                    .key(&index)
                    .arg("")
                    .arg(due)
                    .arg(user.as_str())
                    .arg(epoch_ttl_ms())
                    .invoke_async(conn)
                    .await
            }
            None => {
                self.scripts
                    .unindex
                    .key(&index)
                    .arg(user.as_str())
                    .arg(at_ms)
                    .invoke_async(conn)
                    .await
            }
        };
        drop(result);
    }

    /// Reaps the live reply of every conversation due in the live index,
    /// then moves on with time every user due in the presence index: every
    /// partition of each.
    pub(crate) async fn sweep<C: ConnectionLike>(
        &self,
        conn: &mut C,
        epoch: Epoch,
        at_ms: u64,
    ) -> Result<StoreReply, Failure> {
        let mut reaped = Vec::new();
        for part in 0..PARTITIONS {
            self.sweep_live(conn, epoch, at_ms, part, &mut reaped)
                .await?;
        }
        reaped.sort();
        for part in 0..PARTITIONS {
            self.sweep_presence(conn, epoch, at_ms, part).await?;
        }
        Ok(StoreReply::Swept { reaped })
    }

    /// One partition of the live index.
    async fn sweep_live<C: ConnectionLike>(
        &self,
        conn: &mut C,
        epoch: Epoch,
        at_ms: u64,
        part: usize,
        reaped: &mut Vec<(ConvKey, MessageId, Outcome)>,
    ) -> Result<(), Failure> {
        let index = self.index_key(part);
        let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&index)
            .arg("-inf")
            .arg(at_ms)
            .query_async(conn)
            .await?;
        if due.is_empty() {
            return Ok(());
        }
        let _: Value = redis::cmd("PEXPIRE")
            .arg(&index)
            .arg(epoch_ttl_ms())
            .query_async(conn)
            .await?;
        for key in due {
            let Some(conv) = self.conv_of_key(&key) else {
                // Not ours: drop it from the index.
                let _: Value = redis::cmd("ZREM")
                    .arg(&index)
                    .arg(&key)
                    .query_async(conn)
                    .await?;
                continue;
            };
            let call = Call::reap_live(conv.clone(), at_ms);
            let mut f = Fields::reply(self.invoke(conn, &call, epoch, Flags::AllowOom).await?)?;
            match f.tag_str()?.as_str() {
                "live" => {
                    let due = f.u64()?;
                    let _: Value = self
                        .scripts
                        .index
                        .key(&index)
                        .arg("XX")
                        .arg(due)
                        .arg(&key)
                        .arg("")
                        .invoke_async(conn)
                        .await?;
                }
                tag => {
                    if tag == "reaped" {
                        let id = f.message_id()?;
                        let outcome = f.outcome()?;
                        reaped.push((conv, id, outcome));
                    } else if tag != "none" {
                        return Err(Failure::Protocol(format!("sweep: {tag}")));
                    }
                    let _: Value = self
                        .scripts
                        .unindex
                        .key(&index)
                        .arg(&key)
                        .arg(at_ms)
                        .invoke_async(conn)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// One partition of the presence index: move on with time every user
    /// whose entry expiry or debounce is due.
    async fn sweep_presence<C: ConnectionLike>(
        &self,
        conn: &mut C,
        epoch: Epoch,
        at_ms: u64,
        part: usize,
    ) -> Result<(), Failure> {
        let pindex = self.presence_index_key(part);
        let users: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&pindex)
            .arg("-inf")
            .arg(at_ms)
            .query_async(conn)
            .await?;
        for user in users {
            let Ok(user) = UserId::parse(user.as_str()) else {
                let _: Value = redis::cmd("ZREM")
                    .arg(&pindex)
                    .arg(&user)
                    .query_async(conn)
                    .await?;
                continue;
            };
            let call = Call::presence_check(user, at_ms);
            let reply = decode_presence(self.invoke(conn, &call, epoch, Flags::AllowOom).await?)?;
            if let Target::Presence(user) = &call.target {
                self.presence_indexed(conn, user, at_ms, &reply).await;
            }
        }
        Ok(())
    }
}
