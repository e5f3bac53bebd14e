//! The seed's HTTP routes (PROTOCOL.md, "Compatibility surface") as the node
//! answers them: `POST /api/chat`, `POST /api/cancel`, `GET /api/history/{id}`,
//! on the same store operations and decisions as the `/v1` API
//! (`http.rs`), with the seed's bodies ([`compat_http`](crate::dialect::compat_http)).

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
use crate::store::{CancelOp, SnapshotOp, StartOp, StoreError, StoreOp, StoreReply};
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
        let conv = match how {
            CompatUser::Authenticated => ConvKey::new(user, session),
            CompatUser::FromBody => self
                .conv_of_reply(&session, &id)
                .unwrap_or_else(|| ConvKey::new(user, session)),
        };
        let at_ms = self.wall_ms(now);
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
