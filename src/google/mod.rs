//! Google's OAuth endpoints (code exchange, refresh, revoke) and the Gmail REST API, as thin
//! typed clients. Base URLs come from the configuration so tests can point them at a fake.
//! No token ever appears in an error or a log line.

mod gmail;

use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

pub use gmail::{
    Gmail, HistoryList, HistoryMessage, HistoryRecord, LabelChange, Message, MessageList,
    MessagePart, MessageRef, Profile,
};

use crate::config::GoogleConfig;

/// The scope Gmail sync needs.
pub const GMAIL_READONLY: &str = "https://www.googleapis.com/auth/gmail.readonly";

const TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum GoogleError {
    /// The grant (code or refresh token) was refused: expired, revoked or already used.
    #[error("Google refused the grant ({0})")]
    InvalidGrant(String),
    /// 401 on a Gmail call: the access token is not (or no longer) honoured. [`Gmail`] turns
    /// it into `InvalidGrant` when a fresh access token is refused too.
    #[error("Google refused the access token ({0})")]
    Unauthorized(String),
    /// 429, or 403 `rateLimitExceeded`/`userRateLimitExceeded`.
    #[error("Google asked to slow down")]
    RateLimited(Option<Duration>),
    /// 404: for `history.list`, the start history id is too old.
    #[error("not found at Google")]
    NotFound,
    /// 5xx, a timeout or no connection: try later.
    #[error("Google is unavailable ({0})")]
    Unavailable(String),
    /// Any other refusal (a bad request, a client misconfiguration).
    #[error("Google refused the request ({0})")]
    Rejected(String),
}

/// What Google Sign-In returned for offline access.
pub enum Grant<'a> {
    /// `serverAuthCode` from the iOS/Android SDK (no redirect URI).
    ServerAuthCode(&'a str),
    /// An authorization code from a web flow with PKCE.
    Pkce {
        code: &'a str,
        code_verifier: &'a str,
        redirect_uri: &'a str,
    },
}

/// A token endpoint answer.
pub struct Tokens {
    pub access_token: Zeroizing<String>,
    pub refresh_token: Option<Zeroizing<String>>,
    /// Space-separated granted scopes.
    pub scope: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    scope: String,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
}

/// OAuth client credentials; `None` when Gmail is not configured on this server.
fn credentials(config: &GoogleConfig) -> Option<(&str, &str)> {
    Some((
        config.client_id.as_deref()?,
        config.client_secret.as_deref()?,
    ))
}

pub fn is_configured(config: &GoogleConfig) -> bool {
    credentials(config).is_some()
}

/// Exchanges an authorization code for tokens.
pub async fn exchange(
    http: &reqwest::Client,
    config: &GoogleConfig,
    grant: Grant<'_>,
) -> Result<Tokens, GoogleError> {
    let (client_id, client_secret) = credentials(config)
        .ok_or_else(|| GoogleError::Rejected("no OAuth client configured".to_owned()))?;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("client_id", client_id),
        ("client_secret", client_secret),
    ];
    match grant {
        // Codes from the mobile SDKs are redeemed without a redirect URI.
        Grant::ServerAuthCode(code) => form.extend([("code", code), ("redirect_uri", "")]),
        Grant::Pkce {
            code,
            code_verifier,
            redirect_uri,
        } => form.extend([
            ("code", code),
            ("code_verifier", code_verifier),
            ("redirect_uri", redirect_uri),
        ]),
    }
    token_call(http, &config.token_url, &form).await
}

/// A fresh access token for a stored refresh token.
pub async fn refresh(
    http: &reqwest::Client,
    config: &GoogleConfig,
    refresh_token: &str,
) -> Result<Tokens, GoogleError> {
    let (client_id, client_secret) = credentials(config)
        .ok_or_else(|| GoogleError::Rejected("no OAuth client configured".to_owned()))?;
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", client_id),
        ("client_secret", client_secret),
        ("refresh_token", refresh_token),
    ];
    token_call(http, &config.token_url, &form).await
}

/// Revokes a token (and with a refresh token, the whole grant) at Google.
pub async fn revoke(
    http: &reqwest::Client,
    config: &GoogleConfig,
    token: &str,
) -> Result<(), GoogleError> {
    let response = http
        .post(&config.revoke_url)
        .header(reqwest::header::CONTENT_TYPE, FORM)
        .body(encode(&[("token", token)]))
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let error = response
        .json::<OAuthError>()
        .await
        .map(|body| body.error)
        .unwrap_or_default();
    match status.as_u16() {
        // Already revoked or expired: nothing left to revoke.
        400 if error == "invalid_token" => Ok(()),
        code => Err(status_error(code, None, error)),
    }
}

async fn token_call(
    http: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
) -> Result<Tokens, GoogleError> {
    let response = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, FORM)
        .body(encode(form))
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    if !status.is_success() {
        let error = response
            .json::<OAuthError>()
            .await
            .map(|body| body.error)
            .unwrap_or_default();
        if error == "invalid_grant" {
            return Err(GoogleError::InvalidGrant(error));
        }
        return Err(status_error(status.as_u16(), None, error));
    }
    let body: TokenResponse = response
        .json()
        .await
        .map_err(|_| GoogleError::Unavailable("unreadable token response".to_owned()))?;
    Ok(Tokens {
        access_token: Zeroizing::new(body.access_token),
        refresh_token: body.refresh_token.map(Zeroizing::new),
        scope: body.scope,
    })
}

const FORM: &str = "application/x-www-form-urlencoded";

/// `application/x-www-form-urlencoded` pairs (a form body or a query string).
fn encode(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn unreachable(error: reqwest::Error) -> GoogleError {
    let what = if error.is_timeout() {
        "timed out"
    } else {
        "could not connect"
    };
    GoogleError::Unavailable(what.to_owned())
}

/// Sorts a failed status into what the caller can do about it.
fn status_error(status: u16, retry_after: Option<Duration>, reason: String) -> GoogleError {
    match status {
        429 => GoogleError::RateLimited(retry_after),
        403 if reason.contains("ateLimitExceeded") => GoogleError::RateLimited(retry_after),
        404 => GoogleError::NotFound,
        500..=599 => GoogleError::Unavailable(format!("status {status}")),
        _ => GoogleError::Rejected(if reason.is_empty() {
            format!("status {status}")
        } else {
            format!("status {status}: {reason}")
        }),
    }
}
