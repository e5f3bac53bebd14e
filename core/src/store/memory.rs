//! The in-memory store behind a runtime: [`MemoryStore`].

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};

use super::{Model, Published, StoreOp, Topic};
use crate::api::{Input, OpId};

/// The in-memory store of one node, behind a runtime: the reference [`Model`]
/// and the topics the node subscribed to, so that carrying an
/// [`Output::Store`](crate::Output::Store) is one call whose result is what
/// to feed back.
///
/// A runtime with one node and no Redis carries the store outputs like this:
///
/// ```
/// use std::collections::VecDeque;
/// use std::time::Instant;
/// use weir_core::ids::{ConnId, ConvKey, NodeId, SeededIds, SessionId, UserId};
/// use weir_core::store::{MemoryStore, Model, StoreConfig, Topic};
/// use weir_core::{Config, Input, Node, Output};
///
/// let now = Instant::now();
/// let mut node = Node::new(Config::new(NodeId::parse("n1").unwrap()), SeededIds::new(1), now, 1_000);
/// let mut store = MemoryStore::new(Model::new(StoreConfig::default(), 1));
/// let (user, session) = (UserId::parse("alice").unwrap(), SessionId::parse("s").unwrap());
/// let mut inbox = VecDeque::from([Input::Connect {
///     conn: ConnId(1),
///     user: user.clone(),
///     session: session.clone(),
///     resume: None,
///     ip: None,
/// }]);
/// while let Some(input) = inbox.pop_front() {
///     node.handle_input(now, input);
///     while let Some(output) = node.poll_output() {
///         match output {
///             Output::Store { op, request } => inbox.extend(store.apply(op, request)),
///             Output::Subscribe(topic) => store.subscribe(&topic),
///             Output::Unsubscribe(topic) => store.unsubscribe(&topic),
///             _ => {} // frames, generators, …: the rest of the runtime
///         }
///     }
/// }
/// // The connection is open: its conversation's notices are fed back.
/// assert!(store.is_subscribed(&Topic::Conv(ConvKey::new(user, session))));
/// ```
///
/// **Subscriptions as fingerprints.** A node subscribes to a topic or two
/// per conversation it serves (the conversation, its user's presence); kept
/// as topics, with their strings, they were ~0.2 KiB of every connection.
/// The store keeps a 64-bit keyed hash of each topic instead. Two topics with
/// the same fingerprint (a chance of about n²/2⁶⁵ for n topics, and not one a
/// client can aim for while the key is secret) would only feed a notice the
/// node did not subscribe to, which the node ignores (as it must: with real
/// pub/sub a notice can arrive after an unsubscribe), or drop one after the
/// other's unsubscribe, which pub/sub may do anyway (a notice can be lost;
/// the store's records are the truth). The key is the caller's:
/// [`MemoryStore::new`] takes a random one from std's
/// [`RandomState`], as `HashMap::new` does, and
/// [`MemoryStore::with_hasher`] any other (a fixed one for a reproducible
/// run).
#[derive(Debug, Clone)]
pub struct MemoryStore<S = RandomState> {
    model: Model,
    /// The fingerprints of the subscribed topics.
    subscribed: HashSet<u64, Fingerprints>,
    key: S,
}

impl MemoryStore<RandomState> {
    /// The store `model`, with no subscriptions, fingerprinting topics with
    /// a random key.
    #[must_use]
    pub fn new(model: Model) -> Self {
        Self::with_hasher(model, RandomState::new())
    }
}

impl<S: BuildHasher> MemoryStore<S> {
    /// The store `model`, with no subscriptions, fingerprinting topics with
    /// `key`.
    #[must_use]
    pub fn with_hasher(model: Model, key: S) -> Self {
        Self {
            model,
            subscribed: HashSet::default(),
            key,
        }
    }

    /// The model (for inspection).
    #[must_use]
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Carries out [`Output::Subscribe`](crate::Output::Subscribe): the
    /// notices published on `topic` are fed back from now on.
    pub fn subscribe(&mut self, topic: &Topic) {
        let f = self.fingerprint(topic);
        self.subscribed.insert(f);
    }

    /// Carries out [`Output::Unsubscribe`](crate::Output::Unsubscribe).
    pub fn unsubscribe(&mut self, topic: &Topic) {
        let f = self.fingerprint(topic);
        self.subscribed.remove(&f);
    }

    /// Whether the notices published on `topic` are fed back.
    #[must_use]
    pub fn is_subscribed(&self, topic: &Topic) -> bool {
        self.subscribed.contains(&self.fingerprint(topic))
    }

    /// Carries out [`Output::Store`](crate::Output::Store): applies
    /// `request` atomically and returns the inputs to feed the node, in
    /// order — the [`Input::StoreReply`] for `op`, then an [`Input::Notice`]
    /// for each notice the operation published on a subscribed topic.
    #[must_use = "the reply and the notices must be fed to the node"]
    pub fn apply(&mut self, op: OpId, request: StoreOp) -> Feedback {
        let (reply, mut published) = self.model.apply(request);
        published.retain(|p| self.is_subscribed(&p.topic));
        Feedback {
            reply: Some(Input::StoreReply {
                op,
                result: Ok(reply),
            }),
            notices: published.into_iter(),
        }
    }

    fn fingerprint(&self, topic: &Topic) -> u64 {
        self.key.hash_one(topic)
    }
}

/// The inputs one [`MemoryStore::apply`] feeds back: the store reply first,
/// then the notices of subscribed topics in the order they were published.
#[derive(Debug)]
#[must_use = "the reply and the notices must be fed to the node"]
pub struct Feedback {
    reply: Option<Input>,
    notices: std::vec::IntoIter<Published>,
}

impl Iterator for Feedback {
    type Item = Input;

    fn next(&mut self) -> Option<Input> {
        self.reply
            .take()
            .or_else(|| self.notices.next().map(|p| Input::Notice(p.notice)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.reply.is_some()) + self.notices.len();
        (n, Some(n))
    }
}

impl ExactSizeIterator for Feedback {}

/// The hasher of the fingerprint set: a fingerprint is already a keyed hash,
/// uniform in all its bits, so it is its own hash.
#[derive(Debug, Clone, Copy, Default)]
struct Fingerprints;

impl BuildHasher for Fingerprints {
    type Hasher = Fingerprint;

    fn build_hasher(&self) -> Fingerprint {
        Fingerprint(0)
    }
}

#[derive(Debug)]
struct Fingerprint(u64);

impl Hasher for Fingerprint {
    fn write(&mut self, bytes: &[u8]) {
        // Not used by a `u64` (its `Hash` writes one `u64`); correct anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasherDefault;

    use super::*;
    use crate::ids::{ConvKey, NodeId, SessionId, UserId};
    use crate::store::{CancelOp, Notice, StartOp, StoreConfig, StoreReply};

    fn conv(session: &str) -> ConvKey {
        ConvKey::new(
            UserId::parse("alice").unwrap(),
            SessionId::parse(session).unwrap(),
        )
    }

    fn start(conv: ConvKey, at_ms: u64) -> StoreOp {
        StoreOp::Start(StartOp {
            conv,
            content: "hi".into(),
            client_message_id: None,
            nonce: at_ms,
            owner: NodeId::parse("n1").unwrap(),
            context_limit: 10,
            at_ms,
        })
    }

    fn store() -> MemoryStore<BuildHasherDefault<std::collections::hash_map::DefaultHasher>> {
        MemoryStore::with_hasher(Model::new(StoreConfig::default(), 7), Default::default())
    }

    #[test]
    fn the_reply_comes_first_then_the_notices_of_subscribed_topics() {
        let mut store = store();
        let c = conv("s1");
        store.subscribe(&Topic::Conv(c.clone()));
        let fed: Vec<Input> = store.apply(OpId(3), start(c.clone(), 1_000)).collect();
        assert_eq!(fed.len(), 2, "{fed:?}");
        assert!(matches!(
            &fed[0],
            Input::StoreReply {
                op: OpId(3),
                result: Ok(StoreReply::Started { .. })
            }
        ));
        assert!(matches!(&fed[1], Input::Notice(Notice::Started { conv, .. }) if *conv == c));
    }

    #[test]
    fn notices_of_other_topics_are_not_fed_back() {
        let mut store = store();
        store.subscribe(&Topic::Conv(conv("other")));
        let fed = store.apply(OpId(1), start(conv("s1"), 1_000));
        assert_eq!(fed.len(), 1);
        let fed: Vec<Input> = fed.collect();
        assert!(matches!(&fed[0], Input::StoreReply { op: OpId(1), .. }));
    }

    #[test]
    fn an_unsubscribed_topic_is_no_longer_fed_back() {
        let mut store = store();
        let c = conv("s1");
        let topic = Topic::Conv(c.clone());
        store.subscribe(&topic);
        let _ = store.apply(OpId(1), start(c.clone(), 1_000));
        store.unsubscribe(&topic);
        assert!(!store.is_subscribed(&topic));
        let cancel = StoreOp::Cancel(CancelOp {
            conv: c,
            message_id: None,
            at_ms: 1_001,
        });
        let fed: Vec<Input> = store.apply(OpId(2), cancel).collect();
        assert_eq!(fed.len(), 1, "only the reply: {fed:?}");
    }

    #[test]
    fn the_model_behind_it_is_the_one_applied() {
        let mut store = store();
        let c = conv("s1");
        let _ = store.apply(OpId(1), start(c.clone(), 1_000));
        assert_eq!(store.model().history(&c).len(), 1);
        assert_eq!(store.model().epoch(), 7);
    }

    #[test]
    fn subscriptions_know_exactly_the_subscribed_topics() {
        let user = |u: &str| Topic::User(UserId::parse(u).unwrap());
        let mut store = MemoryStore::new(Model::new(StoreConfig::default(), 1));
        for i in 0..1000 {
            store.subscribe(&user(&format!("u{i}")));
        }
        store.subscribe(&user("u1"));
        store.unsubscribe(&user("u2"));
        assert!(store.is_subscribed(&user("u1")));
        assert!(store.is_subscribed(&user("u999")));
        assert!(!store.is_subscribed(&user("u2")));
        assert!(!store.is_subscribed(&user("u1000")));
        assert_eq!(store.subscribed.len(), 999);
    }
}
