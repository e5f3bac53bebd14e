//! A chat: the `chat` frame, the store's `Start`, its `ack`, and the reply
//! it begins on this node — or the error when the conversation is busy,
//! the store cannot be reached or it is full. A `cancel` that arrives before the reply has
//! an id waits on the connection's [`PendingChat`] and is sent once the
//! `Start` answers.

use std::time::Instant;

use super::cancel::CancelAsk;
use super::caps::Asker;
use super::owner::NewReply;
use super::view::ConvView;
use super::{error_frame, store_error_frame, Node};
use crate::ids::{ConnId, ConvKey, IdSource};
use crate::session::PendingChat;
use crate::store::{StartOp, StoreError, StoreReply};
use crate::wire::{Ack, Cancel, Chat, ErrorCode, ServerFrame};

impl<I: IdSource> Node<I> {
    pub(super) fn on_chat(&mut self, now: Instant, conn: ConnId, chat: Chat) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let conv = c.conv.clone();
        let busy =
            c.pending_chat.is_some() || self.convs.get(&conv).is_some_and(ConvView::is_streaming);
        // A repeated idempotency key must get its original ack, so only the
        // store may answer chats that carry one.
        if busy && chat.client_message_id.is_none() {
            self.send(
                conn,
                error_frame(
                    ErrorCode::Busy,
                    "a reply is still streaming in this conversation",
                    chat.request_id,
                ),
            );
            return;
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.pending_chat = Some(PendingChat {
                request_id: chat.request_id,
                cancel: None,
            });
        }
        let nonce = self.ids.next_u64();
        let at_ms = self.wall_ms(now);
        let start = StartOp {
            conv,
            content: chat.content,
            client_message_id: chat.client_message_id,
            nonce,
            owner: self.config.node_id.clone(),
            context_limit: self.config.context_limit,
            at_ms,
        };
        self.admit_chat(now, Asker::Conn(conn), start);
    }

    pub(super) fn on_started(
        &mut self,
        now: Instant,
        conn: ConnId,
        conv: ConvKey,
        reply: StoreReply,
    ) {
        let pending = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.pending_chat.take());
        let request_id = pending.as_ref().and_then(|p| p.request_id.clone());
        match reply {
            StoreReply::Started {
                user_message,
                message_id,
                token,
                context,
                ..
            } => {
                self.send(
                    conn,
                    ServerFrame::Ack(Ack {
                        request_id: request_id.clone(),
                        user_message_id: user_message.message_id.clone(),
                        message_id: message_id.clone(),
                    }),
                );
                let cancel_first = pending.as_ref().and_then(|p| p.cancel.clone());
                let reply = NewReply {
                    conv: conv.clone(),
                    message_id: message_id.clone(),
                    token,
                    user_message,
                    context,
                };
                self.own_reply(now, reply, Some((conn, request_id)), cancel_first.is_some());
                match cancel_first {
                    None => {}
                    Some((cancel_rid, since)) => {
                        // The user cancelled before the reply had an id: the
                        // generator never starts.
                        let ask = CancelAsk {
                            conn,
                            conv,
                            request_id: cancel_rid,
                            message_id: Some(message_id),
                            since,
                        };
                        self.send_cancel(now, ask);
                    }
                }
            }
            StoreReply::Duplicate {
                user_message_id,
                message_id,
            } => {
                self.send(
                    conn,
                    ServerFrame::Ack(Ack {
                        request_id,
                        user_message_id,
                        message_id,
                    }),
                );
                if let Some((cancel_rid, since)) = pending.and_then(|p| p.cancel) {
                    let cancel = Cancel {
                        message_id: None,
                        request_id: cancel_rid,
                    };
                    self.on_cancel(now, conn, cancel, since);
                }
            }
            StoreReply::Busy { .. } => {
                self.send(
                    conn,
                    error_frame(
                        ErrorCode::Busy,
                        "a reply is still streaming in this conversation",
                        request_id,
                    ),
                );
                if let Some((cancel_rid, since)) = pending.and_then(|p| p.cancel) {
                    // The cancel was meant for the reply this chat would have
                    // started: there is none.
                    self.send_not_found(now, conn, cancel_rid, since);
                }
            }
            _ => {}
        }
    }

    /// The `Start` of a chat did not reach the store.
    pub(super) fn start_failed(&mut self, conn: ConnId, error: &StoreError) {
        let Some(p) = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.pending_chat.take())
        else {
            return;
        };
        self.send(
            conn,
            store_error_frame(
                error,
                // A request that timed out may still be carried out once the
                // store is back: say so, and let the client retry with its
                // `client_message_id`.
                "the store cannot be reached; the message may not have been stored \
                 (retry with the same client_message_id to find out)",
                "the store is full and refuses writes: the message was not stored; retry later",
                p.request_id,
            ),
        );
        if let Some((cancel_rid, _)) = p.cancel {
            self.send(
                conn,
                store_error_frame(
                    error,
                    "the store cannot be reached; nothing to cancel",
                    "the store is full: nothing to cancel",
                    cancel_rid,
                ),
            );
        }
    }
}
