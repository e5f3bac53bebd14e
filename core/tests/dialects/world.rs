//! A node and the in-memory store, carrying out every output and keeping
//! the frames each connection got (the generators are driven by the test).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_core::dialect::Dialect;
use weir_core::{
    Config, ConnId, Event, GeneratorEvent, Input, MemoryStore, MessageId, Model, Node, NodeId,
    Output, SeededIds, ServerFrame, SessionId, StoreConfig, UserId,
};

pub(crate) struct World {
    pub(crate) node: Node,
    pub(crate) store: MemoryStore,
    pub(crate) now: Instant,
    pub(crate) inbox: VecDeque<Input>,
    pub(crate) frames: BTreeMap<ConnId, Vec<ServerFrame>>,
    /// How many `SendMany` carried each frame kind (native fan-out stays shared).
    pub(crate) shared: Vec<(usize, &'static str)>,
    pub(crate) ignored: usize,
    pub(crate) started: Vec<MessageId>,
}

impl World {
    pub(crate) fn new() -> Self {
        let now = Instant::now();
        Self {
            node: Node::new(
                Config::new(NodeId::parse("n1").unwrap()),
                SeededIds::new(7),
                now,
                1_800_000_000_000,
            ),
            store: MemoryStore::new(Model::new(StoreConfig::default(), 1)),
            now,
            inbox: VecDeque::new(),
            frames: BTreeMap::new(),
            shared: Vec::new(),
            ignored: 0,
            started: Vec::new(),
        }
    }

    pub(crate) fn feed(&mut self, input: Input) {
        self.inbox.push_back(input);
        self.settle();
    }

    /// Feeds every input and carries out every output (generators do not
    /// answer by themselves: the test drives them).
    pub(crate) fn settle(&mut self) {
        loop {
            while let Some(out) = self.node.poll_output() {
                match out {
                    Output::Send { conn, frame } => {
                        self.frames.entry(conn).or_default().push(frame)
                    }
                    Output::SendMany { conns, frame } => {
                        self.shared.push((conns.len(), frame.kind()));
                        for c in conns {
                            self.frames.entry(c).or_default().push(frame.clone());
                        }
                    }
                    Output::Store { op, request } => {
                        self.inbox.extend(self.store.apply(op, request))
                    }
                    Output::Subscribe(t) => self.store.subscribe(&t),
                    Output::Unsubscribe(t) => self.store.unsubscribe(&t),
                    Output::StartGenerator { message_id, .. } => self.started.push(message_id),
                    Output::Close { conn, .. } => {
                        self.inbox.push_back(Input::Disconnected { conn })
                    }
                    Output::Event(Event::FrameIgnored { .. }) => self.ignored += 1,
                    _ => {}
                }
            }
            match self.inbox.pop_front() {
                Some(input) => self.node.handle_input(self.now, input),
                None => break,
            }
        }
    }

    /// Moves time on by `ms`, firing timers on the way.
    pub(crate) fn advance(&mut self, ms: u64) {
        let until = self.now + Duration::from_millis(ms);
        while let Some(t) = self.node.poll_timeout().filter(|t| *t <= until) {
            self.now = self.now.max(t);
            self.node.handle_timeout(self.now);
            self.settle();
        }
        self.now = until;
    }

    pub(crate) fn connect(&mut self, conn: u64, dialect: Option<Dialect>) -> ConnId {
        let conn = ConnId(conn);
        let user = UserId::parse("demo_user").unwrap();
        let session = SessionId::parse("session_1").unwrap();
        self.feed(match dialect {
            None => Input::Connect {
                conn,
                user,
                session,
                resume: None,
                ip: None,
            },
            Some(dialect) => Input::ConnectWith {
                conn,
                user,
                session,
                dialect,
                ip: None,
            },
        });
        conn
    }

    pub(crate) fn frame(&mut self, conn: ConnId, text: &str) {
        self.feed(Input::Frame {
            conn,
            bytes: text.as_bytes().to_vec(),
        });
    }

    pub(crate) fn generate(&mut self, event: GeneratorEvent) {
        let message_id = self.started.last().unwrap().clone();
        self.feed(Input::Generator { message_id, event });
    }

    /// The compat frames `conn` got, as text, and clears them.
    pub(crate) fn take_text(&mut self, conn: ConnId) -> Vec<String> {
        self.frames
            .remove(&conn)
            .unwrap_or_default()
            .iter()
            .map(|f| {
                assert!(matches!(f, ServerFrame::Dialect(_)), "native frame {f:?}");
                f.encode()
            })
            .collect()
    }

    pub(crate) fn take_json(&mut self, conn: ConnId) -> Vec<Value> {
        self.take_text(conn)
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect()
    }
}
