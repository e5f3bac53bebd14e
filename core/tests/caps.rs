//! The caps as the node decides them (`weir_core::caps`, `node/caps.rs`):
//! one or two nodes on one reference store, driven by hand. Every refusal
//! is `rate_limited` with `retry_after_ms`, nothing is started, and a slot
//! is given back when its connection closes or its reply ends — or, when
//! its node dies, freed by the store once its lifetime passes.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use weir_core::caps::{Cap, Caps};
use weir_core::wire::{CloseCode, ErrorCode};
use weir_core::{
    Config, ConnId, Event, GeneratorEvent, HttpReqId, HttpRequest, Input, MessageId, Model, Node,
    NodeId, Output, SeededIds, ServerFrame, SessionId, StoreConfig, UserId,
};

const UNIX_MS: u64 = 1_700_000_000_000;

/// Nodes on one store. Notices are not delivered: the caps do not use them
/// (each node learns what it needs from its own store replies).
struct Net {
    model: Model,
    nodes: Vec<Node>,
    inbox: VecDeque<(usize, Input)>,
    frames: BTreeMap<(usize, ConnId), Vec<ServerFrame>>,
    closed: BTreeMap<(usize, ConnId), CloseCode>,
    http: BTreeMap<(usize, HttpReqId), (u16, String)>,
    generators: Vec<(usize, MessageId)>,
    refusals: Vec<Cap>,
    now: Instant,
}

impl Net {
    fn new(nodes: usize, caps: Caps) -> Self {
        // The test is the runtime: it reads the clock once, then moves it.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let nodes = (0..nodes)
            .map(|i| {
                let mut config =
                    Config::new(NodeId::parse(format!("n{i}")).expect("valid in the test"));
                config.caps = caps;
                Node::new(config, SeededIds::new(i as u64 + 1), now, UNIX_MS)
            })
            .collect();
        let mut net = Self {
            model: Model::new(StoreConfig::default(), 1),
            nodes,
            inbox: VecDeque::new(),
            frames: BTreeMap::new(),
            closed: BTreeMap::new(),
            http: BTreeMap::new(),
            generators: Vec::new(),
            refusals: Vec::new(),
            now,
        };
        net.run();
        net
    }

    fn feed(&mut self, node: usize, input: Input) {
        self.inbox.push_back((node, input));
        self.run();
    }

    fn run(&mut self) {
        loop {
            for i in 0..self.nodes.len() {
                while let Some(out) = self.nodes[i].poll_output() {
                    self.carry(i, out);
                }
            }
            let Some((i, input)) = self.inbox.pop_front() else {
                return;
            };
            self.nodes[i].handle_input(self.now, input);
        }
    }

    fn carry(&mut self, i: usize, out: Output) {
        match out {
            Output::Store { op, request } => {
                let (reply, _notices) = self.model.apply(request);
                self.inbox.push_back((
                    i,
                    Input::StoreReply {
                        op,
                        result: Ok(reply),
                    },
                ));
            }
            Output::Send { conn, frame } => self.frames.entry((i, conn)).or_default().push(frame),
            Output::SendMany { conns, frame } => {
                for conn in conns {
                    self.frames
                        .entry((i, conn))
                        .or_default()
                        .push(frame.clone());
                }
            }
            Output::Close { conn, code } => {
                self.closed.insert((i, conn), code);
                self.inbox.push_back((i, Input::Disconnected { conn }));
            }
            Output::StartGenerator { message_id, .. } => self.generators.push((i, message_id)),
            Output::HttpResponse { req, status, body } => {
                self.http.insert((i, req), (status, body));
            }
            Output::Event(Event::RateLimited { cap }) => self.refusals.push(cap),
            _ => {}
        }
    }

    /// Moves time on by `d`, firing every node's timers on the way.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = self
                .nodes
                .iter()
                .filter_map(Node::poll_timeout)
                .filter(|t| *t <= end)
                .min();
            let Some(t) = next else { break };
            self.now = self.now.max(t);
            for n in &mut self.nodes {
                n.handle_timeout(self.now);
            }
            self.run();
        }
        self.now = end;
        for n in &mut self.nodes {
            n.handle_timeout(end);
        }
        self.run();
    }

    fn connect(&mut self, node: usize, conn: u64, user: &str, session: &str, ip: Option<&str>) {
        self.feed(
            node,
            Input::Connect {
                conn: ConnId(conn),
                user: UserId::parse(user).expect("valid in the test"),
                session: SessionId::parse(session).expect("valid in the test"),
                resume: None,
                ip: ip.map(|s| s.parse::<IpAddr>().expect("valid in the test")),
            },
        );
    }

    fn chat(&mut self, node: usize, conn: u64, rid: &str) {
        let bytes = format!(r#"{{"type":"chat","content":"hi","request_id":"{rid}"}}"#);
        self.feed(
            node,
            Input::Frame {
                conn: ConnId(conn),
                bytes: bytes.into_bytes(),
            },
        );
    }

    fn finish(&mut self, node: usize, id: &MessageId) {
        self.feed(
            node,
            Input::Generator {
                message_id: id.clone(),
                event: GeneratorEvent::Finished { usage: None },
            },
        );
    }

    fn kinds(&self, node: usize, conn: u64) -> Vec<&'static str> {
        self.frames
            .get(&(node, ConnId(conn)))
            .map(|f| f.iter().map(ServerFrame::kind).collect())
            .unwrap_or_default()
    }

    /// The last `error` frame on a connection: its code and retry.
    fn last_error(&self, node: usize, conn: u64) -> Option<(ErrorCode, Option<u64>, String)> {
        self.frames
            .get(&(node, ConnId(conn)))?
            .iter()
            .rev()
            .find_map(|f| match f {
                ServerFrame::Error(e) => Some((
                    e.code,
                    e.retry_after_ms,
                    e.request_id
                        .as_ref()
                        .map(|r| r.as_str().to_owned())
                        .unwrap_or_default(),
                )),
                _ => None,
            })
    }

    fn is_open(&self, node: usize, conn: u64) -> bool {
        self.kinds(node, conn).first() == Some(&"hello")
            && !self.closed.contains_key(&(node, ConnId(conn)))
    }
}

fn caps(f: impl FnOnce(&mut Caps)) -> Caps {
    let mut c = Caps::default();
    f(&mut c);
    c
}

#[test]
fn a_user_at_the_streams_cap_is_refused_across_conversations_and_nothing_starts() {
    let mut net = Net::new(1, caps(|c| c.streams_per_user = 2));
    for (conn, session) in [(1, "a"), (2, "b"), (3, "c")] {
        net.connect(0, conn, "alice", session, None);
        assert!(net.is_open(0, conn));
    }
    net.chat(0, 1, "r1");
    net.chat(0, 2, "r2");
    assert_eq!(net.generators.len(), 2);
    net.chat(0, 3, "r3");
    assert_eq!(net.generators.len(), 2, "no generator for the refused chat");
    assert_eq!(
        net.last_error(0, 3),
        Some((ErrorCode::RateLimited, Some(1_000), "r3".to_owned()))
    );
    assert!(!net.kinds(0, 3).contains(&"ack"));
    assert!(net.is_open(0, 3), "the connection stays open");
    assert_eq!(net.refusals, [Cap::UserStreams]);
    // Another user is not counted against alice.
    net.connect(0, 4, "bob", "a", None);
    net.chat(0, 4, "b1");
    assert_eq!(net.generators.len(), 3);
    // One of alice's replies ends: its slot is free again.
    let first = net.generators[0].1.clone();
    net.finish(0, &first);
    net.chat(0, 3, "r4");
    assert_eq!(net.generators.len(), 4);
    assert!(net.kinds(0, 3).contains(&"ack"));
}

#[test]
fn the_chat_rate_allows_the_burst_then_one_chat_per_refill() {
    // 60 a minute (one a second), a burst of 2.
    let mut net = Net::new(
        1,
        caps(|c| {
            c.chats_per_minute = 60;
            c.chat_burst = 2;
        }),
    );
    for (conn, session) in [(1, "a"), (2, "b"), (3, "c")] {
        net.connect(0, conn, "alice", session, None);
    }
    net.chat(0, 1, "r1");
    net.chat(0, 2, "r2");
    net.chat(0, 3, "r3");
    assert_eq!(net.generators.len(), 2);
    assert_eq!(
        net.last_error(0, 3),
        Some((ErrorCode::RateLimited, Some(1_000), "r3".to_owned()))
    );
    assert_eq!(net.refusals, [Cap::ChatRate]);
    // 400 ms later the wait is 600 ms, to the millisecond.
    net.advance(Duration::from_millis(400));
    net.chat(0, 3, "r4");
    assert_eq!(
        net.last_error(0, 3),
        Some((ErrorCode::RateLimited, Some(600), "r4".to_owned()))
    );
    net.advance(Duration::from_millis(600));
    net.chat(0, 3, "r5");
    assert_eq!(net.generators.len(), 3);
}

#[test]
fn a_chat_refused_as_busy_costs_no_streams_slot() {
    let mut net = Net::new(1, caps(|c| c.streams_per_user = 1));
    net.connect(0, 1, "alice", "a", None);
    net.connect(0, 2, "alice", "a", None);
    net.chat(0, 1, "r1");
    // The same conversation on another connection: the store answers busy
    // (the slot taken for it goes back).
    net.chat(0, 2, "r2");
    assert_eq!(net.last_error(0, 2).map(|e| e.0), Some(ErrorCode::Busy));
    let id = net.generators[0].1.clone();
    net.finish(0, &id);
    net.connect(0, 3, "alice", "b", None);
    net.chat(0, 3, "r3");
    assert_eq!(net.generators.len(), 2, "the busy chat's slot was released");
}

#[test]
fn an_http_post_over_a_cap_is_429_with_retry_after_and_starts_nothing() {
    let mut net = Net::new(
        1,
        caps(|c| {
            c.chats_per_minute = 1;
            c.chat_burst = 1;
        }),
    );
    let post = |n: &mut Net, req: u64| {
        n.feed(
            0,
            Input::Http {
                req: HttpReqId(req),
                user: UserId::parse("alice").expect("valid in the test"),
                request: HttpRequest::PostMessage {
                    session: SessionId::parse(format!("s{req}")).expect("valid in the test"),
                    body: br#"{"content":"hi"}"#.to_vec(),
                },
            },
        );
    };
    post(&mut net, 1);
    assert_eq!(net.http[&(0, HttpReqId(1))].0, 202);
    post(&mut net, 2);
    let (status, body) = &net.http[&(0, HttpReqId(2))];
    assert_eq!(*status, 429);
    let v: serde_json::Value = serde_json::from_str(body).expect("valid in the test");
    assert_eq!(v["code"], "rate_limited");
    assert_eq!(v["retry_after_ms"], 60_000);
    assert_eq!(net.generators.len(), 1);
}

#[test]
fn a_seed_front_end_post_over_a_cap_is_429_with_detail_and_starts_nothing() {
    let mut net = Net::new(
        1,
        caps(|c| {
            c.chats_per_minute = 1;
            c.chat_burst = 1;
        }),
    );
    let post = |n: &mut Net, req: u64| {
        let body = format!(r#"{{"session_id":"s{req}","message":"hi","user_id":"demo_user"}}"#);
        n.feed(
            0,
            Input::Http {
                req: HttpReqId(req),
                user: UserId::parse("default_user").expect("valid in the test"),
                request: HttpRequest::CompatChat {
                    user: weir_core::dialect::compat_http::CompatUser::FromBody,
                    body: body.into_bytes(),
                },
            },
        );
    };
    post(&mut net, 1);
    assert_eq!(net.http[&(0, HttpReqId(1))].0, 200);
    post(&mut net, 2);
    let (status, body) = &net.http[&(0, HttpReqId(2))];
    assert_eq!(*status, 429, "{body}");
    let v: serde_json::Value = serde_json::from_str(body).expect("valid in the test");
    assert!(
        v["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    assert_eq!(v["retry_after_ms"], 60_000);
    assert_eq!(net.generators.len(), 1, "the refused post started nothing");
}

#[test]
fn the_connection_cap_refuses_before_hello_and_a_close_frees_the_slot() {
    let mut net = Net::new(1, caps(|c| c.connections_per_user = 2));
    net.connect(0, 1, "alice", "a", None);
    net.connect(0, 2, "alice", "b", None);
    net.connect(0, 3, "alice", "c", None);
    assert!(net.is_open(0, 1) && net.is_open(0, 2));
    assert_eq!(net.kinds(0, 3), ["error"], "no hello, no history");
    assert_eq!(
        net.last_error(0, 3).map(|e| (e.0, e.1)),
        Some((ErrorCode::RateLimited, Some(1_000)))
    );
    assert_eq!(net.closed.get(&(0, ConnId(3))), Some(&CloseCode::Policy));
    assert_eq!(net.refusals, [Cap::UserConnections]);
    // The refused connection did not join presence; the others did.
    assert_eq!(
        net.model
            .presence(&UserId::parse("alice").expect("valid in the test"))
            .1,
        2
    );
    net.feed(0, Input::Disconnected { conn: ConnId(1) });
    net.connect(0, 4, "alice", "d", None);
    assert!(net.is_open(0, 4));
}

#[test]
fn the_address_cap_counts_every_user_from_one_address() {
    let mut net = Net::new(1, caps(|c| c.connections_per_ip = 2));
    net.connect(0, 1, "alice", "a", Some("10.0.0.7"));
    net.connect(0, 2, "bob", "a", Some("10.0.0.7"));
    net.connect(0, 3, "carol", "a", Some("10.0.0.7"));
    net.connect(0, 4, "carol", "a", Some("10.0.0.8"));
    net.connect(0, 5, "carol", "b", None);
    assert!(net.is_open(0, 1) && net.is_open(0, 2));
    assert_eq!(net.kinds(0, 3), ["error"]);
    assert!(net.is_open(0, 4), "another address");
    assert!(net.is_open(0, 5), "no address known: not counted");
    assert_eq!(net.refusals, [Cap::IpConnections]);
}

#[test]
fn a_connection_refused_by_its_user_gives_its_address_slot_back() {
    let mut net = Net::new(
        1,
        caps(|c| {
            c.connections_per_ip = 2;
            c.connections_per_user = 1;
        }),
    );
    net.connect(0, 1, "alice", "a", Some("10.0.0.7"));
    net.connect(0, 2, "alice", "b", Some("10.0.0.7"));
    assert_eq!(net.kinds(0, 2), ["error"]);
    net.connect(0, 3, "bob", "a", Some("10.0.0.7"));
    assert!(
        net.is_open(0, 3),
        "alice's refused connection holds no address slot"
    );
}

#[test]
fn caps_hold_across_nodes_on_one_store() {
    let mut net = Net::new(
        2,
        caps(|c| {
            c.connections_per_user = 1;
            c.streams_per_user = 1;
        }),
    );
    net.connect(0, 1, "alice", "a", None);
    net.connect(1, 1, "alice", "b", None);
    assert!(net.is_open(0, 1));
    assert_eq!(net.kinds(1, 1), ["error"], "refused on the other node");
    net.connect(1, 2, "bob", "a", None);
    net.connect(0, 2, "bob", "b", None);
    assert!(net.is_open(1, 2));
    assert_eq!(net.kinds(0, 2), ["error"]);
}

#[test]
fn a_dead_nodes_slots_free_themselves_and_a_live_nodes_are_kept() {
    let mut net = Net::new(2, caps(|c| c.connections_per_user = 1));
    net.connect(0, 1, "alice", "a", None);
    // Node 0 keeps its slot alive through its housekeeping: 50 s later
    // (past the slot's 30 s lifetime, before the connection's idle timeout)
    // alice is still at her cap on node 1.
    net.advance(Duration::from_secs(50));
    net.connect(1, 1, "alice", "b", None);
    assert_eq!(net.kinds(1, 1), ["error"]);
    // Node 0 dies (no more inputs or timers): within the slot's lifetime
    // (the presence entries' 30 s) plus a keep period, it is free.
    net.nodes.remove(0);
    net.advance(Duration::from_secs(31));
    net.connect(0, 2, "alice", "c", None);
    assert!(net.is_open(0, 2), "the dead node's slot expired");
}

#[test]
fn with_every_cap_off_nothing_asks_the_store_first() {
    let mut net = Net::new(1, Caps::default());
    net.connect(0, 1, "alice", "a", None);
    net.chat(0, 1, "r1");
    assert_eq!(net.kinds(0, 1)[..3], ["hello", "history", "ack"]);
    assert_eq!(
        net.model.cap_slots(
            &weir_core::store::CapScope::User(UserId::parse("alice").expect("valid in the test")),
            weir_core::store::SlotKind::Connections
        ),
        0
    );
}

#[test]
fn two_chats_out_at_once_on_one_connection_each_give_their_slot_back() {
    let mut net = Net::new(1, caps(|c| c.streams_per_user = 2));
    net.connect(0, 1, "alice", "a", None);
    // Two chats with idempotency keys before either is answered: the
    // conversation takes one, the other is busy; one slot is left held.
    let chat = |key: &str| {
        format!(r#"{{"type":"chat","content":"hi","client_message_id":"{key}"}}"#).into_bytes()
    };
    net.inbox.push_back((
        0,
        Input::Frame {
            conn: ConnId(1),
            bytes: chat("k1"),
        },
    ));
    net.inbox.push_back((
        0,
        Input::Frame {
            conn: ConnId(1),
            bytes: chat("k2"),
        },
    ));
    net.run();
    assert_eq!(net.generators.len(), 1);
    let scope = weir_core::store::CapScope::User(UserId::parse("alice").expect("valid"));
    assert_eq!(
        net.model
            .cap_slots(&scope, weir_core::store::SlotKind::Streams),
        1,
        "the busy chat's slot went back, the reply's is held"
    );
    let id = net.generators[0].1.clone();
    net.finish(0, &id);
    assert_eq!(
        net.model
            .cap_slots(&scope, weir_core::store::SlotKind::Streams),
        0
    );
}
