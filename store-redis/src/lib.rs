//! # weir-store-redis
//!
//! weir's store on Redis: every operation of
//! [`weir_core::store`] as **one atomic call of one Lua script**
//! (`src/lua/store.lua`), answering exactly as the core's reference
//! [`Model`](weir_core::store::Model) does — weir-verification's differential
//! test applies random operation sequences to both, on a real
//! `redis-server`, and demands equal replies and equal notices.
//!
//! The crate is runtime-neutral: it talks through any
//! [`redis::aio::ConnectionLike`] (a multiplexed connection on tokio or on
//! smol). Connecting, reconnecting and the pub/sub connection are the
//! runtime's part.
//!
//! ## Key layout
//!
//! `P` is the prefix (default `weir`). Every key of a conversation carries
//! the hash tag `{c:USER/SESSION}`, every key of a user's presence the tag
//! `{p:USER}`, so Redis Cluster keeps each on one shard (ids cannot contain
//! `{`, `}` or `/`).
//!
//! | key | type | holds | expiry |
//! | --- | --- | --- | --- |
//! | `P:{c:U/S}:conv` | hash | `live` (the Active/Cancelling reply), `latest` (target of a cancel without id), `next_token` (fencing tokens) | at least as long as its longest record |
//! | `P:{c:U/S}:hist` | list | settled messages as JSON, oldest first, capped at the history limit | none, or the configured retention after the last write |
//! | `P:{c:U/S}:streams` | sorted set | reply ids, scored by when their record expires (`+inf` while live) | as `conv` |
//! | `P:{c:U/S}:r:ID` | hash | one reply: `st` (a/c/s), `lease`, `final`, `deadline`, `outcome`, `reason`, `expires`, `owner`, `token`, `reply_to`, `created`, `last`, `usage`, `epoch` | live: lease + cancel deadline + grace + slack, renewed by every append/renew; settled: grace + slack |
//! | `P:{c:U/S}:log:ID` | stream | the chunk log: entry id `SEQ-0`, field `d` = the delta (explicit ids: a retried append cannot duplicate) | as its record |
//! | `P:{c:U/S}:idem:KEY` | string | `USER_MSG_ID REPLY_ID EXPIRES_MS` for a `client_message_id` | the idempotency window + slack |
//! | `P:{p:U}:e` | hash | presence entries: `NODE\|CONN` → expiry (ms) | the latest entry's expiry + slack |
//! | `P:{p:U}:s` | string | presence state: `on` or `ling:UNTIL_MS` (absent: offline) | as the entries, or the linger end + slack |
//! | `P:live` | sorted set | conversations that may hold a live reply, scored at or before its reap due time: the sweep's index (a hint; the records are the truth) | 7 days, refreshed by every start, cancel and sweep |
//! | `P:presence` | sorted set | users scored by when their presence next changes by itself (an entry's expiry, the debounce's end): the sweep's presence index (a hint) | as `P:live` |
//! | `P:epoch` | string | the store's epoch | 7 days, refreshed by every node's housekeeping |
//!
//! Pub/sub channels: `P:{c:U/S}:ch` per conversation (started, chunks,
//! cancelling, settled), `P:n:NODE` per node (cancel requests for the
//! replies it owns), `P:u:USER` per user (presence). Payloads are the JSON
//! of [`Notice`].
//!
//! ## Time and epoch
//!
//! Scripts never read Redis's clock: every call carries the caller's
//! wall-clock `at_ms`, as in the model. Each record also gets a Redis TTL a
//! little longer than its logical window ([`SLACK_MS`]), so nothing is left
//! behind if no node looks at it again.
//!
//! The epoch lives in `P:epoch`. A node reads it when it connects
//! ([`RedisStore::establish_epoch`], which creates it if missing), again on
//! every reconnect and periodically: a Redis restart without persistence or a
//! flush loses the key, the next node to look makes a new one, and message
//! ids made in the old epoch are then answered `epoch_changed`.
//!
//! ## What differs from the model
//!
//! - [`StoreOp::Sweep`] visits only the conversations in `P:live` and the
//!   users in `P:presence` that are due, not every key. The indexes are
//!   hints kept by the operations (a reply's due time only moves later,
//!   except by a cancel, which lowers its entry); under concurrent writers a
//!   hint can be late, never early, so a sweep can only reap later than the
//!   model would, bounded by the lease. Nodes that watch a reply or a user
//!   do not depend on the sweep: they reap and check at the due times
//!   themselves.
//! - The order of a sweep's notices across conversations (the model's is key
//!   order). The differential test holds every reply and every other notice
//!   to the model's, in order.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::Value;
use weir_core::ids::{ConvKey, MessageId, SessionId, UserId};
use weir_core::store::{
    message_ids, Epoch, LiveReply, Notice, StoreConfig, StoreError, StoreOp, StoreReply, Topic,
};
use weir_core::stream::{CancelAnswer, Outcome, SettleRequest, StreamState};
use weir_core::wire::{Message, MessageStatus, PresenceStatus, Role, Usage};

mod decode;

use decode::Fields;

/// How much longer than its logical window a key lives in Redis (clock skew
/// between nodes and Redis, and time for a late reader).
pub const SLACK_MS: u64 = 60_000;

/// How long the epoch key lives without a node refreshing it.
pub const EPOCH_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "weir";

/// The store script's source.
pub const SCRIPT: &str = include_str!("lua/store.lua");

/// Removes a sweep-index entry only if it is due (a reply started since has
/// a later due time and stays).
const UNINDEX: &str = r"
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) <= tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
";

/// Why an operation has no reply.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Redis could not be reached or did not answer (the operation may or may
    /// not have taken effect).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis answered something the script never returns: a bug.
    #[error("unexpected reply from the store script: {0}")]
    Protocol(String),
}

impl Failure {
    /// Whether the connection should be considered broken (reconnect).
    #[must_use]
    pub fn is_connection_lost(&self) -> bool {
        match self {
            Failure::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || e.is_unrecoverable_error()
            }
            Failure::Protocol(_) => false,
        }
    }
}

impl From<Failure> for StoreError {
    fn from(f: Failure) -> Self {
        StoreError::Unavailable(f.to_string())
    }
}

/// The Redis store: settings, key names and the script. Cheap to share
/// (`Clone`); holds no connection.
#[derive(Debug, Clone)]
pub struct RedisStore {
    prefix: String,
    config: StoreConfig,
    retention_ms: u64,
    script: redis::Script,
    unindex: redis::Script,
}

impl RedisStore {
    /// A store under `prefix` with the model's `config`. `retention_ms`: how
    /// long a conversation's history is kept after its last message (0:
    /// forever; it is always capped at `config.history_limit` messages).
    #[must_use]
    pub fn new(prefix: &str, config: StoreConfig, retention_ms: u64) -> Self {
        Self {
            prefix: prefix.to_owned(),
            config,
            retention_ms,
            script: redis::Script::new(SCRIPT),
            unindex: redis::Script::new(UNINDEX),
        }
    }

    /// The settings the scripts decide with.
    #[must_use]
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The key prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The epoch key.
    #[must_use]
    pub fn epoch_key(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    fn index_key(&self) -> String {
        format!("{}:live", self.prefix)
    }

    fn presence_index_key(&self) -> String {
        format!("{}:presence", self.prefix)
    }

    /// A conversation's meta key (the script's `KEYS[1]`).
    #[must_use]
    pub fn conv_key(&self, conv: &ConvKey) -> String {
        format!("{}:{{c:{}/{}}}:conv", self.prefix, conv.user, conv.session)
    }

    fn conv_of_key(&self, key: &str) -> Option<ConvKey> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(":{c:")?;
        let tag = rest.strip_suffix("}:conv")?;
        let (user, session) = tag.split_once('/')?;
        Some(ConvKey::new(
            UserId::parse(user).ok()?,
            SessionId::parse(session).ok()?,
        ))
    }

    fn presence_key(&self, user: &UserId) -> String {
        format!("{}:{{p:{user}}}:e", self.prefix)
    }

    /// The pub/sub channel of a topic.
    #[must_use]
    pub fn channel(&self, topic: &Topic) -> String {
        match topic {
            Topic::Conv(c) => format!("{}:{{c:{}/{}}}:ch", self.prefix, c.user, c.session),
            Topic::User(u) => format!("{}:u:{u}", self.prefix),
            Topic::Node(n) => format!("{}:n:{n}", self.prefix),
        }
    }

    /// A pattern that matches every channel of this store (for tests and
    /// tools; nodes subscribe to exact channels).
    #[must_use]
    pub fn channel_pattern(&self) -> String {
        format!("{}:*", self.prefix)
    }

    /// Decodes a notice published by the script.
    ///
    /// # Errors
    /// The payload is not a notice (another program publishing on our
    /// channels).
    pub fn decode_notice(payload: &[u8]) -> Result<Notice, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    /// Reads the store's epoch, creating it with `candidate` if there is none
    /// (a new Redis, or one that lost its data), and refreshes its expiry.
    ///
    /// # Errors
    /// Redis is unreachable, or the key holds something else.
    pub async fn establish_epoch<C: ConnectionLike>(
        &self,
        conn: &mut C,
        candidate: Epoch,
    ) -> Result<Epoch, Failure> {
        let key = self.epoch_key();
        let ttl = epoch_ttl_ms();
        let (_, value, _): (Value, Option<String>, Value) = redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg(candidate.to_string())
            .arg("NX")
            .arg("PX")
            .arg(ttl)
            .cmd("GET")
            .arg(&key)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl)
            .query_async(conn)
            .await?;
        let value = value.ok_or_else(|| Failure::Protocol("the epoch key vanished".into()))?;
        value
            .parse()
            .map_err(|_| Failure::Protocol(format!("the epoch key holds {value:?}")))
    }

    /// Applies one operation in `epoch` (the value
    /// [`establish_epoch`](Self::establish_epoch) returned on this
    /// connection). Its notices are published by the script itself.
    ///
    /// # Errors
    /// Redis is unreachable or timed out ([`Failure::Redis`]): the operation
    /// may or may not have taken effect.
    pub async fn apply<C: ConnectionLike>(
        &self,
        conn: &mut C,
        epoch: Epoch,
        op: StoreOp,
    ) -> Result<StoreReply, Failure> {
        let call = match op {
            StoreOp::Sweep { at_ms } => return self.sweep(conn, epoch, at_ms).await,
            StoreOp::PresenceRefresh { node, users, at_ms } => {
                // One call per user: each user's keys have their own hash tag.
                for user in users {
                    let call = Call::presence("p_refresh", user, at_ms, vec![node.to_string()]);
                    Fields::reply(self.invoke(conn, &call, epoch).await?)?.tag("refreshed")?;
                }
                return Ok(StoreReply::Refreshed);
            }
            op => self.plan(op, epoch)?,
        };
        let value = self.invoke(conn, &call, epoch).await?;
        let (reply, due_ms) = call.then.decode(value, epoch)?;
        match (&call.target, &reply) {
            // The sweep's indexes (hints: a failure is not the operation's).
            (Target::Presence(user), _) => {
                self.presence_indexed(conn, user, call.at_ms, &reply).await;
            }
            (Target::Conv(conv), StoreReply::Started { .. } | StoreReply::Cancel { .. }) => {
                if let Some(due) = due_ms {
                    self.index(conn, conv, due).await;
                }
            }
            (Target::Conv(_), _) => {}
        }
        Ok(reply)
    }

    /// The script call for `op` (everything but sweeps and refreshes), and
    /// how to read its answer.
    fn plan(&self, op: StoreOp, epoch: Epoch) -> Result<Call, Failure> {
        let timers = self.config.timers;
        Ok(match op {
            StoreOp::PresenceJoin {
                user,
                node,
                conn,
                at_ms,
            } => Call::presence("p_join", user, at_ms, vec![format!("{node}|{conn}")]),
            StoreOp::PresenceLeave {
                user,
                node,
                conn,
                at_ms,
            } => Call::presence("p_leave", user, at_ms, vec![format!("{node}|{conn}")]),
            StoreOp::PresenceCheck { user, at_ms } => {
                Call::presence("p_check", user, at_ms, Vec::new())
            }
            StoreOp::Snapshot { conv, limit, at_ms } => Call::conv(
                "snapshot",
                conv,
                at_ms,
                vec![limit.to_string()],
                Then::Snapshot,
            ),
            StoreOp::Start {
                conv,
                content,
                client_message_id,
                nonce,
                owner,
                context_limit,
                at_ms,
            } => {
                let (user_id, message_id) = message_ids(epoch, nonce);
                let user_message = Message {
                    message_id: user_id.clone(),
                    role: Role::User,
                    content,
                    status: MessageStatus::Completed,
                    created_at_ms: at_ms,
                    seq: 0,
                };
                let args = vec![
                    to_json(&user_message)?,
                    user_id.to_string(),
                    message_id.to_string(),
                    owner.to_string(),
                    client_message_id.map(|k| k.to_string()).unwrap_or_default(),
                    context_limit.to_string(),
                    self.config.idempotency_ttl_ms.to_string(),
                ];
                // A started reply is due for a reap at the lease's end.
                let due_ms = at_ms.saturating_add(timers.lease_ttl_ms);
                Call::conv(
                    "start",
                    conv,
                    at_ms,
                    args,
                    Then::Start {
                        user_message,
                        message_id,
                        due_ms,
                    },
                )
            }
            StoreOp::Append {
                conv,
                message_id,
                token,
                first_seq,
                deltas,
                at_ms,
            } => {
                let mut args = vec![
                    message_id.to_string(),
                    token.to_string(),
                    first_seq.to_string(),
                ];
                args.extend(deltas);
                Call::conv("append", conv, at_ms, args, Then::Write)
            }
            StoreOp::Cancel {
                conv,
                message_id,
                at_ms,
            } => {
                let args = vec![message_id.map(|m| m.to_string()).unwrap_or_default()];
                // A cancelled reply is due no later than its cancel deadline.
                let due_ms = at_ms.saturating_add(timers.cancel_deadline_ms);
                Call::conv("cancel", conv, at_ms, args, Then::Cancel { due_ms })
            }
            StoreOp::Settle {
                conv,
                message_id,
                token,
                request,
                usage,
                at_ms,
            } => {
                let (kind, reason) = match request {
                    SettleRequest::Completed => ("completed", String::new()),
                    SettleRequest::Failed(r) => ("failed", r),
                    SettleRequest::Cancelled => ("cancelled", String::new()),
                };
                let usage = match usage {
                    Some(u) => to_json(&u)?,
                    None => String::new(),
                };
                let args = vec![
                    message_id.to_string(),
                    token.to_string(),
                    kind.to_owned(),
                    reason,
                    usage,
                ];
                Call::conv("settle", conv, at_ms, args, Then::Write)
            }
            StoreOp::Renew {
                conv,
                message_id,
                token,
                at_ms,
            } => Call::conv(
                "renew",
                conv,
                at_ms,
                vec![message_id.to_string(), token.to_string()],
                Then::Write,
            ),
            StoreOp::Reap {
                conv,
                message_id,
                at_ms,
            } => Call::conv(
                "reap",
                conv,
                at_ms,
                vec![message_id.to_string()],
                Then::Write,
            ),
            StoreOp::Read {
                conv,
                message_id,
                after_seq,
                at_ms,
            } => {
                let args = vec![message_id.to_string(), after_seq.to_string()];
                Call::conv("read", conv, at_ms, args, Then::Read { after_seq })
            }
            StoreOp::Sweep { .. } | StoreOp::PresenceRefresh { .. } => {
                return Err(Failure::Protocol(
                    "sweeps and refreshes are not one call".into(),
                ))
            }
        })
    }

    /// Runs one call of the script.
    async fn invoke<C: ConnectionLike>(
        &self,
        conn: &mut C,
        call: &Call,
        epoch: Epoch,
    ) -> Result<Value, Failure> {
        let mut inv = match &call.target {
            Target::Conv(conv) => {
                let t = &self.config.timers;
                let mut inv = self.script.key(self.conv_key(conv));
                inv.arg(call.op)
                    .arg(call.at_ms)
                    .arg(to_json(conv)?)
                    .arg(t.lease_ttl_ms)
                    .arg(t.cancel_deadline_ms)
                    .arg(t.grace_ms)
                    .arg(self.config.history_limit)
                    .arg(self.retention_ms)
                    .arg(SLACK_MS)
                    .arg(epoch.to_string());
                inv
            }
            Target::Presence(user) => {
                let t = &self.config.presence;
                let mut inv = self.script.key(self.presence_key(user));
                inv.arg(call.op)
                    .arg(call.at_ms)
                    .arg(user.as_str())
                    .arg(t.debounce_ms)
                    .arg(t.entry_ttl_ms)
                    .arg(SLACK_MS);
                inv
            }
        };
        for a in &call.args {
            inv.arg(a);
        }
        Ok(inv.invoke_async(conn).await?)
    }

    /// Adds `conv` to the sweep index, due no later than `due_ms`. Only a
    /// hint, so a failure is not the operation's failure.
    async fn index<C: ConnectionLike>(&self, conn: &mut C, conv: &ConvKey, due_ms: u64) {
        let index = self.index_key();
        let _ignored: Result<Value, _> = redis::pipe()
            .cmd("ZADD")
            .arg(&index)
            .arg("LT")
            .arg(due_ms)
            .arg(self.conv_key(conv))
            .cmd("PEXPIRE")
            .arg(&index)
            .arg(epoch_ttl_ms())
            .query_async(conn)
            .await;
    }

    /// Keeps the presence index at the user's next due time (or drops the
    /// user when nothing is due). A hint, like the live index.
    async fn presence_indexed<C: ConnectionLike>(
        &self,
        conn: &mut C,
        user: &UserId,
        at_ms: u64,
        reply: &StoreReply,
    ) {
        let index = self.presence_index_key();
        let due = match reply {
            StoreReply::Presence { due_ms, .. } => *due_ms,
            _ => None,
        };
        let result: Result<Value, _> = match due {
            Some(due) => {
                redis::pipe()
                    .cmd("ZADD")
                    .arg(&index)
                    .arg(due)
                    .arg(user.as_str())
                    .cmd("PEXPIRE")
                    .arg(&index)
                    .arg(epoch_ttl_ms())
                    .query_async(conn)
                    .await
            }
            None => {
                self.unindex
                    .key(&index)
                    .arg(user.as_str())
                    .arg(at_ms)
                    .invoke_async(conn)
                    .await
            }
        };
        drop(result);
    }

    async fn sweep<C: ConnectionLike>(
        &self,
        conn: &mut C,
        epoch: Epoch,
        at_ms: u64,
    ) -> Result<StoreReply, Failure> {
        let index = self.index_key();
        let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&index)
            .arg("-inf")
            .arg(at_ms)
            .query_async(conn)
            .await?;
        let _: Value = redis::cmd("PEXPIRE")
            .arg(&index)
            .arg(epoch_ttl_ms())
            .query_async(conn)
            .await?;
        let mut reaped = Vec::new();
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
            let call = Call::conv("reap_live", conv.clone(), at_ms, Vec::new(), Then::Write);
            let mut f = Fields::reply(self.invoke(conn, &call, epoch).await?)?;
            match f.tag_str()?.as_str() {
                "live" => {
                    let due = f.u64()?;
                    let _: Value = redis::cmd("ZADD")
                        .arg(&index)
                        .arg("XX")
                        .arg(due)
                        .arg(&key)
                        .query_async(conn)
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
                        .unindex
                        .key(&index)
                        .arg(&key)
                        .arg(at_ms)
                        .invoke_async(conn)
                        .await?;
                }
            }
        }
        reaped.sort();
        // Presence: move on with time every user whose entry expiry or
        // debounce is due.
        let pindex = self.presence_index_key();
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
            let call = Call::presence("p_check", user, at_ms, Vec::new());
            let reply = decode_presence(self.invoke(conn, &call, epoch).await?)?;
            if let Target::Presence(user) = &call.target {
                self.presence_indexed(conn, user, at_ms, &reply).await;
            }
        }
        Ok(StoreReply::Swept { reaped })
    }
}

/// One call of the script: which operation, on whose keys, with what, and
/// how to read the answer.
#[derive(Debug)]
struct Call {
    op: &'static str,
    target: Target,
    at_ms: u64,
    args: Vec<String>,
    then: Then,
}

/// Whose keys a call touches (its hash tag).
#[derive(Debug)]
enum Target {
    Conv(ConvKey),
    Presence(UserId),
}

/// How to read a call's answer.
#[derive(Debug)]
enum Then {
    Presence,
    Snapshot,
    /// The ids and user turn the caller made; the reply's reap due time.
    Start {
        user_message: Message,
        message_id: MessageId,
        due_ms: u64,
    },
    /// Ok, gap, cancel requested, fenced, settled, not due, missing.
    Write,
    /// The cancelled reply's reap due time (its cancel deadline).
    Cancel {
        due_ms: u64,
    },
    Read {
        after_seq: u64,
    },
}

impl Call {
    fn conv(op: &'static str, conv: ConvKey, at_ms: u64, args: Vec<String>, then: Then) -> Call {
        Call {
            op,
            target: Target::Conv(conv),
            at_ms,
            args,
            then,
        }
    }

    fn presence(op: &'static str, user: UserId, at_ms: u64, args: Vec<String>) -> Call {
        Call {
            op,
            target: Target::Presence(user),
            at_ms,
            args,
            then: Then::Presence,
        }
    }
}

impl Then {
    /// The reply, and the reap due time for the sweep's index when the call
    /// made a reply live or cancelled one.
    fn decode(&self, v: Value, epoch: Epoch) -> Result<(StoreReply, Option<u64>), Failure> {
        Ok(match self {
            Then::Presence => (decode_presence(v)?, None),
            Then::Snapshot => (decode_snapshot(v, epoch)?, None),
            Then::Start {
                user_message,
                message_id,
                due_ms,
            } => {
                let reply = decode_start(v, epoch, user_message.clone(), message_id.clone())?;
                let due = matches!(reply, StoreReply::Started { .. }).then_some(*due_ms);
                (reply, due)
            }
            Then::Write => (decode_write(v, epoch)?, None),
            Then::Cancel { due_ms } => {
                let reply = decode_cancel(v)?;
                let cancelled = matches!(
                    reply,
                    StoreReply::Cancel {
                        answer: Some(CancelAnswer::Cancelled),
                        ..
                    }
                );
                (reply, cancelled.then_some(*due_ms))
            }
            Then::Read { after_seq } => (decode_read(v, epoch, *after_seq)?, None),
        })
    }
}

fn epoch_ttl_ms() -> u64 {
    u64::try_from(EPOCH_TTL.as_millis()).unwrap_or(u64::MAX)
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String, Failure> {
    serde_json::to_string(v).map_err(|e| Failure::Protocol(e.to_string()))
}

fn decode_presence(v: Value) -> Result<StoreReply, Failure> {
    let mut f = Fields::reply(v)?;
    f.tag("presence")?;
    let status = match f.str()?.as_str() {
        "online" => PresenceStatus::Online,
        "offline" => PresenceStatus::Offline,
        s => return Err(Failure::Protocol(format!("presence status {s}"))),
    };
    Ok(StoreReply::Presence {
        status,
        connections: f.u64()?,
        due_ms: f.opt_u64()?,
    })
}

fn decode_snapshot(v: Value, epoch: Epoch) -> Result<StoreReply, Failure> {
    let mut f = Fields::reply(v)?;
    f.tag("snapshot")?;
    let history = f.messages()?;
    let live = match f.opt_array()? {
        None => None,
        Some(mut l) => Some(LiveReply {
            message_id: l.message_id()?,
            reply_to: l.message_id()?,
            state: l.state()?,
            deltas: l.strings()?,
            created_at_ms: l.u64()?,
            owner: weir_core::ids::NodeId::parse(l.str()?)
                .map_err(|e| Failure::Protocol(e.to_string()))?,
        }),
    };
    Ok(StoreReply::Snapshot {
        epoch,
        history,
        live,
    })
}

fn decode_start(
    v: Value,
    epoch: Epoch,
    user_message: Message,
    message_id: MessageId,
) -> Result<StoreReply, Failure> {
    let mut f = Fields::reply(v)?;
    Ok(match f.tag_str()?.as_str() {
        "started" => StoreReply::Started {
            epoch,
            user_message,
            message_id,
            token: f.u64()?,
            context: f.messages()?,
        },
        "duplicate" => StoreReply::Duplicate {
            user_message_id: f.message_id()?,
            message_id: f.message_id()?,
        },
        "busy" => StoreReply::Busy {
            message_id: f.message_id()?,
        },
        t => return Err(Failure::Protocol(format!("start: {t}"))),
    })
}

fn decode_cancel(v: Value) -> Result<StoreReply, Failure> {
    let mut f = Fields::reply(v)?;
    f.tag("cancel")?;
    let message_id = f.opt_str()?.map(MessageId::parse).transpose();
    let message_id = message_id.map_err(|e| Failure::Protocol(e.to_string()))?;
    let answer = match f.opt_str()?.as_deref() {
        None => None,
        Some("cancelled") => Some(CancelAnswer::Cancelled),
        Some("completed") => Some(CancelAnswer::Completed),
        Some("failed") => Some(CancelAnswer::Failed),
        Some(a) => return Err(Failure::Protocol(format!("cancel answer {a}"))),
    };
    Ok(StoreReply::Cancel {
        message_id,
        answer,
        final_seq: f.opt_u64()?,
    })
}

/// Replies of the producer's writes and of reap: ok, gap, cancel_requested,
/// fenced, settled, not_due, missing.
fn decode_write(v: Value, epoch: Epoch) -> Result<StoreReply, Failure> {
    let mut f = Fields::reply(v)?;
    Ok(match f.tag_str()?.as_str() {
        "ok" => StoreReply::Ok { last_seq: f.u64()? },
        "gap" => StoreReply::Gap { last_seq: f.u64()? },
        "cancel_requested" => StoreReply::CancelRequested {
            final_seq: f.u64()?,
        },
        "fenced" => StoreReply::Fenced,
        "settled" => StoreReply::Settled {
            outcome: f.outcome()?,
            final_seq: f.u64()?,
            changed: f.u64()? == 1,
        },
        "not_due" => StoreReply::NotDue { due_ms: f.u64()? },
        "missing" => missing(&mut f, epoch)?,
        t => return Err(Failure::Protocol(format!("write: {t}"))),
    })
}

fn missing(f: &mut Fields, epoch: Epoch) -> Result<StoreReply, Failure> {
    let snapshot = match f.opt_str()? {
        None => None,
        Some(json) => {
            Some(serde_json::from_str(&json).map_err(|e| Failure::Protocol(e.to_string()))?)
        }
    };
    Ok(StoreReply::Missing { epoch, snapshot })
}

fn decode_read(v: Value, epoch: Epoch, after_seq: u64) -> Result<StoreReply, Failure> {
    let mut f = Fields::reply(v)?;
    match f.tag_str()?.as_str() {
        "read" => {
            let state = f.state()?;
            let deltas = f.strings()?;
            let usage: Option<Usage> = match f.opt_str()? {
                None => None,
                Some(json) => Some(
                    serde_json::from_str(&json).map_err(|e| Failure::Protocol(e.to_string()))?,
                ),
            };
            Ok(StoreReply::Read {
                epoch,
                state,
                deltas,
                first_seq: after_seq + 1,
                usage,
            })
        }
        "missing" => missing(&mut f, epoch),
        t => Err(Failure::Protocol(format!("read: {t}"))),
    }
}

/// Builds the [`Outcome`] of `outcome`/`reason` fields.
fn outcome_of(outcome: &str, reason: Option<String>) -> Result<Outcome, Failure> {
    Ok(match outcome {
        "completed" => Outcome::Completed,
        "cancelled" => Outcome::Cancelled,
        "failed" => Outcome::Failed(reason.unwrap_or_default()),
        o => return Err(Failure::Protocol(format!("outcome {o}"))),
    })
}

/// Builds a [`StreamState`] from the script's `state_of` array.
fn state_of(mut s: Fields) -> Result<StreamState, Failure> {
    let st = s.str()?;
    let lease = s.opt_u64()?;
    let final_seq = s.opt_u64()?;
    let deadline = s.opt_u64()?;
    let outcome = s.opt_str()?;
    let reason = s.opt_str()?;
    let expires = s.opt_u64()?;
    let need = |v: Option<u64>, what: &str| {
        v.ok_or_else(|| Failure::Protocol(format!("state {st} without {what}")))
    };
    Ok(match st.as_str() {
        "a" => StreamState::Active {
            lease_until_ms: need(lease, "lease")?,
        },
        "c" => StreamState::Cancelling {
            final_seq: need(final_seq, "final")?,
            lease_until_ms: need(lease, "lease")?,
            deadline_ms: need(deadline, "deadline")?,
        },
        "s" => StreamState::Settled {
            outcome: outcome_of(&outcome.unwrap_or_default(), reason)?,
            final_seq: need(final_seq, "final")?,
            expires_at_ms: need(expires, "expires")?,
        },
        _ => return Err(Failure::Protocol(format!("state {st}"))),
    })
}
