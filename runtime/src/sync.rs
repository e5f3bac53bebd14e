//! The synchronization types of the runtime's shared-memory structures.
//!
//! Code that several tasks touch at once (the per-connection [`OutQueue`](crate::queue::OutQueue)
//! first of all) takes its `Arc` and `Mutex` from here, never from `std::sync` directly.
//! In this crate they are the `std` types. The verification crate compiles the same
//! source files (`#[path = …] mod queue;`) next to its own `mod sync` that re-exports
//! `loom::sync` instead, and so model-checks the real code under plain `cargo test`
//! without a `loom` cargo feature or a `cfg(loom)` on any shared crate
//! (`DESIGN.md`, "Verification").
//!
//! It also names [`SharedText`], the shared text of an encoded frame, which the
//! verification crate replaces with a plain `String`.
//!
//! A module that uses this shim may use only what it re-exports, and only the parts of
//! the API that `loom` models as well: `Mutex::lock` returns a `LockResult` in both,
//! so poisoning is handled the same way (`unwrap_or_else(PoisonError::into_inner)`).

pub(crate) use std::sync::{Arc, Mutex};

/// The text of an encoded frame, shared between the queues it goes to: tungstenite's
/// `Utf8Bytes`, whose clone is a reference-count bump and which the writer hands to
/// tungstenite as it is. The queue only makes one `From<String>` and moves and clones
/// it; the verification crate, which does not depend on tungstenite, uses `String`.
pub(crate) use async_tungstenite::tungstenite::Utf8Bytes as SharedText;

/// Runs a unit test body: directly here, inside `loom::model` in the verification
/// crate's shim, so the same `#[cfg(test)]` tests pass with either set of types.
#[cfg(test)]
pub(crate) fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    f();
}
