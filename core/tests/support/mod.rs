//! A node on the in-memory store, driven as a runtime drives it (each batch
//! of inputs fed before its outputs are carried out), that records the chunk
//! frames it sends: the rig of `chunk_timestamps.rs` and `merged_delivery.rs`.

use std::collections::VecDeque;
use std::time::Instant;

use weir_core::ids::{MessageId, Seq};
use weir_core::wire::Chunk;
use weir_core::{
    Config, ConnId, GeneratorEvent, Input, MemoryStore, Model, Node, Output, SeededIds,
    ServerFrame, SessionId, StoreConfig, UserId,
};

/// Chunk frames as sent: the connections each went to, and the frame.
pub(crate) type Sent = Vec<(Vec<ConnId>, Chunk)>;

pub(crate) struct Rig {
    pub(crate) node: Node<SeededIds>,
    pub(crate) store: MemoryStore,
    pub(crate) now: Instant,
    /// The reply the last `chat` started.
    pub(crate) reply: Option<MessageId>,
}

impl Rig {
    /// A node of `config` whose wall clock reads `wall_ms` at the start,
    /// on a fresh in-memory store.
    // The test stands in for a runtime, which reads the clock; any base
    // instant will do (the tests move time themselves).
    #[allow(clippy::disallowed_methods)]
    pub(crate) fn new(config: Config, wall_ms: u64) -> Self {
        let now = Instant::now();
        Self {
            node: Node::new(config, SeededIds::new(7), now, wall_ms),
            store: MemoryStore::new(Model::new(StoreConfig::default(), 1)),
            now,
            reply: None,
        }
    }

    /// `conn` asks for a reply, which starts a generator.
    pub(crate) fn chat(&mut self, conn: ConnId) {
        self.run(vec![Input::Frame {
            conn,
            bytes: br#"{"type":"chat","content":"hi"}"#.to_vec(),
        }]);
        assert!(self.reply.is_some(), "the chat started a generator");
    }

    /// Feeds `inputs` (all of them before any output is carried out), then
    /// carries out every output until the node is quiet; returns the chunk
    /// frames sent, each with the connections it went to.
    pub(crate) fn run(&mut self, inputs: Vec<Input>) -> Sent {
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

    /// The generator of the current reply produces `deltas`, all ready
    /// together.
    pub(crate) fn deltas(&mut self, deltas: &[&str]) -> Sent {
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

/// Alice's connection `conn` to conversation `chat-1`.
pub(crate) fn connect(conn: ConnId, resume: Option<(MessageId, Seq)>) -> Input {
    Input::Connect {
        conn,
        user: UserId::parse("alice").expect("user id"),
        session: SessionId::parse("chat-1").expect("session id"),
        resume,
        ip: None,
    }
}
