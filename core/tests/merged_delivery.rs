//! The chunks a connection is given in one step go to it as one frame: a
//! plain `chunk` when it is one, a merged one (`from_seq`) when several were
//! there at once, shared by every connection at the same point (one
//! `SendMany`), and split only past `MERGED_MAX_BYTES` (16 KiB) of text.
//! Driven like a runtime drives the node (the in-memory store, inputs fed
//! before their outputs are carried out).

mod support;

use support::{connect, Rig, Sent};
use weir_core::{Config, ConnId, NodeId};

const A: ConnId = ConnId(1);
const B: ConnId = ConnId(2);

/// A node on the in-memory store, two connections on one conversation and
/// a reply streaming.
fn rig() -> Rig {
    let config = Config::new(NodeId::parse("n1").expect("node id"));
    let mut rig = Rig::new(config, 1_700_000_000_000);
    for conn in [A, B] {
        rig.run(vec![connect(conn, None)]);
    }
    rig.chat(A);
    rig
}

/// (first seq, last seq, text, connections) of each chunk frame sent.
fn shape(sent: &Sent) -> Vec<(u64, u64, String, Vec<ConnId>)> {
    sent.iter()
        .map(|(conns, c)| {
            let mut conns = conns.clone();
            conns.sort();
            (c.first_seq(), c.seq, c.delta.clone(), conns)
        })
        .collect()
}

#[test]
fn chunks_there_at_once_go_to_every_connection_as_one_shared_merged_frame() {
    let mut rig = rig();
    // One delta: appended alone, a plain chunk, one frame for both.
    let sent = rig.deltas(&["one "]);
    assert_eq!(shape(&sent), [(1, 1, "one ".into(), vec![A, B])]);
    assert_eq!(sent[0].1.from_seq, None, "a single chunk is a plain frame");
    // Three at once: the first goes to the store alone, the other two wait
    // behind it and are appended together, so they reach both connections
    // as one merged frame (one `SendMany`, one copy of the text).
    let sent = rig.deltas(&["two ", "three ", "four "]);
    assert_eq!(
        shape(&sent),
        [
            (2, 2, "two ".into(), vec![A, B]),
            (3, 4, "three four ".into(), vec![A, B]),
        ]
    );
    assert_eq!(sent[1].1.from_seq, Some(3));
}

#[test]
fn a_merged_frame_carries_at_most_16_kib_of_text_unless_one_chunk_is_longer() {
    let mut rig = rig();
    let six = "s".repeat(6 * 1024);
    let twenty = "t".repeat(20 * 1024);
    // 1 alone; then 2..=4 together: 12 KiB fit one frame, the third 6 KiB
    // would pass 16 KiB and starts the next; a 20 KiB chunk goes alone.
    let sent = rig.deltas(&["x", &six, &six, &six, &twenty, "y"]);
    let got: Vec<(u64, u64, usize)> = sent
        .iter()
        .map(|(conns, c)| {
            assert_eq!(conns.len(), 2, "both connections share each frame");
            (c.first_seq(), c.seq, c.delta.len())
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, 1, 1),
            (2, 3, 12 * 1024),
            (4, 4, 6 * 1024),
            (5, 5, 20 * 1024),
            (6, 6, 1),
        ]
    );
}
