//! [`StoreOp::Register`] and [`StoreOp::Locate`]: which user's conversation
//! of a session a reply belongs to, for a request that names only the
//! session and the reply's id (the seed front end's `POST /api/cancel`).
//!
//! | key | type | holds | expiry |
//! | --- | --- | --- | --- |
//! | `P:{x:S/NONCE}` | string | `EXPIRES_MS USER`: the reply made with `NONCE` (16 hex digits) in session `S` is `USER`'s | the idempotency window + slack |
//!
//! Each operation is one command on one key, whose hash tag is its own (the
//! conversation's tag cannot be known without the user): Redis Cluster
//! serves it from one slot. `SET` is refused as a whole by a full Redis
//! (`OOM`), as [`StoreOp::is_refused_when_full`] says; `GET` never is.
//!
//! [`StoreOp::Register`]: weir_core::store::StoreOp::Register
//! [`StoreOp::Locate`]: weir_core::store::StoreOp::Locate
//! [`StoreOp::is_refused_when_full`]: weir_core::store::StoreOp::is_refused_when_full

use redis::aio::ConnectionLike;
use weir_core::ids::{SessionId, UserId};
use weir_core::store::{reply_nonce, LocateOp, RegisterOp, StoreReply};

use crate::keys::tagged;
use crate::{Failure, RedisStore, SLACK_MS};

impl RedisStore {
    /// The locator of the reply made with `nonce` in `session`.
    #[must_use]
    pub fn locator_key(&self, session: &SessionId, nonce: u64) -> String {
        let nonce = format!("{nonce:016x}");
        format!(
            "{}:{{{}}}",
            self.prefix,
            tagged("x", &[session.as_str(), &nonce])
        )
    }

    pub(crate) async fn register<C: ConnectionLike>(
        &self,
        conn: &mut C,
        op: RegisterOp,
    ) -> Result<StoreReply, Failure> {
        let ttl = self.config.idempotency_ttl_ms;
        let expires = op.at_ms.saturating_add(ttl);
        let _: redis::Value = redis::cmd("SET")
            .arg(self.locator_key(&op.conv.session, op.nonce))
            .arg(format!("{expires} {}", op.conv.user))
            .arg("PX")
            .arg(ttl.saturating_add(SLACK_MS).max(1))
            .query_async(conn)
            .await?;
        Ok(StoreReply::Refreshed)
    }

    pub(crate) async fn locate<C: ConnectionLike>(
        &self,
        conn: &mut C,
        op: LocateOp,
    ) -> Result<StoreReply, Failure> {
        let Some(nonce) = reply_nonce(&op.message_id) else {
            return Ok(StoreReply::Located { user: None });
        };
        let v: Option<String> = redis::cmd("GET")
            .arg(self.locator_key(&op.session, nonce))
            .query_async(conn)
            .await?;
        let Some(v) = v else {
            return Ok(StoreReply::Located { user: None });
        };
        let bad = || Failure::Protocol(format!("locator holds {v:?}"));
        let (expires, user) = v.split_once(' ').ok_or_else(bad)?;
        let expires: u64 = expires.parse().map_err(|_| bad())?;
        let user = UserId::parse(user).map_err(|_| bad())?;
        Ok(StoreReply::Located {
            user: (expires > op.at_ms).then_some(user),
        })
    }
}

#[cfg(test)]
mod tests {
    use weir_core::store::StoreConfig;

    use super::*;

    #[test]
    fn a_locator_has_its_own_hash_tag_named_by_session_and_nonce() {
        let s = RedisStore::new("weir", StoreConfig::default(), 0);
        let session = SessionId::parse("session_1796272685223").unwrap();
        assert_eq!(
            s.locator_key(&session, 0xab),
            "weir:{x:session_1796272685223/00000000000000ab}"
        );
    }
}
