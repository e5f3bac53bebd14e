//! The servers under load: weir on a runtime, or bare_ws, as child processes.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;
use weir_bench::{cpu_ticks, proc_status_kib, Runtime};

use crate::{BoxError, Res};

/// Heartbeat and idle timeout given to weir: far beyond any run, so nothing
/// closes and no ping traffic mixes into the figures.
pub(crate) const WEIR_HEARTBEAT_SECS: &str = "3600";
pub(crate) const WEIR_IDLE_TIMEOUT_SECS: &str = "7200";

/// A server running as a child process; killed when dropped.
#[derive(Debug)]
pub(crate) struct Server {
    child: Child,
    pid: u32,
    pub(crate) addr: SocketAddr,
}

impl Server {
    /// Starts `program args…` and waits for the line `BANNER ADDR` on its
    /// stdout.
    async fn start(program: &Path, args: &[String], banner: &str) -> Res<Self> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let pid = child.id().ok_or("the server exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = timeout(Duration::from_secs(10), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix(banner) {
                    let rest = rest.trim().trim_end_matches('/');
                    return rest
                        .parse::<SocketAddr>()
                        .map_err(|e| BoxError::from(format!("bad address in {line:?}: {e}")));
                }
            }
            Err(BoxError::from(format!(
                "{} ended before announcing its address",
                program.display()
            )))
        })
        .await
        .map_err(|_| {
            format!(
                "{} did not announce its address within 10 s",
                program.display()
            )
        })??;
        // Keep the pipe drained so the server never blocks on stdout.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, pid, addr })
    }

    /// `weir serve` with `runtime` (the `--runtime` and `--worker-threads`
    /// arguments of [`RuntimeOpts::weir_args`]) and `extra`.
    pub(crate) async fn weir(program: &Path, runtime: &[String], extra: &[String]) -> Res<Self> {
        Self::weir_node(program, runtime, "bench", extra).await
    }

    /// [`Server::weir`] as node `node_id` (several nodes on one store).
    pub(crate) async fn weir_node(
        program: &Path,
        runtime: &[String],
        node_id: &str,
        extra: &[String],
    ) -> Res<Self> {
        let quiet = [
            "--heartbeat",
            WEIR_HEARTBEAT_SECS,
            "--idle-timeout",
            WEIR_IDLE_TIMEOUT_SECS,
        ];
        Self::weir_with(program, runtime, node_id, &quiet, extra).await
    }

    /// [`Server::weir`] with weir's default heartbeat and idle timeout.
    pub(crate) async fn weir_default_heartbeat(
        program: &Path,
        runtime: &[String],
        extra: &[String],
    ) -> Res<Self> {
        Self::weir_with(program, runtime, "bench", &[], extra).await
    }

    async fn weir_with(
        program: &Path,
        runtime: &[String],
        node_id: &str,
        timers: &[&str],
        extra: &[String],
    ) -> Res<Self> {
        let mut args: Vec<String> = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--node-id",
            node_id,
            "--log",
            "error",
        ]
        .iter()
        .chain(timers)
        .map(|s| (*s).to_owned())
        .collect();
        args.extend_from_slice(runtime);
        // Crowds of one user on one address: the caps are not measured here.
        args.extend(weir_tests::NO_CAPS.iter().map(|s| (*s).to_owned()));
        args.extend_from_slice(extra);
        Self::start(program, &args, "weir listening on http://").await
    }

    pub(crate) async fn bare(program: &Path, extra: &[String]) -> Res<Self> {
        let mut args = vec![String::from("--listen"), String::from("127.0.0.1:0")];
        args.extend_from_slice(extra);
        Self::start(program, &args, "bare_ws listening on ws://").await
    }

    pub(crate) fn status_kib(&self, field: &str) -> Res<u64> {
        Ok(proc_status_kib(self.pid, field)?)
    }

    pub(crate) fn cpu_ticks(&self) -> u64 {
        cpu_ticks(Some(self.pid)).unwrap_or(0)
    }

    /// Kills the server and waits (bounded) for it to exit.
    pub(crate) async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// The runtime column of a result: weir's runtime, `-` for bare_ws.
pub(crate) fn runtime_name(runtime: Option<Runtime>) -> &'static str {
    runtime.map_or("-", Runtime::name)
}

/// `weir (tokio)`, `bare_ws`: a server as warnings name it.
pub(crate) fn server_label(server: &str, runtime: Option<Runtime>) -> String {
    runtime.map_or_else(|| server.to_owned(), |r| format!("{server} ({})", r.name()))
}
