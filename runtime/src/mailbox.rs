//! The driver's mailbox: what the other tasks send the driver task (readers,
//! HTTP handlers, generators, the Redis store's tasks), and the driver's side
//! of one WebSocket. Every task that talks to the driver needs these; none
//! of them needs the driver itself.

use std::sync::Arc;

use futures_channel::oneshot;
use weir_core::ids::{ConnId, MessageId, Seq, SessionId, UserId};
use weir_core::{HttpRequest, Input};

use crate::queue::OutQueue;

/// An HTTP status and JSON body, from `Output::HttpResponse`.
pub(crate) type HttpAnswer = (u16, String);

/// A message to the driver.
#[derive(Debug)]
pub(crate) enum ToDriver {
    /// A WebSocket was upgraded and authenticated: register its writer side,
    /// then feed `Input::Connect`.
    Connect {
        conn: ConnId,
        user: UserId,
        session: SessionId,
        resume: Option<(MessageId, Seq)>,
        handle: ConnHandle,
    },
    /// An input to feed as it is (frames, activity, disconnects, generator
    /// events).
    Input(Input),
    /// An authenticated HTTP API request; the answer goes to `reply`.
    Http {
        user: UserId,
        request: HttpRequest,
        reply: oneshot::Sender<HttpAnswer>,
    },
    /// Begin the graceful shutdown.
    Shutdown,
}

/// The driver's side of one WebSocket. Dropping it releases the socket:
/// the queue closes and the reader task (which waits on `_stop`) ends,
/// dropping (so aborting) the writer task it owns.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    pub(crate) queue: Arc<OutQueue>,
    /// Dropped with the handle: tells the reader to stop.
    pub(crate) _stop: oneshot::Sender<()>,
    /// `queue.merged_frames()` as last counted into the metrics.
    pub(crate) merged_seen: u64,
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        self.queue.close();
    }
}
