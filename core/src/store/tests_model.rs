//! The reference model, operation by operation (DESIGN.md's store table).

use super::*;
use crate::ids::{ClientMessageId, ConvKey, NodeId, SessionId, UserId};
use crate::stream::{Outcome, SettleRequest, StreamState, StreamTimers, OWNER_LOST};
use crate::wire::{MessageStatus, PresenceStatus};

mod conversation;
mod presence;

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
        last_seq: 0,
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
fn settle_of_a_streaming_reply_whose_log_ends_before_the_producers_last_ack_is_a_gap() {
    let mut m = model();
    let c = conv("u");
    let (id, t) = started(start(&mut m, &c, 1, 0, None));
    let _ = append(&mut m, &c, &id, t, 1, &["a", "b"], 1);
    let mut op = SettleOp {
        conv: c.clone(),
        message_id: id.clone(),
        token: t,
        request: SettleRequest::Completed,
        last_seq: 3,
        usage: None,
        at_ms: 2,
    };
    let (r, notices) = m.apply(StoreOp::Settle(op.clone()));
    assert_eq!(r, StoreReply::Gap { last_seq: 2 });
    assert!(notices.is_empty(), "nothing changed, nothing published");
    op.last_seq = 2;
    assert!(matches!(
        m.apply(StoreOp::Settle(op)).0,
        StoreReply::Settled { final_seq: 2, .. }
    ));
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
