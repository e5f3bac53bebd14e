//! Saturation as a fault: a node too busy to keep up, in virtual time.
//!
//! The seeded simulation ([`crate::sim`]) and the exhaustive exploration
//! ([`crate::explore`]) handle every input at once: a step costs no time, so
//! neither can see a node too busy to renew its lease — what a probe of the
//! release build found (issue 17, point 1: a node fanning out a fast reply to
//! ~300 connections lost its own live replies as `owner_lost`). Here each
//! node is driven the way the runtime drives it, and work costs time:
//!
//! - a step (one input, or one round of due timers) takes [`STEP_COST`] plus
//!   a seeded cost per chunk it hands to the connections (a merged frame
//!   costs each chunk it carries): fanning out N
//!   chunks to K connections in one step takes N·K times that. The store
//!   operations a step sends leave when it ends;
//! - inputs that arrive while a node works wait in its mailbox, so they come
//!   in large batches: the store's replies, pub/sub notices, and a fast
//!   generator's deltas (several per burst, faster than the node hands them
//!   out);
//! - after a step the node's thread may not run for a while (seeded, up to
//!   [`STALL`]), so its timers fire late, by at most that stall plus one
//!   step;
//! - the driver does what the runtime's does (`runtime/src/driver.rs`): it
//!   fires every timer that is due, then takes one input (the store's replies
//!   first), and again. Lease renewals compete with the fan-out.
//!
//! The nodes run with [`FANOUT_SLICE`]: the cost per frame is scaled up by
//! about 10⁴ against a real node and the slice down by as much, so a slice
//! costs at most 160 ms, the order of what 65 536 deliveries cost a real
//! node (the probe's node handed out ~37 M in ~10 s: 0.3 µs each).
//!
//! Each seed: 2–3 nodes on the store model with the default lease (10 s).
//! Node `n0` is the busy one: 10–20 of its connections watch a fast reply
//! (40–80 chunks a second for 11–14 s, up to 8 times what `n0` can hand out
//! at 2–5 ms per frame), and it owns a slow reply (2–4 chunks, one every
//! 8–20 s, like a thinking model: an append extends the lease, so this one
//! lives on its renewals). Either `n0` produces the fast reply itself (the
//! probe's first scenario), or `n1` does and `n0` only fans it out (the
//! bystander). The last node watches both replies, and every node sweeps the
//! store each housekeeping period.
//!
//! After every step the [`Checker`] judges invariants 0–5 and 8, and
//! [`check_live_owner_keeps_lease`] invariant 9: no reply of a node that
//! lives and reaches the store (every node here: nothing crashes, no
//! operation fails) ends `failed(owner_lost)`, and while every client stays
//! connected the store counts all of each user's connections (presence, the
//! other thing the probe saw decay). Then the quiet phase: the
//! backlog is handed out, every reply must have settled and ended on every
//! connection (1, 6), and once everyone left no node and no store record may
//! hold anything but history (7).
//!
//! [`SatBug`] brings back what the probe found, one cause at a time, in what
//! the simulated runtime does or how the nodes are configured (weir-core is
//! not changed): each must break invariant 9.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use weir_core::ids::{ConnId, ConvKey, MessageId, SeededIds, SessionId, UserId};
use weir_core::store::{Model, Notice, StoreConfig, StoreOp};
use weir_core::wire::{MessageStatus, PresenceStatus, Role, ServerFrame};
use weir_core::{GeneratorEvent, Input};

use crate::check::{check_live_owner_keeps_lease, Checker, Violation};
use crate::harness::{World, WorldConfig};
use crate::sim::Rng;

mod report;

pub use report::{sat_replay_command, SatBug, SatFailure, SatStats};

/// What a step costs besides the frames it hands out.
pub const STEP_COST: Duration = Duration::from_micros(100);

/// The longest a node's thread waits after a step before it runs again
/// (the configured stall); it happens after [`STALL_PER_MILLE`] of steps.
pub const STALL: Duration = Duration::from_secs(1);

/// How often (per mille of steps) a node's thread stalls after a step.
pub const STALL_PER_MILLE: u64 = 10;

/// The nodes' [`Config::fanout_slice`](weir_core::Config::fanout_slice)
/// here: 32 chunk deliveries per step (at least one per connection), at
/// most 160 ms at this model's cost per frame.
pub const FANOUT_SLICE: usize = 32;

/// From when on presence is checked: every client connected at 0, and
/// every presence join reached the store (latencies are at most 0.5 s).
pub const PRESENCE_FROM: Duration = Duration::from_secs(1);

/// The longest a seed may run in virtual time before its backlog must have
/// been handed out and every reply settled.
pub const LIMIT: Duration = Duration::from_secs(1_200);

/// One seed's choices.
#[derive(Debug, Clone, Copy)]
struct Plan {
    nodes: usize,
    bystander: bool,
    viewers: usize,
    frame_cost: Duration,
    fast_rate: u64,
    burst_every: Duration,
    fast_for: Duration,
    slow_every: Duration,
    slow_chunks: u32,
}

impl Plan {
    fn draw(rng: &mut Rng) -> Self {
        Self {
            nodes: 2 + rng.index(2),
            bystander: rng.chance(500),
            viewers: 10 + rng.index(11),
            frame_cost: rng.ms(2, 5),
            fast_rate: 40 + rng.below(41),
            burst_every: rng.ms(20, 100),
            fast_for: rng.ms(11_000, 14_000),
            slow_every: rng.ms(8_000, 20_000),
            slow_chunks: 2 + u32::try_from(rng.below(3)).unwrap_or(0),
        }
    }
}

/// A node's runtime: when its thread is free again, and its mailbox.
#[derive(Debug, Clone, Default)]
struct Driver {
    busy_until: Duration,
    /// The store's replies (taken first by the fixed driver).
    replies: VecDeque<Input>,
    /// Everything else: notices, generator events, client frames.
    inbox: VecDeque<Input>,
    /// The last step fired timers: the next takes an input if one waits
    /// (the runtime's loop fires what is due, then takes one message).
    fired: bool,
}

/// A running generator.
#[derive(Debug, Clone)]
struct Gen {
    node: usize,
    fast: bool,
    next_at: Duration,
    /// Fast: when it finishes; slow: unused.
    ends_at: Duration,
    /// Slow: deltas it still produces.
    left: u32,
    done: bool,
}

const TRACE_LEN: usize = 40;

/// One seed's world and scheduler.
#[derive(Debug)]
struct Sat {
    bug: Option<SatBug>,
    rng: Rng,
    plan: Plan,
    w: World,
    checker: Checker,
    now: Duration,
    op_due: VecDeque<Duration>,
    reply_due: VecDeque<Duration>,
    notice_due: VecDeque<Duration>,
    drivers: Vec<Driver>,
    gens: BTreeMap<MessageId, Gen>,
    fast_conv: ConvKey,
    trace: VecDeque<String>,
    /// `WEIR_SAT_TRACE` is set: every step is printed.
    verbose: bool,
    /// Every client is connected: presence is checked (from
    /// [`PRESENCE_FROM`]).
    watch_presence: bool,
    stats: SatStats,
}

fn conv(user: &str, session: &str) -> ConvKey {
    ConvKey::new(
        UserId::parse(user).unwrap_or_else(|e| panic!("{e}")),
        SessionId::parse(session).unwrap_or_else(|e| panic!("{e}")),
    )
}

impl Sat {
    fn new(seed: u64, bug: Option<SatBug>) -> Self {
        let mut rng = Rng(SeededIds::new(seed ^ 0x5A7_5A7_5A7));
        let plan = Plan::draw(&mut rng);
        let store = StoreConfig {
            idempotency_ttl_ms: 60_000,
            ..StoreConfig::default()
        };
        let config = WorldConfig {
            nodes: plan.nodes,
            store,
            seed,
            small_steps: false,
        };
        let w = World::tuned(&config, |c| {
            if bug == Some(SatBug::UnboundedBatches) {
                c.append_max_chunks = usize::MAX;
                c.append_max_bytes = usize::MAX;
                c.fanout_slice = usize::MAX;
            } else {
                c.fanout_slice = FANOUT_SLICE;
            }
        });
        let mut sat = Self {
            bug,
            rng,
            plan,
            w,
            checker: Checker::new(),
            now: Duration::ZERO,
            op_due: VecDeque::new(),
            reply_due: VecDeque::new(),
            notice_due: VecDeque::new(),
            drivers: vec![Driver::default(); plan.nodes],
            gens: BTreeMap::new(),
            fast_conv: conv("u0", "fast"),
            trace: VecDeque::new(),
            verbose: std::env::var_os("WEIR_SAT_TRACE").is_some(),
            watch_presence: true,
            stats: SatStats {
                bystander_seeds: u32::from(plan.bystander),
                ..SatStats::default()
            },
        };
        sat.sync(Duration::ZERO);
        sat
    }

    fn set_now(&mut self, t: Duration) {
        self.now = t;
        self.w.now = self.w.t0 + t;
    }

    fn note(&mut self, what: String) {
        if self.trace.len() == TRACE_LEN {
            self.trace.pop_front();
        }
        let ms = self.now.as_millis();
        let line = format!("t={ms}ms {what}");
        if self.verbose {
            eprintln!("{line}");
        }
        self.trace.push_back(line);
    }

    fn latency(&mut self) -> Duration {
        if self.rng.chance(30) {
            self.rng.ms(100, 500)
        } else {
            self.rng.ms(1, 20)
        }
    }

    /// Gives every new queue item its due time: operations leave when the
    /// step that sent them ends (`leave`), replies and notices now.
    fn sync(&mut self, leave: Duration) {
        while self.op_due.len() < self.w.ops.len() {
            let d = leave + self.latency();
            self.op_due.push_back(d);
        }
        while self.reply_due.len() < self.w.replies.len() {
            let d = self.now + self.latency();
            self.reply_due.push_back(d);
        }
        while self.notice_due.len() < self.w.notices.len() {
            // Pub/sub keeps each subscriber's notices in order.
            let k = self.notice_due.len();
            let node = self.w.notices[k].0;
            let behind = (0..k)
                .rev()
                .find(|j| self.w.notices[*j].0 == node)
                .map(|j| self.notice_due[j]);
            let d = self.now + self.latency();
            self.notice_due.push_back(behind.map_or(d, |b| b.max(d)));
        }
    }

    /// What the clients have been handed so far, counted the way it costs:
    /// a merged `chunk` frame costs each chunk it carries (encoding and
    /// writing scale with the text, not with the number of frames), any
    /// other frame one.
    fn frames(&self) -> u64 {
        self.w
            .clients
            .values()
            .flat_map(|c| &c.frames)
            .map(|f| match f {
                ServerFrame::Chunk(c) => c.seq - c.first_seq() + 1,
                _ => 1,
            })
            .sum()
    }

    // ----- the store and the wires -----

    /// Applies every operation that reached the store, and puts every reply
    /// and notice that arrived into its node's mailbox.
    fn arrivals(&mut self) -> bool {
        let mut did = false;
        while let Some(k) = self
            .op_due
            .iter()
            .enumerate()
            .filter(|(_, d)| **d <= self.now)
            .min_by_key(|(_, d)| **d)
            .map(|(k, _)| k)
        {
            self.op_due.remove(k);
            if let Some(applied) = self.w.apply_op_with(k, Model::apply) {
                if matches!(applied.request, StoreOp::Renew(_)) {
                    self.stats.renewals += 1;
                }
                let what = format!("n{} op {:?} at the store: {}", applied.node, applied.op, {
                    let s = format!("{:?}", applied.request);
                    s.chars().take(70).collect::<String>()
                });
                self.note(what);
            }
            self.sync(self.now);
            did = true;
        }
        let fifo = self.bug == Some(SatBug::TimersWaitForIdle);
        let mut k = 0;
        while k < self.reply_due.len() {
            if self.reply_due[k] > self.now {
                k += 1;
                continue;
            }
            self.reply_due.remove(k);
            if let Some(r) = self.w.replies.remove(k) {
                let d = &mut self.drivers[r.node];
                let input = Input::StoreReply {
                    op: r.op,
                    result: r.result,
                };
                if fifo {
                    d.inbox.push_back(input);
                } else {
                    d.replies.push_back(input);
                }
                did = true;
            }
        }
        let mut k = 0;
        while k < self.notice_due.len() {
            if self.notice_due[k] > self.now {
                k += 1;
                continue;
            }
            self.notice_due.remove(k);
            if let Some((j, n)) = self.w.notices.remove(k) {
                self.drivers[j].inbox.push_back(Input::Notice(n));
                did = true;
            }
        }
        for d in &self.drivers {
            let waiting = d.replies.len() + d.inbox.len();
            self.stats.largest_mailbox = self.stats.largest_mailbox.max(waiting);
        }
        did
    }

    // ----- generators -----

    /// Learns of generators node `i` started.
    fn register_generators(&mut self, i: usize) {
        let started: Vec<(MessageId, ConvKey)> = self.w.nodes[i]
            .generators
            .iter()
            .filter(|(id, _)| !self.gens.contains_key(*id))
            .map(|(id, c)| (id.clone(), c.clone()))
            .collect();
        for (id, c) in started {
            let fast = c == self.fast_conv;
            self.note(format!(
                "n{i} starts the {} generator of {id}",
                if fast { "fast" } else { "slow" }
            ));
            self.gens.insert(
                id,
                Gen {
                    node: i,
                    fast,
                    next_at: self.now,
                    ends_at: self.now + self.plan.fast_for,
                    left: self.plan.slow_chunks,
                    done: false,
                },
            );
        }
    }

    /// Due generator events go to their node's mailbox: a fast generator's
    /// burst of deltas, a slow one's single delta, or the finish.
    fn generators(&mut self) -> bool {
        let mut did = false;
        let now = self.now;
        let burst = (self.plan.fast_rate * self.plan.burst_every.as_millis() as u64 / 1000).max(1);
        for (id, g) in &mut self.gens {
            if g.done || g.next_at > now {
                continue;
            }
            did = true;
            if !self.w.nodes[g.node].generators.contains_key(id) {
                // Aborted (or its node lost the reply).
                g.done = true;
                continue;
            }
            let mut events = Vec::new();
            if g.fast && now < g.ends_at {
                for _ in 0..burst {
                    self.stats.fast_chunks += 1;
                    events.push(GeneratorEvent::Delta(format!(
                        "f{} ",
                        self.stats.fast_chunks
                    )));
                }
                g.next_at = now + self.plan.burst_every;
            } else if !g.fast && g.left > 0 {
                g.left -= 1;
                events.push(GeneratorEvent::Delta(format!("s{} ", g.left)));
                g.next_at = now + self.plan.slow_every;
            } else {
                events.push(GeneratorEvent::Finished { usage: None });
                self.w.nodes[g.node].generators.remove(id);
                g.done = true;
            }
            let inbox = &mut self.drivers[g.node].inbox;
            for event in events {
                inbox.push_back(Input::Generator {
                    message_id: id.clone(),
                    event,
                });
            }
        }
        did
    }

    // ----- the nodes' drivers -----

    /// Node `i` takes one step if its thread is free and it has something
    /// to do: its due timers, else one input, the store's replies first. The
    /// fixed driver alternates (due timers, one input, due timers, …); the
    /// old one fires timers only when no input waits.
    fn step(&mut self, i: usize) -> bool {
        if self.drivers[i].busy_until > self.now {
            return false;
        }
        let deadline = self.w.nodes[i]
            .node
            .poll_timeout()
            .filter(|t| *t <= self.w.now);
        let d = &self.drivers[i];
        let waiting = !d.replies.is_empty() || !d.inbox.is_empty();
        let fire = match self.bug {
            Some(SatBug::TimersWaitForIdle) => deadline.is_some() && !waiting,
            _ => deadline.is_some() && !(d.fired && waiting),
        };
        self.drivers[i].fired = fire;
        let before = self.frames();
        let what = if let (true, Some(deadline)) = (fire, deadline) {
            let late = self.w.now.saturating_duration_since(deadline);
            self.stats.latest_timer = self.stats.latest_timer.max(late);
            let now = self.w.now;
            self.w.nodes[i].node.handle_timeout(now);
            self.w.drain(i);
            format!("timers, {} ms late", late.as_millis())
        } else if let Some(input) = {
            let d = &mut self.drivers[i];
            d.replies.pop_front().or_else(|| d.inbox.pop_front())
        } {
            let what = input_kind(&input);
            self.w.input(i, input);
            what
        } else {
            return false;
        };
        let frames = self.frames() - before;
        self.stats.steps += 1;
        self.stats.frames += frames;
        let cost = STEP_COST + self.plan.frame_cost * u32::try_from(frames).unwrap_or(u32::MAX);
        self.stats.longest_step = self.stats.longest_step.max(cost);
        let mut end = self.now + cost;
        if self.rng.chance(STALL_PER_MILLE) {
            self.stats.stalls += 1;
            end += self.rng.ms(1, STALL.as_millis() as u64);
        }
        self.drivers[i].busy_until = end;
        if frames > 0 || cost > STEP_COST * 10 {
            self.note(format!(
                "n{i}: {what}: {frames} frames, busy until {} ms",
                end.as_millis()
            ));
        } else {
            self.note(format!("n{i}: {what}"));
        }
        self.sync(end);
        self.register_generators(i);
        true
    }

    // ----- time -----

    fn next_event(&self) -> Option<Duration> {
        let t0 = self.w.t0;
        let queues = self
            .op_due
            .iter()
            .chain(&self.reply_due)
            .chain(&self.notice_due)
            .copied();
        let gens = self.gens.values().filter(|g| !g.done).map(|g| g.next_at);
        let nodes = self.drivers.iter().zip(&self.w.nodes).map(|(d, n)| {
            let timer = n.node.poll_timeout().map(|t| t.duration_since(t0));
            if d.busy_until > self.now {
                Some(d.busy_until)
            } else {
                timer
            }
        });
        queues
            .chain(gens)
            .chain(nodes.flatten())
            .filter(|t| *t > self.now)
            .min()
    }

    fn check(&mut self) -> Result<(), Violation> {
        self.checker.check(&self.w)?;
        // Nothing crashes and no operation fails here: every owner lives and
        // reaches the store.
        check_live_owner_keeps_lease(&self.w.store, |_| true)?;
        // Until the first connection closes (the clients here never answer
        // pings: after `idle_timeout` the nodes close them).
        self.watch_presence &= self
            .w
            .clients
            .values()
            .all(|c| !c.gone && c.closed.is_none());
        if self.watch_presence && self.now >= PRESENCE_FROM {
            self.check_presence()?;
        }
        Ok(())
    }

    /// The other half of invariant 9 (the probe saw a busy node's 302
    /// connections counted as 1 elsewhere): while every client stays
    /// connected, the store counts each user's open connections, all of
    /// them, and the user is online — a busy node still refreshes its
    /// presence entries before they expire.
    fn check_presence(&self) -> Result<(), Violation> {
        for user in ["u0", "u1"] {
            let user = UserId::parse(user).unwrap_or_else(|e| panic!("{e}"));
            let open = self
                .w
                .clients
                .values()
                .filter(|c| c.conv.user == user && !c.gone && c.closed.is_none())
                .count();
            let (status, stored) = self.w.store.presence(&user);
            if stored != open || status != PresenceStatus::Online {
                return Err(Violation {
                    invariant: 9,
                    detail: format!(
                        "presence of {user}: the store counts {stored} connections ({status:?}), \
                         {open} are open on live nodes"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Runs every node, the store and the generators until `until`.
    fn run_until(&mut self, until: Duration) -> Result<(), Violation> {
        loop {
            loop {
                let mut did = self.arrivals();
                did |= self.generators();
                for i in 0..self.drivers.len() {
                    did |= self.step(i);
                }
                self.check()?;
                if !did {
                    break;
                }
            }
            match self.next_event() {
                Some(t) if t <= until => self.set_now(t),
                _ => {
                    self.set_now(until.max(self.now));
                    return Ok(());
                }
            }
        }
    }

    /// Nothing waits anywhere and no reply is live.
    fn settled(&self) -> bool {
        self.w.ops.is_empty()
            && self.w.replies.is_empty()
            && self.w.notices.is_empty()
            && self.gens.values().all(|g| g.done)
            && self
                .drivers
                .iter()
                .all(|d| d.replies.is_empty() && d.inbox.is_empty() && d.busy_until <= self.now)
            && self.w.store.streams().all(|(_, _, s, _, _)| !s.is_live())
    }

    fn connect(&mut self, i: usize, c: &ConvKey) -> ConnId {
        let conn = self.w.connect(i, c.user.as_str(), c.session.as_str(), None);
        self.sync(self.now);
        conn
    }

    fn chat(&mut self, i: usize, conn: ConnId, n: u32) {
        let text = format!(r#"{{"type":"chat","content":"q{n}","request_id":"r{n}"}}"#);
        self.drivers[i].inbox.push_back(Input::Frame {
            conn,
            bytes: text.into_bytes(),
        });
    }

    fn run(&mut self) -> Result<(), Violation> {
        let fast = self.fast_conv.clone();
        let slow = conv("u1", "slow");
        let watcher = self.plan.nodes - 1;
        let mut fast_producer = None;
        for k in 0..self.plan.viewers {
            let conn = self.connect(0, &fast);
            if k == 0 && !self.plan.bystander {
                fast_producer = Some((0, conn));
            }
        }
        if self.plan.bystander {
            fast_producer = Some((1, self.connect(1, &fast)));
        }
        let slow_producer = self.connect(0, &slow);
        if fast_producer.map(|(i, _)| i) != Some(watcher) {
            self.connect(watcher, &fast);
        }
        self.connect(watcher, &slow);
        self.run_until(Duration::from_millis(500))?;
        self.note(format!("chats: fast from {fast_producer:?}, slow from n0"));
        if let Some((i, conn)) = fast_producer {
            self.chat(i, conn, 1);
        }
        self.chat(0, slow_producer, 2);
        // The saturation, then the quiet phase: the backlog is handed out.
        let mut until = self.now;
        loop {
            until += Duration::from_secs(5);
            self.run_until(until)?;
            if self.settled() && until > Duration::from_secs(2) + self.plan.fast_for {
                break;
            }
            if until > LIMIT {
                return Err(Violation {
                    invariant: 6,
                    detail: format!("still busy after {} s of virtual time", LIMIT.as_secs()),
                });
            }
        }
        self.note("quiet: everything handed out".into());
        self.run_until(self.now + Duration::from_secs(20))?;
        self.checker.check_quiescent(&self.w)?;
        // Nothing was lost: both replies completed.
        for c in [&fast, &slow] {
            for m in self.w.store.history(c) {
                if m.role == Role::Assistant && m.status != MessageStatus::Completed {
                    return Err(Violation {
                        invariant: 9,
                        detail: format!("{c} {} ended {:?}", m.message_id, m.status),
                    });
                }
            }
        }
        self.note("everyone leaves".into());
        self.watch_presence = false;
        let conns: Vec<ConnId> = self.w.clients.keys().copied().collect();
        for conn in conns {
            self.w.disconnect(conn);
        }
        self.sync(self.now);
        self.run_until(self.now + Duration::from_secs(80))?;
        for (i, n) in self.w.nodes.iter().enumerate() {
            if n.node.holds_state() {
                return Err(Violation {
                    invariant: 7,
                    detail: format!("node n{i} still holds state after everyone left"),
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
}

fn input_kind(input: &Input) -> String {
    match input {
        Input::StoreReply { op, result } => {
            let r = format!("{result:?}");
            format!(
                "reply to op {op:?}: {}",
                r.chars().take(50).collect::<String>()
            )
        }
        Input::Notice(Notice::Chunks {
            message_id,
            first_seq,
            deltas,
            ..
        }) => format!("notice: chunks {message_id} {first_seq}+{}", deltas.len()),
        Input::Notice(n) => {
            let n = format!("{n:?}");
            format!("notice: {}", n.chars().take(50).collect::<String>())
        }
        Input::Generator { message_id, event } => match event {
            GeneratorEvent::Delta(_) => format!("generator delta of {message_id}"),
            other => format!("generator of {message_id}: {other:?}"),
        },
        other => {
            let s = format!("{other:?}");
            s.chars().take(60).collect()
        }
    }
}

/// Runs one saturated seed (with `bug` switched on, if any): the
/// saturation, invariants 0–5, 8 and 9 checked after every step, then the
/// quiet phase.
pub fn run_saturated_seed(seed: u64, bug: Option<SatBug>) -> Result<SatStats, Box<SatFailure>> {
    let mut sat = Sat::new(seed, bug);
    let result = sat.run();
    sat.stats.virtual_time = sat.now;
    // A timer still waiting counts too (the starved renewal of a failure).
    for n in &sat.w.nodes {
        if let Some(t) = n.node.poll_timeout() {
            let late = sat.w.now.saturating_duration_since(t);
            sat.stats.latest_timer = sat.stats.latest_timer.max(late);
        }
    }
    match result {
        Ok(()) => Ok(sat.stats),
        Err(violation) => Err(Box::new(SatFailure {
            seed,
            bug,
            at_ms: u64::try_from(sat.now.as_millis()).unwrap_or(u64::MAX),
            violation,
            stats: sat.stats,
            trace: sat.trace.into_iter().collect(),
        })),
    }
}
