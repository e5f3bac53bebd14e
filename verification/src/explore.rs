//! Exhaustive exploration of a small cluster: every interleaving of a fixed
//! set of events, with every reachable state checked.
//!
//! The configuration: two nodes `n0` and `n1`, one conversation, two
//! connections (`c1` on `n0`, `c2` on `n1`), one `chat` from `c1` (so `n0`
//! owns the reply), up to [`Bounds::chunks`] generator deltas and one
//! finish, one `cancel` from `c2` (racing the finish), at most one crash of
//! the owner `n0` (a fresh process takes its name), and at most one lost
//! pub/sub notice. Store operations, replies and notices travel on one
//! ordered channel per node (a Redis connection), but the store serves the
//! two nodes' channels in every order, so replies and notices of the two
//! nodes interleave every way. Time stands still while events interleave.
//!
//! The explorer walks the graph depth first and counts distinct states by
//! [`World::fingerprint`] (the real cores, the store's reference model, the
//! queues and every frame the clients got). After every transition the
//! [`Checker`] judges invariants 0–5 and 8. A state with no enabled event is
//! terminal; from each terminal state the world is run to quiescence
//! (everything delivered, time passing beyond every lease, cancel deadline
//! and grace window): every reply must have settled and ended on every open
//! connection (invariants 1 and 6: "every reply settles" on every path), and
//! once both clients left nothing but history may remain (invariant 7).
//!
//! This is what the `stateright` crate would do for a `Model` with these
//! actions; a hand-written walk keeps the real `Node`s as the state without
//! an extra dependency.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use weir_core::ids::ConnId;
use weir_core::GeneratorEvent;

use crate::check::{Checker, Violation};
use crate::harness::{World, WorldConfig};

/// The limits of the explored configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Deltas the generator produces at most.
    pub chunks: u32,
    /// Whether the owner may crash (once).
    pub owner_crash: bool,
    /// Whether one pub/sub notice may be lost.
    pub lost_notice: bool,
    /// Whether the nodes work in the smallest steps
    /// ([`WorldConfig::small_steps`]): then a node with a deadline due now
    /// (a fan-out that goes on at its next step) may fire it at any point,
    /// as [`Event::Timers`].
    pub small_steps: bool,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            chunks: 3,
            owner_crash: true,
            lost_notice: true,
            small_steps: false,
        }
    }
}

/// What a complete exploration found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Distinct reachable states.
    pub states: usize,
    /// Transitions taken (edges, including those into known states).
    pub transitions: usize,
    /// States with no enabled event, each run to quiescence and checked.
    pub terminal: usize,
    /// The longest path from the start, in events.
    pub max_depth: usize,
    /// Terminal states whose reply ended completed, cancelled, failed.
    pub outcomes: [usize; 3],
}

/// A broken invariant and the events that led to it.
#[derive(Debug, Clone)]
pub struct Counterexample {
    /// What broke.
    pub violation: Violation,
    /// The events from the start, in order.
    pub path: Vec<Event>,
}

impl std::fmt::Display for Counterexample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.violation)?;
        write!(f, "path: {:?}", self.path)
    }
}

/// One event of the explored configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// `c1` sends `chat`.
    Chat,
    /// `c2` sends `cancel` (without id: the conversation's current reply).
    Cancel,
    /// The generator produces a delta.
    Delta,
    /// The generator finishes.
    Finish,
    /// The store applies the next operation from node `i`.
    ApplyOp(usize),
    /// Node `i` receives its next store reply.
    Reply(usize),
    /// Node `i` receives its next notice.
    Notice(usize),
    /// Node `i`'s next notice is lost.
    LoseNotice(usize),
    /// The owner `n0` crashes; a fresh process takes its name.
    CrashOwner,
    /// Node `i` fires its deadlines that are due now (time stands still: only
    /// a fan-out's next step is ever due; with [`Bounds::small_steps`]).
    Timers(usize),
}

#[derive(Debug, Clone)]
struct State {
    w: World,
    checker: Checker,
    conns: [ConnId; 2],
    chatted: bool,
    cancelled: bool,
    deltas: u32,
    finished: bool,
    crashed: bool,
    lost: bool,
}

impl State {
    fn fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.w.fingerprint().hash(&mut h);
        (
            self.chatted,
            self.cancelled,
            self.deltas,
            self.finished,
            self.crashed,
            self.lost,
        )
            .hash(&mut h);
        h.finish()
    }

    fn generator(&self) -> Option<weir_core::ids::MessageId> {
        self.w
            .running_generators()
            .first()
            .map(|(_, id)| id.clone())
    }

    fn enabled(&self, b: &Bounds) -> Vec<Event> {
        let mut v = Vec::new();
        if !self.chatted {
            v.push(Event::Chat);
        }
        if self.chatted && !self.cancelled {
            v.push(Event::Cancel);
        }
        if self.generator().is_some() {
            if self.deltas < b.chunks {
                v.push(Event::Delta);
            }
            if !self.finished {
                v.push(Event::Finish);
            }
        }
        for i in 0..self.w.nodes.len() {
            if self.w.ops.iter().any(|o| o.node == i) {
                v.push(Event::ApplyOp(i));
            }
            if self.w.replies.iter().any(|r| r.node == i) {
                v.push(Event::Reply(i));
            }
            if self.w.notices.iter().any(|(j, _)| *j == i) {
                v.push(Event::Notice(i));
                if b.lost_notice && !self.lost {
                    v.push(Event::LoseNotice(i));
                }
            }
        }
        if b.owner_crash && self.chatted && !self.crashed {
            v.push(Event::CrashOwner);
        }
        if b.small_steps {
            for (i, n) in self.w.nodes.iter().enumerate() {
                if n.node.poll_timeout().is_some_and(|t| t <= self.w.now) {
                    v.push(Event::Timers(i));
                }
            }
        }
        v
    }

    fn apply(&mut self, e: Event) {
        let first = |it: &mut dyn Iterator<Item = usize>| it.next();
        match e {
            Event::Chat => {
                self.chatted = true;
                self.w
                    .send_text(self.conns[0], r#"{"type":"chat","content":"hi"}"#);
            }
            Event::Cancel => {
                self.cancelled = true;
                self.w.send_text(self.conns[1], r#"{"type":"cancel"}"#);
            }
            Event::Delta => {
                if let Some(id) = self.generator() {
                    self.deltas += 1;
                    let d = format!("d{} ", self.deltas);
                    self.w.generate(&id, GeneratorEvent::Delta(d));
                }
            }
            Event::Finish => {
                if let Some(id) = self.generator() {
                    self.finished = true;
                    self.w
                        .generate(&id, GeneratorEvent::Finished { usage: None });
                }
            }
            Event::ApplyOp(i) => {
                let k = first(
                    &mut self
                        .w
                        .ops
                        .iter()
                        .enumerate()
                        .filter_map(|(k, o)| (o.node == i).then_some(k)),
                );
                if let Some(k) = k {
                    self.w.apply_op(k);
                }
            }
            Event::Reply(i) => {
                let k = first(
                    &mut self
                        .w
                        .replies
                        .iter()
                        .enumerate()
                        .filter_map(|(k, r)| (r.node == i).then_some(k)),
                );
                if let Some(k) = k {
                    self.w.deliver_reply(k);
                }
            }
            Event::Notice(i) | Event::LoseNotice(i) => {
                let k = first(
                    &mut self
                        .w
                        .notices
                        .iter()
                        .enumerate()
                        .filter_map(|(k, (j, _))| (*j == i).then_some(k)),
                );
                if let Some(k) = k {
                    if e == Event::Notice(i) {
                        self.w.deliver_notice(k);
                    } else {
                        self.lost = true;
                        self.w.drop_notice(k);
                    }
                }
            }
            Event::CrashOwner => {
                self.crashed = true;
                self.w.crash_node(0, 0xC0FFEE);
            }
            Event::Timers(i) => {
                let now = self.w.now;
                self.w.nodes[i].node.handle_timeout(now);
                self.w.drain(i);
            }
        }
    }

    /// From a terminal state: deliver everything, let time pass, check that
    /// every reply settled and ended; then everyone leaves and nothing may
    /// remain.
    fn quiesce(mut self) -> Result<usize, Violation> {
        for _ in 0..10 {
            self.w.settle_queues();
            let Some(id) = self.generator() else { break };
            self.w
                .generate(&id, GeneratorEvent::Finished { usage: None });
        }
        self.checker.check(&self.w)?;
        self.w
            .run_for(Duration::from_secs(20), Duration::from_millis(500));
        self.checker.check_quiescent(&self.w)?;
        let conv = self.w.clients[&self.conns[0]].conv.clone();
        let outcome = self
            .w
            .store
            .history(&conv)
            .iter()
            .find(|m| m.role == weir_core::wire::Role::Assistant)
            .map_or(2, |m| match m.status {
                weir_core::wire::MessageStatus::Completed => 0,
                weir_core::wire::MessageStatus::Cancelled => 1,
                _ => 2,
            });
        for conn in self.conns {
            self.w.disconnect(conn);
        }
        self.w
            .run_for(Duration::from_secs(80), Duration::from_secs(1));
        self.checker.check(&self.w)?;
        for (i, n) in self.w.nodes.iter().enumerate() {
            if n.node.holds_state() {
                return Err(Violation {
                    invariant: 7,
                    detail: format!("n{i} still holds state after everyone left"),
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
        Ok(outcome)
    }
}

/// The starting state: both connections open and past their handshakes.
fn initial(bounds: &Bounds) -> State {
    let mut w = World::new(&WorldConfig {
        nodes: 2,
        seed: 7,
        small_steps: bounds.small_steps,
        ..WorldConfig::default()
    });
    let c1 = w.connect(0, "u0", "s0", None);
    let c2 = w.connect(1, "u0", "s0", None);
    w.settle_queues();
    State {
        w,
        checker: Checker::new(),
        conns: [c1, c2],
        chatted: false,
        cancelled: false,
        deltas: 0,
        finished: false,
        crashed: false,
        lost: false,
    }
}

/// Explores every state reachable within `bounds`.
pub fn explore(bounds: Bounds) -> Result<Report, Counterexample> {
    let mut report = Report::default();
    let start = initial(&bounds);
    let mut seen: HashSet<u64> = HashSet::new();
    seen.insert(start.fingerprint());
    report.states = 1;
    // Depth-first: (state, its enabled events, the next to try, the path).
    let mut stack: Vec<(State, Vec<Event>, usize)> = Vec::new();
    let mut path: Vec<Event> = Vec::new();
    let events = start.enabled(&bounds);
    stack.push((start, events, 0));
    while let Some((state, events, next)) = stack.last_mut() {
        if *next == 0 && events.is_empty() {
            let terminal = state.clone();
            report.terminal += 1;
            let outcome = terminal.quiesce().map_err(|violation| Counterexample {
                violation,
                path: path.clone(),
            })?;
            report.outcomes[outcome] += 1;
        }
        if *next >= events.len() {
            stack.pop();
            path.pop();
            continue;
        }
        let e = events[*next];
        *next += 1;
        let mut succ = state.clone();
        succ.apply(e);
        report.transitions += 1;
        path.push(e);
        if let Err(violation) = succ.checker.check(&succ.w) {
            return Err(Counterexample {
                violation,
                path: path.clone(),
            });
        }
        if seen.insert(succ.fingerprint()) {
            report.states += 1;
            report.max_depth = report.max_depth.max(path.len());
            let events = succ.enabled(&bounds);
            stack.push((succ, events, 0));
        } else {
            path.pop();
        }
    }
    Ok(report)
}
