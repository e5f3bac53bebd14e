//! The driver: the one task that owns the [`Node`] and the in-memory store.
//!
//! Everything else talks to it through channels: bounded ones of
//! [`ToDriver`](crate::mailbox::ToDriver), one shared by the readers and the
//! HTTP handlers and one for the generators; the Redis notices' (bounded);
//! and the Redis store's replies' (as long as the operations in flight),
//! which the driver takes from first. Its loop is the core's run loop: fire
//! every deadline that has passed, take one message (a store reply if one
//! is ready, else from each other channel in turn), feed it, then carry out
//! every output — and feed what that produces at once (the in-memory
//! store's replies and notices, slow-consumer reports) before the next
//! message; wait
//! only when nothing is ready. It decides nothing itself.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::ops::ControlFlow;
use std::pin::pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_util::{select_biased, FutureExt};
use weir_core::dialect::Dialect;
use weir_core::ids::{ConnId, MessageId, SeededIds};
use weir_core::store::{MemoryStore, Model, Notice};
use weir_core::{GeneratorEvent, HttpReqId, Input, Node};

use crate::mailbox::{ConnHandle, HttpAnswer, ToDriver};
use crate::metrics::Metrics;
use crate::redis_store::{RedisBackend, RedisReadiness};
use crate::rt::{yield_now, Alarm, Runtime};
use crate::{GeneratorConfig, RuntimeConfig, StoreBackend};

mod carry;
mod conn_hash;

use conn_hash::U64Hash;

/// How often the core's wall clock is re-anchored.
const WALL_CLOCK_EVERY: Duration = Duration::from_secs(60);

/// The longest the driver holds its worker thread before it lets the other
/// tasks run, whatever [`PER_WAKE`] says: steps differ in cost (a slice of a
/// fan-out to hundreds of connections is worth hundreds of messages, and a
/// debug build or a loaded machine multiplies every cost). The tasks the
/// driver wakes or spawns — a lease renewal's Redis operation and the
/// connection's own task among them — wait for it on its thread: in
/// `tests/tests/busy_node.rs` the renewals of a node fanning out another
/// node's reply started seconds late and timed out until this bound. (At
/// 10 ms the fan-out bench fell further: docs/benchmarks.md.)
const MAX_HOLD: Duration = Duration::from_millis(25);

/// Room in the generators' channel; a generator waits when it is full.
const GENERATOR_CAPACITY: usize = 1024;

/// How many of the generators' events that are ready together the driver
/// feeds the node before it carries out their outputs. A generator faster
/// than the node queues its deltas in the channel; fed together, they queue
/// in the producer behind the append in flight and go to the store in one
/// append, which the node hands every connection as one frame — instead of
/// an append, a fan-out and a frame per connection per delta. (With the
/// in-memory store, which answers at once, nothing else batches them: in
/// `weir_bench fanout` every chunk cost a frame; docs/benchmarks.md.) Taking
/// an event costs the node a queued delta; the channel's other senders and
/// the timers wait at most this many of those.
const GENERATOR_BATCH: u32 = 256;

/// How many messages, notices and steps of the node's timers (a slice of a
/// large fan-out is one: `weir_core::Config::fanout_slice`) the driver
/// handles in a row before it lets the other tasks (writers, readers,
/// generators) run. Its deadlines are
/// checked after each one anyway, so this bounds only how long the driver
/// holds its worker thread (about 25 ms for 1 024 deltas fanned out to 500
/// connections). At 64, writers kept up with every delta and the queues
/// stopped merging: `weir_bench fanout` sent one frame per chunk and fell
/// from 1.4–2.1× to 0.8–1.1× the bare server's chunks/s; at 1 024 it is
/// 1.1–1.7× (docs/benchmarks.md).
const PER_WAKE: u32 = 1024;

/// The driver task's state.
pub(crate) struct Driver<R: Runtime> {
    node: Node<SeededIds>,
    store: Store<R>,
    conns: HashMap<ConnId, ConnHandle, U64Hash>,
    /// Running generators; dropping a task aborts it.
    generators: HashMap<MessageId, R::Task>,
    http: HashMap<HttpReqId, oneshot::Sender<HttpAnswer>>,
    next_http: u64,
    /// Inputs produced while carrying out outputs (store replies, notices,
    /// slow consumers): fed before the next channel message.
    immediate: VecDeque<Input>,
    generator: GeneratorConfig,
    /// The channel's sender, weak, so the channel closes when every outside
    /// sender is gone (for the Redis store's tasks, and to know whether the
    /// server still runs).
    tx: async_channel::WeakSender<ToDriver>,
    /// The generators' own channel: a generator producing as fast as it can
    /// would otherwise take every slot of the shared channel the moment it
    /// frees, and the readers' frames and pongs would wait behind it (their
    /// connections closed as idle). The driver takes from both in turn.
    generator_tx: async_channel::Sender<ToDriver>,
    generator_rx: async_channel::Receiver<ToDriver>,
    /// The Redis store's replies, on a channel of their own that the driver
    /// takes from first: a reply (a lease renewal's above all) must not wait
    /// behind the readers' frames and pongs of hundreds of connections while
    /// the node is busy. As many as the operations the node has in flight.
    replies_rx: async_channel::Receiver<Input>,
    /// Held so that the replies' channel never closes, whatever the store
    /// (the in-memory store sends nothing through it): a closed channel
    /// would make every wait of the driver end at once, and an idle node
    /// would spin.
    _replies_tx: async_channel::Sender<Input>,
    metrics: Arc<Metrics>,
    shutdown_grace: Duration,
    /// The core's stall timeout: the queues are looked at four times per (at
    /// least once a second).
    stall_timeout: Duration,
}

impl<R: Runtime> std::fmt::Debug for Driver<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("conns", &self.conns.len())
            .field("generators", &self.generators.len())
            .finish_non_exhaustive()
    }
}

/// The store behind the driver.
#[derive(Debug)]
enum Store<R: Runtime> {
    /// The reference model, applied synchronously, and the topics this node
    /// subscribed to (the notices it receives).
    Memory(MemoryStore),
    /// Redis: operations run in tasks; notices arrive on their own channel.
    Redis(RedisBackend<R>),
}

/// Whether the store can be reached, for `/readyz`. An enum so that a store
/// that can be unreachable (Redis) adds a variant that answers `false`.
#[derive(Debug, Clone)]
pub(crate) enum Readiness {
    /// The in-memory store lives in the process: always reachable.
    Memory,
    /// Ready while the Redis connections are up.
    Redis(RedisReadiness),
}

impl Readiness {
    pub(crate) fn is_ready(&self) -> bool {
        match self {
            Self::Memory => true,
            Self::Redis(r) => r.is_ready(),
        }
    }

    /// Whether the store is reachable but refuses writes for want of room.
    pub(crate) fn refuses_writes(&self) -> bool {
        match self {
            Self::Memory => false,
            Self::Redis(r) => r.refuses_writes(),
        }
    }
}

impl<R: Runtime> Driver<R> {
    /// A driver for `config`, and what `/readyz` asks. With the Redis store
    /// this starts its connection tasks; `notices` is where they deliver.
    pub(crate) fn new(
        config: &RuntimeConfig,
        tx: async_channel::WeakSender<ToDriver>,
        notices: async_channel::Sender<Notice>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, Readiness)> {
        let unix_ms = R::unix_ms();
        // One step hands a connection that gets a frame per chunk (the AI
        // SDK's) what fits in the room its queue keeps above the high-water
        // mark (a quarter), with room for its other frames.
        let mut node_config = config.node.clone();
        node_config.numbered_step = (config.queue_capacity / 16).max(1);
        let mut node = Node::new(
            node_config,
            SeededIds::new(os_random_seed()),
            R::now(),
            unix_ms,
        );
        // To the nanosecond: chunk timestamps are read from this anchor.
        node.handle_input(
            R::now(),
            Input::WallClockNs {
                unix_ns: R::unix_ns(),
            },
        );
        let (replies_tx, replies_rx) = async_channel::unbounded();
        let (store, readiness) = match &config.store_backend {
            // The in-memory store starts empty in every process: a new epoch
            // (the start time) tells resumes of an older process's replies
            // apart.
            StoreBackend::Memory => (
                Store::Memory(MemoryStore::new(Model::new(config.store, unix_ms))),
                Readiness::Memory,
            ),
            StoreBackend::Redis(settings) => {
                let (backend, ready) = RedisBackend::<R>::start(
                    settings,
                    config.store,
                    tx.clone(),
                    replies_tx.clone(),
                    notices,
                    metrics.clone(),
                )?;
                (Store::Redis(backend), Readiness::Redis(ready))
            }
        };
        let (generator_tx, generator_rx) = async_channel::bounded(GENERATOR_CAPACITY);
        let driver = Self {
            node,
            store,
            conns: HashMap::default(),
            generators: HashMap::new(),
            http: HashMap::new(),
            next_http: 0,
            immediate: VecDeque::new(),
            generator: config.generator.clone(),
            tx,
            generator_tx,
            generator_rx,
            replies_rx,
            _replies_tx: replies_tx,
            metrics,
            shutdown_grace: config.shutdown_grace,
            stall_timeout: config.node.stall_timeout,
        };
        Ok((driver, readiness))
    }

    /// Runs until the graceful shutdown is done (or its grace has passed),
    /// or until every sender of the channel is gone. (The server aborts its
    /// task when its own future is dropped.)
    ///
    /// Time is checked after every wake, whatever woke the driver (quinn's
    /// `drive_timer`): the node's timers, the wall clock's re-anchoring and
    /// the shutdown's deadline fire when due even while messages keep
    /// arriving — a busy node still sends heartbeats, closes idle
    /// connections and renews its leases. The driver waits only when
    /// nothing is ready, on one [`Alarm`] moved to the earliest deadline,
    /// and after [`PER_WAKE`] steps or [`MAX_HOLD`] it lets the other tasks run.
    pub(crate) async fn run(
        mut self,
        rx: async_channel::Receiver<ToDriver>,
        notices: async_channel::Receiver<Notice>,
    ) {
        // `None` once closed (at once with the in-memory store, which
        // publishes no notices through it).
        let mut notices = Some(notices);
        let stall_every = stall_check_every(self.stall_timeout);
        let mut clock = Clock {
            wall: R::now() + WALL_CLOCK_EVERY,
            stalls: R::now() + stall_every,
            stall_every,
            shutdown: None,
        };
        let mut alarm = Alarm::<R>::new();
        let mut budget = PER_WAKE;
        let mut held_since = R::now();
        let generated = self.generator_rx.clone();
        let replies = self.replies_rx.clone();
        // Which channel is tried first, in turn, so none starves the others.
        let mut turn = 0u8;
        self.drain();
        loop {
            match self.fire_due(&mut clock) {
                ControlFlow::Break(()) => break,
                // A step of the node's timers counts like a message: it may
                // be a slice of a large fan-out (`Config::fanout_slice`).
                ControlFlow::Continue(fired) => {
                    if fired {
                        budget = budget.saturating_sub(1);
                    }
                }
            }
            if budget == 0 || R::now().saturating_duration_since(held_since) >= MAX_HOLD {
                budget = PER_WAKE;
                yield_now().await;
                held_since = R::now();
                continue;
            }
            turn = (turn + 1) % 3;
            // The store's replies first (see `replies_rx`), then the three
            // other channels in turn.
            let woke = match replies.try_recv().ok().map(Woke::Reply) {
                Some(woke) => Some(woke),
                None => ready(&rx, &generated, &mut notices, turn),
            };
            let woke = match woke {
                Some(woke) => woke,
                None => {
                    let wake = clock.earliest(self.node.poll_timeout());
                    let mut msg = pin!(rx.recv().fuse());
                    let mut generator = pin!(generated.recv().fuse());
                    let mut reply = pin!(replies.recv().fuse());
                    let mut notice = pin!(async {
                        match &notices {
                            Some(n) => n.recv().await,
                            None => std::future::pending().await,
                        }
                    }
                    .fuse());
                    let mut time = pin!(alarm.wait(wake).fuse());
                    select_biased! {
                        // Never closed: the driver holds a sender.
                        reply = reply => reply.map_or(Woke::Time, Woke::Reply),
                        msg = msg => msg.map_or(Woke::Closed, Woke::Message),
                        // Never closed: the driver holds a sender.
                        event = generator => event.map_or(Woke::Time, Woke::Generated),
                        notice = notice => notice.map_or(Woke::NoMoreNotices, Woke::Notice),
                        () = time => Woke::Time,
                    }
                }
            };
            self.metrics.driver_wakes.fetch_add(1, Relaxed);
            match woke {
                Woke::Message(msg) => {
                    budget -= 1;
                    self.on_message(msg, &mut clock.shutdown);
                }
                Woke::Generated(msg) => {
                    budget -= 1;
                    self.on_message(msg, &mut clock.shutdown);
                    self.feed_generated(&generated, &mut budget, &mut clock.shutdown);
                }
                Woke::Notice(notice) => {
                    budget -= 1;
                    self.feed(R::now(), Input::Notice(notice));
                }
                Woke::Reply(reply) => {
                    budget -= 1;
                    self.feed(R::now(), reply);
                }
                Woke::NoMoreNotices => notices = None,
                Woke::Closed => break,
                // Fired at the top of the loop.
                Woke::Time => {}
            }
            self.drain();
        }
        // Dropping the tasks aborts every generator.
        self.generators.clear();
        // Dropping the handles releases every socket that is left.
        self.conns.clear();
        self.metrics.connections.store(0, Relaxed);
    }

    /// Fires every deadline that has passed: the node's timers, the wall
    /// clock's re-anchoring; breaks when the shutdown is done or its grace
    /// has passed, else says whether the node's timers fired.
    fn fire_due(&mut self, clock: &mut Clock) -> ControlFlow<(), bool> {
        let now = R::now();
        if let Some(deadline) = clock.shutdown {
            if self.node.is_drained() {
                tracing::info!("shutdown: every connection closed and every reply settled");
                return ControlFlow::Break(());
            }
            if now >= deadline {
                tracing::warn!(
                    connections = self.conns.len(),
                    "shutdown grace passed before everything closed"
                );
                return ControlFlow::Break(());
            }
        }
        let fired = self.node.poll_timeout().is_some_and(|t| t <= now);
        if fired {
            self.node.handle_timeout(now);
        }
        if clock.stalls <= now {
            clock.stalls = now + clock.stall_every;
            self.report_stalls(now);
        }
        if clock.wall <= now {
            clock.wall = now + WALL_CLOCK_EVERY;
            self.feed(
                now,
                Input::WallClockNs {
                    unix_ns: R::unix_ns(),
                },
            );
        }
        self.drain();
        ControlFlow::Continue(fired)
    }

    fn on_message(&mut self, msg: ToDriver, shutdown: &mut Option<Instant>) {
        let now = R::now();
        match msg {
            ToDriver::Connect {
                conn,
                user,
                session,
                resume,
                ip,
                dialect,
                handle,
            } => {
                self.conns.insert(conn, handle);
                self.count_connections();
                let input = match dialect {
                    Dialect::Native => Input::Connect {
                        conn,
                        user,
                        session,
                        resume,
                        ip: Some(ip),
                    },
                    _ => Input::ConnectWith {
                        conn,
                        user,
                        session,
                        dialect,
                        ip: Some(ip),
                    },
                };
                self.feed(now, input);
            }
            ToDriver::Stream {
                conn,
                user,
                request,
                handle,
            } => {
                self.conns.insert(conn, handle);
                self.count_connections();
                self.feed(
                    now,
                    Input::AiSdkStream {
                        conn,
                        user,
                        request,
                    },
                );
            }
            ToDriver::Input(Input::Writable { conn }) => {
                // The writer drained its queue, but the driver may have
                // filled it again since (the core heard `WriteBlocked`
                // then): a later `Writable` follows, this one is stale.
                if let Some(h) = self.conns.get_mut(&conn) {
                    if !h.queue.is_blocked() {
                        h.told_blocked = false;
                        self.feed(now, Input::Writable { conn });
                    }
                }
            }
            ToDriver::Input(input) => {
                if let Input::Generator {
                    message_id,
                    event: GeneratorEvent::Finished { .. } | GeneratorEvent::Failed { .. },
                } = &input
                {
                    // The task ends by itself after its last event.
                    self.generators.remove(message_id);
                }
                self.feed(now, input);
            }
            ToDriver::Http {
                user,
                request,
                reply,
            } => {
                let req = HttpReqId(self.next_http);
                self.next_http += 1;
                self.http.insert(req, reply);
                self.feed(now, Input::Http { req, user, request });
            }
            ToDriver::Shutdown => {
                if shutdown.is_none() {
                    tracing::info!("shutdown: closing connections and settling replies");
                    *shutdown = Some(now + self.shutdown_grace);
                    self.feed(now, Input::Shutdown);
                }
            }
        }
    }

    /// Feeds the generators' events that are ready now, up to
    /// [`GENERATOR_BATCH`] in all (the one just fed included) and within the
    /// `budget`, before their outputs are carried out.
    fn feed_generated(
        &mut self,
        generated: &async_channel::Receiver<ToDriver>,
        budget: &mut u32,
        shutdown: &mut Option<Instant>,
    ) {
        for _ in 1..GENERATOR_BATCH {
            if *budget == 0 {
                return;
            }
            let Ok(msg) = generated.try_recv() else {
                return;
            };
            *budget -= 1;
            self.on_message(msg, shutdown);
        }
    }

    /// Hands `input` to the node, counted (`weir_core_inputs_total`).
    fn feed(&mut self, now: Instant, input: Input) {
        self.metrics.core_inputs.fetch_add(1, Relaxed);
        self.node.handle_input(now, input);
    }

    /// Carries out every output, feeding what that produces, until the node
    /// has nothing more to say.
    fn drain(&mut self) {
        loop {
            while let Some(output) = self.node.poll_output() {
                self.carry(output);
            }
            match self.immediate.pop_front() {
                Some(input) => self.feed(R::now(), input),
                None => break,
            }
        }
    }
}

/// What woke the driver.
enum Woke {
    Message(ToDriver),
    /// A generator's event (more of them may be fed with it).
    Generated(ToDriver),
    Notice(Notice),
    /// A reply of the Redis store.
    Reply(Input),
    /// The notices' channel closed.
    NoMoreNotices,
    /// Every sender of the channel is gone.
    Closed,
    /// A deadline: the node's, the shutdown's or the wall clock's.
    Time,
}

/// A message, a generator's event or a notice that is ready now, without
/// waiting; the three channels are tried in an order that turns with `turn`.
fn ready(
    rx: &async_channel::Receiver<ToDriver>,
    generated: &async_channel::Receiver<ToDriver>,
    notices: &mut Option<async_channel::Receiver<Notice>>,
    turn: u8,
) -> Option<Woke> {
    use async_channel::TryRecvError;
    for source in 0..3 {
        let woke = match (turn + source) % 3 {
            0 => match rx.try_recv() {
                Ok(msg) => Some(Woke::Message(msg)),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Closed) => Some(Woke::Closed),
            },
            1 => generated.try_recv().ok().map(Woke::Generated),
            _ => match notices.as_ref().map(async_channel::Receiver::try_recv) {
                Some(Ok(notice)) => Some(Woke::Notice(notice)),
                Some(Err(TryRecvError::Closed)) => Some(Woke::NoMoreNotices),
                Some(Err(TryRecvError::Empty)) | None => None,
            },
        };
        if woke.is_some() {
            return woke;
        }
    }
    None
}

/// The driver's own deadlines, beside the node's.
#[derive(Debug)]
struct Clock {
    /// When the core's wall clock is re-anchored next.
    wall: Instant,
    /// When the queues are looked at for stalls next, and how often.
    stalls: Instant,
    stall_every: Duration,
    /// When the graceful shutdown gives up (once it has begun).
    shutdown: Option<Instant>,
}

impl Clock {
    /// The earliest of the node's deadline, the shutdown's, the stall
    /// check's and the wall clock's.
    fn earliest(&self, node: Option<Instant>) -> Option<Instant> {
        [node, self.shutdown, Some(self.stalls), Some(self.wall)]
            .into_iter()
            .flatten()
            .min()
    }
}

/// How often the queues are looked at for stalls and lag: four times per
/// stall timeout (so a stall is reported at most a quarter of it late), at
/// least once a second (a lag past the bound is reported within two), and
/// not more often than every 10 ms.
fn stall_check_every(stall_timeout: Duration) -> Duration {
    (stall_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// 64 bits of the operating system's randomness, through std's randomly
/// keyed hasher (no extra dependency).
fn os_random_seed() -> u64 {
    // `RandomState`'s keys come from the operating system: any input hashes
    // to 64 random bits.
    std::collections::hash_map::RandomState::new().hash_one(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queues_are_looked_at_four_times_per_stall_timeout_and_once_a_second() {
        assert_eq!(
            stall_check_every(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(
            stall_check_every(Duration::from_secs(10)),
            Duration::from_secs(1)
        );
        assert_eq!(
            stall_check_every(Duration::from_millis(1)),
            Duration::from_millis(10)
        );
    }

    #[test]
    fn readiness_of_the_memory_store() {
        assert!(Readiness::Memory.is_ready());
    }
}
