//! An idle node sleeps, on tokio and on smol: with connections open and
//! nothing happening, the driver wakes only for its deadlines (the periodic
//! look at the queues, the wall clock, heartbeats when due), never in a loop.
//!
//! The defect this catches: the driver waits on several channels at once, and
//! with the in-memory store nothing held the store replies' channel open, so
//! every wait ended at once and the idle driver spun — `weir_bench c100k`
//! measured about 100 000 wakes a second and three quarters of a core at
//! 5 000 idle connections. And the second one: the driver's look at the
//! queues (once a second) told the core every connection's lag, an input per
//! connection per second even with every queue empty — at 19 000 idle
//! connections a third of the idle CPU (`weir_bench c100k`, perf). The bound here is two orders of magnitude above
//! what an idle node needs and three below what a spinning one does.

use std::time::Duration;

use weir_tests::{demo_config, InProcess};

weir_tests::both_runtimes! {
    an_idle_node_with_open_connections_wakes_only_for_its_deadlines,
}

/// Connections held open while the node is watched.
const CONNECTIONS: usize = 20;
/// How long the node is watched.
const WATCHED: Duration = Duration::from_secs(3);
/// The most wakes allowed meanwhile: the queues are looked at once a second
/// and nothing else is due (the default heartbeat is 15 s).
const MAX_WAKES: f64 = 100.0;
/// The most core inputs allowed meanwhile: none is needed per idle
/// connection (the presence refreshes of their users are store replies,
/// fewer than one per user here).
const MAX_INPUTS: f64 = 20.0;

async fn an_idle_node_with_open_connections_wakes_only_for_its_deadlines() {
    let server = InProcess::start(demo_config(10, 100.0)).await;
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        clients.push(server.ws(&format!("session_id=idle{i}&user_id=u{i}")).await);
    }
    // Let presence and the joins settle, and the driver look at the new
    // queues once (its first look tells the core each one is empty).
    ::tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = server.metrics().await;
    let (before, inputs_before) = (
        m.get("weir_driver_wakes_total"),
        m.get("weir_core_inputs_total"),
    );
    ::tokio::time::sleep(WATCHED).await;
    let m = server.metrics().await;
    let wakes = m.get("weir_driver_wakes_total") - before;
    let inputs = m.get("weir_core_inputs_total") - inputs_before;
    eprintln!("{wakes} driver wakes and {inputs} core inputs in {WATCHED:?}");
    assert!(
        wakes <= MAX_WAKES,
        "{wakes} driver wakes in {WATCHED:?} with {CONNECTIONS} idle connections (at most \
         {MAX_WAKES}): the driver spins instead of waiting"
    );
    // The driver looks at every queue once a second; an empty queue is told
    // to the core once, not at every look (which cost an input per
    // connection per second: 60 here).
    assert!(
        inputs <= MAX_INPUTS,
        "{inputs} core inputs in {WATCHED:?} with {CONNECTIONS} idle connections (at most \
         {MAX_INPUTS}): idle connections keep the core busy"
    );
    drop(clients);
    server.shutdown().await.expect("shuts down");
}
