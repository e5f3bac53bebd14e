//! The driver's timers under load, on tokio and on smol: a reply produced as
//! fast as the demo generator can, fanned out to many connections, keeps the
//! driver's channel full for several lease periods; meanwhile heartbeats go
//! out, an idle connection is closed with 4000 on time, and the reply's lease
//! is renewed (issue 12, point 2). A driver that fires its timers only when
//! no message is waiting does none of that until the flood stops.
//!
//! Every bound is generous (several heartbeat periods), so a loaded machine
//! does not fail it; a starved driver misses them by the whole flood. The
//! viewers are raw WebSocket clients that discard what they read (decoding
//! every chunk of the flood would make the test's own clients the
//! bottleneck) and keep their connections active with `ping` frames.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ::tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use ::tokio::net::TcpStream;
use futures_channel::oneshot;
use futures_util::StreamExt;
use weir_tests::tungstenite::Message;
use weir_tests::{demo_config, json, Client, InProcess, Runtime, Value, T};

weir_tests::both_runtimes! {
    a_flooded_driver_still_pings_closes_idle_connections_and_renews_leases,
}

const HEARTBEAT: Duration = Duration::from_millis(200);
const IDLE: Duration = Duration::from_secs(1);
/// Renewed every third: 300 ms.
const LEASE_TTL_MS: u64 = 900;
/// How long the flood is watched: more than four lease periods.
const FLOOD: Duration = Duration::from_secs(4);
/// Connections the flooding reply fans out to.
const VIEWERS: usize = 64;
/// The longest a heartbeat may be late, and how late past its idle timeout
/// the idle connection may be closed: five heartbeat periods.
const SLACK: Duration = Duration::from_millis(5 * 200);

async fn a_flooded_driver_still_pings_closes_idle_connections_and_renews_leases() {
    // Chunks as fast as the generator can make them (rate 0), more than the
    // flood can use.
    let mut config = demo_config(100_000_000, 0.0);
    config.node.heartbeat = HEARTBEAT;
    config.node.idle_timeout = IDLE;
    config.node.housekeeping = Duration::from_millis(300);
    config.node.timers.lease_ttl_ms = LEASE_TTL_MS;
    config.store.timers = config.node.timers;
    let server = InProcess::start(config).await;

    let mut viewers = Vec::with_capacity(VIEWERS);
    for _ in 0..VIEWERS {
        let (ws, _) = upgrade(server.addr(), "session_id=flood&user_id=u").await;
        viewers.push(::tokio::spawn(raw_client(ws, Some(HEARTBEAT))));
    }
    let posted = server
        .http(
            "POST",
            "/v1/sessions/flood/messages?user_id=u",
            &json!({"content": "flood"}).to_string(),
        )
        .await;
    assert_eq!(posted.status, 202, "{}", posted.body);
    let posted: Value = serde_json::from_str(&posted.body).expect("a JSON answer");
    let message_id = posted["message_id"]
        .as_str()
        .expect("a message id")
        .to_owned();
    let flowing = Instant::now();

    // Connected during the flood: their `Connect` waits in the full channel.
    let observer = server.ws("session_id=quiet&user_id=o").await;
    let (stop_observer, stopped) = oneshot::channel();
    let observer = ::tokio::spawn(pings_until(observer, stopped));
    let watched_from = Instant::now();
    let (idle, upgraded) = upgrade(server.addr(), "session_id=idle&user_id=i").await;
    let idle = ::tokio::spawn(raw_client(idle, None));
    let renewals_before = server.metrics().await.get("weir_lease_renewals_total");

    ::tokio::time::sleep_until((flowing + FLOOD).into()).await;
    let renewals = server.metrics().await.get("weir_lease_renewals_total") - renewals_before;
    let watched_until = Instant::now();
    let _ = stop_observer.send(());
    let (pings, observer_closed) = observer.await.expect("the observer");
    let mut viewers_closed = Vec::new();
    for viewer in viewers.iter_mut().filter(|v| v.is_finished()) {
        viewers_closed.push(viewer.await.expect("a viewer").map(|(_, code)| code));
    }
    let idle_closed = if idle.is_finished() {
        idle.await.expect("the idle client")
    } else {
        idle.abort();
        None
    };

    let mut marks = vec![watched_from];
    marks.extend(pings.iter().copied());
    marks.push(watched_until);
    let longest_gap = marks
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]))
        .max()
        .unwrap_or_default();
    let report = format!(
        "over {:?} of flood: {} pings to the quiet connection (longest gap {longest_gap:?}, \
         closed: {observer_closed:?}), the idle connection closed {:?} after its upgrade request, \
         {renewals} lease renewals, {} of {VIEWERS} viewers closed (codes {viewers_closed:?})",
        watched_until - watched_from,
        pings.len(),
        idle_closed.map(|(at, code)| (at.saturating_duration_since(upgraded), code)),
        viewers_closed.len(),
    );
    eprintln!("{:?}: {report}", Runtime::current());
    assert!(
        viewers_closed.is_empty(),
        "viewers were closed during the flood: {report}"
    );
    assert!(
        observer_closed.is_none() && longest_gap <= SLACK,
        "heartbeats stopped during the flood: {report}"
    );
    let Some((closed_at, code)) = idle_closed else {
        panic!("the idle connection was not closed during the flood: {report}");
    };
    assert_eq!(code, 4000, "{report}");
    let after = closed_at.saturating_duration_since(upgraded);
    assert!(
        after >= IDLE && after <= IDLE + SLACK + SLACK,
        "the idle connection was not closed on time: {report}"
    );
    // Expected about 13 (every 300 ms for 4 s).
    assert!(renewals >= 4.0, "the lease was not renewed: {report}");

    // Stop the flood: the reply was still streaming, and ends cancelled,
    // not owner_lost.
    let cancel = server
        .http(
            "POST",
            "/v1/sessions/flood/cancel?user_id=u",
            &json!({"message_id": message_id}).to_string(),
        )
        .await;
    assert_eq!(cancel.status, 200, "{}", cancel.body);
    let cancel: Value = serde_json::from_str(&cancel.body).expect("a JSON answer");
    assert_eq!(cancel["status"], "cancelled", "{cancel}");
    let failed = server
        .metrics()
        .await
        .get("weir_replies_total{outcome=\"failed\"}");
    assert_eq!(failed, 0.0, "no reply failed (owner_lost)");
    for viewer in viewers {
        viewer.abort();
    }
    server.shutdown().await.expect("run() ends cleanly");
}

/// When each WebSocket ping arrived (each answered with a pong), until
/// `stop`; and how the connection ended if it did before.
async fn pings_until(
    mut ws: Client,
    mut stop: oneshot::Receiver<()>,
) -> (Vec<Instant>, Option<String>) {
    let mut pings = Vec::new();
    loop {
        ::tokio::select! {
            _ = &mut stop => return (pings, None),
            msg = ws.ws_mut().next() => match msg {
                Some(Ok(Message::Ping(_))) => pings.push(Instant::now()),
                Some(Ok(Message::Close(c))) => return (pings, Some(format!("{c:?}"))),
                Some(Ok(_)) => {}
                other => return (pings, Some(format!("{other:?}"))),
            },
        }
    }
}

/// A raw WebSocket upgrade: the stream, and when its request was sent (the
/// server registers the connection after that).
async fn upgrade(addr: SocketAddr, query: &str) -> (TcpStream, Instant) {
    let mut stream = TcpStream::connect(addr).await.expect("tcp connect");
    let sent = Instant::now();
    let request = format!(
        "GET /v1/ws?{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the upgrade");
    // Byte by byte, so that no frame is read with the head.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = ::tokio::time::timeout(T, stream.read_u8())
            .await
            .expect("the upgrade's answer in time")
            .expect("read the upgrade's answer");
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (stream, sent)
}

/// A raw WebSocket client: reads the server's frames and discards them,
/// answering none (no pong), and sends a `ping` frame every `ping_every`
/// (nothing at all without it). Returns when the server's close frame
/// arrived and its code; `None` if the socket ended without one.
async fn raw_client(stream: TcpStream, ping_every: Option<Duration>) -> Option<(Instant, u16)> {
    let (read, mut write) = stream.into_split();
    // Holds the write half (dropping it would shut the socket's sending
    // side, which the server takes for the client leaving).
    let pinger = ::tokio::spawn(async move {
        let Some(every) = ping_every else {
            return std::future::pending::<()>().await;
        };
        // Masked (a client's frames must be), with a zero key.
        let text = br#"{"type":"ping"}"#;
        let mut frame = vec![0x81, 0x80 | text.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(text);
        loop {
            ::tokio::time::sleep(every).await;
            if write.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    let mut read = BufReader::with_capacity(64 * 1024, read);
    let mut payload = Vec::new();
    let closed = loop {
        match next_frame_raw(&mut read, &mut payload).await {
            Some(0x8) => {
                let code = payload
                    .get(..2)
                    .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                break Some((Instant::now(), code));
            }
            Some(_) => {}
            None => break None,
        }
    };
    pinger.abort();
    closed
}

/// The next server frame (unmasked): its opcode, its payload in `payload`.
async fn next_frame_raw(read: &mut (impl AsyncRead + Unpin), payload: &mut Vec<u8>) -> Option<u8> {
    let mut header = [0u8; 2];
    read.read_exact(&mut header).await.ok()?;
    let len = match header[1] & 0x7f {
        126 => u64::from(read.read_u16().await.ok()?),
        127 => read.read_u64().await.ok()?,
        n => u64::from(n),
    };
    payload.resize(usize::try_from(len).ok()?, 0);
    read.read_exact(payload).await.ok()?;
    Some(header[0] & 0x0f)
}
