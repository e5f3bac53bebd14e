//! The differential proof of the Redis store: random sequences of store
//! operations are applied both to the core's reference [`Model`] and to the
//! Lua script of `weir-store-redis` on a real `redis-server` (started on a
//! free loopback port), and every reply must be equal — and so must every
//! notice the operation published, channel by channel, in order.
//!
//! The sequences cover every operation (snapshot, start with and without
//! idempotency keys and repeated nonces, append with right and wrong tokens,
//! retried and gapped seqs, cancel with and without id, settle of each kind
//! with and without usage, renew, reap, read, sweep, presence join / leave /
//! refresh / check, reply locators (register, locate), delete of a
//! conversation's history), time passing across leases, cancel deadlines, grace
//! windows, debounces and entry expiries, and Redis losing everything (a new
//! epoch), and Redis full (`maxmemory` below its use, `noeviction`): then
//! the operations a full store refuses
//! ([`StoreOp::is_refused_when_full`]) must be refused as a whole —
//! `StoreError::Refused`, no notice, nothing changed (the model does not
//! apply them) — and every other one must still answer as the model does.
//! Strings carry quotes, backslashes, newlines, `/`, non-ASCII and
//! emoji, and a user text that looks like a stored message. Ids go into key
//! and channel names, so user, session, node and idempotency ids carry every
//! character that could break a name (`/ : { } * %`, spaces, non-ASCII, and
//! `%75a`, the escape of `ua`), beside plain ones.
//!
//! After each case every key the script made must carry a TTL, except
//! retained history (invariant 7's part in Redis).
//!
//! Cases: 48 by default, `WEIR_PROPTEST_CASES` for more.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use redis::aio::MultiplexedConnection;
use weir_core::caps::Rate;
use weir_core::ids::{ClientMessageId, ConnId, ConvKey, MessageId, NodeId, SessionId, UserId};
use weir_core::presence::PresenceTimers;
use weir_core::store::{
    AdmitOp, AppendOp, CancelOp, CapKeepOp, CapReleaseOp, CapScope, DeleteOp, LocateOp, Model,
    Notice, PresenceCheckOp, PresenceJoinOp, PresenceLeaveOp, PresenceRefreshOp, ReadOp, ReapOp,
    RegisterOp, RenewOp, SettleOp, SlotKind, SnapshotOp, StartOp, StoreConfig, StoreError, StoreOp,
    StoreReply, SweepOp, Token, Topic,
};
use weir_core::stream::{SettleRequest, StreamTimers};
use weir_core::wire::Usage;
use weir_store_redis::RedisStore;
use weir_tests::RedisServer;

const BASE_MS: u64 = 1_700_000_000_000;

const CONFIG: StoreConfig = StoreConfig {
    timers: StreamTimers {
        lease_ttl_ms: 1_000,
        cancel_deadline_ms: 400,
        grace_ms: 1_500,
    },
    presence: PresenceTimers {
        debounce_ms: 300,
        entry_ttl_ms: 1_200,
    },
    history_limit: 4,
    idempotency_ttl_ms: 2_500,
};

const CONVS: [(&str, &str); 5] = [
    ("ua", "s1"),
    ("ua", "s2"),
    ("org/alice", "s1"),
    ("a:{b", "c:1"),
    ("%75a }*ü😀", "s1"),
];
const USERS: [&str; 4] = ["ua", "a:{b", "org/alice", "%75a }*ü😀"];
const NODES: [&str; 2] = ["n1", "n:2.x-y_z"];
/// The channel each step's sentinel is published on.
const SENTINEL: &str = "weir:{sentinel}:ch";
const CONTENTS: [&str; 5] = [
    "hi",
    "",
    "quote\"s and \\ back",
    "ünïcödé 😀 /slash/",
    "{\"message_id\":\"1.0000000000000001u\",\"role\":\"user\"}",
];
const DELTAS: [&str; 8] = ["a", "hé", "\"q\"", "b\\s", "new\nline", "/", "😀", " "];

#[derive(Debug, Clone)]
enum SeqPick {
    Next,
    Retry,
    Any(u64),
}

#[derive(Debug, Clone)]
enum Op {
    Snapshot {
        conv: usize,
        limit: usize,
    },
    Start {
        conv: usize,
        content: usize,
        key: Option<u8>,
        nonce: u8,
        owner: usize,
        context: usize,
    },
    Append {
        reply: usize,
        good: bool,
        seq: SeqPick,
        deltas: Vec<usize>,
    },
    Cancel {
        conv: usize,
        target: Option<usize>,
    },
    Settle {
        reply: usize,
        good: bool,
        kind: u8,
        usage: bool,
    },
    Renew {
        reply: usize,
        good: bool,
    },
    Reap {
        reply: usize,
    },
    Read {
        reply: usize,
        after: u64,
    },
    Sweep,
    Join {
        user: usize,
        node: usize,
        conn: u64,
    },
    Leave {
        user: usize,
        node: usize,
        conn: u64,
    },
    Refresh {
        node: usize,
    },
    Check {
        user: usize,
    },
    Tick {
        ms: u64,
    },
    LoseEverything,
    /// Redis full (`maxmemory 1`) or not (`maxmemory 0`).
    Full {
        on: bool,
    },
    /// A cap's slot and/or chat token (`scope`: a user of `USERS`, then an
    /// address of `ADDRS`).
    Admit {
        scope: usize,
        streams: bool,
        holder: usize,
        limit: u32,
        rate: Option<(u32, u32)>,
        ttl_ms: u64,
    },
    CapRelease {
        scope: usize,
        streams: bool,
        holder: usize,
    },
    CapKeep {
        scope: usize,
        streams: bool,
        holders: Vec<usize>,
        ttl_ms: u64,
    },
    /// A reply locator, with a nonce as `Start` picks them.
    Register {
        conv: usize,
        nonce: u8,
    },
    /// A known reply looked up in its own session (`None`) or another.
    Locate {
        reply: usize,
        session: Option<usize>,
    },
    Delete {
        conv: usize,
    },
}

/// A `Start`'s nonce: small ones repeat (the store refuses a repeated one);
/// 5 stands for a fresh random one.
fn nonce_of(pick: u8, at_ms: u64) -> u64 {
    if pick == 5 {
        at_ms ^ 0x5eed_0000_0000_0000
    } else {
        u64::from(pick)
    }
}

/// Client addresses for the caps' address scope.
const ADDRS: [&str; 2] = ["10.0.0.1", "2001:db8::7"];

fn cap_scope(i: usize) -> CapScope {
    match USERS.get(i) {
        Some(u) => CapScope::User(uid(u)),
        None => CapScope::Ip(
            ADDRS[(i - USERS.len()) % ADDRS.len()]
                .parse()
                .expect("address"),
        ),
    }
}

fn slot_kind(streams: bool) -> SlotKind {
    if streams {
        SlotKind::Streams
    } else {
        SlotKind::Connections
    }
}

fn holder(i: usize) -> String {
    format!("{}|{i}", NODES[i % NODES.len()])
}

fn op() -> impl Strategy<Value = Op> {
    let conv = 0..CONVS.len();
    let reply = 0usize..6;
    let seq = prop_oneof![
        4 => Just(SeqPick::Next),
        1 => Just(SeqPick::Retry),
        1 => (0u64..6).prop_map(SeqPick::Any),
    ];
    prop_oneof![
        2 => (conv.clone(), 0usize..6).prop_map(|(conv, limit)| Op::Snapshot { conv, limit }),
        5 => (conv.clone(), 0..CONTENTS.len(), prop::option::weighted(0.4, 0u8..2), 0u8..6, 0..NODES.len(), 0usize..6)
            .prop_map(|(conv, content, key, nonce, owner, context)| Op::Start { conv, content, key, nonce, owner, context }),
        8 => (reply.clone(), prop::bool::weighted(0.9), seq, prop::collection::vec(0..DELTAS.len(), 1..4))
            .prop_map(|(reply, good, seq, deltas)| Op::Append { reply, good, seq, deltas }),
        3 => (conv, prop::option::weighted(0.6, reply.clone())).prop_map(|(conv, target)| Op::Cancel { conv, target }),
        3 => (reply.clone(), prop::bool::weighted(0.9), 0u8..3, any::<bool>())
            .prop_map(|(reply, good, kind, usage)| Op::Settle { reply, good, kind, usage }),
        2 => (reply.clone(), prop::bool::weighted(0.8)).prop_map(|(reply, good)| Op::Renew { reply, good }),
        2 => reply.clone().prop_map(|reply| Op::Reap { reply }),
        2 => (reply, 0u64..6).prop_map(|(reply, after)| Op::Read { reply, after }),
        1 => Just(Op::Sweep),
        2 => (0..USERS.len(), 0..NODES.len(), 1u64..3).prop_map(|(user, node, conn)| Op::Join { user, node, conn }),
        2 => (0..USERS.len(), 0..NODES.len(), 1u64..3).prop_map(|(user, node, conn)| Op::Leave { user, node, conn }),
        1 => (0..NODES.len()).prop_map(|node| Op::Refresh { node }),
        1 => (0..USERS.len()).prop_map(|user| Op::Check { user }),
        4 => prop_oneof![0u64..200, 200u64..3_000].prop_map(|ms| Op::Tick { ms }),
        1 => Just(Op::LoseEverything),
        1 => any::<bool>().prop_map(|on| Op::Full { on }),
        4 => (
            0..USERS.len() + ADDRS.len(),
            any::<bool>(),
            0usize..4,
            0u32..4,
            prop::option::weighted(0.5, (prop::sample::select(vec![1u32, 7, 60, 600]), 1u32..4)),
            prop::sample::select(vec![500u64, 2_000, 5_000]),
        )
            .prop_map(|(scope, streams, holder, limit, rate, ttl_ms)| Op::Admit { scope, streams, holder, limit, rate, ttl_ms }),
        2 => (0..USERS.len() + ADDRS.len(), any::<bool>(), 0usize..4)
            .prop_map(|(scope, streams, holder)| Op::CapRelease { scope, streams, holder }),
        1 => (0..USERS.len() + ADDRS.len(), any::<bool>(), prop::collection::vec(0usize..5, 0..4), prop::sample::select(vec![500u64, 2_000, 5_000]))
            .prop_map(|(scope, streams, holders, ttl_ms)| Op::CapKeep { scope, streams, holders, ttl_ms }),
        2 => (0..CONVS.len(), 0u8..6).prop_map(|(conv, nonce)| Op::Register { conv, nonce }),
        2 => (0usize..6, prop::option::weighted(0.2, 0..CONVS.len()))
            .prop_map(|(reply, session)| Op::Locate { reply, session }),
        1 => (0..CONVS.len()).prop_map(|conv| Op::Delete { conv }),
    ]
}

fn conv(i: usize) -> ConvKey {
    let (u, s) = CONVS[i];
    ConvKey::new(uid(u), SessionId::parse(s).expect("session"))
}

fn uid(u: &str) -> UserId {
    UserId::parse(u).expect("user")
}

fn node(i: usize) -> NodeId {
    NodeId::parse(NODES[i]).expect("node")
}

/// A reply both stores started: where, which, and its fencing token.
#[derive(Debug, Clone)]
struct Known {
    conv: ConvKey,
    id: MessageId,
    token: Token,
}

struct Harness {
    store: RedisStore,
    conn: MultiplexedConnection,
    /// Every channel of the test's conversations, users and nodes, and the
    /// sentinel's (`SSUBSCRIBE`d: the store publishes on shard channels).
    notices: tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
    _subscriber: MultiplexedConnection,
    sentinel: u64,
    epoch: u64,
    model: Model,
    at_ms: u64,
    known: Vec<Known>,
    /// Redis is full (`Op::Full`).
    full: bool,
}

impl Harness {
    async fn new(url: &str) -> Self {
        let client = redis::Client::open(url).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis-server");
        let _: () = redis::cmd("FLUSHALL")
            .query_async(&mut conn)
            .await
            .expect("flushall");
        set_maxmemory(&mut conn, false).await;
        let store = RedisStore::new("weir", CONFIG, 0);
        let epoch = store.establish_epoch(&mut conn, 7).await.expect("epoch");
        assert_eq!(epoch, 7, "a flushed store takes the candidate epoch");
        let (tx, notices) = tokio::sync::mpsc::unbounded_channel();
        let resp3 = redis::Client::open(format!("{url}?protocol=resp3")).expect("redis url");
        let config = redis::AsyncConnectionConfig::new().set_push_sender(tx);
        let mut subscriber = resp3
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .expect("subscriber");
        let channels = (0..CONVS.len())
            .map(|i| store.channel(&Topic::Conv(conv(i))))
            .chain(USERS.iter().map(|u| store.channel(&Topic::User(uid(u)))))
            .chain((0..NODES.len()).map(|i| store.channel(&Topic::Node(node(i)))))
            .chain([SENTINEL.to_owned()]);
        for channel in channels {
            // One channel per command: the redis crate matches each
            // confirmation to a command.
            let _: () = redis::cmd("SSUBSCRIBE")
                .arg(&channel)
                .query_async(&mut subscriber)
                .await
                .expect("ssubscribe");
        }
        Self {
            store,
            conn,
            notices,
            _subscriber: subscriber,
            sentinel: 0,
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
            } => {
                let k = self.pick(reply);
                StoreOp::Settle(SettleOp {
                    conv: k.conv.clone(),
                    message_id: k.id.clone(),
                    token: token(&k, good),
                    request: match kind {
                        0 => SettleRequest::Completed,
                        1 => SettleRequest::Failed("upstream \"broke\"".into()),
                        _ => SettleRequest::Cancelled,
                    },
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

    /// The notices published since the last call, up to a sentinel this
    /// call publishes (Redis delivers one subscriber's messages in order).
    async fn published(&mut self) -> Vec<(String, Notice)> {
        self.sentinel += 1;
        let mark = self.sentinel.to_string();
        let _: i64 = redis::cmd("SPUBLISH")
            .arg(SENTINEL)
            .arg(&mark)
            .query_async(&mut self.conn)
            .await
            .expect("publish sentinel");
        let mut out = Vec::new();
        loop {
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
            if channel == SENTINEL {
                if payload == mark.as_bytes() {
                    return out;
                }
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
    }

    async fn step(&mut self, i: usize, op: &Op) -> Result<(), TestCaseError> {
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
    async fn run(&mut self, ops: &[Op]) {
        for (i, op) in ops.iter().enumerate() {
            self.step(i, op).await.unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Every key but retained history carries a TTL.
    async fn assert_every_key_expires(&mut self) -> Result<(), TestCaseError> {
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

fn cases() -> u32 {
    std::env::var("WEIR_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Makes Redis full (`maxmemory 1`: below any use, `noeviction`) or not.
async fn set_maxmemory(conn: &mut MultiplexedConnection, full: bool) {
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

/// The property. A plain test around proptest's runner rather than the
/// `proptest!` macro, so that the `redis-server` it starts belongs to the
/// test and is stopped when it ends (also when it fails).
#[test]
fn redis_scripts_answer_exactly_as_the_reference_model() {
    let server = RedisServer::start();
    let url = server.url();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 2_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&prop::collection::vec(op(), 1..80), |ops| {
        runtime().block_on(async {
            let mut h = Harness::new(&url).await;
            for (i, op) in ops.iter().enumerate() {
                h.step(i, op).await?;
            }
            // Let every window pass, sweep, and look again: still equal.
            h.step(ops.len(), &Op::Tick { ms: 10_000 }).await?;
            h.step(ops.len() + 1, &Op::Sweep).await?;
            for c in 0..CONVS.len() {
                h.step(ops.len() + 2, &Op::Snapshot { conv: c, limit: 10 })
                    .await?;
            }
            h.assert_every_key_expires().await
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The seed front end's path (`POST /api/chat`, `POST /api/cancel` without a
/// user, `DELETE /api/history`): a registered reply found from its session
/// and id, in its own session and not in another; delete refused while it
/// streams, then clearing everything once it settled; the fencing tokens
/// starting again; a locator outliving nothing past its window.
#[test]
fn a_located_reply_cancelled_then_its_history_deleted_matches_the_model() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let mut h = Harness::new(&server.url()).await;
        let start = |conv, nonce| Op::Start {
            conv,
            content: 0,
            key: None,
            nonce,
            owner: 0,
            context: 4,
        };
        let ops = [
            Op::Register { conv: 4, nonce: 2 },
            start(4, 2),
            Op::Locate {
                reply: 0,
                session: None,
            },
            Op::Locate {
                reply: 0,
                session: Some(3),
            },
            Op::Delete { conv: 4 },
            Op::Append {
                reply: 0,
                good: true,
                seq: SeqPick::Next,
                deltas: vec![1, 6],
            },
            Op::Cancel {
                conv: 4,
                target: Some(0),
            },
            Op::Delete { conv: 4 },
            Op::Settle {
                reply: 0,
                good: true,
                kind: 0,
                usage: false,
            },
            Op::Delete { conv: 4 },
            Op::Snapshot { conv: 4, limit: 5 },
            Op::Read { reply: 0, after: 0 },
            Op::Delete { conv: 4 },
            Op::Register { conv: 4, nonce: 3 },
            start(4, 3),
            Op::Delete { conv: 0 },
            // A reply whose owner is gone is reaped by the delete.
            Op::Tick { ms: 1_100 },
            Op::Delete { conv: 4 },
            Op::Tick { ms: 2_000 },
            Op::Locate {
                reply: 1,
                session: None,
            },
            Op::Sweep,
        ];
        h.run(&ops).await;
        h.assert_every_key_expires()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });
}

/// A hand-written sequence through the main path, so a failure of the basics
/// reads plainly (and the property has a known-good anchor).
#[test]
fn a_reply_started_streamed_cancelled_and_settled_matches_the_model() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let mut h = Harness::new(&server.url()).await;
        let ops = [
            Op::Join {
                user: 0,
                node: 0,
                conn: 1,
            },
            Op::Start {
                conv: 0,
                content: 3,
                key: Some(1),
                nonce: 5,
                owner: 0,
                context: 4,
            },
            Op::Start {
                conv: 0,
                content: 0,
                key: Some(1),
                nonce: 5,
                owner: 0,
                context: 4,
            },
            Op::Append {
                reply: 0,
                good: true,
                seq: SeqPick::Next,
                deltas: vec![0, 1, 2],
            },
            Op::Append {
                reply: 0,
                good: true,
                seq: SeqPick::Retry,
                deltas: vec![3, 4],
            },
            Op::Append {
                reply: 0,
                good: false,
                seq: SeqPick::Next,
                deltas: vec![5],
            },
            Op::Read { reply: 0, after: 1 },
            Op::Snapshot { conv: 0, limit: 5 },
            Op::Cancel {
                conv: 0,
                target: None,
            },
            Op::Append {
                reply: 0,
                good: true,
                seq: SeqPick::Next,
                deltas: vec![6],
            },
            Op::Renew {
                reply: 0,
                good: true,
            },
            Op::Settle {
                reply: 0,
                good: true,
                kind: 0,
                usage: true,
            },
            Op::Cancel {
                conv: 0,
                target: Some(0),
            },
            Op::Read { reply: 0, after: 0 },
            Op::Leave {
                user: 0,
                node: 0,
                conn: 1,
            },
            Op::Tick { ms: 350 },
            Op::Check { user: 0 },
            Op::Start {
                conv: 1,
                content: 4,
                key: None,
                nonce: 1,
                owner: 1,
                context: 2,
            },
            Op::Tick { ms: 2_000 },
            Op::Sweep,
            Op::Snapshot { conv: 1, limit: 5 },
            Op::LoseEverything,
            Op::Read { reply: 0, after: 0 },
        ];
        h.run(&ops).await;
        h.assert_every_key_expires()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });
}

/// The probe's two hostile users by hand: `org/alice`'s reply, its owner
/// gone, is reaped by a sweep (the sweep reads the conversation back from
/// its index entry); a cancel of `a:{b`'s reply goes to the owner node's
/// channel; presence of both on their own channels.
#[test]
fn replies_and_presence_of_hostile_user_ids_match_the_model() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let mut h = Harness::new(&server.url()).await;
        let ops = [
            Op::Join {
                user: 2,
                node: 1,
                conn: 1,
            },
            Op::Start {
                conv: 2,
                content: 0,
                key: Some(1),
                nonce: 1,
                owner: 1,
                context: 4,
            },
            Op::Start {
                conv: 3,
                content: 3,
                key: None,
                nonce: 2,
                owner: 1,
                context: 4,
            },
            Op::Append {
                reply: 1,
                good: true,
                seq: SeqPick::Next,
                deltas: vec![0, 5],
            },
            Op::Cancel {
                conv: 3,
                target: None,
            },
            Op::Settle {
                reply: 1,
                good: true,
                kind: 2,
                usage: false,
            },
            Op::Join {
                user: 1,
                node: 0,
                conn: 2,
            },
            Op::Leave {
                user: 1,
                node: 0,
                conn: 2,
            },
            // Past the lease of `org/alice`'s reply: the sweep reaps it.
            Op::Tick { ms: 1_100 },
            Op::Sweep,
            Op::Snapshot { conv: 2, limit: 5 },
            Op::Snapshot { conv: 3, limit: 5 },
            Op::Check { user: 1 },
            Op::Tick { ms: 2_000 },
            Op::Sweep,
        ];
        h.run(&ops).await;
        h.assert_every_key_expires()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });
}

/// Redis full mid-reply, by hand: the append, a new start and a cancel are
/// refused as a whole; the renewal, the settle, reads and presence still go
/// through as in the model; once Redis has room again, a start does too.
#[test]
fn a_full_redis_refuses_start_append_and_cancel_and_still_settles_as_the_model_does() {
    let server = RedisServer::start();
    runtime().block_on(async {
        let mut h = Harness::new(&server.url()).await;
        let start = |conv, nonce| Op::Start {
            conv,
            content: 1,
            key: None,
            nonce,
            owner: 0,
            context: 2,
        };
        let append = |deltas| Op::Append {
            reply: 0,
            good: true,
            seq: SeqPick::Next,
            deltas,
        };
        let ops = [
            start(0, 1),
            append(vec![0, 1]),
            Op::Full { on: true },
            append(vec![2]),
            Op::Renew {
                reply: 0,
                good: true,
            },
            start(1, 2),
            Op::Cancel {
                conv: 0,
                target: None,
            },
            Op::Join {
                user: 0,
                node: 0,
                conn: 1,
            },
            Op::Read { reply: 0, after: 0 },
            Op::Settle {
                reply: 0,
                good: true,
                kind: 1,
                usage: false,
            },
            Op::Snapshot { conv: 0, limit: 5 },
            Op::Tick { ms: 2_000 },
            Op::Sweep,
            Op::Full { on: false },
            start(0, 3),
            Op::Snapshot { conv: 0, limit: 5 },
        ];
        h.run(&ops).await;
        assert_eq!(h.known.len(), 2, "the start while full made no reply");
        h.assert_every_key_expires()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });
}
