//! The [`Runtime`] trait: everything weir needs from an async runtime, and
//! the few runtime-neutral helpers built on it (a timeout, a deadline sleep,
//! a resettable [`Alarm`], a yield).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::{select, Either};
use hyper::rt::{Sleep, Timer as _};

/// The send buffer of an accepted socket, in bytes (`SO_SNDBUF`; Linux
/// doubles it for its bookkeeping). Left to the kernel, a socket's send
/// buffer grows to several MB (4 MB on loopback): a client that stops
/// reading would hide that much of its backlog in the kernel, out of reach
/// of the stall timeout and the lag bound (`--stall-timeout`,
/// `--max-lag-bytes`), and hold that much kernel memory. 64 KiB is many
/// times a chat stream's rate and still carries about half a megabyte per
/// second over a 100 ms round trip.
pub const SEND_BUFFER_BYTES: usize = 64 * 1024;

/// The listening socket's accept queue (`listen(2)`'s backlog; the kernel
/// caps it at `net.core.somaxconn`, 4 096 by default). The standard
/// library's `bind` asks for 128: when thousands of clients reconnect at
/// once (a node restarted, `cluster_bench storm`) and the accept loop falls
/// behind, the kernel drops their SYNs and each waits for its 1 s
/// retransmission.
pub const LISTEN_BACKLOG: i32 = 4096;

/// A listening TCP socket on `addr` (`SO_REUSEADDR`, as the standard
/// library's `bind` sets it) with a [`LISTEN_BACKLOG`] accept queue, in
/// non-blocking mode for the runtime's reactor.
///
/// # Errors
/// The socket cannot be made, bound or put to listen.
pub fn listen_std(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// What weir asks of an async runtime: tasks, the clock, sleeps, TCP,
/// hyper's timer.
/// Everything else (the driver, HTTP, WebSocket, Redis, generators) is
/// written once against it; `weir-runtime-tokio` and `weir-runtime-smol`
/// implement it in a few dozen lines each.
///
/// The type is only a name: it has no value, every method is an associated
/// function (like quinn's `Runtime`, minus the object).
pub trait Runtime: Send + Sync + Sized + std::fmt::Debug + 'static {
    /// A bound TCP listener.
    type Listener: Send + Sync + 'static;
    /// A TCP stream (accepted or connected) as hyper I/O, with `TCP_NODELAY`
    /// set: replies stream in small frames that must go out at once.
    type Io: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static;
    /// hyper's timer (header read timeouts, the openai client's waits).
    type Timer: hyper::rt::Timer + Clone + Send + Sync + 'static;
    /// A spawned task. **Dropping it aborts the task**; awaiting it waits
    /// until the task has ended (by itself or aborted).
    type Task: Future<Output = ()> + Unpin + Send + std::fmt::Debug + 'static;

    /// Runs `future` as a task of its own.
    fn spawn<F>(future: F) -> Self::Task
    where
        F: Future<Output = ()> + Send + 'static;

    /// Runs `future` as a task of its own that nobody aborts: it ends by
    /// itself.
    fn spawn_detached<F>(future: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// Resolves after `duration`.
    fn sleep(duration: Duration) -> impl Future<Output = ()> + Send + 'static;

    /// The monotonic clock: the `now` of every call into the core, and what
    /// every deadline the runtime waits for is measured against. The runtime
    /// reads the time only through this (and [`unix_ms`](Self::unix_ms)), so
    /// a runtime whose clock can be paused or moved (tokio's test clock)
    /// moves weir's deadlines with it.
    fn now() -> Instant;

    /// The wall clock, in milliseconds since the Unix epoch (0 if the clock
    /// is before it): the core's anchor for the times it writes to the store
    /// and its epochs. The only place the runtime reads the wall clock.
    fn unix_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// The wall clock in nanoseconds since the Unix epoch: the core's anchor
    /// to the nanosecond ([`Input::WallClockNs`](weir_core::Input::WallClockNs)),
    /// for chunk timestamps.
    fn unix_ns() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// hyper's timer on this runtime.
    fn timer() -> Self::Timer;

    /// Binds a TCP listener on `addr`.
    fn bind(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// The address `listener` is bound to.
    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr>;

    /// The next connection on `listener`, its send buffer set to
    /// [`SEND_BUFFER_BYTES`], and its peer's address (the per-address
    /// connection cap counts it, or what a trusted proxy forwards).
    fn accept(
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send + '_;

    /// A TCP connection to `host:port`.
    fn connect(host: &str, port: u16) -> impl Future<Output = io::Result<Self::Io>> + Send + '_;
}

/// The error of [`timeout`]: the time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// `future`'s output, or [`Elapsed`] when it takes longer than `limit`.
pub(crate) async fn timeout<R: Runtime, F: Future>(
    limit: Duration,
    future: F,
) -> Result<F::Output, Elapsed> {
    match select(pin!(future), pin!(R::sleep(limit))).await {
        Either::Left((out, _)) => Ok(out),
        Either::Right(((), _)) => Err(Elapsed),
    }
}

/// Resolves at `deadline`: at once when it has passed (without yielding), never
/// when there is none.
pub(crate) async fn sleep_until<R: Runtime>(deadline: Option<Instant>) {
    match deadline {
        Some(d) => {
            let left = d.saturating_duration_since(R::now());
            if !left.is_zero() {
                R::sleep(left).await;
            }
        }
        None => std::future::pending().await,
    }
}

/// One timer that moves (quinn's `drive_timer`): armed once, moved only when
/// its deadline moves, never rebuilt. A waiting loop whose deadline changes
/// at every turn would otherwise register a new sleep with the runtime's
/// timer each time.
pub(crate) struct Alarm<R: Runtime> {
    timer: R::Timer,
    sleep: Option<Pin<Box<dyn Sleep>>>,
    /// The deadline `sleep` is armed at; `None` once it has fired (a fired
    /// sleep is re-armed even for the same deadline).
    armed: Option<Instant>,
}

impl<R: Runtime> std::fmt::Debug for Alarm<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alarm").field("armed", &self.armed).finish()
    }
}

impl<R: Runtime> Alarm<R> {
    pub(crate) fn new() -> Self {
        Self {
            timer: R::timer(),
            sleep: None,
            armed: None,
        }
    }

    /// Resolves at `deadline` (at once when it has passed), never when there
    /// is none. Dropping the future before then leaves the timer armed, so
    /// the next wait for the same deadline costs nothing.
    pub(crate) async fn wait(&mut self, deadline: Option<Instant>) {
        let Some(deadline) = deadline else {
            return std::future::pending().await;
        };
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if self.armed != Some(deadline) {
                    self.timer.reset(sleep, deadline);
                }
                sleep
            }
            None => self.sleep.insert(self.timer.sleep_until(deadline)),
        };
        self.armed = Some(deadline);
        sleep.as_mut().await;
        self.armed = None;
    }
}

/// Lets the other tasks run once.
pub(crate) async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}
