//! A seeded, deterministic simulation of a weir cluster with faults.
//!
//! N real [`Node`](weir_core::Node)s, M clients and the store's reference
//! model run in the harness's virtual time, driven by one scheduler whose
//! every choice comes from one seed (SplitMix64, the core's own
//! [`SeededIds`]). Every store operation, store reply and pub/sub notice
//! gets a latency when it is sent; operations and replies whose latencies
//! overlap are delivered in random order, so they are reordered across (and
//! within) nodes, and time never passes an undelivered item (a delay is
//! bounded by its latency). Notices to one node stay in publication order, as
//! on a Redis pub/sub connection: a delayed one holds back the ones behind it
//! (and a node that reads the store may still hear of a change late).
//!
//! Faults: notices dropped and delayed; store operations and replies delayed
//! (up to [`MAX_DELAY`]) and reordered; store operations failing
//! (`unavailable`); node crash and restart (same name, fresh process: its
//! sockets, its in-flight replies and notices and its generators are lost,
//! operations it sent may still land); store restart (every record lost, a
//! new epoch); clients disconnecting, reconnecting to any node with `resume`
//! or without, and slow clients (the runtime reports a full queue, the node
//! closes with 4008, the client reconnects and resumes). Clients also fall
//! behind without being closed: the runtime reports a connection's queue
//! full (`WriteBlocked`) and drained (`Writable`) at random, and looks at its
//! lag (`QueueLag`) against a lag bound of [`SIM_MAX_LAG_BYTES`]; a blocked
//! connection must still get every chunk exactly once and in order once
//! writable (the quiet phase unblocks every one), or be closed with 4008 past
//! the bound and resume.
//!
//! After every step the [`Checker`] judges invariants 0–5 and 8 from what the
//! clients received and the store holds, invariant 9 (no reply of a node
//! that never crashed ends `owner_lost`: [`check_live_owner_keeps_lease`];
//! [`crate::saturation`] is where a busy node is put to that test), and
//! invariant 6 is checked in time:
//! no reply may stay Active or Cancelling more than [`REAP_SLACK`] past the
//! moment the store would let anyone reap it (its lease ran out, or its
//! cancel deadline passed), which bounds it to `lease_ttl + cancel_deadline`
//! plus slack after its owner's death or stall. Each seed ends with a quiet
//! phase (faults off, every generator finishes, time passes every window):
//! every reply must have settled and ended on every open connection
//! (invariants 1, 6), and once every client left, no node and no store
//! record may hold anything but history (invariant 7).
//!
//! [`Bug`] seeds one deliberate fault per invariant into what the simulated
//! runtime or store delivers — test-only switches that show each check can
//! fail. weir-core is never changed by them.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use weir_core::ids::{ConnId, IdSource, MessageId, SeededIds, Seq};
use weir_core::store::{
    AppendOp, CancelOp, Model, Notice, Published, ReadOp, ReapOp, RenewOp, SettleOp, StartOp,
    StoreConfig, StoreOp, StoreReply, SweepOp,
};
use weir_core::stream::{CancelAnswer, Outcome};
use weir_core::wire::ServerFrame;
use weir_core::{GeneratorEvent, Input};

use crate::check::{check_live_owner_keeps_lease, check_one_live_reply, Checker, Violation};
use crate::harness::{World, WorldConfig, WALL0};

/// The longest a delayed operation, reply or notice waits.
pub const MAX_DELAY: Duration = Duration::from_millis(1500);

/// How long past its reap time a live reply may stay unsettled: two
/// housekeeping periods (a sweep from a live node) plus two maximal delays
/// (the sweep's way to the store, and a failed sweep's retry).
pub const REAP_SLACK_MS: u64 = 2 * 2_000 + 2 * 1_500;

/// [`REAP_SLACK_MS`] as a duration.
pub const REAP_SLACK: Duration = Duration::from_millis(REAP_SLACK_MS);

/// The nodes' lag bound ([`weir_core::Config::max_lag_bytes`]): a few
/// deltas of the simulated generators, so that a connection blocked for a
/// while passes it.
pub const SIM_MAX_LAG_BYTES: usize = 8;

/// Steps per seed before the quiet phase, unless `WEIR_SIM_STEPS` says
/// otherwise.
pub const STEPS: usize = 160;

/// Steps per seed: `WEIR_SIM_STEPS`, or [`STEPS`].
#[must_use]
pub fn steps_per_seed() -> usize {
    std::env::var("WEIR_SIM_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(STEPS)
}

/// A deliberate fault in what the simulated runtime or store delivers, one
/// per invariant: each must make the simulation fail with that invariant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// 1: pub/sub turns a `Settled(completed)` notice into `failed`.
    SettledNoticeFlipsOutcome,
    /// 2: the store answers `cancelled` to a cancel of a completed reply.
    CancelOfCompletedAnswersCancelled,
    /// 3: the store accepts appends after a cancel fixed `final_seq`.
    AppendAcceptedAfterCancel,
    /// 4: the runtime's writer sends a chunk frame twice.
    ChunkFrameSentTwice,
    /// 5: a start refused as busy lands on a stale replica of the store,
    /// which starts a second live reply (split brain).
    BusyStartLandsOnStaleReplica,
    /// 6: the store never reaps (`reap` answers not due, `sweep` reaps
    /// nothing).
    StoreNeverReaps,
    /// 7: the runtime loses the store's reply to a presence `leave`.
    PresenceLeaveReplyLost,
    /// 8: pub/sub garbles the text of chunk notices.
    ChunkNoticeTextGarbled,
}

impl Bug {
    /// Every seeded bug.
    pub const ALL: [Self; 8] = [
        Self::SettledNoticeFlipsOutcome,
        Self::CancelOfCompletedAnswersCancelled,
        Self::AppendAcceptedAfterCancel,
        Self::ChunkFrameSentTwice,
        Self::BusyStartLandsOnStaleReplica,
        Self::StoreNeverReaps,
        Self::PresenceLeaveReplyLost,
        Self::ChunkNoticeTextGarbled,
    ];

    /// The invariant the bug breaks.
    #[must_use]
    pub fn invariant(self) -> u8 {
        match self {
            Self::SettledNoticeFlipsOutcome => 1,
            Self::CancelOfCompletedAnswersCancelled => 2,
            Self::AppendAcceptedAfterCancel => 3,
            Self::ChunkFrameSentTwice => 4,
            Self::BusyStartLandsOnStaleReplica => 5,
            Self::StoreNeverReaps => 6,
            Self::PresenceLeaveReplyLost => 7,
            Self::ChunkNoticeTextGarbled => 8,
        }
    }

    /// The bug's name, as `WEIR_SIM_BUG` takes it.
    #[must_use]
    pub fn name(self) -> String {
        format!("{self:?}")
    }

    /// The bug named `name`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// A seed that broke an invariant.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// The seeded bug, if one was switched on.
    pub bug: Option<Bug>,
    /// The step at which the check failed (beyond the steps per seed: the
    /// quiet phase).
    pub step: usize,
    /// Virtual milliseconds since the start.
    pub at_ms: u64,
    /// What broke.
    pub violation: Violation,
    /// The last steps taken, oldest first.
    pub trace: Vec<String>,
}

impl Failure {
    /// The one command that replays this seed.
    #[must_use]
    pub fn replay_command(&self) -> String {
        replay_command(self.seed, self.bug)
    }
}

/// The command that replays `seed` (with `bug` switched on, if any).
#[must_use]
pub fn replay_command(seed: u64, bug: Option<Bug>) -> String {
    let bug = bug.map_or(String::new(), |b| format!("WEIR_SIM_BUG={} ", b.name()));
    let steps = steps_per_seed();
    let steps = if steps == STEPS {
        String::new()
    } else {
        format!("WEIR_SIM_STEPS={steps} ")
    };
    format!(
        "{bug}{steps}WEIR_SIM_SEED={seed} cargo test -p weir-verification --test simulation replay_one_seed -- --nocapture"
    )
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} failed at step {} (t = {} ms): {}",
            self.seed, self.step, self.at_ms, self.violation
        )?;
        writeln!(f, "last steps:")?;
        for s in &self.trace {
            writeln!(f, "  {s}")?;
        }
        write!(f, "replay: {}", self.replay_command())
    }
}

/// What one seed did (for the test's summary).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Client slots.
    pub clients: usize,
    /// `chat` frames sent.
    pub chats: u32,
    /// `cancel` frames sent.
    pub cancels: u32,
    /// Node crashes.
    pub crashes: u32,
    /// Store restarts.
    pub store_restarts: u32,
    /// Notices dropped.
    pub dropped_notices: u32,
    /// Items delivered late (beyond the normal latency).
    pub delayed: u32,
    /// Operations failed.
    pub failed_ops: u32,
    /// Reconnects with `resume`.
    pub resumes: u32,
    /// Slow-consumer closes.
    pub slow_closes: u32,
    /// Connections reported blocked (their queue full).
    pub blocks: u32,
    /// Connections closed with 4008 for their lag.
    pub lag_closes: u32,
    /// Replies that settled, by outcome: completed, cancelled, failed.
    pub outcomes: [u32; 3],
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Self) {
        self.nodes += o.nodes;
        self.clients += o.clients;
        self.chats += o.chats;
        self.cancels += o.cancels;
        self.crashes += o.crashes;
        self.store_restarts += o.store_restarts;
        self.dropped_notices += o.dropped_notices;
        self.delayed += o.delayed;
        self.failed_ops += o.failed_ops;
        self.resumes += o.resumes;
        self.slow_closes += o.slow_closes;
        self.blocks += o.blocks;
        self.lag_closes += o.lag_closes;
        for k in 0..3 {
            self.outcomes[k] += o.outcomes[k];
        }
    }
}

/// The scheduler's random source.
#[derive(Debug, Clone)]
pub(crate) struct Rng(pub(crate) SeededIds);

impl Rng {
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.0.next_u64() % n
        }
    }

    pub(crate) fn index(&mut self, n: usize) -> usize {
        usize::try_from(self.below(n as u64)).unwrap_or(0)
    }

    /// True with probability `per_mille` / 1000.
    pub(crate) fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    pub(crate) fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// One client: a person on one conversation, across connections.
#[derive(Debug, Clone)]
struct Slot {
    user: &'static str,
    session: &'static str,
    conn: Option<ConnId>,
    /// The newest reply it saw begin and the last seq it got of it.
    last: Option<(MessageId, Seq)>,
    /// That reply ended (or was declared unavailable) on its connection.
    ended: bool,
    /// Frames of the current connection already read.
    seen: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Op,
    Reply,
    Notice,
}

/// One seed's world and scheduler.
#[derive(Debug)]
struct Sim {
    seed: u64,
    bug: Option<Bug>,
    rng: Rng,
    w: World,
    checker: Checker,
    /// Due times, parallel to the world's queues.
    op_due: VecDeque<Duration>,
    reply_due: VecDeque<Duration>,
    notice_due: VecDeque<Duration>,
    /// Per node: up, or down until this time.
    down_until: Vec<Option<Duration>>,
    restarts: u64,
    /// Nodes that crashed (their replies may be reaped as `owner_lost`).
    crashed: std::collections::BTreeSet<weir_core::ids::NodeId>,
    slots: Vec<Slot>,
    /// Deltas each generator still produces before it finishes.
    budget: BTreeMap<MessageId, u32>,
    /// The stale replica of [`Bug::BusyStartLandsOnStaleReplica`].
    replica: Option<Model>,
    /// Per connection: frames already looked at by [`Bug::ChunkFrameSentTwice`].
    dup_seen: BTreeMap<ConnId, usize>,
    /// Connections the runtime reported blocked and not writable since.
    blocked: std::collections::BTreeSet<ConnId>,
    faults: bool,
    step: usize,
    steps: usize,
    trace: VecDeque<String>,
    stats: Stats,
}

const TRACE_LEN: usize = 40;
const USERS: [&str; 2] = ["u0", "u1"];

impl Sim {
    fn new(seed: u64, bug: Option<Bug>) -> Self {
        let mut rng = Rng(SeededIds::new(seed ^ 0x5EED_5EED_5EED_5EED));
        let nodes = 2 + rng.index(3);
        let clients = 2 + rng.index(4);
        let store = StoreConfig {
            idempotency_ttl_ms: 60_000,
            ..StoreConfig::default()
        };
        // Odd seeds run the nodes in the smallest steps (bounded appends and
        // fan-outs that go on at the next step); even seeds as before.
        let w = World::tuned(
            &WorldConfig {
                nodes,
                store,
                seed,
                small_steps: seed % 2 == 1,
            },
            |c| c.max_lag_bytes = SIM_MAX_LAG_BYTES,
        );
        let slots = (0..clients)
            .map(|k| Slot {
                // The last of three or more clients is another user, on a
                // session of the same name: a separate conversation.
                user: if k + 1 == clients && clients > 2 {
                    USERS[1]
                } else {
                    USERS[0]
                },
                session: "s0",
                conn: None,
                last: None,
                ended: true,
                seen: 0,
            })
            .collect();
        let mut sim = Self {
            seed,
            bug,
            rng,
            w,
            checker: Checker::new(),
            op_due: VecDeque::new(),
            reply_due: VecDeque::new(),
            notice_due: VecDeque::new(),
            down_until: vec![None; nodes],
            restarts: 0,
            crashed: std::collections::BTreeSet::new(),
            slots,
            budget: BTreeMap::new(),
            replica: None,
            dup_seen: BTreeMap::new(),
            blocked: std::collections::BTreeSet::new(),
            faults: true,
            step: 0,
            steps: STEPS,
            trace: VecDeque::new(),
            stats: Stats {
                nodes,
                clients,
                ..Stats::default()
            },
        };
        sim.sync();
        sim
    }

    fn now(&self) -> Duration {
        self.w.now.duration_since(self.w.t0)
    }

    fn note(&mut self, what: String) {
        if self.trace.len() == TRACE_LEN {
            self.trace.pop_front();
        }
        let ms = self.now().as_millis();
        self.trace
            .push_back(format!("#{} t={ms}ms {what}", self.step));
    }

    /// A latency for a new item: short, or (with faults on) sometimes long.
    fn latency(&mut self, q: Queue) -> Duration {
        let delay_per_mille = match q {
            Queue::Op | Queue::Reply => 40,
            Queue::Notice => 80,
        };
        if self.faults && self.rng.chance(delay_per_mille) {
            self.stats.delayed += 1;
            self.rng.ms(100, MAX_DELAY.as_millis() as u64)
        } else {
            self.rng.ms(0, 20)
        }
    }

    /// Gives every new queue item its due time.
    fn sync(&mut self) {
        while self.op_due.len() < self.w.ops.len() {
            let d = self.now() + self.latency(Queue::Op);
            self.op_due.push_back(d);
        }
        while self.reply_due.len() < self.w.replies.len() {
            let d = self.now() + self.latency(Queue::Reply);
            self.reply_due.push_back(d);
        }
        while self.notice_due.len() < self.w.notices.len() {
            // Pub/sub is ordered per subscriber connection: a delayed notice
            // holds back every later one to the same node.
            let k = self.notice_due.len();
            let node = self.w.notices[k].0;
            let behind = (0..k)
                .rev()
                .find(|j| self.w.notices[*j].0 == node)
                .map(|j| self.notice_due[j]);
            let d = self.now() + self.latency(Queue::Notice);
            self.notice_due.push_back(behind.map_or(d, |b| b.max(d)));
        }
        self.op_due.truncate(self.w.ops.len());
        self.reply_due.truncate(self.w.replies.len());
        self.notice_due.truncate(self.w.notices.len());
    }

    fn earliest_due(&self) -> Option<Duration> {
        self.op_due
            .iter()
            .chain(&self.reply_due)
            .chain(&self.notice_due)
            .min()
            .copied()
    }

    fn ready(&self) -> Vec<(Queue, usize)> {
        let now = self.now();
        let mut v = Vec::new();
        for (q, dues) in [(Queue::Op, &self.op_due), (Queue::Reply, &self.reply_due)] {
            v.extend(
                dues.iter()
                    .enumerate()
                    .filter(|(_, d)| **d <= now)
                    .map(|(k, _)| (q, k)),
            );
        }
        // Notices: only the oldest waiting for each node.
        let mut heads = std::collections::BTreeSet::new();
        for (k, (node, _)) in self.w.notices.iter().enumerate() {
            if heads.insert(*node) && self.notice_due[k] <= now {
                v.push((Queue::Notice, k));
            }
        }
        v
    }

    // ----- deliveries -----

    fn deliver(&mut self, q: Queue, k: usize) {
        match q {
            Queue::Op => {
                self.op_due.remove(k);
                if self.faults && self.rng.chance(20) {
                    let node = self.w.ops.get(k).map(|o| o.node);
                    self.note(format!("op to store fails: n{node:?}"));
                    self.stats.failed_ops += 1;
                    self.w.fail_op(k);
                } else {
                    self.apply_op(k);
                }
            }
            Queue::Reply => {
                self.reply_due.remove(k);
                if let Some(r) = self.w.replies.get(k) {
                    let what = format!("reply to n{} op {:?}: {}", r.node, r.op, short(&r.result));
                    self.note(what);
                }
                self.w.deliver_reply(k);
            }
            Queue::Notice => {
                self.notice_due.remove(k);
                if self.faults && self.rng.chance(50) {
                    self.stats.dropped_notices += 1;
                    if let Some((j, n)) = self.w.notices.get(k) {
                        let what = format!("notice to n{j} dropped: {}", notice_kind(n));
                        self.note(what);
                    }
                    self.w.drop_notice(k);
                } else {
                    self.deliver_notice(k);
                }
            }
        }
    }

    fn apply_op(&mut self, k: usize) {
        let bug = self.bug;
        let replica = &mut self.replica;
        let applied = self
            .w
            .apply_op_with(k, |store, op| apply_with_bug(bug, replica, store, op));
        let Some(applied) = applied else {
            return;
        };
        if bug == Some(Bug::PresenceLeaveReplyLost)
            && !applied.orphan
            && matches!(applied.request, StoreOp::PresenceLeave(_))
        {
            self.w.replies.pop_back();
        }
        let what = format!(
            "n{}{} op {:?} at store: {}",
            applied.node,
            if applied.orphan { " (dead)" } else { "" },
            applied.op,
            op_kind(&applied.request)
        );
        self.note(what);
    }

    fn deliver_notice(&mut self, k: usize) {
        let Some((j, mut notice)) = self.w.notices.remove(k) else {
            return;
        };
        match (self.bug, &mut notice) {
            (
                Some(Bug::SettledNoticeFlipsOutcome),
                Notice::Settled {
                    outcome: outcome @ Outcome::Completed,
                    ..
                },
            ) => *outcome = Outcome::Failed("bug".into()),
            (Some(Bug::ChunkNoticeTextGarbled), Notice::Chunks { deltas, .. }) => {
                for d in deltas {
                    d.push('~');
                }
            }
            _ => {}
        }
        let what = format!("notice to n{j}: {}", notice_kind(&notice));
        self.note(what);
        self.w.input(j, Input::Notice(notice));
    }

    // ----- external events -----

    fn up_nodes(&self) -> Vec<usize> {
        (0..self.down_until.len())
            .filter(|i| self.down_until[*i].is_none())
            .collect()
    }

    fn live_conn(&self, slot: usize) -> Option<ConnId> {
        let conn = self.slots[slot].conn?;
        let c = self.w.clients.get(&conn)?;
        (!c.gone && c.closed.is_none()).then_some(conn)
    }

    fn external(&mut self) {
        let pick = self.rng.below(100);
        let slot = self.rng.index(self.slots.len());
        match pick {
            0..=11 => self.connect(slot),
            12..=14 => {
                if let Some(conn) = self.live_conn(slot) {
                    self.note(format!("client {slot} disconnects {conn}"));
                    self.w.disconnect(conn);
                }
            }
            15..=16 => {
                if let Some(conn) = self.live_conn(slot) {
                    let node = self.w.clients[&conn].node;
                    self.note(format!("client {slot} too slow on {conn}"));
                    self.stats.slow_closes += 1;
                    self.w.input(node, Input::SlowConsumer { conn });
                }
            }
            17..=26 => {
                if let Some(conn) = self.live_conn(slot) {
                    self.stats.chats += 1;
                    let n = self.stats.chats;
                    self.note(format!("client {slot} chats on {conn}"));
                    let key = if self.rng.chance(200) {
                        format!(r#","client_message_id":"k{}""#, self.rng.below(3))
                    } else {
                        String::new()
                    };
                    self.w.send_text(
                        conn,
                        &format!(r#"{{"type":"chat","content":"q{n}","request_id":"r{n}"{key}}}"#),
                    );
                }
            }
            27..=34 => {
                if let Some(conn) = self.live_conn(slot) {
                    self.stats.cancels += 1;
                    let by_id = self.rng.chance(500);
                    let text = match (&self.slots[slot].last, by_id) {
                        (Some((id, _)), true) => {
                            format!(r#"{{"type":"cancel","message_id":"{id}"}}"#)
                        }
                        _ => r#"{"type":"cancel"}"#.to_owned(),
                    };
                    self.note(format!("client {slot} on {conn}: {text}"));
                    self.w.send_text(conn, &text);
                }
            }
            35..=84 => self.generate(),
            85..=86 => self.crash(),
            87 => self.restart_store(),
            88..=90 => self.block_or_unblock(slot),
            91..=92 => self.look_at_lag(slot),
            _ => {
                // A wall-clock reading (NTP is well-behaved here: no jumps).
                let i = self.rng.index(self.down_until.len());
                if self.down_until[i].is_none() {
                    let unix_ms = WALL0 + self.w.elapsed_ms();
                    self.w.input(i, Input::WallClock { unix_ms });
                }
            }
        }
    }

    /// The runtime reports the slot's connection's queue full, or (if it
    /// was) drained.
    fn block_or_unblock(&mut self, slot: usize) {
        let Some(conn) = self.live_conn(slot) else {
            return;
        };
        let node = self.w.clients[&conn].node;
        if self.blocked.remove(&conn) {
            self.note(format!("client {slot} writable again on {conn}"));
            self.w.input(node, Input::Writable { conn });
        } else {
            self.note(format!("client {slot} blocked on {conn}"));
            self.stats.blocks += 1;
            self.blocked.insert(conn);
            self.w.input(node, Input::WriteBlocked { conn });
        }
    }

    /// The runtime looks at the slot's connection's lag (nothing queued: the
    /// simulated runtime writes at once; the core adds its cursors' lag).
    fn look_at_lag(&mut self, slot: usize) {
        let Some(conn) = self.live_conn(slot) else {
            return;
        };
        let node = self.w.clients[&conn].node;
        self.w.input(node, Input::QueueLag { conn, bytes: 0 });
        if self.w.clients[&conn].closed.is_some() {
            self.note(format!("client {slot} lags too far on {conn}: closed"));
            self.stats.lag_closes += 1;
        }
    }

    /// Every blocked connection's writer drains its queue.
    fn unblock_all(&mut self) {
        for conn in std::mem::take(&mut self.blocked) {
            if let Some(c) = self.w.clients.get(&conn) {
                if !c.gone && c.closed.is_none() {
                    let node = c.node;
                    self.w.input(node, Input::Writable { conn });
                }
            }
        }
    }

    fn connect(&mut self, slot: usize) {
        if self.live_conn(slot).is_some() {
            return;
        }
        let up = self.up_nodes();
        let node = up[self.rng.index(up.len())];
        let s = &self.slots[slot];
        let resume = if !s.ended && self.rng.chance(800) {
            s.last.clone()
        } else {
            None
        };
        if resume.is_some() {
            self.stats.resumes += 1;
        }
        let (user, session) = (s.user, s.session);
        let conn = self.w.connect(node, user, session, resume.clone());
        self.note(format!(
            "client {slot} connects to n{node} as {conn}, resume {resume:?}"
        ));
        let s = &mut self.slots[slot];
        s.conn = Some(conn);
        s.seen = 0;
        if resume.is_none() {
            s.last = None;
            s.ended = true;
        }
    }

    fn generate(&mut self) {
        let running = self.w.running_generators();
        if running.is_empty() {
            return;
        }
        let (_, id) = running[self.rng.index(running.len())].clone();
        let left = *self
            .budget
            .entry(id.clone())
            .or_insert_with(|| 1 + (self.rng.below(6) as u32));
        if left > 0 {
            self.budget.insert(id.clone(), left - 1);
            let delta = format!("{}{} ", self.rng.below(100), "x".repeat(self.rng.index(3)));
            self.note(format!("generator {id}: delta {delta:?}"));
            self.w.generate(&id, GeneratorEvent::Delta(delta));
        } else if self.rng.chance(900) {
            self.note(format!("generator {id}: finished"));
            self.w
                .generate(&id, GeneratorEvent::Finished { usage: None });
        } else {
            self.note(format!("generator {id}: failed"));
            self.w.generate(
                &id,
                GeneratorEvent::Failed {
                    reason: "upstream_error".into(),
                    usage: None,
                },
            );
        }
    }

    fn crash(&mut self) {
        let up = self.up_nodes();
        if !self.faults || up.len() < 2 {
            return;
        }
        let i = up[self.rng.index(up.len())];
        self.note(format!("node n{i} crashes"));
        self.stats.crashes += 1;
        self.restarts += 1;
        self.crashed.insert(crate::harness::node_id(i));
        let keep_replies: Vec<bool> = self.w.replies.iter().map(|r| r.node != i).collect();
        let keep_notices: Vec<bool> = self.w.notices.iter().map(|(j, _)| *j != i).collect();
        retain_by(&mut self.reply_due, &keep_replies);
        retain_by(&mut self.notice_due, &keep_notices);
        // A fresh process takes the node's name; until it is "up" again it
        // has no clients (nobody is routed to it), which is the same as down.
        let seed = self
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(self.restarts);
        self.w.crash_node(i, seed);
        let down_for = self.rng.ms(200, 5_000);
        self.down_until[i] = Some(self.now() + down_for);
        self.sync();
    }

    fn restart_store(&mut self) {
        if !self.faults || self.stats.store_restarts > 0 || !self.rng.chance(300) {
            return;
        }
        self.stats.store_restarts += 1;
        let epoch = self.w.store.epoch() + 1;
        self.note(format!("store restarts, epoch {epoch}"));
        self.w.store.restart(epoch);
    }

    /// Nodes whose downtime is over are routable again.
    fn bring_up(&mut self) {
        let now = self.now();
        for d in &mut self.down_until {
            if d.is_some_and(|t| t <= now) {
                *d = None;
            }
        }
    }

    fn advance(&mut self) {
        let now = self.now();
        let mut to = now + self.rng.ms(1, 400);
        if let Some(due) = self.earliest_due() {
            to = to.min(due.max(now));
        }
        if let Some(up) = self.down_until.iter().flatten().min() {
            to = to.min((*up).max(now));
        }
        self.note(format!("time passes to {} ms", to.as_millis()));
        self.w.advance(to - now);
    }

    // ----- observation and checks -----

    /// Follows each slot's connection: the newest reply and its last seq.
    fn observe(&mut self) {
        for s in &mut self.slots {
            let Some(conn) = s.conn else { continue };
            let Some(c) = self.w.clients.get(&conn) else {
                continue;
            };
            for f in &c.frames[s.seen.min(c.frames.len())..] {
                match f {
                    ServerFrame::History(h) => {
                        for m in &h.messages {
                            if m.status == weir_core::wire::MessageStatus::Streaming {
                                s.last = Some((m.message_id.clone(), m.seq));
                                s.ended = false;
                            }
                        }
                    }
                    ServerFrame::Start(st) => {
                        s.last = Some((st.message_id.clone(), 0));
                        s.ended = false;
                    }
                    ServerFrame::Chunk(ch) => {
                        if let Some((id, seq)) = s.last.as_mut() {
                            if *id == ch.message_id {
                                *seq = ch.seq;
                            }
                        }
                    }
                    ServerFrame::End(weir_core::wire::End { message_id, .. })
                    | ServerFrame::ResumeUnavailable(weir_core::wire::ResumeUnavailable {
                        message_id,
                        ..
                    }) if s.last.as_ref().is_some_and(|(id, _)| id == message_id) => {
                        s.ended = true;
                    }
                    _ => {}
                }
            }
            s.seen = c.frames.len();
            if c.gone || c.closed.is_some() {
                s.conn = None;
            }
        }
        if self.bug == Some(Bug::ChunkFrameSentTwice) {
            for (conn, c) in &mut self.w.clients {
                let seen = self.dup_seen.entry(*conn).or_default();
                let mut k = *seen;
                while k < c.frames.len() {
                    if let ServerFrame::Chunk(ch) = &c.frames[k] {
                        let copy = ServerFrame::Chunk(ch.clone());
                        c.frames.insert(k + 1, copy);
                        k += 1;
                    }
                    k += 1;
                }
                *seen = k;
            }
        }
    }

    fn check(&mut self) -> Result<(), Violation> {
        self.checker.check(&self.w)?;
        if let Some(replica) = &self.replica {
            check_one_live_reply(&[&self.w.store, replica])?;
        }
        // Invariant 9: a node that never crashed keeps its replies' leases.
        let crashed = &self.crashed;
        check_live_owner_keeps_lease(&self.w.store, |owner| !crashed.contains(owner))?;
        // Invariant 6, in time: nothing stays live long past its reap time.
        let wall = WALL0 + self.w.elapsed_ms();
        for (_, id, state, owner, _) in self.w.store.streams() {
            if let Some(due) = state.reap_due_ms() {
                if wall > due + REAP_SLACK_MS {
                    return Err(Violation {
                        invariant: 6,
                        detail: format!(
                            "{id} (owner {owner}) still {state:?} {} ms after it became reapable",
                            wall - due
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    fn fail(&self, violation: Violation) -> Failure {
        if std::env::var_os("WEIR_SIM_DUMP").is_some() {
            for (conn, c) in &self.w.clients {
                eprintln!(
                    "{conn} on n{} (gone {}, closed {:?}):",
                    c.node, c.gone, c.closed
                );
                for (k, f) in c.frames.iter().enumerate() {
                    eprintln!("  {k}: {}", short(f));
                }
            }
        }
        Failure {
            seed: self.seed,
            bug: self.bug,
            step: self.step,
            at_ms: self.w.elapsed_ms(),
            violation,
            trace: self.trace.iter().cloned().collect(),
        }
    }

    fn one_step(&mut self) {
        self.bring_up();
        let ready = self.ready();
        let roll = self.rng.below(100);
        if !ready.is_empty() && roll < 60 {
            let (q, k) = ready[self.rng.index(ready.len())];
            self.deliver(q, k);
        } else if !ready.is_empty() || roll < 40 {
            self.external();
        } else {
            self.advance();
        }
        self.sync();
        self.observe();
    }

    // ----- the quiet phase -----

    /// Delivers everything waiting (faults off), oldest first.
    fn drain_all(&mut self) {
        let mut n = 0;
        while let Some((q, k)) = [
            (Queue::Op, &self.op_due),
            (Queue::Reply, &self.reply_due),
            (Queue::Notice, &self.notice_due),
        ]
        .into_iter()
        .filter_map(|(q, d)| {
            d.iter()
                .enumerate()
                .min_by_key(|(_, t)| **t)
                .map(|(k, t)| (*t, q, k))
        })
        .min_by_key(|(t, _, _)| *t)
        .map(|(_, q, k)| (q, k))
        {
            self.deliver(q, k);
            self.sync();
            self.observe();
            n += 1;
            assert!(n < 1_000_000, "queues never empty: a livelock");
        }
    }

    fn quiet_for(&mut self, d: Duration, step: Duration) -> Result<(), Violation> {
        let mut left = d;
        while !left.is_zero() {
            let s = step.min(left);
            self.w.advance(s);
            self.sync();
            self.drain_all();
            self.bring_up();
            self.check()?;
            left -= s;
        }
        Ok(())
    }

    fn quiesce(&mut self) -> Result<(), Violation> {
        self.faults = false;
        self.step = self.steps;
        self.note("quiet phase: faults off, every queue drains".into());
        self.unblock_all();
        for _ in 0..50 {
            self.drain_all();
            let running = self.w.running_generators();
            if running.is_empty() {
                break;
            }
            for (_, id) in running {
                self.w
                    .generate(&id, GeneratorEvent::Finished { usage: None });
            }
            self.sync();
            self.check()?;
        }
        // Leases, cancel deadlines and watches run out; timers fire.
        self.quiet_for(Duration::from_secs(20), Duration::from_millis(250))?;
        self.checker.check_quiescent(&self.w)?;
        self.step += 1;
        self.note("everyone leaves".into());
        let conns: Vec<ConnId> = self.w.clients.keys().copied().collect();
        for conn in conns {
            self.w.disconnect(conn);
        }
        self.sync();
        self.quiet_for(Duration::from_secs(80), Duration::from_secs(1))?;
        for (i, n) in self.w.nodes.iter().enumerate() {
            if n.node.holds_state() {
                return Err(Violation {
                    invariant: 7,
                    detail: format!(
                        "node n{i} still holds state after everyone left: {:?}",
                        n.node
                    ),
                });
            }
        }
        let left = self.w.store.expiring_records();
        if left != 0 {
            return Err(Violation {
                invariant: 7,
                detail: format!("the store holds {left} records besides history"),
            });
        }
        Ok(())
    }

    fn count_outcomes(&mut self) {
        let mut ids: Vec<MessageId> = Vec::new();
        for s in &self.slots {
            let conv = weir_core::ids::ConvKey::new(
                weir_core::ids::UserId::parse(s.user).unwrap_or_else(|e| panic!("{e}")),
                weir_core::ids::SessionId::parse(s.session).unwrap_or_else(|e| panic!("{e}")),
            );
            for m in self.w.store.history(&conv) {
                if m.role == weir_core::wire::Role::Assistant && !ids.contains(&m.message_id) {
                    ids.push(m.message_id.clone());
                    let k = match m.status {
                        weir_core::wire::MessageStatus::Completed => 0,
                        weir_core::wire::MessageStatus::Cancelled => 1,
                        _ => 2,
                    };
                    self.stats.outcomes[k] += 1;
                }
            }
        }
    }
}

/// Runs one seed (with `bug` switched on, if any): [`steps_per_seed`] random steps
/// with every invariant checked after each, then the quiet phase.
pub fn run_seed(seed: u64, bug: Option<Bug>) -> Result<Stats, Failure> {
    run_seed_steps(seed, bug, steps_per_seed())
}

/// [`run_seed`] with `steps` random steps.
pub fn run_seed_steps(seed: u64, bug: Option<Bug>, steps: usize) -> Result<Stats, Failure> {
    let mut sim = Sim::new(seed, bug);
    sim.steps = steps;
    // Everyone connects first, so that conversations have viewers.
    for slot in 0..sim.slots.len() {
        sim.connect(slot);
    }
    sim.sync();
    sim.observe();
    sim.check().map_err(|v| sim.fail(v))?;
    while sim.step < steps {
        sim.step += 1;
        sim.one_step();
        sim.check().map_err(|v| sim.fail(v))?;
    }
    sim.quiesce().map_err(|v| sim.fail(v))?;
    sim.count_outcomes();
    Ok(sim.stats)
}

/// The store's answer, through the seeded bug if one is on.
fn apply_with_bug(
    bug: Option<Bug>,
    replica: &mut Option<Model>,
    store: &mut Model,
    op: StoreOp,
) -> (StoreReply, Vec<Published>) {
    match (bug, &op) {
        (Some(Bug::StoreNeverReaps), StoreOp::Reap(ReapOp { at_ms, .. })) => {
            return (StoreReply::NotDue { due_ms: at_ms + 1 }, Vec::new());
        }
        (
            Some(Bug::StoreNeverReaps),
            StoreOp::Sweep(SweepOp { at_ms }) | StoreOp::Start(StartOp { at_ms, .. }),
        ) => {
            // Expired records are still dropped, but a reply whose owner is
            // gone is never settled for it (a start finds the conversation
            // busy).
            let reapable = store.streams().find_map(|(conv, id, state, _, _)| {
                state
                    .reap_due_ms()
                    .is_some_and(|due| due <= *at_ms)
                    .then(|| (conv.clone(), id.clone()))
            });
            if let Some((conv, id)) = reapable {
                if matches!(&op, StoreOp::Start(StartOp { conv: c, .. }) if *c != conv) {
                    return store.apply(op);
                }
                return match op {
                    StoreOp::Sweep(_) => (StoreReply::Swept { reaped: Vec::new() }, Vec::new()),
                    _ => (StoreReply::Busy { message_id: id }, Vec::new()),
                };
            }
        }
        (Some(Bug::BusyStartLandsOnStaleReplica), StoreOp::Start(_)) => {
            let mut probe = store.clone();
            if let (StoreReply::Busy { .. }, _) = probe.apply(op.clone()) {
                let stale =
                    replica.get_or_insert_with(|| Model::new(*store.config(), store.epoch()));
                return stale.apply(op);
            }
        }
        _ => {}
    }
    let (mut reply, published) = store.apply(op.clone());
    match (bug, &op, &mut reply) {
        (
            Some(Bug::CancelOfCompletedAnswersCancelled),
            StoreOp::Cancel(_),
            StoreReply::Cancel { answer, .. },
        ) if *answer == Some(CancelAnswer::Completed) => *answer = Some(CancelAnswer::Cancelled),
        (
            Some(Bug::AppendAcceptedAfterCancel),
            StoreOp::Append(AppendOp {
                first_seq, deltas, ..
            }),
            StoreReply::CancelRequested { .. },
        ) => {
            reply = StoreReply::Ok {
                last_seq: first_seq + deltas.len() as Seq - 1,
            };
        }
        _ => {}
    }
    (reply, published)
}

fn retain_by(dues: &mut VecDeque<Duration>, keep: &[bool]) {
    let mut k = 0;
    dues.retain(|_| {
        let r = keep.get(k).copied().unwrap_or(true);
        k += 1;
        r
    });
}

fn op_kind(op: &StoreOp) -> String {
    match op {
        StoreOp::Append(AppendOp {
            message_id,
            first_seq,
            deltas,
            ..
        }) => format!("append {message_id} {first_seq}+{}", deltas.len()),
        StoreOp::Cancel(CancelOp { message_id, .. }) => format!("cancel {message_id:?}"),
        StoreOp::Settle(SettleOp {
            message_id,
            request,
            ..
        }) => format!("settle {message_id} {request:?}"),
        StoreOp::Reap(ReapOp { message_id, .. }) => format!("reap {message_id}"),
        StoreOp::Read(ReadOp {
            message_id,
            after_seq,
            ..
        }) => format!("read {message_id} after {after_seq}"),
        StoreOp::Renew(RenewOp { message_id, .. }) => format!("renew {message_id}"),
        other => format!("{other:?}").chars().take(60).collect(),
    }
}

fn notice_kind(n: &Notice) -> String {
    match n {
        Notice::Chunks {
            message_id,
            first_seq,
            deltas,
            ..
        } => format!("chunks {message_id} {first_seq}+{}", deltas.len()),
        Notice::Settled {
            message_id,
            outcome,
            final_seq,
            ..
        } => format!("settled {message_id} {outcome:?} at {final_seq}"),
        Notice::Cancelling {
            message_id,
            final_seq,
            ..
        } => format!("cancelling {message_id} at {final_seq}"),
        Notice::CancelRequested { message_id, .. } => format!("cancel requested {message_id}"),
        Notice::Started { message_id, .. } => format!("started {message_id}"),
        Notice::Presence { user, status } => format!("presence {user} {status:?}"),
    }
}

fn short<T: fmt::Debug>(v: &T) -> String {
    format!("{v:?}").chars().take(90).collect()
}
