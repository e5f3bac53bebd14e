//! The demo generator's text: deterministic, so tests can predict every
//! chunk. The runtime adds the pace (chunks per second); this module only
//! says *what* the chunks are.
//!
//! Chunk `i` (1-based) of a reply to a prompt is a word from a fixed list
//! chosen by a hash of the prompt and `i`, followed by a space; every
//! eighth chunk ends a sentence. The same prompt and chunk count always give
//! the same reply.
//!
//! What it answers is read from the reply's context by [`DemoPrompt::of`]:
//! every runtime's demo generator starts there.
//!
//! **Per-chat pace.** A prompt that begins with `[pace=MS]` (MS a whole
//! number of milliseconds) is produced at one chunk every MS milliseconds,
//! whatever the generator's configured rate (`--demo-rate`): one server can
//! then stream a fast reply and a slow one, like a model that thinks for
//! 20 s between tokens (`[pace=20000] think`). The tag stays part of the
//! prompt (the text depends on it like on any other word).

use std::time::Duration;

use crate::wire::{Message, Role};

const WORDS: [&str; 32] = [
    "river", "stone", "light", "weir", "water", "flows", "over", "the", "quiet", "field", "and",
    "a", "cold", "wind", "turns", "each", "leaf", "toward", "morning", "while", "slow", "clouds",
    "gather", "above", "old", "bridges", "where", "patient", "herons", "wait", "for", "rain",
];

/// What the demo generator answers, read from a reply's context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoPrompt {
    /// The last user turn's text (empty if there is none): the prompt of
    /// [`DemoText::new`].
    pub text: String,
    /// The words of every turn: the `prompt_tokens` the demo generator
    /// reports as usage.
    pub tokens: u64,
    /// The pause between chunks the prompt asks for with a leading
    /// `[pace=MS]`, if it does (see the [module docs](self)).
    pub pace: Option<Duration>,
}

impl DemoPrompt {
    /// The prompt of a reply whose context is `context` (the conversation's
    /// turns, oldest first, the new user turn last).
    #[must_use]
    pub fn of(context: &[Message]) -> Self {
        let text = context
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let tokens = context
            .iter()
            .map(|m| m.content.split_whitespace().count() as u64)
            .sum();
        let pace = pace_of(&text);
        Self { text, tokens, pace }
    }
}

/// The pace a prompt asks for: `[pace=MS]` at its very start.
fn pace_of(prompt: &str) -> Option<Duration> {
    let rest = prompt.strip_prefix("[pace=")?;
    let (ms, _) = rest.split_once(']')?;
    if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ms.parse().ok().map(Duration::from_millis)
}

/// The chunks of one demo reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoText {
    seed: u64,
    chunks: u32,
    next: u32,
}

impl DemoText {
    /// The reply to `prompt`, `chunks` chunks long.
    #[must_use]
    pub fn new(prompt: &str, chunks: u32) -> Self {
        // FNV-1a: stable across platforms and releases.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in prompt.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Self {
            seed: h,
            chunks,
            next: 1,
        }
    }

    /// Chunk `i` (1-based).
    #[must_use]
    pub fn chunk(&self, i: u32) -> String {
        let mut z = self.seed ^ u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z ^= z >> 29;
        let word = WORDS[usize::try_from(z % WORDS.len() as u64).unwrap_or(0)];
        if i % 8 == 0 || i == self.chunks {
            format!("{word}. ")
        } else {
            format!("{word} ")
        }
    }

    /// The whole reply.
    #[must_use]
    pub fn full(prompt: &str, chunks: u32) -> String {
        Self::new(prompt, chunks).collect()
    }
}

impl Iterator for DemoText {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.next > self.chunks {
            return None;
        }
        let c = self.chunk(self.next);
        self.next += 1;
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_prompt_same_text() {
        assert_eq!(DemoText::full("hi", 20), DemoText::full("hi", 20));
        assert_ne!(DemoText::full("hi", 20), DemoText::full("ho", 20));
        assert_eq!(DemoText::new("hi", 5).count(), 5);
        assert!(DemoText::full("hi", 3).ends_with(". "));
    }

    #[test]
    fn the_prompt_is_the_last_user_turn_and_every_word_counts() {
        let turn = |role, content: &str| Message {
            message_id: crate::ids::MessageId::parse(format!("m{}", content.len())).unwrap(),
            role,
            content: content.into(),
            status: crate::wire::MessageStatus::Completed,
            created_at_ms: 0,
            seq: 0,
        };
        let context = [
            turn(Role::User, "first question"),
            turn(Role::Assistant, "an answer of five words"),
            turn(Role::User, "second"),
        ];
        let prompt = DemoPrompt::of(&context);
        assert_eq!(prompt.text, "second");
        assert_eq!(prompt.tokens, 2 + 5 + 1);
        assert_eq!(
            DemoPrompt::of(&[]),
            DemoPrompt {
                text: String::new(),
                tokens: 0,
                pace: None
            }
        );
    }

    #[test]
    fn a_leading_pace_tag_sets_the_pace_of_that_reply_only() {
        assert_eq!(pace_of("[pace=20000] think"), Some(Duration::from_secs(20)));
        assert_eq!(pace_of("[pace=0]"), Some(Duration::ZERO));
        assert_eq!(pace_of("think [pace=20000]"), None, "only at the start");
        assert_eq!(pace_of("[pace=]"), None);
        assert_eq!(pace_of("[pace=-5]"), None);
        assert_eq!(pace_of("[pace=5"), None);
        assert_eq!(pace_of("[pace=99999999999999999999999]"), None);
        assert_eq!(pace_of("hello"), None);
    }
}
