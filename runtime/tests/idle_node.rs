//! An idle node sleeps, on tokio and on smol: with connections open and
//! nothing happening, the driver wakes only for its deadlines (the periodic
//! look at the queues, the wall clock, heartbeats when due), never in a loop.
//!
//! The defect this catches: the driver waits on several channels at once, and
//! with the in-memory store nothing held the store replies' channel open, so
//! every wait ended at once and the idle driver spun — `weir_bench c100k`
//! measured about 100 000 wakes a second and three quarters of a core at
//! 5 000 idle connections. The bound here is two orders of magnitude above
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

async fn an_idle_node_with_open_connections_wakes_only_for_its_deadlines() {
    let server = InProcess::start(demo_config(10, 100.0)).await;
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        clients.push(server.ws(&format!("session_id=idle{i}&user_id=u{i}")).await);
    }
    // Let presence and the joins settle.
    ::tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.metrics().await.get("weir_driver_wakes_total");
    ::tokio::time::sleep(WATCHED).await;
    let wakes = server.metrics().await.get("weir_driver_wakes_total") - before;
    assert!(
        wakes <= MAX_WAKES,
        "{wakes} driver wakes in {WATCHED:?} with {CONNECTIONS} idle connections (at most \
         {MAX_WAKES}): the driver spins instead of waiting"
    );
    drop(clients);
    server.shutdown().await.expect("shuts down");
}
