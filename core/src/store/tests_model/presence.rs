//! The store model's presence: join, leave, the debounced check and expiry.

use super::*;

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
