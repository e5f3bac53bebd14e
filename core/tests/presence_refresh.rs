//! A node refreshes its users' presence entries a third of an entry's
//! lifetime apart, not at every housekeeping: the refresh is one store call
//! per user (one Redis script each), so a node holding 20 000 users that
//! refreshed them every 2 s sent 10 000 calls a second to keep entries that
//! live 30 s (seen in `cluster_bench storm`). Driven like a runtime drives
//! the node (the in-memory store, timers fired when due).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use weir_core::store::StoreOp;
use weir_core::{
    Config, ConnId, Input, MemoryStore, Model, Node, NodeId, Output, SeededIds, SessionId,
    StoreConfig, UserId,
};

/// Runs `node` until `until`, firing its timers when due and carrying out
/// its store operations; returns when each presence refresh was sent.
fn run_until(node: &mut Node<SeededIds>, store: &mut MemoryStore, until: Instant) -> Vec<Instant> {
    let mut refreshes = Vec::new();
    let mut now = node.poll_timeout().unwrap_or(until);
    loop {
        loop {
            let mut inbox = VecDeque::new();
            while let Some(output) = node.poll_output() {
                match output {
                    Output::Store { op, request } => {
                        if matches!(request, StoreOp::PresenceRefresh(_)) {
                            refreshes.push(now);
                        }
                        inbox.extend(store.apply(op, request));
                    }
                    Output::Subscribe(topic) => store.subscribe(&topic),
                    _ => {}
                }
            }
            if inbox.is_empty() {
                break;
            }
            for input in inbox {
                node.handle_input(now, input);
            }
        }
        match node.poll_timeout() {
            Some(t) if t <= until => {
                now = t.max(now);
                node.handle_timeout(now);
            }
            _ => return refreshes,
        }
    }
}

#[test]
fn presence_is_refreshed_a_third_of_the_entry_lifetime_apart_not_at_every_housekeeping() {
    // The test stands in for a runtime, which reads the clock.
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let config = Config::new(NodeId::parse("n1").expect("node id"));
    let (housekeeping, ttl) = (config.housekeeping, config.presence.entry_ttl_ms);
    let every = Duration::from_millis(ttl / 3);
    assert!(
        every > housekeeping * 2,
        "the defaults make the test meaningful"
    );
    let mut node = Node::new(config, SeededIds::new(3), start, 1_700_000_000_000);
    let mut store = MemoryStore::new(Model::new(StoreConfig::default(), 1));
    node.handle_input(
        start,
        Input::Connect {
            conn: ConnId(1),
            user: UserId::parse("alice").expect("user id"),
            session: SessionId::parse("s").expect("session id"),
            resume: None,
            ip: None,
        },
    );
    // Three entry lifetimes: the connection stays (pings are not answered
    // here, so the idle timeout is what bounds it: longer than that).
    let span = Duration::from_millis(ttl * 3).min(Duration::from_secs(55));
    let refreshes = run_until(&mut node, &mut store, start + span);
    assert!(
        refreshes.len() >= 2,
        "refreshed at least twice in {span:?}: {refreshes:?}"
    );
    for pair in refreshes.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= every,
            "refreshes {gap:?} apart (housekeeping {housekeeping:?}), not at least {every:?}"
        );
        assert!(
            gap <= every + housekeeping,
            "refreshes {gap:?} apart: an entry of {ttl} ms must be kept alive"
        );
    }
}
