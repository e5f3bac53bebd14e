//! The producer's writes on a node and the in-memory store: the lease is
//! renewed every third of it, and a renewal the store did not answer is sent
//! again at the next period, so a reply with nothing to append for longer
//! than its lease is not taken for an abandoned one; a renewal answered
//! "cancel requested" stops the reply when the cancel's notice was lost; an
//! append the store did not answer goes again after `store_retry`.

use std::time::Duration;

use crate::api::{GeneratorEvent, OpId};
use crate::ids::{ConvKey, SessionId, UserId};
use crate::node::rig::Rig;
use crate::store::{CancelOp, StoreOp};
use crate::wire::{ReplyStatus, ServerFrame};

#[test]
fn a_renewal_the_store_did_not_answer_is_sent_again_and_a_quiet_reply_keeps_its_lease() {
    let mut rig = Rig::new(|_| {});
    let lease = Duration::from_millis(rig.node.config().timers.lease_ttl_ms);
    let conn = rig.connect(1, None);
    let id = rig.chat(conn);
    rig.fail_renews = 1;
    // Three leases without a delta: only renewals keep the reply's lease.
    rig.advance(lease * 3);
    assert!(
        rig.renews >= 8,
        "a renewal every third of the lease, the failed one too: {} renewals",
        rig.renews
    );
    rig.deltas(&id, &["still ", "here"]);
    rig.generate(&id, GeneratorEvent::Finished { usage: None });
    let frames = rig.take(conn);
    let end = frames.iter().find_map(|f| match f {
        ServerFrame::End(e) => Some(e),
        _ => None,
    });
    let end = end.unwrap_or_else(|| panic!("the reply ends: {frames:?}"));
    assert_eq!(end.status, ReplyStatus::Completed, "{end:?}");
    assert_eq!(end.final_seq, 2);
}

#[test]
fn a_cancel_whose_notice_was_lost_is_learnt_from_the_next_renewal_and_the_reply_ends_cancelled() {
    let mut rig = Rig::new(|_| {});
    let conn = rig.connect(1, None);
    let id = rig.chat(conn);
    rig.deltas(&id, &["a", "b"]);
    // Another node's cancel: the store records it, and its notice to this
    // node is lost.
    let cancel = StoreOp::Cancel(CancelOp {
        conv: ConvKey::new(
            UserId::parse("alice").unwrap(),
            SessionId::parse("s").unwrap(),
        ),
        message_id: Some(id.clone()),
        at_ms: rig.node.wall_ms(rig.now),
    });
    drop(rig.store.apply(OpId(u64::MAX), cancel));
    rig.take(conn);
    rig.advance(rig.node.config().renew_interval() + Duration::from_millis(100));
    let frames = rig.take(conn);
    let end = frames.iter().find_map(|f| match f {
        ServerFrame::End(e) => Some(e),
        _ => None,
    });
    let end = end.unwrap_or_else(|| panic!("ended within one renewal: {frames:?}"));
    assert_eq!(end.status, ReplyStatus::Cancelled, "{end:?}");
    assert_eq!(end.final_seq, 2);
    assert!(rig.renews >= 1);
}

#[test]
fn an_append_the_store_did_not_answer_is_retried_after_store_retry_and_the_reply_is_exact() {
    let mut rig = Rig::new(|c| c.store_retry = Duration::from_millis(500));
    let conn = rig.connect(1, None);
    let id = rig.chat(conn);
    rig.fail_appends = 1;
    rig.deltas(&id, &["a"]);
    let failed_at = rig.appends[0];
    rig.advance(Duration::from_millis(400));
    assert_eq!(rig.appends.len(), 1, "not retried before store_retry");
    rig.advance(Duration::from_millis(200));
    assert_eq!(rig.appends.len(), 2, "retried once store_retry passed");
    assert_eq!(rig.appends[1] - failed_at, Duration::from_millis(500));
    rig.deltas(&id, &["b"]);
    rig.generate(&id, GeneratorEvent::Finished { usage: None });
    let frames = rig.take(conn);
    let text: String = frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Chunk(c) => Some(c.delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "ab", "each chunk once: {frames:?}");
}

#[test]
fn a_settle_the_store_did_not_answer_is_sent_again_after_store_retry_and_the_reply_ends_once() {
    let mut rig = Rig::new(|c| c.store_retry = Duration::from_millis(500));
    let conn = rig.connect(1, None);
    let id = rig.chat(conn);
    rig.deltas(&id, &["a"]);
    rig.fail_settles = 1;
    rig.generate(&id, GeneratorEvent::Finished { usage: None });
    assert_eq!(rig.settles.len(), 1, "the settle went out");
    let failed_at = rig.settles[0];
    rig.advance(Duration::from_millis(400));
    assert_eq!(rig.settles.len(), 1, "not sent again before store_retry");
    rig.advance(Duration::from_millis(200));
    assert_eq!(rig.settles.len(), 2, "sent again once store_retry passed");
    assert_eq!(rig.settles[1] - failed_at, Duration::from_millis(500));
    let ends: Vec<_> = rig
        .take(conn)
        .into_iter()
        .filter_map(|f| match f {
            ServerFrame::End(e) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(ends.len(), 1, "one end: {ends:?}");
    assert_eq!(ends[0].status, ReplyStatus::Completed);
    assert_eq!(ends[0].final_seq, 1);
}

/// The token counts a generator ends with reach the `end` of every
/// connection on the owner's node (its own view settles with them, not
/// only the other nodes' views, which learn them from the store).
#[test]
fn the_generators_usage_reaches_the_end_on_the_owners_node() {
    let usage = crate::wire::Usage {
        prompt_tokens: 7,
        completion_tokens: 2,
    };
    let mut rig = Rig::new(|_| {});
    let (a, b) = (rig.connect(1, None), rig.connect(2, None));
    let id = rig.chat(a);
    rig.deltas(&id, &["one ", "two"]);
    rig.generate(&id, GeneratorEvent::Finished { usage: Some(usage) });
    for conn in [a, b] {
        let end = rig.take(conn).into_iter().find_map(|f| match f {
            ServerFrame::End(e) => Some(e),
            _ => None,
        });
        let end = end.expect("an end");
        assert_eq!(end.status, ReplyStatus::Completed);
        assert_eq!(end.usage, Some(usage), "{conn}");
    }
}
