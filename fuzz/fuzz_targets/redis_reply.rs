//! What Redis sends weir: replies of the store script (parsed from RESP as
//! the client reads them, then through every decoder, or an error reply
//! through the refusal classification) and pub/sub notice payloads. The
//! first byte picks which; the next 16 bytes give the epoch and `after_seq`
//! for the script-reply decoders.
//!
//! Checked besides "no panic": a notice that decodes re-encodes to the same
//! notice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_store_redis::fuzzing::{notice, script_reply};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    if pick & 1 == 0 {
        if let Ok(n) = notice(rest) {
            let text = serde_json::to_vec(&n).expect("a notice serializes");
            assert_eq!(notice(&text).ok(), Some(n));
        }
    } else if rest.len() >= 16 {
        let (numbers, resp) = rest.split_at(16);
        let (epoch, after_seq) = numbers.split_at(8);
        let epoch = u64::from_le_bytes(epoch.try_into().expect("8 bytes"));
        let after_seq = u64::from_le_bytes(after_seq.try_into().expect("8 bytes"));
        let _ = script_reply(resp, epoch, after_seq);
    }
});
