//! Identifiers and the injected id source.
//!
//! Every identifier that crosses the wire is a validated newtype: a value of
//! [`SessionId`] is always 1–128 characters of `A-Z a-z 0-9 _ - . :`, a
//! [`MessageId`] is always at most 64 characters, and so on. Parsing is the only
//! way in, so code that holds one never re-checks it.
//!
//! Ids that the server makes (message ids, fencing tokens are the store's) come
//! from an [`IdSource`] that the runtime injects; [`SeededIds`] reproduces a
//! whole run from one seed.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string is empty.
    #[error("{kind} is empty")]
    Empty {
        /// Which kind of id.
        kind: &'static str,
    },
    /// The string is longer than the kind allows.
    #[error("{kind} is longer than {max} characters")]
    TooLong {
        /// Which kind of id.
        kind: &'static str,
        /// The largest allowed length in characters.
        max: usize,
    },
    /// The string holds a character the kind does not allow.
    #[error("{kind} holds a character outside the allowed set")]
    BadChar {
        /// Which kind of id.
        kind: &'static str,
    },
}

fn check(
    s: &str,
    kind: &'static str,
    max: usize,
    allowed: impl Fn(char) -> bool,
) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.chars().count() > max {
        return Err(IdError::TooLong { kind, max });
    }
    if !s.chars().all(allowed) {
        return Err(IdError::BadChar { kind });
    }
    Ok(())
}

fn session_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
}

fn printable(c: char) -> bool {
    !c.is_control()
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr, $allowed:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The largest allowed length in characters.
            pub const MAX_LEN: usize = $max;

            /// Validates `s` and wraps it.
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check(&s, $kind, $max, $allowed)?;
                Ok(Self(s))
            }

            /// The id as a string slice.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A conversation's name on the wire (`session_id`): 1–128 characters of
    /// `A-Z a-z 0-9 _ - . :`. Conversations are per user: see [`ConvKey`].
    SessionId,
    "session_id",
    128,
    session_char
);
string_id!(
    /// A user id: from the token's `sub` or, without auth, the `user_id`
    /// query parameter. 1–128 printable characters.
    UserId,
    "user_id",
    128,
    printable
);
string_id!(
    /// A message id (user turn or assistant reply), made by the server: opaque,
    /// at most 64 printable characters.
    MessageId,
    "message_id",
    64,
    printable
);
string_id!(
    /// A client-chosen request id, echoed in the answer: at most 64 printable
    /// characters.
    RequestId,
    "request_id",
    64,
    printable
);
string_id!(
    /// A client-chosen idempotency key on `chat`: at most 64 printable
    /// characters.
    ClientMessageId,
    "client_message_id",
    64,
    printable
);
string_id!(
    /// A node's name, unique in a cluster: 1–64 characters of
    /// `A-Z a-z 0-9 _ - . :`.
    NodeId,
    "node_id",
    64,
    session_char
);

/// A conversation: a `session_id` is only meaningful together with its user.
///
/// The same `session_id` under another user is another conversation; nothing
/// of it is visible to or changeable by the first user.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct ConvKey {
    /// The conversation's owner.
    pub user: UserId,
    /// The conversation's name.
    pub session: SessionId,
}

impl ConvKey {
    /// Names the conversation `session` of `user`.
    #[must_use]
    pub fn new(user: UserId, session: SessionId) -> Self {
        Self { user, session }
    }
}

impl fmt::Display for ConvKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.user, self.session)
    }
}

/// A connection on one node, numbered by the runtime (unique per node for the
/// node's lifetime).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// Chunk number within one reply: 1, 2, 3 … without gaps. 0 means "none yet".
pub type Seq = u64;

/// Where the server's random ids come from. Injected, so that a seed
/// reproduces a whole run.
pub trait IdSource: fmt::Debug {
    /// 64 fresh random bits.
    fn next_u64(&mut self) -> u64;
}

/// A deterministic [`IdSource`] (SplitMix64): the same seed gives the same ids.
///
/// Runtimes seed it from the operating system's randomness; tests and the
/// simulation seed it with a fixed number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeededIds {
    state: u64,
}

impl SeededIds {
    /// A source that starts at `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }
}

impl IdSource for SeededIds {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_syntax() {
        assert!(SessionId::parse("abc-DEF_1.2:3").is_ok());
        assert_eq!(
            SessionId::parse(""),
            Err(IdError::Empty { kind: "session_id" })
        );
        assert!(matches!(
            SessionId::parse("a b"),
            Err(IdError::BadChar { .. })
        ));
        assert!(SessionId::parse("x".repeat(128)).is_ok());
        assert!(matches!(
            SessionId::parse("x".repeat(129)),
            Err(IdError::TooLong { max: 128, .. })
        ));
    }

    #[test]
    fn ids_deserialize_with_validation() {
        let ok: Result<SessionId, _> = serde_json::from_str("\"s1\"");
        assert!(ok.is_ok());
        let bad: Result<SessionId, _> = serde_json::from_str("\"s 1\"");
        assert!(bad.is_err());
        let long: Result<MessageId, _> = serde_json::from_str(&format!("\"{}\"", "m".repeat(65)));
        assert!(long.is_err());
    }

    #[test]
    fn seeded_ids_repeat() {
        let mut a = SeededIds::new(7);
        let mut b = SeededIds::new(7);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(SeededIds::new(1).next_u64(), SeededIds::new(2).next_u64());
    }
}
