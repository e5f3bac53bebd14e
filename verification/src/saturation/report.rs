//! What a saturated seed reports: the seeded bugs it can switch on, its
//! figures, and a failure with the command that replays it.

use std::fmt;
use std::time::Duration;

use crate::check::Violation;

/// A return to what the probe found (issue 17, point 1), in the simulated
/// runtime or the nodes' settings, never in weir-core: each must make the
/// simulation fail with invariant 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SatBug {
    /// The core without its bounds: one append carries every queued delta
    /// and one step hands every deliverable chunk to every connection
    /// (`append_max_chunks`, `append_max_bytes` and `fanout_slice` at
    /// `usize::MAX`).
    UnboundedBatches,
    /// The driver before the fix: the node's timers fire only when no input
    /// waits, and the store's replies wait in line with every other input.
    TimersWaitForIdle,
}

impl SatBug {
    /// Every saturation bug.
    pub const ALL: [Self; 2] = [Self::UnboundedBatches, Self::TimersWaitForIdle];

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

/// What one seed did, or (merged) many.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SatStats {
    /// Seeds in which `n0` only fanned out another node's fast reply.
    pub bystander_seeds: u32,
    /// Steps the nodes took.
    pub steps: u64,
    /// Frames handed to connections.
    pub frames: u64,
    /// Deltas the fast generators produced.
    pub fast_chunks: u64,
    /// Lease renewals that reached the store.
    pub renewals: u64,
    /// Stalls of a node's thread.
    pub stalls: u64,
    /// The longest step.
    pub longest_step: Duration,
    /// The latest a timer fired past its deadline.
    pub latest_timer: Duration,
    /// The most inputs waiting in one node's mailbox.
    pub largest_mailbox: usize,
    /// The longest seed, in virtual time.
    pub virtual_time: Duration,
}

impl SatStats {
    /// Adds `o` (sums, and the largest of the maxima).
    pub fn merge(&mut self, o: &Self) {
        self.bystander_seeds += o.bystander_seeds;
        self.steps += o.steps;
        self.frames += o.frames;
        self.fast_chunks += o.fast_chunks;
        self.renewals += o.renewals;
        self.stalls += o.stalls;
        self.longest_step = self.longest_step.max(o.longest_step);
        self.latest_timer = self.latest_timer.max(o.latest_timer);
        self.largest_mailbox = self.largest_mailbox.max(o.largest_mailbox);
        self.virtual_time = self.virtual_time.max(o.virtual_time);
    }
}

/// A seed that broke an invariant under saturation.
#[derive(Debug, Clone)]
pub struct SatFailure {
    /// The seed.
    pub seed: u64,
    /// The seeded bug, if one was switched on.
    pub bug: Option<SatBug>,
    /// Virtual milliseconds since the start.
    pub at_ms: u64,
    /// What broke.
    pub violation: Violation,
    /// What the seed did until then.
    pub stats: SatStats,
    /// The last steps taken, oldest first.
    pub trace: Vec<String>,
}

impl SatFailure {
    /// The one command that replays this seed.
    #[must_use]
    pub fn replay_command(&self) -> String {
        sat_replay_command(self.seed, self.bug)
    }
}

/// The command that replays saturated seed `seed` (with `bug`, if any).
#[must_use]
pub fn sat_replay_command(seed: u64, bug: Option<SatBug>) -> String {
    let bug = bug.map_or(String::new(), |b| format!("WEIR_SIM_BUG={} ", b.name()));
    format!(
        "{bug}WEIR_SIM_SEED={seed} cargo test -p weir-verification --test simulation \
         replay_one_saturated_seed -- --nocapture"
    )
}

impl fmt::Display for SatFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "saturated seed {} failed at t = {} ms: {}",
            self.seed, self.at_ms, self.violation
        )?;
        writeln!(
            f,
            "longest step {:?}, latest timer {:?} past its deadline, largest mailbox {}",
            self.stats.longest_step, self.stats.latest_timer, self.stats.largest_mailbox
        )?;
        writeln!(f, "last steps:")?;
        for s in &self.trace {
            writeln!(f, "  {s}")?;
        }
        write!(f, "replay: {}", self.replay_command())
    }
}
