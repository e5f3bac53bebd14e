//! What the tools that compare a dialect of weir with its native protocol
//! in the same run share (`compat_bench`, `ai_sdk_bench`): the `weir`
//! binary they start, the flags of its nodes, the run itself (a header
//! line, a bound on the whole run, the JSON line last), and the figures'
//! arithmetic.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use crate::{load_average, utc_now, Runtime};

/// `met` or `NOT met`.
#[must_use]
pub fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// p50 and p99 of `samples`, in ms (0 when there are none).
pub fn percentiles_ms(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len().saturating_sub(1)) as f64 * q).round() as usize;
        samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    (at(0.5), at(0.99))
}

/// Server CPU time per chunk in µs: `ticks` clock ticks (`USER_HZ` = 100
/// on Linux) over a reply of `chunks` chunks.
#[must_use]
pub fn cpu_us_per_chunk(ticks: u64, chunks: u32) -> f64 {
    ticks as f64 * 10.0 * 1000.0 / f64::from(chunks.max(1))
}

/// The flags of every node these tools start, then `extra`: logs at
/// `warn`, deep queues, no caps.
#[must_use]
pub fn node_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--log", "warn", "--queue-capacity", "4096"];
    args.extend(weir_tests::NO_CAPS);
    args.extend_from_slice(extra);
    args
}

/// The weir binary a tool starts: `given`, else `weir` next to the tool's
/// own executable; set as `WEIR_BIN`, which the harness's `WeirProcess`
/// runs.
#[must_use]
pub fn weir_bin(given: Option<PathBuf>) -> PathBuf {
    let weir = given.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("weir")))
            .unwrap_or_else(|| PathBuf::from("weir"))
    });
    std::env::set_var("WEIR_BIN", &weir);
    weir
}

/// The options every same-run tool has.
#[derive(Debug, Clone, clap::Args)]
pub struct SameRunOpts {
    /// The weir binary [default: `weir` next to this executable]
    #[arg(long, global = true, value_name = "PATH")]
    pub weir: Option<PathBuf>,
    /// The nodes' runtime: tokio or smol
    #[arg(long, global = true, default_value = "tokio")]
    pub runtime: String,
}

impl SameRunOpts {
    /// The runtime named by `--runtime`.
    #[must_use]
    pub fn runtime(&self) -> Runtime {
        if self.runtime == "smol" {
            Runtime::Smol
        } else {
            Runtime::Tokio
        }
    }

    /// Runs `body` on a tokio runtime, at most `limit`, with `weir` as the
    /// binary the harness starts: prints the header line first and the JSON
    /// object `body` returns last (with `tool`, `date`, `runtime`,
    /// `load_average_end`).
    #[allow(
        clippy::print_stdout,
        reason = "the header and the JSON line are the tool's output"
    )]
    pub fn run<F, Fut>(&self, tool: &str, limit: Duration, body: F) -> ExitCode
    where
        F: FnOnce(Runtime) -> Fut,
        Fut: Future<Output = Value>,
    {
        let weir = weir_bin(self.weir.clone());
        let runtime = self.runtime();
        let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        else {
            eprintln!("{tool}: no tokio runtime");
            return ExitCode::FAILURE;
        };
        let date = utc_now();
        println!(
            "# {tool}: weir {} · {date} · nodes on {} · load average {}",
            weir.display(),
            runtime.name(),
            load_average()
        );
        let result = rt.block_on(async { tokio::time::timeout(limit, body(runtime)).await });
        let Ok(mut result) = result else {
            eprintln!("{tool}: the run took longer than {limit:?}");
            return ExitCode::FAILURE;
        };
        result["tool"] = json!(tool);
        result["date"] = json!(date);
        result["runtime"] = json!(runtime.name());
        result["load_average_end"] = json!(load_average());
        println!("{result}");
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures() {
        assert_eq!(met(true), "met");
        assert_eq!(met(false), "NOT met");
        let mut ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentiles_ms(&mut ms), (51.0, 99.0));
        assert_eq!(percentiles_ms(&mut []), (0.0, 0.0));
        assert!((cpu_us_per_chunk(3, 1000) - 30.0).abs() < 1e-9);
    }
}
