//! The smol server in this process, outside any tokio context: HTTP API
//! requests with a plain blocking client (the WebSocket and everything else
//! run in `tests/`, end to end, against both runtimes).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use weir_core::ids::NodeId;
use weir_runtime_smol::{GeneratorConfig, RuntimeConfig, Server};

const T: Duration = Duration::from_secs(10);

/// One request on a fresh connection; the status and the body.
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(T)).expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the response");
    let status = out[9..12].parse().expect("a status");
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn serves_the_http_api_on_smol_and_stops_on_its_signal() {
    let node = weir_core::Config::new(NodeId::parse("smol-node").expect("valid node id"));
    let mut config = RuntimeConfig::new("127.0.0.1:0".parse().expect("valid address"), node);
    config.generator = GeneratorConfig::Demo {
        chunks: 3,
        rate_per_sec: 100.0,
    };
    let server = smol::block_on(Server::bind(config)).expect("bind");
    let addr = server.local_addr();
    let (stop, stopped) = smol::channel::bounded::<()>(1);
    let running = std::thread::spawn(move || {
        smol::block_on(server.run(async move {
            let _ = stopped.recv().await;
        }))
    });

    assert_eq!(request(addr, "GET", "/healthz", "").0, 200);
    assert_eq!(request(addr, "GET", "/readyz", "").0, 200);
    let (status, body) = request(
        addr,
        "POST",
        "/v1/sessions/s1/messages?user_id=u1",
        r#"{"content":"hello smol"}"#,
    );
    assert_eq!(status, 202, "{body}");
    let deadline = std::time::Instant::now() + T;
    loop {
        let (status, body) = request(addr, "GET", "/v1/sessions/s1/messages?user_id=u1", "");
        assert_eq!(status, 200, "{body}");
        if body.contains(r#""status":"completed""#) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no completed reply: {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, metrics) = request(addr, "GET", "/metrics", "");
    assert_eq!(status, 200);
    assert!(metrics.contains("weir_"), "{metrics}");

    drop(stop);
    running
        .join()
        .expect("the server thread")
        .expect("run ends Ok");
}
