//! The key and channel names of the crate docs' key layout: every name the
//! store writes or subscribes to is made here, and so is the one name read
//! back (a sweep index entry, [`RedisStore::conv_of_key`]).
//!
//! # Ids in names
//!
//! A user id may hold any printable character, so ids are escaped before
//! they go into a name. Three characters shape the layout: `{` and `}`
//! (Redis Cluster hashes only the part between the first `{` and the next
//! `}`), `/` (between the user and the session in a conversation's tag: the
//! only place a name is split). They are written `%XX` (the UTF-8 byte in
//! upper-case hex), and so is `%` itself and any control character (never
//! in a valid id); every other character stays as it is, so an escaped id
//! never holds a reserved character and unescapes to itself.
//!
//! An id without a reserved character is written as it is, under the same
//! name as in the layout before escaping (so a rolling upgrade keeps its
//! data: see `docs/store.md`). A name whose ids needed escaping marks its
//! kind with `%` (`{c%:org%2Falice/s1}`, `u%:a%7Bb`), so it never equals a
//! name an older weir made for another id (`{c:org%2Falice/s1}` was user
//! `org%2Falice`'s).
//!
//! Session and node ids never need escaping (their characters are
//! `A-Z a-z 0-9 _ - . :`; tested below).

use std::fmt::Write as _;

use weir_core::ids::{ConvKey, SessionId, UserId};
use weir_core::store::Topic;

use crate::RedisStore;

/// Whether `c` must be escaped in a name.
fn reserved(c: char) -> bool {
    matches!(c, '%' | '/' | '{' | '}') || c.is_control()
}

/// `id` with every reserved character written `%XX` (per UTF-8 byte).
#[must_use]
pub(crate) fn escape(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for c in id.chars() {
        if reserved(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The id that [`escape`] made `s` from (`None`: no escape made it).
#[must_use]
pub(crate) fn unescape(s: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            if hex.bytes().any(|h| h.is_ascii_lowercase()) {
                return None;
            }
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    let id = String::from_utf8(bytes).ok()?;
    (escape(&id) == s).then_some(id)
}

/// `kind:ID/ID…`, or `kind%:ESCAPED/ESCAPED…` when an id needed escaping.
pub(crate) fn tagged(kind: &str, ids: &[&str]) -> String {
    if ids.iter().all(|id| !id.chars().any(reserved)) {
        format!("{kind}:{}", ids.join("/"))
    } else {
        let escaped: Vec<String> = ids.iter().map(|id| escape(id)).collect();
        format!("{kind}%:{}", escaped.join("/"))
    }
}

/// A conversation's hash tag, without its braces.
fn conv_tag(conv: &ConvKey) -> String {
    tagged("c", &[conv.user.as_str(), conv.session.as_str()])
}

impl RedisStore {
    /// The epoch key.
    #[must_use]
    pub fn epoch_key(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    /// Partition `part`'s share of the sweep's index of conversations that
    /// may hold a live reply (`P:{i:N}:live`: each partition its own slot).
    pub(crate) fn index_key(&self, part: usize) -> String {
        format!("{}:{{i:{part}}}:live", self.prefix)
    }

    /// Partition `part`'s share of the sweep's index of users whose presence
    /// moves on by itself.
    pub(crate) fn presence_index_key(&self, part: usize) -> String {
        format!("{}:{{i:{part}}}:presence", self.prefix)
    }

    /// The sweep-index partition of a conversation.
    pub(crate) fn conv_partition(conv: &ConvKey) -> usize {
        partition(&conv_tag(conv))
    }

    /// The sweep-index partition of a user.
    pub(crate) fn user_partition(user: &UserId) -> usize {
        partition(user.as_str())
    }

    /// A conversation's meta key (the script's `KEYS[1]`).
    #[must_use]
    pub fn conv_key(&self, conv: &ConvKey) -> String {
        format!("{}:{{{}}}:conv", self.prefix, conv_tag(conv))
    }

    /// A conversation's fence key: written by each settle and cancel that
    /// waits for its replicas (`replicas.rs`), so that the call always
    /// replicates.
    pub(crate) fn fence_key(&self, conv: &ConvKey) -> String {
        format!("{}:{{{}}}:fence", self.prefix, conv_tag(conv))
    }

    /// The conversation of a meta key (`None`: not one of ours, or made by
    /// an older weir for an id it did not escape).
    pub(crate) fn conv_of_key(&self, key: &str) -> Option<ConvKey> {
        let tag = key
            .strip_prefix(&self.prefix)?
            .strip_prefix(":{")?
            .strip_suffix("}:conv")?;
        let (escaped, tag) = match tag.strip_prefix("c%:") {
            Some(t) => (true, t),
            None => (false, tag.strip_prefix("c:")?),
        };
        let (user, session) = tag.split_once('/')?;
        let (user, session) = if escaped {
            (unescape(user)?, unescape(session)?)
        } else {
            (user.to_owned(), session.to_owned())
        };
        let conv = ConvKey::new(UserId::parse(user).ok()?, SessionId::parse(session).ok()?);
        // Only the name this conversation has now (an older weir's name for
        // an id with a reserved character reads as something else).
        (self.conv_key(&conv) == key).then_some(conv)
    }

    /// A user's presence entries key (the script's `KEYS[1]`).
    pub(crate) fn presence_key(&self, user: &UserId) -> String {
        format!("{}:{{{}}}:e", self.prefix, tagged("p", &[user.as_str()]))
    }

    /// The shard channel of a topic (`SPUBLISH`/`SSUBSCRIBE`), in the slot of
    /// the keys it speaks of: a conversation's channel shares its keys' hash
    /// tag, a user's its presence keys', a node's has a tag of its own.
    #[must_use]
    pub fn channel(&self, topic: &Topic) -> String {
        let tag = match topic {
            Topic::Conv(c) => conv_tag(c),
            Topic::User(u) => tagged("p", &[u.as_str()]),
            Topic::Node(n) => tagged("n", &[n.as_str()]),
        };
        format!("{}:{{{tag}}}:ch", self.prefix)
    }
}

/// How many partitions each sweep index is split into (each its own hash
/// tag, so a Redis Cluster spreads them over its shards).
pub(crate) const PARTITIONS: usize = 16;

/// The partition of a name (FNV-1a: stable across builds and machines).
fn partition(name: &str) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    usize::try_from(h).unwrap_or(0) % PARTITIONS
}

/// The Redis Cluster hash slot of a key or shard channel name: CRC16
/// (XMODEM) of its hash tag (what lies between the first `{` and the next
/// `}`, when that is not empty), else of the whole name, modulo 16 384.
#[must_use]
pub fn slot(name: &str) -> u16 {
    let bytes = name.as_bytes();
    let hashed = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &bytes[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(bytes);
    let mut crc: u16 = 0;
    for &b in hashed {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            };
        }
    }
    crc % 16_384
}

#[cfg(test)]
mod tests {
    use weir_core::ids::NodeId;
    use weir_core::store::StoreConfig;

    use super::*;

    /// Ids that broke the layout before escaping, and their neighbours.
    const HOSTILE: [&str; 12] = [
        "org/alice",
        "a:{b",
        "}",
        "{",
        "*",
        "a b",
        "ünïcödé 😀",
        "%",
        "%2F",
        "a%7Bb",
        "x}:conv",
        "/{c:u/s}/",
    ];

    fn store() -> RedisStore {
        RedisStore::new("weir", StoreConfig::default(), 0)
    }

    fn conv(user: &str, session: &str) -> ConvKey {
        ConvKey::new(
            UserId::parse(user).unwrap(),
            SessionId::parse(session).unwrap(),
        )
    }

    #[test]
    fn an_escaped_id_holds_no_reserved_character_and_unescapes_to_itself() {
        for id in HOSTILE.iter().copied().chain(["alice", "\u{7}bell"]) {
            let e = escape(id);
            assert!(
                !e.contains(['/', '{', '}']) && !e.chars().any(char::is_control),
                "{id:?} → {e:?}"
            );
            assert!(
                e.split('%')
                    .skip(1)
                    .all(|h| h.len() >= 2 && h[..2].bytes().all(|b| b.is_ascii_hexdigit())),
                "every % starts an escape: {id:?} → {e:?}"
            );
            assert_eq!(unescape(&e).as_deref(), Some(id), "{e:?}");
        }
        assert_eq!(escape("org/alice"), "org%2Falice");
        assert_eq!(escape("a:{b"), "a:%7Bb");
        assert_eq!(escape("%"), "%25");
        assert_eq!(escape("ü/"), "ü%2F");
    }

    #[test]
    fn only_what_escape_makes_unescapes() {
        for s in ["%", "%2", "%zz", "%2f", "a/b", "{", "%FF", "%C3"] {
            assert_eq!(unescape(s), None, "{s:?}");
        }
    }

    #[test]
    fn plain_ids_keep_the_names_of_the_layout_before_escaping() {
        let store = store();
        let c = conv("alice@example.com", "chat:1");
        assert_eq!(store.conv_key(&c), "weir:{c:alice@example.com/chat:1}:conv");
        let auth0 = UserId::parse("auth0|5f7c x*ü").unwrap();
        assert_eq!(store.presence_key(&auth0), "weir:{p:auth0|5f7c x*ü}:e");
        assert_eq!(
            store.channel(&Topic::User(auth0)),
            "weir:{p:auth0|5f7c x*ü}:ch"
        );
        assert_eq!(
            store.channel(&Topic::Conv(c)),
            "weir:{c:alice@example.com/chat:1}:ch"
        );
        let node = NodeId::parse("node-a.1:x_y").unwrap();
        assert_eq!(
            store.channel(&Topic::Node(node)),
            "weir:{n:node-a.1:x_y}:ch"
        );
    }

    #[test]
    fn hostile_ids_get_one_hash_tag_and_marked_names() {
        let store = store();
        let c = conv("a:{b", "s1");
        assert_eq!(store.conv_key(&c), "weir:{c%:a:%7Bb/s1}:conv");
        assert_eq!(store.channel(&Topic::Conv(c)), "weir:{c%:a:%7Bb/s1}:ch");
        let u = UserId::parse("org/alice").unwrap();
        assert_eq!(store.presence_key(&u), "weir:{p%:org%2Falice}:e");
        assert_eq!(
            store.channel(&Topic::User(u.clone())),
            "weir:{p%:org%2Falice}:ch"
        );
        assert_eq!(
            slot(&store.channel(&Topic::User(u.clone()))),
            slot(&store.presence_key(&u))
        );
        for user in HOSTILE {
            let c = conv(user, "s:1");
            for name in [store.conv_key(&c), store.channel(&Topic::Conv(c.clone()))] {
                // Redis Cluster hashes from the first `{` to the next `}`:
                // that must be the whole tag, so every key of the
                // conversation is on one shard.
                let open = name.find('{').unwrap();
                let close = open + name[open..].find('}').unwrap();
                assert_eq!(name.matches('{').count(), 1, "{name}");
                assert_eq!(name.matches('}').count(), 1, "{name}");
                assert!(name[close..].starts_with("}:"), "{name}");
            }
        }
    }

    #[test]
    fn slots_are_redis_clusters() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot("123456789"), 12_739);
        assert_eq!(slot("foo"), 12_182);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(slot("foo{}{bar}"), slot("foo{}{bar}"));
        assert_ne!(slot("foo{}{bar}"), slot("bar"));
        assert_eq!(slot("foo{{bar}}zap"), slot("{bar"));
        let store = store();
        let c = conv("a:{b", "s1");
        assert_eq!(
            slot(&store.conv_key(&c)),
            slot(&store.channel(&Topic::Conv(c)))
        );
    }

    #[test]
    fn a_conversation_key_reads_back_as_its_conversation() {
        let store = store();
        for user in HOSTILE.iter().copied().chain(["alice", "org.alice"]) {
            let c = conv(user, "chat-1:x");
            let key = store.conv_key(&c);
            assert_eq!(store.conv_of_key(&key), Some(c), "{key}");
        }
        assert_eq!(
            store.conv_of_key("weir:{c:alice/chat-1}:conv"),
            Some(conv("alice", "chat-1"))
        );
        assert_eq!(store.conv_of_key("other:{c:alice/chat-1}:conv"), None);
        assert_eq!(store.conv_of_key("weir:{p:alice}:e"), None);
    }

    #[test]
    fn no_name_of_the_layout_before_escaping_reads_as_another_conversation() {
        let store = store();
        // An older weir's names for users with reserved characters: not
        // ours (the sweep drops them from its index; they expire).
        for old in [
            "weir:{c:org/alice/s1}:conv",
            "weir:{c:a:{b/s1}:conv",
            "weir:{c:%/s1}:conv",
            "weir:{c:org%2Falice/s1}:conv",
        ] {
            assert_eq!(store.conv_of_key(old), None, "{old}");
        }
        // User `org%2Falice`'s name of an older weir is nobody's name now:
        // not user `org/alice`'s, not user `org%2Falice`'s.
        let old = "weir:{c:org%2Falice/s1}:conv";
        assert_ne!(store.conv_key(&conv("org/alice", "s1")), old);
        assert_ne!(store.conv_key(&conv("org%2Falice", "s1")), old);
    }

    #[test]
    fn session_and_node_ids_never_need_escaping() {
        // Every character a session or node id may hold stays as it is, so
        // the script may build a node's channel from the owner it stored.
        for c in (0..=0x2FFFFu32).filter_map(char::from_u32) {
            let s = c.to_string();
            if SessionId::parse(s.as_str()).is_ok() || NodeId::parse(s.as_str()).is_ok() {
                assert!(!reserved(c), "{c:?}");
            }
        }
    }
}
