//! A conversation's reads and housekeeping: the snapshot, chunk reads, the
//! reply locator and deleting history.

use super::reply::{publish_settled, reap_record};
use super::{newest, Model};
use crate::store::stamps;
use crate::store::{
    reply_nonce, DeleteOp, LiveReply, LocateOp, Published, ReadOp, RegisterOp, SnapshotOp,
    StoreReply,
};

impl Model {
    pub(super) fn snapshot(&mut self, op: &SnapshotOp) -> StoreReply {
        let (conv, limit) = (&op.conv, op.limit);
        let c = self.conv_mut(conv, op.at_ms);
        let history = newest(&c.history, limit);
        let live = c.live.as_ref().and_then(|id| {
            c.streams.get(id).map(|r| LiveReply {
                message_id: id.clone(),
                reply_to: r.reply_to.clone(),
                state: r.state.clone(),
                deltas: r.deltas.clone(),
                ts_ns: stamps::slice(&r.ts_ns, 0, r.deltas.len()),
                created_at_ms: r.created_at_ms,
                owner: r.owner.clone(),
            })
        });
        let reply = StoreReply::Snapshot {
            epoch: self.epoch,
            history,
            live,
        };
        self.tidy(conv);
        reply
    }

    pub(super) fn read(&mut self, op: &ReadOp) -> StoreReply {
        let (conv, id, after_seq) = (&op.conv, &op.message_id, op.after_seq);
        let epoch = self.epoch;
        let c = self.conv_mut(conv, op.at_ms);
        let Some(r) = c.streams.get(id) else {
            let reply = self.missing(conv, id);
            self.tidy(conv);
            return reply;
        };
        let end = r
            .state
            .final_seq()
            .unwrap_or(r.last_seq())
            .min(r.last_seq());
        let from = usize::try_from(after_seq).unwrap_or(usize::MAX);
        let to = usize::try_from(end).unwrap_or(usize::MAX);
        let (deltas, ts_ns) = if from < to {
            (
                r.deltas[from..to].to_vec(),
                stamps::slice(&r.ts_ns, from, to),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        StoreReply::Read {
            epoch,
            state: r.state.clone(),
            deltas,
            first_seq: after_seq + 1,
            usage: r.usage,
            ts_ns,
        }
    }

    pub(super) fn register(&mut self, op: RegisterOp) -> StoreReply {
        let RegisterOp { conv, nonce, at_ms } = op;
        let expires = at_ms.saturating_add(self.config.idempotency_ttl_ms);
        self.locators
            .insert((conv.session, nonce), (conv.user, expires));
        StoreReply::Refreshed
    }

    pub(super) fn locate(&mut self, op: &LocateOp) -> StoreReply {
        let user = reply_nonce(&op.message_id).and_then(|nonce| {
            let key = (op.session.clone(), nonce);
            match self.locators.get(&key) {
                Some((user, expires)) if *expires > op.at_ms => Some(user.clone()),
                Some(_) => {
                    self.locators.remove(&key);
                    None
                }
                None => None,
            }
        });
        StoreReply::Located { user }
    }

    pub(super) fn delete(&mut self, op: &DeleteOp, out: &mut Vec<Published>) -> StoreReply {
        let (conv, at_ms) = (&op.conv, op.at_ms);
        let config = self.config;
        let c = self.conv_mut(conv, at_ms);
        if let Some(live) = c.live.clone() {
            // A live reply whose owner is gone does not block the delete.
            if let Some(outcome) = reap_record(c, &live, at_ms, &config) {
                let _ = publish_settled(conv, c, &live, outcome, config.history_limit, out);
            } else {
                return StoreReply::Busy { message_id: live };
            }
        }
        let count = c.history.len() as u64;
        c.history.clear();
        c.streams.clear();
        c.latest = None;
        // Every record is gone, so no token is in use: the next reply's
        // fencing token starts again at 1 (Redis drops the meta key).
        c.next_token = 0;
        self.tidy(conv);
        StoreReply::Deleted { count }
    }
}
