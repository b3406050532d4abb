//! The AI providers users bring keys for: how to reach each one and how it authenticates.

mod anthropic;
pub mod chat;
mod gemini;
mod openai;
mod sse;

use serde::{Deserialize, Serialize};

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
