//! # weir-bench
//!
//! Load tools, run from a release build (see `docs/benchmarks.md`):
//!
//! - `bare_ws`: the baseline, a bare tokio + async-tungstenite WebSocket
//!   server with no weir logic (one reader and one writer task per
//!   connection, the writer fed by a bounded channel; a `go …` text message
//!   broadcasts the same chunk frames weir would send);
//! - `weir_bench idle | fanout`: starts `weir` and `bare_ws` as child
//!   processes, loads each in the same run over loopback, and prints the
//!   server RSS per idle connection or the chunks per second delivered to a
//!   conversation's connections;
//! - `cluster_bench cancel | throughput`: two `weir` nodes on one
//!   `redis-server`;
//! - `llm_bench`: a real model straight and through `weir`.
//!
//! Each runs `weir` on tokio and on smol in the same run unless
//! `--runtime` says otherwise.
//!
//! This library holds what the binaries share: the WebSocket buffer sizes
//! (the ones weir uses), the wire shape of chunk frames, a cheap scanner for
//! them, readings from `/proc`, and the choice of the runtimes weir runs on
//! (`--runtime tokio|smol|both`, `--worker-threads N`: [`RuntimeOpts`]).
#![forbid(unsafe_code)]

pub mod same_run;

use std::num::NonZeroUsize;
use std::time::{SystemTime, UNIX_EPOCH};

use async_tungstenite::tungstenite::protocol::WebSocketConfig;
/// The async runtime of a `weir serve` process (`--runtime`).
pub use weir_tests::Runtime;

/// Which runtimes a tool runs weir on: the value of its `--runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeChoice {
    /// `weir serve --runtime tokio` only.
    Tokio,
    /// `weir serve --runtime smol` only.
    Smol,
    /// tokio, then smol, in the same run.
    Both,
}

impl RuntimeChoice {
    /// The runtimes chosen, in the order they run.
    #[must_use]
    pub fn runtimes(self) -> &'static [Runtime] {
        match self {
            Self::Tokio => &[Runtime::Tokio],
            Self::Smol => &[Runtime::Smol],
            Self::Both => &Runtime::ALL,
        }
    }
}

/// The options every tool has for the weir processes it starts.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeOpts {
    /// The async runtimes weir runs on, one after the other in the same run
    /// (`weir serve --runtime`)
    #[arg(long, value_enum, default_value_t = RuntimeChoice::Both, global = true)]
    pub runtime: RuntimeChoice,
    /// `weir serve --worker-threads N` for every weir started [default:
    /// weir's own, one thread per core on either runtime]
    #[arg(long, value_name = "N", global = true)]
    pub worker_threads: Option<NonZeroUsize>,
}

impl RuntimeOpts {
    /// The runtimes to measure, in order.
    #[must_use]
    pub fn runtimes(&self) -> &'static [Runtime] {
        self.runtime.runtimes()
    }

    /// The `weir serve` arguments for `runtime`: `--runtime NAME`, then
    /// [`RuntimeOpts::thread_args`].
    #[must_use]
    pub fn weir_args(&self, runtime: Runtime) -> Vec<String> {
        let mut args = vec![String::from("--runtime"), runtime.name().to_owned()];
        args.extend(self.thread_args());
        args
    }

    /// `--worker-threads N` when it was given, else nothing.
    #[must_use]
    pub fn thread_args(&self) -> Vec<String> {
        self.worker_threads
            .map(|n| vec![String::from("--worker-threads"), n.to_string()])
            .unwrap_or_default()
    }

    /// What the run uses, for its header: `runtimes tokio, smol · worker
    /// threads one per core (weir's default)`.
    #[must_use]
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.runtimes().iter().map(|r| r.name()).collect();
        let threads = self.worker_threads.map_or_else(
            || String::from("one per core (weir's default)"),
            |n| n.to_string(),
        );
        format!("runtimes {} · worker threads {threads}", names.join(", "))
    }
}

/// `part / whole`, or `None` when either is not a positive finite number
/// (a ratio against a baseline that was not measured).
#[must_use]
pub fn ratio(part: f64, whole: f64) -> Option<f64> {
    (part.is_finite() && whole.is_finite() && whole > 0.0).then(|| part / whole)
}

/// A ratio as the tables print it: `1.23×`, or `-` when there is none.
#[must_use]
pub fn times(r: Option<f64>) -> String {
    r.map_or_else(|| String::from("-"), |r| format!("{r:.2}×"))
}

/// Per-connection read buffer of the servers: weir's `READ_BUFFER`
/// (`runtime/src/ws.rs`), not tungstenite's 128 KiB default.
pub const SERVER_READ_BUFFER: usize = 256;
/// Write buffer of the servers: weir's (`runtime/src/ws.rs`).
pub const SERVER_WRITE_BUFFER: usize = 4 * 1024;
/// Largest inbound message and frame: weir's default `--max-frame-bytes`.
pub const SERVER_MAX_FRAME: usize = 64 * 1024;
/// Read buffer of the bench's clients (the same against both servers).
pub const CLIENT_READ_BUFFER: usize = 16 * 1024;

/// The WebSocket configuration weir's runtime uses (`WsSettings::new` in
/// `runtime/src/ws.rs` with the default frame limit), for the bare
/// server.
#[must_use]
pub fn server_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(SERVER_READ_BUFFER)
        .write_buffer_size(SERVER_WRITE_BUFFER)
        .max_message_size(Some(SERVER_MAX_FRAME))
        .max_frame_size(Some(SERVER_MAX_FRAME))
}

/// The configuration of the bench's clients: the same for both servers.
#[must_use]
pub fn client_ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER)
}

/// A `chunk` frame exactly as weir encodes an unmerged one:
/// `{"type":"chunk","message_id":…,"seq":…,"delta":…}`.
#[must_use]
pub fn chunk_frame(message_id: &str, seq: u64, delta: &str) -> String {
    format!(
        r#"{{"type":"chunk","message_id":{},"seq":{seq},"delta":{}}}"#,
        json_string(message_id),
        json_string(delta)
    )
}

/// An `end` frame with status `completed` (weir adds `usage`).
#[must_use]
pub fn end_frame(message_id: &str, final_seq: u64) -> String {
    format!(
        r#"{{"type":"end","message_id":{},"status":"completed","final_seq":{final_seq}}}"#,
        json_string(message_id)
    )
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The `type` of a server frame, read from its first field (weir and the
/// bare server both put `type` first).
#[must_use]
pub fn frame_type(frame: &str) -> Option<&str> {
    let rest = frame.strip_prefix(r#"{"type":""#)?;
    rest.split('"').next()
}

/// The chunk numbers one `chunk` frame covers: `from..=seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The first chunk number (`from_seq` of a merged frame, else `seq`).
    pub from: u64,
    /// The last chunk number.
    pub seq: u64,
}

impl Span {
    /// How many chunks the frame carries.
    #[must_use]
    pub fn chunks(self) -> u64 {
        self.seq.saturating_sub(self.from).saturating_add(1)
    }

    /// Whether this is a merged frame (more than one chunk).
    #[must_use]
    pub fn is_merged(self) -> bool {
        self.from != self.seq
    }
}

/// The span of a `chunk` frame, found by scanning for its `seq` and
/// `from_seq` fields instead of parsing the JSON (the clients share the CPU
/// with the servers, so they do as little as they can). `None` for any other
/// frame. A string value cannot fake a field: a quote inside it is escaped.
#[must_use]
pub fn scan_chunk(frame: &str) -> Option<Span> {
    if frame_type(frame)? != "chunk" {
        return None;
    }
    let seq = number_after(frame, r#""seq":"#)?;
    let from = number_after(frame, r#""from_seq":"#).unwrap_or(seq);
    Some(Span { from, seq })
}

/// The whole number after the first `key` in `frame` (e.g. `"ts_ns":`),
/// found by scanning rather than parsing, like [`scan_chunk`]. Meant for a
/// key that no string value of the frame can contain unescaped.
#[must_use]
pub fn number_after(frame: &str, key: &str) -> Option<u64> {
    let at = frame.find(key)? + key.len();
    let digits = frame[at..].bytes().take_while(u8::is_ascii_digit).count();
    frame[at..at + digits].parse().ok()
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`, `RssAnon`, …).
pub fn proc_status_kib(pid: u32, field: &str) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no {field} in /proc/{pid}/status"),
            )
        })
}

/// User + system CPU time of a process (all its threads) in clock ticks,
/// from `/proc/PID/stat` (or `/proc/self/stat` with `None`).
pub fn cpu_ticks(pid: Option<u32>) -> std::io::Result<u64> {
    let path = pid.map_or_else(
        || String::from("/proc/self/stat"),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path)?;
    // The command name may contain spaces: fields are counted after its `)`.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After `)`: state is field 3, utime 14 and stime 15 (1-based, man 5 proc).
    let field = |n: usize| -> u64 { fields.get(n - 3).and_then(|f| f.parse().ok()).unwrap_or(0) };
    Ok(field(14) + field(15))
}

/// CPU time spent by the whole machine (every CPU, not idle, not waiting
/// for I/O) in clock ticks, from the first line of `/proc/stat`.
pub fn machine_busy_ticks() -> std::io::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().unwrap_or_default();
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is
    // already inside user and nice).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Ok(total.saturating_sub(idle))
}

/// The kernel's TCP socket counts and memory, from `/proc/net/sockstat`:
/// `(inuse, mem_pages)` of its `TCP:` line (`mem` is in pages, the memory
/// of every TCP socket's buffers, both ends of a loopback connection).
#[must_use]
pub fn tcp_sockstat() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let value = |name: &str| -> Option<u64> {
        let i = words.iter().position(|w| *w == name)?;
        words.get(i + 1)?.parse().ok()
    };
    Some((value("inuse")?, value("mem")?))
}

/// The `p`-th percentile (0–100) of `sorted` (ascending), nearest rank;
/// `None` when it is empty.
#[must_use]
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Wall-clock time in Unix nanoseconds (what `ts_ns` on chunk frames is
/// compared with).
#[must_use]
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The 1-minute load average.
#[must_use]
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| String::from("?"))
}

/// What machine the figures come from.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Online CPUs as the process sees them (`nproc`).
    pub cpus: usize,
    /// `model name` of the first CPU in `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `MemTotal` of `/proc/meminfo`, KiB.
    pub mem_total_kib: u64,
    /// The kernel release.
    pub kernel: String,
}

impl Machine {
    /// Reads the machine's description from `/proc`.
    #[must_use]
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| String::from("unknown"));
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_kib = meminfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| String::from("unknown"), |s| s.trim().to_owned());
        Self {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model,
            mem_total_kib,
            kernel,
        }
    }
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SSZ`.
#[must_use]
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::ids::MessageId;
    use weir_core::wire::{Chunk, ServerFrame};

    fn weir_chunk(seq: u64, from_seq: Option<u64>, delta: &str) -> String {
        ServerFrame::Chunk(Chunk {
            message_id: MessageId::parse("1.00000000075bcd15a").unwrap(),
            seq,
            delta: delta.to_owned(),
            from_seq,
            ts_ns: None,
        })
        .encode()
    }

    #[test]
    fn bare_chunk_frames_are_byte_for_byte_weirs() {
        for (seq, delta) in [(1, "river "), (8, "rain. "), (12, "a \"quoted\"\n")] {
            assert_eq!(
                chunk_frame("1.00000000075bcd15a", seq, delta),
                weir_chunk(seq, None, delta)
            );
        }
    }

    #[test]
    fn scans_plain_and_merged_chunks() {
        let plain = weir_chunk(7, None, "seq\":99 ");
        assert_eq!(scan_chunk(&plain), Some(Span { from: 7, seq: 7 }));
        let merged = weir_chunk(9, Some(3), "a b c ");
        let span = scan_chunk(&merged).unwrap();
        assert_eq!(span, Span { from: 3, seq: 9 });
        assert_eq!(span.chunks(), 7);
        assert!(span.is_merged());
        assert_eq!(scan_chunk(&end_frame("m", 9)), None);
        assert_eq!(frame_type(&end_frame("m", 9)), Some("end"));
        assert_eq!(frame_type("not json"), None);
    }

    #[test]
    fn runtime_choices() {
        use clap::ValueEnum as _;
        let both = RuntimeChoice::from_str("both", false).unwrap();
        assert_eq!(both.runtimes(), &[Runtime::Tokio, Runtime::Smol]);
        assert_eq!(
            RuntimeChoice::from_str("smol", false).unwrap().runtimes(),
            &[Runtime::Smol]
        );
        let opts = RuntimeOpts {
            runtime: RuntimeChoice::Tokio,
            worker_threads: NonZeroUsize::new(3),
        };
        assert_eq!(
            opts.weir_args(Runtime::Smol),
            ["--runtime", "smol", "--worker-threads", "3"]
        );
        assert_eq!(opts.describe(), "runtimes tokio · worker threads 3");
        assert_eq!(ratio(1.0, 4.0), Some(0.25));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
        assert_eq!(times(ratio(3.0, 2.0)), "1.50×");
        assert_eq!(times(None), "-");
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(proc_status_kib(pid, "VmRSS").unwrap() > 0);
        assert!(cpu_ticks(None).is_ok());
        assert!(machine_busy_ticks().is_ok());
    }
}
