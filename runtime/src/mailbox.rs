//! The driver's mailbox: what the other tasks send the driver task (readers,
//! HTTP handlers, generators, the Redis store's tasks), and the driver's side
//! of one WebSocket. Every task that talks to the driver needs these; none
//! of them needs the driver itself.

use std::sync::Arc;
use std::time::Instant;

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
        ip: std::net::IpAddr,
        /// The protocol it speaks.
        dialect: weir_core::dialect::Dialect,
        handle: ConnHandle,
    },
    /// An AI SDK event-stream response ([`crate::ai_sdk`]): register its
    /// queue, then feed `Input::AiSdkStream`.
    Stream {
        conn: ConnId,
        user: UserId,
        request: weir_core::dialect::ai_sdk::StreamRequest,
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
    /// The queue's `progress().popped` as the driver last saw it, and when it
    /// last saw it change or the queue empty: the writer has taken nothing
    /// since then (reported to the core as `Input::WriteStalled`).
    pub(crate) progress: Option<(u64, Instant)>,
    /// The core was told `Input::WriteBlocked` and not yet `Input::Writable`.
    pub(crate) told_blocked: bool,
    /// The last `Input::QueueLag` told the core an empty queue.
    pub(crate) told_empty: bool,
}

impl ConnHandle {
    /// The handle of a new connection.
    pub(crate) fn new(queue: Arc<OutQueue>, stop: oneshot::Sender<()>) -> Self {
        Self {
            queue,
            _stop: stop,
            merged_seen: 0,
            progress: None,
            told_blocked: false,
            told_empty: false,
        }
    }

    /// The driver's look at the queue at `now`: `Some(since)` if frames wait
    /// and the writer has taken none of them since `since` (the last look
    /// that saw it take one, or the queue empty).
    pub(crate) fn stalled_since(&mut self, now: Instant) -> Option<Instant> {
        let p = self.queue.progress();
        match self.progress {
            Some((popped, since)) if p.waiting && popped == p.popped => Some(since),
            _ => {
                self.progress = Some((p.popped, now));
                None
            }
        }
    }
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        self.queue.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use weir_core::ids::MessageId;
    use weir_core::wire::{Chunk, ServerFrame};

    use super::*;
    use crate::queue::{Item, Push};

    fn chunk(seq: u64) -> Item {
        Item::frame(ServerFrame::Chunk(Chunk {
            message_id: MessageId::parse("m").unwrap(),
            seq,
            delta: "x".to_owned(),
            from_seq: None,
            ts_ns: None,
        }))
    }

    #[test]
    fn a_queue_whose_writer_takes_nothing_is_stalled_since_the_last_look_that_saw_progress() {
        let (stop, _stopped) = oneshot::channel();
        let mut handle = ConnHandle::new(Arc::new(OutQueue::new(4)), stop);
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(handle.stalled_since(t0), None, "empty");
        assert_eq!(handle.queue.push(chunk(1)), Push::Queued);
        assert_eq!(
            handle.stalled_since(t0 + s),
            Some(t0),
            "waiting since the empty look"
        );
        assert_eq!(handle.stalled_since(t0 + 2 * s), Some(t0), "still");
        assert_eq!(handle.queue.push(chunk(2)), Push::Queued);
        assert_eq!(handle.queue.pop(), Some(chunk(1)));
        assert_eq!(
            handle.stalled_since(t0 + 3 * s),
            None,
            "the writer took one"
        );
        assert_eq!(handle.stalled_since(t0 + 4 * s), Some(t0 + 3 * s));
        assert_eq!(handle.queue.pop(), Some(chunk(2)));
        assert_eq!(handle.stalled_since(t0 + 5 * s), None);
        assert_eq!(handle.queue.push(Item::Ping), Push::Queued);
        assert_eq!(
            handle.stalled_since(t0 + 6 * s),
            Some(t0 + 5 * s),
            "a ping that waits counts too"
        );
    }
}
