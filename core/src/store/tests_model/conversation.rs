//! The store model's conversation reads and housekeeping: records, the
//! reply locator, deleting history, chunk stamps.

use super::*;

fn delete(m: &mut Model, c: &ConvKey, at_ms: u64) -> StoreReply {
    m.apply(StoreOp::Delete(DeleteOp {
        conv: c.clone(),
        at_ms,
    }))
    .0
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
