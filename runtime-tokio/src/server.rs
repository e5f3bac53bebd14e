//! The accept loop and the graceful shutdown.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::auth::Authenticator;
use crate::driver::{Driver, ToDriver};
use crate::http::{self, Shared};
use crate::metrics::Metrics;
use crate::ws::WsSettings;
use crate::RuntimeConfig;

/// Room in the driver's channel; senders wait when it is full, which slows
/// readers and generators down instead of growing memory.
const CHANNEL_CAPACITY: usize = 4096;

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long open HTTP requests may take to finish after the driver stopped.
const HTTP_DRAIN: Duration = Duration::from_secs(1);

pub(crate) async fn run(
    listener: TcpListener,
    config: RuntimeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    // Held until the driver is done; if this future is dropped, the driver
    // stops too.
    let (_alive, alive_rx) = oneshot::channel::<()>();
    let (notices_tx, notices_rx) = mpsc::channel(crate::redis_store::NOTICE_CAPACITY);
    let (driver, readiness) = Driver::new(&config, tx.downgrade(), notices_tx, metrics.clone())?;
    let mut driver_task = tokio::spawn(driver.run(rx, notices_rx, alive_rx));
    let grace = config.shutdown_grace;
    let shared = Arc::new(Shared {
        tx,
        auth: Authenticator::new(&config.auth),
        max_body_bytes: config.node.limits.max_frame_bytes,
        page: config.page.map(Bytes::from),
        ws: WsSettings::new(
            config.node.limits.max_frame_bytes,
            config.queue_capacity,
            config.node.close_timeout,
        ),
        next_conn: AtomicU64::new(1),
        metrics,
        readiness,
    });
    tracing::info!(addr = %listener.local_addr()?, node = %config.node.node_id, "serving");

    let (stop_http, stop_rx) = watch::channel(false);
    // Dropped (with every connection task aborted) when this future ends.
    let mut http_conns = JoinSet::new();
    let shutdown = std::pin::pin!(shutdown);
    let mut shutdown = shutdown;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    http_conns.spawn(serve_connection(shared.clone(), stream, stop_rx.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off a little.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = http_conns.join_next(), if !http_conns.is_empty() => {}
            ended = &mut driver_task => {
                let why = match ended {
                    Err(e) if e.is_panic() => "the driver panicked",
                    _ => "the driver stopped",
                };
                return Err(std::io::Error::other(why));
            }
        }
    }

    tracing::info!("shutdown signal: no longer accepting connections");
    drop(listener);
    let _ = stop_http.send(true);
    let _ = shared.tx.send(ToDriver::Shutdown).await;
    // The driver ends once everything closed and settled, or after the grace.
    let margin = Duration::from_millis(500);
    if tokio::time::timeout(grace + margin, &mut driver_task)
        .await
        .is_err()
    {
        tracing::warn!("the driver did not stop in time");
        driver_task.abort();
    }
    let _ = tokio::time::timeout(HTTP_DRAIN, async {
        while http_conns.join_next().await.is_some() {}
    })
    .await;
    http_conns.abort_all();
    tracing::info!("stopped");
    Ok(())
}

/// Serves one TCP connection with hyper's HTTP/1 (keep-alive, upgrades).
async fn serve_connection(shared: Arc<Shared>, stream: TcpStream, mut stop: watch::Receiver<bool>) {
    // Replies stream in small frames: send each at once.
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| http::handle(shared.clone(), req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!("http connection: {e}");
            }
        }
        () = async {
            // (The guard `wait_for` returns must not live across an await.)
            let _ = stop.wait_for(|stop| *stop).await;
        } => {
            // Finish the request in flight, then close.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
