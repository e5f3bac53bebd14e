//! `--chunk-timestamps`: a `chunk` frame carries `ts_ns`, the wall-clock time
//! (Unix ns) at which the producing node appended its chunk — read from the
//! core's wall clock, anchored by the runtime with `Input::WallClockNs` —
//! and a merged frame carries its last chunk's. Off by default: no `ts_ns`.
//! Driven like a runtime drives the node (the in-memory store, inputs fed
//! before their outputs are carried out).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use weir_core::ids::{MessageId, Seq};
use weir_core::wire::Chunk;
use weir_core::{
    Config, ConnId, GeneratorEvent, Input, MemoryStore, Model, Node, NodeId, Output, SeededIds,
    ServerFrame, SessionId, StoreConfig, UserId,
};

const A: ConnId = ConnId(1);
const LATE: ConnId = ConnId(2);
/// The wall clock's anchor: 2023-11-14T22:13:20.123456789Z.
const ANCHOR_NS: u64 = 1_700_000_000_123_456_789;

struct Rig {
    node: Node<SeededIds>,
    store: MemoryStore,
    start: Instant,
    now: Instant,
    reply: Option<MessageId>,
}

impl Rig {
    // The test stands in for a runtime, which reads the clock; any base
    // instant will do (the test moves time itself).
    #[allow(clippy::disallowed_methods)]
    fn new(stamped: bool) -> Self {
        let now = Instant::now();
        let mut config = Config::new(NodeId::parse("n1").expect("node id"));
        config.chunk_timestamps = stamped;
        let node = Node::new(config, SeededIds::new(7), now, ANCHOR_NS / 1_000_000);
        let mut rig = Self {
            node,
            store: MemoryStore::new(Model::new(StoreConfig::default(), 1)),
            start: now,
            now,
            reply: None,
        };
        rig.run(vec![
            Input::WallClockNs { unix_ns: ANCHOR_NS },
            connect(A, None),
        ]);
        rig.run(vec![Input::Frame {
            conn: A,
            bytes: br#"{"type":"chat","content":"hi"}"#.to_vec(),
        }]);
        assert!(rig.reply.is_some(), "the chat started a generator");
        rig
    }

    /// The wall clock `ms` after the anchor, in ns.
    fn wall_ns_at(ms: u64) -> u64 {
        ANCHOR_NS + ms * 1_000_000
    }

    fn at(&mut self, ms: u64) {
        self.now = self.start + Duration::from_millis(ms);
    }

    /// Feeds `inputs`, carries out every output until the node is quiet;
    /// returns the chunk frames sent with their connections.
    fn run(&mut self, inputs: Vec<Input>) -> Vec<(Vec<ConnId>, Chunk)> {
        let mut sent = Vec::new();
        for input in inputs {
            self.node.handle_input(self.now, input);
        }
        loop {
            let mut inbox = VecDeque::new();
            while let Some(output) = self.node.poll_output() {
                match output {
                    Output::Send {
                        conn,
                        frame: ServerFrame::Chunk(c),
                    } => sent.push((vec![conn], c)),
                    Output::SendMany {
                        conns,
                        frame: ServerFrame::Chunk(c),
                    } => sent.push((conns, c)),
                    Output::Store { op, request } => inbox.extend(self.store.apply(op, request)),
                    Output::Subscribe(topic) => self.store.subscribe(&topic),
                    Output::Unsubscribe(topic) => self.store.unsubscribe(&topic),
                    Output::StartGenerator { message_id, .. } => self.reply = Some(message_id),
                    _ => {}
                }
            }
            if inbox.is_empty() {
                return sent;
            }
            for input in inbox {
                self.node.handle_input(self.now, input);
            }
        }
    }

    fn deltas(&mut self, deltas: &[&str]) -> Vec<(Vec<ConnId>, Chunk)> {
        let message_id = self.reply.clone().expect("a reply");
        self.run(
            deltas
                .iter()
                .map(|d| Input::Generator {
                    message_id: message_id.clone(),
                    event: GeneratorEvent::Delta((*d).to_owned()),
                })
                .collect(),
        )
    }
}

fn connect(conn: ConnId, resume: Option<(MessageId, Seq)>) -> Input {
    Input::Connect {
        conn,
        user: UserId::parse("alice").expect("user id"),
        session: SessionId::parse("chat-1").expect("session id"),
        resume,
        ip: None,
    }
}

/// (first seq, last seq, ts_ns) of each chunk frame.
fn stamps(sent: &[(Vec<ConnId>, Chunk)]) -> Vec<(u64, u64, Option<u64>)> {
    sent.iter()
        .map(|(_, c)| (c.first_seq(), c.seq, c.ts_ns))
        .collect()
}

#[test]
fn chunk_frames_carry_no_timestamp_by_default() {
    let mut rig = Rig::new(false);
    rig.at(5);
    let sent = rig.deltas(&["a", "b", "c"]);
    assert!(!sent.is_empty());
    assert!(sent.iter().all(|(_, c)| c.ts_ns.is_none()), "{sent:?}");
    assert!(!ServerFrame::Chunk(sent[0].1.clone())
        .encode()
        .contains("ts_ns"));
}

#[test]
fn each_chunk_frame_carries_the_nanosecond_its_chunk_was_appended() {
    let mut rig = Rig::new(true);
    rig.at(5);
    let sent = rig.deltas(&["a"]);
    assert_eq!(stamps(&sent), [(1, 1, Some(Rig::wall_ns_at(5)))]);
    rig.at(9);
    // "b" is appended alone; "c" and "d" wait behind it and go in the next
    // append: one merged frame, stamped with that append's time.
    let sent = rig.deltas(&["b", "c", "d"]);
    assert_eq!(
        stamps(&sent),
        [
            (2, 2, Some(Rig::wall_ns_at(9))),
            (3, 4, Some(Rig::wall_ns_at(9)))
        ]
    );
}

#[test]
fn a_merged_catch_up_frame_carries_its_last_chunks_timestamp() {
    let mut rig = Rig::new(true);
    rig.at(5);
    let _ = rig.deltas(&["a"]);
    rig.at(20);
    let _ = rig.deltas(&["b"]);
    rig.at(30);
    let id = rig.reply.clone().expect("a reply");
    // A connection that resumes from 0 gets chunks 1..=2 at once, merged,
    // stamped with chunk 2's append (20 ms), not chunk 1's (5 ms) nor now.
    let sent = rig.run(vec![connect(LATE, Some((id, 0)))]);
    let late: Vec<_> = sent
        .iter()
        .filter(|(conns, _)| conns.contains(&LATE))
        .cloned()
        .collect();
    assert_eq!(stamps(&late), [(1, 2, Some(Rig::wall_ns_at(20)))]);
}
