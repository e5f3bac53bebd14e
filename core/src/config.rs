//! A node's settings.

use std::time::Duration;

use crate::caps::Caps;
use crate::ids::NodeId;
use crate::presence::PresenceTimers;
use crate::stream::StreamTimers;
use crate::wire::Limits;

/// A node's settings. The stream and presence timers must equal the store's
/// (they are cluster-wide).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Config {
    /// This node's name, unique in the cluster.
    pub node_id: NodeId,
    /// Inbound frame and content limits.
    pub limits: Limits,
    /// Lease, cancel deadline, grace window.
    pub timers: StreamTimers,
    /// Presence debounce and entry expiry.
    pub presence: PresenceTimers,
    /// How often a WebSocket ping is sent on a quiet connection.
    pub heartbeat: Duration,
    /// A connection with no inbound frame or pong for this long is closed
    /// with 4000.
    pub idle_timeout: Duration,
    /// A connection whose writer has taken nothing from its outbound queue
    /// for this long, while frames wait there, is closed with 4008 (the
    /// client resumes and loses nothing); the runtime reports the stall
    /// ([`Input::WriteStalled`](crate::Input::WriteStalled)).
    pub stall_timeout: Duration,
    /// The most reply text (chunk deltas, in bytes) a connection may be
    /// behind by — what the node has not handed it yet (its cursors wait
    /// while its queue is full) plus what its outbound queue holds: a
    /// connection whose lag is past it at two of the runtime's looks in a
    /// row, and has not shrunk in between, is closed with 4008 (the client
    /// resumes); the runtime reports its queue at every look
    /// ([`Input::QueueLag`](crate::Input::QueueLag))
    /// ([`DEFAULT_MAX_LAG_BYTES`](Self::DEFAULT_MAX_LAG_BYTES)).
    pub max_lag_bytes: usize,
    /// How long a closing connection may take before its slot is released.
    pub close_timeout: Duration,
    /// How many messages the `history` frame holds at most.
    pub history_limit: usize,
    /// How many history messages a generator gets as context.
    pub context_limit: usize,
    /// How often the node sweeps the store (reaps dead owners' replies) and
    /// refreshes its presence entries (those at most every third of
    /// [`PresenceTimers::entry_ttl_ms`]).
    pub housekeeping: Duration,
    /// How long a watched reply may stay silent before the node re-reads it
    /// from the store (catches lost notices and dead owners).
    pub watch_interval: Duration,
    /// Delay before a producer retries a store write that failed.
    pub store_retry: Duration,
    /// The most chunks one append carries
    /// ([`DEFAULT_APPEND_MAX_CHUNKS`](Self::DEFAULT_APPEND_MAX_CHUNKS)).
    /// What the generator produced meanwhile waits for the next append.
    pub append_max_chunks: usize,
    /// The most delta bytes one append carries (a single longer delta goes
    /// alone) ([`DEFAULT_APPEND_MAX_BYTES`](Self::DEFAULT_APPEND_MAX_BYTES)).
    pub append_max_bytes: usize,
    /// The most chunk deliveries (one chunk to one connection) one step of
    /// the node hands out; a conversation with more to deliver continues on
    /// the next step, so a large batch never holds the node (and its lease
    /// renewals) for long
    /// ([`DEFAULT_FANOUT_SLICE`](Self::DEFAULT_FANOUT_SLICE)).
    pub fanout_slice: usize,
    /// The most chunks one step hands a connection of a dialect that sends
    /// one frame per chunk (the AI SDK's: [`DialectConn::unmerged`](crate::dialect::DialectConn::unmerged)),
    /// so that the frames of a step fit in the room its outbound queue
    /// keeps above the high-water mark (credit then holds the rest in the
    /// view, [`Input::WriteBlocked`](crate::Input::WriteBlocked)); a
    /// catch-up of thousands of chunks would otherwise overflow the queue
    /// and close the connection. The runtime sets it from its queue
    /// capacity ([`DEFAULT_NUMBERED_STEP`](Self::DEFAULT_NUMBERED_STEP)).
    pub numbered_step: usize,
    /// Caps per user and per client address ([`caps`](crate::caps)); all
    /// off by default here, `weir serve` sets [`Caps::RECOMMENDED`].
    pub caps: Caps,
    /// The compat dialect's settings (`/ws/chat`: suffixes, coalescing).
    pub compat: crate::dialect::compat::CompatSettings,
    /// `--chunk-timestamps`: chunks are stamped with the wall-clock time of
    /// their append (to the nanosecond, with [`Input::WallClockNs`](crate::Input::WallClockNs)),
    /// kept in the store, and sent as `ts_ns` on `chunk` frames (off by
    /// default; for load tools measuring generator → client latency).
    pub chunk_timestamps: bool,
}

impl Config {
    /// Default most chunks per append: 256.
    pub const DEFAULT_APPEND_MAX_CHUNKS: usize = 256;
    /// Default most delta bytes per append: 64 KiB.
    pub const DEFAULT_APPEND_MAX_BYTES: usize = 64 * 1024;
    /// Default most chunk deliveries per step: 65 536 (218 chunks each to
    /// 300 connections, 65 to 1 000). At 4 096 the fan-out of one reply to
    /// 1 000 connections fell to 0.25–0.33x the bare server's chunks/s
    /// (docs/benchmarks.md).
    pub const DEFAULT_FANOUT_SLICE: usize = 65_536;
    /// Default [`numbered_step`](Self::numbered_step): a sixteenth of the
    /// runtime's default queue capacity (256 frames).
    pub const DEFAULT_NUMBERED_STEP: usize = 16;
    /// Default lag bound: 1 MiB of reply text per connection. A whole long
    /// reply (tens of thousands of tokens is a few hundred KiB) fits, so a
    /// reader that is a reply behind is not closed for it. The lag is text
    /// the conversation's view holds once for every connection, not a copy
    /// per connection.
    pub const DEFAULT_MAX_LAG_BYTES: usize = 1024 * 1024;

    /// Defaults for a node named `node_id`.
    #[must_use]
    pub fn new(node_id: NodeId) -> Self {
        Self {
            node_id,
            limits: Limits::default(),
            timers: StreamTimers::default(),
            presence: PresenceTimers::default(),
            heartbeat: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(10),
            max_lag_bytes: Self::DEFAULT_MAX_LAG_BYTES,
            close_timeout: Duration::from_secs(5),
            history_limit: 200,
            context_limit: 50,
            housekeeping: Duration::from_secs(2),
            watch_interval: Duration::from_secs(2),
            store_retry: Duration::from_millis(200),
            append_max_chunks: Self::DEFAULT_APPEND_MAX_CHUNKS,
            append_max_bytes: Self::DEFAULT_APPEND_MAX_BYTES,
            fanout_slice: Self::DEFAULT_FANOUT_SLICE,
            numbered_step: Self::DEFAULT_NUMBERED_STEP,
            caps: Caps::default(),
            compat: crate::dialect::compat::CompatSettings::default(),
            chunk_timestamps: false,
        }
    }

    /// How often the producer renews its lease: a third of the lease.
    #[must_use]
    pub fn renew_interval(&self) -> Duration {
        Duration::from_millis((self.timers.lease_ttl_ms / 3).max(1))
    }
}
