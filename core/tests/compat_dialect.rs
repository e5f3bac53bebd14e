//! The compat dialect (`/ws/chat`) through a whole node and the in-memory
//! store: what a compat connection receives while a native connection of
//! the same conversation chats, cancels and reconnects.
#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "a test: ids are literals, and the node is handed a base instant to count from"
)]

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_core::dialect::Dialect;
use weir_core::{
    Config, ConnId, Event, GeneratorEvent, Input, MemoryStore, MessageId, Model, Node, NodeId,
    Output, SeededIds, ServerFrame, SessionId, StoreConfig, UserId,
};

struct World {
    node: Node,
    store: MemoryStore,
    now: Instant,
    inbox: VecDeque<Input>,
    frames: BTreeMap<ConnId, Vec<ServerFrame>>,
    /// How many `SendMany` carried each frame kind (native fan-out stays shared).
    shared: Vec<(usize, &'static str)>,
    ignored: usize,
    started: Vec<MessageId>,
}

impl World {
    fn new() -> Self {
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

    fn feed(&mut self, input: Input) {
        self.inbox.push_back(input);
        self.settle();
    }

    /// Feeds every input and carries out every output (generators do not
    /// answer by themselves: the test drives them).
    fn settle(&mut self) {
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
    fn advance(&mut self, ms: u64) {
        let until = self.now + Duration::from_millis(ms);
        while let Some(t) = self.node.poll_timeout().filter(|t| *t <= until) {
            self.now = self.now.max(t);
            self.node.handle_timeout(self.now);
            self.settle();
        }
        self.now = until;
    }

    fn connect(&mut self, conn: u64, dialect: Option<Dialect>) -> ConnId {
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

    fn frame(&mut self, conn: ConnId, text: &str) {
        self.feed(Input::Frame {
            conn,
            bytes: text.as_bytes().to_vec(),
        });
    }

    fn generate(&mut self, event: GeneratorEvent) {
        let message_id = self.started.last().unwrap().clone();
        self.feed(Input::Generator { message_id, event });
    }

    /// The compat frames `conn` got, as text, and clears them.
    fn take_text(&mut self, conn: ConnId) -> Vec<String> {
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

    fn take_json(&mut self, conn: ConnId) -> Vec<Value> {
        self.take_text(conn)
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect()
    }
}

fn types(frames: &[Value]) -> Vec<&str> {
    frames.iter().map(|f| f["type"].as_str().unwrap()).collect()
}

#[test]
fn a_compat_connection_sees_welcome_history_accumulated_text_and_one_final_frame() {
    let mut w = World::new();
    let compat = w.connect(1, Some(Dialect::Compat));
    let native = w.connect(2, None);
    let first = w.take_json(compat);
    assert_eq!(types(&first), ["welcome", "history"]);
    assert_eq!(first[0]["sessionId"], "session_1");
    assert_eq!(first[1]["messages"], serde_json::json!([]));
    w.frame(native, r#"{"type":"chat","content":"hi"}"#);
    for d in ["Xin", " chào", " bạn"] {
        w.generate(GeneratorEvent::Delta(d.into()));
    }
    w.advance(60);
    w.generate(GeneratorEvent::Delta("!".into()));
    w.generate(GeneratorEvent::Finished { usage: None });
    w.advance(200);
    let got = w.take_json(compat);
    assert!(
        types(&got).iter().all(|t| *t == "message"),
        "no echo, no native frames: {got:?}"
    );
    let contents: Vec<&str> = got
        .iter()
        .map(|f| f["data"]["content"].as_str().unwrap())
        .collect();
    for pair in contents.windows(2) {
        assert!(
            pair[1].starts_with(pair[0]),
            "grows monotonically: {contents:?}"
        );
    }
    let finals: Vec<&Value> = got
        .iter()
        .filter(|f| f["data"]["is_complete"] == true)
        .collect();
    assert_eq!(finals.len(), 1, "{got:?}");
    assert_eq!(
        got.last().unwrap()["data"]["is_complete"],
        true,
        "nothing after the final frame"
    );
    assert_eq!(finals[0]["data"]["content"], "Xin chào bạn!");
    assert_eq!(finals[0]["data"]["chunk"], Value::Null);
    assert!(
        got.len() < 6,
        "4 chunks within 60 ms coalesce: {contents:?}"
    );
    // The native connection got the native frames.
    let native_kinds: Vec<&str> = w.frames[&native].iter().map(ServerFrame::kind).collect();
    assert!(native_kinds.contains(&"user_message") && native_kinds.contains(&"end"));
}

#[test]
fn a_cancelled_reply_ends_with_the_suffix_live_and_in_history() {
    let mut w = World::new();
    let compat = w.connect(1, Some(Dialect::Compat));
    let native = w.connect(2, None);
    w.frame(native, r#"{"type":"chat","content":"hi"}"#);
    w.generate(GeneratorEvent::Delta("part".into()));
    w.frame(native, r#"{"type":"cancel"}"#);
    w.advance(5_000);
    let got = w.take_json(compat);
    let last = got.last().unwrap();
    assert_eq!(last["data"]["is_complete"], true);
    assert_eq!(last["data"]["content"], "part\n\n[Đã hủy]");
    let reconnect = w.connect(3, Some(Dialect::Compat));
    let got = w.take_json(reconnect);
    assert_eq!(
        types(&got),
        ["welcome", "history", "message"],
        "catch-up: the latest final frame"
    );
    assert_eq!(got[1]["messages"][1]["content"], "part\n\n[Đã hủy]");
    assert_eq!(got[2]["data"]["content"], "part\n\n[Đã hủy]");
    assert_eq!(got[2]["data"]["is_complete"], true);
}

#[test]
fn a_connection_during_a_reply_catches_up_and_goes_on() {
    let mut w = World::new();
    let native = w.connect(2, None);
    w.frame(native, r#"{"type":"chat","content":"hi"}"#);
    w.generate(GeneratorEvent::Delta("ab".into()));
    let compat = w.connect(1, Some(Dialect::Compat));
    let got = w.take_json(compat);
    assert_eq!(types(&got), ["welcome", "history", "message"]);
    assert_eq!(got[2]["data"]["content"], "ab");
    assert_eq!(got[2]["data"]["is_complete"], false);
    w.advance(100);
    w.generate(GeneratorEvent::Delta("c".into()));
    w.generate(GeneratorEvent::Finished { usage: None });
    w.advance(100);
    let got = w.take_json(compat);
    assert_eq!(got.last().unwrap()["data"]["content"], "abc");
    assert_eq!(got.last().unwrap()["data"]["is_complete"], true);
}

#[test]
fn pings_are_answered_and_unknown_frames_ignored_without_error() {
    let mut w = World::new();
    let compat = w.connect(1, Some(Dialect::Compat));
    let _ = w.take_text(compat);
    w.frame(compat, r#"{"type":"ping"}"#);
    w.frame(compat, "ping");
    w.frame(compat, r#"{"type":"heartbeat"}"#);
    w.frame(compat, r#"{"type":"chat","content":"hi"}"#);
    w.frame(compat, "{bad json");
    assert_eq!(
        w.take_text(compat),
        [r#"{"type":"pong"}"#, "pong", r#"{"type":"heartbeat_ack"}"#]
    );
    assert_eq!(w.ignored, 2);
    assert!(w.started.is_empty(), "chat does not go over /ws/chat");
    w.frame(compat, r#"{"type":"ping"}"#);
    assert_eq!(w.take_text(compat), [r#"{"type":"pong"}"#], "still usable");
}

#[test]
fn native_connections_keep_their_shared_fan_out_beside_a_compat_one() {
    let mut w = World::new();
    let _compat = w.connect(1, Some(Dialect::Compat));
    let a = w.connect(2, None);
    let _b = w.connect(3, None);
    w.frame(a, r#"{"type":"chat","content":"hi"}"#);
    w.generate(GeneratorEvent::Delta("x".into()));
    assert!(
        w.shared.contains(&(2, "chunk")),
        "the two native connections share one chunk frame: {:?}",
        w.shared
    );
}

#[test]
fn a_released_compat_connection_leaves_no_state() {
    let mut w = World::new();
    let compat = w.connect(1, Some(Dialect::Compat));
    let native = w.connect(2, None);
    w.frame(native, r#"{"type":"chat","content":"hi"}"#);
    w.generate(GeneratorEvent::Delta("a".into()));
    w.generate(GeneratorEvent::Delta("b".into())); // waits for the window
    w.feed(Input::Disconnected { conn: compat });
    w.feed(Input::Disconnected { conn: native });
    w.generate(GeneratorEvent::Finished { usage: None });
    w.advance(120_000);
    assert!(!w.node.holds_state(), "{:?}", w.node);
}
