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
//! `{p:USER}`, so Redis Cluster keeps each on one shard. Ids are escaped in
//! every name (`%`, `/`, `{`, `}` and control characters as `%XX`), and a
//! name with an escaped id marks its kind with `%`: `{c%:org%2Falice/s1}`,
//! `{p%:a:%7Bb}`, `P:u%:a:%7Bb`. Ids without those characters are written as
//! they are, in the names of the layout before escaping. The `keys` module
//! says why, and `docs/store.md` what becomes of an older weir's data.
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
//! | `P:{i:N}:live` | sorted set | partition `N` (0–15) of the conversations (their `:conv` key names) that may hold a live reply, scored at or before its reap due time: the sweep's index (a hint; the records are the truth) | 7 days, refreshed by every start, cancel and sweep |
//! | `P:{i:N}:presence` | sorted set | partition `N` of the users (ids as they are: members are values, not names) scored by when their presence next changes by itself (an entry's expiry, the debounce's end): the sweep's presence index (a hint) | as the live index |
//! | `P:epoch` | string | the store's epoch | 7 days, refreshed by every node's housekeeping |
//! | `P:{u:U}:slots:conns`, `P:{u:U}:slots:streams`, `P:{u:U}:bucket`, `P:{ip:A}:slots:conns` | sorted sets, hash | the caps' slots and chat bucket, one hash tag per user or client address (the `caps` module, `src/lua/caps.lua`) | slot lifetime (or bucket refill) + slack |
//! | `P:{x:S/NONCE}` | string | whose conversation of session `S` the reply made with `NONCE` belongs to (the `locate` module) | the idempotency window + slack |
//!
//! Shard channels (`SPUBLISH`, each in its keys' slot): `P:{c:U/S}:ch` per
//! conversation (started, chunks, cancelling, settled), `P:{n:NODE}:ch` per
//! node (cancel requests for the replies it owns, published after the
//! cancel's script: another slot), `P:{p:USER}:ch` per user (presence). No
//! call touches two slots, so the same layout runs on a Redis Cluster.
//! Payloads are the JSON
//! of [`Notice`]. The script reads no id out of a name: the channels it
//! publishes on that are not its conversation's come as arguments.
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
//! - [`StoreOp::Sweep`] visits only the conversations in the live index and
//!   the users in the presence index that are due, not every key. The indexes are
//!   hints kept by the operations (a reply's due time only moves later,
//!   except by a cancel, which lowers its entry); under concurrent writers a
//!   hint can be late, never early, so a sweep can only reap later than the
//!   model would, bounded by the lease. Nodes that watch a reply or a user
//!   do not depend on the sweep: they reap and check at the due times
//!   themselves.
//! - The order of a sweep's notices across conversations (the model's is key
//!   order). The differential test holds every reply and every other notice
//!   to the model's, in order.
//!
//! ## Map of the crate
//!
//! | module | what it holds |
//! | --- | --- |
//! | this file | [`RedisStore`], the epoch, [`RedisStore::apply`]: one operation, start to end |
//! | `keys` | the key and channel names of the table above |
//! | `plan` | each operation as one call of the script: its arguments, and how to read its answer |
//! | `decode` | reading the script's answers into [`StoreReply`] |
//! | `sweep` | [`StoreOp::Sweep`] and the two sweep indexes (`P:{i:N}:live`, `P:{i:N}:presence`, 16 partitions each) |
//! | `caps` | the caps' operations (admit, release, keep) on their own script |
//! | `locate` | the reply locators (register, locate): one command each |
//! | `replicas` | [`Replication`]: on a cluster, settles and cancels wait for their shard's replicas |
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::Value;
use weir_core::ids::{ConvKey, NodeId};
use weir_core::store::{
    CancelOp, Epoch, Notice, SettleOp, StoreConfig, StoreError, StoreOp, StoreReply, Topic,
};

mod caps;
mod conn;
pub use conn::RedisConn;
mod decode;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod keys;
pub use keys::slot;
mod locate;
mod plan;
mod replicas;
pub use replicas::Replication;
mod sweep;

use decode::Fields;
use plan::{Call, Target};

/// How much longer than its logical window a key lives in Redis (clock skew
/// between nodes and Redis, and time for a late reader).
pub const SLACK_MS: u64 = 60_000;

/// How long the epoch key lives without a node refreshing it.
pub const EPOCH_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "weir";

/// The store script's source.
pub const SCRIPT: &str = include_str!("lua/store.lua");

/// Why an operation has no reply.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Redis could not be reached, did not answer, or answered with an error
    /// (the operation may or may not have taken effect).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis answered something the script never returns: a bug.
    #[error("unexpected reply from the store script: {0}")]
    Protocol(String),
    /// A settle or a cancel took effect on the master, but fewer of the
    /// shard's replicas than it has confirmed it in time: a failover now
    /// could lose it (the `replicas` module).
    #[error("redis: {got} of {wanted} replicas confirmed the write in time")]
    Unreplicated {
        /// The replicas the write waited for.
        wanted: u8,
        /// The replicas that confirmed it.
        got: u8,
    },
}

impl Failure {
    /// Whether Redis refused the call as a whole for want of room: `OOM`
    /// (`used_memory` above `maxmemory` under `noeviction`) or `MISCONF`
    /// (it cannot persist, and `stop-writes-on-bgsave-error` stops writes).
    /// Redis checks both before it runs a call, so nothing was changed.
    #[must_use]
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::Redis(e) => matches!(e.code(), Some("OOM" | "MISCONF")),
            Self::Protocol(_) | Self::Unreplicated { .. } => false,
        }
    }

    /// Whether the connection should be considered broken (reconnect).
    #[must_use]
    pub fn is_connection_lost(&self) -> bool {
        match self {
            Self::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || e.is_unrecoverable_error()
            }
            Self::Protocol(_) | Self::Unreplicated { .. } => false,
        }
    }
}

/// What the core is told. A reply weir does not understand is its own bug
/// ([`StoreError::Internal`]), never "the store cannot be reached". A
/// [refusal](Failure::is_refusal) — out of memory, or unable to persist;
/// under a script it reads `OOM … script: SHA, on @user_script…` — is
/// [`StoreError::Refused`]. Every other error Redis answers with is
/// `Unavailable` (a busy or loading server, a read-only replica after a
/// failover: retrying is right).
impl From<Failure> for StoreError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Redis(_) if f.is_refusal() => Self::Refused(f.to_string()),
            Failure::Redis(_) | Failure::Unreplicated { .. } => Self::Unavailable(f.to_string()),
            Failure::Protocol(_) => Self::Internal(f.to_string()),
        }
    }
}

/// Which copy of the script a call runs: the same Lua under three
/// shebangs, so that Redis itself decides, before the script runs, whether
/// a full Redis (`used_memory` above `maxmemory`) takes the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flags {
    /// `#!lua`: refused as a whole (`OOM`, nothing changed) while Redis is
    /// full. The operations a full store refuses
    /// ([`StoreOp::is_refused_when_full`]: start, append, cancel).
    DenyOom,
    /// `#!lua flags=allow-oom`: runs, writes included, even while Redis is
    /// full: settle, renew, reap, presence, the sweep — what ends or keeps
    /// a reply, so a reply can always be ended.
    AllowOom,
    /// No shebang (Redis's compatibility mode): the reads (snapshot, read).
    /// While Redis is full they run (their only writes drop expired records,
    /// with commands Redis allows then); while it refuses every write
    /// (`MISCONF`) they still run unless they have an expired record to drop.
    Plain,
}

impl Flags {
    /// The copy of the script `op` runs on.
    pub(crate) fn of(op: &StoreOp) -> Self {
        if op.is_refused_when_full() {
            Self::DenyOom
        } else if matches!(op, StoreOp::Snapshot(_) | StoreOp::Read(_)) {
            Self::Plain
        } else {
            Self::AllowOom
        }
    }
}

/// The Redis store: settings, key names and the script. Cheap to share
/// (`Clone`); holds no connection.
#[derive(Debug, Clone)]
pub struct RedisStore {
    prefix: String,
    config: StoreConfig,
    retention_ms: u64,
    scripts: Arc<Scripts>,
    /// Replicas that settles and cancels wait for (a Redis Cluster).
    replication: Option<Replication>,
}

/// The scripts, shared by every clone of a [`RedisStore`].
#[derive(Debug)]
struct Scripts {
    /// The store script under each of its shebangs ([`Flags`]).
    deny_oom: redis::Script,
    allow_oom: redis::Script,
    plain: redis::Script,
    /// The sweep index's scripts.
    unindex: redis::Script,
    index: redis::Script,
    /// The caps' script (`src/lua/caps.lua`): small writes that a full
    /// Redis still takes, so a full store does not refuse connections.
    caps: redis::Script,
}

impl RedisStore {
    /// A store under `prefix` with the model's `config` (`prefix` must hold
    /// no `{` or `}`, or Redis Cluster would hash on it: `weir serve` allows
    /// `A-Z a-z 0-9 _ - . :`). `retention_ms`: how
    /// long a conversation's history is kept after its last message (0:
    /// forever; it is always capped at `config.history_limit` messages).
    #[must_use]
    pub fn new(prefix: &str, config: StoreConfig, retention_ms: u64) -> Self {
        Self {
            prefix: prefix.to_owned(),
            config,
            retention_ms,
            scripts: Arc::new(Scripts {
                deny_oom: redis::Script::new(&format!("#!lua\n{SCRIPT}")),
                allow_oom: redis::Script::new(&format!("#!lua flags=allow-oom\n{SCRIPT}")),
                plain: redis::Script::new(SCRIPT),
                unindex: redis::Script::new(sweep::UNINDEX),
                index: redis::Script::new(sweep::INDEX),
                caps: redis::Script::new(&format!("#!lua flags=allow-oom\n{}", caps::CAPS_SCRIPT)),
            }),
            replication: None,
        }
    }

    /// This store's settles and cancels, sent with
    /// [`apply_replicated`](Self::apply_replicated), wait until the replicas
    /// `replication` lists for their slot have them (see [`Replication`]).
    /// Give that a connection of its own: while a `WAIT` blocks, Redis holds
    /// the connection's later commands.
    #[must_use]
    pub fn with_replication(mut self, replication: Replication) -> Self {
        self.replication = Some(replication);
        self
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
        // Not pipelined with the rest: a refusal of a pipeline's command
        // comes back without its code, and this `SET` is how a node learns
        // that Redis refuses writes, and that it accepts them again.
        let _: Value = redis::cmd("SET")
            .arg(&key)
            .arg(candidate.to_string())
            .arg("NX")
            .arg("PX")
            .arg(ttl)
            .query_async(conn)
            .await?;
        let (value, _): (Option<String>, Value) = redis::pipe()
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

    /// Reads the store's epoch without writing anything: what
    /// [`establish_epoch`](Self::establish_epoch) falls back on when Redis
    /// refuses writes ([`Failure::is_refusal`]) — the key is there, or the
    /// store cannot be used at all. Refreshes its expiry (Redis allows that
    /// while full).
    ///
    /// # Errors
    /// Redis is unreachable, or the key holds something else.
    pub async fn read_epoch<C: ConnectionLike>(
        &self,
        conn: &mut C,
    ) -> Result<Option<Epoch>, Failure> {
        let key = self.epoch_key();
        let (value, _): (Option<String>, Value) = redis::pipe()
            .cmd("GET")
            .arg(&key)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(epoch_ttl_ms())
            .query_async(conn)
            .await?;
        value
            .map(|v| {
                v.parse()
                    .map_err(|_| Failure::Protocol(format!("the epoch key holds {v:?}")))
            })
            .transpose()
    }

    /// Applies one operation in `epoch` (the value
    /// [`establish_epoch`](Self::establish_epoch) returned on this
    /// connection). Its notices are published by the script itself.
    ///
    /// # Errors
    /// Redis is unreachable or timed out ([`Failure::Redis`]): the operation
    /// may or may not have taken effect. The script answered something it
    /// never returns ([`Failure::Protocol`]): a bug.
    pub async fn apply<C: ConnectionLike>(
        &self,
        conn: &mut C,
        epoch: Epoch,
        op: StoreOp,
    ) -> Result<StoreReply, Failure> {
        self.apply_fenced(conn, epoch, op, None).await
    }

    /// [`Self::apply`], and for a settle or a cancel of a store made
    /// [`with_replication`](Self::with_replication), then waits until the
    /// replicas of its slot have it ([`Replication`]).
    ///
    /// # Errors
    ///
    /// As [`Self::apply`]; [`Failure::Unreplicated`] when the replicas did
    /// not confirm in time (the operation took effect on the master).
    pub async fn apply_replicated<C: ConnectionLike>(
        &self,
        conn: &mut C,
        epoch: Epoch,
        op: StoreOp,
    ) -> Result<StoreReply, Failure> {
        let wait = match (&self.replication, &op) {
            (
                Some(r),
                StoreOp::Settle(SettleOp { conv, .. }) | StoreOp::Cancel(CancelOp { conv, .. }),
            ) => {
                let fence = self.fence_key(conv);
                let replicas = r.replicas_of(&fence);
                (replicas > 0).then(|| Confirm {
                    fence,
                    replicas,
                    wait: r.wait(),
                })
            }
            _ => None,
        };
        let Some(confirm) = wait else {
            return self.apply(conn, epoch, op).await;
        };
        let settle = match &op {
            StoreOp::Settle(s) => Some((s.conv.clone(), s.message_id.clone(), s.usage)),
            _ => None,
        };
        let reply = match self.apply_fenced(conn, epoch, op, Some(confirm)).await {
            Ok(reply) => reply,
            Err(e @ Failure::Unreplicated { .. }) => {
                // Most likely the shard changed (a failover, whose new
                // master has no replica yet): learn it now, not at the next
                // periodic read, before the write is sent again.
                if let Some(r) = &self.replication {
                    let _ = r.refresh(conn).await;
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        // The settled notice the script held back (also when this call
        // found the reply already settled: it is a settle sent again after
        // one whose replicas did not confirm, and whose notice was held).
        if let (
            Some((conv, message_id, usage)),
            StoreReply::Settled {
                outcome, final_seq, ..
            },
        ) = (settle, &reply)
        {
            let notice = Notice::Settled {
                conv: conv.clone(),
                message_id,
                outcome: outcome.clone(),
                final_seq: *final_seq,
                usage,
            };
            self.publish(conn, &Topic::Conv(conv), &notice).await;
        }
        Ok(reply)
    }

    async fn apply_fenced<C: ConnectionLike>(
        &self,
        conn: &mut C,
        epoch: Epoch,
        op: StoreOp,
        confirm: Option<Confirm>,
    ) -> Result<StoreReply, Failure> {
        let t = &self.config.timers;
        let flags = Flags::of(&op);
        let call = match op {
            StoreOp::Sweep(op) => return self.sweep(conn, epoch, op.at_ms).await,
            StoreOp::PresenceRefresh(op) => {
                // One call per user: each user's keys have their own hash tag.
                for call in Call::presence_refresh(op) {
                    Fields::reply(self.invoke(conn, &call, epoch, flags).await?)?
                        .tag("refreshed")?;
                }
                return Ok(StoreReply::Refreshed);
            }
            StoreOp::Admit(op) => return self.admit(conn, op).await,
            StoreOp::CapRelease(op) => return self.cap_release(conn, op).await,
            StoreOp::CapKeep(op) => return self.cap_keep(conn, op).await,
            StoreOp::Register(op) => return self.register(conn, op).await,
            StoreOp::Locate(op) => return self.locate(conn, op).await,
            StoreOp::Delete(op) => Call::delete(op),
            StoreOp::PresenceJoin(op) => Call::presence_join(op),
            StoreOp::PresenceLeave(op) => Call::presence_leave(op),
            StoreOp::PresenceCheck(op) => Call::presence_check(op.user, op.at_ms),
            StoreOp::Snapshot(op) => Call::snapshot(op),
            StoreOp::Start(op) => Call::start(op, epoch, t, self.config.idempotency_ttl_ms)?,
            StoreOp::Append(op) => Call::append(op),
            StoreOp::Cancel(op) => Call::cancel(op, t),
            StoreOp::Settle(op) => Call::settle(op)?,
            StoreOp::Renew(op) => Call::renew(op),
            StoreOp::Reap(op) => Call::reap(op),
            StoreOp::Read(op) => Call::read(op),
        };
        let value = self
            .invoke_fenced(conn, &call, epoch, flags, confirm)
            .await?;
        let plan::Decoded {
            reply,
            due_ms,
            owner,
        } = call.then.decode(value, epoch)?;
        if let (Some(owner), Target::Conv(conv)) = (owner, &call.target) {
            self.tell_owner(conn, owner, conv, &reply).await;
        }
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

    /// Tells the node producing a reply that it was cancelled: on the node's
    /// own channel, which is in another slot than the conversation's, so
    /// after the script rather than from it. A notice (a hint, like every
    /// notice): the owner also learns it from its next append or renew.
    async fn tell_owner<C: ConnectionLike>(
        &self,
        conn: &mut C,
        owner: NodeId,
        conv: &ConvKey,
        reply: &StoreReply,
    ) {
        let StoreReply::Cancel {
            message_id: Some(message_id),
            final_seq: Some(final_seq),
            ..
        } = reply
        else {
            return;
        };
        let notice = Notice::CancelRequested {
            conv: conv.clone(),
            message_id: message_id.clone(),
            final_seq: *final_seq,
        };
        self.publish(conn, &Topic::Node(owner), &notice).await;
    }

    /// Publishes `notice` on `topic`'s channel (a hint: a failure is not
    /// the operation's).
    async fn publish<C: ConnectionLike>(&self, conn: &mut C, topic: &Topic, notice: &Notice) {
        let Ok(payload) = serde_json::to_string(notice) else {
            return;
        };
        let _ignored: Result<Value, _> = redis::cmd("SPUBLISH")
            .arg(self.channel(topic))
            .arg(payload)
            .query_async(conn)
            .await;
    }

    /// Runs one call of the script, on its copy `flags`.
    async fn invoke<C: ConnectionLike>(
        &self,
        conn: &mut C,
        call: &Call,
        epoch: Epoch,
        flags: Flags,
    ) -> Result<Value, Failure> {
        self.invoke_fenced(conn, call, epoch, flags, None).await
    }

    /// One call of the script. With `confirm`, the conversation's fence key
    /// goes as `KEYS[2]` (the call then always replicates) and `WAIT` right
    /// after it, in one pipeline: the redis crate sends a pipeline on one
    /// connection and, when it retries, retries it whole, so the `WAIT`
    /// always counts the call it follows, on the master that ran it.
    async fn invoke_fenced<C: ConnectionLike>(
        &self,
        conn: &mut C,
        call: &Call,
        epoch: Epoch,
        flags: Flags,
        confirm: Option<Confirm>,
    ) -> Result<Value, Failure> {
        let script = match flags {
            Flags::DenyOom => &self.scripts.deny_oom,
            Flags::AllowOom => &self.scripts.allow_oom,
            Flags::Plain => &self.scripts.plain,
        };
        let mut keys = Vec::with_capacity(2);
        let mut args = Vec::with_capacity(10 + call.args.len());
        args.push(call.op.to_owned());
        args.push(call.at_ms.to_string());
        match &call.target {
            Target::Conv(conv) => {
                let t = &self.config.timers;
                keys.push(self.conv_key(conv));
                args.extend([
                    to_json(conv)?,
                    t.lease_ttl_ms.to_string(),
                    t.cancel_deadline_ms.to_string(),
                    t.grace_ms.to_string(),
                    self.config.history_limit.to_string(),
                    self.retention_ms.to_string(),
                    SLACK_MS.to_string(),
                    epoch.to_string(),
                ]);
            }
            Target::Presence(user) => {
                let t = &self.config.presence;
                keys.push(self.presence_key(user));
                args.extend([
                    user.as_str().to_owned(),
                    t.debounce_ms.to_string(),
                    t.entry_ttl_ms.to_string(),
                    SLACK_MS.to_string(),
                    self.channel(&Topic::User(user.clone())),
                ]);
            }
        }
        args.extend(call.args.iter().cloned());
        let Some(confirm) = confirm else {
            let mut inv = script.prepare_invoke();
            for k in keys {
                inv.key(k);
            }
            for a in args {
                inv.arg(a);
            }
            return Ok(inv.invoke_async(conn).await?);
        };
        keys.push(confirm.fence);
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha
            .arg(script.get_hash())
            .arg(keys.len())
            .arg(&keys)
            .arg(&args);
        let wait_ms = u64::try_from(confirm.wait.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut pipe = redis::pipe();
        pipe.add_command(evalsha)
            .cmd("WAIT")
            .arg(confirm.replicas)
            .arg(wait_ms);
        let mut loaded = false;
        loop {
            match pipe.query_async::<(Value, i64)>(conn).await {
                Ok((value, got)) if got >= i64::from(confirm.replicas) => return Ok(value),
                Ok((_, got)) => {
                    return Err(Failure::Unreplicated {
                        wanted: confirm.replicas,
                        got: u8::try_from(got.max(0)).unwrap_or(u8::MAX),
                    })
                }
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
                        && !loaded =>
                {
                    script.load_async(conn).await?;
                    loaded = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// What a deciding write waits for: `WAIT replicas wait` after a call that
/// also wrote `fence` (the `replicas` module).
#[derive(Debug, Clone)]
struct Confirm {
    fence: String,
    replicas: u8,
    wait: Duration,
}

fn epoch_ttl_ms() -> u64 {
    u64::try_from(EPOCH_TTL.as_millis()).unwrap_or(u64::MAX)
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String, Failure> {
    serde_json::to_string(v).map_err(|e| Failure::Protocol(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_not_understood_is_internal_not_unavailable() {
        let bug = StoreError::from(Failure::Protocol("start: surprise".into()));
        assert!(matches!(bug, StoreError::Internal(ref m) if m.contains("surprise")));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let down = StoreError::from(Failure::Redis(redis::RedisError::from(io)));
        assert!(matches!(down, StoreError::Unavailable(_)));
    }
}
