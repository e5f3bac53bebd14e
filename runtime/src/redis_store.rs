//! The Redis store: connections around [`weir_store_redis`], on any
//! [`Runtime`] (the redis crate runs its own connection tasks on tokio inside
//! a tokio context and on smol outside one).
//!
//! - **Operations** go over one multiplexed connection (requests from many
//!   tasks are pipelined on it). Each `Output::Store` becomes a task that
//!   runs the script and feeds the reply back to the driver, on a channel of
//!   the replies' own that the driver takes from before any other: a lease
//!   renewal's answer never waits behind the frames of many connections.
//!   (On the connection itself an operation waits behind at most the ones
//!   in flight before it, each bounded: an append carries at most
//!   `weir_core::Config::append_max_chunks` chunks, one at a time per reply.) While there is
//!   no connection an operation fails at once with `unavailable`; the core
//!   decides what that means (never a false `cancelled`).
//! - **On a Redis Cluster, settles and cancels** go over a second cluster
//!   connection and wait there for their shard's replicas
//!   ([`weir_store_redis::Replication`], whose per-slot replica counts the
//!   supervisor reads from `CLUSTER SLOTS` at connect and with every epoch
//!   check): no client is told an `end` or a `cancel_result` that a
//!   failover could take back.
//! - **The supervisor** connects with backoff (50 ms doubling to 2 s),
//!   establishes the epoch, re-checks it every [`EPOCH_CHECK`] (a flush
//!   without a restart), and reconnects when an operation reports the
//!   connection lost.
//! - **Pub/sub** has one dedicated connection per node, always drained: a
//!   task owns it, (un)subscribes as the core asks, and forwards notices to
//!   the driver through a bounded channel of their own (a full channel drops
//!   the notice and counts it: notices may be lost, the store's records are
//!   the truth, and the core re-reads). After an outage it reconnects with
//!   backoff and subscribes to every channel again.
//!
//! - **Refusals.** While Redis refuses writes for want of room (`OOM` at
//!   `maxmemory`, `MISCONF`), operations fail with
//!   [`StoreError::Refused`] and the core ends what it must. This module
//!   keeps the burst: the first refusal logs one ERROR line, a long burst a
//!   reminder with the count every [`REMIND_EVERY`], and its end one line
//!   with the count. The supervisor's epoch check writes (`SET NX`), so it
//!   notices within [`EPOCH_CHECK`] that Redis accepts writes again.
//!
//! `/readyz` answers 200 only while both connections are up and Redis
//! accepts writes.

use std::pin::pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_listener::Event;
use futures_util::future::{select, Either};
use redis::aio::MultiplexedConnection;
use weir_core::store::{Epoch, Notice, StoreConfig, StoreError, StoreOp, Topic};
use weir_core::{Input, OpId};
use weir_store_redis::{Failure, RedisConn, RedisStore, Replication};

use crate::io::RedisIo;
use crate::mailbox::ToDriver;
use crate::metrics::Metrics;
use crate::redis_pubsub::{pubsub, Addr, Nodes, Progress, Subscription, BACKOFF_MAX, BACKOFF_MIN};
use crate::rt::{timeout, Runtime};
use crate::RedisSettings;

/// How often the supervisor re-reads the epoch key.
const EPOCH_CHECK: Duration = Duration::from_secs(2);

/// How often a burst of refusals that goes on is logged again.
const REMIND_EVERY: Duration = Duration::from_secs(60);

/// Room for notices between the pub/sub task and the driver.
pub(crate) const NOTICE_CAPACITY: usize = 65_536;

/// The current connection and what the tasks share.
#[derive(Debug)]
struct Link {
    /// The operations connection, its epoch, and its generation.
    current: Mutex<Option<(RedisConn, Epoch, u64)>>,
    /// On a cluster, the connection settles and cancels go over (they wait
    /// for their replicas there: `weir_store_redis::Replication`).
    deciding: Mutex<Option<RedisConn>>,
    /// Rung by an operation that saw its connection fail: a channel of one,
    /// so a ring while the supervisor is busy waits for it.
    broken: (async_channel::Sender<()>, async_channel::Receiver<()>),
    store_up: AtomicBool,
    pubsub_up: AtomicBool,
    generation: AtomicU64,
    /// The number of the last subscription request the pub/sub task has
    /// carried out (confirmed by Redis, or found unnecessary).
    subscribed: AtomicU64,
    /// Rung whenever `subscribed` moves.
    subscribed_moved: Event,
    /// Redis refuses writes (a burst of refusals is on).
    refusing: AtomicBool,
    burst: Mutex<Burst>,
}

/// A burst of refusals: from the first write Redis refuses for want of room
/// to the first it accepts again.
#[derive(Debug, Default)]
struct Burst {
    /// When it began; `None` while Redis accepts writes.
    since: Option<Instant>,
    /// Operations refused in it.
    refused: u64,
    /// When it was last logged.
    logged: Option<Instant>,
}

impl Link {
    fn new() -> Self {
        Self {
            current: Mutex::new(None),
            deciding: Mutex::new(None),
            broken: async_channel::bounded(1),
            store_up: AtomicBool::new(false),
            pubsub_up: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            subscribed: AtomicU64::new(0),
            subscribed_moved: Event::new(),
            refusing: AtomicBool::new(false),
            burst: Mutex::new(Burst::default()),
        }
    }

    /// Redis refused a write for want of room (`why`): the first of a burst
    /// is logged, the others counted.
    fn refused(&self, why: &dyn std::fmt::Display) {
        let Ok(mut b) = self.burst.lock() else {
            return;
        };
        b.refused += 1;
        if b.since.is_none() {
            let now = Instant::now();
            b.since = Some(now);
            b.logged = Some(now);
            self.refusing.store(true, Relaxed);
            tracing::error!(
                "the store refuses writes ({why}): replies that cannot be stored end \
                 failed(store_full), chats and cancels are answered store_full and /readyz \
                 503 until it accepts writes again; refusals are counted, not logged"
            );
        }
    }

    /// A write went through: a burst of refusals, if one was on, is over.
    fn accepted(&self) {
        if !self.refusing.load(Relaxed) {
            return;
        }
        let Ok(mut b) = self.burst.lock() else {
            return;
        };
        if let Some(since) = b.since.take() {
            self.refusing.store(false, Relaxed);
            tracing::warn!(
                refused = b.refused,
                "the store accepts writes again, after refusing {} operations over {:.1} s",
                b.refused,
                since.elapsed().as_secs_f64()
            );
            b.refused = 0;
            b.logged = None;
        }
    }

    /// Logs a burst that goes on, every [`REMIND_EVERY`].
    fn remind(&self) {
        let Ok(mut b) = self.burst.lock() else {
            return;
        };
        let (Some(since), Some(logged)) = (b.since, b.logged) else {
            return;
        };
        if logged.elapsed() >= REMIND_EVERY {
            b.logged = Some(Instant::now());
            tracing::warn!(
                refused = b.refused,
                "the store still refuses writes: {} operations refused over {:.0} s",
                b.refused,
                since.elapsed().as_secs_f64()
            );
        }
    }

    fn mark_subscribed(&self, n: u64) {
        self.subscribed.fetch_max(n, Relaxed);
        self.subscribed_moved.notify(usize::MAX);
    }

    /// Waits until subscription request `n` is in effect, at most `timeout`
    /// (past that the operation goes ahead: the core's watch re-reads
    /// recover what a late subscription misses).
    async fn subscribed_through<R: Runtime>(&self, n: u64, limit: Duration) {
        let wait = async {
            loop {
                let moved = self.subscribed_moved.listen();
                if self.subscribed.load(Relaxed) >= n {
                    return;
                }
                moved.await;
            }
        };
        let _ = timeout::<R, _>(limit, wait).await;
    }

    fn get(&self) -> Option<(RedisConn, Epoch, u64)> {
        self.current.lock().ok().and_then(|c| c.clone())
    }

    fn set(&self, value: Option<(RedisConn, Epoch, u64)>) {
        if let Ok(mut c) = self.current.lock() {
            *c = value;
        }
    }

    fn deciding(&self) -> Option<RedisConn> {
        self.deciding.lock().ok().and_then(|c| c.clone())
    }

    fn set_deciding(&self, value: Option<RedisConn>) {
        if let Ok(mut c) = self.deciding.lock() {
            *c = value;
        }
    }

    fn report_broken(&self, generation: u64) {
        if self.generation.load(Relaxed) == generation {
            let _ = self.broken.0.try_send(());
        }
    }
}

impl Progress for Link {
    fn mark_subscribed(&self, n: u64) {
        Self::mark_subscribed(self, n);
    }

    fn set_up(&self, up: bool) {
        self.pubsub_up.store(up, Relaxed);
    }
}

/// Whether the Redis store can be reached (for `/readyz`).
#[derive(Debug, Clone)]
pub(crate) struct RedisReadiness(Arc<Link>);

impl RedisReadiness {
    pub(crate) fn is_ready(&self) -> bool {
        self.0.store_up.load(Relaxed) && self.0.pubsub_up.load(Relaxed) && !self.refuses_writes()
    }

    /// Whether Redis is connected but refusing writes for want of room
    /// (reachable, but not ready).
    pub(crate) fn refuses_writes(&self) -> bool {
        self.0.store_up.load(Relaxed) && self.0.refusing.load(Relaxed)
    }
}

/// The driver's handle on the Redis store.
#[derive(Debug)]
pub(crate) struct RedisBackend<R: Runtime> {
    store: RedisStore,
    link: Arc<Link>,
    subscriptions: async_channel::Sender<Subscription>,
    /// The number of the last subscription request made.
    requested: u64,
    timeout: Duration,
    /// To know whether the server still runs.
    tx: async_channel::WeakSender<ToDriver>,
    /// Where the operations' replies go (the driver's own channel for them).
    replies: async_channel::Sender<Input>,
    metrics: Arc<Metrics>,
    /// The supervisor and the pub/sub task: aborted with the backend.
    _tasks: [R::Task; 2],
}

impl<R: Runtime> RedisBackend<R> {
    /// Starts the supervisor and the pub/sub task. Notices go to `notices`,
    /// store replies to the driver through `replies` (while `tx`, the
    /// driver's channel, is open: the server runs).
    pub(crate) fn start(
        settings: &RedisSettings,
        config: StoreConfig,
        tx: async_channel::WeakSender<ToDriver>,
        replies: async_channel::Sender<Input>,
        notices: async_channel::Sender<Notice>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, RedisReadiness)> {
        let bad = |e: &dyn std::fmt::Display| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("redis url {:?}: {e}", settings.url),
            )
        };
        let (client, nodes) = match settings.url.strip_prefix("redis-cluster://") {
            Some(seeds) => {
                let seeds = parse_seeds(seeds).map_err(|e| bad(&e))?;
                let urls: Vec<String> = seeds
                    .iter()
                    .map(|(h, p)| format!("redis://{h}:{p}"))
                    .collect();
                let ops = redis::cluster::ClusterClient::builder(urls)
                    .connection_timeout(settings.timeout)
                    .response_timeout(settings.timeout)
                    .build()
                    .map_err(|e| bad(&e))?;
                (
                    Client::Cluster {
                        ops: Box::new(ops),
                        replication: Replication::new(settings.timeout / 2),
                    },
                    Nodes::Cluster(seeds),
                )
            }
            None => {
                let client = redis::Client::open(settings.url.as_str()).map_err(|e| bad(&e))?;
                let addr = match client.get_connection_info().addr() {
                    redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
                    other => return Err(bad(&format!("not a TCP address: {other}"))),
                };
                (Client::Single(client), Nodes::Single(addr))
            }
        };
        let retention_ms =
            u64::try_from(settings.history_retention.as_millis()).unwrap_or(u64::MAX);
        let store = RedisStore::new(&settings.prefix, config, retention_ms);
        let store = match &client {
            Client::Cluster { replication, .. } => store.with_replication(replication.clone()),
            Client::Single(_) => store,
        };
        let link = Arc::new(Link::new());
        let (sub_tx, sub_rx) = async_channel::unbounded();
        let supervisor = R::spawn(supervise::<R>(
            client.clone(),
            store.clone(),
            link.clone(),
            settings.timeout,
        ));
        let pubsub = R::spawn(pubsub::<R, Link>(
            nodes,
            link.clone(),
            sub_rx,
            notices,
            metrics.clone(),
            settings.timeout,
        ));
        Ok((
            Self {
                store,
                link: link.clone(),
                subscriptions: sub_tx,
                requested: 0,
                timeout: settings.timeout,
                tx,
                replies,
                metrics,
                _tasks: [supervisor, pubsub],
            },
            RedisReadiness(link),
        ))
    }

    /// Runs `request` in a task; its reply reaches the driver as an input.
    /// Without a connection, returns the failure to feed at once.
    ///
    /// The operation runs only once every subscription the core asked for
    /// before it is in effect: the core subscribes to a conversation before
    /// it reads it, and pub/sub travels on another connection, so without
    /// this a reply started between the read and the subscription would be
    /// missed (the very gap weir exists to close).
    pub(crate) fn submit(&self, op: OpId, request: StoreOp) -> Option<Input> {
        let Some((mut conn, epoch, generation)) = self.link.get() else {
            return Some(Input::StoreReply {
                op,
                result: Err(StoreError::Unavailable("redis: not connected".into())),
            });
        };
        // Shutting down: nobody would read it.
        self.tx.upgrade()?;
        let replies = self.replies.clone();
        let store = self.store.clone();
        let link = self.link.clone();
        let metrics = self.metrics.clone();
        let (needed, timeout) = (self.requested, self.timeout);
        R::spawn_detached(async move {
            if link.subscribed.load(Relaxed) < needed {
                link.subscribed_through::<R>(needed, timeout).await;
            }
            let write = request.is_refused_when_full();
            let applied = match link.deciding() {
                Some(mut deciding) if is_deciding(&request) => {
                    store.apply_replicated(&mut deciding, epoch, request).await
                }
                _ => store.apply(&mut conn, epoch, request).await,
            };
            let result = match applied {
                Ok(reply) => {
                    if write {
                        link.accepted();
                    }
                    Ok(reply)
                }
                Err(failure) => {
                    if failure.is_connection_lost() {
                        link.report_broken(generation);
                    } else if failure.is_refusal() {
                        link.refused(&failure);
                    } else if matches!(failure, Failure::Unreplicated { .. }) {
                        // A lagging or failed-over shard: the core retries.
                        tracing::warn!("store: {failure}; answered unavailable");
                    } else {
                        tracing::error!("store script: {failure}");
                    }
                    metrics.redis_errors.fetch_add(1, Relaxed);
                    Err(StoreError::from(failure))
                }
            };
            let _ = replies.send(Input::StoreReply { op, result }).await;
        });
        None
    }

    pub(crate) fn subscribe(&mut self, topic: &Topic) {
        self.requested += 1;
        let _ = self
            .subscriptions
            .try_send(Subscription::Add(self.store.channel(topic), self.requested));
    }

    pub(crate) fn unsubscribe(&mut self, topic: &Topic) {
        self.requested += 1;
        let _ = self.subscriptions.try_send(Subscription::Remove(
            self.store.channel(topic),
            self.requested,
        ));
    }
}

/// `HOST:PORT[,HOST:PORT…]`.
fn parse_seeds(seeds: &str) -> Result<Vec<Addr>, String> {
    seeds
        .split(',')
        .map(|s| {
            let (host, port) = s
                .rsplit_once(':')
                .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
            let port = port.parse().map_err(|_| format!("{s:?}: bad port"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(format!("{s:?}: no host"));
            }
            Ok((host.to_owned(), port))
        })
        .collect()
}

/// Whether `op` decides how a reply ends: on a cluster it waits for its
/// replicas, on the deciding connection.
fn is_deciding(op: &StoreOp) -> bool {
    matches!(op, StoreOp::Settle(_) | StoreOp::Cancel(_))
}

/// How to reach the store: one Redis, or a Redis Cluster.
#[derive(Clone)]
enum Client {
    Single(redis::Client),
    Cluster {
        /// Its two connections: one for every operation but settles and
        /// cancels, one for those (a `WAIT` holds a connection's later
        /// commands).
        ops: Box<redis::cluster::ClusterClient>,
        /// The replicas each slot's settles and cancels wait for.
        replication: Replication,
    },
}

async fn connect_cluster<R: Runtime>(
    c: &redis::cluster::ClusterClient,
    limit: Duration,
) -> redis::RedisResult<RedisConn> {
    match timeout::<R, _>(limit * 2, c.get_async_connection()).await {
        Ok(connected) => connected.map(RedisConn::Cluster),
        Err(_elapsed) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connecting to the Redis Cluster timed out",
        )
        .into()),
    }
}

/// The operations connection and, on a cluster, the deciding one (with the
/// replicas it waits for learnt).
async fn connect<R: Runtime>(
    client: &Client,
    limit: Duration,
) -> redis::RedisResult<(RedisConn, Option<RedisConn>)> {
    match client {
        Client::Single(c) => Ok((
            RedisConn::Single(connect_single::<R>(c, limit).await?),
            None,
        )),
        Client::Cluster { ops, replication } => {
            let mut conn = connect_cluster::<R>(ops, limit).await?;
            let deciding = connect_cluster::<R>(ops, limit).await?;
            learn_replicas::<R>(replication, &mut conn, limit).await;
            Ok((conn, Some(deciding)))
        }
    }
}

/// Reads which replicas each slot has (`CLUSTER SLOTS`), for the deciding
/// writes to wait for; on failure keeps what it knew.
async fn learn_replicas<R: Runtime>(
    replication: &Replication,
    conn: &mut RedisConn,
    limit: Duration,
) {
    match timeout::<R, _>(limit, replication.refresh(conn)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!("redis cluster: replicas not read: {e}"),
        Err(_elapsed) => tracing::warn!("redis cluster: replicas not read in time"),
    }
}

/// The operations connection to one Redis. Over TCP (every `redis://` URL),
/// weir makes the socket with its own runtime and runs the connection's
/// driver as one of its own tasks; other addresses (a Unix socket) go
/// through the redis crate's own connect.
async fn connect_single<R: Runtime>(
    client: &redis::Client,
    limit: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(limit))
        .set_response_timeout(Some(limit));
    let info = client.get_connection_info();
    let redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
        return client
            .get_multiplexed_async_connection_with_config(&config)
            .await;
    };
    let connecting = async {
        let io = R::connect(host, *port).await?;
        let (connection, driver) =
            MultiplexedConnection::new_with_config(info.redis_settings(), RedisIo(io), config)
                .await?;
        // It ends by itself once every clone of the connection is dropped,
        // or the socket fails.
        R::spawn_detached(driver);
        Ok(connection)
    };
    match timeout::<R, _>(limit, connecting).await {
        Ok(connected) => connected,
        Err(_elapsed) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connecting to Redis timed out",
        )
        .into()),
    }
}

/// Keeps the operations connection up.
async fn supervise<R: Runtime>(
    client: Client,
    store: RedisStore,
    link: Arc<Link>,
    timeout: Duration,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match connect::<R>(&client, timeout).await {
            Ok((mut conn, deciding)) => match establish::<R>(&store, &link, &mut conn).await {
                Ok(mut epoch) => {
                    let generation = link.generation.fetch_add(1, Relaxed) + 1;
                    link.set_deciding(deciding);
                    link.set(Some((conn.clone(), epoch, generation)));
                    link.store_up.store(true, Relaxed);
                    tracing::info!(epoch, "redis store connected");
                    backoff = BACKOFF_MIN;
                    // A ring left from before this connection is stale.
                    while link.broken.1.try_recv().is_ok() {}
                    loop {
                        let broken = link.broken.1.recv();
                        if let Either::Left(_) =
                            select(pin!(broken), pin!(R::sleep(EPOCH_CHECK))).await
                        {
                            break;
                        }
                        link.remind();
                        if let Client::Cluster { replication, .. } = &client {
                            learn_replicas::<R>(replication, &mut conn, timeout).await;
                        }
                        match establish::<R>(&store, &link, &mut conn).await {
                            Ok(now) if now != epoch => {
                                tracing::warn!(
                                    old = epoch,
                                    new = now,
                                    "the store lost its data: new epoch"
                                );
                                epoch = now;
                                link.set(Some((conn.clone(), epoch, generation)));
                            }
                            Ok(_) => {}
                            Err(e) if e.is_connection_lost() => break,
                            Err(e) => tracing::warn!("epoch check: {e}"),
                        }
                    }
                    link.store_up.store(false, Relaxed);
                    link.set(None);
                    link.set_deciding(None);
                    tracing::warn!("redis store connection lost; reconnecting");
                }
                Err(e) => tracing::warn!("redis store: {e}"),
            },
            Err(e) => tracing::warn!("redis store: cannot connect: {e}"),
        }
        R::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Establishes the epoch ([`RedisStore::establish_epoch`], a write: it tells
/// whether Redis accepts writes); while Redis refuses writes, reads the
/// epoch it has instead.
async fn establish<R: Runtime>(
    store: &RedisStore,
    link: &Link,
    conn: &mut RedisConn,
) -> Result<Epoch, Failure> {
    match store.establish_epoch(conn, R::unix_ms()).await {
        Ok(epoch) => {
            link.accepted();
            Ok(epoch)
        }
        Err(refusal) if refusal.is_refusal() => {
            link.refused(&refusal);
            store.read_epoch(conn).await?.ok_or(refusal)
        }
        Err(e) => Err(e),
    }
}
