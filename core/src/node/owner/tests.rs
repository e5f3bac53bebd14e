use super::*;
use crate::ids::{SessionId, UserId};

const UNBOUNDED: AppendLimit = AppendLimit {
    chunks: usize::MAX,
    bytes: usize::MAX,
};

fn owned() -> Owned {
    let conv = ConvKey::new(
        UserId::parse("alice").unwrap(),
        SessionId::parse("s").unwrap(),
    );
    Owned::new(conv, 7, None)
}

fn delta(o: &mut Owned, d: &str) {
    assert!(o.on_generator(GeneratorEvent::Delta(d.into())));
}

fn append(first_seq: Seq, deltas: &[&str]) -> Option<Write> {
    Some(Write::Append(Batch {
        first_seq,
        deltas: deltas.iter().map(|d| (*d).to_owned()).collect(),
        at_ns: None,
    }))
}

/// Answers the append in flight "ok".
fn ack(o: &mut Owned) {
    let batch = o.on_append_answered().expect("an append is in flight");
    o.on_append_acked(batch.first_seq + batch.deltas.len() as Seq - 1);
}

#[test]
fn queued_deltas_go_out_as_one_append_from_the_next_seq() {
    let mut o = owned();
    delta(&mut o, "a");
    delta(&mut o, "b");
    assert_eq!(o.next_write(UNBOUNDED), append(1, &["a", "b"]));
}

#[test]
fn next_write_waits_for_the_append_in_flight() {
    let mut o = owned();
    delta(&mut o, "a");
    assert_eq!(o.next_write(UNBOUNDED), append(1, &["a"]));
    delta(&mut o, "b");
    delta(&mut o, "c");
    assert_eq!(o.next_write(UNBOUNDED), None, "one append at a time");
    ack(&mut o);
    assert_eq!(o.next_write(UNBOUNDED), append(2, &["b", "c"]));
}

#[test]
fn nothing_to_write_while_the_generator_runs_quietly() {
    let mut o = owned();
    assert_eq!(o.next_write(UNBOUNDED), None);
    delta(&mut o, "");
    assert_eq!(o.next_write(UNBOUNDED), None, "an empty delta is no chunk");
}

#[test]
fn the_settle_waits_until_every_delta_is_appended() {
    let mut o = owned();
    delta(&mut o, "a");
    assert_eq!(o.next_write(UNBOUNDED), append(1, &["a"]));
    delta(&mut o, "b");
    assert!(o.on_generator(GeneratorEvent::Finished { usage: None }));
    assert!(!o.generator_running());
    assert_eq!(o.next_write(UNBOUNDED), None);
    ack(&mut o);
    assert_eq!(o.next_write(UNBOUNDED), append(2, &["b"]));
    ack(&mut o);
    assert_eq!(
        o.next_write(UNBOUNDED),
        Some(Write::Settle {
            request: SettleRequest::Completed,
            last_seq: 2,
            usage: None
        })
    );
    assert!(o.is_settling());
    assert_eq!(o.next_write(UNBOUNDED), None, "one settle at a time");
}

#[test]
fn events_after_the_generator_ended_are_ignored() {
    let mut o = owned();
    assert!(o.on_generator(GeneratorEvent::Failed {
        reason: "boom".into(),
        usage: None
    }));
    assert!(!o.on_generator(GeneratorEvent::Delta("late".into())));
    assert!(!o.on_generator(GeneratorEvent::Finished { usage: None }));
    assert_eq!(
        o.next_write(UNBOUNDED),
        Some(Write::Settle {
            request: SettleRequest::Failed("boom".into()),
            last_seq: 0,
            usage: None
        })
    );
}

#[test]
fn a_failed_append_is_retried_with_the_same_seqs_and_what_came_since() {
    let mut o = owned();
    delta(&mut o, "a");
    assert_eq!(o.next_write(UNBOUNDED), append(1, &["a"]));
    delta(&mut o, "b");
    o.on_append_failed();
    assert_eq!(o.next_write(UNBOUNDED), append(1, &["a", "b"]));
}

#[test]
fn a_failed_settle_is_sent_again() {
    let mut o = owned();
    assert!(o.on_generator(GeneratorEvent::Finished { usage: None }));
    assert!(o.next_write(UNBOUNDED).is_some());
    assert_eq!(o.next_write(UNBOUNDED), None);
    o.on_settle_failed();
    assert!(matches!(
        o.next_write(UNBOUNDED),
        Some(Write::Settle { .. })
    ));
}

#[test]
fn a_cancel_drops_queued_deltas_stops_the_generator_and_settles_cancelled() {
    let mut o = owned();
    delta(&mut o, "a");
    assert_eq!(o.next_write(UNBOUNDED), append(1, &["a"]));
    delta(&mut o, "b");
    assert!(o.on_cancel(), "the running generator is aborted");
    assert!(o.is_stopped());
    assert!(!o.on_generator(GeneratorEvent::Delta("c".into())));
    assert_eq!(
        o.next_write(UNBOUNDED),
        None,
        "the append in flight is answered first"
    );
    ack(&mut o);
    assert_eq!(
        o.next_write(UNBOUNDED),
        Some(Write::Settle {
            request: SettleRequest::Cancelled,
            last_seq: 1,
            usage: None
        })
    );
}

#[test]
fn a_stopped_reply_appends_nothing_more_even_after_a_failed_append() {
    let mut o = owned();
    delta(&mut o, "a");
    assert_eq!(o.next_write(UNBOUNDED), append(1, &["a"]));
    assert!(o.on_cancel());
    o.on_append_failed();
    assert!(matches!(
        o.next_write(UNBOUNDED),
        Some(Write::Settle { .. })
    ));
}

#[test]
fn a_second_cancel_does_not_abort_again() {
    let mut o = owned();
    assert!(o.on_cancel());
    assert!(!o.on_cancel());
}

#[test]
fn shutdown_fails_the_reply_unless_it_already_ends() {
    let mut o = owned();
    assert!(o.on_shutdown());
    assert_eq!(
        o.next_write(UNBOUNDED),
        Some(Write::Settle {
            request: SettleRequest::Failed(SHUTDOWN.into()),
            last_seq: 0,
            usage: None
        })
    );
    let mut o = owned();
    assert!(o.on_generator(GeneratorEvent::Finished { usage: None }));
    assert!(!o.on_shutdown(), "the generator already stopped");
    assert!(matches!(
        o.next_write(UNBOUNDED),
        Some(Write::Settle {
            request: SettleRequest::Completed,
            last_seq: 0,
            ..
        })
    ));
}

#[test]
fn one_renewal_at_a_time_and_none_while_settling() {
    let mut o = owned();
    assert!(o.start_renew());
    assert!(!o.start_renew());
    o.on_renew_answered();
    assert!(o.start_renew());
    o.on_renew_answered();
    assert!(o.on_generator(GeneratorEvent::Finished { usage: None }));
    assert!(o.next_write(UNBOUNDED).is_some());
    assert!(!o.start_renew(), "a settling reply needs no lease");
}

#[test]
fn a_refused_append_drops_what_was_not_stored_and_settles_failed_store_full() {
    let mut o = owned();
    delta(&mut o, "a");
    assert_eq!(o.next_write(UNBOUNDED), append(1, &["a"]));
    delta(&mut o, "b");
    assert!(o.on_append_answered().is_some());
    assert!(o.on_refused(true), "the running generator is aborted");
    assert!(o.is_stopped());
    assert!(!o.on_generator(GeneratorEvent::Delta("c".into())));
    assert_eq!(
        o.next_write(UNBOUNDED),
        Some(Write::Settle {
            request: SettleRequest::Failed(STORE_FULL.into()),
            last_seq: 0,
            usage: None
        }),
        "neither the refused batch nor what queued behind it is sent again"
    );
    assert!(!o.on_refused(true), "the generator is aborted once");
}

#[test]
fn a_refusal_waits_for_the_append_in_flight_and_fails_a_finished_reply_only_if_it_lost_chunks() {
    let finished_then_refused = |queued: bool| {
        let mut o = owned();
        delta(&mut o, "a");
        assert_eq!(o.next_write(UNBOUNDED), append(1, &["a"]));
        if queued {
            delta(&mut o, "b");
        }
        assert!(o.on_generator(GeneratorEvent::Finished { usage: None }));
        // A renewal refused while the append is still at the store.
        assert!(!o.on_refused(false), "the generator had already ended");
        assert_eq!(
            o.next_write(UNBOUNDED),
            None,
            "the append in flight is answered first"
        );
        ack(&mut o);
        o.next_write(UNBOUNDED)
    };
    let settle = |request| {
        Some(Write::Settle {
            request,
            last_seq: 1,
            usage: None,
        })
    };
    assert_eq!(
        finished_then_refused(true),
        settle(SettleRequest::Failed(STORE_FULL.into())),
        "a chunk was dropped: not completed"
    );
    assert_eq!(
        finished_then_refused(false),
        settle(SettleRequest::Completed),
        "everything was stored"
    );

    let mut o = owned();
    assert!(o.on_cancel());
    assert!(!o.on_refused(true));
    assert_eq!(
        o.next_write(UNBOUNDED),
        Some(Write::Settle {
            request: SettleRequest::Cancelled,
            last_seq: 0,
            usage: None
        })
    );
}

#[test]
fn a_deferred_generator_starts_when_its_cancel_fails_but_not_after_a_cancel() {
    let context = vec![];
    let conv = owned().conv().clone();
    let mut o = Owned::new(conv.clone(), 7, Some(context.clone()));
    assert!(!o.generator_running());
    assert_eq!(o.release_deferred(), Some(context.clone()));
    assert!(o.generator_running());
    assert_eq!(o.release_deferred(), None, "started once");

    let mut o = Owned::new(conv, 7, Some(context));
    assert!(!o.on_cancel(), "no generator ran");
    assert_eq!(o.release_deferred(), None);
}

#[test]
fn an_append_carries_at_most_the_chunk_limit_and_the_rest_follows_in_order() {
    let mut o = owned();
    for d in ["a", "b", "c", "d", "e"] {
        delta(&mut o, d);
    }
    let two = AppendLimit {
        chunks: 2,
        bytes: usize::MAX,
    };
    assert_eq!(o.next_write(two), append(1, &["a", "b"]));
    assert_eq!(o.next_write(two), None, "one append at a time");
    ack(&mut o);
    assert_eq!(o.next_write(two), append(3, &["c", "d"]));
    ack(&mut o);
    assert_eq!(o.next_write(two), append(5, &["e"]));
}

#[test]
fn an_append_carries_at_most_the_byte_limit_but_always_one_chunk() {
    let mut o = owned();
    for d in ["aaaa", "bb", "cc", "dddddddd", "e"] {
        delta(&mut o, d);
    }
    let six = AppendLimit {
        chunks: usize::MAX,
        bytes: 6,
    };
    assert_eq!(o.next_write(six), append(1, &["aaaa", "bb"]));
    ack(&mut o);
    assert_eq!(o.next_write(six), append(3, &["cc"]), "cc + dddddddd is 10");
    ack(&mut o);
    assert_eq!(
        o.next_write(six),
        append(4, &["dddddddd"]),
        "a longer chunk goes alone"
    );
    ack(&mut o);
    assert_eq!(o.next_write(six), append(5, &["e"]));
}

#[test]
fn a_failed_bounded_append_is_retried_first_with_the_same_seqs() {
    let mut o = owned();
    for d in ["a", "b", "c"] {
        delta(&mut o, d);
    }
    let two = AppendLimit {
        chunks: 2,
        bytes: usize::MAX,
    };
    assert_eq!(o.next_write(two), append(1, &["a", "b"]));
    delta(&mut o, "d");
    o.on_append_failed();
    assert_eq!(o.next_write(two), append(1, &["a", "b"]));
    ack(&mut o);
    assert_eq!(o.next_write(two), append(3, &["c", "d"]));
}

#[test]
fn the_settle_waits_until_the_last_bounded_append_is_acked() {
    let mut o = owned();
    for d in ["a", "b", "c"] {
        delta(&mut o, d);
    }
    assert!(o.on_generator(GeneratorEvent::Finished { usage: None }));
    let two = AppendLimit {
        chunks: 2,
        bytes: usize::MAX,
    };
    assert_eq!(o.next_write(two), append(1, &["a", "b"]));
    ack(&mut o);
    assert_eq!(o.next_write(two), append(3, &["c"]));
    assert_eq!(o.next_write(two), None);
    ack(&mut o);
    assert!(matches!(o.next_write(two), Some(Write::Settle { .. })));
}

#[test]
fn a_gap_with_the_lost_chunks_at_hand_writes_them_again_before_the_batch_with_the_same_seqs() {
    let mut o = owned();
    for d in ["a", "b", "c"] {
        delta(&mut o, d);
        assert!(o.next_write(UNBOUNDED).is_some());
        ack(&mut o);
    }
    delta(&mut o, "d");
    assert_eq!(o.next_write(UNBOUNDED), append(4, &["d"]));
    let batch = o.on_append_answered().expect("in flight");
    // The store's log ends at 1: chunks 2 and 3 were lost.
    let abort = o.on_gap(1, batch.deltas, Some(vec!["b".into(), "c".into()]));
    assert!(!abort, "the reply goes on");
    assert_eq!(o.acked(), 1);
    assert_eq!(o.next_write(UNBOUNDED), append(2, &["b", "c", "d"]));
}

#[test]
fn a_gap_without_every_lost_chunk_stops_the_reply_failed_store_lost() {
    for lost in [None, Some(vec!["b".to_owned()])] {
        let mut o = owned();
        for d in ["a", "b", "c"] {
            delta(&mut o, d);
            assert!(o.next_write(UNBOUNDED).is_some());
            ack(&mut o);
        }
        delta(&mut o, "d");
        assert!(o.next_write(UNBOUNDED).is_some());
        let batch = o.on_append_answered().expect("in flight");
        assert!(
            o.on_gap(1, batch.deltas, lost.clone()),
            "the generator is aborted"
        );
        assert!(
            !o.on_generator(GeneratorEvent::Delta("e".into())),
            "what it still sends is ignored"
        );
        assert_eq!(
            o.next_write(UNBOUNDED),
            Some(Write::Settle {
                request: SettleRequest::Failed(STORE_LOST.to_owned()),
                last_seq: 1,
                usage: None,
            }),
            "{lost:?}: nothing more is appended; it settles failed"
        );
    }
}

/// A `gap` that names no lost chunk (the store's log ends at the last
/// acknowledged seq, so the batch would have followed it) contradicts
/// itself: writing the batch again could meet it forever, so the reply ends
/// `failed(store_lost)` at what the store holds.
#[test]
fn a_gap_that_names_no_lost_chunk_stops_the_reply_instead_of_writing_again() {
    let mut o = owned();
    for d in ["a", "b"] {
        delta(&mut o, d);
        assert!(o.next_write(UNBOUNDED).is_some());
        ack(&mut o);
    }
    delta(&mut o, "c");
    assert!(o.next_write(UNBOUNDED).is_some());
    let batch = o.on_append_answered().expect("in flight");
    assert!(o.on_gap(2, batch.deltas, Some(Vec::new())), "aborted");
    assert_eq!(
        o.next_write(UNBOUNDED),
        Some(Write::Settle {
            request: SettleRequest::Failed(STORE_LOST.to_owned()),
            last_seq: 2,
            usage: None,
        })
    );
}

#[test]
fn a_settle_answered_with_a_gap_writes_the_lost_chunks_again_then_settles_at_the_old_end() {
    let mut o = owned();
    for d in ["a", "b", "c"] {
        delta(&mut o, d);
        assert!(o.next_write(UNBOUNDED).is_some());
        ack(&mut o);
    }
    assert!(o.on_generator(GeneratorEvent::Finished { usage: None }));
    let settle = |last_seq| {
        Some(Write::Settle {
            request: SettleRequest::Completed,
            last_seq,
            usage: None,
        })
    };
    assert_eq!(o.next_write(UNBOUNDED), settle(3));
    // The store's log ends at 1: chunks 2 and 3 were lost (the settle
    // carries no chunks of its own).
    assert!(!o.on_gap(1, Vec::new(), Some(vec!["b".into(), "c".into()])));
    assert!(!o.is_settling(), "the settle waits for the chunks");
    assert_eq!(o.next_write(UNBOUNDED), append(2, &["b", "c"]));
    ack(&mut o);
    assert_eq!(o.next_write(UNBOUNDED), settle(3), "and settles as before");
}
