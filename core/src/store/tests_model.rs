//! The reference model, operation by operation (DESIGN.md's store table).

use super::*;
use crate::ids::{ClientMessageId, ConvKey, NodeId, SessionId, UserId};
use crate::stream::{Outcome, SettleRequest, StreamState, StreamTimers, OWNER_LOST};
use crate::wire::{MessageStatus, PresenceStatus};

fn conv(u: &str) -> ConvKey {
    ConvKey::new(
        UserId::parse(u).unwrap_or_else(|e| panic!("{e}")),
        SessionId::parse("s").unwrap_or_else(|e| panic!("{e}")),
    )
}

fn node(n: &str) -> NodeId {
    NodeId::parse(n).unwrap_or_else(|e| panic!("{e}"))
}

fn model() -> Model {
    Model::new(
        StoreConfig {
            timers: StreamTimers {
                lease_ttl_ms: 100,
                cancel_deadline_ms: 50,
                grace_ms: 1000,
            },
            history_limit: 4,
            ..StoreConfig::default()
        },
        7,
    )
}

fn start(m: &mut Model, c: &ConvKey, nonce: u64, at_ms: u64, key: Option<&str>) -> StoreReply {
    m.apply(StoreOp::Start(StartOp {
        conv: c.clone(),
        content: "q".into(),
        client_message_id: key.map(|k| ClientMessageId::parse(k).unwrap_or_else(|e| panic!("{e}"))),
        nonce,
        owner: node("a"),
        context_limit: 10,
        at_ms,
    }))
    .0
}

fn started(r: StoreReply) -> (MessageId, Token) {
    match r {
        StoreReply::Started {
            message_id, token, ..
        } => (message_id, token),
        r => panic!("{r:?}"),
    }
}

fn append(
    m: &mut Model,
    c: &ConvKey,
    id: &MessageId,
    token: Token,
    first: Seq,
    d: &[&str],
    at: u64,
) -> (StoreReply, Vec<Published>) {
    m.apply(StoreOp::Append(AppendOp {
        conv: c.clone(),
        message_id: id.clone(),
        token,
        first_seq: first,
        deltas: d.iter().map(|s| (*s).to_owned()).collect(),
        at_ms: at,
        at_ns: None,
    }))
}

fn cancel(m: &mut Model, c: &ConvKey, id: Option<&MessageId>, at: u64) -> StoreReply {
    m.apply(StoreOp::Cancel(CancelOp {
        conv: c.clone(),
        message_id: id.cloned(),
        at_ms: at,
    }))
    .0
}

fn settle(
    m: &mut Model,
    c: &ConvKey,
    id: &MessageId,
    token: Token,
    req: SettleRequest,
    at: u64,
) -> StoreReply {
    m.apply(StoreOp::Settle(SettleOp {
        conv: c.clone(),
        message_id: id.clone(),
        token,
        request: req,
        usage: None,
        at_ms: at,
    }))
    .0
}

#[test]
fn start_refuses_a_second_live_reply_and_takes_over_an_expired_one() {
    let mut m = model();
    let c = conv("u");
    let (first, _) = started(start(&mut m, &c, 1, 0, None));
    assert_eq!(
        start(&mut m, &c, 2, 50, None),
        StoreReply::Busy {
            message_id: first.clone()
        }
    );
    // The owner stopped renewing: the next start reaps it first.
    let (second, _) = started(start(&mut m, &c, 3, 150, None));
    assert_ne!(first, second);
    let (state, _) = m
        .stream(&c, &first)
        .unwrap_or_else(|| panic!("kept in grace"));
    assert!(
        matches!(state, StreamState::Settled { outcome: Outcome::Failed(r), .. } if r == OWNER_LOST)
    );
}

#[test]
fn start_is_idempotent_per_client_message_id() {
    let mut m = model();
    let c = conv("u");
    let (id, _) = started(start(&mut m, &c, 1, 0, Some("k")));
    match start(&mut m, &c, 2, 10, Some("k")) {
        StoreReply::Duplicate { message_id, .. } => assert_eq!(message_id, id),
        r => panic!("{r:?}"),
    }
    assert_eq!(m.history(&c).len(), 1, "one user turn");
}

#[test]
fn append_stores_explicit_seqs_so_a_retry_cannot_duplicate() {
    let mut m = model();
    let c = conv("u");
    let (id, t) = started(start(&mut m, &c, 1, 0, None));
    assert_eq!(
        append(&mut m, &c, &id, t, 1, &["a", "b"], 1).0,
        StoreReply::Ok { last_seq: 2 }
    );
    // The same batch again (a retry after a timeout), then one overlapping.
    let (r, notices) = append(&mut m, &c, &id, t, 1, &["a", "b"], 2);
    assert_eq!(r, StoreReply::Ok { last_seq: 2 });
    assert!(notices.is_empty(), "nothing new, nothing published");
    let (r, notices) = append(&mut m, &c, &id, t, 2, &["b", "c"], 3);
    assert_eq!(r, StoreReply::Ok { last_seq: 3 });
    assert!(
        matches!(&notices[..], [Published { notice: Notice::Chunks { first_seq: 3, deltas, .. }, .. }] if deltas == &["c"])
    );
    assert_eq!(
        append(&mut m, &c, &id, t, 5, &["e"], 4).0,
        StoreReply::Gap { last_seq: 3 }
    );
    assert_eq!(
        m.stream(&c, &id).map(|(_, d)| d.concat()),
        Some("abc".into())
    );
}

#[test]
fn append_with_a_stale_token_is_fenced() {
    let mut m = model();
    let c = conv("u");
    let (id, t) = started(start(&mut m, &c, 1, 0, None));
    assert_eq!(
        append(&mut m, &c, &id, t + 1, 1, &["x"], 1).0,
        StoreReply::Fenced
    );
    // Reaped after its lease: the producer can never append again.
    assert!(matches!(
        m.apply(StoreOp::Reap(ReapOp {
            conv: c.clone(),
            message_id: id.clone(),
            at_ms: 100
        }))
        .0,
        StoreReply::Settled { changed: true, .. }
    ));
    assert_eq!(
        append(&mut m, &c, &id, t, 1, &["x"], 101).0,
        StoreReply::Fenced
    );
    assert_eq!(
        m.apply(StoreOp::Renew(RenewOp {
            conv: c.clone(),
            message_id: id.clone(),
            token: t,
            at_ms: 102
        }))
        .0,
        StoreReply::Fenced
    );
}

#[test]
fn cancel_fixes_final_seq_notifies_the_owner_and_refuses_later_chunks() {
    let mut m = model();
    let c = conv("u");
    let (id, t) = started(start(&mut m, &c, 1, 0, None));
    let _ = append(&mut m, &c, &id, t, 1, &["a", "b"], 1);
    let (r, notices) = m.apply(StoreOp::Cancel(CancelOp {
        conv: c.clone(),
        message_id: Some(id.clone()),
        at_ms: 2,
    }));
    assert_eq!(
        r,
        StoreReply::Cancel {
            message_id: Some(id.clone()),
            answer: Some(CancelAnswer::Cancelled),
            final_seq: Some(2)
        }
    );
    assert!(notices.iter().any(|p| p.topic == Topic::Node(node("a"))
        && matches!(p.notice, Notice::CancelRequested { final_seq: 2, .. })));
    assert_eq!(
        append(&mut m, &c, &id, t, 3, &["c"], 3).0,
        StoreReply::CancelRequested { final_seq: 2 }
    );
    // Idempotent, and the producer's completion loses to the cancel.
    assert_eq!(
        cancel(&mut m, &c, Some(&id), 4),
        StoreReply::Cancel {
            message_id: Some(id.clone()),
            answer: Some(CancelAnswer::Cancelled),
            final_seq: Some(2)
        }
    );
    assert_eq!(
        settle(&mut m, &c, &id, t, SettleRequest::Completed, 5),
        StoreReply::Settled {
            outcome: Outcome::Cancelled,
            final_seq: 2,
            changed: true
        }
    );
    let h = m.history(&c);
    assert_eq!(
        (h[1].content.as_str(), h[1].status, h[1].seq),
        ("ab", MessageStatus::Cancelled, 2)
    );
}

#[test]
fn cancel_answers_per_the_table() {
    let mut m = model();
    let c = conv("u");
    let (id, t) = started(start(&mut m, &c, 1, 0, None));
    let _ = append(&mut m, &c, &id, t, 1, &["a"], 1);
    let _ = settle(&mut m, &c, &id, t, SettleRequest::Completed, 2);
    assert!(matches!(
        cancel(&mut m, &c, Some(&id), 3),
        StoreReply::Cancel {
            answer: Some(CancelAnswer::Completed),
            final_seq: Some(1),
            ..
        }
    ));
    // Without id: the latest reply.
    assert!(matches!(
        cancel(&mut m, &c, None, 3),
        StoreReply::Cancel {
            answer: Some(CancelAnswer::Completed),
            ..
        }
    ));
    let (id2, t2) = started(start(&mut m, &c, 2, 10, None));
    let _ = settle(
        &mut m,
        &c,
        &id2,
        t2,
        SettleRequest::Failed("boom".into()),
        11,
    );
    assert!(matches!(
        cancel(&mut m, &c, Some(&id2), 12),
        StoreReply::Cancel {
            answer: Some(CancelAnswer::Failed),
            ..
        }
    ));
    // Another user's conversation, an unknown id, an expired record.
    assert_eq!(
        cancel(&mut m, &conv("eve"), Some(&id2), 13),
        StoreReply::Cancel {
            message_id: None,
            answer: None,
            final_seq: None
        }
    );
    assert_eq!(
        cancel(
            &mut m,
            &c,
            Some(&MessageId::parse("nope").unwrap_or_else(|e| panic!("{e}"))),
            13
        ),
        StoreReply::Cancel {
            message_id: None,
            answer: None,
            final_seq: None
        }
    );
    assert_eq!(
        cancel(&mut m, &c, Some(&id), 1002),
        StoreReply::Cancel {
            message_id: None,
            answer: None,
            final_seq: None
        }
    );
}

#[test]
fn reap_waits_for_the_lease_and_keeps_a_cancel_cancelled() {
    let mut m = model();
    let c = conv("u");
    let (id, t) = started(start(&mut m, &c, 1, 0, None));
    let reap = |m: &mut Model, at| {
        m.apply(StoreOp::Reap(ReapOp {
            conv: c.clone(),
            message_id: id.clone(),
            at_ms: at,
        }))
        .0
    };
    assert_eq!(reap(&mut m, 50), StoreReply::NotDue { due_ms: 100 });
    assert_eq!(
        m.apply(StoreOp::Renew(RenewOp {
            conv: c.clone(),
            message_id: id.clone(),
            token: t,
            at_ms: 60
        }))
        .0,
        StoreReply::Ok { last_seq: 0 }
    );
    assert_eq!(reap(&mut m, 120), StoreReply::NotDue { due_ms: 160 });
    let _ = cancel(&mut m, &c, Some(&id), 130);
    // The cancel deadline (50 ms) passes before the lease does.
    assert_eq!(
        reap(&mut m, 180),
        StoreReply::Settled {
            outcome: Outcome::Cancelled,
            final_seq: 0,
            changed: true
        }
    );
    assert_eq!(
        reap(&mut m, 181),
        StoreReply::Settled {
            outcome: Outcome::Cancelled,
            final_seq: 0,
            changed: false
        }
    );
}

#[test]
fn read_returns_chunks_after_a_seq_and_never_beyond_final_seq() {
    let mut m = model();
    let c = conv("u");
    let (id, t) = started(start(&mut m, &c, 1, 0, None));
    let _ = append(&mut m, &c, &id, t, 1, &["a", "b", "c"], 1);
    let read = |m: &mut Model, after, at| {
        m.apply(StoreOp::Read(ReadOp {
            conv: c.clone(),
            message_id: id.clone(),
            after_seq: after,
            at_ms: at,
        }))
        .0
    };
    assert!(
        matches!(read(&mut m, 1, 2), StoreReply::Read { deltas, first_seq: 2, epoch: 7, .. } if deltas == ["b", "c"])
    );
    let _ = settle(&mut m, &c, &id, t, SettleRequest::Completed, 3);
    assert!(
        matches!(read(&mut m, 3, 4), StoreReply::Read { deltas, state: StreamState::Settled { .. }, .. } if deltas.is_empty())
    );
    // After the grace window: gone, but history still has the text.
    assert!(
        matches!(read(&mut m, 0, 1003), StoreReply::Missing { epoch: 7, snapshot: Some(msg) } if msg.content == "abc")
    );
}

#[test]
fn restart_loses_everything_and_changes_the_epoch() {
    let mut m = model();
    let c = conv("u");
    let (id, t) = started(start(&mut m, &c, 1, 0, None));
    assert_eq!(epoch_of(&id), Some(7));
    m.restart(8);
    assert_eq!(
        append(&mut m, &c, &id, t, 1, &["a"], 1).0,
        StoreReply::Missing {
            epoch: 8,
            snapshot: None
        }
    );
    let (id2, _) = started(start(&mut m, &c, 1, 2, None));
    assert_eq!(epoch_of(&id2), Some(8));
}

#[test]
fn history_is_capped_and_snapshot_shows_the_live_reply() {
    let mut m = model();
    let c = conv("u");
    for n in 0..3 {
        let (id, t) = started(start(&mut m, &c, n, n * 10, None));
        let _ = settle(&mut m, &c, &id, t, SettleRequest::Completed, n * 10 + 1);
    }
    assert_eq!(m.history(&c).len(), 4, "capped at history_limit");
    let (id, t) = started(start(&mut m, &c, 9, 100, None));
    let _ = append(&mut m, &c, &id, t, 1, &["x"], 101);
    match m
        .apply(StoreOp::Snapshot(SnapshotOp {
            conv: c.clone(),
            limit: 2,
            at_ms: 102,
        }))
        .0
    {
        StoreReply::Snapshot {
            history,
            live: Some(live),
            ..
        } => {
            assert_eq!(history.len(), 2);
            assert_eq!(live.message_id, id);
            assert_eq!(live.deltas, ["x"]);
        }
        r => panic!("{r:?}"),
    }
}

#[test]
fn sweep_reaps_unwatched_replies_and_drops_expired_records() {
    let mut m = model();
    let c = conv("u");
    let (id, _) = started(start(&mut m, &c, 1, 0, None));
    let (r, notices) = m.apply(StoreOp::Sweep(SweepOp { at_ms: 100 }));
    assert_eq!(
        r,
        StoreReply::Swept {
            reaped: vec![(c.clone(), id.clone(), Outcome::Failed(OWNER_LOST.into()))]
        }
    );
    assert!(notices
        .iter()
        .any(|p| matches!(p.notice, Notice::Settled { .. })));
    let _ = m.apply(StoreOp::Sweep(SweepOp { at_ms: 1100 }));
    assert!(m.stream(&c, &id).is_none());
    assert_eq!(m.expiring_records(), 0, "only history is left");
    assert_eq!(m.history(&c).len(), 2);
}

#[test]
fn presence_ops_debounce_and_expire() {
    let mut m = model();
    let u = UserId::parse("u").unwrap_or_else(|e| panic!("{e}"));
    let join = |m: &mut Model, conn, at| {
        m.apply(StoreOp::PresenceJoin(PresenceJoinOp {
            user: u.clone(),
            node: node("a"),
            conn: crate::ids::ConnId(conn),
            at_ms: at,
        }))
    };
    let (_, n) = join(&mut m, 1, 0);
    assert!(matches!(
        &n[..],
        [Published {
            notice: Notice::Presence {
                status: PresenceStatus::Online,
                ..
            },
            ..
        }]
    ));
    let (r, n) = m.apply(StoreOp::PresenceLeave(PresenceLeaveOp {
        user: u.clone(),
        node: node("a"),
        conn: crate::ids::ConnId(1),
        at_ms: 10,
    }));
    assert!(n.is_empty());
    assert!(matches!(
        r,
        StoreReply::Presence {
            status: PresenceStatus::Online,
            connections: 0,
            due_ms: Some(5010)
        }
    ));
    let (_, n) = join(&mut m, 2, 20);
    assert!(n.is_empty(), "no flap");
    // Node a dies: its entry expires without a refresh.
    let (_, n) = m.apply(StoreOp::PresenceCheck(PresenceCheckOp {
        user: u.clone(),
        at_ms: 30_020,
    }));
    assert!(matches!(
        &n[..],
        [Published {
            notice: Notice::Presence {
                status: PresenceStatus::Offline,
                ..
            },
            ..
        }]
    ));
    assert_eq!(m.expiring_records(), 0);
}

#[test]
fn expiring_records_counts_replies_idempotency_keys_and_presence() {
    let mut m = model();
    let c = conv("u");
    let (first, t) = started(start(&mut m, &c, 1, 0, Some("k")));
    let _ = settle(&mut m, &c, &first, t, SettleRequest::Completed, 1);
    let _ = started(start(&mut m, &c, 2, 2, None));
    assert_eq!(m.expiring_records(), 3, "two reply records, one key");
    let _ = m.apply(StoreOp::PresenceJoin(PresenceJoinOp {
        user: UserId::parse("u").unwrap_or_else(|e| panic!("{e}")),
        node: node("a"),
        conn: crate::ids::ConnId(1),
        at_ms: 3,
    }));
    assert_eq!(m.expiring_records(), 4, "and one presence record");
}

#[test]
fn streams_lists_every_record_with_its_owner_and_chunk_count() {
    let mut m = model();
    let (a, b) = (conv("u"), conv("v"));
    let (ia, ta) = started(start(&mut m, &a, 1, 0, None));
    let _ = append(&mut m, &a, &ia, ta, 1, &["x", "y"], 1);
    let (ib, _) = started(start(&mut m, &b, 2, 2, None));
    let mut listed: Vec<_> = m
        .streams()
        .map(|(c, id, state, owner, last)| {
            (c.clone(), id.clone(), state.is_live(), owner.clone(), last)
        })
        .collect();
    listed.sort();
    let mut want = vec![(a, ia, true, node("a"), 2), (b, ib, true, node("a"), 0)];
    want.sort();
    assert_eq!(listed, want);
}

#[test]
fn operations_on_an_unknown_conversation_leave_no_record() {
    let mut m = model();
    let c = conv("u");
    let (_, id) = message_ids(7, 1);
    let (r, _) = m.apply(StoreOp::Snapshot(SnapshotOp {
        conv: c.clone(),
        limit: 10,
        at_ms: 0,
    }));
    assert!(matches!(r, StoreReply::Snapshot { live: None, .. }));
    let _ = cancel(&mut m, &c, None, 1);
    let (r, _) = m.apply(StoreOp::Read(ReadOp {
        conv: c.clone(),
        message_id: id,
        after_seq: 0,
        at_ms: 2,
    }));
    assert!(matches!(r, StoreReply::Missing { snapshot: None, .. }));
    assert_eq!(m, model(), "no empty conversation record is kept");
}

#[test]
fn an_idempotency_key_is_forgotten_exactly_when_its_window_ends() {
    let mut m = Model::new(
        StoreConfig {
            idempotency_ttl_ms: 500,
            ..*model().config()
        },
        7,
    );
    let c = conv("u");
    let (first, t) = started(start(&mut m, &c, 1, 0, Some("k")));
    let _ = settle(&mut m, &c, &first, t, SettleRequest::Completed, 1);
    assert!(matches!(
        start(&mut m, &c, 2, 499, Some("k")),
        StoreReply::Duplicate { message_id, .. } if message_id == first
    ));
    let (second, _) = started(start(&mut m, &c, 3, 500, Some("k")));
    assert_ne!(second, first);
}

#[test]
fn config_and_epoch_are_the_ones_given() {
    let config = StoreConfig {
        history_limit: 3,
        idempotency_ttl_ms: 9,
        ..StoreConfig::default()
    };
    let m = Model::new(config, 5);
    assert_eq!(*m.config(), config);
    assert_eq!(m.epoch(), 5);
}

#[test]
fn a_registered_reply_is_located_from_its_session_and_id_until_its_entry_expires() {
    let mut m = model();
    let ttl = m.config().idempotency_ttl_ms;
    let c = conv("alice");
    let r = m
        .apply(StoreOp::Register(RegisterOp {
            conv: c.clone(),
            nonce: 9,
            at_ms: 0,
        }))
        .0;
    assert_eq!(r, StoreReply::Refreshed);
    let (id, _) = started(start(&mut m, &c, 9, 1, None));
    let locate = |m: &mut Model, session: &str, id: &MessageId, at_ms: u64| {
        m.apply(StoreOp::Locate(LocateOp {
            session: SessionId::parse(session).unwrap_or_else(|e| panic!("{e}")),
            message_id: id.clone(),
            at_ms,
        }))
        .0
    };
    let alice = Some(c.user.clone());
    assert_eq!(
        locate(&mut m, "s", &id, 5),
        StoreReply::Located { user: alice }
    );
    // Another session, the user turn's id, an unregistered reply: nothing.
    assert_eq!(
        locate(&mut m, "t", &id, 5),
        StoreReply::Located { user: None }
    );
    let (user_turn, other) = message_ids(7, 10);
    assert_eq!(
        locate(&mut m, "s", &user_turn, 5),
        StoreReply::Located { user: None }
    );
    assert_eq!(
        locate(&mut m, "s", &other, 5),
        StoreReply::Located { user: None }
    );
    assert_eq!(
        m.expiring_records(),
        2,
        "the reply's record and its locator"
    );
    assert_eq!(
        locate(&mut m, "s", &id, ttl),
        StoreReply::Located { user: None }
    );
    // The reply, reaped by the first sweep, and its locator are gone by the second.
    for at_ms in [ttl, ttl + 10_000] {
        let _ = m.apply(StoreOp::Sweep(SweepOp { at_ms }));
    }
    assert_eq!(m.expiring_records(), 0);
}

fn delete(m: &mut Model, c: &ConvKey, at_ms: u64) -> StoreReply {
    m.apply(StoreOp::Delete(DeleteOp {
        conv: c.clone(),
        at_ms,
    }))
    .0
}

#[test]
fn delete_is_refused_while_a_reply_is_live_then_clears_history_and_settled_records() {
    let mut m = model();
    let c = conv("u");
    let (id, token) = started(start(&mut m, &c, 1, 0, None));
    assert_eq!(
        delete(&mut m, &c, 10),
        StoreReply::Busy {
            message_id: id.clone()
        }
    );
    let _ = append(&mut m, &c, &id, token, 1, &["hi"], 20);
    let _ = settle(&mut m, &c, &id, token, SettleRequest::Completed, 30);
    assert_eq!(m.history(&c).len(), 2);
    assert_eq!(delete(&mut m, &c, 40), StoreReply::Deleted { count: 2 });
    assert!(m.history(&c).is_empty());
    assert!(m.stream(&c, &id).is_none(), "the settled record goes too");
    assert_eq!(
        cancel(&mut m, &c, None, 50),
        StoreReply::Cancel {
            message_id: None,
            answer: None,
            final_seq: None
        },
        "nothing left to cancel"
    );
    // The conversation starts afresh; its fencing tokens start again.
    let (_, token) = started(start(&mut m, &c, 2, 60, None));
    assert_eq!(token, 1);
    assert_eq!(
        delete(&mut m, &conv("nobody"), 70),
        StoreReply::Deleted { count: 0 }
    );
}

#[test]
fn delete_reaps_a_live_reply_whose_owner_is_gone_and_clears_it_too() {
    let mut m = model();
    let c = conv("u");
    let (id, _) = started(start(&mut m, &c, 1, 0, None));
    // The lease (100 ms) ran out without a renew.
    let (reply, published) = m.apply(StoreOp::Delete(DeleteOp {
        conv: c.clone(),
        at_ms: 150,
    }));
    assert_eq!(reply, StoreReply::Deleted { count: 2 });
    assert!(matches!(
        published.as_slice(),
        [Published { notice: Notice::Settled { message_id, .. }, .. }] if *message_id == id
    ));
    assert!(m.history(&c).is_empty());
}

#[test]
fn chunk_stamps_are_kept_per_chunk_and_read_and_snapshotted_with_them() {
    let mut m = model();
    let c = conv("alice");
    let (id, t) = started(start(&mut m, &c, 1, 0, None));
    let stamped = |m: &mut Model, first: Seq, d: &[&str], at_ns: Option<u64>| {
        m.apply(StoreOp::Append(AppendOp {
            conv: c.clone(),
            message_id: id.clone(),
            token: t,
            first_seq: first,
            deltas: d.iter().map(|s| (*s).to_owned()).collect(),
            at_ms: 1,
            at_ns,
        }))
    };
    let (_, notices) = stamped(&mut m, 1, &["a"], None);
    assert!(
        matches!(
            &notices[..],
            [Published {
                notice: Notice::Chunks { ts_ns: None, .. },
                ..
            }]
        ),
        "an unstamped append publishes no stamp"
    );
    let (_, notices) = stamped(&mut m, 2, &["b", "c"], Some(5_000));
    assert!(
        matches!(
            &notices[..],
            [Published {
                notice: Notice::Chunks {
                    ts_ns: Some(5_000),
                    ..
                },
                ..
            }]
        ),
        "the notice carries the append's stamp"
    );
    // A retry of chunk 3 with chunk 4 keeps chunk 3's first stamp.
    let _ = stamped(&mut m, 3, &["c", "d"], Some(6_000));
    let read = |m: &mut Model, after| {
        m.apply(StoreOp::Read(ReadOp {
            conv: c.clone(),
            message_id: id.clone(),
            after_seq: after,
            at_ms: 2,
        }))
        .0
    };
    assert!(
        matches!(read(&mut m, 0), StoreReply::Read { ts_ns, .. } if ts_ns == [0, 5_000, 5_000, 6_000])
    );
    assert!(
        matches!(read(&mut m, 0), StoreReply::Read { deltas, .. } if deltas == ["a", "b", "c", "d"])
    );
    let snap = m
        .apply(StoreOp::Snapshot(SnapshotOp {
            conv: c.clone(),
            limit: 10,
            at_ms: 2,
        }))
        .0;
    assert!(
        matches!(snap, StoreReply::Snapshot { live: Some(LiveReply { ts_ns, .. }), .. } if ts_ns == [0, 5_000, 5_000, 6_000])
    );
}

#[test]
fn a_read_of_only_unstamped_chunks_lists_no_stamps() {
    let mut m = model();
    let c = conv("alice");
    let (id, t) = started(start(&mut m, &c, 1, 0, None));
    let _ = append(&mut m, &c, &id, t, 1, &["a", "b"], 1);
    let r = m
        .apply(StoreOp::Read(ReadOp {
            conv: c.clone(),
            message_id: id.clone(),
            after_seq: 0,
            at_ms: 2,
        }))
        .0;
    assert!(matches!(r, StoreReply::Read { ts_ns, .. } if ts_ns.is_empty()));
}
