//! The Redis store on tokio: connections around [`weir_store_redis`].
//!
//! - **Operations** go over one multiplexed connection (requests from many
//!   tasks are pipelined on it). Each `Output::Store` becomes a task that
//!   runs the script and feeds the reply back to the driver. While there is
//!   no connection an operation fails at once with `unavailable`; the core
//!   decides what that means (never a false `cancelled`).
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
//! `/readyz` answers 200 only while both connections are up.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, Notify};
use weir_core::store::{Epoch, Notice, StoreConfig, StoreError, StoreOp, Topic};
use weir_core::{Input, OpId};
use weir_store_redis::RedisStore;

use crate::driver::ToDriver;
use crate::metrics::Metrics;
use crate::RedisSettings;

/// How often the supervisor re-reads the epoch key.
const EPOCH_CHECK: Duration = Duration::from_secs(2);

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Room for notices between the pub/sub task and the driver.
pub(crate) const NOTICE_CAPACITY: usize = 65_536;

/// The current connection and what the tasks share.
#[derive(Debug, Default)]
struct Link {
    /// The operations connection, its epoch, and its generation.
    current: Mutex<Option<(MultiplexedConnection, Epoch, u64)>>,
    /// Rung by an operation that saw its connection fail.
    broken: Notify,
    store_up: AtomicBool,
    pubsub_up: AtomicBool,
    generation: AtomicU64,
    /// The number of the last subscription request the pub/sub task has
    /// carried out (confirmed by Redis, or found unnecessary).
    subscribed: AtomicU64,
    /// Rung whenever `subscribed` moves.
    subscribed_moved: Notify,
}

impl Link {
    fn mark_subscribed(&self, n: u64) {
        self.subscribed.fetch_max(n, Relaxed);
        self.subscribed_moved.notify_waiters();
    }

    /// Waits until subscription request `n` is in effect, at most `timeout`
    /// (past that the operation goes ahead: the core's watch re-reads
    /// recover what a late subscription misses).
    async fn subscribed_through(&self, n: u64, timeout: Duration) {
        let wait = async {
            loop {
                let moved = self.subscribed_moved.notified();
                if self.subscribed.load(Relaxed) >= n {
                    return;
                }
                moved.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }

    fn get(&self) -> Option<(MultiplexedConnection, Epoch, u64)> {
        self.current.lock().ok().and_then(|c| c.clone())
    }

    fn set(&self, value: Option<(MultiplexedConnection, Epoch, u64)>) {
        if let Ok(mut c) = self.current.lock() {
            *c = value;
        }
    }

    fn report_broken(&self, generation: u64) {
        if self.generation.load(Relaxed) == generation {
            self.broken.notify_one();
        }
    }
}

/// Whether the Redis store can be reached (for `/readyz`).
#[derive(Debug, Clone)]
pub(crate) struct RedisReadiness(Arc<Link>);

impl RedisReadiness {
    pub(crate) fn is_ready(&self) -> bool {
        self.0.store_up.load(Relaxed) && self.0.pubsub_up.load(Relaxed)
    }
}

/// A subscription request, numbered in the order the core made them.
enum Subscription {
    Add(String, u64),
    Remove(String, u64),
}

/// The driver's handle on the Redis store.
#[derive(Debug)]
pub(crate) struct RedisBackend {
    store: RedisStore,
    link: Arc<Link>,
    subscriptions: mpsc::UnboundedSender<Subscription>,
    /// The number of the last subscription request made.
    requested: u64,
    timeout: Duration,
    tx: mpsc::WeakSender<ToDriver>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subscription::Add(c, n) => write!(f, "subscribe #{n} {c}"),
            Subscription::Remove(c, n) => write!(f, "unsubscribe #{n} {c}"),
        }
    }
}

impl RedisBackend {
    /// Starts the supervisor and the pub/sub task. Notices go to `notices`,
    /// store replies to the driver through `tx`.
    pub(crate) fn start(
        settings: &RedisSettings,
        config: StoreConfig,
        tx: mpsc::WeakSender<ToDriver>,
        notices: mpsc::Sender<Notice>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(RedisBackend, RedisReadiness)> {
        let client = redis::Client::open(settings.url.as_str()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("redis url {:?}: {e}", settings.url),
            )
        })?;
        let retention_ms =
            u64::try_from(settings.history_retention.as_millis()).unwrap_or(u64::MAX);
        let store = RedisStore::new(&settings.prefix, config, retention_ms);
        let link = Arc::new(Link::default());
        let (sub_tx, sub_rx) = mpsc::unbounded_channel();
        tokio::spawn(supervise(
            client.clone(),
            store.clone(),
            link.clone(),
            settings.timeout,
        ));
        tokio::spawn(pubsub(
            client,
            link.clone(),
            sub_rx,
            notices,
            metrics.clone(),
            settings.timeout,
        ));
        Ok((
            RedisBackend {
                store,
                link: link.clone(),
                subscriptions: sub_tx,
                requested: 0,
                timeout: settings.timeout,
                tx,
                metrics,
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
        let tx = self.tx.upgrade()?; // shutting down: nobody would read it
        let store = self.store.clone();
        let link = self.link.clone();
        let metrics = self.metrics.clone();
        let (needed, timeout) = (self.requested, self.timeout);
        tokio::spawn(async move {
            if link.subscribed.load(Relaxed) < needed {
                link.subscribed_through(needed, timeout).await;
            }
            let result = match store.apply(&mut conn, epoch, request).await {
                Ok(reply) => Ok(reply),
                Err(failure) => {
                    if failure.is_connection_lost() {
                        link.report_broken(generation);
                    } else {
                        tracing::error!("store script: {failure}");
                    }
                    metrics.redis_errors.fetch_add(1, Relaxed);
                    Err(StoreError::from(failure))
                }
            };
            let _ = tx
                .send(ToDriver::Input(Input::StoreReply { op, result }))
                .await;
        });
        None
    }

    pub(crate) fn subscribe(&mut self, topic: &Topic) {
        self.requested += 1;
        let _ = self
            .subscriptions
            .send(Subscription::Add(self.store.channel(topic), self.requested));
    }

    pub(crate) fn unsubscribe(&mut self, topic: &Topic) {
        self.requested += 1;
        let _ = self.subscriptions.send(Subscription::Remove(
            self.store.channel(topic),
            self.requested,
        ));
    }
}

async fn connect(
    client: &redis::Client,
    timeout: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Keeps the operations connection up.
async fn supervise(client: redis::Client, store: RedisStore, link: Arc<Link>, timeout: Duration) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match connect(&client, timeout).await {
            Ok(mut conn) => match store
                .establish_epoch(&mut conn, crate::driver::unix_ms())
                .await
            {
                Ok(mut epoch) => {
                    let generation = link.generation.fetch_add(1, Relaxed) + 1;
                    link.set(Some((conn.clone(), epoch, generation)));
                    link.store_up.store(true, Relaxed);
                    tracing::info!(epoch, "redis store connected");
                    backoff = BACKOFF_MIN;
                    loop {
                        tokio::select! {
                            () = link.broken.notified() => break,
                            () = tokio::time::sleep(EPOCH_CHECK) => {
                                match store.establish_epoch(&mut conn, crate::driver::unix_ms()).await {
                                    Ok(now) if now != epoch => {
                                        tracing::warn!(old = epoch, new = now, "the store lost its data: new epoch");
                                        epoch = now;
                                        link.set(Some((conn.clone(), epoch, generation)));
                                    }
                                    Ok(_) => {}
                                    Err(e) if e.is_connection_lost() => break,
                                    Err(e) => tracing::warn!("epoch check: {e}"),
                                }
                            }
                        }
                    }
                    link.store_up.store(false, Relaxed);
                    link.set(None);
                    tracing::warn!("redis store connection lost; reconnecting");
                }
                Err(e) => tracing::warn!("redis store: {e}"),
            },
            Err(e) => tracing::warn!("redis store: cannot connect: {e}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Owns the pub/sub connection: (re)subscribes and forwards every notice.
async fn pubsub(
    client: redis::Client,
    link: Arc<Link>,
    mut commands: mpsc::UnboundedReceiver<Subscription>,
    notices: mpsc::Sender<Notice>,
    metrics: Arc<Metrics>,
    timeout: Duration,
) {
    let mut channels: HashSet<String> = HashSet::new();
    // The number of the last request taken into `channels`.
    let mut taken: u64 = 0;
    let mut backoff = BACKOFF_MIN;
    loop {
        let connected = tokio::time::timeout(timeout, client.get_async_pubsub()).await;
        let pubsub = match connected {
            Ok(Ok(p)) => Some(p),
            Ok(Err(e)) => {
                tracing::warn!("redis pub/sub: cannot connect: {e}");
                None
            }
            Err(_) => {
                tracing::warn!("redis pub/sub: connect timed out");
                None
            }
        };
        if let Some(pubsub) = pubsub {
            let (mut sink, mut stream) = pubsub.split();
            let all: Vec<&String> = channels.iter().collect();
            let resubscribed = all.is_empty() || sink.subscribe(all).await.is_ok();
            if resubscribed {
                link.mark_subscribed(taken);
                link.pubsub_up.store(true, Relaxed);
                tracing::info!(channels = channels.len(), "redis pub/sub connected");
                backoff = BACKOFF_MIN;
                loop {
                    tokio::select! {
                        command = commands.recv() => {
                            let (ok, n) = match command {
                                None => return, // the driver is gone
                                Some(Subscription::Add(c, n)) => {
                                    (!channels.insert(c.clone()) || sink.subscribe(&c).await.is_ok(), n)
                                }
                                Some(Subscription::Remove(c, n)) => {
                                    (!channels.remove(&c) || sink.unsubscribe(&c).await.is_ok(), n)
                                }
                            };
                            taken = n;
                            if !ok {
                                break;
                            }
                            link.mark_subscribed(n);
                        }
                        msg = stream.next() => {
                            let Some(msg) = msg else { break };
                            match RedisStore::decode_notice(msg.get_payload_bytes()) {
                                Ok(notice) => match notices.try_send(notice) {
                                    Ok(()) => {}
                                    Err(mpsc::error::TrySendError::Full(_)) => {
                                        metrics.notices_dropped.fetch_add(1, Relaxed);
                                    }
                                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                                },
                                Err(e) => tracing::warn!(
                                    channel = msg.get_channel_name(),
                                    "not a notice: {e}"
                                ),
                            }
                        }
                    }
                }
                link.pubsub_up.store(false, Relaxed);
                tracing::warn!("redis pub/sub connection lost; reconnecting");
            }
        }
        // While disconnected, keep the wanted channel set current.
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                command = commands.recv() => match command {
                    None => return,
                    Some(Subscription::Add(c, n)) => { channels.insert(c); taken = n; }
                    Some(Subscription::Remove(c, n)) => { channels.remove(&c); taken = n; }
                },
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
