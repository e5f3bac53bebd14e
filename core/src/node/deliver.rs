//! Delivery: from this node's conversation views to its connections. Each
//! open connection has a cursor per reply it watches and is given exactly the
//! next chunks (invariant 4), never one beyond `final_seq`; a held
//! `cancel_result`, then `end`, follow the last chunk (invariant 3). The
//! chunks a connection is given in one step go as one frame: one that
//! arrives alone as a plain `chunk`, several that are there at once (a
//! batch the store appended, a catch-up from the log, a slice of a large
//! fan-out) as one merged `chunk` shared by every connection at the same
//! point.
//!
//! Delivery is pulled by the connection: one whose outbound queue the
//! runtime reported full (`Input::WriteBlocked`) is skipped, its cursors
//! kept where they are, until its writer drained the queue
//! (`Input::Writable`); the next step then gives it everything from its
//! cursor on that its share allows, as merged frames. The chunks it waits
//! for stay in the view, which keeps every reply a cursor still watches
//! (`tidy_conv`), so a connection that cannot keep up holds no text of its
//! own; `end` and a held `cancel_result` wait behind its last chunk as
//! always.

use std::collections::BTreeMap;
use std::time::Instant;

use super::cancel::cancel_result;
use super::view::ReplyView;
use super::{watch_key, Node, STORE_LOST};
use crate::api::{Event, Output};
use crate::ids::{ConnId, ConvKey, IdSource, MessageId, RequestId, Seq};
use crate::session::{ConnState, Connection, Cursor};
use crate::store::{epoch_of, Epoch};
use crate::timer::TimerKey;
use crate::wire::{
    Chunk, End, Message, MessageStatus, ReplyStatus, ResumeUnavailable, ResumeUnavailableReason,
    ServerFrame, Start, UserMessage,
};

impl<I: IdSource> Node<I> {
    pub(super) fn on_resume(&mut self, now: Instant, conn: ConnId, id: MessageId, after_seq: Seq) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let conv = c.conv.clone();
        c.cursors.insert(id.clone(), Cursor::at(after_seq, true));
        let view = self.convs.entry(conv.clone()).or_default();
        let r = view.reply_entry(&id);
        if !r.is_complete() {
            // What this node knows may be behind: read the truth.
            self.read(now, &conv, &id);
        } else {
            self.pump(now, &conv);
        }
    }

    /// Gives every open connection of `conv` what it can have now, in order
    /// — at most its share of [`fanout_slice`](crate::Config::fanout_slice)
    /// chunks per reply in this step, in one frame (a merged one when it is
    /// several chunks; see `run_frames`). If any connection has more coming, a
    /// [`TimerKey::Pump`] at `now` goes on at the next step, so handing out a
    /// large batch to many connections never holds the node for long: its
    /// timers (lease renewals, heartbeats) and inputs run between slices.
    pub(super) fn pump(&mut self, now: Instant, conv: &ConvKey) {
        let stamped = self.config.chunk_timestamps;
        let Some(view) = self.convs.get_mut(conv) else {
            return;
        };
        // A conversation without replies has nothing to hand out (every
        // connection joining an idle conversation asks for a step): the walk
        // over its connections below would make each join cost in proportion
        // to the connections already there.
        if view.replies().is_empty() {
            return;
        }
        // A blocked connection (its queue is full) is handed nothing: its
        // cursors keep their place, and the chunks it has not had stay in
        // the view, once for every connection, until it is writable again
        // (`on_writable` then asks for a step).
        let takes = |c: &Connection| c.state == ConnState::Open && !c.blocked;
        let open = view
            .conns
            .iter()
            .filter(|c| self.conns.get(c).is_some_and(takes))
            .count();
        // Each open connection's share of the step, at least one chunk; a
        // connection that gets a frame per chunk at most `numbered_step`.
        let share = Seq::try_from(self.config.fanout_slice / open.max(1))
            .unwrap_or(Seq::MAX)
            .max(1);
        let numbered_share =
            share.min(Seq::try_from(self.config.numbered_step.max(1)).unwrap_or(1));
        let mut more = false;
        // A connection is given the chunks `from..=to` of a reply at once,
        // and they go as one frame (a merged one when there are several;
        // more than one frame only past `MERGED_MAX_BYTES` of text). Runs
        // are grouped by (reply, from, to): connections that are at the same
        // point — every connection of a fan-out that keeps up — share one
        // `SendMany` with one copy of the text, so a step costs a frame per
        // connection, not a frame per chunk per connection. Each
        // connection's other frames (`cancel_result`, `end`) go after its
        // chunks.
        let mut runs: BTreeMap<(&MessageId, Seq, Seq), Vec<ConnId>> = BTreeMap::new();
        let mut tails = Vec::new();
        let mut resumed = Vec::new();
        let mut answered = Vec::new();
        for conn_id in &view.conns {
            let Some(c) = self.conns.get_mut(conn_id) else {
                continue;
            };
            if !takes(c) {
                continue;
            }
            let share = if self.dialects.get(conn_id).is_some_and(|d| d.unmerged()) {
                numbered_share
            } else {
                share
            };
            let mut ended = Vec::new();
            for (id, cursor) in c.cursors.iter_mut() {
                let Some((id, r)) = view.replies().get_key_value(id) else {
                    continue;
                };
                let deliverable = r.deliverable();
                let limit = deliverable.min(cursor.delivered.saturating_add(share));
                more |= limit < deliverable;
                if cursor.delivered < limit {
                    runs.entry((id, cursor.delivered + 1, limit))
                        .or_default()
                        .push(*conn_id);
                    cursor.delivered = limit;
                }
                if let Some(h) = cursor.held_cancel.as_ref() {
                    if cursor.delivered >= h.final_seq {
                        let h = cursor.held_cancel.take();
                        if let Some(h) = h {
                            answered.push((*conn_id, h.status, h.since));
                            tails.push((*conn_id, cancel_result(h, Some(id.clone()))));
                        }
                    }
                }
                if let Some((outcome, usage, final_seq)) = r.end() {
                    if cursor.held_cancel.is_none() && cursor.delivered >= final_seq {
                        tails.push((
                            *conn_id,
                            ServerFrame::End(End {
                                message_id: id.clone(),
                                status: outcome.status(),
                                final_seq,
                                reason: outcome.reason().map(str::to_owned),
                                usage,
                            }),
                        ));
                        if cursor.resumed {
                            resumed.push(*conn_id);
                        }
                        ended.push(id.clone());
                    }
                }
            }
            for id in ended {
                c.cursors.remove(&id);
                c.mark_ended(id);
            }
        }
        for ((id, from, to), conns) in runs {
            let Some(r) = view.reply(id) else {
                continue;
            };
            // Dialects that number every chunk (the AI SDK's) get one
            // chunk per frame.
            let (single, conns): (Vec<ConnId>, Vec<ConnId>) = conns
                .into_iter()
                .partition(|c| self.dialects.get(c).is_some_and(|d| d.unmerged()));
            for seq in (from..=to).filter(|_| !single.is_empty()) {
                for chunk in run_frames(id, r, seq, seq, stamped) {
                    self.out.push_back(Output::SendMany {
                        conns: single.clone(),
                        frame: ServerFrame::Chunk(chunk),
                    });
                }
            }
            if conns.is_empty() {
                continue;
            }
            let frames = run_frames(id, r, from, to, stamped);
            let last = frames.len().saturating_sub(1);
            let mut conns = Some(conns);
            for (i, chunk) in frames.into_iter().enumerate() {
                // The last frame takes the list; the others copy it.
                let conns = if i == last {
                    conns.take().unwrap_or_default()
                } else {
                    conns.clone().unwrap_or_default()
                };
                let frame = ServerFrame::Chunk(chunk);
                match conns.as_slice() {
                    [conn] => self.out.push_back(Output::Send { conn: *conn, frame }),
                    _ => self.out.push_back(Output::SendMany { conns, frame }),
                }
            }
        }
        let needs_read: Vec<MessageId> = view
            .replies()
            .iter()
            .filter(|(_, r)| r.needs_read())
            .map(|(id, _)| id.clone())
            .collect();
        let settled_any = view.replies().values().any(ReplyView::is_settled);
        for (conn, frame) in tails {
            self.send(conn, frame);
        }
        for (conn, status, since) in answered {
            self.out.push_back(Output::Event(Event::CancelAnswered {
                conn,
                status,
                latency: now.saturating_duration_since(since),
            }));
        }
        for conn in resumed {
            self.out
                .push_back(Output::Event(Event::Resumed { conn, exact: true }));
        }
        for id in needs_read {
            self.read(now, conv, &id);
        }
        if more {
            self.timers
                .set_earliest(TimerKey::Pump(Box::new(conv.clone())), now);
        }
        // Tidying walks every connection's cursors: only when something
        // could have become droppable. A cursor ends only on a settled reply
        // (`end` above), so `settled_any` covers the cursors that ended here.
        if settled_any {
            self.tidy_conv(conv);
        }
    }

    /// A new reply appeared in `conv`: every open connection gets its user
    /// turn and `start`, and a cursor.
    pub(super) fn announce(
        &mut self,
        now: Instant,
        conv: &ConvKey,
        id: &MessageId,
        user_message: &Message,
        sender: Option<(ConnId, Option<RequestId>)>,
    ) {
        let Some(r) = self.convs.get_mut(conv).and_then(|v| v.live_reply(id)) else {
            return;
        };
        if !r.learn_user_message(user_message) {
            return;
        }
        self.begin_on_open_conns(now, conv, id, user_message, sender, None);
    }

    /// Reply `id`'s user turn just became known here (from its `started`
    /// notice, or from a connection's snapshot that showed it live before
    /// the notice came): every open connection of `conv` that has neither
    /// begun nor finished it gets its user turn and `start`, and a cursor —
    /// but `skip` (a connection about to resume it).
    pub(super) fn begin_on_open_conns(
        &mut self,
        now: Instant,
        conv: &ConvKey,
        id: &MessageId,
        user_message: &Message,
        sender: Option<(ConnId, Option<RequestId>)>,
        skip: Option<ConnId>,
    ) {
        let conns: Vec<ConnId> = self
            .convs
            .get(conv)
            .map(|v| v.conns.iter().copied().collect())
            .unwrap_or_default();
        for conn in conns {
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            // A late `started` notice must not begin again what this
            // connection already finished (e.g. by a resume, which needs no
            // `start`).
            if c.state != ConnState::Open
                || c.cursors.contains_key(id)
                || c.ended.contains(id)
                || skip == Some(conn)
            {
                continue;
            }
            c.cursors.insert(id.clone(), Cursor::at(0, false));
            let request_id = match &sender {
                Some((s, rid)) if *s == conn => rid.clone(),
                _ => None,
            };
            self.send_reply_start(conn, id, user_message, request_id);
        }
        self.arm_watch(now, conv, id);
        self.pump(now, conv);
    }

    /// A reply begins on a connection: its user turn, then `start`.
    pub(super) fn send_reply_start(
        &mut self,
        conn: ConnId,
        id: &MessageId,
        user_message: &Message,
        request_id: Option<RequestId>,
    ) {
        self.send(
            conn,
            ServerFrame::UserMessage(UserMessage {
                message_id: user_message.message_id.clone(),
                content: user_message.content.clone(),
                created_at_ms: user_message.created_at_ms,
                request_id,
            }),
        );
        self.send(
            conn,
            ServerFrame::Start(Start {
                message_id: id.clone(),
                reply_to: user_message.message_id.clone(),
            }),
        );
    }

    /// The store has no record of a reply this node shows.
    pub(super) fn reply_missing(
        &mut self,
        now: Instant,
        conv: &ConvKey,
        id: &MessageId,
        epoch: Epoch,
        snapshot: Option<Message>,
    ) {
        let Some(view) = self.convs.get_mut(conv) else {
            return;
        };
        let r = view.remove_reply(id).unwrap_or_default();
        // Finished here: a late notice about it must not bring it back.
        view.mark_done(id.clone());
        self.timers.cancel(&watch_key(conv, id));
        let conns: Vec<ConnId> = view.conns.iter().copied().collect();
        for conn in conns {
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            let Some(cursor) = c.cursors.remove(id) else {
                continue;
            };
            let frame = if cursor.resumed && r.user_message().is_none() {
                let reason = if epoch_of(id).is_some_and(|e| e != epoch) {
                    ResumeUnavailableReason::EpochChanged
                } else if snapshot.is_some() {
                    ResumeUnavailableReason::Expired
                } else {
                    ResumeUnavailableReason::Unknown
                };
                self.out
                    .push_back(Output::Event(Event::Resumed { conn, exact: false }));
                ServerFrame::ResumeUnavailable(ResumeUnavailable {
                    message_id: id.clone(),
                    reason,
                    snapshot: snapshot.clone(),
                })
            } else {
                // It had started here: it gets its one `end`, as history
                // says it ended (history holds only settled replies), or
                // `store_lost` when history no longer has it.
                let (status, reason) = match snapshot.as_ref().map(|m| m.status) {
                    Some(MessageStatus::Completed) => (ReplyStatus::Completed, None),
                    Some(MessageStatus::Cancelled) => (ReplyStatus::Cancelled, None),
                    Some(MessageStatus::Failed) => (ReplyStatus::Failed, None),
                    Some(MessageStatus::Streaming) | None => {
                        (ReplyStatus::Failed, Some(STORE_LOST.to_owned()))
                    }
                };
                let final_seq = cursor.delivered;
                if let Some(h) = cursor.held_cancel {
                    self.send_cancel_result(now, conn, h, id.clone());
                }
                ServerFrame::End(End {
                    message_id: id.clone(),
                    status,
                    final_seq,
                    reason,
                    usage: None,
                })
            };
            self.send(conn, frame);
        }
        self.tidy_conv(conv);
    }
}

/// The most reply text one chunk frame carries when the node hands a
/// connection several chunks at once (a single longer chunk goes alone):
/// frames stay small for clients and for the writer, and a long catch-up
/// still goes in few frames.
const MERGED_MAX_BYTES: usize = 16 * 1024;

/// The chunk frames that carry chunks `from..=to` of reply `id` (all held by
/// `r`): as few as [`MERGED_MAX_BYTES`] allows, in order. A frame of one
/// chunk is a plain one; a frame of several is a merged one (`from_seq`),
/// whose delta is theirs concatenated (docs/protocol-notes.md, "Merged
/// chunks").
/// With `stamped` (chunk timestamps on this node), each frame carries its last
/// chunk's append time.
fn run_frames(id: &MessageId, r: &ReplyView, from: Seq, to: Seq, stamped: bool) -> Vec<Chunk> {
    // `pump` makes a run only for a cursor that moves.
    debug_assert!(from <= to, "a run of no chunks: {from}..={to}");
    let mut frames = Vec::new();
    let mut first = from;
    while first <= to {
        let mut delta = String::from(r.delta(first).unwrap_or_default());
        let mut last = first;
        while last < to {
            let next = r.delta(last + 1).unwrap_or_default();
            if delta.len() + next.len() > MERGED_MAX_BYTES {
                break;
            }
            delta.push_str(next);
            last += 1;
        }
        frames.push(Chunk {
            message_id: id.clone(),
            seq: last,
            delta,
            from_seq: (last > first).then_some(first),
            // A merged frame carries its last chunk's time.
            ts_ns: r.stamp(last).filter(|_| stamped),
        });
        first = last + 1;
    }
    frames
}

#[cfg(test)]
mod tests;
