//! Dialects: the other protocols a connection of the node may speak.
//!
//! Every protocol weir speaks — native protocol v1, the seed front end's
//! `/ws/chat` ([`compat`]), and next the AI SDK transports — is a *dialect of
//! the same node*: a **codec** for the client's frames and a **renderer** of
//! what the node sends. The decisions (chat, cancel and its fence, resume,
//! grace, multi-node delivery) stay in one place, the [`Node`](crate::Node);
//! a dialect only translates.
//!
//! ```text
//!                     ┌──────────── Node (decisions, native ServerFrames) ────────────┐
//! Input::Frame ──► codec of the connection's dialect ──► the node's own handling      │
//!                     │                                                              │
//!                     └─► Output::Send / SendMany (native frames) ──► render pass ───┘
//!                                                                   │
//!                      native connections: unchanged (a shared SendMany stays shared)
//!                      dialect connections: the renderer's frames, as
//!                      ServerFrame::Dialect (pre-encoded text, sent as it is)
//! ```
//!
//! - A connection chooses its dialect once, at connect:
//!   [`Input::Connect`](crate::Input::Connect) is native,
//!   [`Input::ConnectWith`](crate::Input::ConnectWith) names another
//!   [`Dialect`]. The node records a per-connection renderer state.
//! - After each input and each timeout, the node walks the outputs that step
//!   produced ("render pass"): a frame for a dialect connection goes through
//!   its renderer instead; a `SendMany` is split so the native connections
//!   keep one shared frame. With no dialect connection on the node the pass
//!   costs one check.
//! - A renderer is sans-IO like the rest of the core: it takes `now` and the
//!   wall clock, and may ask for one timer per connection
//!   (coalescing), fired through the node's timer table.
//! - A rendered frame is [`ServerFrame::Dialect`](crate::wire::ServerFrame::Dialect):
//!   its text is final, the runtime sends it as it is (it may be a JSON
//!   object or, for the seed's text `ping`, plain text).
//!
//! ## Adding a dialect
//!
//! 1. A module here with its codec (bytes → what the client asks) and its
//!    renderer (a state per connection: native frame in, its frames out),
//!    unit-tested without a node, like [`compat`].
//! 2. A variant of [`Dialect`] and of [`DialectConn`], and the arms in
//!    [`DialectConn`]'s methods.
//! 3. In `node/dialect.rs`, what each client request becomes for the node
//!    (the compat dialect only answers pings: its chats and cancels come over
//!    HTTP).
//! 4. The runtime route that sends `Input::ConnectWith` with that dialect.

pub mod ai_sdk;
pub mod compat;
pub mod compat_http;

use std::time::Instant;

use crate::ids::{SessionId, UserId};
use crate::wire::{DialectFrame, ServerFrame};

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dialect {
    /// Protocol v1 (`/v1/ws`).
    Native,
    /// The seed front end's `/ws/chat` ([`compat`]).
    Compat,
    /// An AI SDK WebSocket (`/v1/ai-sdk/ws`, [`ai_sdk`]): the socket itself
    /// watches no conversation (its `session` is ignored); each request on
    /// it is a connection of its own.
    AiSdkWs,
}

/// A dialect connection's renderer state (native connections have none).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DialectConn {
    /// The seed front end's `/ws/chat`.
    Compat(compat::CompatConn),
    /// One AI SDK request (on a socket, or an HTTP event stream).
    AiSdk(ai_sdk::AiSdkConn),
}

/// What the node tells a renderer besides the frame: the clocks and the
/// settings it renders with.
#[derive(Debug, Clone, Copy)]
pub struct RenderCtx<'a> {
    /// Monotonic now.
    pub now: Instant,
    /// Wall-clock now, Unix milliseconds.
    pub wall_ms: u64,
    /// How long after its end a reply counts as just ended (the resume window).
    pub resume_window_ms: u64,
    /// The compat dialect's settings.
    pub compat: &'a compat::CompatSettings,
}

impl DialectConn {
    /// The renderer state for a new connection of `dialect`, `None` for native.
    #[must_use]
    pub fn new(dialect: Dialect, session: SessionId, user: UserId) -> Option<Self> {
        match dialect {
            Dialect::Native | Dialect::AiSdkWs => None,
            Dialect::Compat => Some(Self::Compat(compat::CompatConn::new(session, user))),
        }
    }

    /// Renders one frame the node sends to this connection into `out`.
    pub fn render(
        &mut self,
        ctx: &RenderCtx<'_>,
        frame: &ServerFrame,
        out: &mut Vec<DialectFrame>,
    ) {
        match self {
            Self::Compat(c) => c.render(ctx, frame, out),
            Self::AiSdk(c) => c.render(frame, out),
        }
    }

    /// When the renderer wants [`DialectConn::handle_timeout`].
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Self::Compat(c) => c.poll_timeout(),
            Self::AiSdk(_) => None,
        }
    }

    /// The renderer's timer fired.
    pub fn handle_timeout(&mut self, ctx: &RenderCtx<'_>, out: &mut Vec<DialectFrame>) {
        match self {
            Self::Compat(c) => c.handle_timeout(ctx, out),
            Self::AiSdk(_) => {}
        }
    }

    /// Whether the node must hand this connection one chunk per frame (a
    /// merged chunk has no place in its dialect's numbering).
    #[must_use]
    pub fn unmerged(&self) -> bool {
        matches!(self, Self::AiSdk(_))
    }

    /// Where its rendered frames go (an AI SDK request's go to its socket).
    #[must_use]
    pub fn send_to(&self, own: crate::ids::ConnId) -> crate::ids::ConnId {
        match self {
            Self::AiSdk(c) => c.send_to(own),
            Self::Compat(_) => own,
        }
    }

    /// Whether it has said its last frame: the node releases it.
    #[must_use]
    pub fn is_done(&self) -> bool {
        matches!(self, Self::AiSdk(c) if c.is_done())
    }
}
