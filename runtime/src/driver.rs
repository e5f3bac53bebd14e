//! The driver: the one task that owns the [`Node`] and the in-memory store.
//!
//! Everything else talks to it through one bounded channel
//! ([`ToDriver`]). Its loop is the core's run loop: wait for a message or the
//! node's next deadline, feed it, then carry out every output — and feed
//! what that produces at once (store replies, notices, slow-consumer
//! reports) before the next message. It decides nothing itself.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::pin::pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_channel::oneshot;
use futures_util::{select_biased, FutureExt};
use weir_core::ids::{ConnId, MessageId, SeededIds, Seq, SessionId, UserId};
use weir_core::store::{MemoryStore, Model, Notice};
use weir_core::wire::{CancelStatus, CloseCode};
use weir_core::{Event, GeneratorEvent, HttpReqId, HttpRequest, Input, Node, Output};

use crate::http::Readiness;
use crate::metrics::Metrics;
use crate::queue::{Encoded, Item, OutQueue, Push};
use crate::redis_store::RedisBackend;
use crate::rt::{sleep_until, Runtime};
use crate::{generator, GeneratorConfig, RuntimeConfig, StoreBackend};

/// How often the core's wall clock is re-anchored.
const WALL_CLOCK_EVERY: Duration = Duration::from_secs(60);

/// An HTTP status and JSON body, from `Output::HttpResponse`.
pub(crate) type HttpAnswer = (u16, String);

/// A message to the driver.
#[derive(Debug)]
pub(crate) enum ToDriver {
    /// A WebSocket was upgraded and authenticated: register its writer side,
    /// then feed `Input::Connect`.
    Connect {
        conn: ConnId,
        user: UserId,
        session: SessionId,
        resume: Option<(MessageId, Seq)>,
        handle: ConnHandle,
    },
    /// An input to feed as it is (frames, activity, disconnects, generator
    /// events).
    Input(Input),
    /// An authenticated HTTP API request; the answer goes to `reply`.
    Http {
        user: UserId,
        request: HttpRequest,
        reply: oneshot::Sender<HttpAnswer>,
    },
    /// Begin the graceful shutdown.
    Shutdown,
}

/// The driver's side of one WebSocket. Dropping it releases the socket:
/// the queue closes and the reader task (which waits on `_stop`) ends,
/// dropping (so aborting) the writer task it owns.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    pub(crate) queue: Arc<OutQueue>,
    /// Dropped with the handle: tells the reader to stop.
    pub(crate) _stop: oneshot::Sender<()>,
    /// `queue.merged_frames()` as last counted into the metrics.
    pub(crate) merged_seen: u64,
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        self.queue.close();
    }
}

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
    /// For generator tasks; weak, so the channel closes when every outside
    /// sender is gone.
    tx: async_channel::WeakSender<ToDriver>,
    metrics: Arc<Metrics>,
    shutdown_grace: Duration,
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

impl<R: Runtime> Driver<R> {
    /// A driver for `config`, and what `/readyz` asks. With the Redis store
    /// this starts its connection tasks; `notices` is where they deliver.
    pub(crate) fn new(
        config: &RuntimeConfig,
        tx: async_channel::WeakSender<ToDriver>,
        notices: async_channel::Sender<Notice>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, Readiness)> {
        let unix_ms = unix_ms();
        let node = Node::new(
            config.node.clone(),
            SeededIds::new(os_random_seed()),
            Instant::now(),
            unix_ms,
        );
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
                    notices,
                    metrics.clone(),
                )?;
                (Store::Redis(backend), Readiness::Redis(ready))
            }
        };
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
            metrics,
            shutdown_grace: config.shutdown_grace,
        };
        Ok((driver, readiness))
    }

    /// Runs until the graceful shutdown is done (or its grace has passed),
    /// or until every sender of the channel is gone. (The server aborts its
    /// task when its own future is dropped.)
    pub(crate) async fn run(
        mut self,
        rx: async_channel::Receiver<ToDriver>,
        notices: async_channel::Receiver<Notice>,
    ) {
        // `None` once closed (at once with the in-memory store, which
        // publishes no notices through it).
        let mut notices = Some(notices);
        self.drain();
        let mut wall = Instant::now() + WALL_CLOCK_EVERY;
        let mut shutdown_deadline: Option<Instant> = None;
        loop {
            if let Some(deadline) = shutdown_deadline {
                if self.node.is_drained() {
                    tracing::info!("shutdown: every connection closed and every reply settled");
                    break;
                }
                if Instant::now() >= deadline {
                    tracing::warn!(
                        connections = self.conns.len(),
                        "shutdown grace passed before everything closed"
                    );
                    break;
                }
            }
            let timeout = self.node.poll_timeout();
            // The earliest of the node's deadline, the shutdown's and the
            // wall clock's; which one it was is checked below.
            let wake = [timeout, shutdown_deadline, Some(wall)]
                .into_iter()
                .flatten()
                .min();
            let woke = {
                let mut msg = pin!(rx.recv().fuse());
                let mut notice = pin!(async {
                    match &notices {
                        Some(n) => n.recv().await,
                        None => std::future::pending().await,
                    }
                }
                .fuse());
                let mut sleep = pin!(sleep_until::<R>(wake).fuse());
                select_biased! {
                    msg = msg => match msg {
                        Ok(msg) => Woke::Message(msg),
                        Err(_) => break,
                    },
                    notice = notice => match notice {
                        Ok(notice) => Woke::Notice(notice),
                        Err(_) => Woke::NoMoreNotices,
                    },
                    () = sleep => Woke::Time,
                }
            };
            let now = Instant::now();
            match woke {
                Woke::Message(msg) => self.on_message(msg, &mut shutdown_deadline),
                Woke::Notice(notice) => self.node.handle_input(now, Input::Notice(notice)),
                Woke::NoMoreNotices => notices = None,
                Woke::Time => {
                    if timeout.is_some_and(|t| t <= now) {
                        self.node.handle_timeout(now);
                    }
                    if wall <= now {
                        wall = now + WALL_CLOCK_EVERY;
                        self.node
                            .handle_input(now, Input::WallClock { unix_ms: unix_ms() });
                    }
                }
            }
            self.drain();
        }
        // Dropping the tasks aborts every generator.
        self.generators.clear();
        // Dropping the handles releases every socket that is left.
        self.conns.clear();
        self.metrics.connections.store(0, Relaxed);
    }

    fn on_message(&mut self, msg: ToDriver, shutdown: &mut Option<Instant>) {
        let now = Instant::now();
        match msg {
            ToDriver::Connect {
                conn,
                user,
                session,
                resume,
                handle,
            } => {
                self.conns.insert(conn, handle);
                self.count_connections();
                self.node.handle_input(
                    now,
                    Input::Connect {
                        conn,
                        user,
                        session,
                        resume,
                    },
                );
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
                self.node.handle_input(now, input);
            }
            ToDriver::Http {
                user,
                request,
                reply,
            } => {
                let req = HttpReqId(self.next_http);
                self.next_http += 1;
                self.http.insert(req, reply);
                self.node
                    .handle_input(now, Input::Http { req, user, request });
            }
            ToDriver::Shutdown => {
                if shutdown.is_none() {
                    tracing::info!("shutdown: closing connections and settling replies");
                    *shutdown = Some(now + self.shutdown_grace);
                    self.node.handle_input(now, Input::Shutdown);
                }
            }
        }
    }

    /// Carries out every output, feeding what that produces, until the node
    /// has nothing more to say.
    fn drain(&mut self) {
        loop {
            while let Some(output) = self.node.poll_output() {
                self.carry(output);
            }
            match self.immediate.pop_front() {
                Some(input) => self.node.handle_input(Instant::now(), input),
                None => break,
            }
        }
    }

    fn carry(&mut self, output: Output) {
        match output {
            // Encoded here, once; the writers send the text as it is.
            Output::Send { conn, frame } => self.push(conn, Item::frame(frame)),
            Output::SendMany { conns, frame } => {
                let encoded = Arc::new(Encoded::new(frame));
                for conn in conns {
                    self.push(conn, Item::Frame(encoded.clone()));
                }
            }
            Output::Ping { conn } => self.push(conn, Item::Ping),
            Output::Close { conn, code } => {
                if code == CloseCode::TooSlow {
                    self.metrics.slow_consumer_closes.fetch_add(1, Relaxed);
                }
                tracing::debug!(%conn, %code, "closing");
                self.push(conn, Item::Close(code));
            }
            Output::Released { conn } => self.release(conn),
            Output::Store { op, request } => match &mut self.store {
                Store::Memory(memory) => self.immediate.extend(memory.apply(op, request)),
                Store::Redis(redis) => {
                    if let Some(failed) = redis.submit(op, request) {
                        self.immediate.push_back(failed);
                    }
                }
            },
            Output::Subscribe(topic) => match &mut self.store {
                Store::Memory(memory) => memory.subscribe(&topic),
                Store::Redis(redis) => redis.subscribe(&topic),
            },
            Output::Unsubscribe(topic) => match &mut self.store {
                Store::Memory(memory) => memory.unsubscribe(&topic),
                Store::Redis(redis) => redis.unsubscribe(&topic),
            },
            Output::StartGenerator {
                message_id,
                conv,
                context,
            } => {
                let Some(tx) = self.tx.upgrade() else {
                    return; // shutting down: nobody would read its events
                };
                tracing::debug!(%message_id, %conv, "starting generator");
                let task = generator::spawn::<R>(
                    &self.generator,
                    tx,
                    message_id.clone(),
                    &context,
                    &self.metrics,
                );
                // A generator of the same reply still running is aborted
                // (dropped).
                self.generators.insert(message_id, task);
            }
            Output::AbortGenerator { message_id } => {
                if let Some(task) = self.generators.remove(&message_id) {
                    tracing::debug!(%message_id, "aborting generator");
                    drop(task);
                }
            }
            Output::HttpResponse { req, status, body } => {
                if let Some(reply) = self.http.remove(&req) {
                    // The client may have gone away; nothing to do then.
                    let _ = reply.send((status, body));
                }
            }
            Output::Event(event) => self.on_event(event),
        }
    }

    /// Offers `item` to a connection's queue (which wakes its writer if it
    /// waits for one).
    fn push(&mut self, conn: ConnId, item: Item) {
        let Some(handle) = self.conns.get_mut(&conn) else {
            return; // already released: the socket is gone
        };
        match handle.queue.push(item) {
            Push::Queued => {}
            Push::Merged => {
                let merged = handle.queue.merged_frames();
                let new = merged.saturating_sub(handle.merged_seen);
                handle.merged_seen = merged;
                self.metrics.merged_frames.fetch_add(new, Relaxed);
            }
            Push::Overflow => {
                tracing::debug!(%conn, "outbound queue overflow: slow consumer");
                self.immediate.push_back(Input::SlowConsumer { conn });
            }
            Push::Dropped | Push::Closed => {}
        }
    }

    fn release(&mut self, conn: ConnId) {
        if self.conns.remove(&conn).is_some() {
            self.count_connections();
        }
    }

    fn count_connections(&self) {
        let n = i64::try_from(self.conns.len()).unwrap_or(i64::MAX);
        self.metrics.connections.store(n, Relaxed);
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::ConnectionOpened { conn } => tracing::debug!(%conn, "connection open"),
            Event::ConnectionClosed { conn } => tracing::debug!(%conn, "connection released"),
            Event::ReplySettled {
                message_id,
                outcome,
                final_seq,
            } => {
                tracing::debug!(%message_id, ?outcome, final_seq, "reply settled");
                self.metrics.reply_settled(&outcome);
                // Aborts the generator if it still runs.
                self.generators.remove(&message_id);
            }
            Event::CancelAnswered {
                conn,
                status,
                latency,
            } => {
                tracing::debug!(%conn, ?status, ?latency, "cancel answered");
                if status != CancelStatus::NotFound {
                    self.metrics.cancel_quiet(latency);
                }
            }
            Event::Resumed { conn, exact } => {
                tracing::debug!(%conn, exact, "resume");
                self.metrics.resumed(exact);
            }
            Event::StoreUnavailable { op } => {
                tracing::warn!(op = op.get(), "store unavailable");
                self.metrics.store_unavailable.fetch_add(1, Relaxed);
            }
            Event::StoreInternal { op, reason } => {
                tracing::error!(
                    op = op.get(),
                    "store reply not understood (a bug): {reason}"
                );
            }
        }
    }
}

/// The hash of the driver's maps keyed by a [`ConnId`]: a multiplicative
/// hash instead of SipHash. The connection map is looked up once per
/// connection for every frame a conversation's connections get. Its keys are
/// the server's own sequential numbers, never a client's choice, so there is
/// no flooding to defend against.
#[derive(Debug, Clone, Copy, Default)]
struct U64Hash;

impl BuildHasher for U64Hash {
    type Hasher = U64Hasher;

    fn build_hasher(&self) -> U64Hasher {
        U64Hasher(0)
    }
}

#[derive(Debug)]
struct U64Hasher(u64);

impl U64Hasher {
    /// 2^64 / φ: spreads sequential numbers over the high bits too (the
    /// map takes its control bits from there).
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
}

impl Hasher for U64Hasher {
    fn write(&mut self, bytes: &[u8]) {
        // Not used by a `u64` or a `ConnId` (their `Hash` writes one `u64`);
        // correct anyway.
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(Self::K);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// What woke the driver.
enum Woke {
    Message(ToDriver),
    Notice(Notice),
    /// The notices' channel closed.
    NoMoreNotices,
    /// A deadline: the node's, the shutdown's or the wall clock's.
    Time,
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// 64 bits of the operating system's randomness, through std's randomly
/// keyed hasher (no extra dependency).
fn os_random_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn the_connection_hash_spreads_sequential_ids() {
        let hash = |n: u64| U64Hash.hash_one(ConnId(n));
        let ids = 1..=10_000u64;
        let hashes: HashSet<u64> = ids.clone().map(hash).collect();
        assert_eq!(hashes.len(), 10_000, "no two ids collide");
        // The map takes its 7 control bits from the top of the hash: sequential
        // ids must use all of them.
        let top: HashSet<u64> = ids.clone().map(|n| hash(n) >> 57).collect();
        assert_eq!(top.len(), 128);
        let mut map: HashMap<ConnId, u64, U64Hash> = HashMap::default();
        map.extend(ids.clone().map(|n| (ConnId(n), n)));
        assert!(ids.into_iter().all(|n| map.get(&ConnId(n)) == Some(&n)));
    }
}
