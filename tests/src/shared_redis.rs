//! The Redis that a multi-node test's weir processes share: one
//! `redis-server`, or a Redis Cluster (three masters, a replica each). The
//! multi-node suite (`tests/tests/cluster.rs`) runs each scenario on both:
//! [`RedisKind::current`] says which, as [`Runtime::current`] does for the
//! runtime, and [`runtimes_and_redis!`](crate::runtimes_and_redis) sets
//! both for each test.
//!
//! [`Runtime::current`]: crate::Runtime::current

use std::cell::Cell;
use std::process::Command;

use crate::{RedisCluster, RedisServer};

/// Which Redis the nodes of a test share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RedisKind {
    /// One `redis-server` (`--store redis://…`).
    One,
    /// A Redis Cluster (`--store redis-cluster://…`).
    Cluster,
}

impl RedisKind {
    /// `redis` or `cluster`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::One => "redis",
            Self::Cluster => "cluster",
        }
    }

    /// The kind [`SharedRedis::start`] starts on this thread: the one
    /// [`RedisKind::use_on_this_thread`] set, else one `redis-server`.
    #[must_use]
    pub fn current() -> Self {
        CURRENT_KIND.with(Cell::get).unwrap_or(Self::One)
    }

    /// Makes this the kind [`SharedRedis::start`] starts on this thread.
    pub fn use_on_this_thread(self) {
        CURRENT_KIND.with(|c| c.set(Some(self)));
    }
}

thread_local! {
    static CURRENT_KIND: Cell<Option<RedisKind>> = const { Cell::new(None) };
}

/// A running Redis of either kind (stopped when dropped).
#[derive(Debug)]
pub enum SharedRedis {
    /// One `redis-server`.
    One(RedisServer),
    /// A Redis Cluster.
    Cluster(RedisCluster),
}

impl SharedRedis {
    /// Starts the [`RedisKind::current`] kind.
    ///
    /// # Panics
    /// As [`RedisServer::start`] and [`RedisCluster::start`].
    #[must_use]
    pub fn start() -> Self {
        Self::start_kind(RedisKind::current())
    }

    /// Starts a Redis of `kind`.
    ///
    /// # Panics
    /// As [`RedisServer::start`] and [`RedisCluster::start`].
    #[must_use]
    pub fn start_kind(kind: RedisKind) -> Self {
        match kind {
            RedisKind::One => Self::One(RedisServer::start()),
            RedisKind::Cluster => Self::Cluster(RedisCluster::start()),
        }
    }

    /// Its kind.
    #[must_use]
    pub fn kind(&self) -> RedisKind {
        match self {
            Self::One(_) => RedisKind::One,
            Self::Cluster(_) => RedisKind::Cluster,
        }
    }

    /// The `--store` URL.
    #[must_use]
    pub fn url(&self) -> String {
        match self {
            Self::One(r) => r.url(),
            Self::Cluster(c) => c.url(),
        }
    }

    /// Every `redis-server` process (a cluster's replicas too).
    #[must_use]
    pub fn servers(&self) -> Vec<&RedisServer> {
        match self {
            Self::One(r) => vec![r],
            Self::Cluster(c) => c.nodes().iter().collect(),
        }
    }

    /// Runs one command about `key` with `redis-cli` on the server that
    /// holds it (on a cluster, `redis-cli -c` follows the redirection) and
    /// returns its output, trimmed.
    ///
    /// # Panics
    /// `redis-cli` cannot run.
    #[must_use]
    pub fn cli_key(&self, command: &str, key: &str, rest: &[&str]) -> String {
        let server = self.servers()[0].port().to_string();
        let out = Command::new("redis-cli")
            .args(["-c", "-h", "127.0.0.1", "-p", &server, command, key])
            .args(rest)
            .output()
            .unwrap_or_else(|e| panic!("run redis-cli: {e}"));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Freezes every server (SIGSTOP): connections stay open, nothing is
    /// answered, data is kept.
    pub fn pause(&self) {
        for s in self.servers() {
            s.pause();
        }
    }

    /// Thaws every server (SIGCONT).
    pub fn resume(&self) {
        for s in self.servers() {
            s.resume();
        }
    }
}

/// A Redis the `--store` flag can name.
pub trait StoreUrl {
    /// `redis://…` or `redis-cluster://…`.
    fn store_url(&self) -> String;
}

impl StoreUrl for RedisServer {
    fn store_url(&self) -> String {
        self.url()
    }
}

impl StoreUrl for RedisCluster {
    fn store_url(&self) -> String {
        self.url()
    }
}

impl StoreUrl for SharedRedis {
    fn store_url(&self) -> String {
        self.url()
    }
}
