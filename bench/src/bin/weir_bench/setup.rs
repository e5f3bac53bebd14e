//! Before a run: the binaries, the file-descriptor limit, the source ports, and the
//! machine and build it runs on.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tokio::process::Command;
use weir_bench::{
    load_average, utc_now, Machine, RuntimeOpts, SERVER_MAX_FRAME, SERVER_READ_BUFFER,
    SERVER_WRITE_BUFFER,
};

use crate::Res;

/// `name` next to this executable, or `given`.
pub(crate) fn binary(name: &str, given: Option<&Path>) -> Res<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .ok_or("this executable has no folder")?
            .join(name),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: build it first with `cargo build --release -p weir-server -p weir-bench`",
            path.display()
        )
        .into())
    }
}

/// Raises the soft open-files limit to the hard limit (the servers inherit
/// it) and checks that `conns` connections fit.
pub(crate) fn raise_fd_limit(conns: usize) -> Res<u64> {
    let limit = rlimit::increase_nofile_limit(u64::MAX)?;
    let needed = conns as u64 + 256;
    if limit < needed {
        return Err(format!(
            "{conns} connections need about {needed} open files, but the hard limit is {limit} \
             (raise it, e.g. `ulimit -Hn`, or use a smaller --conns)"
        )
        .into());
    }
    Ok(limit)
}

/// Checks that the ephemeral port range holds `conns` connections spread
/// over `source_ips` source addresses.
pub(crate) fn check_ports(conns: usize, source_ips: u8) -> Res<()> {
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = range
        .split_whitespace()
        .filter_map(|s| s.parse::<usize>().ok());
    if let (Some(lo), Some(hi)) = (it.next(), it.next()) {
        let per_ip = conns.div_ceil(usize::from(source_ips));
        // Leave room for TIME_WAIT sockets of earlier runs.
        if per_ip > (hi - lo) / 2 {
            return Err(format!(
                "{per_ip} connections per source address exceed half the ephemeral port range \
                 {lo}-{hi}: use a larger --source-ips"
            )
            .into());
        }
    }
    Ok(())
}

/// Where and with what the figures were taken.
#[derive(Debug)]
pub(crate) struct Env {
    date: String,
    machine: Machine,
    weir_version: String,
    nofile: u64,
    pub(crate) clk_tck: f64,
    /// `RuntimeOpts::describe`.
    runtimes: String,
}

impl Env {
    pub(crate) async fn read(weir: &Path, nofile: u64, rt: &RuntimeOpts) -> Self {
        let weir_version = match Command::new(weir).arg("version").output().await {
            Ok(out) => String::from_utf8_lossy(&out.stdout)
                .lines()
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => format!("unknown ({e})"),
        };
        let clk_tck = match Command::new("getconf").arg("CLK_TCK").output().await {
            Ok(out) => String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(100.0),
            Err(_) => 100.0,
        };
        Self {
            date: utc_now(),
            machine: Machine::read(),
            weir_version,
            nofile,
            clk_tck,
            runtimes: rt.describe(),
        }
    }

    pub(crate) fn print(&self, what: &str) {
        let m = &self.machine;
        println!("weir_bench {what} · {}", self.date);
        println!(
            "machine   {} CPUs (nproc) · {} · {:.1} GiB RAM · Linux {}",
            m.cpus,
            m.cpu_model,
            m.mem_total_kib as f64 / 1024.0 / 1024.0,
            m.kernel
        );
        println!(
            "software  {} · weir-bench {} · {} · {}",
            self.weir_version,
            env!("CARGO_PKG_VERSION"),
            env!("WEIR_BENCH_DEPS"),
            env!("WEIR_BENCH_RUSTC")
        );
        println!(
            "setup     servers and clients share the machine's {} CPUs; clients run in this process on a \
             multi-thread tokio runtime; loopback only; open files limit {}; load average {} at start",
            m.cpus,
            self.nofile,
            load_average()
        );
        println!(
            "          bare_ws uses weir's WebSocket buffers: read {SERVER_READ_BUFFER} B, write \
             {SERVER_WRITE_BUFFER} B, max message/frame {SERVER_MAX_FRAME} B"
        );
        println!(
            "weir      {} · each a fresh process · bare_ws runs on tokio",
            self.runtimes
        );
    }

    /// The JSON line of benchmark `bench`: [`Env::json`], its `params` with
    /// the runtimes added, and the load average at the end.
    pub(crate) fn result_json(&self, bench: &str, rt: &RuntimeOpts, mut params: Value) -> Value {
        params["runtimes"] = json!(rt.runtimes().iter().map(|r| r.name()).collect::<Vec<_>>());
        params["worker_threads"] = json!(rt.worker_threads);
        let mut out = self.json();
        out["bench"] = json!(bench);
        out["params"] = params;
        out["load_average_end"] = json!(load_average());
        out
    }

    pub(crate) fn json(&self) -> Value {
        let m = &self.machine;
        json!({
            "date": self.date,
            "machine": {
                "cpus": m.cpus,
                "cpu_model": m.cpu_model,
                "mem_total_kib": m.mem_total_kib,
                "kernel": m.kernel,
            },
            "versions": {
                "weir": self.weir_version,
                "weir_bench": env!("CARGO_PKG_VERSION"),
                "deps": env!("WEIR_BENCH_DEPS"),
                "rustc": env!("WEIR_BENCH_RUSTC"),
            },
        })
    }
}
