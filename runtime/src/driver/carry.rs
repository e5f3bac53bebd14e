//! Carrying out the node's outputs: frames into the connections' queues,
//! store operations to the store, generators started and stopped, HTTP
//! answers, closes; and the node's events into metrics and logs.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use weir_core::ids::ConnId;
use weir_core::store::StoreOp;
use weir_core::wire::{CancelStatus, CloseCode};
use weir_core::{Event, Input, Output};

use super::{Driver, Store};
use crate::generator;
use crate::queue::{Encoded, Item, Push};
use crate::rt::Runtime;

impl<R: Runtime> Driver<R> {
    pub(super) fn carry(&mut self, output: Output) {
        if let Output::Store {
            request: StoreOp::Renew(_),
            ..
        } = &output
        {
            self.metrics.lease_renewals.fetch_add(1, Relaxed);
        }
        match output {
            // Encoded here, once; the writers send the text as it is.
            Output::Send { conn, frame } => self.push(conn, Item::frame(frame)),
            Output::SendMany { conns, frame } => {
                let encoded = Arc::new(Encoded::new(frame));
                for conn in conns {
                    self.push(conn, Item::Frame(encoded.clone()));
                }
            }
            Output::Ping { conn } => self.push(conn, Item::Ping),
            Output::Close { conn, code } => {
                if code == CloseCode::TooSlow {
                    self.metrics.slow_consumer_closes.fetch_add(1, Relaxed);
                }
                tracing::debug!(%conn, %code, "closing");
                self.push(conn, Item::Close(code));
            }
            Output::Released { conn } => self.release(conn),
            Output::Store { op, request } => match &mut self.store {
                Store::Memory(memory) => self.immediate.extend(memory.apply(op, request)),
                Store::Redis(redis) => {
                    if let Some(failed) = redis.submit(op, request) {
                        self.immediate.push_back(failed);
                    }
                }
            },
            Output::Subscribe(topic) => match &mut self.store {
                Store::Memory(memory) => memory.subscribe(&topic),
                Store::Redis(redis) => redis.subscribe(&topic),
            },
            Output::Unsubscribe(topic) => match &mut self.store {
                Store::Memory(memory) => memory.unsubscribe(&topic),
                Store::Redis(redis) => redis.unsubscribe(&topic),
            },
            Output::StartGenerator {
                message_id,
                conv,
                context,
            } => {
                if self.tx.upgrade().is_none() {
                    return; // shutting down: nobody would read its events
                }
                tracing::debug!(%message_id, %conv, "starting generator");
                let task = generator::spawn::<R>(
                    &self.generator,
                    self.generator_tx.clone(),
                    message_id.clone(),
                    &context,
                    &self.metrics,
                );
                // A generator of the same reply still running is aborted
                // (dropped).
                self.generators.insert(message_id, task);
            }
            Output::AbortGenerator { message_id } => {
                if let Some(task) = self.generators.remove(&message_id) {
                    tracing::debug!(%message_id, "aborting generator");
                    drop(task);
                }
            }
            Output::HttpResponse { req, status, body } => {
                if let Some(reply) = self.http.remove(&req) {
                    // The client may have gone away; nothing to do then.
                    let _ = reply.send((status, body));
                }
            }
            Output::Event(event) => self.on_event(event),
        }
    }

    /// Offers `item` to a connection's queue (which wakes its writer if it
    /// waits for one).
    pub(super) fn push(&mut self, conn: ConnId, item: Item) {
        let Some(handle) = self.conns.get_mut(&conn) else {
            return; // already released: the socket is gone
        };
        let pushed = handle.queue.offer(item);
        if pushed.blocked {
            // The core stops handing it chunks until its writer drains the
            // queue (`Input::Writable`, from the writer).
            handle.told_blocked = true;
            self.immediate.push_back(Input::WriteBlocked { conn });
            self.metrics.queues_blocked.fetch_add(1, Relaxed);
        }
        match pushed.push {
            Push::Queued => {}
            Push::Merged => {
                let merged = handle.queue.merged_frames();
                let new = merged.saturating_sub(handle.merged_seen);
                handle.merged_seen = merged;
                self.metrics.merged_frames.fetch_add(new, Relaxed);
            }
            Push::Overflow => {
                tracing::debug!(%conn, "outbound queue overflow: slow consumer");
                self.immediate.push_back(Input::SlowConsumer { conn });
            }
            Push::Closed => {}
        }
    }

    /// Looks at every connection's queue and reports to the core its lag
    /// (the core decides when that is a slow consumer: `--max-lag-bytes`;
    /// a queue that stays empty is reported once)
    /// and, when its writer has taken nothing since an earlier look while
    /// frames wait, the stall (the core decides when that is one:
    /// `--stall-timeout`).
    pub(super) fn report_stalls(&mut self, now: Instant) {
        for (conn, handle) in &mut self.conns {
            // An empty queue is told once, not at every look: most
            // connections are idle most of the time, and a look at each of
            // them every second would cost the core an input per connection.
            let bytes = handle.queue.lag_bytes();
            if bytes > 0 || !handle.told_empty {
                handle.told_empty = bytes == 0;
                self.immediate
                    .push_back(Input::QueueLag { conn: *conn, bytes });
            }
            if let Some(since) = handle.stalled_since(now) {
                self.immediate
                    .push_back(Input::WriteStalled { conn: *conn, since });
            }
            // The writer's notice of a drained queue is dropped when the
            // mailbox is full: the core hears it here instead.
            if handle.told_blocked && !handle.queue.is_blocked() {
                handle.told_blocked = false;
                self.immediate.push_back(Input::Writable { conn: *conn });
            }
        }
    }

    pub(super) fn release(&mut self, conn: ConnId) {
        if self.conns.remove(&conn).is_some() {
            self.count_connections();
        }
    }

    pub(super) fn count_connections(&self) {
        let n = i64::try_from(self.conns.len()).unwrap_or(i64::MAX);
        self.metrics.connections.store(n, Relaxed);
    }

    pub(super) fn on_event(&mut self, event: Event) {
        match event {
            Event::ConnectionOpened { conn } => tracing::debug!(%conn, "connection open"),
            Event::ConnectionClosed { conn } => tracing::debug!(%conn, "connection released"),
            Event::ReplySettled {
                message_id,
                outcome,
                final_seq,
            } => {
                tracing::debug!(%message_id, ?outcome, final_seq, "reply settled");
                self.metrics.reply_settled(&outcome);
                // An observation, not a command: the core settles a reply
                // only after its generator ended by itself (and reported
                // `Finished` or `Failed`, which removed the task) or was
                // stopped with `AbortGenerator`.
                debug_assert!(
                    !self.generators.contains_key(&message_id),
                    "the generator of settled reply {message_id} still runs"
                );
            }
            Event::CancelAnswered {
                conn,
                status,
                latency,
            } => {
                tracing::debug!(%conn, ?status, ?latency, "cancel answered");
                if status != CancelStatus::NotFound {
                    self.metrics.cancel_quiet(latency);
                }
            }
            Event::FrameIgnored { conn, reason } => {
                tracing::debug!(%conn, reason, "client frame ignored");
            }
            Event::Resumed { conn, exact } => {
                tracing::debug!(%conn, exact, "resume");
                self.metrics.resumed(exact);
            }
            Event::RateLimited { cap } => {
                tracing::debug!(cap = cap.as_str(), "refused by a cap");
                self.metrics.rate_limited(cap);
            }
            Event::StoreUnavailable { op } => {
                tracing::warn!(op = op.get(), "store unavailable");
                self.metrics.store_unavailable.fetch_add(1, Relaxed);
            }
            Event::StoreRefused { op, reason } => {
                // Logged once per burst by the store's connection (not here:
                // a full store refuses every append of every reply).
                tracing::debug!(op = op.get(), "store refused: {reason}");
                self.metrics.store_refused.fetch_add(1, Relaxed);
            }
            Event::StoreInternal { op, reason } => {
                tracing::error!(
                    op = op.get(),
                    "store reply not understood (a bug): {reason}"
                );
            }
        }
    }
}
