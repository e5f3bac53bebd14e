//! Where a server under test listens, and the clients that reach it. A
//! [`WeirProcess`](crate::WeirProcess) and an in-process server
//! (`InProcess`, feature `in-process`) both deref to
//! theirs, so a test reads the same against either.

use std::net::SocketAddr;

use async_tungstenite::tokio::client_async;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use tokio::net::{TcpSocket, TcpStream};

use crate::{http_request, tungstenite, Client, HttpResponse, Metrics, Value, T};

/// A server's loopback address and the clients that reach it: WebSockets to
/// `/v1/ws` ([`Client`]), one-shot HTTP requests, `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    addr: SocketAddr,
}

impl Endpoint {
    /// The server listening on `addr`.
    #[must_use]
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr }
    }

    /// The address it listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` + `path`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `ws://ADDR/v1/ws?` + `query`.
    #[must_use]
    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/v1/ws?{query}", self.addr)
    }

    /// A WebSocket to `/v1/ws?{query}` whose `hello` and `history` have been
    /// read (they are in [`Client::hello`] and [`Client::history`]).
    pub async fn ws(&self, query: &str) -> Client {
        let mut client = self.connect(query).await;
        client.handshake().await;
        client
    }

    /// A WebSocket to `/v1/ws?{query}`, nothing read yet.
    pub async fn connect(&self, query: &str) -> Client {
        self.try_connect(query)
            .await
            .unwrap_or_else(|e| panic!("WebSocket to /v1/ws?{query} upgrades: {e}"))
    }

    /// Like [`connect`](Self::connect), but returns the handshake's failure
    /// (e.g. `tungstenite::Error::Http` with the refusal's status).
    pub async fn try_connect(&self, query: &str) -> Result<Client, tungstenite::Error> {
        self.try_connect_with_headers(query, &[]).await
    }

    /// A WebSocket upgrade request with extra headers.
    pub async fn try_connect_with_headers(
        &self,
        query: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<Client, tungstenite::Error> {
        let mut request = self.ws_url(query).into_client_request()?;
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(*name, value.parse().expect("a valid header value"));
        }
        let stream = tokio::time::timeout(T, TcpStream::connect(self.addr))
            .await
            .expect("TCP connect in time")
            .expect("TCP connect");
        let (ws, _) = tokio::time::timeout(T, client_async(request, stream))
            .await
            .expect("WebSocket handshake in time")?;
        Ok(Client::new(ws))
    }

    /// A WebSocket whose socket has a receive buffer of `rcvbuf` bytes (the
    /// kernel may round it), for a client that stops reading; nothing read.
    ///
    /// Use at least [`SMALL_RCVBUF`]. With 4 KiB (8 KiB as the kernel counts
    /// it) a client that had stopped reading sometimes never got the rest on
    /// loopback once it read again, for a reason of TCP's own: its empty
    /// buffer advertised a window of 1 908 bytes while the sender's MSS had
    /// been bounded to 2 048 (half the largest window it saw), so the sender
    /// sent nothing but window probes, the window never grew, and the
    /// connection sat with 56 KB unsent (`ss`: `persist` timer,
    /// `rwnd_limited` 100 %, `snd_wnd:1908`, `mss:2048`). Seen in 1 of 15
    /// runs of the fan-out test and once in CI's slow-readers test.
    pub async fn connect_small_buffer(&self, query: &str, rcvbuf: u32) -> Client {
        let socket = TcpSocket::new_v4().expect("TCP socket");
        socket.set_recv_buffer_size(rcvbuf).expect("set SO_RCVBUF");
        let stream = tokio::time::timeout(T, socket.connect(self.addr))
            .await
            .expect("TCP connect in time")
            .expect("TCP connect");
        let (ws, _) = tokio::time::timeout(T, client_async(self.ws_url(query), stream))
            .await
            .expect("WebSocket handshake in time")
            .expect("WebSocket upgrades");
        Client::new(ws)
    }

    /// One HTTP request (fresh connection) with a text body.
    pub async fn http(&self, method: &str, path: &str, body: &str) -> HttpResponse {
        http_request(self.addr, method, path, &[], body.as_bytes()).await
    }

    /// One HTTP request with extra headers.
    pub async fn http_with_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> HttpResponse {
        http_request(self.addr, method, path, headers, body.as_bytes()).await
    }

    /// `GET /v1/users/{user}/presence` (as that user, auth off): its
    /// `status` and `connections`.
    pub async fn presence(&self, user: &str) -> (String, u64) {
        let r = self
            .http(
                "GET",
                &format!("/v1/users/{user}/presence?user_id={user}"),
                "",
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let body = r.json();
        (
            body["status"].as_str().unwrap_or_default().to_owned(),
            body["connections"].as_u64().unwrap_or_default(),
        )
    }

    /// `GET /metrics`, parsed.
    pub async fn metrics(&self) -> Metrics {
        let r = self.http("GET", "/metrics", "").await;
        assert_eq!(r.status, 200, "GET /metrics: {r:?}");
        Metrics::parse(&r.body)
    }

    /// The messages of `GET /v1/sessions/{session}/messages{query}`, which
    /// must answer 200 for that conversation.
    pub async fn messages(&self, session: &str, query: &str) -> Vec<Value> {
        let r = self
            .http(
                "GET",
                &format!("/v1/sessions/{session}/messages{query}"),
                "",
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let body = r.json();
        assert_eq!(body["session_id"], session);
        body["messages"]
            .as_array()
            .expect("a messages list")
            .clone()
    }
}
