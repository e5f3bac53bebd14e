//! The chunks a connection is given in one step go to it as one frame: a
//! plain `chunk` when it is one, a merged one (`from_seq`) when several were
//! there at once, shared by every connection at the same point (one
//! `SendMany`), and split only past `MERGED_MAX_BYTES` (16 KiB) of text.
//! Driven like a runtime drives the node (the in-memory store, inputs fed
//! before their outputs are carried out).

use std::collections::VecDeque;
use std::time::Instant;

use weir_core::ids::MessageId;
use weir_core::wire::Chunk;
use weir_core::{
    Config, ConnId, GeneratorEvent, Input, MemoryStore, Model, Node, NodeId, Output, SeededIds,
    ServerFrame, SessionId, StoreConfig, UserId,
};

/// A node on the in-memory store, two connections on one conversation.
struct Rig {
    node: Node<SeededIds>,
    store: MemoryStore,
    now: Instant,
    reply: Option<MessageId>,
}

const A: ConnId = ConnId(1);
const B: ConnId = ConnId(2);

impl Rig {
    // The test stands in for a runtime, which reads the clock; any base
    // instant will do (time never moves here).
    #[allow(clippy::disallowed_methods)]
    fn new() -> Self {
        let now = Instant::now();
        let node = Node::new(
            Config::new(NodeId::parse("n1").expect("node id")),
            SeededIds::new(7),
            now,
            1_700_000_000_000,
        );
        let mut rig = Self {
            node,
            store: MemoryStore::new(Model::new(StoreConfig::default(), 1)),
            now,
            reply: None,
        };
        for conn in [A, B] {
            rig.run(vec![Input::Connect {
                conn,
                user: UserId::parse("alice").expect("user id"),
                session: SessionId::parse("chat-1").expect("session id"),
                resume: None,
                ip: None,
            }]);
        }
        rig.run(vec![Input::Frame {
            conn: A,
            bytes: br#"{"type":"chat","content":"hi"}"#.to_vec(),
        }]);
        assert!(rig.reply.is_some(), "the chat started a generator");
        rig
    }

    /// Feeds `inputs` (all of them before any output is carried out), then
    /// carries out every output until the node is quiet; returns the chunk
    /// frames sent, each with the connections it went to.
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

/// (first seq, last seq, text, connections) of each chunk frame sent.
fn shape(sent: &[(Vec<ConnId>, Chunk)]) -> Vec<(u64, u64, String, Vec<ConnId>)> {
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
    let mut rig = Rig::new();
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
    let mut rig = Rig::new();
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
