//! The JSON of `POST /v1/chat/completions` with `stream: true`: the request
//! weir sends and the parts of each streamed chunk it reads.
//!
//! # Why not `async-openai`'s types
//!
//! `async-openai` (0.43, `chat-completion-types` only) builds on Rust 1.75,
//! but its types do not fit a generator that must work in front of *any*
//! OpenAI-compatible server:
//!
//! - they deserialize strictly: `created: u32`, `id`, `model` and `object`
//!   are required, and `finish_reason`, `role` and `service_tier` are closed
//!   enums. A server that omits one of those fields or sends a value the enum
//!   does not know (vLLM, llama.cpp and Ollama each add their own) would fail
//!   the whole reply as `upstream_malformed`, although its text is fine;
//! - the request type has no room for what it does not model, and pulls in
//!   `derive_builder` (with `darling`) for builders weir does not use.
//!
//! weir reads only `choices[].delta.content`, `choices[].finish_reason` (as
//! a string), `usage` and `error`, and ignores every other field, so these
//! few types are all it needs.

use serde::{Deserialize, Serialize};
use weir_core::wire::Usage;

/// The request body.
#[derive(Debug, Serialize)]
pub(crate) struct ChatRequest<'a> {
    pub(crate) model: &'a str,
    pub(crate) messages: Vec<ChatMessage<'a>>,
    pub(crate) stream: bool,
    /// `include_usage`: the server sends the token counts in a last chunk
    /// (OpenAI, vLLM, llama.cpp and Ollama understand it).
    pub(crate) stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) seed: Option<u64>,
}

/// `stream_options`.
#[derive(Debug, Serialize)]
pub(crate) struct StreamOptions {
    pub(crate) include_usage: bool,
}

/// One turn of the conversation.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(crate) struct ChatMessage<'a> {
    pub(crate) role: &'static str,
    pub(crate) content: &'a str,
}

/// One `data:` payload of the stream (every field optional: servers differ).
#[derive(Debug, Deserialize)]
pub(crate) struct ChatChunk {
    #[serde(default)]
    pub(crate) choices: Vec<ChunkChoice>,
    #[serde(default)]
    pub(crate) usage: Option<WireUsage>,
    /// An error reported inside the stream (llama.cpp, vLLM and OpenAI send
    /// `{"error": {...}}` when a generation fails after the headers).
    #[serde(default)]
    pub(crate) error: Option<serde_json::Value>,
}

/// One choice of a chunk (weir asks for one, `n` = 1 by default).
#[derive(Debug, Deserialize)]
pub(crate) struct ChunkChoice {
    #[serde(default)]
    pub(crate) delta: Option<ChunkDelta>,
    #[serde(default)]
    pub(crate) finish_reason: Option<String>,
}

/// What a chunk adds to the reply.
#[derive(Debug, Deserialize)]
pub(crate) struct ChunkDelta {
    #[serde(default)]
    pub(crate) content: Option<String>,
}

/// Token counts as the server reports them.
#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct WireUsage {
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_llama_cpp_usage_chunk_parses_with_its_extra_fields() {
        let text = r#"{"choices":[],"created":1795362730,"id":"x","model":"m","object":"chat.completion.chunk","usage":{"completion_tokens":20,"prompt_tokens":35,"total_tokens":55,"prompt_tokens_details":{"cached_tokens":0}},"timings":{"prompt_n":35}}"#;
        let chunk: ChatChunk = serde_json::from_str(text).unwrap();
        assert!(chunk.choices.is_empty());
        let usage = Usage::from(chunk.usage.unwrap());
        assert_eq!(usage.prompt_tokens, 35);
        assert_eq!(usage.completion_tokens, 20);
    }

    #[test]
    fn a_role_only_delta_and_an_unknown_finish_reason_parse() {
        let text = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null},"finish_reason":"abort"}]}"#;
        let chunk: ChatChunk = serde_json::from_str(text).unwrap();
        let choice = &chunk.choices[0];
        assert_eq!(choice.delta.as_ref().unwrap().content, None);
        assert_eq!(choice.finish_reason.as_deref(), Some("abort"));
    }

    #[test]
    fn the_request_omits_unset_options() {
        let req = ChatRequest {
            model: "m",
            messages: vec![ChatMessage {
                role: "user",
                content: "hi",
            }],
            stream: true,
            stream_options: StreamOptions {
                include_usage: true,
            },
            max_tokens: None,
            temperature: Some(0.0),
            seed: None,
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"temperature":0.0}"#
        );
    }
}
