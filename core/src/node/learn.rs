//! A reply this node heard of without its `started` notice.
//!
//! Notices may be lost (Redis pub/sub drops what it cannot deliver) or come
//! late. When a reply's `started` notice does not reach a node, the node's
//! view hears of the reply from its later notices (chunks, settled) or a
//! watch read, but it has no user turn for it, and only the user turn lets a
//! connection be given the reply (`user_message`, then `start`): the
//! connections open there would miss the whole reply. So the first notice
//! (or read) of a reply whose user turn the view lacks makes the node read the
//! conversation's snapshot, once per conversation at a time; the user turn is
//! in its history, under the id the store made with the reply's own nonce
//! ([`user_turn_of`]; a live reply's `reply_to` is that id). With it the
//! node begins the reply on every open
//! connection of the conversation ([`begin_on_open_conns`]), which then gets
//! every chunk from seq 1 (read from the store where the view lacks them) and
//! its `end`. If the `started` notice was only late, whichever comes first
//! begins the reply and the other finds it begun.
//!
//! [`begin_on_open_conns`]: Node::begin_on_open_conns

use std::time::Instant;

use super::{Node, Pending};
use crate::ids::{ConvKey, IdSource, MessageId};
use crate::store::{user_turn_of, SnapshotOp, StoreOp, StoreReply};
use crate::timer::TimerKey;

impl<I: IdSource> Node<I> {
    /// The view heard of reply `id` of `conv`: if it holds no user turn for
    /// it and a connection watches the conversation, read the snapshot
    /// (unless a read for that is already out).
    pub(super) fn learn_if_unknown(&mut self, now: Instant, conv: &ConvKey, id: &MessageId) {
        let Some(view) = self.convs.get_mut(conv) else {
            return;
        };
        let unknown = view.reply(id).is_some_and(|r| r.user_message().is_none());
        if !unknown || view.conns.is_empty() || view.learning {
            return;
        }
        view.learning = true;
        let request = StoreOp::Snapshot(SnapshotOp {
            conv: conv.clone(),
            limit: self.config.history_limit,
            at_ms: self.wall_ms(now),
        });
        self.store(Pending::Learn(conv.clone()), request);
    }

    /// The snapshot read for [`learn_if_unknown`](Self::learn_if_unknown):
    /// every reply of the view without a user turn that the history holds
    /// the user turn of begins on the open connections.
    pub(super) fn on_learn_reply(&mut self, now: Instant, conv: &ConvKey, reply: StoreReply) {
        let Some(view) = self.convs.get_mut(conv) else {
            return;
        };
        view.learning = false;
        let StoreReply::Snapshot { history, .. } = reply else {
            return;
        };
        let unknown: Vec<MessageId> = view
            .replies()
            .iter()
            .filter(|(_, r)| r.user_message().is_none())
            .map(|(id, _)| id.clone())
            .collect();
        // A reply that began after the snapshot was read is not in it: its
        // next notice or watch read asks again.
        let mut learned = Vec::new();
        for id in unknown {
            // The store makes a reply's id and its user turn's from one
            // nonce (a live reply's `reply_to` is the same id). A user turn
            // gone from the history's window is not learnt.
            let turn = user_turn_of(&id);
            let Some(m) = turn.and_then(|t| history.iter().find(|m| m.message_id == t)) else {
                continue;
            };
            if view.reply_mut(&id).is_some_and(|r| r.learn_user_message(m)) {
                learned.push((id, m.clone()));
            }
        }
        for (id, user_message) in learned {
            self.begin_on_open_conns(now, conv, &id, &user_message, None, None);
        }
        self.tidy_conv(conv);
    }

    /// The snapshot could not be read: read it again after `store_retry`
    /// (the view keeps the replies it waits to learn meanwhile: `learning`
    /// stays set).
    pub(super) fn learn_failed(&mut self, now: Instant, conv: ConvKey) {
        if self.convs.contains_key(&conv) {
            let at = now + self.config.store_retry;
            self.timers.set(TimerKey::Learn(Box::new(conv)), at);
        }
    }

    /// The retry of a failed snapshot read: every reply of the view still
    /// without a user turn asks again (one read for them all).
    pub(super) fn learn_again(&mut self, now: Instant, conv: &ConvKey) {
        let Some(view) = self.convs.get_mut(conv) else {
            return;
        };
        view.learning = false;
        let unknown = view
            .replies()
            .iter()
            .find(|(_, r)| r.user_message().is_none())
            .map(|(id, _)| id.clone());
        if let Some(id) = unknown {
            self.learn_if_unknown(now, conv, &id);
        }
        self.tidy_conv(conv);
    }
}
