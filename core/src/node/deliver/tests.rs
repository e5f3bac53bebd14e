//! Pulled delivery: a connection whose queue the runtime reports full keeps
//! its place and is handed the rest, merged, once it is writable; its lag is
//! what its cursors are behind by. A node and the in-memory store, no
//! runtime: each test feeds inputs and reads the frames each connection got.

use crate::api::{GeneratorEvent, Input};
use crate::dialect::Dialect;
use crate::ids::ConnId;
use crate::node::rig::Rig;
use crate::wire::{Chunk, CloseCode, ServerFrame};

/// The chunk frames among `frames`.
fn chunks(frames: &[ServerFrame]) -> Vec<&Chunk> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Chunk(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn kinds(frames: &[ServerFrame]) -> Vec<&'static str> {
    frames.iter().map(ServerFrame::kind).collect()
}

#[test]
fn a_blocked_connection_keeps_its_place_and_gets_the_exact_remainder_merged_when_writable() {
    let mut rig = Rig::new(|_| {});
    let (a, b) = (rig.connect(1, None), rig.connect(2, None));
    let id = rig.chat(a);
    rig.deltas(&id, &["one "]);
    rig.take(a);
    assert_eq!(chunks(&rig.take(b)).len(), 1, "b has chunk 1");

    rig.input(Input::WriteBlocked { conn: b });
    rig.deltas(&id, &["two ", "three ", "four "]);
    assert_eq!(chunks(&rig.take(a)).len(), 3, "a reads on");
    assert!(rig.take(b).is_empty(), "b is handed nothing");
    assert_eq!(rig.cursor(b, &id), Some(1), "b's cursor kept its place");
    let r = &rig.node.convs.values().next().unwrap().replies()[&id];
    assert_eq!(r.len(), 4, "the view holds the chunks b waits for");

    rig.input(Input::Writable { conn: b });
    let got = rig.take(b);
    assert_eq!(
        chunks(&got),
        [&Chunk {
            message_id: id.clone(),
            seq: 4,
            delta: "two three four ".into(),
            from_seq: Some(2),
            ts_ns: None,
        }],
        "exactly the chunks it missed, in one merged frame"
    );
    assert_eq!(rig.cursor(b, &id), Some(4));
    assert!(rig.take(a).is_empty(), "a had them already");

    rig.deltas(&id, &["five"]);
    assert_eq!(chunks(&rig.take(b)).len(), 1, "writable: delivery goes on");
    rig.input(Input::Writable { conn: b });
    assert!(
        rig.take(b).is_empty(),
        "a second Writable hands out nothing"
    );
}

#[test]
fn end_waits_behind_the_last_chunk_of_a_blocked_connection() {
    let mut rig = Rig::new(|_| {});
    let (a, b) = (rig.connect(1, None), rig.connect(2, None));
    let id = rig.chat(a);
    rig.input(Input::WriteBlocked { conn: b });
    rig.deltas(&id, &["one ", "two"]);
    rig.generate(&id, GeneratorEvent::Finished { usage: None });
    assert_eq!(kinds(&rig.take(a)).last(), Some(&"end"));
    let before = rig.take(b);
    assert!(
        !kinds(&before).contains(&"chunk") && !kinds(&before).contains(&"end"),
        "neither chunks nor end while blocked: {before:?}"
    );
    assert_eq!(rig.cursor(b, &id), Some(0), "b still watches the reply");
    assert!(
        rig.node.convs.values().next().unwrap().reply(&id).is_some(),
        "the settled reply stays in the view while b's cursor needs it"
    );

    rig.input(Input::Writable { conn: b });
    let got = rig.take(b);
    assert_eq!(kinds(&got), ["chunk", "end"], "the chunks, then end");
    let ServerFrame::Chunk(c) = &got[0] else {
        unreachable!()
    };
    assert_eq!(
        (c.from_seq, c.seq, c.delta.as_str()),
        (Some(1), 2, "one two")
    );
    assert_eq!(rig.cursor(b, &id), None, "ended");
    assert!(
        rig.node.convs.values().next().unwrap().reply(&id).is_none(),
        "nobody watches it now: dropped"
    );
}

#[test]
fn the_lag_of_a_blocked_connection_is_its_cursors_distance_and_trips_4008_then_a_resume_is_exact() {
    let mut rig = Rig::new(|c| c.max_lag_bytes = 8);
    let (a, b) = (rig.connect(1, None), rig.connect(2, None));
    let id = rig.chat(a);
    rig.deltas(&id, &["one "]);
    rig.input(Input::WriteBlocked { conn: b });
    rig.deltas(&id, &["two ", "three "]);
    // Nothing queued by the runtime: the lag is the 10 bytes b's cursor is
    // behind by.
    assert_eq!(rig.node.cursor_lag(b), 10);
    assert_eq!(rig.node.cursor_lag(a), 0);
    for conn in [a, b] {
        rig.input(Input::QueueLag { conn, bytes: 0 });
    }
    assert!(
        rig.closed.is_empty(),
        "one look past the bound is not enough"
    );
    for conn in [a, b] {
        rig.input(Input::QueueLag { conn, bytes: 0 });
    }
    assert_eq!(rig.closed.get(&b), Some(&CloseCode::TooSlow));
    assert_eq!(rig.closed.get(&a), None, "a keeps up");
    let got = rig.take(b);
    assert_eq!(chunks(&got).last().map(|c| c.seq), Some(1), "b had chunk 1");

    let c = rig.connect(3, Some((id.clone(), 1)));
    rig.deltas(&id, &["four"]);
    rig.generate(&id, GeneratorEvent::Finished { usage: None });
    let got = rig.take(c);
    let text: String = chunks(&got).iter().map(|c| c.delta.as_str()).collect();
    let seqs: Vec<u64> = chunks(&got)
        .iter()
        .flat_map(|c| c.first_seq()..=c.seq)
        .collect();
    assert_eq!(text, "two three four");
    assert_eq!(seqs, [2, 3, 4], "exactly the chunks after seq 1");
    assert_eq!(kinds(&got).last(), Some(&"end"));
}

#[test]
fn a_lag_queued_in_the_runtime_counts_with_the_cursors() {
    let mut rig = Rig::new(|c| c.max_lag_bytes = 8);
    let a = rig.connect(1, None);
    let id = rig.chat(a);
    rig.input(Input::WriteBlocked { conn: a });
    rig.deltas(&id, &["12345"]);
    rig.input(Input::QueueLag { conn: a, bytes: 4 });
    rig.input(Input::QueueLag { conn: a, bytes: 4 });
    assert_eq!(
        rig.closed.get(&a),
        Some(&CloseCode::TooSlow),
        "5 behind + 4 queued is past 8"
    );
}

#[test]
fn a_blocked_compat_connection_renders_the_whole_reply_once_writable() {
    let mut rig = Rig::new(|_| {});
    let a = rig.connect(1, None);
    let page = ConnId(2);
    rig.connect_with(page, Dialect::Compat);
    let id = rig.chat(a);
    rig.input(Input::WriteBlocked { conn: page });
    rig.deltas(&id, &["one ", "two"]);
    rig.generate(&id, GeneratorEvent::Finished { usage: None });
    let rendered = |frames: &[ServerFrame]| -> Vec<String> {
        frames
            .iter()
            .filter_map(|f| match f {
                ServerFrame::Dialect(d) if d.kind == "message" => Some(d.text.clone()),
                _ => None,
            })
            .collect()
    };
    let before = rendered(&rig.take(page));
    assert!(
        before.iter().all(|t| !t.contains("one")),
        "no reply text while blocked: {before:?}"
    );
    rig.input(Input::Writable { conn: page });
    let after = rendered(&rig.take(page));
    let last = after.last().expect("the reply's final message");
    assert!(
        last.contains(r#""content":"one two""#) && last.contains(r#""is_complete":true"#),
        "{last}"
    );
}

/// The UI chunks an AI SDK socket got, as `(sequence, type, delta)`.
fn ui_chunks(frames: &[ServerFrame]) -> Vec<(u64, String, String)> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Dialect(d) if d.kind == "chunk" => {
                let v: serde_json::Value = serde_json::from_str(&d.text).ok()?;
                Some((
                    v["sequence"].as_u64()?,
                    v["chunk"]["type"].as_str()?.to_owned(),
                    v["chunk"]["delta"].as_str().unwrap_or_default().to_owned(),
                ))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn an_ai_sdk_socket_that_is_blocked_holds_its_requests_and_a_resume_gets_one_chunk_per_frame_once_writable(
) {
    let mut rig = Rig::new(|c| c.numbered_step = 2);
    let a = rig.connect(1, None);
    let id = rig.chat(a);
    rig.deltas(&id, &["one ", "two ", "three ", "four ", "five "]);
    let socket = ConnId(9);
    rig.connect_with(socket, Dialect::AiSdkWs);
    rig.input(Input::WriteBlocked { conn: socket });
    let resume = br#"{"type":"resume","requestId":"q1","id":"s","headers":{},"body":{}}"#;
    rig.input(Input::Frame {
        conn: socket,
        bytes: resume.to_vec(),
    });
    let held = ui_chunks(&rig.take(socket));
    assert!(
        held.iter().all(|(_, kind, _)| kind != "text-delta"),
        "a request opened on a blocked socket is handed no chunk: {held:?}"
    );

    rig.input(Input::Writable { conn: socket });
    rig.deltas(&id, &["six "]);
    let mut got = held;
    got.extend(ui_chunks(&rig.take(socket)));
    let deltas: Vec<(u64, &str)> = got
        .iter()
        .filter(|(_, kind, _)| kind == "text-delta")
        .map(|(s, _, d)| (*s, d.as_str()))
        .collect();
    assert_eq!(
        deltas,
        [
            (2, "one "),
            (3, "two "),
            (4, "three "),
            (5, "four "),
            (6, "five "),
            (7, "six ")
        ],
        "every chunk once, a frame each, in steps of numbered_step"
    );
    let sequences: Vec<u64> = got.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(sequences, (0..=7).collect::<Vec<_>>(), "no gap");
}

#[test]
fn a_merged_frame_holds_exactly_merged_max_bytes_of_text_and_the_next_chunk_starts_the_next_frame()
{
    let mut rig = Rig::new(|_| {});
    let (a, b) = (rig.connect(1, None), rig.connect(2, None));
    let id = rig.chat(a);
    rig.deltas(&id, &["x"]);
    rig.take(a);
    rig.take(b);

    // Chunks 2..=5 are a quarter of the limit each: together exactly the
    // limit, so they fit one frame; chunk 6 does not.
    rig.input(Input::WriteBlocked { conn: b });
    let quarter = "q".repeat(super::MERGED_MAX_BYTES / 4);
    rig.deltas(&id, &[&quarter, &quarter, &quarter, &quarter, "z"]);
    rig.input(Input::Writable { conn: b });
    let got = rig.take(b);
    let spans: Vec<(Option<u64>, u64, usize)> = chunks(&got)
        .iter()
        .map(|c| (c.from_seq, c.seq, c.delta.len()))
        .collect();
    assert_eq!(
        spans,
        [(Some(2), 5, super::MERGED_MAX_BYTES), (None, 6, 1)],
        "one frame of exactly the limit, then the rest"
    );
}

/// The runtime reports `Writable` after a `WriteBlocked`; one that comes
/// without it (a connection that was never blocked, or one already closing)
/// schedules no step of delivery: a step walks every connection of the
/// conversation, and a spurious one per write would make a fan-out cost in
/// proportion to its square.
#[test]
fn a_writable_without_a_block_before_it_schedules_no_step_of_delivery() {
    let mut rig = Rig::new(|_| {});
    let (a, b) = (rig.connect(1, None), rig.connect(2, None));
    let id = rig.chat(a);
    rig.deltas(&id, &["one "]);
    let due = rig.node.poll_timeout();
    assert!(due.is_some_and(|t| t > rig.now), "nothing due now");

    rig.node.handle_input(rig.now, Input::Writable { conn: b });
    assert_eq!(rig.node.poll_timeout(), due, "b was not blocked: no step");

    rig.node
        .handle_input(rig.now, Input::WriteBlocked { conn: b });
    rig.node.handle_input(rig.now, Input::Writable { conn: b });
    assert_eq!(
        rig.node.poll_timeout(),
        Some(rig.now),
        "b was blocked: a step at once"
    );
    rig.settle();
    assert_eq!(rig.cursor(b, &id), Some(1));
}

/// A `SendMany` is a frame shared by several connections; a frame for one
/// goes as a `Send` (no list to allocate, nothing to share) — on its own, and
/// when the others at the same point render it in a dialect of their own.
#[test]
fn a_frame_for_one_connection_goes_as_a_send_not_a_shared_one() {
    let mut rig = Rig::new(|_| {});
    let a = rig.connect(1, None);
    let id = rig.chat(a);
    rig.deltas(&id, &["alone"]);
    rig.generate(&id, GeneratorEvent::Finished { usage: None });
    assert_eq!(chunks(&rig.take(a)).len(), 1);
    assert_eq!(rig.shared_with_one, 0, "one connection in the conversation");

    rig.connect_with(ConnId(2), Dialect::Compat);
    let id = rig.chat(a);
    rig.deltas(&id, &["one ", "two"]);
    rig.generate(&id, GeneratorEvent::Finished { usage: None });
    let got = rig.take(a);
    assert_eq!(chunks(&got).len(), 2, "{got:?}");
    assert_eq!(rig.shared_with_one, 0);

    let b = rig.connect(3, None);
    let id = rig.chat(b);
    rig.deltas(&id, &["three"]);
    assert_eq!(chunks(&rig.take(a)).len(), 1);
    assert_eq!(chunks(&rig.take(b)).len(), 1);
    assert_eq!(rig.shared_with_one, 0);
}

/// The `request_id` of a `chat` comes back on its own connection's
/// `user_message` only: the other connections of the conversation get the
/// user turn without it (it is the sender's, to match its request).
#[test]
fn the_user_turn_carries_the_request_id_to_its_sender_only() {
    let mut rig = Rig::new(|_| {});
    let (a, b) = (rig.connect(1, None), rig.connect(2, None));
    rig.chat(a);
    let request_id = |frames: Vec<ServerFrame>| {
        frames.into_iter().find_map(|f| match f {
            ServerFrame::UserMessage(u) => Some(u.request_id),
            _ => None,
        })
    };
    let got = request_id(rig.take(a)).expect("a's user_message");
    assert_eq!(got.as_ref().map(ToString::to_string).as_deref(), Some("r1"));
    assert_eq!(request_id(rig.take(b)), Some(None), "b's has none");
}
