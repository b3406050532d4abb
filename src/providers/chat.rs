//! Chat completions with streaming, one interface over the three providers' wire formats.

use futures::TryStreamExt;
use futures::stream::BoxStream;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::AiProvider;
use super::anthropic::{self, Anthropic};
use super::gemini::{self, Gemini};
use super::openai::OpenAi;
use super::sse::{self, Decoder};
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

/// One provider's wire format for chat completions.
#[async_trait::async_trait]
pub trait ChatProvider: Send + Sync {
    /// Starts a streamed reply: fails before streaming for key, rate-limit and status errors.
    async fn stream(
        &self,
        upstream: &Upstream<'_>,
        request: &ChatRequest,
    ) -> Result<EventStream, ProviderError>;

    /// The whole reply's text in one response (for short answers such as titles).
    async fn complete(
        &self,
        upstream: &Upstream<'_>,
        request: &ChatRequest,
    ) -> Result<String, ProviderError>;
}

/// The implementation speaking `provider`'s API.
fn chat_provider(provider: AiProvider) -> &'static dyn ChatProvider {
    match provider {
        AiProvider::Gemini => &Gemini,
        AiProvider::Openai => &OpenAi,
        AiProvider::Anthropic => &Anthropic,
    }
}

/// Streams a reply from `upstream.provider`.
pub async fn stream_chat(
    upstream: &Upstream<'_>,
    request: &ChatRequest,
) -> Result<EventStream, ProviderError> {
    chat_provider(upstream.provider)
        .stream(upstream, request)
        .await
}

/// A whole reply from `upstream.provider`, without streaming.
pub async fn complete_chat(
    upstream: &Upstream<'_>,
    request: &ChatRequest,
) -> Result<String, ProviderError> {
    chat_provider(upstream.provider)
        .complete(upstream, request)
        .await
}

/// What a 429 without a usable Retry-After asks to wait.
const DEFAULT_RETRY_AFTER_SECONDS: u32 = 30;

/// Upstream error messages are shown to users and logged: enough to diagnose, no more.
const MAX_ERROR_MESSAGE_CHARS: usize = 200;

/// POSTs `body` as JSON, waiting at most `first_byte_timeout` for the response headers.
/// Answers only a successful response; error statuses become `ProviderError`s.
pub(super) async fn post(
    upstream: &Upstream<'_>,
    path: &str,
    body: &Value,
) -> Result<reqwest::Response, ProviderError> {
    let request = upstream
        .provider
        .request(
            upstream.http,
            upstream.config,
            reqwest::Method::POST,
            path,
            upstream.api_key,
        )
        .json(body);
    let response = tokio::time::timeout(upstream.config.first_byte_timeout, request.send())
        .await
        .map_err(|_| ProviderError::Timeout)?
        .map_err(|error| transport_error(upstream.provider, &error))?;
    if response.status().is_success() {
        return Ok(response);
    }
    Err(status_error(upstream, response).await)
}

/// POSTs `body` and reads the whole JSON response as `T`; generation happens before the
/// headers, so reading the body is bounded by the idle timeout only.
pub(super) async fn post_for<T: DeserializeOwned>(
    upstream: &Upstream<'_>,
    path: &str,
    body: &Value,
) -> Result<T, ProviderError> {
    let response = post(upstream, path, body).await?;
    let bytes = tokio::time::timeout(upstream.config.stream_idle_timeout, response.bytes())
        .await
        .map_err(|_| ProviderError::Timeout)?
        .map_err(|error| transport_error(upstream.provider, &error))?;
    serde_json::from_slice(&bytes).map_err(|error| {
        ProviderError::Upstream(format!(
            "{} sent a malformed reply ({error})",
            upstream.provider.display_name()
        ))
    })
}

/// The response body as stream events, through `decoder`.
pub(super) fn sse_events(
    upstream: &Upstream<'_>,
    response: reqwest::Response,
    decoder: impl Decoder,
) -> EventStream {
    let provider = upstream.provider;
    let body = response
        .bytes_stream()
        .map_err(move |error| transport_error(provider, &error));
    sse::decode(body, decoder, upstream.config.stream_idle_timeout)
}

/// reqwest's own message names the URL; the provider's name says enough.
fn transport_error(provider: AiProvider, error: &reqwest::Error) -> ProviderError {
    let name = provider.display_name();
    if error.is_timeout() {
        ProviderError::Timeout
    } else if error.is_connect() {
        ProviderError::Upstream(format!("{name} could not be reached"))
    } else {
        ProviderError::Upstream(format!("the connection to {name} failed"))
    }
}

async fn status_error(upstream: &Upstream<'_>, response: reqwest::Response) -> ProviderError {
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let body = tokio::time::timeout(upstream.config.stream_idle_timeout, response.bytes())
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null);
    classify_status(upstream, status, retry_after, &body)
}

fn classify_status(
    upstream: &Upstream<'_>,
    status: reqwest::StatusCode,
    retry_after: Option<u32>,
    body: &Value,
) -> ProviderError {
    let provider = upstream.provider;
    let rate_limited = || ProviderError::RateLimited {
        // Gemini sends no Retry-After; its body says how long to wait.
        retry_after_seconds: retry_after
            .or_else(|| gemini::retry_delay(body))
            .unwrap_or(DEFAULT_RETRY_AFTER_SECONDS),
    };
    match status.as_u16() {
        401 | 403 => ProviderError::KeyRejected,
        // Gemini refuses a bad key with 400 INVALID_ARGUMENT rather than 401.
        400 if provider == AiProvider::Gemini && gemini::rejects_key(body) => {
            ProviderError::KeyRejected
        }
        429 => rate_limited(),
        // Anthropic's 529 overloaded is the same condition as its `overloaded_error` event.
        _ if provider == AiProvider::Anthropic && anthropic::is_overloaded(body) => rate_limited(),
        _ => ProviderError::Upstream(describe_status(upstream, status, body)),
    }
}

/// "OpenAI answered 404 Not Found: The model `x` does not exist", with the key scrubbed should
/// the provider echo it.
fn describe_status(upstream: &Upstream<'_>, status: reqwest::StatusCode, body: &Value) -> String {
    let name = upstream.provider.display_name();
    let Some(message) = body["error"]["message"].as_str() else {
        return format!("{name} answered {status}");
    };
    // Scrubbed before truncating, so no part of the key survives at the cut.
    let message = if upstream.api_key.is_empty() {
        truncated(message)
    } else {
        truncated(&message.replace(upstream.api_key, "[key]"))
    };
    format!("{name} answered {status}: {message}")
}

/// Retry-After in seconds (the HTTP-date form is rare enough from these APIs to default).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<u32> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The default wait for a rate limit or overload reported inside a stream.
pub(super) fn rate_limited() -> ProviderError {
    ProviderError::RateLimited {
        retry_after_seconds: DEFAULT_RETRY_AFTER_SECONDS,
    }
}

/// Consecutive turns of one role as one message, and no empty messages: Gemini and Anthropic
/// want the results of parallel tool calls together and reject empty content.
pub(super) fn merge_roles(
    messages: impl IntoIterator<Item = (&'static str, Vec<Value>)>,
) -> Vec<(&'static str, Vec<Value>)> {
    let mut merged: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (role, parts) in messages {
        match merged.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(parts),
            _ if parts.is_empty() => {}
            _ => merged.push((role, parts)),
        }
    }
    merged
}

/// A tool result as the text OpenAI and Anthropic take: strings as they are, the rest as JSON.
pub(super) fn result_text(result: &Value) -> String {
    match result {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Ids for the calls of providers that send none: unique across conversations, and numbered
/// within one reply so tests can name them.
pub(super) struct CallIds {
    prefix: String,
    issued: u32,
}

impl CallIds {
    pub(super) fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            issued: 0,
        }
    }

    pub(super) fn next(&mut self) -> String {
        self.issued += 1;
        format!("{}_{}", self.prefix, self.issued)
    }
}

impl Default for CallIds {
    fn default() -> Self {
        Self::new(format!("call_{}", uuid::Uuid::new_v4().simple()))
    }
}

/// An error the provider reported in its own words.
pub(super) fn reported_error(provider: AiProvider, message: Option<&str>) -> ProviderError {
    let message = truncated(message.unwrap_or("no details"));
    ProviderError::Upstream(format!(
        "{} reported an error: {message}",
        provider.display_name()
    ))
}

/// An event that is not what the provider's format promises.
pub(super) fn malformed_event(provider: AiProvider, error: &serde_json::Error) -> ProviderError {
    ProviderError::Upstream(format!(
        "{} sent a malformed event ({error})",
        provider.display_name()
    ))
}

/// A whole reply's text; none at all (filtered, cut off by the token limit) is a failure.
pub(super) fn non_empty_reply(provider: AiProvider, text: String) -> Result<String, ProviderError> {
    if text.trim().is_empty() {
        return Err(ProviderError::Upstream(format!(
            "{} returned no text",
            provider.display_name()
        )));
    }
    Ok(text)
}

fn truncated(message: &str) -> String {
    message.chars().take(MAX_ERROR_MESSAGE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::StatusCode;
    use serde_json::json;

    use super::*;

    fn config() -> AiConfig {
        AiConfig {
            gemini_base_url: "http://127.0.0.1:1".to_owned(),
            openai_base_url: "http://127.0.0.1:1".to_owned(),
            anthropic_base_url: "http://127.0.0.1:1".to_owned(),
            validate_timeout: Duration::from_secs(1),
            first_byte_timeout: Duration::from_secs(1),
            stream_idle_timeout: Duration::from_secs(1),
        }
    }

    fn classify(
        provider: AiProvider,
        status: u16,
        retry_after: Option<u32>,
        body: &Value,
    ) -> ProviderError {
        let http = reqwest::Client::new();
        let config = config();
        let upstream = Upstream {
            http: &http,
            config: &config,
            provider,
            api_key: "sk-secret-key",
        };
        let status = StatusCode::from_u16(status).expect("a status");
        classify_status(&upstream, status, retry_after, body)
    }

    #[test]
    fn refused_keys_are_key_errors() {
        for provider in AiProvider::ALL {
            for status in [401, 403] {
                assert_eq!(
                    classify(provider, status, None, &Value::Null),
                    ProviderError::KeyRejected
                );
            }
        }
        let invalid_key = json!({ "error": { "code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT" } });
        assert_eq!(
            classify(AiProvider::Gemini, 400, None, &invalid_key),
            ProviderError::KeyRejected
        );
        assert!(matches!(
            classify(AiProvider::Openai, 400, None, &invalid_key),
            ProviderError::Upstream(_)
        ));
    }

    #[test]
    fn rate_limits_say_how_long_to_wait() {
        let limited =
            |provider, retry_after, body: &Value| classify(provider, 429, retry_after, body);
        assert_eq!(
            limited(AiProvider::Openai, Some(7), &Value::Null),
            ProviderError::RateLimited {
                retry_after_seconds: 7
            }
        );
        assert_eq!(
            limited(AiProvider::Anthropic, None, &Value::Null),
            ProviderError::RateLimited {
                retry_after_seconds: 30
            }
        );
        let retry_info = json!({ "error": { "details": [{ "retryDelay": "12s" }] } });
        assert_eq!(
            limited(AiProvider::Gemini, None, &retry_info),
            ProviderError::RateLimited {
                retry_after_seconds: 12
            }
        );
        let overloaded = json!({ "type": "error", "error": { "type": "overloaded_error", "message": "Overloaded" } });
        assert_eq!(
            classify(AiProvider::Anthropic, 529, None, &overloaded),
            ProviderError::RateLimited {
                retry_after_seconds: 30
            }
        );
    }

    #[test]
    fn other_statuses_are_described_briefly_without_the_key() {
        let body = json!({ "error": { "message": format!("Key sk-secret-key cannot use {}", "x".repeat(500)) } });
        let ProviderError::Upstream(message) = classify(AiProvider::Openai, 404, None, &body)
        else {
            panic!("an upstream error");
        };
        assert!(message.starts_with("OpenAI answered 404 Not Found: Key [key] cannot use xxx"));
        assert!(!message.contains("sk-secret-key"));
        assert!(message.len() < 250);
        assert_eq!(
            classify(AiProvider::Gemini, 500, None, &Value::Null),
            ProviderError::Upstream("Gemini answered 500 Internal Server Error".to_owned())
        );
    }

    #[test]
    fn retry_after_takes_whole_seconds_only() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().expect("a value"));
        assert_eq!(retry_after(&headers), Some(7));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("a value"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn turns_of_one_role_merge_and_empty_ones_go() {
        let merged = merge_roles([
            ("user", vec![json!(1)]),
            ("model", vec![]),
            ("user", vec![json!(2)]),
            ("user", vec![json!(3)]),
            ("model", vec![json!(4)]),
        ]);
        assert_eq!(
            merged,
            vec![
                ("user", vec![json!(1), json!(2), json!(3)]),
                ("model", vec![json!(4)]),
            ]
        );
    }

    #[test]
    fn made_up_call_ids_differ_between_replies() {
        let (mut first, mut second) = (CallIds::default(), CallIds::default());
        let (a, b) = (first.next(), first.next());
        assert_ne!(a, b);
        assert_ne!(a, second.next());
        assert_eq!(CallIds::new("test").next(), "test_1");
    }
}
