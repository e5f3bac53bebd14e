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
//! A module that uses this shim may use only what it re-exports, and only the parts of
//! the API that `loom` models as well: `Mutex::lock` returns a `LockResult` in both,
//! so poisoning is handled the same way (`unwrap_or_else(PoisonError::into_inner)`).

// `Arc` is part of the shim's contract (the runtime's modules share loom-checked
// structures through it) even while no module of this crate uses it yet.
#[allow(unused_imports)]
pub(crate) use std::sync::{Arc, Mutex};

/// Runs a unit test body: directly here, inside `loom::model` in the verification
/// crate's shim, so the same `#[cfg(test)]` tests pass with either set of types.
#[cfg(test)]
pub(crate) fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    f();
}
