//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, off
//! by default; nothing in the workspace turns it on).
//!
//! Redis is trusted less than it looks: a script from another weir version,
//! another program on the same keys or channels, a proxy that rewrites
//! errors. Whatever it answers must become a reply or a [`StoreError`],
//! never a panic.

use weir_core::ids::MessageId;
use weir_core::store::{Notice, StoreError, StoreReply};
use weir_core::wire::{Message, MessageStatus, Role};

use crate::decode::{
    decode_cancel, decode_presence, decode_read, decode_snapshot, decode_start, decode_write,
};
use crate::{Failure, RedisStore};

/// Parses `resp` as one RESP2/RESP3 reply (as the redis client would read
/// it from the socket) and hands it to every decoder of the script's
/// replies, each as it is called in `plan.rs`, with `epoch` and
/// `after_seq`; an error reply goes through the classification the store
/// uses (refusal, connection lost, other). Returns how many decoders
/// accepted it.
///
/// # Panics
/// Only if a decoder does: that is what the fuzz target looks for.
#[must_use]
pub fn script_reply(resp: &[u8], epoch: u64, after_seq: u64) -> usize {
    let Ok(value) = redis::parse_redis_value(resp) else {
        return 0;
    };
    let value = match value.extract_error() {
        Ok(v) => v,
        Err(e) => {
            let failure = Failure::Redis(e);
            let _ = failure.is_connection_lost();
            let _ = StoreError::from(failure);
            return 0;
        }
    };
    let user_message = Message {
        message_id: MessageId::parse("0.1u".to_owned()).expect("a valid id"),
        role: Role::User,
        content: "hi".to_owned(),
        status: MessageStatus::Completed,
        created_at_ms: 1,
        seq: 0,
    };
    let reply_id = MessageId::parse("0.1r".to_owned()).expect("a valid id");
    let outcomes: [Result<StoreReply, Failure>; 6] = [
        decode_presence(value.clone()),
        decode_snapshot(value.clone(), epoch),
        decode_start(value.clone(), epoch, user_message, reply_id),
        decode_cancel(value.clone()).map(|(reply, _owner)| reply),
        decode_write(value.clone(), epoch),
        decode_read(value, epoch, after_seq),
    ];
    outcomes
        .into_iter()
        .map(|r| r.map_err(StoreError::from))
        .filter(Result::is_ok)
        .count()
}

/// Decodes a pub/sub notice payload as the store's subscriber does.
///
/// # Errors
/// The payload is not a notice.
pub fn notice(payload: &[u8]) -> Result<Notice, serde_json::Error> {
    RedisStore::decode_notice(payload)
}
