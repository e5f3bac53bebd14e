//! Native `/v1/ws` client frames: `decode_client_frame` on any bytes, with
//! the default limits and with small ones (the first byte picks).
//!
//! Checked besides "no panic": an accepted frame re-encodes to a frame that
//! decodes to the same value and meets the limits; a rejected one is
//! answered with an `error` frame that is itself a valid server frame; the
//! connection is closed exactly for an oversized frame (1009) or one that
//! is not UTF-8 (1007).
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use weir_core::wire::{
    decode_client_frame, decode_server_frame, encode_client_frame, ClientFrame, CloseCode,
    DecodeError, Limits,
};

fuzz_target!(|data: &[u8]| {
    let (limits, bytes) = common::limits_and_input(data);
    match decode_client_frame(bytes, &limits) {
        Ok(frame) => {
            assert!(bytes.len() <= limits.max_frame_bytes);
            if let ClientFrame::Chat(chat) = &frame {
                assert!(!chat.content.is_empty());
                assert!(chat.content.len() <= limits.max_content_bytes);
                assert_eq!(chat.content.trim(), chat.content);
            }
            let unbounded = Limits {
                max_frame_bytes: usize::MAX,
                ..limits
            };
            let again = decode_client_frame(encode_client_frame(&frame).as_bytes(), &unbounded);
            assert_eq!(again.as_ref(), Ok(&frame));
        }
        Err(e) => {
            let expected = match e.error {
                DecodeError::FrameTooLarge { len, max } => {
                    assert!(len > max && len == bytes.len());
                    Some(CloseCode::TooLarge)
                }
                DecodeError::InvalidUtf8 => {
                    assert!(std::str::from_utf8(bytes).is_err());
                    Some(CloseCode::InvalidData)
                }
                _ => None,
            };
            assert_eq!(e.close(), expected);
            let answer = e.to_server_frame();
            assert_eq!(decode_server_frame(&answer.encode()).ok(), Some(answer));
        }
    }
});
