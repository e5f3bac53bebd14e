//! The HTTP API as the node answers it, through the harness.

use weir_core::ids::SessionId;
use weir_core::wire::ServerFrame;
use weir_core::{GeneratorEvent, HttpRequest};
use weir_verification::check::Checker;
use weir_verification::harness::{World, WorldConfig};

fn sid(s: &str) -> SessionId {
    SessionId::parse(s).expect("valid")
}

fn answer(w: &World, req: weir_core::HttpReqId) -> (u16, serde_json::Value) {
    let (status, body) = w.http.get(&req).cloned().expect("answered");
    (status, serde_json::from_str(&body).expect("JSON body"))
}

#[test]
fn post_streams_to_websocket_viewers_and_lists_in_history() {
    let mut w = World::new(&WorldConfig::default());
    let mut c = Checker::new();
    let viewer = w.connect(0, "u1", "s1", None);
    w.settle_queues();
    let post = w.http_request(
        0,
        "u1",
        HttpRequest::PostMessage {
            session: sid("s1"),
            body: br#"{"content":"hello"}"#.to_vec(),
        },
    );
    w.settle_queues();
    let (status, body) = answer(&w, post);
    assert_eq!(status, 202);
    let id = body["message_id"].as_str().expect("message_id").to_owned();
    let running = w.running_generators();
    assert_eq!(running[0].1.as_str(), id);
    let mid = running[0].1.clone();
    w.generate(&mid, GeneratorEvent::Delta("hi there".into()));
    w.generate(&mid, GeneratorEvent::Finished { usage: None });
    w.settle_queues();
    c.check_quiescent(&w).expect("invariants");
    let kinds: Vec<_> = w.frames(viewer).iter().map(ServerFrame::kind).collect();
    assert_eq!(
        kinds,
        ["hello", "history", "user_message", "start", "chunk", "end"]
    );
    let list = w.http_request(0, "u1", HttpRequest::ListMessages { session: sid("s1") });
    w.settle_queues();
    let (status, body) = answer(&w, list);
    assert_eq!(status, 200);
    assert_eq!(body["session_id"], "s1");
    assert_eq!(body["messages"][1]["content"], "hi there");
    assert_eq!(body["messages"][1]["status"], "completed");
}

#[test]
fn post_errors_busy_bad_request_and_too_large() {
    let mut w = World::new(&WorldConfig::default());
    let post = |w: &mut World, body: &str| {
        let r = w.http_request(
            0,
            "u1",
            HttpRequest::PostMessage {
                session: sid("s1"),
                body: body.as_bytes().to_vec(),
            },
        );
        w.settle_queues();
        answer(w, r)
    };
    assert_eq!(post(&mut w, "{}").0, 400);
    assert_eq!(post(&mut w, "not json").0, 400);
    let long = format!(r#"{{"content":"{}"}}"#, "x".repeat(40_000));
    assert_eq!(post(&mut w, &long).0, 413);
    assert_eq!(post(&mut w, r#"{"content":"one"}"#).0, 202);
    let (status, body) = post(&mut w, r#"{"content":"two"}"#);
    assert_eq!((status, body["code"].as_str()), (409, Some("busy")));
}

/// Posts `q` to `u1`'s `s1` on node 0; its store operation is the last one
/// waiting.
fn post_q(w: &mut World) -> weir_core::HttpReqId {
    w.http_request(
        0,
        "u1",
        HttpRequest::PostMessage {
            session: sid("s1"),
            body: br#"{"content":"q"}"#.to_vec(),
        },
    )
}

#[test]
fn cancel_answers_200_with_final_seq_or_404() {
    let mut w = World::new(&WorldConfig::default());
    let r = post_q(&mut w);
    w.settle_queues();
    let id = answer(&w, r).1["message_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mid = w.running_generators()[0].1.clone();
    w.generate(&mid, GeneratorEvent::Delta("a".into()));
    w.settle_queues();
    let cancel = |w: &mut World, user: &str, body: String| {
        let r = w.http_request(
            0,
            user,
            HttpRequest::Cancel {
                session: sid("s1"),
                body: body.into_bytes(),
            },
        );
        w.settle_queues();
        answer(w, r)
    };
    let (status, body) = cancel(&mut w, "u1", format!(r#"{{"message_id":"{id}"}}"#));
    assert_eq!(status, 200);
    assert_eq!(
        (body["status"].as_str(), body["final_seq"].as_u64()),
        (Some("cancelled"), Some(1))
    );
    assert!(
        w.nodes[0].aborted.contains(&mid),
        "the generator was stopped"
    );
    // Another user: not found; an empty body targets the latest reply.
    let (status, body) = cancel(&mut w, "eve", format!(r#"{{"message_id":"{id}"}}"#));
    assert_eq!((status, body["status"].as_str()), (404, Some("not_found")));
    let (status, body) = cancel(&mut w, "u1", String::new());
    assert_eq!((status, body["status"].as_str()), (200, Some("cancelled")));
}

#[test]
fn presence_is_readable_only_by_its_user() {
    let mut w = World::new(&WorldConfig::default());
    let _a = w.connect(0, "u1", "s1", None);
    w.settle_queues();
    let own = w.http_request(
        0,
        "u1",
        HttpRequest::Presence {
            user: weir_core::ids::UserId::parse("u1").expect("valid"),
        },
    );
    let other = w.http_request(
        0,
        "eve",
        HttpRequest::Presence {
            user: weir_core::ids::UserId::parse("u1").expect("valid"),
        },
    );
    w.settle_queues();
    let (status, body) = answer(&w, own);
    assert_eq!(
        (
            status,
            body["status"].as_str(),
            body["connections"].as_u64()
        ),
        (200, Some("online"), Some(1))
    );
    assert_eq!(answer(&w, other).0, 403);
}

#[test]
fn store_outage_answers_503_and_changes_nothing() {
    let mut w = World::new(&WorldConfig::default());
    let r = post_q(&mut w);
    assert!(w.fail_op(w.ops.len() - 1));
    w.settle_queues();
    let (status, body) = answer(&w, r);
    assert_eq!((status, body["code"].as_str()), (503, Some("unavailable")));
    assert!(w.running_generators().is_empty());
}

#[test]
fn a_full_store_answers_503_store_full_not_unavailable_and_starts_nothing() {
    let mut w = World::new(&WorldConfig::default());
    let r = post_q(&mut w);
    w.settle_queues_full();
    let (status, body) = answer(&w, r);
    assert_eq!((status, body["code"].as_str()), (503, Some("store_full")));
    let message = body["message"].as_str().unwrap_or_default();
    assert!(!message.contains("cannot be reached"), "{message}");
    assert!(w.running_generators().is_empty());
}

#[test]
fn store_reply_not_understood_answers_500_internal_not_unavailable() {
    let mut w = World::new(&WorldConfig::default());
    let r = post_q(&mut w);
    assert!(w.misread_op(w.ops.len() - 1));
    w.settle_queues();
    let (status, body) = answer(&w, r);
    assert_eq!((status, body["code"].as_str()), (500, Some("internal")));
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("may or may not have taken effect") && !message.contains("nothing was"),
        "{message}"
    );
}

/// The seed's `POST /api/cancel` names no user. Under `auth = none` a node
/// with no connection to the conversation finds the reply through the store
/// (registered by `POST /api/chat` before its start): the first click
/// cancels, and the page's connection on the other node gets the end.
#[test]
fn compat_cancel_without_a_user_on_another_node_finds_and_cancels_the_reply() {
    use weir_core::dialect::compat_http::CompatUser;
    let mut w = World::new(&WorldConfig {
        nodes: 2,
        ..WorldConfig::default()
    });
    let mut c = Checker::new();
    let viewer = w.connect(0, "demo_user", "session_1", None);
    w.settle_queues();
    let chat = w.http_request(
        0,
        "default_user",
        HttpRequest::CompatChat {
            user: CompatUser::FromBody,
            body: br#"{"session_id":"session_1","message":"hi","user_id":"demo_user"}"#.to_vec(),
        },
    );
    w.settle_queues();
    let (status, body) = answer(&w, chat);
    assert_eq!(status, 200, "{body}");
    let id = body["message_id"].as_str().expect("message_id").to_owned();
    let mid = w.running_generators()[0].1.clone();
    w.generate(&mid, GeneratorEvent::Delta("so far".into()));
    w.settle_queues();
    let cancel = |w: &mut World, mid: &str| {
        w.http_request(
            1,
            "default_user",
            HttpRequest::CompatCancel {
                user: CompatUser::FromBody,
                body: format!(r#"{{"session_id":"session_1","message_id":"{mid}"}}"#).into_bytes(),
            },
        )
    };
    let wrong = cancel(&mut w, "1.00000000000000ffr");
    let first = cancel(&mut w, &id);
    w.settle_queues();
    assert_eq!(answer(&w, wrong).1["status"], "not_found");
    let (status, body) = answer(&w, first);
    assert_eq!(status, 200);
    assert_eq!(body["status"], "cancelled", "{body}");
    assert_eq!(body["message_id"], id.as_str());
    w.run_for(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_millis(10),
    );
    c.check_quiescent(&w).expect("invariants");
    let end = w
        .frames(viewer)
        .iter()
        .find_map(|f| match f {
            ServerFrame::End(e) => Some(e.status),
            _ => None,
        })
        .expect("the viewer on node 0 gets the end");
    assert_eq!(end, weir_core::wire::ReplyStatus::Cancelled);
}
