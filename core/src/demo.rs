//! The demo generator's text: deterministic, so tests can predict every
//! chunk. The runtime adds the pace (chunks per second); this module only
//! says *what* the chunks are.
//!
//! Chunk `i` (1-based) of a reply to a prompt is a word from a fixed list
//! chosen by a hash of the prompt and `i`, followed by a space; every
//! eighth chunk ends a sentence. The same prompt and chunk count always give
//! the same reply.

const WORDS: [&str; 32] = [
    "river", "stone", "light", "weir", "water", "flows", "over", "the", "quiet", "field", "and",
    "a", "cold", "wind", "turns", "each", "leaf", "toward", "morning", "while", "slow", "clouds",
    "gather", "above", "old", "bridges", "where", "patient", "herons", "wait", "for", "rain",
];

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
        DemoText::new(prompt, chunks).collect()
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
}
