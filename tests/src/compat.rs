//! The seed front end's side of the compatibility surface (`compat-seed.md`):
//! a `/ws/chat` WebSocket that reads its frames as JSON, as the page does.

use async_tungstenite::tokio::client_async;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::Message;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::{Endpoint, Ws, T};

/// A `/ws/chat` connection, nothing read yet.
#[derive(Debug)]
pub struct CompatClient {
    ws: Ws,
}

impl Endpoint {
    /// `ws://ADDR/ws/chat?` + `query` with extra headers: the client, or the
    /// handshake's failure (`tungstenite::Error::Http` holds the status).
    pub async fn try_compat_ws(
        &self,
        query: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<CompatClient, async_tungstenite::tungstenite::Error> {
        let url = format!("ws://{}/ws/chat?{query}", self.addr());
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(*name, value.parse().expect("a valid header value"));
        }
        let stream = tokio::time::timeout(T, TcpStream::connect(self.addr()))
            .await
            .expect("TCP connect in time")
            .expect("TCP connect");
        let (ws, _) = tokio::time::timeout(T, client_async(request, stream))
            .await
            .expect("WebSocket handshake in time")?;
        Ok(CompatClient { ws })
    }

    /// The page's connect: `/ws/chat?session_id=S&user_id=demo_user&token=dev-token`.
    pub async fn compat_ws(&self, session: &str) -> CompatClient {
        self.try_compat_ws(
            &format!("session_id={session}&user_id=demo_user&token=dev-token"),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("/ws/chat upgrades: {e}"))
    }
}

impl CompatClient {
    /// The next text message within [`T`], skipping WebSocket pings and pongs.
    pub async fn next_text(&mut self) -> String {
        loop {
            let m = tokio::time::timeout(T, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no /ws/chat message within {T:?}"))
                .expect("the stream is open")
                .expect("read from the WebSocket");
            match m {
                Message::Text(t) => return t.as_str().to_owned(),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Every text message until the server closes, and the close code.
    pub async fn until_close(&mut self) -> (Vec<String>, u16) {
        let mut texts = Vec::new();
        loop {
            let m = tokio::time::timeout(T, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no /ws/chat message or close within {T:?}"));
            match m {
                Some(Ok(Message::Text(t))) => texts.push(t.as_str().to_owned()),
                Some(Ok(Message::Close(frame))) => {
                    return (texts, frame.map_or(1005, |f| u16::from(f.code)));
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return (texts, 1006),
            }
        }
    }

    /// The next frame as JSON (`type` first, as the page needs).
    pub async fn next_json(&mut self) -> Value {
        let text = self.next_text().await;
        assert!(
            text.starts_with("{\"type\":"),
            "not a JSON frame with `type` first: {text}"
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send on /ws/chat");
    }

    /// `welcome` then `history`: returns the history's messages.
    pub async fn handshake(&mut self) -> Vec<Value> {
        let welcome = self.next_json().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        let history = self.next_json().await;
        assert_eq!(history["type"], "history", "{history}");
        history["messages"]
            .as_array()
            .expect("history.messages is an array")
            .clone()
    }

    /// `message` frames until the final one (`is_complete: true`) of `mid`;
    /// returns them all, the final one last. Any other frame type fails.
    pub async fn until_final(&mut self, mid: &str) -> Vec<Value> {
        let mut got = Vec::new();
        loop {
            let f = self.next_json().await;
            assert_eq!(f["type"], "message", "only message frames: {f}");
            let done = f["data"]["message_id"] == mid && f["data"]["is_complete"] == true;
            got.push(f);
            if done {
                return got;
            }
        }
    }

    /// A `{"type":"ping"}` barrier: the frames that came before its `pong`.
    pub async fn ping_barrier(&mut self) -> Vec<Value> {
        self.send_text(r#"{"type":"ping"}"#).await;
        let mut before = Vec::new();
        loop {
            let f = self.next_json().await;
            if f["type"] == "pong" {
                return before;
            }
            before.push(f);
        }
    }
}

/// The HTTP status of a refused WebSocket upgrade; panics if it was not
/// refused with an HTTP answer.
#[must_use]
pub fn refusal_status_of<C>(result: &Result<C, async_tungstenite::tungstenite::Error>) -> u16 {
    match result {
        Err(async_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got the error {e}"),
        Ok(_) => panic!("expected an HTTP refusal, got an upgrade"),
    }
}
