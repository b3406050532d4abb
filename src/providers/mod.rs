//! The AI providers users bring keys for: checking a key, and chat replies dispatched to the
//! module speaking each provider's wire format.

mod anthropic;
mod gemini;
mod openai;
mod sse;
mod types;
mod wire;

pub use types::{
    AiProvider, ChatProvider, ChatRequest, Completion, EventStream, FilePart, ProviderError,
    StreamEvent, ToolCallRequest, ToolSpec, Turn, Upstream,
};

use std::future::Future;
use std::time::Instant;

use futures::StreamExt;
use tracing::Instrument as _;
use zeroize::Zeroizing;

use self::anthropic::Anthropic;
use self::gemini::Gemini;
use self::openai::OpenAi;
use crate::config::AiConfig;

/// The implementation speaking `provider`'s API.
fn chat_provider(provider: AiProvider) -> &'static dyn ChatProvider {
    match provider {
        AiProvider::Gemini => &Gemini,
        AiProvider::Openai => &OpenAi,
        AiProvider::Anthropic => &Anthropic,
    }
}

/// Streams a reply from `upstream.provider`. Every error, before or inside the stream, is
/// `scrubbed`.
pub async fn stream_chat(
    upstream: &Upstream<'_>,
    request: &ChatRequest,
) -> Result<EventStream, ProviderError> {
    let provider = upstream.provider;
    let api_key = Zeroizing::new(upstream.api_key.to_owned());
    let events = measured(
        provider,
        STREAM,
        chat_provider(provider).stream(upstream, request),
    )
    .await
    .map_err(|error| scrubbed(error, &api_key))?;
    Ok(events
        .map(move |event| {
            event.map_err(|error| {
                count_error(provider, STREAM, &error);
                scrubbed(error, &api_key)
            })
        })
        .boxed())
}

/// A whole reply from `upstream.provider`, without streaming; its error is `scrubbed`.
pub async fn complete_chat(
    upstream: &Upstream<'_>,
    request: &ChatRequest,
) -> Result<Completion, ProviderError> {
    let provider = upstream.provider;
    measured(
        provider,
        "complete",
        chat_provider(provider).complete(upstream, request),
    )
    .await
    .map_err(|error| scrubbed(error, upstream.api_key))
}

/// The `operation` of a streamed reply: measured until it starts streaming.
const STREAM: &str = "stream";

pub fn describe_metrics() {
    metrics::describe_histogram!(
        "alias_provider_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time an AI provider took to answer (a streamed reply: to start streaming), by provider and operation."
    );
    metrics::describe_counter!(
        "alias_provider_errors_total",
        "AI provider requests that failed, by provider, operation and kind of failure."
    );
}

/// Runs one request to `provider` in a span of its own, measuring it and counting failures.
async fn measured<T>(
    provider: AiProvider,
    operation: &'static str,
    request: impl Future<Output = Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    let started = Instant::now();
    let result = request.instrument(span(provider, operation)).await;
    record_duration(provider, operation, started);
    if let Err(error) = &result {
        count_error(provider, operation, error);
    }
    result
}

/// The span of one provider request (a client span in the exported trace).
fn span(provider: AiProvider, operation: &'static str) -> tracing::Span {
    tracing::info_span!(
        "provider",
        "gen_ai.system" = provider.as_str(),
        operation,
        "otel.kind" = "client",
    )
}

fn record_duration(provider: AiProvider, operation: &'static str, started: Instant) {
    metrics::histogram!(
        "alias_provider_request_duration_seconds",
        "provider" => provider.as_str(),
        "operation" => operation,
    )
    .record(started.elapsed().as_secs_f64());
}

fn count_error(provider: AiProvider, operation: &'static str, error: &ProviderError) {
    let kind = match error {
        ProviderError::KeyRejected => "key_rejected",
        ProviderError::RateLimited { .. } => "rate_limited",
        ProviderError::Overloaded { .. } => "overloaded",
        ProviderError::Timeout => "timeout",
        ProviderError::Upstream(_) => "upstream",
    };
    count_failure(provider, operation, kind);
}

fn count_failure(provider: AiProvider, operation: &'static str, kind: &'static str) {
    metrics::counter!(
        "alias_provider_errors_total",
        "provider" => provider.as_str(),
        "operation" => operation,
        "kind" => kind,
    )
    .increment(1);
}

/// Provider texts are logged and may be shown: enough to diagnose, no more.
const MAX_ERROR_MESSAGE_CHARS: usize = 250;

/// The one place provider texts (error bodies, error events) leave the provider modules: the
/// caller's key, should the provider echo it, is replaced before the text is shortened (so no
/// part of it survives at the cut).
fn scrubbed(error: ProviderError, api_key: &str) -> ProviderError {
    let ProviderError::Upstream(text) = error else {
        return error;
    };
    let text = if api_key.is_empty() {
        text
    } else {
        text.replace(api_key, "[key]")
    };
    ProviderError::Upstream(text.chars().take(MAX_ERROR_MESSAGE_CHARS).collect())
}

/// What the provider said about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    Valid,
    /// The provider refused the key (400/401/403).
    Rejected(String),
    /// No verdict: unreachable, timed out, rate limited or failing.
    Unreachable(String),
}

/// Asks the provider to list models with the key: the cheapest authenticated call each offers.
pub async fn check_key(
    http: &reqwest::Client,
    config: &AiConfig,
    provider: AiProvider,
    api_key: &str,
) -> KeyCheck {
    const CHECK: &str = "check_key";
    let started = Instant::now();
    let check = ask_about_key(http, config, provider, api_key)
        .instrument(span(provider, CHECK))
        .await;
    record_duration(provider, CHECK, started);
    match check {
        KeyCheck::Valid => {}
        KeyCheck::Rejected(_) => count_failure(provider, CHECK, "key_rejected"),
        KeyCheck::Unreachable(_) => count_failure(provider, CHECK, "unreachable"),
    }
    check
}

async fn ask_about_key(
    http: &reqwest::Client,
    config: &AiConfig,
    provider: AiProvider,
    api_key: &str,
) -> KeyCheck {
    let path = match provider {
        AiProvider::Gemini => "/v1beta/models",
        AiProvider::Openai | AiProvider::Anthropic => "/v1/models",
    };
    let response = provider
        .request(http, config, reqwest::Method::GET, path, api_key)
        .timeout(config.validate_timeout)
        .send()
        .await;
    let name = provider.display_name();
    match response {
        Ok(response) if response.status().is_success() => KeyCheck::Valid,
        Ok(response) if matches!(response.status().as_u16(), 400 | 401 | 403) => {
            KeyCheck::Rejected(format!("{name} did not accept this API key."))
        }
        Ok(response) => KeyCheck::Unreachable(format!(
            "{name} answered {} while checking the key.",
            response.status()
        )),
        Err(error) if error.is_timeout() => KeyCheck::Unreachable(format!(
            "{name} did not answer within {} seconds.",
            config.validate_timeout.as_secs()
        )),
        Err(_) => KeyCheck::Unreachable(format!("{name} could not be reached.")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::StatusCode;
    use serde_json::{Value, json};

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
        let error = wire::classify_status(
            chat_provider(provider),
            &upstream,
            status,
            retry_after,
            body,
        );
        scrubbed(error, upstream.api_key)
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
            ProviderError::Overloaded {
                retry_after_seconds: 30
            }
        );
        assert_eq!(
            classify(AiProvider::Openai, 503, Some(5), &Value::Null),
            ProviderError::Overloaded {
                retry_after_seconds: 5
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
        assert_eq!(message.chars().count(), MAX_ERROR_MESSAGE_CHARS);
        // A key straddling the cut is scrubbed whole before it.
        let long = format!("{}sk-secret-key", "x".repeat(MAX_ERROR_MESSAGE_CHARS - 5));
        let ProviderError::Upstream(cut) = scrubbed(ProviderError::Upstream(long), "sk-secret-key")
        else {
            panic!("an upstream error");
        };
        assert!(cut.ends_with("xxxxx[key]"), "{cut}");
        assert_eq!(
            classify(AiProvider::Gemini, 500, None, &Value::Null),
            ProviderError::Upstream("Gemini answered 500 Internal Server Error".to_owned())
        );
    }
}
