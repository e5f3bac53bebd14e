//! The harness of the differential test: one connection to the Redis under
//! test (one `redis-server` or a Redis Cluster), a subscriber to every
//! channel the test's operations may publish on, and the reference model,
//! applying each step to both and comparing replies and notices.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use weir_store_redis::RedisConn;

use super::*;

/// The Redis a test runs on.
pub(crate) enum Target {
    /// One `redis-server`: its `redis://` URL.
    One(String),
    /// A Redis Cluster: its `redis-cluster://` URL (seed nodes).
    Cluster(String),
}

impl Target {
    /// A connection for commands, and one (RESP3) whose pushes go to `tx`.
    async fn connect(
        &self,
        tx: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> (RedisConn, RedisConn) {
        match self {
            Self::One(url) => {
                let client = redis::Client::open(url.as_str()).expect("redis url");
                let conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("connect to redis-server");
                let resp3 =
                    redis::Client::open(format!("{url}?protocol=resp3")).expect("redis url");
                let config = redis::AsyncConnectionConfig::new().set_push_sender(tx);
                let subscriber = resp3
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .expect("subscriber");
                (RedisConn::Single(conn), RedisConn::Single(subscriber))
            }
            Self::Cluster(url) => {
                let seeds: Vec<String> = url
                    .strip_prefix("redis-cluster://")
                    .expect("a redis-cluster:// URL")
                    .split(',')
                    .map(|seed| format!("redis://{seed}"))
                    .collect();
                let conn = redis::cluster::ClusterClient::new(seeds.clone())
                    .expect("cluster seeds")
                    .get_async_connection()
                    .await
                    .expect("connect to the cluster");
                let subscriber = redis::cluster::ClusterClient::builder(seeds)
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(tx)
                    .build()
                    .expect("cluster seeds")
                    .get_async_connection()
                    .await
                    .expect("subscribe to the cluster");
                (RedisConn::Cluster(conn), RedisConn::Cluster(subscriber))
            }
        }
    }
}

/// A sentinel channel in each slot of `channels`: Redis delivers one
/// subscriber the messages of one shard in order, and only those (on a
/// cluster the shards are different servers), so a step's notices are all
/// in once each slot's sentinel came back.
fn sentinels(channels: &[String]) -> Vec<String> {
    let mut slots: Vec<u16> = channels.iter().map(|c| weir_store_redis::slot(c)).collect();
    slots.sort_unstable();
    slots.dedup();
    slots
        .into_iter()
        .map(|slot| {
            (0_u32..)
                .map(|i| format!("weir-test:sentinel:{i}"))
                .find(|name| weir_store_redis::slot(name) == slot)
                .expect("every slot has a name")
        })
        .collect()
}

/// A reply both stores started: where, which, and its fencing token.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    conv: ConvKey,
    id: MessageId,
    token: Token,
}

pub(crate) struct Harness {
    store: RedisStore,
    conn: RedisConn,
    /// Every channel of the test's conversations, users and nodes, and the
    /// sentinels' (`SSUBSCRIBE`d: the store publishes on shard channels).
    notices: tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
    _subscriber: RedisConn,
    /// One channel in each slot of the others (see [`sentinels`]).
    sentinels: Vec<String>,
    /// How many times each step's sentinels were published.
    sentinel: u64,
    /// On a cluster, notices of different slots come from different
    /// servers, in no order between them.
    cluster: bool,
    epoch: u64,
    model: Model,
    at_ms: u64,
    pub(crate) known: Vec<Known>,
    /// Redis is full (`Op::Full`).
    full: bool,
}

impl Harness {
    /// A flushed Redis with the epoch 7, and the model beside it.
    pub(crate) async fn new(target: &Target) -> Self {
        let (tx, notices) = tokio::sync::mpsc::unbounded_channel();
        let (mut conn, mut subscriber) = target.connect(tx).await;
        let _: () = redis::cmd("FLUSHALL")
            .query_async(&mut conn)
            .await
            .expect("flushall");
        set_maxmemory(&mut conn, false).await;
        let store = RedisStore::new("weir", CONFIG, 0);
        let epoch = store.establish_epoch(&mut conn, 7).await.expect("epoch");
        assert_eq!(epoch, 7, "a flushed store takes the candidate epoch");
        let channels: Vec<String> = (0..CONVS.len())
            .map(|i| store.channel(&Topic::Conv(conv(i))))
            .chain(USERS.iter().map(|u| store.channel(&Topic::User(uid(u)))))
            .chain((0..NODES.len()).map(|i| store.channel(&Topic::Node(node(i)))))
            .collect();
        let sentinels = sentinels(&channels);
        for channel in channels.iter().chain(&sentinels) {
            // One channel per command: the redis crate matches each
            // confirmation to a command (and on a cluster, routes it to
            // the master of the channel's slot).
            match &mut subscriber {
                RedisConn::Single(c) => redis::cmd("SSUBSCRIBE").arg(channel).query_async(c).await,
                RedisConn::Cluster(c) => c.ssubscribe(channel).await,
            }
            .expect("ssubscribe");
        }
        Self {
            store,
            conn,
            notices,
            _subscriber: subscriber,
            sentinels,
            sentinel: 0,
            cluster: matches!(target, Target::Cluster(_)),
            epoch,
            model: Model::new(CONFIG, epoch),
            at_ms: BASE_MS,
            known: Vec::new(),
            full: false,
        }
    }

    fn pick(&self, i: usize) -> Known {
        if self.known.is_empty() {
            return Known {
                conv: conv(0),
                id: MessageId::parse("7.00000000000000ffr").expect("id"),
                token: 1,
            };
        }
        self.known[i % self.known.len()].clone()
    }

    /// The store op for an abstract step (`None`: not a store op).
    fn concrete(&mut self, op: &Op) -> Option<StoreOp> {
        let at_ms = self.at_ms;
        let token = |k: &Known, good: bool| if good { k.token } else { k.token + 1 };
        Some(match op.clone() {
            Op::Snapshot { conv: c, limit } => StoreOp::Snapshot(SnapshotOp {
                conv: conv(c),
                limit,
                at_ms,
            }),
            Op::Start {
                conv: c,
                content,
                key,
                nonce,
                owner,
                context,
            } => StoreOp::Start(StartOp {
                conv: conv(c),
                content: CONTENTS[content].to_owned(),
                client_message_id: key
                    .map(|k| ClientMessageId::parse(format!("k{k} /{{*}}:%ü")).expect("key")),
                nonce: nonce_of(nonce, at_ms),
                owner: node(owner),
                context_limit: context,
                at_ms,
            }),
            Op::Append {
                reply,
                good,
                seq,
                deltas,
            } => {
                let k = self.pick(reply);
                let last = self
                    .model
                    .stream(&k.conv, &k.id)
                    .map_or(0, |(_, d)| d.len() as u64);
                let first_seq = match seq {
                    SeqPick::Next => last + 1,
                    SeqPick::Retry => last.max(1),
                    SeqPick::Any(n) => n,
                };
                StoreOp::Append(AppendOp {
                    conv: k.conv.clone(),
                    message_id: k.id.clone(),
                    token: token(&k, good),
                    first_seq,
                    deltas: deltas.iter().map(|&d| DELTAS[d].to_owned()).collect(),
                    at_ms,
                    // Chunk timestamps on some appends, off on others: both
                    // stores keep them per chunk and list them alike.
                    at_ns: (first_seq % 2 == 0).then(|| at_ms * 1_000_000 + 123_456_789),
                })
            }
            Op::Cancel { conv: c, target } => StoreOp::Cancel(CancelOp {
                conv: conv(c),
                message_id: target.map(|t| self.pick(t).id),
                at_ms,
            }),
            Op::Settle {
                reply,
                good,
                kind,
                usage,
                ahead,
            } => {
                let k = self.pick(reply);
                let last = self
                    .model
                    .stream(&k.conv, &k.id)
                    .map_or(0, |(_, d)| d.len() as u64);
                StoreOp::Settle(SettleOp {
                    conv: k.conv.clone(),
                    message_id: k.id.clone(),
                    token: token(&k, good),
                    request: match kind {
                        0 => SettleRequest::Completed,
                        1 => SettleRequest::Failed("upstream \"broke\"".into()),
                        _ => SettleRequest::Cancelled,
                    },
                    last_seq: last + u64::from(ahead),
                    usage: usage.then_some(Usage {
                        prompt_tokens: 12,
                        completion_tokens: 34,
                    }),
                    at_ms,
                })
            }
            Op::Renew { reply, good } => {
                let k = self.pick(reply);
                StoreOp::Renew(RenewOp {
                    conv: k.conv.clone(),
                    message_id: k.id.clone(),
                    token: token(&k, good),
                    at_ms,
                })
            }
            Op::Reap { reply } => {
                let k = self.pick(reply);
                StoreOp::Reap(ReapOp {
                    conv: k.conv,
                    message_id: k.id,
                    at_ms,
                })
            }
            Op::Read { reply, after } => {
                let k = self.pick(reply);
                StoreOp::Read(ReadOp {
                    conv: k.conv,
                    message_id: k.id,
                    after_seq: after,
                    at_ms,
                })
            }
            Op::Sweep => StoreOp::Sweep(SweepOp { at_ms }),
            Op::Register { conv: c, nonce } => StoreOp::Register(RegisterOp {
                conv: conv(c),
                nonce: nonce_of(nonce, at_ms),
                at_ms,
            }),
            Op::Locate { reply, session } => {
                let k = self.pick(reply);
                StoreOp::Locate(LocateOp {
                    session: session.map_or(k.conv.session, |c| conv(c).session),
                    message_id: k.id,
                    at_ms,
                })
            }
            Op::Delete { conv: c } => StoreOp::Delete(DeleteOp {
                conv: conv(c),
                at_ms,
            }),
            Op::Join {
                user,
                node: n,
                conn,
            } => StoreOp::PresenceJoin(PresenceJoinOp {
                user: uid(USERS[user]),
                node: node(n),
                conn: ConnId(conn),
                at_ms,
            }),
            Op::Leave {
                user,
                node: n,
                conn,
            } => StoreOp::PresenceLeave(PresenceLeaveOp {
                user: uid(USERS[user]),
                node: node(n),
                conn: ConnId(conn),
                at_ms,
            }),
            Op::Refresh { node: n } => StoreOp::PresenceRefresh(PresenceRefreshOp {
                node: node(n),
                users: USERS.iter().map(|u| uid(u)).collect(),
                at_ms,
            }),
            Op::Check { user } => StoreOp::PresenceCheck(PresenceCheckOp {
                user: uid(USERS[user]),
                at_ms,
            }),
            Op::Admit {
                scope,
                streams,
                holder: h,
                limit,
                rate,
                ttl_ms,
            } => StoreOp::Admit(AdmitOp {
                scope: cap_scope(scope),
                kind: slot_kind(streams),
                holder: holder(h),
                limit,
                rate: rate.map(|(per_minute, burst)| Rate { per_minute, burst }),
                ttl_ms,
                at_ms,
            }),
            Op::CapRelease {
                scope,
                streams,
                holder: h,
            } => StoreOp::CapRelease(CapReleaseOp {
                scope: cap_scope(scope),
                kind: slot_kind(streams),
                holder: holder(h),
                at_ms,
            }),
            Op::CapKeep {
                scope,
                streams,
                ref holders,
                ttl_ms,
            } => StoreOp::CapKeep(CapKeepOp {
                scope: cap_scope(scope),
                kind: slot_kind(streams),
                holders: holders.iter().map(|h| holder(*h)).collect(),
                ttl_ms,
                at_ms,
            }),
            Op::Tick { .. } | Op::LoseEverything | Op::Full { .. } => return None,
        })
    }

    /// The notices published since the last call, up to the sentinels this
    /// call publishes (one per slot: Redis delivers one subscriber each
    /// shard's messages in order).
    async fn published(&mut self) -> Vec<(String, Notice)> {
        self.sentinel += 1;
        let mark = self.sentinel.to_string();
        for sentinel in &self.sentinels {
            let _: i64 = redis::cmd("SPUBLISH")
                .arg(sentinel)
                .arg(&mark)
                .query_async(&mut self.conn)
                .await
                .expect("publish sentinel");
        }
        let mut out = Vec::new();
        let mut back = 0;
        while back < self.sentinels.len() {
            let push = tokio::time::timeout(Duration::from_secs(5), self.notices.recv())
                .await
                .expect("a notice or the sentinel within 5 s")
                .expect("the pub/sub connection stays open");
            if push.kind != redis::PushKind::SMessage {
                continue; // a subscription's confirmation
            }
            let [channel, payload] = &push.data[..] else {
                panic!("an smessage of two parts: {push:?}");
            };
            let channel: String = redis::from_redis_value(channel.clone()).expect("channel");
            let payload: Vec<u8> = redis::from_redis_value(payload.clone()).expect("payload");
            if self.sentinels.contains(&channel) {
                back += usize::from(payload == mark.as_bytes());
                continue;
            }
            let notice = RedisStore::decode_notice(&payload).unwrap_or_else(|e| {
                panic!(
                    "undecodable notice on {channel}: {e}: {}",
                    String::from_utf8_lossy(&payload)
                )
            });
            out.push((channel, notice));
        }
        out
    }

    pub(crate) async fn step(&mut self, i: usize, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Tick { ms } => {
                self.at_ms += ms;
                return Ok(());
            }
            Op::Full { on } => {
                set_maxmemory(&mut self.conn, *on).await;
                self.full = *on;
                return Ok(());
            }
            Op::LoseEverything => {
                // Lost data and an empty Redis: not full any more.
                set_maxmemory(&mut self.conn, false).await;
                self.full = false;
                let _: () = redis::cmd("FLUSHALL")
                    .query_async(&mut self.conn)
                    .await
                    .expect("flushall");
                let candidate = self.epoch + 1;
                self.epoch = self
                    .store
                    .establish_epoch(&mut self.conn, candidate)
                    .await
                    .expect("epoch");
                prop_assert_eq!(self.epoch, candidate);
                self.model.restart(self.epoch);
                return Ok(());
            }
            _ => {}
        }
        let Some(store_op) = self.concrete(op) else {
            return Ok(());
        };
        if self.full && store_op.is_refused_when_full() {
            let got = self
                .store
                .apply(&mut self.conn, self.epoch, store_op.clone())
                .await
                .map_err(StoreError::from);
            prop_assert!(
                matches!(got, Err(StoreError::Refused(_))),
                "step {}: a full Redis must refuse {:?}, got {:?}",
                i,
                store_op,
                got
            );
            let published = self.published().await;
            prop_assert!(published.is_empty(), "step {}: {:?}", i, published);
            return Ok(());
        }
        let sweep = matches!(store_op, StoreOp::Sweep(_));
        let (want, want_published) = self.model.apply(store_op.clone());
        let got = self
            .store
            .apply(&mut self.conn, self.epoch, store_op.clone())
            .await
            .map_err(|e| TestCaseError::fail(format!("step {i} {store_op:?}: {e}")))?;
        prop_assert_eq!(&got, &want, "step {}: {:?}", i, store_op);
        let mut want_notices: Vec<(String, Notice)> = want_published
            .into_iter()
            .map(|p| (self.store.channel(&p.topic), p.notice))
            .collect();
        let mut got_notices = self.published().await;
        if self.cluster {
            // Each slot's notices in order; between slots, none.
            let slot = |n: &(String, Notice)| weir_store_redis::slot(&n.0);
            want_notices.sort_by_key(slot);
            got_notices.sort_by_key(slot);
        }
        if sweep || matches!(store_op, StoreOp::Cancel(_)) {
            // The model sweeps conversations in key order, Redis in index
            // order; a cancel's request to the owner is published after the
            // script (its node's channel is in another slot).
            want_notices.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
            got_notices.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        }
        prop_assert_eq!(
            &got_notices,
            &want_notices,
            "notices of step {}: {:?}",
            i,
            store_op
        );
        if let StoreReply::Started {
            message_id, token, ..
        } = &got
        {
            if let Some(conv) = store_op.conv() {
                self.known.push(Known {
                    conv: conv.clone(),
                    id: message_id.clone(),
                    token: *token,
                });
            }
        }
        Ok(())
    }

    /// Runs `ops` in order, panicking at the first difference from the
    /// model (the hand-written cases).
    pub(crate) async fn run(&mut self, ops: &[Op]) {
        for (i, op) in ops.iter().enumerate() {
            self.step(i, op).await.unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Every key but retained history carries a TTL.
    pub(crate) async fn assert_every_key_expires(&mut self) -> Result<(), TestCaseError> {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("weir:*")
            .query_async(&mut self.conn)
            .await
            .expect("keys");
        for key in keys {
            if key.ends_with(":hist") {
                continue;
            }
            let ttl: i64 = redis::cmd("PTTL")
                .arg(&key)
                .query_async(&mut self.conn)
                .await
                .expect("pttl");
            prop_assert!(ttl > 0, "key {} has no expiry (PTTL {})", key, ttl);
        }
        Ok(())
    }
}

/// Makes Redis full (`maxmemory 1`: below any use, `noeviction`) or not.
async fn set_maxmemory(conn: &mut RedisConn, full: bool) {
    let limit = if full { "1" } else { "0" };
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .arg("maxmemory")
        .arg(limit)
        .query_async(conn)
        .await
        .expect("config set maxmemory");
}
