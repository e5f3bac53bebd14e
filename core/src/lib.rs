//! weir-core (docs in progress)
#![forbid(unsafe_code)]
#![deny(missing_docs)]
pub mod api;
pub mod config;
pub mod ids;
pub mod node;
pub mod presence;
pub mod session;
pub mod store;
pub mod stream;
pub mod timer;
pub mod wire;

pub use api::{Event, GeneratorEvent, Input, OpId, Output};
pub use config::Config;
pub use node::Node;
