//! weir-core (work in progress)
#![forbid(unsafe_code)]
pub mod ids;
pub mod wire;
