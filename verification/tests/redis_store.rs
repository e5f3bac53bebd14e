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

#[path = "redis_store/harness.rs"]
mod harness;

use proptest::prelude::*;
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
use weir_tests::{RedisCluster, RedisServer};

use harness::{Harness, Target};

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
        /// Claims one chunk more than the store holds (as after a failover
        /// lost the last append): a streaming reply answers `gap`.
        ahead: bool,
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
        3 => (reply.clone(), prop::bool::weighted(0.9), 0u8..3, any::<bool>(), prop::bool::weighted(0.15))
            .prop_map(|(reply, good, kind, usage, ahead)| Op::Settle { reply, good, kind, usage, ahead }),
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

/// The property. A plain test around proptest's runner rather than the
/// `proptest!` macro, so that the `redis-server` it starts belongs to the
/// test and is stopped when it ends (also when it fails).
#[test]
fn redis_scripts_answer_exactly_as_the_reference_model() {
    let server = RedisServer::start();
    property(&Target::One(server.url()), cases());
}

/// The property and every hand-written case on a Redis Cluster (3 masters,
/// 3 replicas, started for the test): each operation is one script on one
/// slot, the sweep one per partition, and the notices of each slot come
/// from its own master in order (between slots, in none).
#[test]
fn on_a_redis_cluster_the_scripts_answer_exactly_as_the_reference_model() {
    let cluster = RedisCluster::start();
    let target = Target::Cluster(cluster.url());
    property(&target, cases());
    let rt = runtime();
    rt.block_on(async {
        located_cancelled_then_deleted(Harness::new(&target).await).await;
        started_streamed_cancelled_and_settled(Harness::new(&target).await).await;
        hostile_user_ids(Harness::new(&target).await).await;
        full_redis(Harness::new(&target).await).await;
    });
}

/// `cases` random sequences of operations on `target`, each compared step by
/// step with the model; then every window passes, a sweep, and a last look
/// at every conversation.
fn property(target: &Target, cases: u32) {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        max_shrink_iters: 2_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&prop::collection::vec(op(), 1..80), |ops| {
        runtime().block_on(async {
            let mut h = Harness::new(target).await;
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

/// A hand-written case on a `redis-server` of its own.
fn on_one_redis<F: std::future::Future<Output = ()>>(case: impl FnOnce(Harness) -> F) {
    let server = RedisServer::start();
    runtime().block_on(async { case(Harness::new(&Target::One(server.url())).await).await });
}

/// The seed front end's path (`POST /api/chat`, `POST /api/cancel` without a
/// user, `DELETE /api/history`): a registered reply found from its session
/// and id, in its own session and not in another; delete refused while it
/// streams, then clearing everything once it settled; the fencing tokens
/// starting again; a locator outliving nothing past its window.
#[test]
fn a_located_reply_cancelled_then_its_history_deleted_matches_the_model() {
    on_one_redis(located_cancelled_then_deleted);
}

async fn located_cancelled_then_deleted(mut h: Harness) {
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
            ahead: false,
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
}

/// A hand-written sequence through the main path, so a failure of the basics
/// reads plainly (and the property has a known-good anchor).
#[test]
fn a_reply_started_streamed_cancelled_and_settled_matches_the_model() {
    on_one_redis(started_streamed_cancelled_and_settled);
}

async fn started_streamed_cancelled_and_settled(mut h: Harness) {
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
            ahead: false,
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
}

/// The probe's two hostile users by hand: `org/alice`'s reply, its owner
/// gone, is reaped by a sweep (the sweep reads the conversation back from
/// its index entry); a cancel of `a:{b`'s reply goes to the owner node's
/// channel; presence of both on their own channels.
#[test]
fn replies_and_presence_of_hostile_user_ids_match_the_model() {
    on_one_redis(hostile_user_ids);
}

async fn hostile_user_ids(mut h: Harness) {
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
            ahead: false,
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
}

/// Redis full mid-reply, by hand: the append, a new start and a cancel are
/// refused as a whole; the renewal, the settle, reads and presence still go
/// through as in the model; once Redis has room again, a start does too.
#[test]
fn a_full_redis_refuses_start_append_and_cancel_and_still_settles_as_the_model_does() {
    on_one_redis(full_redis);
}

async fn full_redis(mut h: Harness) {
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
            ahead: false,
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
}
