//! Exhaustive exploration of a small cluster (see
//! `weir_verification::explore`): two nodes, two connections, one
//! conversation, up to three chunks, a cancel racing the finish, one owner
//! crash and one lost pub/sub notice, every interleaving explored, every
//! reachable state checked, and "every reply settles" checked at the end of
//! every path. The number of states is pinned: a change in the core, the
//! store model or the harness that changes the reachable behaviour shows up
//! here and must be looked at (then the pin updated, with the reason in the
//! commit).

use std::time::Instant;

use weir_verification::explore::{explore, Bounds};

/// Distinct reachable states of the configuration in `Bounds::default()`.
const PINNED_STATES: usize = 135_881;

#[test]
fn two_nodes_every_interleaving_keeps_invariants_and_settles() {
    let started = Instant::now();
    let report = explore(Bounds::default()).unwrap_or_else(|c| panic!("{c}"));
    eprintln!("{report:?} in {:.1?}", started.elapsed());
    // Every way the race can end was reached: completed (the finish won),
    // cancelled (the cancel won), failed (the owner crashed first).
    assert!(report.outcomes.iter().all(|n| *n > 0), "{report:?}");
    assert_eq!(
        report.states, PINNED_STATES,
        "the number of reachable states changed: {report:?}"
    );
}
