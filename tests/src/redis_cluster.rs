//! A real Redis Cluster on loopback: six `redis-server --cluster-enabled yes`
//! (three masters, a replica each) joined by `redis-cli --cluster create`,
//! stopped when dropped (only the processes it started, by PID).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::RedisServer;

/// A running Redis Cluster of three masters and three replicas.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts six cluster-enabled servers and joins them; returns once every
    /// node says `cluster_state:ok` and every replica has synced with its
    /// master (`master_link_status:up`: a replica that never synced cannot
    /// take over, "Disconnected from master for longer than allowed").
    ///
    /// # Panics
    /// `redis-server` or `redis-cli` is missing, or the cluster is not ok
    /// within 30 s.
    #[must_use]
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                    // A replica's first sync starts at once (the default
                    // waits 5 s for more replicas to share it).
                    "--repl-diskless-sync-delay",
                    "0",
                ])
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port()));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cluster.nodes.iter().all(|n| {
            n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") && {
                let replication = n.cli(&["INFO", "replication"]);
                replication.contains("role:master") || replication.contains("master_link_status:up")
            }
        }) {
            assert!(
                Instant::now() < deadline,
                "the cluster is not ok (or a replica not synced) within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// `redis-cluster://127.0.0.1:P1,127.0.0.1:P2` (two seeds; the rest is
    /// discovered).
    #[must_use]
    pub fn url(&self) -> String {
        format!(
            "redis-cluster://127.0.0.1:{},127.0.0.1:{}",
            self.nodes[0].port(),
            self.nodes[1].port()
        )
    }

    /// The nodes.
    #[must_use]
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Kills (SIGKILL) the node on `port`; its replica takes over after the
    /// cluster node timeout (2 s).
    ///
    /// # Panics
    /// No node of the cluster listens on `port`.
    pub fn kill(&mut self, port: u16) {
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .expect("a node on that port")
            .kill();
    }

    /// The masters (the nodes whose `ROLE` is master).
    #[must_use]
    pub fn masters(&self) -> Vec<&RedisServer> {
        self.nodes
            .iter()
            .filter(|n| n.cli(&["ROLE"]).starts_with("master"))
            .collect()
    }
}
