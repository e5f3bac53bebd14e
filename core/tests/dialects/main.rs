//! The dialects through a whole node and the in-memory store, beside native
//! connections of the same conversations: the seed front end's `/ws/chat`
//! (`compat`) and the AI SDK's WebSocket (`ai_sdk`).
#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "a test: ids are literals, and the node is handed a base instant to count from"
)]

mod ai_sdk;
mod compat;
mod world;
