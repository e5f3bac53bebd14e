//! Seeded simulation of a weir cluster with faults (see
//! `weir_verification::sim`): many seeds per run, every invariant checked
//! after every step, a failing seed printed with the command that replays
//! it; and, for each invariant, a seeded bug that the simulation catches.
//!
//! `WEIR_SIM_SEEDS=N` runs N seeds (default 1000); `WEIR_SIM_FIRST=S` starts
//! at seed S (default 0). `WEIR_SIM_SEED=S` (with `WEIR_SIM_BUG=Name`
//! optionally) replays one seed in `replay_one_seed`.

use std::time::Instant;

use weir_verification::sim::{replay_command, run_seed, Bug, Stats};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Seeds 0.. (WEIR_SIM_SEEDS of them, 1000 by default): a cluster of 2–4
/// nodes and 2–5 clients with dropped and delayed notices, delayed and
/// reordered store replies, failing store operations, node crashes and
/// restarts, a store restart, reconnects with resume and slow clients keeps
/// every invariant after every step, and settles and cleans up at the end.
#[test]
fn seeded_cluster_simulation_keeps_every_invariant() {
    let seeds = env_u64("WEIR_SIM_SEEDS", 1000);
    let first = env_u64("WEIR_SIM_FIRST", 0);
    let started = Instant::now();
    let mut total = Stats::default();
    for seed in first..first + seeds {
        match run_seed(seed, None) {
            Ok(stats) => total += stats,
            Err(failure) => panic!("{failure}"),
        }
    }
    eprintln!(
        "{seeds} seeds in {:.1?}: {total:?}",
        started.elapsed()
    );
    // The faults were exercised, not just configured.
    assert!(total.crashes > 0 && total.store_restarts > 0 && total.dropped_notices > 0);
    assert!(total.resumes > 0 && total.slow_closes > 0 && total.failed_ops > 0);
    assert!(total.outcomes.iter().all(|n| *n > 0), "{:?}", total.outcomes);
}

/// Replays one seed: `WEIR_SIM_SEED=S` (default 0), with `WEIR_SIM_BUG`
/// switched on when given. A failure prints its last steps and the replay
/// command.
#[test]
fn replay_one_seed() {
    let seed = env_u64("WEIR_SIM_SEED", 0);
    let bug = std::env::var("WEIR_SIM_BUG").ok().map(|name| {
        Bug::parse(&name).unwrap_or_else(|| panic!("no seeded bug named {name:?}: {:?}", Bug::ALL))
    });
    match run_seed(seed, bug) {
        Ok(stats) => eprintln!("seed {seed} passed: {stats:?}"),
        Err(failure) => panic!("{failure}"),
    }
}

/// Runs seeds with `bug` on until one fails; the failure must name the
/// invariant the bug breaks.
fn caught(bug: Bug) {
    let limit = env_u64("WEIR_SIM_BUG_SEEDS", 300);
    for seed in 0..limit {
        if let Err(failure) = run_seed(seed, Some(bug)) {
            eprintln!("{bug:?} caught: {failure}");
            assert_eq!(
                failure.violation.invariant,
                bug.invariant(),
                "{bug:?} was caught by the wrong rule: {failure}"
            );
            assert_eq!(failure.replay_command(), replay_command(seed, Some(bug)));
            return;
        }
    }
    panic!("{bug:?} survived {limit} seeds: invariant {} is not checked", bug.invariant());
}

#[test]
fn seeded_bug_flipping_an_outcome_breaks_invariant_1() {
    caught(Bug::SettledNoticeFlipsOutcome);
}

#[test]
fn seeded_bug_answering_cancelled_for_a_completed_reply_breaks_invariant_2() {
    caught(Bug::CancelOfCompletedAnswersCancelled);
}

#[test]
fn seeded_bug_accepting_appends_after_cancel_breaks_invariant_3() {
    caught(Bug::AppendAcceptedAfterCancel);
}

#[test]
fn seeded_bug_sending_a_chunk_twice_breaks_invariant_4() {
    caught(Bug::ChunkFrameSentTwice);
}

#[test]
fn seeded_bug_starting_on_a_stale_replica_breaks_invariant_5() {
    caught(Bug::BusyStartLandsOnStaleReplica);
}

#[test]
fn seeded_bug_never_reaping_breaks_invariant_6() {
    caught(Bug::StoreNeverReaps);
}

#[test]
fn seeded_bug_losing_a_store_reply_breaks_invariant_7() {
    caught(Bug::PresenceLeaveReplyLost);
}

#[test]
fn seeded_bug_garbling_chunk_notices_breaks_invariant_8() {
    caught(Bug::ChunkNoticeTextGarbled);
}
