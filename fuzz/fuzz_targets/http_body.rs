//! The `/v1` HTTP API's request bodies: `POST …/messages` and
//! `POST …/cancel` on any bytes (the first byte picks small limits or the
//! defaults), and the router's percent-decoding of a path segment.
//!
//! Checked besides "no panic": an accepted body meets the limits, and
//! every rejection maps to a 400 or a 413.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use weir_core::wire::http::{decode_cancel_request, decode_post_message, HttpError};

fuzz_target!(|data: &[u8]| {
    let (limits, bytes) = common::limits_and_input(data);
    match decode_post_message(bytes, &limits) {
        Ok(post) => {
            assert!(bytes.len() <= limits.max_frame_bytes);
            assert!(!post.content.is_empty() && post.content.len() <= limits.max_content_bytes);
        }
        Err(e) => assert!(matches!(HttpError::from(e).status(), 400 | 413)),
    }
    if let Err(e) = decode_cancel_request(bytes) {
        assert_eq!(HttpError::from(e).status(), 400);
    }
    if let Ok(segment) = std::str::from_utf8(bytes) {
        if let Some(decoded) = weir_runtime::fuzzing::path_segment(segment) {
            assert!(decoded.len() <= segment.len());
        }
    }
});
