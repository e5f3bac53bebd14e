//! The caps' operations ([`StoreOp::Admit`], [`StoreOp::CapRelease`],
//! [`StoreOp::CapKeep`]) as calls of their own script (`src/lua/caps.lua`):
//! each touches one scope's keys, under the scope's own hash tag —
//! `{u:USER}` for a user, `{ip:ADDR}` for a client address — never a
//! conversation's or another scope's.
//!
//! | key | type | holds | expiry |
//! | --- | --- | --- | --- |
//! | `P:{u:U}:slots:conns`, `P:{ip:A}:slots:conns` | sorted set | open connections: `NODE\|CONN` scored by when the slot expires (ms) | slot lifetime + slack, moved by every admit and keep |
//! | `P:{u:U}:slots:streams` | sorted set | streaming replies: `NODE\|NONCE` scored likewise | as above |
//! | `P:{u:U}:bucket` | hash | the chat bucket: `u` (units, a token is 60 000), `t` (as of, ms) | until full again + slack |
//!
//! [`StoreOp::Admit`]: weir_core::store::StoreOp::Admit
//! [`StoreOp::CapRelease`]: weir_core::store::StoreOp::CapRelease
//! [`StoreOp::CapKeep`]: weir_core::store::StoreOp::CapKeep

use redis::aio::ConnectionLike;
use redis::Value;
use weir_core::caps::SLOT_RETRY_AFTER_MS;
use weir_core::store::{AdmitOp, CapKeepOp, CapReleaseOp, CapScope, SlotKind, StoreReply};

use crate::decode::Fields;
use crate::keys::tagged;
use crate::{Failure, RedisStore, SLACK_MS};

/// The caps script's source.
pub(crate) const CAPS_SCRIPT: &str = include_str!("lua/caps.lua");

/// A scope's hash tag, without its braces.
fn scope_tag(scope: &CapScope) -> String {
    match scope {
        CapScope::User(u) => tagged("u", &[u.as_str()]),
        CapScope::Ip(ip) => tagged("ip", &[&ip.to_string()]),
    }
}

impl RedisStore {
    /// A scope's slots of `kind` (the caps script's `KEYS[1]`).
    #[must_use]
    pub fn slots_key(&self, scope: &CapScope, kind: SlotKind) -> String {
        format!(
            "{}:{{{}}}:slots:{}",
            self.prefix,
            scope_tag(scope),
            kind.as_str()
        )
    }

    /// A scope's chat bucket (the caps script's `KEYS[2]`).
    #[must_use]
    pub fn bucket_key(&self, scope: &CapScope) -> String {
        format!("{}:{{{}}}:bucket", self.prefix, scope_tag(scope))
    }

    pub(crate) async fn admit<C: ConnectionLike>(
        &self,
        conn: &mut C,
        op: AdmitOp,
    ) -> Result<StoreReply, Failure> {
        let (per_min, burst) = op.rate.map_or((0, 0), |r| (r.per_minute, r.burst));
        let args = vec![
            "admit".to_owned(),
            op.holder,
            op.limit.to_string(),
            op.ttl_ms.to_string(),
            per_min.to_string(),
            burst.to_string(),
            SLOT_RETRY_AFTER_MS.to_string(),
        ];
        let v = self
            .caps_call_op(conn, &op.scope, op.kind, op.at_ms, args)
            .await?;
        let mut f = Fields::reply(v)?;
        match f.tag_str()?.as_str() {
            "admitted" => Ok(StoreReply::Admitted),
            "limited" => {
                let cap = match f.str()?.as_str() {
                    "slots" => op.kind.cap(&op.scope),
                    "rate" => weir_core::caps::Cap::ChatRate,
                    other => return Err(Failure::Protocol(format!("admit: limited by {other}"))),
                };
                Ok(StoreReply::Limited {
                    cap,
                    retry_after_ms: f.u64()?,
                })
            }
            other => Err(Failure::Protocol(format!("admit: {other}"))),
        }
    }

    pub(crate) async fn cap_release<C: ConnectionLike>(
        &self,
        conn: &mut C,
        op: CapReleaseOp,
    ) -> Result<StoreReply, Failure> {
        let args = vec!["release".to_owned(), op.holder];
        let v = self
            .caps_call_op(conn, &op.scope, op.kind, op.at_ms, args)
            .await?;
        Fields::reply(v)?.tag("ok")?;
        Ok(StoreReply::Refreshed)
    }

    pub(crate) async fn cap_keep<C: ConnectionLike>(
        &self,
        conn: &mut C,
        op: CapKeepOp,
    ) -> Result<StoreReply, Failure> {
        let mut args = vec!["keep".to_owned(), op.ttl_ms.to_string()];
        args.extend(op.holders);
        let v = self
            .caps_call_op(conn, &op.scope, op.kind, op.at_ms, args)
            .await?;
        Fields::reply(v)?.tag("ok")?;
        Ok(StoreReply::Refreshed)
    }

    /// `args[0]` is the op name (`ARGV[1]`), the rest follow `at_ms` and
    /// the slack.
    async fn caps_call_op<C: ConnectionLike>(
        &self,
        conn: &mut C,
        scope: &CapScope,
        kind: SlotKind,
        at_ms: u64,
        mut args: Vec<String>,
    ) -> Result<Value, Failure> {
        let op = args.remove(0);
        let mut inv = self.scripts.caps.key(self.slots_key(scope, kind));
        inv.key(self.bucket_key(scope));
        inv.arg(op).arg(at_ms).arg(SLACK_MS);
        for a in args {
            inv.arg(a);
        }
        Ok(inv.invoke_async(conn).await?)
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use weir_core::ids::UserId;
    use weir_core::store::StoreConfig;

    use super::*;

    #[test]
    fn every_scope_is_one_hash_tag_and_hostile_ids_cannot_break_it() {
        let s = RedisStore::new("weir", StoreConfig::default(), 0);
        let alice = CapScope::User(UserId::parse("alice").unwrap());
        assert_eq!(
            s.slots_key(&alice, SlotKind::Streams),
            "weir:{u:alice}:slots:streams"
        );
        assert_eq!(s.bucket_key(&alice), "weir:{u:alice}:bucket");
        let hostile = CapScope::User(UserId::parse("a}:{b/c").unwrap());
        assert_eq!(
            s.slots_key(&hostile, SlotKind::Connections),
            "weir:{u%:a%7D:%7Bb%2Fc}:slots:conns"
        );
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(
            s.slots_key(&CapScope::Ip(v6), SlotKind::Connections),
            "weir:{ip:::1}:slots:conns"
        );
    }
}
