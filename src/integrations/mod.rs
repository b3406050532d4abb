//! `integrations.*`: connecting the user's Google account for Gmail with offline access. The
//! refresh token is sealed with the key vault (bound to the user) and only opened by the
//! background sync and by `disconnect` to revoke it. Syncing itself lives in `src/mail/`.

pub mod store;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::context::{App, AppState, Ctx};
use crate::crypto::VaultError;
use crate::google::{self, GoogleError, Grant};
use crate::guard::{SignedIn, signed_in};
use crate::jobs;
use crate::reason::Reason;
use crate::rpc::{ErrorCode, FieldErrors, Router, RpcError, Timestamp, internal};

/// The job kind that syncs one user's Gmail (registered by `src/mail/`).
pub const SYNC_JOB: &str = "gmail.sync";

pub fn router() -> Router<App> {
    Router::new().query("list", signed_in(list)).nest(
        "google",
        Router::new()
            .mutation("connect", signed_in(connect))
            .mutation("disconnect", signed_in(disconnect))
            .mutation("syncNow", signed_in(sync_now)),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, specta::Type)]
#[serde(rename_all = "lowercase")]
pub enum IntegrationProvider {
    Google,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    /// Synced; kept in sync in the background.
    Active,
    /// A sync is queued or running (the first one, after connecting).
    Syncing,
    /// Google no longer honours the grant: connect again.
    ReconnectRequired,
    /// Sync fails for another reason; it keeps retrying.
    Error,
}

impl ConnectionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Syncing => "syncing",
            Self::ReconnectRequired => "reconnect_required",
            Self::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "active" => Self::Active,
            "syncing" => Self::Syncing,
            "reconnect_required" => Self::ReconnectRequired,
            _ => Self::Error,
        }
    }
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct Integration {
    provider: IntegrationProvider,
    /// The connected Google account.
    email: String,
    scopes: Vec<String>,
    status: ConnectionStatus,
    last_sync_at: Option<Timestamp>,
    /// Messages stored from the last sync window.
    message_count: u32,
    /// What the app should do about the status: `google_reconnect_required` with
    /// `reconnect_required` (connect Gmail again); otherwise none.
    reason: Option<Reason>,
    /// Why the last sync failed (with `reconnect_required`, `error`, or a `syncing` that
    /// retries), in words for people; none once a sync succeeds.
    last_error: Option<String>,
}

/// What Google Sign-In returned: `serverAuthCode` (iOS/Android, offline access), or an
/// authorization `code` with its PKCE `codeVerifier` and `redirectUri` (web).
#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectGoogleInput {
    #[serde(default)]
    server_auth_code: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    code_verifier: Option<String>,
    #[serde(default)]
    redirect_uri: Option<String>,
}

/// `integrations.list`
async fn list(ctx: Ctx, caller: SignedIn, _: ()) -> Result<Vec<Integration>, RpcError> {
    let db = &ctx.state.db;
    let Some(row) = store::find(db, caller.user.id)
        .await
        .map_err(internal("read the Google connection"))?
    else {
        return Ok(Vec::new());
    };
    let count = store::message_count(db, caller.user.id)
        .await
        .map_err(internal("count synced mail"))?;
    let status = ConnectionStatus::parse(&row.status);
    Ok(vec![Integration {
        provider: IntegrationProvider::Google,
        email: row.email,
        scopes: row.scopes.split_whitespace().map(str::to_owned).collect(),
        status,
        reason: (status == ConnectionStatus::ReconnectRequired)
            .then_some(Reason::GoogleReconnectRequired),
        last_error: row.last_error,
        last_sync_at: row.last_sync_at.map(Timestamp::from),
        message_count: u32::try_from(count).unwrap_or(u32::MAX),
    }])
}

fn required<'a>(value: &'a Option<String>, what: &str) -> Result<&'a str, String> {
    match value.as_deref().map(str::trim) {
        Some(text) if !text.is_empty() && text.len() <= 4096 => Ok(text),
        Some(text) if !text.is_empty() => Err(format!("{what} is too long")),
        _ => Err(format!("{what} is required")),
    }
}

fn grant(input: &ConnectGoogleInput) -> Result<Grant<'_>, RpcError> {
    let mut errors = FieldErrors::default();
    if input.server_auth_code.is_some() {
        let other = [&input.code, &input.code_verifier, &input.redirect_uri];
        if other.iter().any(|value| value.is_some()) {
            errors.check::<()>(
                "serverAuthCode",
                Err("send either serverAuthCode or code with codeVerifier and redirectUri, not both".to_owned()),
            );
            return Err(errors.into_error());
        }
        return match errors.check(
            "serverAuthCode",
            required(&input.server_auth_code, "serverAuthCode"),
        ) {
            Some(code) => Ok(Grant::ServerAuthCode(code)),
            None => Err(errors.into_error()),
        };
    }
    let code = errors.check("code", required(&input.code, "code (or serverAuthCode)"));
    let code_verifier = errors.check(
        "codeVerifier",
        required(&input.code_verifier, "codeVerifier"),
    );
    let redirect_uri = errors.check(
        "redirectUri",
        required(&input.redirect_uri, "redirectUri").and_then(|uri| {
            reqwest::Url::parse(uri)
                .map(|_| uri)
                .map_err(|_| "redirectUri must be an absolute URL".to_owned())
        }),
    );
    match (code, code_verifier, redirect_uri) {
        (Some(code), Some(code_verifier), Some(redirect_uri)) => Ok(Grant::Pkce {
            code,
            code_verifier,
            redirect_uri,
        }),
        _ => Err(errors.into_error()),
    }
}

/// `integrations.google.connect`: redeems the code, checks the Gmail scope, seals the refresh
/// token and queues the first sync.
async fn connect(ctx: Ctx, caller: SignedIn, input: ConnectGoogleInput) -> Result<(), RpcError> {
    let state = &ctx.state;
    let config = &state.config.google;
    if !google::is_configured(config) {
        return Err(RpcError::new(
            ErrorCode::PreconditionFailed,
            "Gmail is not configured on this server.",
        )
        .with_reason(Reason::ProviderNotConfigured));
    }
    let grant = grant(&input)?;
    let tokens = google::exchange(&state.http, config, grant)
        .await
        .map_err(connect_error)?;
    if !tokens
        .scope
        .split_whitespace()
        .any(|scope| scope == google::GMAIL_READONLY)
    {
        // Nothing will use this grant: do not leave it open at Google.
        let unused = tokens
            .refresh_token
            .as_ref()
            .unwrap_or(&tokens.access_token);
        revoke(state, unused).await;
        return Err(RpcError::bad_request(
            "Google did not grant read access to Gmail. Connect again and allow Gmail access.",
        )
        .with_reason(Reason::ScopeMissing));
    }
    // (Without a refresh token, the grant is most likely the one already connected: it stays.)
    let Some(refresh_token) = tokens.refresh_token else {
        return Err(RpcError::bad_request(
            "Google granted no offline access. Connect again, asking for offline access with consent.",
        )
        .with_reason(Reason::GoogleCodeRejected));
    };
    let gmail = google::Gmail::new(&state.http, config, tokens.access_token);
    let profile = gmail.profile().await.map_err(connect_error)?;
    // Another Google account's grant is replaced: revoke it once the new one is saved.
    let replaced = store::find(&state.db, caller.user.id)
        .await
        .map_err(internal("read the Google connection"))?
        .filter(|row| !row.email.eq_ignore_ascii_case(&profile.email_address));
    let replaced_token = match &replaced {
        Some(row) => match store::refresh_token(state, row).await {
            Ok(token) => Some(token),
            Err(error) => {
                tracing::warn!(%error, "could not open a replaced Google token to revoke it");
                None
            }
        },
        None => None,
    };
    if replaced.is_some() {
        // A sync of the old account may be running: it stops before the new one starts.
        jobs::cancel(&state.db, &sync_key(caller.user.id))
            .await
            .map_err(internal("cancel the Gmail sync"))?;
    }
    store::connect(
        state,
        caller.user.id,
        &profile.email_address,
        &tokens.scope,
        &refresh_token,
    )
    .await
    .map_err(store_error)?;
    if let Some(token) = replaced_token {
        revoke(state, &token).await;
    }
    queue_sync(state, caller.user.id).await
}

/// Revokes a token at Google; a failure is logged (the user can also revoke at
/// myaccount.google.com).
async fn revoke(state: &AppState, token: &str) {
    if let Err(error) = google::revoke(&state.http, &state.config.google, token).await {
        tracing::warn!(%error, "could not revoke a Google grant");
    }
}

/// `integrations.google.disconnect`: revokes the grant at Google, then deletes the token and
/// every synced message. An unreachable Google does not keep the data: it is deleted anyway
/// (the user can also revoke at myaccount.google.com).
async fn disconnect(ctx: Ctx, caller: SignedIn, _: ()) -> Result<(), RpcError> {
    let state = &ctx.state;
    let user_id = caller.user.id;
    let row = store::find(&state.db, user_id)
        .await
        .map_err(internal("read the Google connection"))?
        .ok_or_else(not_connected)?;
    match store::refresh_token(state, &row).await {
        Ok(token) => revoke(state, &token).await,
        Err(error) => tracing::warn!(%error, "could not open a Google token to revoke it"),
    }
    jobs::cancel(&state.db, &sync_key(user_id))
        .await
        .map_err(internal("cancel the Gmail sync"))?;
    store::delete(&state.db, user_id)
        .await
        .map_err(internal("delete the Google connection"))?;
    Ok(())
}

/// `integrations.google.syncNow`
async fn sync_now(ctx: Ctx, caller: SignedIn, _: ()) -> Result<(), RpcError> {
    let state = &ctx.state;
    let row = store::find(&state.db, caller.user.id)
        .await
        .map_err(internal("read the Google connection"))?
        .ok_or_else(not_connected)?;
    if ConnectionStatus::parse(&row.status) == ConnectionStatus::ReconnectRequired {
        return Err(reconnect_required());
    }
    queue_sync(state, caller.user.id).await
}

pub fn sync_key(user_id: Uuid) -> String {
    format!("{SYNC_JOB}:{user_id}")
}

async fn queue_sync(state: &AppState, user_id: Uuid) -> Result<(), RpcError> {
    let payload = serde_json::json!({ "userId": user_id });
    jobs::enqueue(
        &state.db,
        SYNC_JOB,
        &sync_key(user_id),
        payload,
        chrono::Utc::now(),
    )
    .await
    .map_err(internal("queue a Gmail sync"))
}

pub fn not_connected() -> RpcError {
    RpcError::new(
        ErrorCode::PreconditionFailed,
        "Gmail is not connected. Connect it in settings.",
    )
    .with_reason(Reason::GoogleNotConnected)
}

pub fn reconnect_required() -> RpcError {
    RpcError::new(
        ErrorCode::PreconditionFailed,
        "Google no longer accepts this connection. Connect Gmail again.",
    )
    .with_reason(Reason::GoogleReconnectRequired)
}

fn connect_error(error: GoogleError) -> RpcError {
    match error {
        GoogleError::InvalidGrant(_) | GoogleError::Unauthorized(_) => RpcError::bad_request(
            "Google refused the sign-in code (expired or already used). Sign in with Google again.",
        )
        .with_reason(Reason::GoogleCodeRejected),
        GoogleError::Rejected(detail) => {
            tracing::warn!(%detail, "Google refused a Gmail connection");
            RpcError::bad_request("Google refused the sign-in code. Sign in with Google again.")
                .with_reason(Reason::GoogleCodeRejected)
        }
        GoogleError::RateLimited(_) | GoogleError::Unavailable(_) | GoogleError::NotFound => {
            RpcError::new(
                ErrorCode::BadGateway,
                "Google could not be reached. Try again in a moment.",
            )
            .with_reason(Reason::ProviderUnreachable)
        }
    }
}

fn store_error(error: store::StoreError) -> RpcError {
    match error {
        store::StoreError::Vault(VaultError::Unavailable(detail)) => {
            tracing::warn!(%detail, "key service unavailable while sealing a Google token");
            RpcError::new(
                ErrorCode::ServiceUnavailable,
                "The key service is unavailable. Try again shortly.",
            )
            .with_reason(Reason::KeyServiceUnavailable)
            .with_retry_after(5)
        }
        other => internal("save the Google connection")(other),
    }
}
