//! The seed's HTTP routes (PROTOCOL.md, "Compatibility surface") as the node
//! answers them: `POST /api/chat`, `POST /api/cancel`, `GET` and `DELETE
//! /api/history/{id}`, on the same store operations and decisions as the
//! `/v1` API (`http.rs`), with the seed's bodies
//! ([`compat_http`](crate::dialect::compat_http)).
//!
//! **Finding a reply without its user.** The page's `POST /api/cancel` names
//! only `session_id` and `message_id`. Under `auth = none` the node that has
//! no connection to the conversation finds its user in the store: every
//! `POST /api/chat` first registers its reply ([`StoreOp::Register`], keyed
//! by session and the `Start`'s nonce, so before anyone can see the id), and
//! the cancel looks it up ([`StoreOp::Locate`]) before the fenced
//! [`StoreOp::Cancel`] on the conversation. Each is one operation on one
//! key's slot.

use std::time::Instant;

use super::caps::Asker;
use super::owner::NewReply;
use super::{live_message, Node, Pending};
use crate::api::{HttpReqId, Output};
use crate::dialect::compat::ChatMessage;
use crate::dialect::compat_http::{
    decode_compat_chat, CompatChatAccepted, CompatError, CompatHistory, CompatUser,
};
use crate::ids::{ConvKey, IdSource, MessageId, SessionId, UserId};
use crate::store::{
    CancelOp, DeleteOp, LocateOp, RegisterOp, SnapshotOp, StartOp, StoreError, StoreOp, StoreReply,
};
use crate::wire::CancelStatus;

impl<I: IdSource> Node<I> {
    fn compat_respond<T: serde::Serialize>(&mut self, req: HttpReqId, status: u16, body: &T) {
        let body = serde_json::to_string(body)
            .unwrap_or_else(|_| r#"{"detail":"encoding failed"}"#.to_owned());
        self.out
            .push_back(Output::HttpResponse { req, status, body });
    }

    pub(super) fn compat_error(&mut self, req: HttpReqId, e: &CompatError) {
        self.compat_respond(req, e.status, e);
    }

    pub(super) fn compat_store_error(&mut self, req: HttpReqId, error: &StoreError) {
        self.compat_error(req, &CompatError::store(error));
    }

    pub(super) fn on_compat_chat(
        &mut self,
        now: Instant,
        req: HttpReqId,
        user: UserId,
        how: CompatUser,
        body: &[u8],
    ) {
        let chat = match decode_compat_chat(body, &self.config.limits) {
            Ok(c) => c,
            Err(e) => return self.compat_error(req, &e),
        };
        if self.shutting_down {
            return self.compat_error(req, &CompatError::new(503, "The server is shutting down."));
        }
        let user = match (how, chat.user_id) {
            (CompatUser::FromBody, Some(u)) => u,
            _ => user,
        };
        let conv = ConvKey::new(user, chat.session_id);
        let nonce = self.ids.next_u64();
        let at_ms = self.wall_ms(now);
        let start = StartOp {
            conv,
            content: chat.message,
            client_message_id: None,
            nonce,
            owner: self.config.node_id.clone(),
            context_limit: self.config.context_limit,
            at_ms,
        };
        if how == CompatUser::FromBody {
            // So that a cancel naming no user finds the reply on any node.
            let register = RegisterOp {
                conv: start.conv.clone(),
                nonce,
                at_ms,
            };
            let why = Pending::CompatRegister(req, Box::new(start));
            let _ = self.store(why, StoreOp::Register(register));
            return;
        }
        self.admit_chat(now, Asker::Compat(req), start);
    }

    /// The reply of a `POST /api/chat` is registered: now it may start.
    pub(super) fn on_compat_registered(
        &mut self,
        now: Instant,
        req: HttpReqId,
        start: StartOp,
        reply: &StoreReply,
    ) {
        if *reply != StoreReply::Refreshed {
            return self.compat_error(
                req,
                &CompatError::new(500, "Unexpected answer from the store."),
            );
        }
        self.admit_chat(now, Asker::Compat(req), start);
    }

    pub(super) fn on_compat_started(
        &mut self,
        now: Instant,
        req: HttpReqId,
        conv: ConvKey,
        reply: StoreReply,
    ) {
        match reply {
            StoreReply::Started {
                user_message,
                message_id,
                token,
                context,
                ..
            } => {
                self.compat_respond(
                    req,
                    200,
                    &CompatChatAccepted {
                        status: "streaming".to_owned(),
                        message_id: message_id.clone(),
                        session_id: conv.session.clone(),
                        message: "The reply is streaming over the WebSocket.".to_owned(),
                    },
                );
                let reply = NewReply {
                    conv,
                    message_id,
                    token,
                    user_message,
                    context,
                };
                self.own_reply(now, reply, None, false);
            }
            StoreReply::Busy { .. } => self.compat_error(
                req,
                &CompatError::new(409, "A reply is still being written in this conversation; wait for it or cancel it."),
            ),
            _ => self.compat_error(req, &CompatError::new(500, "Unexpected answer from the store.")),
        }
    }

    /// `POST /api/cancel` `{session_id, message_id}`.
    pub(super) fn on_compat_cancel(
        &mut self,
        now: Instant,
        req: HttpReqId,
        user: UserId,
        how: CompatUser,
        body: &[u8],
    ) {
        let parsed: Option<(SessionId, MessageId)> =
            serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| {
                    let s = SessionId::parse(v.get("session_id")?.as_str()?).ok()?;
                    let m = MessageId::parse(v.get("message_id")?.as_str()?).ok()?;
                    Some((s, m))
                });
        let Some((session, id)) = parsed else {
            return self.compat_error(
                req,
                &CompatError::bad_request("session_id and message_id are required."),
            );
        };
        let at_ms = self.wall_ms(now);
        let conv = match how {
            CompatUser::Authenticated => ConvKey::new(user, session),
            CompatUser::FromBody => match self.conv_of_reply(&session, &id) {
                Some(conv) => conv,
                None => {
                    let locate = LocateOp {
                        session: session.clone(),
                        message_id: id.clone(),
                        at_ms,
                    };
                    let why = Pending::CompatLocate(req, session, id);
                    let _ = self.store(why, StoreOp::Locate(locate));
                    return;
                }
            },
        };
        self.send_compat_cancel(req, conv, id, at_ms);
    }

    /// The store found (or not) whose conversation holds the reply a
    /// `POST /api/cancel` names.
    pub(super) fn on_compat_located(
        &mut self,
        now: Instant,
        req: HttpReqId,
        session: SessionId,
        id: MessageId,
        reply: StoreReply,
    ) {
        match reply {
            StoreReply::Located { user: Some(user) } => {
                let at_ms = self.wall_ms(now);
                self.send_compat_cancel(req, ConvKey::new(user, session), id, at_ms);
            }
            StoreReply::Located { user: None } => {
                let body = serde_json::json!({
                    "status": CancelStatus::NotFound,
                    "message": "No such reply in this conversation.",
                    "session_id": session,
                    "message_id": id,
                });
                self.compat_respond(req, 200, &body);
            }
            _ => self.compat_error(
                req,
                &CompatError::new(500, "Unexpected answer from the store."),
            ),
        }
    }

    fn send_compat_cancel(&mut self, req: HttpReqId, conv: ConvKey, id: MessageId, at_ms: u64) {
        self.store(
            Pending::CompatCancel(req, conv.clone(), id.clone()),
            StoreOp::Cancel(CancelOp {
                conv,
                message_id: Some(id),
                at_ms,
            }),
        );
    }

    /// The conversation of `session` in which this node knows reply `id`
    /// (it produces it, or a connection of its watches it).
    fn conv_of_reply(&self, session: &SessionId, id: &MessageId) -> Option<ConvKey> {
        if let Some(o) = self.owned.get(id) {
            if &o.conv().session == session {
                return Some(o.conv().clone());
            }
        }
        self.convs
            .iter()
            .find(|(conv, view)| &conv.session == session && view.reply(id).is_some())
            .map(|(conv, _)| conv.clone())
    }

    pub(super) fn on_compat_cancel_reply(
        &mut self,
        now: Instant,
        req: HttpReqId,
        conv: &ConvKey,
        asked: MessageId,
        reply: StoreReply,
    ) {
        let body = |status: CancelStatus, message: &str, id: &MessageId| {
            serde_json::json!({
                "status": status,
                "message": message,
                "session_id": conv.session,
                "message_id": id,
            })
        };
        let StoreReply::Cancel {
            message_id: Some(id),
            answer: Some(answer),
            final_seq: Some(final_seq),
        } = reply
        else {
            let b = body(
                CancelStatus::NotFound,
                "No such reply in this conversation.",
                &asked,
            );
            return self.compat_respond(req, 200, &b);
        };
        self.cancel_decided(now, conv, &id, answer, final_seq);
        let status = CancelStatus::from(answer);
        let message = match status {
            CancelStatus::Cancelled => "The reply is cancelled.",
            CancelStatus::Completed => "The reply had already completed.",
            CancelStatus::Failed => "The reply had already failed.",
            CancelStatus::NotFound => "No such reply in this conversation.",
        };
        let b = body(status, message, &id);
        self.compat_respond(req, 200, &b);
        self.pump(now, conv);
    }

    /// `DELETE /api/history/{session_id}`: the conversation's history goes
    /// (409 while a reply is streaming: cancel it or wait).
    pub(super) fn on_compat_delete(&mut self, now: Instant, req: HttpReqId, conv: ConvKey) {
        let at_ms = self.wall_ms(now);
        self.store(
            Pending::CompatDelete(req, conv.clone()),
            StoreOp::Delete(DeleteOp { conv, at_ms }),
        );
    }

    pub(super) fn on_compat_deleted(&mut self, req: HttpReqId, conv: &ConvKey, reply: &StoreReply) {
        match reply {
            StoreReply::Deleted { count } => {
                let body = serde_json::json!({
                    "status": "deleted",
                    "session_id": conv.session,
                    "count": count,
                });
                self.compat_respond(req, 200, &body);
            }
            StoreReply::Busy { .. } => self.compat_error(
                req,
                &CompatError::new(
                    409,
                    "A reply is still being written in this conversation; cancel it or wait for it, then delete.",
                ),
            ),
            _ => self.compat_error(req, &CompatError::new(500, "Unexpected answer from the store.")),
        }
    }

    pub(super) fn on_compat_history(&mut self, now: Instant, req: HttpReqId, conv: ConvKey) {
        let at_ms = self.wall_ms(now);
        self.store(
            Pending::CompatHistory(req, conv.clone()),
            StoreOp::Snapshot(SnapshotOp {
                conv,
                limit: self.config.history_limit,
                at_ms,
            }),
        );
    }

    pub(super) fn on_compat_history_reply(
        &mut self,
        req: HttpReqId,
        conv: &ConvKey,
        reply: StoreReply,
    ) {
        let StoreReply::Snapshot { history, live, .. } = reply else {
            return self.compat_error(
                req,
                &CompatError::new(500, "Unexpected answer from the store."),
            );
        };
        let mut messages = history;
        messages.extend(live.as_ref().map(live_message));
        let messages: Vec<ChatMessage> = messages
            .iter()
            .map(|m| ChatMessage::from_message(m, &conv.session, &conv.user, &self.config.compat))
            .collect();
        let count = messages.len();
        self.compat_respond(
            req,
            200,
            &CompatHistory {
                session_id: conv.session.clone(),
                messages,
                count,
            },
        );
    }
}
