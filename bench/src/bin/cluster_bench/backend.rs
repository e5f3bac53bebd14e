//! The Redis a run's nodes share (`weir_tests::SharedRedis`: one
//! `redis-server`, or a Redis Cluster of three masters with a replica each),
//! and what the bench reads off it: the CPU its processes spent and, per
//! process, the commands and shard messages it handled.

use std::collections::BTreeMap;

use clap::ValueEnum;
use serde_json::{json, Value};
use weir_tests::{RedisKind, RedisServer, SharedRedis};

/// `--redis`: which Redis the nodes share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RedisChoice {
    /// One `redis-server`.
    One,
    /// A Redis Cluster: three masters, a replica each.
    Cluster,
    /// Both, one after the other in the same run.
    Both,
}

impl RedisChoice {
    pub(crate) fn kinds(self) -> &'static [RedisKind] {
        match self {
            Self::One => &[RedisKind::One],
            Self::Cluster => &[RedisKind::Cluster],
            Self::Both => &[RedisKind::One, RedisKind::Cluster],
        }
    }
}

/// Where `redis` listens, for the headings.
pub(crate) fn describe(redis: &SharedRedis) -> String {
    match redis {
        SharedRedis::One(r) => format!("redis-server port {}", r.port()),
        SharedRedis::Cluster(c) => format!(
            "Redis Cluster ports {} (3 masters, 3 replicas)",
            c.nodes()
                .iter()
                .map(|n| n.port().to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// CPU time (user + system) of all of `redis`'s processes so far, in clock
/// ticks.
fn cpu_ticks(redis: &SharedRedis) -> u64 {
    redis
        .servers()
        .iter()
        .filter_map(|s| s.pid())
        .filter_map(|pid| weir_bench::cpu_ticks(Some(pid)).ok())
        .sum()
}

/// What one `redis-server` of a run handled.
#[derive(Debug, Clone)]
pub(crate) struct Shard {
    pub(crate) port: u16,
    /// `master` or `slave` (Redis's word, from `ROLE`).
    pub(crate) role: String,
    /// `INFO stats`' `total_commands_processed`.
    pub(crate) commands: u64,
    /// `INFO commandstats`' calls per command (those inside scripts too).
    pub(crate) per_command: BTreeMap<String, u64>,
    /// `CLUSTER INFO`'s `cluster_stats_messages_publish_sent`: classic
    /// pub/sub messages this node broadcast over the cluster bus.
    pub(crate) bus_publish: u64,
    /// `cluster_stats_messages_publishshard_sent`: shard messages sent over
    /// the bus (to the shard's own replicas only).
    pub(crate) bus_publishshard: u64,
    /// From `ROLE`: a master's replication offset and its replicas (port @
    /// the offset each acknowledged); a replica's master, link state and
    /// offset.
    pub(crate) replication: String,
}

impl Shard {
    fn read(s: &RedisServer) -> Self {
        let (commands, per_command) = redis_counts(s);
        let cluster = s.cli(&["CLUSTER", "INFO"]);
        let field = |name: &str| -> u64 {
            cluster
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let role = s.cli(&["ROLE"]);
        let lines: Vec<&str> = role.lines().map(str::trim).collect();
        Self {
            port: s.port(),
            role: lines.first().copied().unwrap_or("?").to_owned(),
            replication: replication(&lines),
            commands,
            per_command,
            bus_publish: field("cluster_stats_messages_publish_sent"),
            bus_publishshard: field("cluster_stats_messages_publishshard_sent"),
        }
    }

    pub(crate) fn calls(&self, command: &str) -> u64 {
        self.per_command.get(command).copied().unwrap_or(0)
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "port": self.port,
            "role": self.role,
            "commands": self.commands,
            "evalsha": self.calls("evalsha"),
            "spublish": self.calls("spublish"),
            "publish": self.calls("publish"),
            "ssubscribe": self.calls("ssubscribe"),
            "bus_publish_sent": self.bus_publish,
            "bus_publishshard_sent": self.bus_publishshard,
            "replication": self.replication,
        })
    }
}

/// `ROLE`'s answer (as `redis-cli` prints it, one value a line) in a few
/// words: `offset O; replicas P@O …` for a master, `of P, STATE, offset O`
/// for a replica.
fn replication(role: &[&str]) -> String {
    match role {
        ["master", offset, replicas @ ..] => {
            let replicas: Vec<String> = replicas
                .chunks(3)
                .filter_map(|r| match r {
                    [_, port, acked] => Some(format!("{port}@{acked}")),
                    _ => None,
                })
                .collect();
            format!("offset {offset}; replicas {}", replicas.join(" "))
        }
        ["slave", _, port, state, offset, ..] => format!("of {port}, {state}, offset {offset}"),
        _ => role.join(" "),
    }
}

/// `INFO stats`' `total_commands_processed` and `INFO commandstats`' calls
/// per command.
pub(crate) fn redis_counts(redis: &RedisServer) -> (u64, BTreeMap<String, u64>) {
    let total = redis
        .cli(&["INFO", "stats"])
        .lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let per = redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter_map(|l| {
            let (cmd, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((cmd.to_owned(), calls))
        })
        .collect();
    (total, per)
}

/// The per-process table of one run.
pub(crate) fn print_shards(shards: &[Shard]) {
    println!(
        "{:>6} {:<6} {:>10} {:>9} {:>9} {:>8} {:>10} {:>13}  replication",
        "port", "role", "commands", "evalsha", "spublish", "publish", "bus publ.", "bus publshard"
    );
    for s in shards {
        println!(
            "{:>6} {:<6} {:>10} {:>9} {:>9} {:>8} {:>10} {:>13}  {}",
            s.port,
            s.role,
            s.commands,
            s.calls("evalsha"),
            s.calls("spublish"),
            s.calls("publish"),
            s.bus_publish,
            s.bus_publishshard,
            s.replication
        );
    }
}

/// What Redis spent on a measured phase: started after the nodes and
/// clients are up, read when the phase ends.
#[derive(Debug)]
pub(crate) struct Meter {
    ticks: u64,
}

impl Meter {
    /// Zeroes every server's `INFO` counters (`CONFIG RESETSTAT`) and notes
    /// the CPU time so far.
    pub(crate) fn start(redis: &SharedRedis) -> Self {
        for s in redis.servers() {
            let _ = s.cli(&["CONFIG", "RESETSTAT"]);
        }
        Self {
            ticks: cpu_ticks(redis),
        }
    }

    pub(crate) fn finish(self, redis: &SharedRedis) -> RedisCost {
        let ticks = cpu_ticks(redis).saturating_sub(self.ticks);
        RedisCost {
            kind: redis.kind(),
            // USER_HZ is 100 on Linux.
            cpu_secs: ticks as f64 / 100.0,
            shards: redis.servers().into_iter().map(Shard::read).collect(),
        }
    }
}

/// Redis's side of one measured phase.
#[derive(Debug, Clone)]
pub(crate) struct RedisCost {
    pub(crate) kind: RedisKind,
    /// CPU seconds, summed over every `redis-server` process.
    pub(crate) cpu_secs: f64,
    pub(crate) shards: Vec<Shard>,
}

impl RedisCost {
    /// CPU seconds per million of `units` (chunks, cancels).
    pub(crate) fn per_million(&self, units: u64) -> f64 {
        self.cpu_secs * 1e6 / units.max(1) as f64
    }

    /// How many processes handled at least one `SPUBLISH`, out of the
    /// masters: on a cluster every master should, no replica should.
    pub(crate) fn publishing(&self) -> usize {
        self.shards
            .iter()
            .filter(|s| s.calls("spublish") > 0)
            .count()
    }

    pub(crate) fn json(&self, units: u64) -> Value {
        json!({
            "redis": self.kind.name(),
            "cpu_secs": self.cpu_secs,
            "cpu_secs_per_million": self.per_million(units),
            "processes": self.shards.iter().map(Shard::json).collect::<Vec<_>>(),
        })
    }

    pub(crate) fn print(&self, what: &str, units: u64) {
        println!(
            "Redis ({}): {:.2} CPU s over {} process(es), {:.1} CPU s per million {what}",
            self.kind.name(),
            self.cpu_secs,
            self.shards.len(),
            self.per_million(units)
        );
        print_shards(&self.shards);
    }
}
