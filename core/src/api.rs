//! What goes into the core ([`Input`]) and what comes out ([`Output`]).

use std::time::Instant;

use crate::ids::{ConnId, ConvKey, MessageId, Seq, SessionId, UserId};
use crate::store::{Notice, StoreError, StoreOp, StoreReply, Topic};
use crate::stream::Outcome;
use crate::wire::{CancelStatus, CloseCode, Message, ServerFrame, Usage};

/// Names one store operation so that its reply finds its way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub(crate) u64);

impl OpId {
    /// The number (for logs).
    #[must_use]
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Names one HTTP request so that its response finds its way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HttpReqId(pub u64);

/// An HTTP API request (PROTOCOL.md, "HTTP API"), after the runtime routed
/// it and authenticated its user. Bodies are raw: the core decodes them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HttpRequest {
    /// `POST /v1/sessions/{session_id}/messages`.
    PostMessage {
        /// The conversation.
        session: SessionId,
        /// `{content, client_message_id?}`.
        body: Vec<u8>,
    },
    /// `POST /v1/sessions/{session_id}/cancel`.
    Cancel {
        /// The conversation.
        session: SessionId,
        /// `{message_id?}` (may be empty).
        body: Vec<u8>,
    },
    /// `GET /v1/sessions/{session_id}/messages`.
    ListMessages {
        /// The conversation.
        session: SessionId,
    },
    /// `POST /api/chat` (compat): `{session_id, message, user_id?}`.
    CompatChat {
        /// How the user is found.
        user: crate::dialect::compat_http::CompatUser,
        /// The raw body.
        body: Vec<u8>,
    },
    /// `POST /api/cancel` (compat): `{session_id, message_id}`.
    CompatCancel {
        /// How the user is found.
        user: crate::dialect::compat_http::CompatUser,
        /// The raw body.
        body: Vec<u8>,
    },
    /// `GET /api/history/{session_id}` (compat).
    CompatHistory {
        /// The conversation.
        session: SessionId,
    },
    /// `DELETE /api/history/{session_id}` (compat).
    CompatDeleteHistory {
        /// The conversation.
        session: SessionId,
    },
    /// `GET /v1/users/{user_id}/presence`.
    Presence {
        /// The user asked about.
        user: UserId,
    },
}

/// What a generator reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GeneratorEvent {
    /// More text.
    Delta(String),
    /// The generator finished.
    Finished {
        /// Token counts, when the generator knows them.
        usage: Option<Usage>,
    },
    /// The generator failed.
    Failed {
        /// Why, for the client (`end.reason`).
        reason: String,
        /// Token counts, when known.
        usage: Option<Usage>,
    },
}

/// An input to [`Node::handle_input`](crate::Node::handle_input).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Input {
    /// A WebSocket was accepted and authenticated for `user` on conversation
    /// `session`. `resume` comes from `resume=MESSAGE_ID:SEQ` in the URL.
    Connect {
        /// The runtime's number for the connection.
        conn: ConnId,
        /// The authenticated user.
        user: UserId,
        /// The conversation.
        session: SessionId,
        /// Continue this reply after this seq.
        resume: Option<(MessageId, Seq)>,
        /// The client's address (behind a trusted proxy: the one it
        /// forwarded), for the per-address connection cap; `None`: unknown,
        /// not capped.
        ip: Option<std::net::IpAddr>,
    },
    /// Like [`Input::Connect`], for a connection that speaks another
    /// [`Dialect`](crate::dialect::Dialect) (e.g. the seed front end's
    /// `/ws/chat`); it never resumes.
    ConnectWith {
        /// The runtime's number for the connection.
        conn: ConnId,
        /// The authenticated user.
        user: UserId,
        /// The conversation.
        session: SessionId,
        /// The protocol it speaks.
        dialect: crate::dialect::Dialect,
        /// The client's address (what the address cap counts), if known.
        ip: Option<std::net::IpAddr>,
    },
    /// An AI SDK HTTP request answered with an event stream
    /// ([`ai_sdk`](crate::dialect::ai_sdk)): a connection of its own whose
    /// first frame is the HTTP status; the core releases it after the last.
    AiSdkStream {
        /// The runtime's number for the response.
        conn: ConnId,
        /// The authenticated user.
        user: UserId,
        /// The request.
        request: crate::dialect::ai_sdk::StreamRequest,
    },
    /// A text frame arrived (raw bytes; the core decodes and checks limits).
    Frame {
        /// The connection.
        conn: ConnId,
        /// The frame's payload.
        bytes: Vec<u8>,
    },
    /// A frame larger than the limit arrived and was not read whole.
    FrameTooLarge {
        /// The connection.
        conn: ConnId,
        /// Its size, as far as known.
        len: usize,
    },
    /// A text frame that is not valid UTF-8 arrived (the WebSocket library
    /// checks it, so the bytes never reach [`Input::Frame`]); the core
    /// answers `error` `bad_request` and closes with `1007`.
    InvalidUtf8 {
        /// The connection.
        conn: ConnId,
    },
    /// A binary frame arrived (its payload is not needed: the protocol's
    /// frames are JSON text); the core answers `error` `bad_request` in
    /// its turn, like any frame, and the connection stays open.
    BinaryFrame {
        /// The connection.
        conn: ConnId,
    },
    /// A WebSocket pong (or any other sign of life that is not a text frame).
    Activity {
        /// The connection.
        conn: ConnId,
    },
    /// The connection's outbound queue is full and merging could not make
    /// room: the client cannot keep up.
    SlowConsumer {
        /// The connection.
        conn: ConnId,
    },
    /// Frames have waited in the connection's outbound queue and the
    /// connection's writer has taken none of them since `since`. The runtime
    /// reports it again (with the same `since`) while it lasts, at least every
    /// quarter of [`Config::stall_timeout`](crate::Config::stall_timeout);
    /// the core closes the connection with 4008 once `since` is that long
    /// ago.
    WriteStalled {
        /// The connection.
        conn: ConnId,
        /// When the runtime last saw the writer take a frame or the queue
        /// empty.
        since: Instant,
    },
    /// The connection's outbound queue filled up (its high-water mark): the
    /// core stops handing the connection chunks. Its cursors keep their
    /// place and the chunks stay in the conversation's view, held once for
    /// every connection, until [`Input::Writable`]. Sent once per
    /// transition, not per frame. Frames the core sent before it heard this
    /// may still reach the queue (it merges them).
    WriteBlocked {
        /// The connection.
        conn: ConnId,
    },
    /// The writer of a connection reported [`Input::WriteBlocked`] drained
    /// its queue to the low-water mark: the core hands the connection what
    /// it missed from its cursors on, as merged chunks, within its fair
    /// share of the next step. Sent once per transition; a runtime that
    /// finds the queue blocked again by the time it feeds this drops it (a
    /// later `Writable` follows).
    Writable {
        /// The connection.
        conn: ConnId,
    },
    /// The runtime's look at the connection's outbound queue: `bytes` of
    /// reply text (chunk deltas) wait there. Reported for every connection
    /// at every look, at least once a second. The core adds the reply text
    /// its cursors are behind by (what it has not handed the connection yet,
    /// e.g. while it is [blocked](Input::WriteBlocked)) and closes the
    /// connection with 4008 when that lag is past
    /// [`Config::max_lag_bytes`](crate::Config::max_lag_bytes) at two looks
    /// in a row and has not shrunk in between.
    QueueLag {
        /// The connection.
        conn: ConnId,
        /// The reply text queued, in bytes.
        bytes: usize,
    },
    /// The socket is gone (closed by either side, or failed).
    Disconnected {
        /// The connection.
        conn: ConnId,
    },
    /// The store answered an operation.
    StoreReply {
        /// The operation.
        op: OpId,
        /// The answer.
        result: Result<StoreReply, StoreError>,
    },
    /// A notice arrived on a subscribed topic.
    Notice(Notice),
    /// A generator that this node started reports.
    Generator {
        /// The reply it produces.
        message_id: MessageId,
        /// What happened.
        event: GeneratorEvent,
    },
    /// An HTTP API request from `user`.
    Http {
        /// Names the response.
        req: HttpReqId,
        /// The authenticated user.
        user: UserId,
        /// The request.
        request: HttpRequest,
    },
    /// Wall-clock time, to re-anchor the core's wall clock (it advances with
    /// `now` in between).
    WallClock {
        /// Milliseconds since the Unix epoch.
        unix_ms: u64,
    },
    /// [`Input::WallClock`] to the nanosecond: the runtime's choice when
    /// chunks carry timestamps
    /// ([`Config::chunk_timestamps`](crate::Config::chunk_timestamps)),
    /// whose `ts_ns` is the core's wall clock when it appends a chunk.
    WallClockNs {
        /// Nanoseconds since the Unix epoch.
        unix_ns: u64,
    },
    /// Stop: close every connection with 1001 and settle the replies this
    /// node produces.
    Shutdown,
}

/// Something the runtime must do, from
/// [`Node::poll_output`](crate::Node::poll_output).
///
/// # The runtime's contract
///
/// The node's guarantees (the cancel fence, exactly-once resume, subscribe
/// before read) hold only if the runtime carrying out these outputs keeps
/// three rules:
///
/// 1. **Outputs are carried out in the order they are polled.** Frames for
///    one connection reach its one writer in that order ([`Output::Send`],
///    [`Output::SendMany`] and [`Output::Close`] interleave as polled; an
///    [`Output::Ping`] may pass frames still waiting, since it carries
///    nothing of the conversation and must reach a client that is behind);
///    store operations are issued in that order.
/// 2. **A [`Output::Subscribe`] takes effect before the next
///    [`Output::Store`] is issued.** A connection's snapshot read follows
///    its subscription, so a notice published after the read is never
///    missed; a runtime whose subscribe is asynchronous (Redis pub/sub) must
///    wait for the subscription's confirmation before issuing the next store
///    operation.
/// 3. **`now` is monotonic.** Every `now` passed to
///    [`Node::handle_input`](crate::Node::handle_input) and
///    [`Node::handle_timeout`](crate::Node::handle_timeout) is at or after
///    the previous one, and `handle_timeout` is called once the deadline of
///    [`Node::poll_timeout`](crate::Node::poll_timeout) has passed, however
///    busy the runtime is with other inputs (a runtime whose timers starve
///    under load lets leases lapse).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[must_use = "every output must be carried out"]
pub enum Output {
    /// Send a frame on a connection (through its one writer, in order).
    Send {
        /// The connection.
        conn: ConnId,
        /// The frame.
        frame: ServerFrame,
    },
    /// Send the same frame on each of several connections (each through its
    /// own writer, in order with that connection's other frames). The
    /// runtime can encode it once for all of them.
    SendMany {
        /// The connections.
        conns: Vec<ConnId>,
        /// The frame.
        frame: ServerFrame,
    },
    /// Send a WebSocket ping.
    Ping {
        /// The connection.
        conn: ConnId,
    },
    /// Send everything queued before this, then close with `code`.
    Close {
        /// The connection.
        conn: ConnId,
        /// The close code.
        code: CloseCode,
    },
    /// The core holds nothing of this connection any more; drop the socket
    /// if it is still there.
    Released {
        /// The connection.
        conn: ConnId,
    },
    /// Run a store operation and feed its reply back as
    /// [`Input::StoreReply`].
    Store {
        /// Names the reply.
        op: OpId,
        /// The operation.
        request: StoreOp,
    },
    /// Receive notices published on `topic`.
    Subscribe(Topic),
    /// Stop receiving notices on `topic`.
    Unsubscribe(Topic),
    /// Start a generator for a reply; feed its events back as
    /// [`Input::Generator`].
    StartGenerator {
        /// The reply.
        message_id: MessageId,
        /// The conversation.
        conv: ConvKey,
        /// The conversation's turns, oldest first, the new user turn last.
        context: Vec<Message>,
    },
    /// Stop a generator at once (close its upstream request). Events it
    /// still reports are ignored.
    AbortGenerator {
        /// The reply.
        message_id: MessageId,
    },
    /// Answer an HTTP request: `status` with a JSON `body`.
    HttpResponse {
        /// The request.
        req: HttpReqId,
        /// The HTTP status code.
        status: u16,
        /// The JSON body.
        body: String,
    },
    /// Something worth a log line or a metric.
    Event(Event),
}

/// Observations for logs and metrics. They change nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Event {
    /// A cap refused a connection, a chat or an HTTP post
    /// ([`caps`](crate::caps)): nothing was started.
    RateLimited {
        /// The cap.
        cap: crate::caps::Cap,
    },
    /// A connection is Open (after its snapshot).
    ConnectionOpened {
        /// The connection.
        conn: ConnId,
    },
    /// A connection's record was released.
    ConnectionClosed {
        /// The connection.
        conn: ConnId,
    },
    /// A reply this node produced settled.
    ReplySettled {
        /// The reply.
        message_id: MessageId,
        /// Its outcome.
        outcome: Outcome,
        /// Its last chunk.
        final_seq: Seq,
    },
    /// A cancel's answer went out on the connection that asked. For a
    /// found reply it goes out after the last chunk that connection gets of
    /// it, so `latency` is the cancel-to-quiet time there.
    CancelAnswered {
        /// The connection that asked.
        conn: ConnId,
        /// The answer.
        status: CancelStatus,
        /// From the cancel frame's arrival to its answer being sent.
        latency: std::time::Duration,
    },
    /// A resume was served exactly (`true`) or answered `resume_unavailable`.
    Resumed {
        /// The connection.
        conn: ConnId,
        /// Whether it was served exactly.
        exact: bool,
    },
    /// A dialect connection sent a frame its dialect ignores (it is not
    /// answered: see [`dialect`](crate::dialect)).
    FrameIgnored {
        /// The connection.
        conn: ConnId,
        /// Why, for the log.
        reason: &'static str,
    },
    /// A store operation failed: the store could not be reached
    /// ([`StoreError::Unavailable`]).
    StoreUnavailable {
        /// The operation.
        op: OpId,
    },
    /// A store operation failed: the store refused it for want of room
    /// ([`StoreError::Refused`]). Expect them in bursts while the store is
    /// full; a runtime counts them rather than logging each.
    StoreRefused {
        /// The operation.
        op: OpId,
        /// The store's words.
        reason: String,
    },
    /// A store operation failed: the store answered something this node does
    /// not understand ([`StoreError::Internal`]), a bug worth an alert.
    StoreInternal {
        /// The operation.
        op: OpId,
        /// What was not understood.
        reason: String,
    },
}
