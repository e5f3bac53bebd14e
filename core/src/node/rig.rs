//! A node and the in-memory store, no runtime, for the node's unit tests:
//! each test feeds inputs, lets time pass, and reads the frames each
//! connection got (`deliver/tests.rs`, `conn/tests.rs`, `owner/store_tests.rs`).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::api::{GeneratorEvent, Input, Output};
use crate::config::Config;
use crate::dialect::Dialect;
use crate::ids::{ConnId, MessageId, NodeId, SeededIds, SessionId, UserId};
use crate::store::{MemoryStore, Model, StoreConfig, StoreError, StoreOp};
use crate::wire::{CloseCode, ServerFrame};
use crate::Node;

/// A node, its store, and what each connection got.
pub(crate) struct Rig {
    pub(crate) node: Node,
    pub(crate) store: MemoryStore,
    pub(crate) now: Instant,
    pub(crate) inbox: VecDeque<Input>,
    pub(crate) frames: BTreeMap<ConnId, Vec<ServerFrame>>,
    pub(crate) closed: BTreeMap<ConnId, CloseCode>,
    pub(crate) generators: Vec<MessageId>,
    /// How many of the next renewals the store fails (`Unavailable`).
    pub(crate) fail_renews: usize,
    /// The renewals the node sent.
    pub(crate) renews: usize,
    /// How many of the next appends the store fails (`Unavailable`).
    pub(crate) fail_appends: usize,
    /// The appends the node sent, and when.
    pub(crate) appends: Vec<Instant>,
    /// How many of the next settles the store fails (`Unavailable`).
    pub(crate) fail_settles: usize,
    /// The settles the node sent, and when.
    pub(crate) settles: Vec<Instant>,
    /// `SendMany` outputs that named fewer than two connections.
    pub(crate) shared_with_one: usize,
}

impl Rig {
    // The node only compares instants, so any base will do; a test has no
    // `now` handed in.
    #[allow(clippy::disallowed_methods)]
    pub(crate) fn new(tune: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::new(NodeId::parse("n1").unwrap());
        tune(&mut config);
        let now = Instant::now();
        let mut rig = Self {
            node: Node::new(config, SeededIds::new(7), now, 1_000),
            store: MemoryStore::new(Model::new(StoreConfig::default(), 1)),
            now,
            inbox: VecDeque::new(),
            frames: BTreeMap::new(),
            closed: BTreeMap::new(),
            generators: Vec::new(),
            fail_renews: 0,
            renews: 0,
            fail_appends: 0,
            appends: Vec::new(),
            fail_settles: 0,
            settles: Vec::new(),
            shared_with_one: 0,
        };
        rig.settle();
        rig
    }

    /// Lets `d` pass, firing what falls due on the way (in steps of at
    /// most 100 ms, as a runtime's timer would).
    pub(crate) fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now = (self.now + Duration::from_millis(100)).min(end);
            self.settle();
        }
    }

    /// Feeds `input`, then everything it leads to, and fires what is due now
    /// (the next step of a delivery).
    pub(crate) fn input(&mut self, input: Input) {
        self.inbox.push_back(input);
        self.settle();
    }

    pub(crate) fn settle(&mut self) {
        loop {
            while let Some(output) = self.node.poll_output() {
                self.carry(output);
            }
            if let Some(input) = self.inbox.pop_front() {
                self.node.handle_input(self.now, input);
            } else if self.node.poll_timeout().is_some_and(|t| t <= self.now) {
                self.node.handle_timeout(self.now);
            } else {
                return;
            }
        }
    }

    pub(crate) fn carry(&mut self, output: Output) {
        match output {
            Output::Send { conn, frame } => self.frames.entry(conn).or_default().push(frame),
            Output::SendMany { conns, frame } => {
                self.shared_with_one += usize::from(conns.len() < 2);
                for conn in conns {
                    self.frames.entry(conn).or_default().push(frame.clone());
                }
            }
            Output::Close { conn, code } => {
                self.closed.insert(conn, code);
                self.inbox.push_back(Input::Disconnected { conn });
            }
            Output::Store { op, request } => {
                let fail = match request {
                    StoreOp::Renew(_) => {
                        self.renews += 1;
                        take_one(&mut self.fail_renews)
                    }
                    StoreOp::Append(_) => {
                        self.appends.push(self.now);
                        take_one(&mut self.fail_appends)
                    }
                    StoreOp::Settle(_) => {
                        self.settles.push(self.now);
                        take_one(&mut self.fail_settles)
                    }
                    _ => false,
                };
                if fail {
                    let result = Err(StoreError::Unavailable("the rig fails it".into()));
                    self.inbox.push_back(Input::StoreReply { op, result });
                } else {
                    self.inbox.extend(self.store.apply(op, request));
                }
            }
            Output::Subscribe(topic) => self.store.subscribe(&topic),
            Output::Unsubscribe(topic) => self.store.unsubscribe(&topic),
            Output::StartGenerator { message_id, .. } => self.generators.push(message_id),
            _ => {}
        }
    }

    pub(crate) fn connect(&mut self, n: u64, resume: Option<(MessageId, u64)>) -> ConnId {
        let conn = ConnId(n);
        self.input(Input::Connect {
            conn,
            user: UserId::parse("alice").unwrap(),
            session: SessionId::parse("s").unwrap(),
            resume,
            ip: None,
        });
        conn
    }

    /// A connection of `dialect` (alice's, conversation `s`).
    pub(crate) fn connect_with(&mut self, conn: ConnId, dialect: Dialect) {
        self.input(Input::ConnectWith {
            user: UserId::parse("alice").unwrap(),
            dialect,
            session: SessionId::parse("s").unwrap(),
            conn,
            ip: None,
        });
    }

    /// `conn` asks for a reply; its id.
    pub(crate) fn chat(&mut self, conn: ConnId) -> MessageId {
        let chat = br#"{"type":"chat","content":"hi","request_id":"r1"}"#;
        self.input(Input::Frame {
            conn,
            bytes: chat.to_vec(),
        });
        self.generators
            .last()
            .cloned()
            .expect("a generator started")
    }

    pub(crate) fn generate(&mut self, id: &MessageId, event: GeneratorEvent) {
        self.input(Input::Generator {
            message_id: id.clone(),
            event,
        });
    }

    pub(crate) fn deltas(&mut self, id: &MessageId, deltas: &[&str]) {
        for d in deltas {
            self.generate(id, GeneratorEvent::Delta((*d).to_owned()));
        }
    }

    /// The frames `conn` got since the last call.
    pub(crate) fn take(&mut self, conn: ConnId) -> Vec<ServerFrame> {
        self.frames.remove(&conn).unwrap_or_default()
    }

    /// The cursor of `conn` on reply `id`.
    pub(crate) fn cursor(&self, conn: ConnId, id: &MessageId) -> Option<u64> {
        self.node.conns[&conn].cursors.get(id).map(|c| c.delivered)
    }
}

/// Takes one from `n` if it is not 0; whether it did.
fn take_one(n: &mut usize) -> bool {
    let some = *n > 0;
    *n = n.saturating_sub(1);
    some
}
