//! A deterministic world for checking the core: real [`Node`]s, the store's
//! reference [`Model`], generators and clients, all in virtual time and
//! driven one step at a time.
//!
//! Nothing here decides anything the core decides: the harness only does
//! what a runtime does (carry frames, apply store operations, deliver
//! notices to subscribers, run generators), and it records every frame each
//! client receives so that checkers can judge the run from the outside.
//!
//! Store operations, their replies and notices wait in queues, so a test can
//! deliver them late, out of order, or (for notices) not at all.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use weir_core::ids::{ConnId, ConvKey, MessageId, NodeId, SeededIds, Seq, SessionId, UserId};
use weir_core::store::{
    Model, Notice, Published, StoreConfig, StoreError, StoreOp, StoreReply, Topic,
};
use weir_core::wire::{CloseCode, ServerFrame};
use weir_core::{Config, Event, GeneratorEvent, HttpReqId, HttpRequest, Input, Node, OpId, Output};

/// The wall clock at virtual time zero.
pub const WALL0: u64 = 1_700_000_000_000;

/// One node and what its runtime would hold.
#[derive(Debug, Clone)]
pub struct NodeSlot {
    /// The core.
    pub node: Node<SeededIds>,
    /// Topics it subscribed to.
    pub subs: BTreeSet<Topic>,
    /// Generators it runs: reply id → conversation.
    pub generators: BTreeMap<MessageId, ConvKey>,
    /// Generators it was told to abort.
    pub aborted: BTreeSet<MessageId>,
    /// Events it reported.
    pub events: Vec<Event>,
}

/// One client connection and everything it received.
#[derive(Debug, Clone)]
pub struct Client {
    /// The node it is connected to.
    pub node: usize,
    /// The conversation.
    pub conv: ConvKey,
    /// Every frame received, in order.
    pub frames: Vec<ServerFrame>,
    /// The close code, once closed by the server.
    pub closed: Option<CloseCode>,
    /// Whether the connection is gone.
    pub gone: bool,
    /// `resume=` it connected with.
    pub resume: Option<(MessageId, Seq)>,
    /// WebSocket pings the server sent it.
    pub pings: usize,
}

/// A store operation on its way to the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InFlightOp {
    /// The node that sent it.
    pub node: usize,
    /// Its id at that node.
    pub op: OpId,
    /// The operation.
    pub request: StoreOp,
    /// The node that sent it crashed: the operation may still reach the
    /// store, but nobody is there to read the reply.
    pub orphan: bool,
}

/// A reply on its way back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InFlightReply {
    /// The node it goes to.
    pub node: usize,
    /// The operation it answers.
    pub op: OpId,
    /// The answer.
    pub result: Result<StoreReply, StoreError>,
}

/// The whole world. Cloning it forks the run (the exhaustive explorer does).
#[derive(Debug, Clone)]
pub struct World {
    /// Virtual time zero.
    pub t0: Instant,
    /// Now.
    pub now: Instant,
    /// The store.
    pub store: Model,
    /// The nodes.
    pub nodes: Vec<NodeSlot>,
    /// Clients by connection id (unique across nodes).
    pub clients: BTreeMap<ConnId, Client>,
    /// Operations not yet applied.
    pub ops: VecDeque<InFlightOp>,
    /// Replies not yet delivered.
    pub replies: VecDeque<InFlightReply>,
    /// Notices not yet delivered: (node, notice).
    pub notices: VecDeque<(usize, Notice)>,
    /// HTTP responses: request → (status, body).
    pub http: BTreeMap<HttpReqId, (u16, String)>,
    next_conn: u64,
    next_req: u64,
}

/// Settings for a world.
#[derive(Debug, Clone)]
pub struct WorldConfig {
    /// How many nodes.
    pub nodes: usize,
    /// The store's settings; nodes get the same timers.
    pub store: StoreConfig,
    /// Seed for the nodes' id sources.
    pub seed: u64,
    /// Whether the nodes work in the smallest steps: appends of at most two
    /// chunks ([`Config::append_max_chunks`]) and one chunk per connection
    /// per step of a fan-out ([`Config::fanout_slice`] of 1), so that
    /// bounded batches and fan-outs that go on at a later step are explored
    /// with the few chunks a test has. Off: the defaults.
    pub small_steps: bool,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            nodes: 1,
            store: StoreConfig::default(),
            seed: 1,
            small_steps: false,
        }
    }
}

impl World {
    /// A world with `config.nodes` nodes named `n0`, `n1`, ….
    #[must_use]
    pub fn new(config: &WorldConfig) -> Self {
        Self::tuned(config, |_| {})
    }

    /// [`World::new`], with each node's [`Config`] adjusted by `tune` after
    /// `config` set it (the saturation simulation scales the fan-out slice to
    /// its cost model, or takes the bounds away for a seeded bug).
    #[must_use]
    pub fn tuned(config: &WorldConfig, tune: impl Fn(&mut Config)) -> Self {
        let t0 = Instant::now();
        let nodes = (0..config.nodes)
            .map(|i| {
                let mut c = Config::new(node_id(i));
                c.timers = config.store.timers;
                c.presence = config.store.presence;
                if config.small_steps {
                    c.append_max_chunks = 2;
                    c.fanout_slice = 1;
                }
                tune(&mut c);
                NodeSlot {
                    node: Node::new(
                        c,
                        SeededIds::new(config.seed.wrapping_mul(31).wrapping_add(i as u64)),
                        t0,
                        WALL0,
                    ),
                    subs: BTreeSet::new(),
                    generators: BTreeMap::new(),
                    aborted: BTreeSet::new(),
                    events: Vec::new(),
                }
            })
            .collect();
        let mut w = Self {
            t0,
            now: t0,
            store: Model::new(config.store, 1),
            nodes,
            clients: BTreeMap::new(),
            ops: VecDeque::new(),
            replies: VecDeque::new(),
            notices: VecDeque::new(),
            http: BTreeMap::new(),
            next_conn: 0,
            next_req: 0,
        };
        for i in 0..w.nodes.len() {
            w.drain(i);
        }
        w
    }

    /// Milliseconds of virtual time since zero.
    #[must_use]
    pub fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.now.duration_since(self.t0).as_millis()).unwrap_or(u64::MAX)
    }

    /// Carries out every output of node `i`.
    pub fn drain(&mut self, i: usize) {
        while let Some(out) = self.nodes[i].node.poll_output() {
            match out {
                Output::Send { conn, frame } => {
                    if let Some(c) = self.clients.get_mut(&conn) {
                        if !c.gone && c.closed.is_none() {
                            c.frames.push(frame);
                        }
                    }
                }
                Output::SendMany { conns, frame } => {
                    for conn in conns {
                        if let Some(c) = self.clients.get_mut(&conn) {
                            if !c.gone && c.closed.is_none() {
                                c.frames.push(frame.clone());
                            }
                        }
                    }
                }
                Output::Ping { conn } => {
                    if let Some(c) = self.clients.get_mut(&conn) {
                        c.pings += 1;
                    }
                }
                Output::Close { conn, code } => {
                    if let Some(c) = self.clients.get_mut(&conn) {
                        c.closed.get_or_insert(code);
                    }
                    // The runtime flushes, closes, and reports the socket gone.
                    self.nodes[i]
                        .node
                        .handle_input(self.now, Input::Disconnected { conn });
                }
                Output::Released { conn } => {
                    if let Some(c) = self.clients.get_mut(&conn) {
                        c.gone = true;
                    }
                }
                Output::Store { op, request } => self.ops.push_back(InFlightOp {
                    node: i,
                    op,
                    request,
                    orphan: false,
                }),
                Output::Subscribe(t) => {
                    self.nodes[i].subs.insert(t);
                }
                Output::Unsubscribe(t) => {
                    self.nodes[i].subs.remove(&t);
                }
                Output::StartGenerator {
                    message_id, conv, ..
                } => {
                    self.nodes[i].generators.insert(message_id, conv);
                }
                Output::AbortGenerator { message_id } => {
                    self.nodes[i].generators.remove(&message_id);
                    self.nodes[i].aborted.insert(message_id);
                }
                Output::HttpResponse { req, status, body } => {
                    self.http.insert(req, (status, body));
                }
                Output::Event(e) => self.nodes[i].events.push(e),
            }
        }
    }

    /// Feeds an input to node `i` and carries out its outputs.
    pub fn input(&mut self, i: usize, input: Input) {
        self.nodes[i].node.handle_input(self.now, input);
        self.drain(i);
    }

    /// Opens a connection to node `i` for `user` on `session`.
    pub fn connect(
        &mut self,
        i: usize,
        user: &str,
        session: &str,
        resume: Option<(MessageId, Seq)>,
    ) -> ConnId {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        let user = UserId::parse(user).unwrap_or_else(|e| panic!("{e}"));
        let session = SessionId::parse(session).unwrap_or_else(|e| panic!("{e}"));
        self.clients.insert(
            conn,
            Client {
                node: i,
                conv: ConvKey::new(user.clone(), session.clone()),
                frames: Vec::new(),
                closed: None,
                gone: false,
                resume: resume.clone(),
                pings: 0,
            },
        );
        self.input(
            i,
            Input::Connect {
                conn,
                user,
                session,
                resume,
                ip: None,
            },
        );
        conn
    }

    /// An HTTP API request from `user` to node `i`.
    pub fn http_request(&mut self, i: usize, user: &str, request: HttpRequest) -> HttpReqId {
        self.next_req += 1;
        let req = HttpReqId(self.next_req);
        let user = UserId::parse(user).unwrap_or_else(|e| panic!("{e}"));
        self.input(i, Input::Http { req, user, request });
        req
    }

    /// The client sends a text frame.
    pub fn send_text(&mut self, conn: ConnId, text: &str) {
        let Some(c) = self.clients.get(&conn) else {
            return;
        };
        if c.gone || c.closed.is_some() {
            return;
        }
        let node = c.node;
        self.input(
            node,
            Input::Frame {
                conn,
                bytes: text.as_bytes().to_vec(),
            },
        );
    }

    /// The client goes away.
    pub fn disconnect(&mut self, conn: ConnId) {
        let Some(c) = self.clients.get_mut(&conn) else {
            return;
        };
        if c.gone {
            return;
        }
        c.gone = true;
        let node = c.node;
        self.input(node, Input::Disconnected { conn });
    }

    /// A generator event for reply `id`, wherever it runs (ignored if no
    /// node runs it).
    pub fn generate(&mut self, id: &MessageId, event: GeneratorEvent) -> bool {
        let Some(i) = self
            .nodes
            .iter()
            .position(|n| n.generators.contains_key(id))
        else {
            return false;
        };
        if !matches!(event, GeneratorEvent::Delta(_)) {
            self.nodes[i].generators.remove(id);
        }
        self.input(
            i,
            Input::Generator {
                message_id: id.clone(),
                event,
            },
        );
        true
    }

    /// Every running generator: (node, reply id).
    #[must_use]
    pub fn running_generators(&self) -> Vec<(usize, MessageId)> {
        self.nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.generators.keys().map(move |id| (i, id.clone())))
            .collect()
    }

    /// Applies the `k`-th waiting operation at the store.
    pub fn apply_op(&mut self, k: usize) -> bool {
        self.apply_op_with(k, Model::apply).is_some()
    }

    /// Applies the `k`-th waiting operation through `store` (the reference
    /// model's `apply`, or a test's wrapper around it that mis-answers):
    /// queues its reply (unless the sender crashed) and its notices for
    /// every subscriber. Returns the operation, or `None` if there is no
    /// `k`-th.
    pub fn apply_op_with(
        &mut self,
        k: usize,
        store: impl FnOnce(&mut Model, StoreOp) -> (StoreReply, Vec<Published>),
    ) -> Option<InFlightOp> {
        let applied = self.ops.remove(k)?;
        let (reply, published) = store(&mut self.store, applied.request.clone());
        if !applied.orphan {
            self.replies.push_back(InFlightReply {
                node: applied.node,
                op: applied.op,
                result: Ok(reply),
            });
        }
        self.publish(published);
        Some(applied)
    }

    /// Queues each notice for every node subscribed to its topic.
    pub fn publish(&mut self, published: Vec<Published>) {
        for p in published {
            for (j, slot) in self.nodes.iter().enumerate() {
                if slot.subs.contains(&p.topic) {
                    self.notices.push_back((j, p.notice.clone()));
                }
            }
        }
    }

    /// Node `i`'s process dies and a fresh one with the same name starts in
    /// its place (its id source seeded with `seed`). Its clients lose their
    /// sockets; replies and notices on their way to it are lost; operations
    /// it sent may still reach the store, but their replies go nowhere. Its
    /// generators die with it.
    pub fn crash_node(&mut self, i: usize, seed: u64) {
        for c in self.clients.values_mut() {
            if c.node == i {
                c.gone = true;
            }
        }
        self.replies.retain(|r| r.node != i);
        self.notices.retain(|(j, _)| *j != i);
        for op in &mut self.ops {
            if op.node == i {
                op.orphan = true;
            }
        }
        let config = self.nodes[i].node.config().clone();
        let wall = WALL0 + self.elapsed_ms();
        self.nodes[i] = NodeSlot {
            node: Node::new(config, SeededIds::new(seed), self.now, wall),
            subs: BTreeSet::new(),
            generators: BTreeMap::new(),
            aborted: BTreeSet::new(),
            events: Vec::new(),
        };
        self.drain(i);
    }

    /// A hash of everything that decides what can happen next: the store,
    /// every node, the queues, what every client received, and the time.
    /// Two worlds with equal fingerprints behave the same from here on
    /// (up to hash collisions); the exhaustive explorer counts states by it.
    /// Logged events and HTTP answers are left out.
    #[must_use]
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.now.duration_since(self.t0).hash(&mut h);
        self.store.hash(&mut h);
        for n in &self.nodes {
            n.node.hash(&mut h);
            n.subs.hash(&mut h);
            n.generators.hash(&mut h);
            n.aborted.hash(&mut h);
        }
        for (conn, c) in &self.clients {
            conn.hash(&mut h);
            c.node.hash(&mut h);
            c.frames.hash(&mut h);
            c.closed.hash(&mut h);
            c.gone.hash(&mut h);
        }
        self.ops.hash(&mut h);
        self.replies.hash(&mut h);
        self.notices.hash(&mut h);
        h.finish()
    }

    /// Fails the `k`-th waiting operation as if the store were unreachable
    /// (it never reached the store).
    pub fn fail_op(&mut self, k: usize) -> bool {
        let Some(InFlightOp {
            node, op, orphan, ..
        }) = self.ops.remove(k)
        else {
            return false;
        };
        if orphan {
            return true;
        }
        self.replies.push_back(InFlightReply {
            node,
            op,
            result: Err(StoreError::Unavailable("injected".into())),
        });
        true
    }

    /// The `k`-th waiting operation reaches a store that is full: refused
    /// ([`StoreError::Refused`], never applied) if it is one a full store
    /// refuses ([`StoreOp::is_refused_when_full`]), else applied.
    ///
    /// [`StoreOp::is_refused_when_full`]: weir_core::store::StoreOp::is_refused_when_full
    pub fn refuse_op(&mut self, k: usize) -> bool {
        let Some(o) = self.ops.get(k) else {
            return false;
        };
        if !o.request.is_refused_when_full() {
            return self.apply_op(k);
        }
        let Some(InFlightOp {
            node, op, orphan, ..
        }) = self.ops.remove(k)
        else {
            return false;
        };
        if !orphan {
            self.replies.push_back(InFlightReply {
                node,
                op,
                result: Err(StoreError::Refused("injected: OOM".into())),
            });
        }
        true
    }

    /// [`World::settle_queues`] with a store that is full
    /// ([`World::refuse_op`]).
    pub fn settle_queues_full(&mut self) -> usize {
        let mut n = 0;
        while self.refuse_op(0) || self.deliver_reply(0) || self.deliver_notice(0) {
            n += 1;
            assert!(n < 1_000_000, "queues never empty: a livelock");
        }
        n
    }

    /// Applies the `k`-th waiting operation (its effects and notices happen),
    /// but its reply comes back as [`StoreError::Internal`]: the store
    /// answered something the node does not understand (a bug in the store
    /// script, say).
    pub fn misread_op(&mut self, k: usize) -> bool {
        let Some(applied) = self.apply_op_with(k, Model::apply) else {
            return false;
        };
        if !applied.orphan {
            let reply = self.replies.back_mut().filter(|r| r.op == applied.op);
            if let Some(reply) = reply {
                reply.result = Err(StoreError::Internal("injected".into()));
            }
        }
        true
    }

    /// Delivers the `k`-th waiting reply.
    pub fn deliver_reply(&mut self, k: usize) -> bool {
        let Some(InFlightReply { node, op, result }) = self.replies.remove(k) else {
            return false;
        };
        self.input(node, Input::StoreReply { op, result });
        true
    }

    /// Delivers the `k`-th waiting notice.
    pub fn deliver_notice(&mut self, k: usize) -> bool {
        let Some((node, notice)) = self.notices.remove(k) else {
            return false;
        };
        self.input(node, Input::Notice(notice));
        true
    }

    /// Drops the `k`-th waiting notice (pub/sub lost it).
    pub fn drop_notice(&mut self, k: usize) -> bool {
        self.notices.remove(k).is_some()
    }

    /// Delivers everything waiting, in order, until nothing waits.
    /// Returns how many deliveries were made.
    pub fn settle_queues(&mut self) -> usize {
        let mut n = 0;
        loop {
            let progressed = self.apply_op(0) || self.deliver_reply(0) || self.deliver_notice(0);
            if !progressed {
                return n;
            }
            n += 1;
            assert!(n < 1_000_000, "queues never empty: a livelock");
        }
    }

    /// Advances virtual time by `d`, firing every node's due timers in time
    /// order (queues are not delivered meanwhile).
    pub fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        loop {
            let next = self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| n.node.poll_timeout().map(|t| (t, i)))
                .filter(|(t, _)| *t <= target)
                .min();
            let Some((t, i)) = next else {
                break;
            };
            self.now = self.now.max(t);
            self.nodes[i].node.handle_timeout(self.now);
            self.drain(i);
        }
        self.now = target;
    }

    /// Advances time in `step`s up to `d`, delivering all queues after each.
    pub fn run_for(&mut self, d: Duration, step: Duration) {
        let mut left = d;
        while !left.is_zero() {
            let s = step.min(left);
            self.advance(s);
            self.settle_queues();
            left -= s;
        }
    }

    /// The frames client `conn` received.
    #[must_use]
    pub fn frames(&self, conn: ConnId) -> &[ServerFrame] {
        self.clients
            .get(&conn)
            .map(|c| c.frames.as_slice())
            .unwrap_or_default()
    }
}

/// The name of node `i`.
#[must_use]
pub fn node_id(i: usize) -> NodeId {
    NodeId::parse(format!("n{i}")).unwrap_or_else(|e| panic!("{e}"))
}
