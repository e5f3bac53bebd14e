//! The Redis store's notices: shard channels (`SSUBSCRIBE`), on one Redis or
//! a Redis Cluster, by one code path.
//!
//! The store publishes every notice with `SPUBLISH` on a channel in the slot
//! of the keys it speaks of (`weir_store_redis::slot`). A node subscribes
//! with its own subscriber, RESP2 by hand, not the redis crate's: the crate's
//! resubscription sends the channels of many slots in one `SSUBSCRIBE`,
//! which a cluster refuses (`CROSSSLOT`), and it matches one confirmation to
//! a command of many channels.
//!
//! - **One connection per Redis node that owns a slot** (one in all on a
//!   single Redis), a task each ([`shard`]), never one per channel. A node
//!   that serves 100 000 conversations holds as many connections as the
//!   cluster has masters.
//! - **One command per slot**: channels are grouped by slot, and a
//!   (re)connection sends one `SSUBSCRIBE` per slot that holds any, all
//!   pipelined.
//! - **Topology** ([`Topology`]): on a cluster, `CLUSTER SLOTS` from any node
//!   it knows; refreshed when a subscription is answered `MOVED` or when
//!   Redis unsubscribes channels by itself (`sunsubscribe` pushed when their
//!   slot left the node: a migration or failover), and those channels are
//!   subscribed again on their new owner. On one Redis every slot is its.
//! - **Subscribe before read**: request `n` counts as carried out once Redis
//!   confirmed its `ssubscribe` (or it needed none); the link's `subscribed`
//!   mark is the highest `n` with every request up to it carried out.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::pin::pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::io::{AsyncReadExt, AsyncWriteExt};
use futures_util::{select_biased, FutureExt};
use weir_core::store::Notice;
use weir_store_redis::{slot, RedisStore};

use crate::io::HyperIo;
use crate::metrics::Metrics;
use crate::rt::{timeout, Runtime};

pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(50);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What the subscriber reports to the rest of the store.
pub(crate) trait Progress: Send + Sync + 'static {
    /// Every subscription request up to `n` is in effect.
    fn mark_subscribed(&self, n: u64);
    /// Whether every subscriber connection is up (for `/readyz`).
    fn set_up(&self, up: bool);
}

/// A Redis node's address.
pub(crate) type Addr = (String, u16);

/// A subscription request, numbered in the order the core made them.
pub(crate) enum Subscription {
    Add(String, u64),
    Remove(String, u64),
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Add(c, n) => write!(f, "subscribe #{n} {c}"),
            Self::Remove(c, n) => write!(f, "unsubscribe #{n} {c}"),
        }
    }
}

/// What the store is: one Redis, or a cluster known by seed nodes.
#[derive(Debug, Clone)]
pub(crate) enum Nodes {
    Single(Addr),
    Cluster(Vec<Addr>),
}

/// Which node owns each slot.
struct Topology {
    owner: Vec<Option<usize>>,
    nodes: Vec<Addr>,
}

impl Topology {
    fn single(addr: Addr) -> Self {
        Self {
            owner: vec![Some(0); 16_384],
            nodes: vec![addr],
        }
    }

    fn owner_of(&self, channel: &str) -> Option<&Addr> {
        let i = self.owner[usize::from(slot(channel))]?;
        self.nodes.get(i)
    }

    /// `CLUSTER SLOTS` from the first of `known` that answers.
    async fn fetch<R: Runtime>(known: &[Addr], limit: Duration) -> Option<Self> {
        for (host, port) in known {
            let Ok(client) = redis::Client::open(format!("redis://{host}:{port}")) else {
                continue;
            };
            let ask = async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async::<redis::Value>(&mut conn)
                    .await
            };
            let Ok(Ok(redis::Value::Array(ranges))) = timeout::<R, _>(limit, ask).await else {
                continue;
            };
            let mut t = Self {
                owner: vec![None; 16_384],
                nodes: Vec::new(),
            };
            for range in ranges {
                let redis::Value::Array(parts) = range else {
                    continue;
                };
                let (Some(from), Some(to), Some(master)) = (
                    parts.first().and_then(int),
                    parts.get(1).and_then(int),
                    parts.get(2),
                ) else {
                    continue;
                };
                let redis::Value::Array(m) = master else {
                    continue;
                };
                let host = match m.first() {
                    Some(redis::Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
                    _ => host.clone(),
                };
                let Some(port) = m.get(1).and_then(int).and_then(|p| u16::try_from(p).ok()) else {
                    continue;
                };
                let addr = (
                    if host.is_empty() {
                        "127.0.0.1".into()
                    } else {
                        host
                    },
                    port,
                );
                let i = t.nodes.iter().position(|a| *a == addr).unwrap_or_else(|| {
                    t.nodes.push(addr);
                    t.nodes.len() - 1
                });
                for s in from..=to.min(16_383) {
                    t.owner[usize::try_from(s).unwrap_or(0)] = Some(i);
                }
            }
            return Some(t);
        }
        None
    }
}

fn int(v: &redis::Value) -> Option<i64> {
    match v {
        redis::Value::Int(n) => Some(*n),
        _ => None,
    }
}

/// What a shard task tells the coordinator.
enum Event {
    /// These requests are in effect.
    Confirmed(Vec<u64>),
    /// These channels are no longer subscribed on this node (their slot
    /// moved, or Redis answered `MOVED`): subscribe them where they live now.
    Moved(Vec<(String, Vec<u64>)>),
    Up(Addr),
    Down(Addr),
}

/// What the coordinator tells a shard task.
enum ShardCmd {
    Add(String, u64),
    Remove(String),
}

/// Owns the subscriptions: routes each channel to the task of the node that
/// owns its slot, follows the topology, keeps the `subscribed` mark.
pub(crate) async fn pubsub<R: Runtime, P: Progress>(
    nodes: Nodes,
    link: Arc<P>,
    commands: async_channel::Receiver<Subscription>,
    notices: async_channel::Sender<Notice>,
    metrics: Arc<Metrics>,
    limit: Duration,
) {
    let (events_tx, events) = async_channel::unbounded::<Event>();
    let mut topology = match &nodes {
        Nodes::Single(addr) => Topology::single(addr.clone()),
        Nodes::Cluster(seeds) => loop {
            if let Some(t) = Topology::fetch::<R>(seeds, limit).await {
                break t;
            }
            tracing::warn!("redis cluster: no seed node answers CLUSTER SLOTS; retrying");
            R::sleep(BACKOFF_MAX).await;
        },
    };
    let mut shards: HashMap<Addr, (async_channel::Sender<ShardCmd>, R::Task)> = HashMap::new();
    let mut down: HashSet<Addr> = HashSet::new();
    // Each wanted channel, and the node it was given to.
    let mut wanted: HashMap<String, Option<Addr>> = HashMap::new();
    let mut pending: BTreeSet<u64> = BTreeSet::new();
    let mut taken: u64 = 0;
    let shard_for = |addr: &Addr,
                     shards: &mut HashMap<Addr, (async_channel::Sender<ShardCmd>, R::Task)>,
                     down: &mut HashSet<Addr>|
     -> async_channel::Sender<ShardCmd> {
        shards
            .entry(addr.clone())
            .or_insert_with(|| {
                down.insert(addr.clone());
                let (tx, rx) = async_channel::unbounded();
                let task = R::spawn(shard::<R>(
                    addr.clone(),
                    rx,
                    events_tx.clone(),
                    notices.clone(),
                    metrics.clone(),
                    limit,
                ));
                (tx, task)
            })
            .0
            .clone()
    };
    // Connect to every node now: /readyz waits for them.
    for addr in topology.nodes.clone() {
        shard_for(&addr, &mut shards, &mut down);
    }
    loop {
        let next = {
            let mut command = pin!(commands.recv().fuse());
            let mut event = pin!(events.recv().fuse());
            select_biased! {
                e = event => Ok(e),
                c = command => Err(c),
            }
        };
        let mut moved = Vec::new();
        match next {
            Err(Err(_)) => return, // the driver is gone
            Err(Ok(Subscription::Add(channel, n))) => {
                taken = n;
                if wanted.contains_key(&channel) {
                    // Already asked for: carried out with (or before) it.
                } else if let Some(addr) = topology.owner_of(&channel).cloned() {
                    pending.insert(n);
                    wanted.insert(channel.clone(), Some(addr.clone()));
                    let tx = shard_for(&addr, &mut shards, &mut down);
                    let _ = tx.try_send(ShardCmd::Add(channel, n));
                } else {
                    // No node owns the slot now: subscribed once one does.
                    wanted.insert(channel.clone(), None);
                    moved.push((channel, vec![n]));
                }
            }
            Err(Ok(Subscription::Remove(channel, n))) => {
                taken = n;
                if let Some(Some(addr)) = wanted.remove(&channel) {
                    if let Some((tx, _)) = shards.get(&addr) {
                        let _ = tx.try_send(ShardCmd::Remove(channel));
                    }
                }
            }
            Ok(Err(_)) => return,
            Ok(Ok(Event::Confirmed(ns))) => {
                for n in ns {
                    pending.remove(&n);
                }
            }
            Ok(Ok(Event::Up(addr))) => {
                down.remove(&addr);
            }
            Ok(Ok(Event::Down(addr))) => {
                down.insert(addr);
            }
            Ok(Ok(Event::Moved(channels))) => moved = channels,
        }
        if !moved.is_empty() {
            if let Nodes::Cluster(seeds) = &nodes {
                let known: Vec<Addr> = topology.nodes.iter().chain(seeds).cloned().collect();
                if let Some(t) = Topology::fetch::<R>(&known, limit).await {
                    topology = t;
                } else {
                    R::sleep(BACKOFF_MIN).await;
                }
            }
            for (channel, ns) in moved {
                let Some(slot_owner) = wanted.get_mut(&channel) else {
                    // Unsubscribed meanwhile.
                    for n in ns {
                        pending.remove(&n);
                    }
                    continue;
                };
                let owner = topology.owner_of(&channel).cloned();
                *slot_owner = owner.clone();
                tracing::info!(channel, ?owner, "redis pub/sub: channel moved");
                match owner {
                    Some(addr) => {
                        let tx = shard_for(&addr, &mut shards, &mut down);
                        // A channel subscribed long ago has no request
                        // waiting on it (0: none), and must move all the same.
                        let ns = if ns.is_empty() { vec![0] } else { ns };
                        for n in ns {
                            let _ = tx.try_send(ShardCmd::Add(channel.clone(), n));
                        }
                    }
                    None => {
                        // Retried at the next event; the core's watch re-reads
                        // recover what is missed meanwhile.
                        for n in ns {
                            pending.remove(&n);
                        }
                    }
                }
            }
        }
        let mark = pending.first().map_or(taken, |first| first - 1);
        link.mark_subscribed(mark);
        link.set_up(down.is_empty());
    }
}

/// One subscriber connection to one Redis node: holds the channels of the
/// slots the node owns, reconnects with backoff and subscribes them again.
async fn shard<R: Runtime>(
    addr: Addr,
    commands: async_channel::Receiver<ShardCmd>,
    events: async_channel::Sender<Event>,
    notices: async_channel::Sender<Notice>,
    metrics: Arc<Metrics>,
    limit: Duration,
) {
    // Each held channel and the requests waiting for its confirmation.
    let mut held: HashMap<String, Vec<u64>> = HashMap::new();
    let mut backoff = BACKOFF_MIN;
    loop {
        let connected = timeout::<R, _>(limit, R::connect(&addr.0, addr.1)).await;
        if let Ok(Ok(io)) = connected {
            let (mut reader, mut writer) = HyperIo(io).split();
            // Every held channel again, one command per slot.
            let all: Vec<String> = held.keys().cloned().collect();
            let mut inflight: VecDeque<Pending> = VecDeque::new();
            let mut leaving: HashSet<String> = HashSet::new();
            let mut out = Vec::new();
            subscribe_grouped(&all, &mut out, &mut inflight);
            if writer.write_all(&out).await.is_ok() {
                let _ = events.try_send(Event::Up(addr.clone()));
                tracing::info!(node = ?addr, channels = held.len(), "redis pub/sub connected");
                backoff = BACKOFF_MIN;
                let mut buf: Vec<u8> = Vec::new();
                let mut chunk = vec![0u8; 16 * 1024];
                'conn: loop {
                    // Every whole frame in the buffer first.
                    loop {
                        match parse(&buf) {
                            Ok(Some((frame, used))) => {
                                buf.drain(..used);
                                let ok = on_frame(
                                    frame,
                                    &mut held,
                                    &mut inflight,
                                    &mut leaving,
                                    &events,
                                    &notices,
                                    &metrics,
                                );
                                if !ok {
                                    return;
                                }
                            }
                            Ok(None) => break,
                            Err(()) => {
                                tracing::warn!(node = ?addr, "redis pub/sub: bad frame");
                                break 'conn;
                            }
                        }
                    }
                    let next = {
                        let mut command = pin!(commands.recv().fuse());
                        let mut read = reader.read(&mut chunk).fuse();
                        select_biased! {
                            r = read => Ok(r),
                            c = command => Err(c),
                        }
                    };
                    match next {
                        Ok(Ok(0) | Err(_)) => break,
                        Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                        Err(Err(_)) => return,
                        Err(Ok(cmd)) => {
                            let mut out = Vec::new();
                            match cmd {
                                ShardCmd::Add(channel, n) => {
                                    if let Some(waiting) = held.get_mut(&channel) {
                                        if waiting.is_empty() && !leaving.contains(&channel) {
                                            let _ = events.try_send(Event::Confirmed(vec![n]));
                                        } else {
                                            waiting.push(n);
                                        }
                                        if !leaving.remove(&channel) {
                                            continue;
                                        }
                                    } else {
                                        held.insert(channel.clone(), vec![n]);
                                    }
                                    subscribe_grouped(&[channel], &mut out, &mut inflight);
                                }
                                ShardCmd::Remove(channel) => {
                                    if held.remove(&channel).is_none() {
                                        continue;
                                    }
                                    leaving.insert(channel.clone());
                                    out = redis::cmd("SUNSUBSCRIBE")
                                        .arg(&channel)
                                        .get_packed_command();
                                }
                            }
                            if writer.write_all(&out).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = events.try_send(Event::Down(addr.clone()));
                tracing::warn!(node = ?addr, "redis pub/sub connection lost; reconnecting");
            }
        } else {
            tracing::warn!(node = ?addr, "redis pub/sub: cannot connect");
            let _ = events.try_send(Event::Down(addr.clone()));
        }
        // The node may be gone for good (a failover promotes its replica,
        // at another address): the coordinator reads the topology again and
        // gives the channels to whichever node owns their slots now (this
        // one again on a single Redis).
        if !held.is_empty() {
            let lost: Vec<(String, Vec<u64>)> = held.drain().collect();
            let _ = events.try_send(Event::Moved(lost));
        }
        // While disconnected, keep the held set current.
        let mut sleep = pin!(R::sleep(backoff).fuse());
        loop {
            let mut command = pin!(commands.recv().fuse());
            select_biased! {
                () = sleep => break,
                c = command => match c {
                    Err(_) => return,
                    Ok(ShardCmd::Add(channel, n)) => held.entry(channel).or_default().push(n),
                    Ok(ShardCmd::Remove(channel)) => { held.remove(&channel); }
                },
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A subscription command sent and not yet answered in full.
struct Pending {
    channels: Vec<String>,
    /// Confirmations still to come.
    left: usize,
}

/// Appends one `SSUBSCRIBE` per slot of `channels` to `out`.
fn subscribe_grouped(channels: &[String], out: &mut Vec<u8>, inflight: &mut VecDeque<Pending>) {
    let mut by_slot: HashMap<u16, Vec<String>> = HashMap::new();
    for c in channels {
        by_slot.entry(slot(c)).or_default().push(c.clone());
    }
    for (_, group) in by_slot {
        out.extend(redis::cmd("SSUBSCRIBE").arg(&group).get_packed_command());
        inflight.push_back(Pending {
            left: group.len(),
            channels: group,
        });
    }
}

/// Handles one frame; `false`: the node is shutting down.
fn on_frame(
    frame: Frame,
    held: &mut HashMap<String, Vec<u64>>,
    inflight: &mut VecDeque<Pending>,
    leaving: &mut HashSet<String>,
    events: &async_channel::Sender<Event>,
    notices: &async_channel::Sender<Notice>,
    metrics: &Metrics,
) -> bool {
    match frame {
        Frame::Array(parts) => {
            let kind = parts.first().and_then(Frame::bytes).unwrap_or_default();
            let channel = parts
                .get(1)
                .and_then(Frame::bytes)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            match kind {
                b"smessage" => {
                    let payload = parts.get(2).and_then(Frame::bytes).unwrap_or_default();
                    match RedisStore::decode_notice(payload) {
                        Ok(notice) => match notices.try_send(notice) {
                            Ok(()) => {}
                            Err(async_channel::TrySendError::Full(_)) => {
                                metrics.notices_dropped.fetch_add(1, Relaxed);
                            }
                            Err(async_channel::TrySendError::Closed(_)) => return false,
                        },
                        Err(e) => tracing::warn!(channel, "not a notice: {e}"),
                    }
                }
                b"ssubscribe" => {
                    if let Some(head) = inflight.front_mut() {
                        head.left = head.left.saturating_sub(1);
                        if head.left == 0 {
                            inflight.pop_front();
                        }
                    }
                    if let Some(waiting) = held.get_mut(&channel) {
                        let ns = std::mem::take(waiting);
                        if !ns.is_empty() {
                            let _ = events.try_send(Event::Confirmed(ns));
                        }
                    }
                }
                // Not one we asked for: Redis dropped it by itself (its
                // slot left this node).
                b"sunsubscribe" if !leaving.remove(&channel) => {
                    if let Some(ns) = held.remove(&channel) {
                        let _ = events.try_send(Event::Moved(vec![(channel, ns)]));
                    }
                }
                _ => {}
            }
        }
        Frame::Error(e) => {
            // The answer to the oldest subscription command, as a whole.
            let Some(head) = inflight.pop_front() else {
                tracing::warn!("redis pub/sub: {e}");
                return true;
            };
            if !e.starts_with("MOVED") {
                tracing::warn!(channels = head.channels.len(), "redis pub/sub: {e}");
            }
            let moved: Vec<(String, Vec<u64>)> = head
                .channels
                .into_iter()
                .filter_map(|c| held.remove(&c).map(|ns| (c, ns)))
                .collect();
            if !moved.is_empty() {
                let _ = events.try_send(Event::Moved(moved));
            }
        }
        Frame::Bulk(_) | Frame::Other => {}
    }
    true
}

/// A RESP2 frame, as much of it as pub/sub needs.
#[derive(Debug)]
enum Frame {
    Array(Vec<Self>),
    Bulk(Vec<u8>),
    Error(String),
    Other,
}

impl Frame {
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Bulk(b) => Some(b),
            _ => None,
        }
    }
}

/// The first whole frame of `buf` and its length (`None`: not all there
/// yet; `Err`: not RESP).
fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, ()> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[1..eol]).map_err(|_| ())?;
    let after = eol + 2;
    match buf.first() {
        Some(b'+' | b':') => Ok(Some((Frame::Other, after))),
        Some(b'-') => Ok(Some((Frame::Error(line.to_owned()), after))),
        Some(b'$') => {
            let len: i64 = line.parse().map_err(|_| ())?;
            let Ok(len) = usize::try_from(len) else {
                return Ok(Some((Frame::Other, after))); // nil
            };
            if buf.len() < after + len + 2 {
                return Ok(None);
            }
            Ok(Some((
                Frame::Bulk(buf[after..after + len].to_vec()),
                after + len + 2,
            )))
        }
        Some(b'*') => {
            let n: i64 = line.parse().map_err(|_| ())?;
            let n = usize::try_from(n).unwrap_or(0);
            let mut at = after;
            let mut parts = Vec::with_capacity(n.min(16));
            for _ in 0..n {
                match parse(&buf[at..])? {
                    Some((f, used)) => {
                        parts.push(f);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Frame::Array(parts), at)))
        }
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_whole_or_not_at_all() {
        let msg = b"*3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n";
        for cut in 0..msg.len() {
            assert!(matches!(parse(&msg[..cut]), Ok(None)), "{cut}");
        }
        let (frame, used) = parse(msg).unwrap().unwrap();
        assert_eq!(used, msg.len());
        let Frame::Array(parts) = frame else {
            panic!("{frame:?}")
        };
        assert_eq!(parts[2].bytes(), Some(&b"hello"[..]));
        let (frame, _) = parse(b"-MOVED 12 127.0.0.1:7001\r\n").unwrap().unwrap();
        assert!(matches!(frame, Frame::Error(e) if e.starts_with("MOVED")));
        assert!(parse(b"?x\r\n").is_err());
    }

    #[test]
    fn a_resubscription_sends_one_command_per_slot() {
        let channels: Vec<String> = ["{a}:1", "{a}:2", "{b}:1", "{c}:1"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let mut out = Vec::new();
        let mut inflight = VecDeque::new();
        subscribe_grouped(&channels, &mut out, &mut inflight);
        assert_eq!(inflight.len(), 3);
        for p in &inflight {
            let slots: HashSet<u16> = p.channels.iter().map(|c| slot(c)).collect();
            assert_eq!(slots.len(), 1, "one slot per command: {:?}", p.channels);
        }
    }
}
