//! The Gmail v1 REST calls sync needs, with the field names of Google's discovery document.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use super::{GoogleError, TIMEOUT, encode, status_error, unreachable};
use crate::config::GoogleConfig;

/// Gmail as one user, with a short-lived access token; given the refresh token too, an
/// access token Google stops honouring (401) is replaced once and the call retried.
pub struct Gmail<'a> {
    http: &'a reqwest::Client,
    config: &'a GoogleConfig,
    access_token: Mutex<Zeroizing<String>>,
    refresh_token: Option<&'a str>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub email_address: String,
    pub history_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageRef {
    pub id: String,
    #[serde(default)]
    pub thread_id: String,
    /// The message's labels, when Google includes them (history records may not).
    #[serde(default)]
    pub label_ids: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageList {
    #[serde(default)]
    pub messages: Vec<MessageRef>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: String,
    pub thread_id: String,
    #[serde(default)]
    pub label_ids: Vec<String>,
    #[serde(default)]
    pub snippet: String,
    /// Milliseconds since the epoch, as a string.
    #[serde(default)]
    pub internal_date: Option<String>,
    pub payload: Option<MessagePart>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessagePart {
    #[serde(default)]
    pub mime_type: String,
    #[serde(default)]
    pub headers: Vec<Header>,
    pub body: Option<PartBody>,
    #[serde(default)]
    pub parts: Vec<MessagePart>,
}

#[derive(Debug, Deserialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Deserialize)]
pub struct PartBody {
    /// base64url.
    pub data: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryList {
    #[serde(default)]
    pub history: Vec<HistoryRecord>,
    pub next_page_token: Option<String>,
    pub history_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryRecord {
    #[serde(default)]
    pub messages_added: Vec<HistoryMessage>,
    #[serde(default)]
    pub messages_deleted: Vec<HistoryMessage>,
    #[serde(default)]
    pub labels_added: Vec<LabelChange>,
    #[serde(default)]
    pub labels_removed: Vec<LabelChange>,
}

#[derive(Debug, Deserialize)]
pub struct HistoryMessage {
    pub message: MessageRef,
}

/// `HistoryLabelAdded`/`HistoryLabelRemoved`: the labels added to or removed from `message`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelChange {
    pub message: MessageRef,
    #[serde(default)]
    pub label_ids: Vec<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Deserialize)]
struct ErrorItem {
    #[serde(default)]
    reason: String,
}

impl<'a> Gmail<'a> {
    pub fn new(
        http: &'a reqwest::Client,
        config: &'a GoogleConfig,
        access_token: Zeroizing<String>,
    ) -> Self {
        Self {
            http,
            config,
            access_token: Mutex::new(access_token),
            refresh_token: None,
        }
    }

    /// Lets a refused access token be replaced with this refresh token (once per call).
    pub fn refreshing_with(mut self, refresh_token: &'a str) -> Self {
        self.refresh_token = Some(refresh_token);
        self
    }

    fn access_token(&self) -> Zeroizing<String> {
        self.access_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, GoogleError> {
        match self.get_once(path, query).await {
            Err(GoogleError::Unauthorized(reason)) => {
                let Some(refresh_token) = self.refresh_token else {
                    return Err(GoogleError::InvalidGrant(reason));
                };
                // The access token expired or was revoked early: mint another, once.
                let tokens = super::refresh(self.http, self.config, refresh_token).await?;
                *self
                    .access_token
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = tokens.access_token;
                match self.get_once(path, query).await {
                    // A fresh token refused too: Google no longer honours the grant.
                    Err(GoogleError::Unauthorized(reason)) => {
                        Err(GoogleError::InvalidGrant(reason))
                    }
                    other => other,
                }
            }
            other => other,
        }
    }

    async fn get_once<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, GoogleError> {
        let url = format!(
            "{}/gmail/v1/users/me/{path}?{}",
            self.config.gmail_base_url.trim_end_matches('/'),
            encode(query)
        );
        let response = self
            .http
            .get(url)
            .bearer_auth(self.access_token().as_str())
            .timeout(TIMEOUT)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse().ok())
                .map(Duration::from_secs);
            let reason = response
                .json::<ErrorBody>()
                .await
                .ok()
                .and_then(|body| body.error.errors.into_iter().next())
                .map(|item| item.reason)
                .unwrap_or_default();
            if status.as_u16() == 401 {
                return Err(GoogleError::Unauthorized(reason));
            }
            return Err(status_error(status.as_u16(), retry_after, reason));
        }
        response
            .json()
            .await
            .map_err(|_| GoogleError::Unavailable(format!("unreadable {path} response")))
    }

    /// `users.getProfile`
    pub async fn profile(&self) -> Result<Profile, GoogleError> {
        self.get("profile", &[]).await
    }

    /// `users.messages.list` with a search query (`newer_than:30d`).
    pub async fn list_messages(
        &self,
        q: &str,
        page_token: Option<&str>,
    ) -> Result<MessageList, GoogleError> {
        let mut query = vec![("q", q), ("maxResults", "100")];
        query.extend(page_token.map(|token| ("pageToken", token)));
        self.get("messages", &query).await
    }

    /// `users.messages.get` (format `full`).
    pub async fn message(&self, id: &str) -> Result<Message, GoogleError> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(GoogleError::Rejected("malformed message id".to_owned()));
        }
        self.get(&format!("messages/{id}"), &[("format", "full")])
            .await
    }

    /// `users.history.list` since `start_history_id`.
    pub async fn history(
        &self,
        start_history_id: &str,
        page_token: Option<&str>,
    ) -> Result<HistoryList, GoogleError> {
        let mut query = vec![("startHistoryId", start_history_id)];
        query.extend(page_token.map(|token| ("pageToken", token)));
        self.get("history", &query).await
    }
}
