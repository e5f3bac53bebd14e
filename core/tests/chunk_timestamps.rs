//! `--chunk-timestamps`: a `chunk` frame carries `ts_ns`, the wall-clock time
//! (Unix ns) at which the producing node appended its chunk — read from the
//! core's wall clock, anchored by the runtime with `Input::WallClockNs` —
//! and a merged frame carries its last chunk's. Off by default: no `ts_ns`.
//! Driven like a runtime drives the node (the in-memory store, inputs fed
//! before their outputs are carried out).

mod support;

use std::time::{Duration, Instant};

use support::{connect, Rig, Sent};
use weir_core::{Config, ConnId, Input, NodeId, ServerFrame};

const A: ConnId = ConnId(1);
const LATE: ConnId = ConnId(2);
/// The wall clock's anchor: 2023-11-14T22:13:20.123456789Z.
const ANCHOR_NS: u64 = 1_700_000_000_123_456_789;

/// A node (`chunk_timestamps` as given) whose wall clock is anchored at
/// `ANCHOR_NS`, with connection `A` streaming a reply; the instant it
/// started at.
fn rig(stamped: bool) -> (Rig, Instant) {
    let mut config = Config::new(NodeId::parse("n1").expect("node id"));
    config.chunk_timestamps = stamped;
    let mut rig = Rig::new(config, ANCHOR_NS / 1_000_000);
    let start = rig.now;
    rig.run(vec![
        Input::WallClockNs { unix_ns: ANCHOR_NS },
        connect(A, None),
    ]);
    rig.chat(A);
    (rig, start)
}

/// Moves the rig's clock to `ms` after `start`.
fn at(rig: &mut Rig, start: Instant, ms: u64) {
    rig.now = start + Duration::from_millis(ms);
}

/// The wall clock `ms` after the anchor, in ns.
fn wall_ns_at(ms: u64) -> u64 {
    ANCHOR_NS + ms * 1_000_000
}

/// (first seq, last seq, ts_ns) of each chunk frame.
fn stamps(sent: &Sent) -> Vec<(u64, u64, Option<u64>)> {
    sent.iter()
        .map(|(_, c)| (c.first_seq(), c.seq, c.ts_ns))
        .collect()
}

#[test]
fn chunk_frames_carry_no_timestamp_by_default() {
    let (mut rig, start) = rig(false);
    at(&mut rig, start, 5);
    let sent = rig.deltas(&["a", "b", "c"]);
    assert!(!sent.is_empty());
    assert!(sent.iter().all(|(_, c)| c.ts_ns.is_none()), "{sent:?}");
    assert!(!ServerFrame::Chunk(sent[0].1.clone())
        .encode()
        .contains("ts_ns"));
}

#[test]
fn each_chunk_frame_carries_the_nanosecond_its_chunk_was_appended() {
    let (mut rig, start) = rig(true);
    at(&mut rig, start, 5);
    let sent = rig.deltas(&["a"]);
    assert_eq!(stamps(&sent), [(1, 1, Some(wall_ns_at(5)))]);
    at(&mut rig, start, 9);
    // "b" is appended alone; "c" and "d" wait behind it and go in the next
    // append: one merged frame, stamped with that append's time.
    let sent = rig.deltas(&["b", "c", "d"]);
    assert_eq!(
        stamps(&sent),
        [(2, 2, Some(wall_ns_at(9))), (3, 4, Some(wall_ns_at(9)))]
    );
}

#[test]
fn a_merged_catch_up_frame_carries_its_last_chunks_timestamp() {
    let (mut rig, start) = rig(true);
    at(&mut rig, start, 5);
    let _ = rig.deltas(&["a"]);
    at(&mut rig, start, 20);
    let _ = rig.deltas(&["b"]);
    at(&mut rig, start, 30);
    let id = rig.reply.clone().expect("a reply");
    // A connection that resumes from 0 gets chunks 1..=2 at once, merged,
    // stamped with chunk 2's append (20 ms), not chunk 1's (5 ms) nor now.
    let sent = rig.run(vec![connect(LATE, Some((id, 0)))]);
    let late: Vec<_> = sent
        .iter()
        .filter(|(conns, _)| conns.contains(&LATE))
        .cloned()
        .collect();
    assert_eq!(stamps(&late), [(1, 2, Some(wall_ns_at(20)))]);
}
