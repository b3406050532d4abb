//! The HTTP and error handling every provider's wire format shares: posting a request,
//! turning statuses and transport failures into `ProviderError`s, and small helpers for
//! building message lists.

use futures::TryStreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::sse::{self, Decoder};
use super::types::{AiProvider, ChatProvider, Completion, EventStream, ProviderError, Upstream};

/// What a 429 without a usable Retry-After asks to wait.
const DEFAULT_RETRY_AFTER_SECONDS: u32 = 30;

/// POSTs `body` as JSON, waiting at most `first_byte_timeout` for the response headers.
/// Answers only a successful response; error statuses become `ProviderError`s.
pub(super) async fn post(
    dialect: &dyn ChatProvider,
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
    Err(status_error(dialect, upstream, response).await)
}

/// POSTs `body` and reads the whole JSON response as `T`; generation happens before the
/// headers, so reading the body is bounded by the idle timeout only.
pub(super) async fn post_for<T: DeserializeOwned>(
    dialect: &dyn ChatProvider,
    upstream: &Upstream<'_>,
    path: &str,
    body: &Value,
) -> Result<T, ProviderError> {
    let response = post(dialect, upstream, path, body).await?;
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

async fn status_error(
    dialect: &dyn ChatProvider,
    upstream: &Upstream<'_>,
    response: reqwest::Response,
) -> ProviderError {
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let body = tokio::time::timeout(upstream.config.stream_idle_timeout, response.bytes())
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null);
    classify_status(dialect, upstream, status, retry_after, &body)
}

pub(super) fn classify_status(
    dialect: &dyn ChatProvider,
    upstream: &Upstream<'_>,
    status: reqwest::StatusCode,
    retry_after: Option<u32>,
    body: &Value,
) -> ProviderError {
    let retry_after_seconds = retry_after
        .or_else(|| dialect.retry_delay(body))
        .unwrap_or(DEFAULT_RETRY_AFTER_SECONDS);
    match status.as_u16() {
        401 | 403 => ProviderError::KeyRejected,
        400 if dialect.rejects_key(body) => ProviderError::KeyRejected,
        429 => ProviderError::RateLimited {
            retry_after_seconds,
        },
        503 | 529 => ProviderError::Overloaded {
            retry_after_seconds,
        },
        _ if dialect.is_overloaded(body) => ProviderError::Overloaded {
            retry_after_seconds,
        },
        _ => ProviderError::Upstream(describe_status(upstream.provider, status, body)),
    }
}

/// "OpenAI answered 404 Not Found: The model `x` does not exist" (the key scrubbed and the
/// text shortened at the providers' boundary, `super::scrubbed`).
fn describe_status(provider: AiProvider, status: reqwest::StatusCode, body: &Value) -> String {
    let name = provider.display_name();
    match body["error"]["message"].as_str() {
        Some(message) => format!("{name} answered {status}: {message}"),
        None => format!("{name} answered {status}"),
    }
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

/// The default wait for a rate limit reported inside a stream.
pub(super) fn rate_limited() -> ProviderError {
    ProviderError::RateLimited {
        retry_after_seconds: DEFAULT_RETRY_AFTER_SECONDS,
    }
}

/// The default wait for an overload reported inside a stream.
pub(super) fn overloaded() -> ProviderError {
    ProviderError::Overloaded {
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
    ProviderError::Upstream(format!(
        "{} reported an error: {}",
        provider.display_name(),
        message.unwrap_or("no details")
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
pub(super) fn non_empty_reply(
    provider: AiProvider,
    text: String,
    usage: Option<(u32, u32)>,
) -> Result<Completion, ProviderError> {
    if text.trim().is_empty() {
        return Err(ProviderError::Upstream(format!(
            "{} returned no text",
            provider.display_name()
        )));
    }
    Ok(Completion { text, usage })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
