//! The node's metrics, as plain atomic counters, rendered in the Prometheus
//! text exposition format (version 0.0.4) at `GET /metrics`.
//!
//! The driver, the writers and the HTTP layer update them; nothing reads
//! them but the `/metrics` handler. Relaxed ordering everywhere: each number
//! is an independent counter, and a scrape needs no consistent cut.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use weir_core::stream::Outcome;

/// Upper bounds (seconds) of the cancel-to-quiet histogram's buckets.
const QUIET_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Every metric of one server.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Open WebSocket connections (registered with the driver, not yet released).
    pub(crate) connections: AtomicI64,
    replies_completed: AtomicU64,
    replies_cancelled: AtomicU64,
    replies_failed: AtomicU64,
    /// Chunks (seqs) written to sockets; a merged frame counts every seq it covers.
    pub(crate) chunks_sent: AtomicU64,
    /// Chunk frames absorbed by merging in the outbound queues.
    pub(crate) merged_frames: AtomicU64,
    /// Connections closed with 4008.
    pub(crate) slow_consumer_closes: AtomicU64,
    /// Store operations that failed (never for the in-memory store).
    pub(crate) store_unavailable: AtomicU64,
    /// Redis operations that failed (connection lost, timeout, script error).
    pub(crate) redis_errors: AtomicU64,
    /// Notices dropped because the driver's notice channel was full.
    pub(crate) notices_dropped: AtomicU64,
    resumes_exact: AtomicU64,
    resumes_unavailable: AtomicU64,
    quiet: Histogram,
}

impl Metrics {
    /// Counts a reply this node produced and settled.
    pub(crate) fn reply_settled(&self, outcome: &Outcome) {
        let counter = match outcome {
            Outcome::Completed => &self.replies_completed,
            Outcome::Cancelled => &self.replies_cancelled,
            Outcome::Failed(_) => &self.replies_failed,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Counts a resume, served exactly or answered `resume_unavailable`.
    pub(crate) fn resumed(&self, exact: bool) {
        let counter = if exact {
            &self.resumes_exact
        } else {
            &self.resumes_unavailable
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Records one cancel-to-quiet latency.
    pub(crate) fn cancel_quiet(&self, latency: Duration) {
        self.quiet.observe(latency);
    }

    /// The Prometheus text of every metric.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        family(
            "weir_connections",
            "gauge",
            "Open WebSocket connections.",
            &[("", self.connections.load(Relaxed).to_string())],
        );
        family(
            "weir_replies_total",
            "counter",
            "Replies this node produced, by outcome.",
            &[
                (
                    "{outcome=\"completed\"}",
                    self.replies_completed.load(Relaxed).to_string(),
                ),
                (
                    "{outcome=\"cancelled\"}",
                    self.replies_cancelled.load(Relaxed).to_string(),
                ),
                (
                    "{outcome=\"failed\"}",
                    self.replies_failed.load(Relaxed).to_string(),
                ),
            ],
        );
        family(
            "weir_chunks_sent_total",
            "counter",
            "Chunks written to WebSockets (a merged frame counts every chunk it covers).",
            &[("", self.chunks_sent.load(Relaxed).to_string())],
        );
        family(
            "weir_resumes_total",
            "counter",
            "Resumes, served exactly (exact=\"true\") or answered resume_unavailable.",
            &[
                (
                    "{exact=\"true\"}",
                    self.resumes_exact.load(Relaxed).to_string(),
                ),
                (
                    "{exact=\"false\"}",
                    self.resumes_unavailable.load(Relaxed).to_string(),
                ),
            ],
        );
        family(
            "weir_merged_frames_total",
            "counter",
            "Chunk frames absorbed by merging in full outbound queues.",
            &[("", self.merged_frames.load(Relaxed).to_string())],
        );
        family(
            "weir_slow_consumer_closes_total",
            "counter",
            "Connections closed with 4008 because they could not keep up.",
            &[("", self.slow_consumer_closes.load(Relaxed).to_string())],
        );
        family(
            "weir_store_unavailable_total",
            "counter",
            "Store operations that failed because the store could not be reached.",
            &[("", self.store_unavailable.load(Relaxed).to_string())],
        );
        family(
            "weir_redis_errors_total",
            "counter",
            "Redis store operations that failed (connection lost, timeout, script error).",
            &[("", self.redis_errors.load(Relaxed).to_string())],
        );
        family(
            "weir_notices_dropped_total",
            "counter",
            "Pub/sub notices dropped because the driver was behind (the core re-reads the log).",
            &[("", self.notices_dropped.load(Relaxed).to_string())],
        );
        self.quiet.render(
            &mut out,
            "weir_cancel_quiet_seconds",
            "From a cancel's arrival to its answer on the asking connection, after which \
             no chunk of the reply follows there (cancels that found a reply).",
        );
        out
    }
}

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
struct Histogram {
    /// Observations `<=` each bound of [`QUIET_BUCKETS`] (not cumulative).
    buckets: [AtomicU64; QUIET_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = QUIET_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (bound, bucket) in QUIET_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        // Micro-seconds as an integer keep the sum exact; print as seconds.
        let micros = self.sum_micros.load(Relaxed);
        let _ = writeln!(
            out,
            "{name}_sum {}.{:06}",
            micros / 1_000_000,
            micros % 1_000_000
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.reply_settled(&Outcome::Completed);
        m.reply_settled(&Outcome::Failed("x".into()));
        m.resumed(true);
        m.cancel_quiet(Duration::from_millis(3));
        m.cancel_quiet(Duration::from_secs(10));
        let text = m.render();
        assert!(text.contains("weir_replies_total{outcome=\"completed\"} 1\n"));
        assert!(text.contains("weir_replies_total{outcome=\"failed\"} 1\n"));
        assert!(text.contains("weir_resumes_total{exact=\"true\"} 1\n"));
        assert!(text.contains("weir_cancel_quiet_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("weir_cancel_quiet_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("weir_cancel_quiet_seconds_bucket{le=\"5\"} 1\n"));
        assert!(text.contains("weir_cancel_quiet_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("weir_cancel_quiet_seconds_sum 10.003000\n"));
        assert!(text.contains("weir_cancel_quiet_seconds_count 2\n"));
        assert!(text.contains("# TYPE weir_connections gauge\n"));
    }
}
