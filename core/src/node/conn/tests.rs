//! A connection's handshake, on a node and the in-memory store.

use std::time::Duration;

use crate::node::rig::Rig;
use crate::wire::ServerFrame;

#[test]
fn hello_tells_the_heartbeat_and_the_resume_window_in_milliseconds() {
    let mut rig = Rig::new(|c| {
        c.heartbeat = Duration::from_millis(7_250);
        c.timers.grace_ms = 12_000;
    });
    let conn = rig.connect(1, None);
    let frames = rig.take(conn);
    let Some(ServerFrame::Hello(hello)) = frames.first() else {
        panic!("hello first: {frames:?}");
    };
    assert_eq!(hello.heartbeat_ms, 7_250);
    assert_eq!(hello.resume_window_ms, 12_000);
    assert_eq!(hello.connection_id, conn.to_string());
    assert_eq!(hello.node_id.as_str(), "n1");
    assert!(
        matches!(frames.get(1), Some(ServerFrame::History(_))),
        "then history: {frames:?}"
    );
}
