//! The per-connection outbound queue: many producers, exactly one writer.
//!
//! Every frame for a connection goes through one [`OutQueue`]; the connection's single
//! writer task [`pop`](OutQueue::pop)s and writes them, so frames of one connection are
//! never interleaved on the socket. The queue is plain synchronous code behind one
//! mutex; it never blocks on anything but that mutex and knows nothing of tokio. The
//! writer waits for it with [`poll_pop`](OutQueue::poll_pop), which keeps the writer's
//! [`Waker`] in the queue when the queue is empty; the next accepted push (or a
//! [`close`](OutQueue::close)) takes that waker and wakes it, after the lock is
//! released. So a writer is woken once when its queue goes from empty to non-empty,
//! not once per item: it drains everything it finds before it waits again.
//!
//! # Items are encoded once
//!
//! A frame enters the queue already encoded: [`Item::Frame`] holds an
//! `Arc<`[`Encoded`]`>`, the frame and its JSON text, made once by the producer. A
//! frame that goes to many connections (a chunk of a reply that a whole conversation
//! watches) is encoded once and the same `Arc` is pushed to every connection's queue; the
//! writer hands the text to the socket as it is (a reference-count bump, no copy of the
//! text and no second encoding). Merging (below) never changes a shared frame: it makes
//! an [`Item::Merged`] of the connection's own, which the writer encodes when it pops
//! it.
//!
//! # Rules
//!
//! The queue holds at most `capacity` items (counted in items, not bytes; a capacity of
//! 0 is taken as 1, since a queue that can hold nothing could never send anything).
//! It also counts its [lag](OutQueue::lag_bytes), the sum of the `delta`s of the chunk
//! frames queued (merging keeps it: a merged frame's delta is the concatenation), which
//! the driver watches against `--max-lag-bytes`. [`push`](OutQueue::push) decides,
//! under the lock, in this order:
//!
//! 1. **Closed.** After [`close`](OutQueue::close) or after an [`Item::Close`] was
//!    accepted, every push returns [`Push::Closed`] and queues nothing (another
//!    `Close` included).
//! 2. **Close is always accepted.** An [`Item::Close`] is appended even when the queue
//!    is full (it is the one item that may take the queue to `capacity + 1`) and closes
//!    the queue: [`Push::Queued`]. It is therefore always the last item that pops.
//! 3. **Ping goes first.** An [`Item::Ping`] takes no slot: it marks a ping pending,
//!    which the next [`pop`](OutQueue::pop) returns before any queued frame (a second
//!    ping while one is pending is the same ping): [`Push::Queued`]. A full queue never
//!    drops or delays a ping behind its frames, so a client that reads, however far
//!    behind, gets a ping to answer (a WebSocket ping may come between any two
//!    messages, and its pong is all the server waits for).
//! 4. **Room.** When fewer than `capacity` items are queued, the item is appended
//!    unchanged: [`Push::Queued`]. Nothing is merged while there is room, so a reader
//!    that keeps up sees every chunk as it was produced.
//! 5. **Full, next chunk of the tail.** A [`Chunk`] frame that continues the chunk frame
//!    at the tail of the queue (same `message_id`, its first seq is the tail's `seq + 1`)
//!    is merged into that tail frame: [`Push::Merged`]. It takes no slot.
//! 6. **Full, compaction.** Otherwise the queue is compacted: every run of *adjacent*
//!    queued chunk frames that [continue](#merging) one another becomes one frame. If
//!    that freed at least one slot, the item is appended: [`Push::Merged`].
//! 7. **Overflow.** If compaction freed nothing, the item is *not* queued and the queue
//!    is left exactly as it was: [`Push::Overflow`]. The caller reports the slow
//!    consumer to the core, which closes the connection with 4008 so the client resumes.
//!
//! [`pop`](OutQueue::pop) never blocks and returns a pending ping first, then the items
//! in the order they were accepted; after [`close`](OutQueue::close) (or a `Close` item)
//! what is already queued still pops, then `None`. Every pop counts as write progress
//! ([`progress`](OutQueue::progress)): the runtime reports a queue that has waited
//! without progress to the core, which closes a stalled connection with 4008. When a pop
//! leaves the queue empty, a buffer grown past [`IDLE_SLOTS`] items is released, so an
//! idle connection does not keep the memory of a burst (its `hello` and `history`, or a
//! slow stretch).
//!
//! # Credit: the core stops before the queue is full
//!
//! Merging keeps a connection that falls behind from holding a frame per chunk, but the
//! merged frame is the connection's own copy of the text. So the queue also tells the core
//! when to stop: when an accepted push takes it to its **high-water mark** (three quarters
//! of `capacity`, at least one item) it becomes *blocked*, and [`offer`](OutQueue::offer)
//! says so ([`Pushed::blocked`]) — the runtime tells the core `Input::WriteBlocked`, and the
//! core hands the connection nothing more (its cursors wait in the conversation's view,
//! which holds the text once for every connection). When a pop by the writer takes a
//! blocked queue down to its **low-water mark** (a quarter of `capacity`) it is no longer
//! blocked, and [`take`](OutQueue::take) says so ([`Popped::writable`]) — the writer tells
//! the core `Input::Writable`, and the core's next step gives the connection what it
//! missed, merged. Each transition is reported once, by the one call that made it, under the
//! lock; `blocked` and `writable` alternate. A closed queue reports neither. The frames the
//! core sent before it heard of the block still arrive, into the quarter left above the
//! high-water mark, and past it merge (rule 5, 6), which is therefore rare.
//!
//! # Merging
//!
//! A chunk frame covers the seqs `first_seq()..=seq` (`from_seq..=seq` for a merged one,
//! just `seq` for a plain one). Frame `b` *continues* frame `a` when both are
//! well-formed (`first_seq() <= seq`), carry the same `message_id`, and
//! `b.first_seq() == a.seq + 1`. Merging `b` into `a` gives one frame with
//! `from_seq = Some(a.first_seq())`, `seq = b.seq` and `delta = a.delta + b.delta`, so
//! the seq numbers stay exact and the client receives exactly the same text. The result
//! is an [`Item::Merged`]: the queue's own copy of the chunk, extended in place by later
//! merges and encoded by the writer (once) when it pops it.
//!
//! Only neighbours in the queue merge (and the incoming chunk with the tail), so a merge
//! never moves a frame past another one: not past a frame of another reply, and not
//! past an `end`, `cancel_result` or anything else of the same reply. As a consequence,
//! chunks of two replies that alternate in the queue do not merge with each other.
//!
//! [`merged_frames`](OutQueue::merged_frames) counts the frames absorbed by merging: each
//! time two chunk frames become one it grows by one, so
//! `frames popped == items accepted - merged_frames`.
//!
//! # Concurrency
//!
//! One mutex guards the whole state; every method takes it exactly once and does
//! no I/O and no wake-up while holding it (a waker taken under the lock is woken after
//! it is released). The mutex and `Arc` come from `crate::sync`, so the verification
//! crate model-checks this very file with `loom` (`verification/tests/loom_queue.rs`),
//! wake-ups included. A poisoned mutex is recovered: the code that runs under the lock
//! cannot panic (short of allocation failure, which aborts), so the state behind a
//! poisoned lock is still consistent.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::fmt;
use std::ops::DerefMut;
use std::sync::PoisonError;
use std::task::{Context, Poll, Waker};

use weir_core::wire::{Chunk, CloseCode, ServerFrame};

use crate::sync::{Arc, Mutex, SharedText};

/// How many item slots an empty queue may keep allocated. A pop that empties a queue
/// whose buffer grew past this releases the buffer; a small one is kept, so a connection
/// that keeps up with a reply (one or two items queued at a time) does not allocate per
/// chunk.
pub(crate) const IDLE_SLOTS: usize = 4;

/// A frame and its JSON text, encoded once ([`ServerFrame::encode`]) and shared, in an
/// `Arc`, by every queue the frame goes to.
pub(crate) struct Encoded {
    frame: ServerFrame,
    text: SharedText,
}

impl Encoded {
    /// Encodes `frame`.
    #[must_use]
    pub(crate) fn new(frame: ServerFrame) -> Self {
        let text = SharedText::from(frame.encode());
        Self { frame, text }
    }

    /// The frame.
    #[must_use]
    pub(crate) fn frame(&self) -> &ServerFrame {
        &self.frame
    }

    /// The frame's JSON text, as [`ServerFrame::encode`] made it.
    #[must_use]
    pub(crate) fn text(&self) -> &SharedText {
        &self.text
    }
}

impl fmt::Debug for Encoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The text is the frame's encoding: printing both says nothing more.
        f.debug_tuple("Encoded").field(&self.frame).finish()
    }
}

/// One entry of an [`OutQueue`], as the writer carries it out.
///
/// Two items are equal when the writer would send the same thing: an `Item::Frame` of a
/// chunk equals an `Item::Merged` of the same chunk.
#[derive(Clone)]
pub(crate) enum Item {
    /// Send this frame's text as one WebSocket text message. The `Arc` may be shared with
    /// other connections' queues. `chunk` frames may be merged while the queue is full
    /// (see the [module docs](self)); a shared frame itself is never changed.
    Frame(Arc<Encoded>),
    /// A chunk frame that merging made in this queue (`from_seq` set): the writer encodes
    /// it when it pops it. Producers push [`Item::Frame`]s.
    Merged(Box<Chunk>),
    /// Send a WebSocket ping. Takes no slot and pops before the queued frames (see the
    /// [module docs](self)).
    Ping,
    /// Send everything queued before this, then close the WebSocket with this code.
    /// Accepted even when the queue is full (refused only once the queue is closed), and
    /// always the last item of the queue.
    Close(CloseCode),
}

impl Item {
    /// `frame`, encoded, as an item of its own (for a frame that goes to one connection;
    /// share one `Arc<Encoded>` between the items of a frame that goes to several).
    #[must_use]
    pub(crate) fn frame(frame: ServerFrame) -> Self {
        Self::Frame(Arc::new(Encoded::new(frame)))
    }

    /// The chunk this item sends, if it is a chunk frame (plain or merged).
    #[must_use]
    pub(crate) fn chunk(&self) -> Option<&Chunk> {
        match self {
            Self::Frame(encoded) => match encoded.frame() {
                ServerFrame::Chunk(chunk) => Some(chunk),
                _ => None,
            },
            Self::Merged(chunk) => Some(chunk),
            Self::Ping | Self::Close(_) => None,
        }
    }
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Ping, Self::Ping) => true,
            (Self::Close(a), Self::Close(b)) => a == b,
            (Self::Frame(a), Self::Frame(b)) => a.frame() == b.frame(),
            _ => match (self.chunk(), other.chunk()) {
                (Some(a), Some(b)) => a == b,
                _ => false,
            },
        }
    }
}

impl Eq for Item {}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Frame(encoded) => f.debug_tuple("Frame").field(encoded.frame()).finish(),
            Self::Merged(chunk) => f.debug_tuple("Merged").field(chunk).finish(),
            Self::Ping => f.write_str("Ping"),
            Self::Close(code) => f.debug_tuple("Close").field(code).finish(),
        }
    }
}

/// What [`OutQueue::push`] did with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use = "an Overflow must be reported to the core as a slow consumer"]
pub(crate) enum Push {
    /// The item was appended unchanged (there was room, or it was a `Close`).
    Queued,
    /// The queue was full and merging chunk frames made room: the item was merged into
    /// the tail frame or appended after a compaction. Nothing was lost.
    Merged,
    /// The queue was full and merging freed nothing: the item was **not** queued. The
    /// caller reports the slow consumer (the core then closes with 4008).
    Overflow,
    /// The queue is closed ([`OutQueue::close`] or a `Close` item): the item was not
    /// queued.
    Closed,
}

impl Push {
    /// Whether the item is in the queue now (queued or merged).
    #[must_use]
    pub(crate) fn is_accepted(self) -> bool {
        matches!(self, Self::Queued | Self::Merged)
    }
}

/// What [`OutQueue::offer`] did with an item, and whether that made the queue blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use = "a queue that became blocked must be reported to the core"]
pub(crate) struct Pushed {
    /// What became of the item ([`OutQueue::push`]'s answer).
    pub(crate) push: Push,
    /// This push took the queue to its high-water mark: it is blocked now, and was not
    /// before (the runtime tells the core `Input::WriteBlocked`).
    pub(crate) blocked: bool,
}

/// An item the writer took ([`OutQueue::take`]), and whether that unblocked the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub(crate) struct Popped {
    /// The item to write.
    pub(crate) item: Item,
    /// This pop took a blocked queue down to its low-water mark: it is writable again
    /// (the writer tells the core `Input::Writable`).
    pub(crate) writable: bool,
}

/// How far a queue's writer has come: what the runtime reports to the core, which
/// decides when a connection has stalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Progress {
    /// How many items (pings included) the writer has taken since the queue was made.
    pub(crate) popped: u64,
    /// Whether anything (an item or a ping) waits for the writer now.
    pub(crate) waiting: bool,
}

/// The bounded outbound queue of one connection (see the [module docs](self) for the
/// rules). `Send + Sync`: share it in an `Arc` between the producers and the writer.
pub(crate) struct OutQueue {
    state: Mutex<State>,
    /// What the writer calls when a pop unblocked the queue
    /// ([`notify_writable`](Self::notify_writable)): set once by the runtime, kept here
    /// rather than in the writer's future so that every connection's task stays small.
    on_writable: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

#[derive(Debug)]
struct State {
    items: VecDeque<Item>,
    capacity: usize,
    /// An accepted push that leaves this many items queued blocks the queue.
    high_water: usize,
    /// A pop that leaves at most this many items queued unblocks it.
    low_water: usize,
    /// Between a push that reached `high_water` and a pop that reached `low_water`.
    blocked: bool,
    /// The sum of the deltas of the queued chunk frames, in bytes.
    lag: usize,
    /// A ping waits: it pops before `items`.
    ping: bool,
    popped: u64,
    closed: bool,
    merged: u64,
    /// The writer's waker, kept by `poll_pop` when it found the queue empty and open;
    /// taken (and woken) by the next accepted push or by `close`.
    writer: Option<Waker>,
}

impl fmt::Debug for OutQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutQueue")
            .field("state", &self.state)
            .field("on_writable", &self.on_writable.get().is_some())
            .finish()
    }
}

impl OutQueue {
    /// An empty, open queue that holds at most `capacity` items (0 is taken as 1).
    #[must_use]
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            on_writable: std::sync::OnceLock::new(),
            state: Mutex::new(State {
                // Grows on demand (up to `capacity` items and a `Close`), and a grown
                // buffer is released when the queue empties again.
                items: VecDeque::new(),
                capacity,
                high_water: (capacity - capacity / 4).max(1),
                low_water: capacity / 4,
                blocked: false,
                lag: 0,
                ping: false,
                popped: 0,
                closed: false,
                merged: 0,
                writer: None,
            }),
        }
    }

    /// Offers `item` to the queue; the result says whether it was queued, merged,
    /// refused for lack of room ([`Push::Overflow`]), or refused because the queue is
    /// closed. See the module docs for the rules. An
    /// accepted item wakes the writer if it is waiting in [`poll_pop`](Self::poll_pop).
    #[cfg(test)]
    pub(crate) fn push(&self, item: Item) -> Push {
        self.offer(item).push
    }

    /// [`push`](Self::push), also saying whether the push blocked the queue (see
    /// [credit](self#credit-the-core-stops-before-the-queue-is-full)).
    pub(crate) fn offer(&self, item: Item) -> Pushed {
        let mut state = self.lock();
        let pushed = state.push(item);
        let writer = if pushed.push.is_accepted() {
            state.writer.take()
        } else {
            None
        };
        drop(state);
        if let Some(writer) = writer {
            writer.wake();
        }
        pushed
    }

    /// Takes the oldest item, or `None` when the queue is empty. Never blocks.
    #[cfg(test)]
    pub(crate) fn pop(&self) -> Option<Item> {
        self.take().map(|p| p.item)
    }

    /// [`pop`](Self::pop), also saying whether the pop unblocked the queue (see
    /// [credit](self#credit-the-core-stops-before-the-queue-is-full)).
    pub(crate) fn take(&self) -> Option<Popped> {
        self.lock().pop()
    }

    /// The writer's wait, as [`poll_take`](Self::poll_take) without the credit.
    #[cfg(test)]
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        self.poll_take(cx).map(|p| p.map(|p| p.item))
    }

    /// The writer's wait: the oldest item (`Ready(Some)`); `Ready(None)` when the queue
    /// is empty and closed (nothing will ever come); otherwise `Pending`, keeping `cx`'s
    /// waker, which the next accepted push or [`close`](Self::close) wakes. Meant for
    /// the one writer: a later call replaces the waker an earlier one kept.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<Popped>> {
        let mut state = self.lock();
        if let Some(item) = state.pop() {
            return Poll::Ready(Some(item));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        match &mut state.writer {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Closes the queue: every later push returns [`Push::Closed`]. Items already queued
    /// still pop. Wakes the writer if it is waiting. Closing twice is harmless.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        let writer = state.writer.take();
        drop(state);
        if let Some(writer) = writer {
            writer.wake();
        }
    }

    /// How many items are queued (a merged frame counts once; a pending ping does not
    /// count).
    #[cfg(test)]
    #[must_use]
    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether nothing is queued (no item and no ping).
    #[cfg(test)]
    #[must_use]
    pub(crate) fn is_empty(&self) -> bool {
        let state = self.lock();
        state.items.is_empty() && !state.ping
    }

    /// The lag: the bytes of reply text (chunk deltas) queued.
    #[must_use]
    pub(crate) fn lag_bytes(&self) -> usize {
        self.lock().lag
    }

    /// Sets what [`notify_writable`](Self::notify_writable) calls (once; a second call
    /// changes nothing).
    pub(crate) fn set_on_writable(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_writable.set(f);
    }

    /// Tells the runtime that a pop unblocked the queue ([`Popped::writable`]): calls
    /// what [`set_on_writable`](Self::set_on_writable) set, if anything. Called by the
    /// writer, outside the lock.
    pub(crate) fn notify_writable(&self) {
        if let Some(f) = self.on_writable.get() {
            f();
        }
    }

    /// Whether the queue is blocked: a push reached its high-water mark and no pop has
    /// taken it down to its low-water mark since.
    #[must_use]
    pub(crate) fn is_blocked(&self) -> bool {
        self.lock().blocked
    }

    /// How far the writer has come, and whether anything waits for it.
    #[must_use]
    pub(crate) fn progress(&self) -> Progress {
        let state = self.lock();
        Progress {
            popped: state.popped,
            waiting: state.ping || !state.items.is_empty(),
        }
    }

    /// How many items the queue's buffer has room for without allocating (0: it holds no
    /// allocation). At most [`IDLE_SLOTS`] (rounded up to the buffer's smallest size)
    /// once the queue has emptied.
    #[cfg(test)]
    #[must_use]
    pub(crate) fn allocated_slots(&self) -> usize {
        self.lock().items.capacity()
    }

    /// Whether the queue refuses pushes ([`close`](Self::close) was called or a `Close`
    /// item was accepted). Queued items may still be waiting to pop.
    #[cfg(test)]
    #[must_use]
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// How many frames were absorbed by merging since the queue was made (a metric):
    /// each time two chunk frames became one, this grew by one.
    #[must_use]
    pub(crate) fn merged_frames(&self) -> u64 {
        self.lock().merged
    }

    fn lock(&self) -> impl DerefMut<Target = State> + '_ {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// The rules of [`OutQueue::push`], and the credit.
    fn push(&mut self, item: Item) -> Pushed {
        let push = self.push_item(item);
        let blocked = push.is_accepted()
            && !self.closed
            && !self.blocked
            && self.items.len() >= self.high_water;
        self.blocked |= blocked;
        Pushed { push, blocked }
    }

    /// The rules of [`OutQueue::push`].
    fn push_item(&mut self, item: Item) -> Push {
        if self.closed {
            return Push::Closed;
        }
        if let Item::Close(_) = item {
            self.items.push_back(item);
            self.closed = true;
            return Push::Queued;
        }
        if let Item::Ping = item {
            self.ping = true;
            return Push::Queued;
        }
        let lag = self.lag.saturating_add(delta_len(&item));
        let push = if self.items.len() < self.capacity {
            self.items.push_back(item);
            Push::Queued
        } else if self.merge_into_tail(&item) {
            Push::Merged
        } else if self.compact() > 0 {
            self.items.push_back(item);
            Push::Merged
        } else {
            return Push::Overflow;
        };
        self.lag = lag;
        push
    }

    fn pop(&mut self) -> Option<Popped> {
        let item = if self.ping {
            self.ping = false;
            Item::Ping
        } else {
            let item = self.items.pop_front()?;
            self.lag = self.lag.saturating_sub(delta_len(&item));
            if self.items.is_empty() && self.items.capacity() > IDLE_SLOTS {
                self.items = VecDeque::new();
            }
            item
        };
        self.popped = self.popped.wrapping_add(1);
        let writable = self.blocked && !self.closed && self.items.len() <= self.low_water;
        if writable {
            self.blocked = false;
        }
        Some(Popped { item, writable })
    }

    /// Merges `item` into the chunk frame at the tail when it continues it; returns
    /// whether it did.
    fn merge_into_tail(&mut self, item: &Item) -> bool {
        let Some(tail) = self.items.back_mut() else {
            return false;
        };
        if !absorb(tail, item) {
            return false;
        }
        self.merged = self.merged.saturating_add(1);
        true
    }

    /// Merges every run of adjacent chunk frames that continue one another into one
    /// frame, in place and in order. Returns how many frames were absorbed (the slots
    /// freed); when that is 0 the queue is unchanged.
    fn compact(&mut self) -> usize {
        let before = self.items.len();
        let items = self.items.make_contiguous();
        // `items[..=kept]` is the compacted prefix; `items[kept + 1..read]` holds
        // leftovers (frames already absorbed, or moved down by a swap), cut off below.
        let mut kept = 0;
        for read in 1..items.len() {
            let (done, rest) = items.split_at_mut(read);
            // `kept < read` always holds, and `rest` is non-empty since `read < len`.
            if let (Some(a), Some(b)) = (done.get_mut(kept), rest.first()) {
                if absorb(a, b) {
                    continue;
                }
            }
            kept += 1;
            items.swap(kept, read);
        }
        let after = (kept + 1).min(before);
        self.items.truncate(after);
        let freed = before - after;
        self.merged = self.merged.saturating_add(freed as u64);
        freed
    }
}

/// If `b` is a chunk frame that [continues](continues) the chunk frame `a`, extends `a`
/// by `b`'s text up to `b`'s last seq (making `a` an [`Item::Merged`] of its own first,
/// so that a shared frame is never changed) and returns `true`; otherwise leaves `a` as
/// it is and returns `false`.
fn absorb(a: &mut Item, b: &Item) -> bool {
    let Some(next) = b.chunk() else {
        return false;
    };
    match a {
        Item::Merged(chunk) => {
            if !continues(chunk, next) {
                return false;
            }
            extend(chunk, next);
        }
        Item::Frame(encoded) => {
            let ServerFrame::Chunk(chunk) = encoded.frame() else {
                return false;
            };
            if !continues(chunk, next) {
                return false;
            }
            let mut own = Box::new(chunk.clone());
            extend(&mut own, next);
            *a = Item::Merged(own);
        }
        Item::Ping | Item::Close(_) => return false,
    }
    true
}

/// The bytes of reply text `item` carries (its delta, if it is a chunk frame).
fn delta_len(item: &Item) -> usize {
    item.chunk().map_or(0, |c| c.delta.len())
}

/// Whether chunk frame `b` continues `a`: same reply, both well-formed, and `b`'s first
/// seq right after `a`'s last.
fn continues(a: &Chunk, b: &Chunk) -> bool {
    a.message_id == b.message_id
        && a.first_seq() <= a.seq
        && b.first_seq() <= b.seq
        && a.seq.checked_add(1) == Some(b.first_seq())
}

/// Extends `a` (which `b` continues) by `b`'s text up to `b`'s last seq.
fn extend(a: &mut Chunk, b: &Chunk) {
    a.from_seq = Some(a.first_seq());
    a.seq = b.seq;
    a.delta.push_str(&b.delta);
    // A merged frame carries its last chunk's time (docs/protocol-notes.md).
    a.ts_ns = b.ts_ns.or(a.ts_ns);
}

// Beside the file (`#[path]`, so that the loom model that includes this file by path
// finds them too).
#[cfg(test)]
#[path = "queue/tests.rs"]
mod tests;
