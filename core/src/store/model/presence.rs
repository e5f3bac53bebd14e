//! A user's presence in the store: join, leave, refresh and the debounced
//! check, each one transition of [`UserPresence`].

use super::Model;
use crate::ids::UserId;
use crate::presence::UserPresence;
use crate::store::{
    Notice, PresenceCheckOp, PresenceJoinOp, PresenceLeaveOp, PresenceRefreshOp, Published,
    StoreReply, Topic,
};

impl Model {
    pub(super) fn presence_join(
        &mut self,
        op: PresenceJoinOp,
        out: &mut Vec<Published>,
    ) -> StoreReply {
        let PresenceJoinOp {
            user,
            node,
            conn,
            at_ms,
        } = op;
        let t = self.config.presence;
        let p = self.presence.entry(user.clone()).or_default();
        let _ = p.expire(at_ms, &t);
        if let Some(status) = p.join(node, conn, at_ms, &t) {
            out.push(presence_notice(&user, status));
        }
        presence_reply(p)
    }

    pub(super) fn presence_leave(
        &mut self,
        op: PresenceLeaveOp,
        out: &mut Vec<Published>,
    ) -> StoreReply {
        let PresenceLeaveOp {
            user,
            node,
            conn,
            at_ms,
        } = op;
        let t = self.config.presence;
        let p = self.presence.entry(user.clone()).or_default();
        if let Some(status) = p.leave(&node, conn, at_ms, &t) {
            out.push(presence_notice(&user, status));
        }
        let reply = presence_reply(p);
        if p.is_idle() {
            self.presence.remove(&user);
        }
        reply
    }

    pub(super) fn presence_refresh(&mut self, op: PresenceRefreshOp) -> StoreReply {
        let PresenceRefreshOp { node, users, at_ms } = op;
        let t = self.config.presence;
        for u in users {
            if let Some(p) = self.presence.get_mut(&u) {
                p.refresh(&node, at_ms, &t);
            }
        }
        StoreReply::Refreshed
    }

    pub(super) fn presence_check(
        &mut self,
        op: PresenceCheckOp,
        out: &mut Vec<Published>,
    ) -> StoreReply {
        let PresenceCheckOp { user, at_ms } = op;
        let t = self.config.presence;
        let p = self.presence.entry(user.clone()).or_default();
        if let Some(status) = p.expire(at_ms, &t) {
            out.push(presence_notice(&user, status));
        }
        let reply = presence_reply(p);
        if p.is_idle() {
            self.presence.remove(&user);
        }
        reply
    }
}

pub(super) fn presence_notice(user: &UserId, status: crate::wire::PresenceStatus) -> Published {
    Published {
        topic: Topic::User(user.clone()),
        notice: Notice::Presence {
            user: user.clone(),
            status,
        },
    }
}

pub(super) fn presence_reply(p: &UserPresence) -> StoreReply {
    StoreReply::Presence {
        status: p.state.status(),
        connections: p.entries.len() as u64,
        due_ms: p.next_due_ms(),
    }
}
