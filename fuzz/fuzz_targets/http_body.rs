//! The HTTP request bodies: the `/v1` API's `POST …/messages` and
//! `POST …/cancel`, and the seed front end's `POST /api/chat`, on any bytes
//! (the first byte picks small limits or the defaults), and the router's
//! percent-decoding of a path segment.
//!
//! Checked besides "no panic": an accepted body meets the limits, and
//! every rejection maps to a 400 or a 413 (for `/api/chat`: a 413 exactly
//! when the body or its message is over the limit).
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use weir_core::dialect::compat_http::decode_compat_chat;
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
    match decode_compat_chat(bytes, &limits) {
        Ok(chat) => {
            assert!(bytes.len() <= limits.max_frame_bytes);
            assert!(!chat.message.is_empty() && chat.message.len() <= limits.max_content_bytes);
            assert_eq!(chat.message.trim(), chat.message);
        }
        Err(e) => {
            let status = e.status;
            assert!(matches!(status, 400 | 413), "{e:?}");
            if bytes.len() > limits.max_frame_bytes {
                assert_eq!(status, 413);
            }
        }
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
