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
    /// node says `cluster_state:ok` and all three replicas have synced with
    /// their masters (`master_link_status:up`: a replica that never synced cannot
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
        // Every node ok and knowing the three replicas, and those synced:
        // right after `--cluster create` a node meant as a replica still says
        // `role:master` until `CLUSTER REPLICATE` reaches it, and the others
        // learn it by gossip (until then their `CLUSTER SLOTS` lists no
        // replica for its master).
        let ready = |c: &Self| {
            c.nodes.iter().all(|n| {
                n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
                    && n.cli(&["CLUSTER", "NODES"])
                        .lines()
                        .filter(|l| {
                            l.split_whitespace()
                                .nth(2)
                                .is_some_and(|f| f.contains("slave"))
                        })
                        .count()
                        == 3
            }) && c
                .nodes
                .iter()
                .filter(|n| {
                    let replication = n.cli(&["INFO", "replication"]);
                    replication.contains("role:slave")
                        && replication.contains("master_link_status:up")
                })
                .count()
                == 3
        };
        // A replica whose replication offset is still 0 is not offered to
        // clients (`CLUSTER SLOTS` leaves it out until the master has
        // written something): one write to each master's slots (`{b}`,
        // `{c}` and `{a}` hash to 3300, 7365 and 15495).
        let mut written = false;
        let listed = |c: &Self| {
            c.nodes
                .iter()
                .all(|n| n.cli(&["CLUSTER", "SLOTS"]).matches("127.0.0.1").count() == 6)
        };
        while !(ready(&cluster) && {
            if !written {
                for key in ["{a}", "{b}", "{c}"] {
                    let port = cluster.nodes[0].port().to_string();
                    let _ = Command::new("redis-cli")
                        .args(["-c", "-p", &port, "SET", &format!("weir-test:{key}"), "1"])
                        .stdin(Stdio::null())
                        .output();
                }
                written = true;
            }
            listed(&cluster)
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

    /// The node listening on `port`.
    ///
    /// # Panics
    /// No node of the cluster listens on `port`.
    #[must_use]
    pub fn node(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .expect("a node on that port")
    }

    /// The port of a replica of the master on `port` (`CLUSTER NODES` as
    /// that master sees it).
    #[must_use]
    pub fn replica_of(&self, port: u16) -> Option<u16> {
        let table = self.node(port).cli(&["CLUSTER", "NODES"]);
        let id = table
            .lines()
            .find(|l| l.contains("myself"))?
            .split_whitespace()
            .next()?
            .to_owned();
        table.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2)?.contains("slave") && *f.get(3)? == id)
                .then(|| f[1].split(['@', ':']).nth(1)?.parse().ok())?
        })
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
