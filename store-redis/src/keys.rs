//! The key and channel names of the crate docs' key layout: every name the
//! store writes or subscribes to is made here.

use weir_core::ids::{ConvKey, SessionId, UserId};
use weir_core::store::Topic;

use crate::RedisStore;

impl RedisStore {
    /// The epoch key.
    #[must_use]
    pub fn epoch_key(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    /// The sweep's index of conversations that may hold a live reply.
    pub(crate) fn index_key(&self) -> String {
        format!("{}:live", self.prefix)
    }

    /// The sweep's index of users whose presence moves on by itself.
    pub(crate) fn presence_index_key(&self) -> String {
        format!("{}:presence", self.prefix)
    }

    /// A conversation's meta key (the script's `KEYS[1]`).
    #[must_use]
    pub fn conv_key(&self, conv: &ConvKey) -> String {
        format!("{}:{{c:{}/{}}}:conv", self.prefix, conv.user, conv.session)
    }

    /// The conversation of a meta key (`None`: not one of ours).
    pub(crate) fn conv_of_key(&self, key: &str) -> Option<ConvKey> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(":{c:")?;
        let tag = rest.strip_suffix("}:conv")?;
        let (user, session) = tag.split_once('/')?;
        Some(ConvKey::new(
            UserId::parse(user).ok()?,
            SessionId::parse(session).ok()?,
        ))
    }

    /// A user's presence entries key (the script's `KEYS[1]`).
    pub(crate) fn presence_key(&self, user: &UserId) -> String {
        format!("{}:{{p:{user}}}:e", self.prefix)
    }

    /// The pub/sub channel of a topic.
    #[must_use]
    pub fn channel(&self, topic: &Topic) -> String {
        match topic {
            Topic::Conv(c) => format!("{}:{{c:{}/{}}}:ch", self.prefix, c.user, c.session),
            Topic::User(u) => format!("{}:u:{u}", self.prefix),
            Topic::Node(n) => format!("{}:n:{n}", self.prefix),
        }
    }

    /// A pattern that matches every channel of this store (for tests and
    /// tools; nodes subscribe to exact channels).
    #[must_use]
    pub fn channel_pattern(&self) -> String {
        format!("{}:*", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use weir_core::store::StoreConfig;

    use super::*;

    #[test]
    fn a_conversation_key_reads_back_as_its_conversation() {
        let store = RedisStore::new("weir", StoreConfig::default(), 0);
        let conv = ConvKey::new(
            UserId::parse("alice").unwrap(),
            SessionId::parse("chat-1").unwrap(),
        );
        let key = store.conv_key(&conv);
        assert_eq!(key, "weir:{c:alice/chat-1}:conv");
        assert_eq!(store.conv_of_key(&key), Some(conv));
        assert_eq!(store.conv_of_key("other:{c:alice/chat-1}:conv"), None);
        assert_eq!(store.conv_of_key("weir:{p:alice}:e"), None);
    }
}
