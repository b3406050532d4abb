//! Chat completions with streaming, one interface over the three providers' wire formats.

use futures::stream::BoxStream;
use serde_json::Value;

use super::AiProvider;
use crate::config::AiConfig;

/// One conversation turn as the providers see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Turn {
    User(String),
    /// What the model said before, including the tools it called.
    Assistant {
        text: String,
        tool_calls: Vec<ToolCallRequest>,
    },
    /// A tool's answer to the call `call_id`.
    ToolResult {
        call_id: String,
        name: String,
        result: Value,
    },
}

/// A tool the model may call: `parameters` is a JSON Schema object.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub parameters: Value,
}

/// The model asks to run a tool. `id` is the provider's call id (Gemini has none; one is made up).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallRequest {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub system: String,
    pub turns: Vec<Turn>,
    pub temperature: f64,
    pub max_tokens: u32,
    pub tools: Vec<ToolSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Text(String),
    ToolCall(ToolCallRequest),
    Usage {
        input_tokens: u32,
        output_tokens: u32,
    },
    /// The provider ended the reply (`stop`, `max_tokens`, `tool_use`, …).
    Finished {
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// 401/403 (Gemini: 400 with an invalid-key error): the user's key does not work.
    #[error("the provider refused the API key")]
    KeyRejected,
    #[error("the provider is rate limiting this key")]
    RateLimited { retry_after_seconds: u32 },
    /// No first byte, or no event, within the configured time.
    #[error("the provider did not answer in time")]
    Timeout,
    /// Anything else: an error status, an error event, or a malformed or unknown event.
    #[error("the provider failed: {0}")]
    Upstream(String),
}

pub type EventStream = BoxStream<'static, Result<StreamEvent, ProviderError>>;

/// Where and as whom to call a provider.
pub struct Upstream<'a> {
    pub http: &'a reqwest::Client,
    pub config: &'a AiConfig,
    pub provider: AiProvider,
    pub api_key: &'a str,
}
