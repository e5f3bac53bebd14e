//! The node's metrics, as plain atomic counters, rendered in the Prometheus
//! text exposition format (version 0.0.4) at `GET /metrics`.
//!
//! The driver, the writers and the HTTP layer update them; nothing reads
//! them but the `/metrics` handler. Relaxed ordering everywhere: each number
//! is an independent counter, and a scrape needs no consistent cut.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use weir_core::caps::Cap;
use weir_core::stream::Outcome;

use crate::openai::{ErrorKind, Tally};

/// The buckets of a [`Histogram`]: their upper bounds, in seconds.
trait Buckets {
    const BOUNDS: [f64; 12];
}

/// The cancel-to-quiet histogram's buckets.
#[derive(Debug, Default)]
struct QuietBuckets;

impl Buckets for QuietBuckets {
    const BOUNDS: [f64; 12] = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ];
}

/// The upstream time-to-first-token histogram's buckets: a model on a GPU
/// answers in tens of milliseconds, a small one on a busy CPU in seconds.
#[derive(Debug, Default)]
struct FirstTokenBuckets;

impl Buckets for FirstTokenBuckets {
    const BOUNDS: [f64; 12] = [
        0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0,
    ];
}

/// How an upstream (`openai`) generation ended, for
/// `weir_upstream_tokens_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenOutcome {
    /// It streamed to the end.
    Completed,
    /// It was aborted: the reply was cancelled (or settled otherwise, or the
    /// server shut down).
    Cancelled,
    /// It failed.
    Failed,
}

impl TokenOutcome {
    const ALL: [Self; 3] = [Self::Completed, Self::Cancelled, Self::Failed];

    fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }
}

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
    /// Outbound queues that reached their high-water mark (the core then held
    /// the connection's chunks back until its writer drained the queue).
    pub(crate) queues_blocked: AtomicU64,
    /// Connections closed with 4008.
    pub(crate) slow_consumer_closes: AtomicU64,
    /// Store operations that failed (never for the in-memory store).
    pub(crate) store_unavailable: AtomicU64,
    /// Store operations the store refused for want of room.
    pub(crate) store_refused: AtomicU64,
    /// Redis operations that failed (connection lost, timeout, script error).
    pub(crate) redis_errors: AtomicU64,
    /// Notices dropped because the driver's notice channel was full.
    pub(crate) notices_dropped: AtomicU64,
    /// Lease renewals of replies this node produces, sent to the store.
    pub(crate) lease_renewals: AtomicU64,
    /// Times the driver woke up: a message, a notice, a store reply, a
    /// deadline. An idle node wakes only for its deadlines.
    pub(crate) driver_wakes: AtomicU64,
    /// Inputs the driver handed to the core (client frames, store replies,
    /// notices, generator events, its own looks at the queues, …).
    pub(crate) core_inputs: AtomicU64,
    /// Refusals by a cap, by [`Cap::ALL`] order.
    rate_limited: [AtomicU64; Cap::ALL.len()],
    resumes_exact: AtomicU64,
    resumes_unavailable: AtomicU64,
    quiet: Histogram<QuietBuckets>,
    upstream: UpstreamMetrics,
}

/// The `openai` generator's metrics.
#[derive(Debug, Default)]
struct UpstreamMetrics {
    first_token: Histogram<FirstTokenBuckets>,
    /// By [`ErrorKind::ALL`] order.
    errors: [AtomicU64; ErrorKind::ALL.len()],
    /// By [`TokenOutcome::ALL`] order: prompt tokens, completion tokens.
    tokens: [[AtomicU64; 2]; TokenOutcome::ALL.len()],
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

    /// Counts a refusal by `cap`.
    pub(crate) fn rate_limited(&self, cap: Cap) {
        if let Some(i) = Cap::ALL.iter().position(|c| *c == cap) {
            self.rate_limited[i].fetch_add(1, Relaxed);
        }
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

    /// Counts one failed upstream generation.
    pub(crate) fn upstream_error(&self, kind: ErrorKind) {
        if let Some(i) = ErrorKind::ALL.iter().position(|k| *k == kind) {
            self.upstream.errors[i].fetch_add(1, Relaxed);
        }
    }

    /// Records what one upstream generation received: its time to first
    /// token, and its tokens under `outcome` (completion tokens as the
    /// upstream reported them, else the count of content deltas; prompt
    /// tokens only as reported).
    pub(crate) fn upstream_generation(&self, outcome: TokenOutcome, tally: &Tally) {
        if let Some(t) = tally.first_token {
            self.upstream.first_token.observe(t);
        }
        if let Some(i) = TokenOutcome::ALL.iter().position(|o| *o == outcome) {
            let [prompt, completion] = &self.upstream.tokens[i];
            prompt.fetch_add(tally.prompt_tokens().unwrap_or(0), Relaxed);
            completion.fetch_add(tally.completion_tokens(), Relaxed);
        }
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
            "weir_queue_blocked_total",
            "counter",
            "Times an outbound queue reached its high-water mark: delivery to the connection waited until its writer drained it.",
            &[("", self.queues_blocked.load(Relaxed).to_string())],
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
            "weir_store_refused_total",
            "counter",
            "Store operations the store refused for want of room (out of memory or disk).",
            &[("", self.store_refused.load(Relaxed).to_string())],
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
        family(
            "weir_lease_renewals_total",
            "counter",
            "Lease renewals sent to the store for replies this node produces (one per reply per \
             third of the lease TTL).",
            &[("", self.lease_renewals.load(Relaxed).to_string())],
        );
        family(
            "weir_driver_wakes_total",
            "counter",
            "Times the node's driver woke up (a message, a notice, a store reply or a deadline); \
             an idle node wakes only for its timers.",
            &[("", self.driver_wakes.load(Relaxed).to_string())],
        );
        family(
            "weir_core_inputs_total",
            "counter",
            "Inputs the node's driver handed to the core (frames, store replies, notices, generator \
             events, its looks at the queues); an idle connection adds none.",
            &[("", self.core_inputs.load(Relaxed).to_string())],
        );
        let refusals: Vec<(String, String)> = Cap::ALL
            .iter()
            .zip(&self.rate_limited)
            .map(|(cap, n)| {
                (
                    format!("{{cap=\"{}\"}}", cap.as_str()),
                    n.load(Relaxed).to_string(),
                )
            })
            .collect();
        let refusals: Vec<(&str, String)> = refusals
            .iter()
            .map(|(l, v)| (l.as_str(), v.clone()))
            .collect();
        family(
            "weir_rate_limited_total",
            "counter",
            "Connections, chats and HTTP posts refused by a cap (rate_limited / 429), by cap: \
             user_connections, ip_connections, user_streams, chat_rate. Nothing was started.",
            &refusals,
        );
        self.quiet.render(
            &mut out,
            "weir_cancel_quiet_seconds",
            "From a cancel's arrival to its answer on the asking connection, after which \
             no chunk of the reply follows there (cancels that found a reply).",
        );
        self.upstream.render(&mut out);
        out
    }
}

impl UpstreamMetrics {
    fn render(&self, out: &mut String) {
        self.first_token.render(
            out,
            "weir_upstream_first_token_seconds",
            "openai generator: from the start of a generation (before connecting) to its first \
             content delta.",
        );
        let _ = writeln!(
            out,
            "# HELP weir_upstream_errors_total openai generator: generations that failed, by kind \
             (unreachable, timeout, status, malformed, closed, reported).\n\
             # TYPE weir_upstream_errors_total counter"
        );
        for (kind, n) in ErrorKind::ALL.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "weir_upstream_errors_total{{kind=\"{}\"}} {}",
                kind.as_str(),
                n.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP weir_upstream_tokens_total openai generator: tokens by how the generation \
             ended; completion tokens of generations the upstream did not report on (aborted ones) \
             are the count of content deltas, an estimate; their prompt tokens are not counted.\n\
             # TYPE weir_upstream_tokens_total counter"
        );
        for (outcome, [prompt, completion]) in TokenOutcome::ALL.iter().zip(&self.tokens) {
            for (kind, n) in [("prompt", prompt), ("completion", completion)] {
                let _ = writeln!(
                    out,
                    "weir_upstream_tokens_total{{outcome=\"{}\",type=\"{kind}\"}} {}",
                    outcome.as_str(),
                    n.load(Relaxed)
                );
            }
        }
    }
}

/// A fixed-bucket histogram of durations, with the buckets of `B`.
#[derive(Debug, Default)]
struct Histogram<B> {
    /// Observations `<=` each bound of `B::BOUNDS` (not cumulative).
    buckets: [AtomicU64; 12],
    count: AtomicU64,
    sum_micros: AtomicU64,
    _bounds: std::marker::PhantomData<B>,
}

impl<B: Buckets> Histogram<B> {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = B::BOUNDS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (bound, bucket) in B::BOUNDS.iter().zip(&self.buckets) {
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

    #[test]
    fn renders_the_upstream_metrics() {
        let m = Metrics::default();
        m.upstream_error(ErrorKind::Status);
        m.upstream_error(ErrorKind::Status);
        m.upstream_error(ErrorKind::Timeout);
        let reported = Tally {
            content_deltas: 9,
            first_token: Some(Duration::from_millis(300)),
            reported: Some(weir_core::wire::Usage {
                prompt_tokens: 35,
                completion_tokens: 10,
            }),
        };
        m.upstream_generation(TokenOutcome::Completed, &reported);
        let aborted = Tally {
            content_deltas: 4,
            first_token: Some(Duration::from_secs(3)),
            reported: None,
        };
        m.upstream_generation(TokenOutcome::Cancelled, &aborted);
        let text = m.render();
        assert!(text.contains("weir_upstream_errors_total{kind=\"status\"} 2\n"));
        assert!(text.contains("weir_upstream_errors_total{kind=\"timeout\"} 1\n"));
        assert!(text.contains("weir_upstream_errors_total{kind=\"unreachable\"} 0\n"));
        assert!(
            text.contains("weir_upstream_tokens_total{outcome=\"completed\",type=\"prompt\"} 35\n")
        );
        assert!(text.contains(
            "weir_upstream_tokens_total{outcome=\"completed\",type=\"completion\"} 10\n"
        ));
        assert!(text
            .contains("weir_upstream_tokens_total{outcome=\"cancelled\",type=\"completion\"} 4\n"));
        assert!(
            text.contains("weir_upstream_tokens_total{outcome=\"cancelled\",type=\"prompt\"} 0\n")
        );
        assert!(text.contains("weir_upstream_first_token_seconds_bucket{le=\"0.25\"} 0\n"));
        assert!(text.contains("weir_upstream_first_token_seconds_bucket{le=\"0.5\"} 1\n"));
        assert!(text.contains("weir_upstream_first_token_seconds_bucket{le=\"5\"} 2\n"));
        assert!(text.contains("weir_upstream_first_token_seconds_count 2\n"));
        assert!(text.contains("# TYPE weir_upstream_first_token_seconds histogram\n"));
    }
}
