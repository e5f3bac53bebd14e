//! The HTTP API (PROTOCOL.md, "HTTP API") as the node answers it. The
//! runtime routes the request and authenticates its user; everything else —
//! decoding, the store operation, the status and the body — is decided here,
//! with the same store operations the WebSocket path uses.

use std::time::Instant;

use super::caps::Asker;
use super::owner::NewReply;
use super::{live_message, Node, Pending};
use crate::api::{HttpReqId, HttpRequest, Output};
use crate::ids::{ConvKey, IdSource, MessageId, SessionId, UserId};
use crate::store::{
    CancelOp, PresenceCheckOp, SnapshotOp, StartOp, StoreError, StoreOp, StoreReply,
};
use crate::wire::http::{
    decode_cancel_request, decode_post_message, CancelResponse, HttpError, MessagesResponse,
    PostMessageAccepted, PresenceResponse,
};
use crate::wire::{CancelStatus, ErrorCode};

impl<I: IdSource> Node<I> {
    pub(super) fn on_http(
        &mut self,
        now: Instant,
        req: HttpReqId,
        user: UserId,
        request: HttpRequest,
    ) {
        let at_ms = self.wall_ms(now);
        match request {
            HttpRequest::PostMessage { session, body } => {
                let post = match decode_post_message(&body, &self.config.limits) {
                    Ok(p) => p,
                    Err(e) => return self.respond_error(req, HttpError::from(e)),
                };
                if self.shutting_down {
                    return self.respond_error(
                        req,
                        HttpError::new(ErrorCode::Unavailable, "the node is shutting down"),
                    );
                }
                let conv = ConvKey::new(user, session);
                let nonce = self.ids.next_u64();
                let start = StartOp {
                    conv,
                    content: post.content,
                    client_message_id: post.client_message_id,
                    nonce,
                    owner: self.config.node_id.clone(),
                    context_limit: self.config.context_limit,
                    at_ms,
                };
                self.admit_chat(now, Asker::Http(req), start);
            }
            HttpRequest::Cancel { session, body } => {
                let cancel = match decode_cancel_request(&body) {
                    Ok(c) => c,
                    Err(e) => return self.respond_error(req, HttpError::from(e)),
                };
                let conv = ConvKey::new(user, session);
                self.store(
                    Pending::HttpCancel(req, conv.clone(), cancel.message_id.clone()),
                    StoreOp::Cancel(CancelOp {
                        conv,
                        message_id: cancel.message_id,
                        at_ms,
                    }),
                );
            }
            HttpRequest::ListMessages { session } => {
                let conv = ConvKey::new(user, session.clone());
                self.store(
                    Pending::HttpList(req, session),
                    StoreOp::Snapshot(SnapshotOp {
                        conv,
                        limit: self.config.history_limit,
                        at_ms,
                    }),
                );
            }
            HttpRequest::CompatChat { user: how, body } => {
                self.on_compat_chat(now, req, user, how, &body);
            }
            HttpRequest::CompatCancel { user: how, body } => {
                self.on_compat_cancel(now, req, user, how, &body);
            }
            HttpRequest::CompatHistory { session } => {
                self.on_compat_history(now, req, ConvKey::new(user, session));
            }
            HttpRequest::CompatDeleteHistory { session } => {
                self.on_compat_delete(now, req, ConvKey::new(user, session));
            }
            HttpRequest::Presence { user: asked } => {
                if asked != user {
                    return self.respond_error(
                        req,
                        HttpError::new(ErrorCode::Forbidden, "presence of another user"),
                    );
                }
                self.store(
                    Pending::HttpPresence(req, asked.clone()),
                    StoreOp::PresenceCheck(PresenceCheckOp { user: asked, at_ms }),
                );
            }
        }
    }

    fn respond<T: serde::Serialize>(&mut self, req: HttpReqId, status: u16, body: &T) {
        let body = serde_json::to_string(body)
            .unwrap_or_else(|_| r#"{"code":"internal","message":"encoding failed"}"#.to_owned());
        self.out
            .push_back(Output::HttpResponse { req, status, body });
    }

    pub(super) fn respond_error(&mut self, req: HttpReqId, e: HttpError) {
        let status = e.status();
        self.respond(req, status, &e);
    }

    /// A store operation failed: `unavailable` when the store could not be
    /// reached (nothing was changed), `store_full` when it refused the
    /// operation for want of room (nothing was changed), `internal` when it
    /// answered something this server does not understand (a bug; the
    /// request may have taken effect).
    pub(super) fn http_store_error(&mut self, req: HttpReqId, error: &StoreError) {
        let e = match error {
            StoreError::Unavailable(_) => HttpError::new(
                ErrorCode::Unavailable,
                "the store cannot be reached; nothing was changed",
            ),
            StoreError::Refused(_) => HttpError::new(
                ErrorCode::StoreFull,
                "the store is full and refuses writes; nothing was changed (retry later)",
            ),
            StoreError::Internal(_) => HttpError::new(ErrorCode::Internal, super::STORE_BUG),
        };
        self.respond_error(req, e);
    }

    pub(super) fn on_http_started(
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
                self.respond(
                    req,
                    202,
                    &PostMessageAccepted {
                        user_message_id: user_message.message_id.clone(),
                        message_id: message_id.clone(),
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
            StoreReply::Duplicate {
                user_message_id,
                message_id,
            } => self.respond(
                req,
                202,
                &PostMessageAccepted {
                    user_message_id,
                    message_id,
                },
            ),
            StoreReply::Busy { .. } => self.respond_error(
                req,
                HttpError::new(
                    ErrorCode::Busy,
                    "a reply is still streaming in this conversation",
                ),
            ),
            _ => self.respond_error(
                req,
                HttpError::new(ErrorCode::Internal, "unexpected store reply"),
            ),
        }
    }

    pub(super) fn on_http_cancel(
        &mut self,
        now: Instant,
        req: HttpReqId,
        conv: &ConvKey,
        asked: Option<MessageId>,
        reply: StoreReply,
    ) {
        let StoreReply::Cancel {
            message_id: Some(id),
            answer: Some(answer),
            final_seq: Some(final_seq),
        } = reply
        else {
            let body = CancelResponse {
                message_id: asked,
                status: CancelStatus::NotFound,
                final_seq: None,
            };
            return self.respond(req, body.status_code(), &body);
        };
        self.cancel_decided(now, conv, &id, answer, final_seq);
        let status = CancelStatus::from(answer);
        let body = CancelResponse {
            message_id: Some(id),
            status,
            final_seq: Some(final_seq),
        };
        self.respond(req, body.status_code(), &body);
        self.pump(now, conv);
    }

    pub(super) fn on_http_list(&mut self, req: HttpReqId, session: SessionId, reply: StoreReply) {
        let StoreReply::Snapshot { history, live, .. } = reply else {
            return self.respond_error(
                req,
                HttpError::new(ErrorCode::Internal, "unexpected store reply"),
            );
        };
        let mut messages = history;
        messages.extend(live.as_ref().map(live_message));
        self.respond(
            req,
            200,
            &MessagesResponse {
                session_id: session,
                messages,
            },
        );
    }

    pub(super) fn on_http_presence(&mut self, req: HttpReqId, user: UserId, reply: StoreReply) {
        let StoreReply::Presence {
            status,
            connections,
            ..
        } = reply
        else {
            return self.respond_error(
                req,
                HttpError::new(ErrorCode::Internal, "unexpected store reply"),
            );
        };
        self.respond(
            req,
            200,
            &PresenceResponse {
                user_id: user,
                status,
                connections,
            },
        );
    }
}
