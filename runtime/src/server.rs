//! The accept loop and the graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{select_biased, FutureExt, StreamExt};
use hyper::server::conn::http1;
use hyper::service::service_fn;

use crate::auth::Authenticator;
use crate::driver::Driver;
use crate::http::{self, Shared};
use crate::mailbox::ToDriver;
use crate::metrics::Metrics;
use crate::rt::{timeout, Runtime};
use crate::ws::WsSettings;
use crate::RuntimeConfig;

/// Room in the driver's channel; senders wait when it is full, which slows
/// readers and generators down instead of growing memory.
const CHANNEL_CAPACITY: usize = 4096;

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long open HTTP requests may take to finish after the driver stopped.
const HTTP_DRAIN: Duration = Duration::from_secs(1);

pub(crate) async fn run<R: Runtime>(
    listener: R::Listener,
    local_addr: SocketAddr,
    config: RuntimeConfig,
    auth: Arc<Authenticator>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let (tx, rx) = async_channel::bounded(CHANNEL_CAPACITY);
    let (notices_tx, notices_rx) = async_channel::bounded(crate::redis_store::NOTICE_CAPACITY);
    let (driver, readiness) =
        Driver::<R>::new(&config, tx.downgrade(), notices_tx, metrics.clone())?;
    // Aborted when dropped: if this future is dropped, the driver stops too.
    // A panic ends the task (its message printed by the panic hook); the
    // flag tells the accept loop which way it ended.
    let driver_panicked = Arc::new(AtomicBool::new(false));
    let mut driver_task = R::spawn({
        let panicked = driver_panicked.clone();
        async move {
            if AssertUnwindSafe(driver.run(rx, notices_rx))
                .catch_unwind()
                .await
                .is_err()
            {
                panicked.store(true, Ordering::SeqCst);
            }
        }
    });
    let grace = config.shutdown_grace;
    let shared = Arc::new(Shared {
        tx,
        auth,
        max_body_bytes: config.node.limits.max_frame_bytes,
        page: config.page.map(Bytes::from),
        ws: WsSettings::new(
            config.node.limits.max_frame_bytes,
            config.queue_capacity,
            config.node.close_timeout,
        ),
        next_conn: AtomicU64::new(1),
        trusted_proxies: config.trusted_proxies.clone(),
        metrics,
        readiness,
        compat: config.compat.enabled.then(|| config.compat.ws_path.clone()),
        cors: crate::compat::Cors::new(&config.cors_origins),
        ai_sdk: config.ai_sdk,
        queue_capacity: config.queue_capacity,
    });
    tracing::info!(addr = %local_addr, node = %config.node.node_id, "serving");

    // Dropping `stop_http` tells every connection to finish (its receivers
    // see the channel closed).
    let (stop_http, stop_rx) = async_channel::bounded::<()>(1);
    // Dropped (with every connection task aborted) when this future ends.
    let mut http_conns: FuturesUnordered<R::Task> = FuturesUnordered::new();
    let mut shutdown = pin!(shutdown.fuse());
    loop {
        let accepted = {
            let mut accept = pin!(R::accept(&listener).fuse());
            // (An empty set's `next` is ready at once: wait for nothing then.)
            let mut joined = pin!(async {
                if http_conns.is_empty() {
                    std::future::pending::<()>().await;
                }
                let _ = http_conns.next().await;
            }
            .fuse());
            select_biased! {
                () = shutdown => break,
                () = (&mut driver_task).fuse() => {
                    return Err(std::io::Error::other(
                        if driver_panicked.load(Ordering::SeqCst) {
                            "the driver panicked (its message is logged above)"
                        } else {
                            "the driver stopped"
                        },
                    ));
                }
                () = joined => continue,
                accepted = accept => accepted,
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                http_conns.push(R::spawn(serve_connection::<R>(
                    shared.clone(),
                    stream,
                    peer,
                    stop_rx.clone(),
                )));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off a little.
                tracing::warn!("accept failed: {e}");
                R::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    tracing::info!("shutdown signal: no longer accepting connections");
    drop(listener);
    drop(stop_http);
    let _ = shared.tx.send(ToDriver::Shutdown).await;
    // The driver ends once everything closed and settled, or after the grace.
    let margin = Duration::from_millis(500);
    if timeout::<R, _>(grace + margin, &mut driver_task)
        .await
        .is_err()
    {
        tracing::warn!("the driver did not stop in time");
    }
    drop(driver_task);
    let _ = timeout::<R, _>(HTTP_DRAIN, async {
        while http_conns.next().await.is_some() {}
    })
    .await;
    drop(http_conns);
    tracing::info!("stopped");
    Ok(())
}

/// Serves one TCP connection with hyper's HTTP/1 (keep-alive, upgrades).
async fn serve_connection<R: Runtime>(
    shared: Arc<Shared>,
    stream: R::Io,
    peer: SocketAddr,
    stop: async_channel::Receiver<()>,
) {
    let service = service_fn(move |req| http::handle::<R>(shared.clone(), peer, req));
    let conn = http1::Builder::new()
        .timer(R::timer())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(stream, service)
        .with_upgrades();
    let mut conn = pin!(conn);
    let stopped = {
        // Never sent to: `recv` ends when the server drops its sender.
        let mut stopping = pin!(stop.recv().fuse());
        let mut serving = conn.as_mut().fuse();
        select_biased! {
            result = serving => {
                if let Err(e) = result {
                    tracing::debug!("http connection: {e}");
                }
                false
            }
            _ = stopping => true,
        }
    };
    if stopped {
        // Finish the request in flight, then close.
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}
