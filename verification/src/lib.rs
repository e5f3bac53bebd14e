//! weir-verification: checks of weir-core's invariants beyond examples.
//!
//! - [`harness`]: a deterministic world of real nodes, the store's reference
//!   model, generators and recording clients, driven step by step in virtual
//!   time, with store replies and notices that can be delayed, reordered or
//!   lost.
//! - [`explore`]: exhaustive exploration of a small two-node configuration.
//! - [`sim`]: a seeded, deterministic simulation of a cluster with faults.
//! - [`saturation`]: the same with saturation as the fault: steps that cost
//!   virtual time, inputs in large batches, timers that fire late.
//! - [`check`]: judges a run from the outside (what clients received, against
//!   the store's truth), one rule per invariant of DESIGN.md.
//!
//! The tests in `tests/` use both: scenario tests, the model-based proptest
//! (`core_model.rs`) and the wire properties (`wire_properties.rs`).

pub mod check;
pub mod explore;
pub mod harness;
pub mod saturation;
pub mod sim;
