//! Set-up shared by the targets (each includes it with `mod common;`).

use weir_core::wire::Limits;

/// The limits an input runs with, and the bytes it feeds: an odd first byte
/// picks small limits (`max_frame_bytes` 64 + byte, `max_content_bytes`
/// byte / 2), so that the size checks are reached with small inputs; an
/// even one the defaults. The rest is the input.
#[must_use]
pub fn limits_and_input(data: &[u8]) -> (Limits, &[u8]) {
    match data.split_first() {
        Some((&b, rest)) if b & 1 == 1 => (
            Limits {
                max_frame_bytes: 64 + usize::from(b),
                max_content_bytes: usize::from(b >> 1),
            },
            rest,
        ),
        _ => (Limits::default(), data.get(1..).unwrap_or_default()),
    }
}
