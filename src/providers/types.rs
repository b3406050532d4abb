//! What every provider module shares: which providers exist and how to reach them, and the
//! one interface over their chat wire formats (requests, streamed events, errors).

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::AiConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "lowercase")]
pub enum AiProvider {
    Gemini,
    Openai,
    Anthropic,
}

impl AiProvider {
    pub const ALL: [AiProvider; 3] = [Self::Gemini, Self::Openai, Self::Anthropic];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gemini => "gemini",
            Self::Openai => "openai",
            Self::Anthropic => "anthropic",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|provider| provider.as_str() == text)
    }

    pub fn display_name(self) -> &'static str {
        match self {
            Self::Gemini => "Gemini",
            Self::Openai => "OpenAI",
            Self::Anthropic => "Anthropic",
        }
    }

    /// The model used when the user has not chosen one.
    pub fn default_model(self) -> &'static str {
        match self {
            Self::Gemini => "gemini-2.5-flash",
            Self::Openai => "gpt-4.1-mini",
            Self::Anthropic => "claude-sonnet-4-5",
        }
    }

    fn base_url(self, config: &AiConfig) -> &str {
        match self {
            Self::Gemini => &config.gemini_base_url,
            Self::Openai => &config.openai_base_url,
            Self::Anthropic => &config.anthropic_base_url,
        }
    }

    /// A request to `path` under the provider's base URL, authenticated with `api_key` the
    /// way that provider expects.
    pub fn request(
        self,
        http: &reqwest::Client,
        config: &AiConfig,
        method: reqwest::Method,
        path: &str,
        api_key: &str,
    ) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.base_url(config).trim_end_matches('/'));
        let request = http.request(method, url);
        match self {
            Self::Gemini => request.header("x-goog-api-key", api_key),
            Self::Openai => request.bearer_auth(api_key),
            Self::Anthropic => request
                .header("x-api-key", api_key)
                .header("anthropic-version", "2023-06-01"),
        }
    }
}

/// One conversation turn as the providers see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Turn {
    User(String),
    /// Files the user attached (images and PDFs, sent inline): part of the user's message,
    /// before its text (`Turn::User`), which each provider merges with them.
    Files(Vec<FilePart>),
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

/// A file as the model receives it: bytes already within every provider's limits (images
/// resized and re-encoded by the caller).
#[derive(Debug, Clone, PartialEq)]
pub struct FilePart {
    pub filename: String,
    /// An image type (JPEG, PNG, WebP) or `application/pdf`.
    pub mime_type: String,
    pub data: bytes::Bytes,
}

impl FilePart {
    pub fn is_pdf(&self) -> bool {
        self.mime_type == "application/pdf"
    }

    pub fn base64(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&self.data)
    }
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
    /// Gemini's `thoughtSignature` on the call, which its thinking models (Gemini 3) require
    /// back on the same call in the next request of the turn, else they answer 400.
    pub signature: Option<String>,
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
    /// 503, Anthropic's 529 or an `overloaded_error`: the provider is busy for everyone.
    #[error("the provider is overloaded")]
    Overloaded { retry_after_seconds: u32 },
    /// No first byte, or no event, within the configured time.
    #[error("the provider did not answer in time")]
    Timeout,
    /// Anything else: an error status, an error event, or a malformed or unknown event. The
    /// text may quote the provider; `stream_chat` and `complete_chat` scrub the key from it.
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

/// A whole (not streamed) reply: its text, and the tokens it cost when the provider said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub text: String,
    /// Input and output tokens.
    pub usage: Option<(u32, u32)>,
}

/// One provider's wire format for chat completions.
#[async_trait::async_trait]
pub trait ChatProvider: Send + Sync {
    /// Starts a streamed reply: fails before streaming for key, rate-limit and status errors.
    async fn stream(
        &self,
        upstream: &Upstream<'_>,
        request: &ChatRequest,
    ) -> Result<EventStream, ProviderError>;

    /// The whole reply in one response (for short answers such as titles).
    async fn complete(
        &self,
        upstream: &Upstream<'_>,
        request: &ChatRequest,
    ) -> Result<Completion, ProviderError>;

    /// Whether an error body (with a status other than 401/403) says the key was refused.
    fn rejects_key(&self, _body: &Value) -> bool {
        false
    }

    /// How long an error body asks to wait, for providers that send no Retry-After.
    fn retry_delay(&self, _body: &Value) -> Option<u32> {
        None
    }

    /// Whether an error body says the provider is overloaded.
    fn is_overloaded(&self, _body: &Value) -> bool {
        false
    }
}
