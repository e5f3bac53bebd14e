//! Judges a [`World`] from the outside: what each client received, against
//! the store's truth. Each rule names the invariant of DESIGN.md it checks.
//!
//! Call [`Checker::check`] after every step (it reads only frames it has not
//! seen yet, so it is cheap), and [`Checker::check_quiescent`] when nothing
//! is in flight any more and every reply had time to settle.

use std::collections::{BTreeMap, BTreeSet};

use weir_core::ids::{ConnId, ConvKey, MessageId, NodeId, Seq};
use weir_core::node::STORE_LOST;
use weir_core::store::{epoch_of, Model};
use weir_core::stream::{Outcome, StreamState, OWNER_LOST};
use weir_core::wire::{CancelStatus, MessageStatus, ReplyStatus, Role, ServerFrame};

use crate::harness::World;

/// One connection's view of one reply, as rebuilt from its frames.
#[derive(Debug, Clone, Default)]
struct Track {
    /// The next seq the connection must get.
    next_seq: Seq,
    /// The text received, when tracked from seq 1.
    text: Option<String>,
    /// `end` or `resume_unavailable` arrived.
    ended: bool,
    /// The status of its `end`.
    end_status: Option<ReplyStatus>,
    /// A `cancel_result` for it arrived on this connection.
    cancel_answered: bool,
}

#[derive(Debug, Clone, Default)]
struct ClientTrack {
    seen: usize,
    replies: BTreeMap<MessageId, Track>,
    /// The replies of its conversation the store held when its `history`
    /// came: any other reply began after its snapshot was read, so the
    /// connection must be given it ([`Checker::check_quiescent`]).
    known_at_history: Option<BTreeSet<MessageId>>,
}

/// The replies of `conv` the store holds: live ones and those in history.
fn replies_of(w: &World, conv: &ConvKey) -> BTreeSet<MessageId> {
    let live = w
        .store
        .streams()
        .filter(|(c, ..)| *c == conv)
        .map(|(_, id, ..)| id.clone());
    let settled = w
        .store
        .history(conv)
        .into_iter()
        .filter(|m| m.role == Role::Assistant)
        .map(|m| m.message_id);
    live.chain(settled).collect()
}

/// A broken invariant: which, and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The invariant's number in DESIGN.md (0: protocol shape; 9: a live
    /// owner keeps its replies, [`check_live_owner_keeps_lease`]).
    pub invariant: u8,
    /// What was seen.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invariant {} broken: {}", self.invariant, self.detail)
    }
}

fn fail<T>(invariant: u8, detail: String) -> Result<T, Violation> {
    Err(Violation { invariant, detail })
}

/// Invariant 5 over every store the cluster writes to (normally one; a
/// simulation of a split-brained store passes both halves): at most one
/// reply per conversation is Active or Cancelling.
pub fn check_one_live_reply(stores: &[&Model]) -> Result<(), Violation> {
    let mut live: BTreeMap<&ConvKey, Vec<&MessageId>> = BTreeMap::new();
    for store in stores {
        for (conv, id, state, _, _) in store.streams() {
            if state.is_live() {
                live.entry(conv).or_default().push(id);
            }
        }
    }
    for (conv, ids) in live {
        if ids.len() > 1 {
            return fail(5, format!("{conv} has {} live replies: {ids:?}", ids.len()));
        }
    }
    Ok(())
}

/// Invariant 9, the other half of 6 (issue 17): a reply is reaped as
/// `failed(owner_lost)` only if its owner died or could not reach the store.
/// A node that lives and reaches the store keeps the lease of every reply it
/// produces, however busy it is. `kept_up(owner)` says whether that owner
/// lived and reached the store all along (the caller knows its faults).
pub fn check_live_owner_keeps_lease(
    store: &Model,
    kept_up: impl Fn(&NodeId) -> bool,
) -> Result<(), Violation> {
    for (conv, id, state, owner, last) in store.streams() {
        if let StreamState::Settled {
            outcome: Outcome::Failed(reason),
            ..
        } = state
        {
            if reason == OWNER_LOST && kept_up(owner) {
                return fail(
                    9,
                    format!(
                        "{conv} {id} ended failed(owner_lost) at seq {last}, \
                         but its owner {owner} is alive and reaches the store"
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Whether an `end` reports a reply that the store lost in a restart (its
/// id is of an older epoch and the reason says so). Such an `end` is the
/// honest answer to lost data and is not compared with outcomes decided
/// before the loss.
fn lost_in_restart(w: &World, e: &weir_core::wire::End) -> bool {
    e.reason.as_deref() == Some(STORE_LOST) && of_older_epoch(w, &e.message_id)
}

/// Whether a reply was made before the store's last restart.
fn of_older_epoch(w: &World, id: &MessageId) -> bool {
    epoch_of(id).is_some_and(|e| e < w.store.epoch())
}

/// The checker's memory across steps.
#[derive(Debug, Clone, Default)]
pub struct Checker {
    clients: BTreeMap<ConnId, ClientTrack>,
    /// The first outcome seen for each reply: it must never change.
    outcomes: BTreeMap<MessageId, Outcome>,
    /// Cancel answers given, per reply.
    cancel_answers: BTreeMap<MessageId, Vec<CancelStatus>>,
    /// `end` statuses given, per reply.
    end_statuses: BTreeMap<MessageId, Vec<ReplyStatus>>,
    /// `final_seq` fixed by the store, per reply.
    final_seqs: BTreeMap<MessageId, Seq>,
    /// Highest chunk seq delivered anywhere, per reply.
    max_delivered: BTreeMap<MessageId, Seq>,
    /// Completed texts per reply (from connections that saw it from seq 1).
    texts: BTreeMap<MessageId, Vec<String>>,
}

impl Checker {
    /// A checker that has seen nothing.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks everything that must hold after every step.
    pub fn check(&mut self, w: &World) -> Result<(), Violation> {
        self.check_store(w)?;
        let conns: Vec<ConnId> = w.clients.keys().copied().collect();
        for conn in conns {
            self.check_client(w, conn)?;
        }
        self.check_answers()
    }

    fn check_store(&mut self, w: &World) -> Result<(), Violation> {
        check_one_live_reply(&[&w.store])?;
        for (_, id, state, _, last) in w.store.streams() {
            if let Some(f) = state.final_seq() {
                if f > last {
                    return fail(3, format!("{id}: final_seq {f} beyond the log's {last}"));
                }
                if let Some(prev) = self.final_seqs.insert(id.clone(), f) {
                    if prev != f {
                        return fail(3, format!("{id}: final_seq moved from {prev} to {f}"));
                    }
                }
            }
            if let StreamState::Settled { outcome, .. } = state {
                self.record_outcome(id, outcome)?;
            }
        }
        // History keeps outcomes after records expire.
        let convs: Vec<_> = w.clients.values().map(|c| c.conv.clone()).collect();
        for conv in convs {
            for m in w.store.history(&conv) {
                if m.role != Role::Assistant {
                    continue;
                }
                let outcome = match m.status {
                    MessageStatus::Completed => Outcome::Completed,
                    MessageStatus::Cancelled => Outcome::Cancelled,
                    MessageStatus::Failed => {
                        // The reason is not in history; compare status only.
                        match self.outcomes.get(&m.message_id) {
                            Some(o @ Outcome::Failed(_)) => o.clone(),
                            Some(o) => {
                                return fail(
                                    1,
                                    format!("{}: history says failed, earlier {o:?}", m.message_id),
                                )
                            }
                            None => Outcome::Failed(String::new()),
                        }
                    }
                    MessageStatus::Streaming => {
                        return fail(
                            1,
                            format!("{}: history holds a streaming reply", m.message_id),
                        )
                    }
                };
                self.record_outcome(&m.message_id, &outcome)?;
                if let Some(f) = self.final_seqs.get(&m.message_id) {
                    if *f != m.seq {
                        return fail(
                            8,
                            format!("{}: history seq {} != final_seq {f}", m.message_id, m.seq),
                        );
                    }
                }
                if let Some(texts) = self.texts.get(&m.message_id) {
                    for t in texts {
                        if *t != m.content {
                            return fail(
                                8,
                                format!(
                                    "{}: a client assembled {t:?}, history holds {:?}",
                                    m.message_id, m.content
                                ),
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn record_outcome(&mut self, id: &MessageId, outcome: &Outcome) -> Result<(), Violation> {
        match self.outcomes.get(id) {
            Some(prev) if std::mem::discriminant(prev) != std::mem::discriminant(outcome) => fail(
                1,
                format!("{id}: outcome changed from {prev:?} to {outcome:?}"),
            ),
            Some(Outcome::Failed(r)) if r.is_empty() => {
                self.outcomes.insert(id.clone(), outcome.clone());
                Ok(())
            }
            Some(_) => Ok(()),
            None => {
                self.outcomes.insert(id.clone(), outcome.clone());
                Ok(())
            }
        }
    }

    fn check_client(&mut self, w: &World, conn: ConnId) -> Result<(), Violation> {
        let Some(client) = w.clients.get(&conn) else {
            return Ok(());
        };
        let t = self.clients.entry(conn).or_default();
        if t.seen == 0 {
            if let Some((id, seq)) = &client.resume {
                t.replies.insert(
                    id.clone(),
                    Track {
                        next_seq: seq + 1,
                        text: (*seq == 0).then(String::new),
                        ..Track::default()
                    },
                );
            }
        }
        let frames = &client.frames[t.seen..];
        let first = t.seen;
        t.seen = client.frames.len();
        for (k, frame) in frames.iter().enumerate() {
            let pos = first + k;
            let at = |what: String| format!("{conn} frame {pos}: {what}");
            match (pos, frame) {
                (0, ServerFrame::Hello(_)) | (1, ServerFrame::History(_)) => {}
                (0, ServerFrame::Error(_)) => {}
                (0 | 1, f) if !matches!(f, ServerFrame::Error(_)) => {
                    return fail(
                        0,
                        at(format!("hello/history must come first, got {}", f.kind())),
                    );
                }
                _ => {}
            }
            if matches!(frame, ServerFrame::History(_)) && t.known_at_history.is_none() {
                t.known_at_history = Some(replies_of(w, &client.conv));
            }
            match frame {
                ServerFrame::History(h) => {
                    for m in &h.messages {
                        if m.status == MessageStatus::Streaming {
                            t.replies.insert(
                                m.message_id.clone(),
                                Track {
                                    next_seq: m.seq + 1,
                                    text: Some(m.content.clone()),
                                    ..Track::default()
                                },
                            );
                        }
                        if client
                            .resume
                            .as_ref()
                            .is_some_and(|(r, _)| *r == m.message_id)
                        {
                            return fail(0, at(format!("resumed {} is in history", m.message_id)));
                        }
                    }
                }
                ServerFrame::Start(s) => {
                    if t.replies.contains_key(&s.message_id) {
                        return fail(4, at(format!("second start of {}", s.message_id)));
                    }
                    t.replies.insert(
                        s.message_id.clone(),
                        Track {
                            next_seq: 1,
                            text: Some(String::new()),
                            ..Track::default()
                        },
                    );
                }
                ServerFrame::Chunk(c) => {
                    let Some(r) = t.replies.get_mut(&c.message_id) else {
                        return fail(4, at(format!("chunk of {} without start", c.message_id)));
                    };
                    if r.ended {
                        return fail(
                            3,
                            at(format!("chunk {} of {} after its end", c.seq, c.message_id)),
                        );
                    }
                    if r.cancel_answered {
                        return fail(
                            3,
                            at(format!(
                                "chunk {} of {} after cancel_result",
                                c.seq, c.message_id
                            )),
                        );
                    }
                    let from = c.first_seq();
                    if from != r.next_seq || c.seq < from {
                        return fail(
                            4,
                            at(format!(
                                "chunk {}..={} of {}, expected {}",
                                from, c.seq, c.message_id, r.next_seq
                            )),
                        );
                    }
                    r.next_seq = c.seq + 1;
                    if let Some(text) = r.text.as_mut() {
                        text.push_str(&c.delta);
                    }
                    let max = self.max_delivered.entry(c.message_id.clone()).or_default();
                    *max = (*max).max(c.seq);
                }
                ServerFrame::End(e) => {
                    let Some(r) = t.replies.get_mut(&e.message_id) else {
                        return fail(4, at(format!("end of {} without start", e.message_id)));
                    };
                    if r.ended {
                        return fail(1, at(format!("second end of {}", e.message_id)));
                    }
                    if e.final_seq + 1 != r.next_seq {
                        return fail(
                            4,
                            at(format!(
                                "end of {} with final_seq {} after chunk {}",
                                e.message_id,
                                e.final_seq,
                                r.next_seq - 1
                            )),
                        );
                    }
                    r.ended = true;
                    r.end_status = Some(e.status);
                    if lost_in_restart(w, e) {
                        continue;
                    }
                    self.end_statuses
                        .entry(e.message_id.clone())
                        .or_default()
                        .push(e.status);
                    if let Some(text) = r.text.clone() {
                        self.texts
                            .entry(e.message_id.clone())
                            .or_default()
                            .push(text);
                    }
                }
                ServerFrame::CancelResult(cr) => {
                    if let Some(id) = &cr.message_id {
                        self.cancel_answers
                            .entry(id.clone())
                            .or_default()
                            .push(cr.status);
                        if cr.final_seq.is_none() {
                            return fail(
                                0,
                                at(format!("cancel_result for {id} without final_seq")),
                            );
                        }
                        if let Some(r) = t.replies.get_mut(id) {
                            if r.ended {
                                // An answer after `end` is about nothing
                                // that could still arrive: allowed.
                            } else if let Some(f) = cr.final_seq {
                                // Unless the store lost the reply in a restart
                                // (chunks up to `final_seq` are gone; its `end`
                                // says `store_lost`).
                                if r.next_seq != f + 1
                                    && cr.status == CancelStatus::Cancelled
                                    && !of_older_epoch(w, id)
                                {
                                    return fail(
                                        3,
                                        at(format!(
                                            "cancel_result for {id} at final_seq {f} but chunk {} delivered",
                                            r.next_seq - 1
                                        )),
                                    );
                                }
                            }
                            r.cancel_answered = true;
                        }
                    } else if cr.status != CancelStatus::NotFound {
                        return fail(
                            0,
                            at("cancel_result without message_id must be not_found".into()),
                        );
                    }
                }
                ServerFrame::ResumeUnavailable(ru) => {
                    if let Some(r) = t.replies.get_mut(&ru.message_id) {
                        if r.ended {
                            return fail(
                                4,
                                at(format!("resume_unavailable after end of {}", ru.message_id)),
                            );
                        }
                        r.ended = true;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn check_answers(&self) -> Result<(), Violation> {
        for (id, max) in &self.max_delivered {
            if let Some(f) = self.final_seqs.get(id) {
                if max > f {
                    return fail(
                        3,
                        format!("{id}: chunk {max} delivered beyond final_seq {f}"),
                    );
                }
            }
        }
        for (id, answers) in &self.cancel_answers {
            let Some(outcome) = self.outcomes.get(id) else {
                continue;
            };
            for a in answers {
                let ok = matches!(
                    (a, outcome),
                    (CancelStatus::Cancelled, Outcome::Cancelled)
                        | (CancelStatus::Completed, Outcome::Completed)
                        | (CancelStatus::Failed, Outcome::Failed(_))
                );
                if !ok {
                    return fail(
                        2,
                        format!("{id}: cancel answered {a:?}, outcome {outcome:?}"),
                    );
                }
            }
        }
        for (id, statuses) in &self.end_statuses {
            for s in statuses {
                if statuses.first() != Some(s) {
                    return fail(
                        1,
                        format!("{id}: connections saw different ends {statuses:?}"),
                    );
                }
                if let Some(outcome) = self.outcomes.get(id) {
                    if outcome.status() != *s {
                        return fail(1, format!("{id}: end says {s:?}, outcome {outcome:?}"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks what must hold once nothing is in flight and every reply had
    /// time to settle: every open connection that saw a reply begin has its
    /// one `end` (invariants 1 and 6), and every open connection was given
    /// every reply of its conversation that began after its snapshot (one
    /// the store did not hold when its `history` came): a lost or late
    /// notice costs latency, not a reply.
    pub fn check_quiescent(&mut self, w: &World) -> Result<(), Violation> {
        self.check(w)?;
        for (conn, t) in &self.clients {
            let Some(c) = w.clients.get(conn) else {
                continue;
            };
            if c.gone || c.closed.is_some() {
                continue;
            }
            if let Some(known) = &t.known_at_history {
                for id in replies_of(w, &c.conv).difference(known) {
                    if !t.replies.contains_key(id) {
                        return fail(
                            1,
                            format!(
                                "{conn}: reply {id} began after its history and never reached it"
                            ),
                        );
                    }
                }
            }
            for (id, r) in &t.replies {
                if !r.ended {
                    return fail(
                        6,
                        format!("{conn}: reply {id} never ended (next seq {})", r.next_seq),
                    );
                }
            }
        }
        for (_, id, state, _, _) in w.store.streams() {
            if state.is_live() {
                return fail(6, format!("{id} still live at quiescence: {state:?}"));
            }
        }
        Ok(())
    }

    /// The outcome recorded for a reply.
    #[must_use]
    pub fn outcome(&self, id: &MessageId) -> Option<&Outcome> {
        self.outcomes.get(id)
    }
}
