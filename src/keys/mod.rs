//! `apiKeys.*`: each user's own Gemini, OpenAI and Anthropic keys, sealed at rest with
//! envelope encryption and only ever opened to call that provider for that user.

mod store;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;
use zeroize::Zeroizing;

pub use store::{RewrapReport, rewrap_all};

use crate::audit::{self, AuditAction};
use crate::cluster::Unavailable;
use crate::context::{App, AppState, Ctx};
use crate::crypto::VaultError;
use crate::guard::{SignedIn, signed_in};
use crate::providers::{self, AiProvider, KeyCheck};
use crate::rate_limit::Refusal;
use crate::reason::Reason;
use crate::rpc::Timestamp;
use crate::rpc::{ErrorCode, FieldErrors, RequestInfo, Router, RpcError, internal};

pub fn router() -> Router<App> {
    Router::new()
        .query("list", signed_in(list))
        .mutation("set", signed_in(set))
        .mutation("validate", signed_in(validate))
        .mutation("delete", signed_in(delete))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, specta::Type)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Valid,
    Invalid,
    Unvalidated,
}

impl KeyStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Invalid => "invalid",
            Self::Unvalidated => "unvalidated",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "valid" => Self::Valid,
            "invalid" => Self::Invalid,
            _ => Self::Unvalidated,
        }
    }
}

/// A saved key as the app sees it: never the key itself.
#[derive(Debug, Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyInfo {
    provider: AiProvider,
    /// "…WXYZ": the key's last four characters.
    hint: String,
    status: KeyStatus,
    created_at: Timestamp,
    updated_at: Timestamp,
    last_validated_at: Option<Timestamp>,
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetApiKeyInput {
    provider: AiProvider,
    api_key: String,
    /// Check the key with the provider before saving it (default true).
    #[serde(default)]
    validate: Option<bool>,
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderInput {
    provider: AiProvider,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct KeyValidation {
    valid: bool,
    /// Why, in words for the user.
    message: String,
}

/// `apiKeys.list`
async fn list(ctx: Ctx, caller: SignedIn, _: ()) -> Result<Vec<ApiKeyInfo>, RpcError> {
    let rows = store::list(&ctx.state.db, caller.user.id)
        .await
        .map_err(internal("list API keys"))?;
    Ok(rows.into_iter().filter_map(info).collect())
}

fn info(row: entity::api_keys::Model) -> Option<ApiKeyInfo> {
    Some(ApiKeyInfo {
        provider: AiProvider::parse(&row.provider)?,
        hint: row.hint,
        status: KeyStatus::parse(&row.status),
        created_at: row.created_at.into(),
        updated_at: row.updated_at.into(),
        last_validated_at: row.last_validated_at.map(Timestamp::from),
    })
}

fn parse_api_key(raw: &str) -> Result<Zeroizing<String>, String> {
    let key = raw.trim();
    let length = key.chars().count();
    if !(8..=512).contains(&length) {
        return Err("an API key has 8 to 512 characters".to_owned());
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("an API key has no spaces or line breaks; paste it again".to_owned());
    }
    Ok(Zeroizing::new(key.to_owned()))
}

/// `apiKeys.set`: with validation, a key the provider refuses is not saved (and the attempt
/// is audited).
async fn set(ctx: Ctx, caller: SignedIn, input: SetApiKeyInput) -> Result<ApiKeyInfo, RpcError> {
    let mut errors = FieldErrors::default();
    let Some(api_key) = errors.check("apiKey", parse_api_key(&input.api_key)) else {
        return Err(errors.into_error());
    };
    let state = &ctx.state;
    let provider = input.provider;
    limit_key_checks(&ctx, caller.user.id, provider).await?;
    let status = if input.validate.unwrap_or(true) {
        match providers::check_key(&state.http, &state.config.ai, provider, &api_key).await {
            KeyCheck::Valid => KeyStatus::Valid,
            KeyCheck::Rejected(message) => {
                let metadata = json!({ "provider": provider.as_str() });
                audit(&ctx, caller.user.id, AuditAction::ApiKeyRejected, metadata).await;
                return Err(rejected(message));
            }
            KeyCheck::Unreachable(message) => return Err(unreachable(message)),
        }
    } else {
        KeyStatus::Unvalidated
    };
    let row = store::save(state, caller.user.id, provider, &api_key, status.as_str())
        .await
        .map_err(|error| key_error(error, "save an API key"))?;
    let metadata = json!({ "provider": provider.as_str(), "status": status.as_str() });
    audit(&ctx, caller.user.id, AuditAction::ApiKeySet, metadata).await;
    info(row).ok_or_else(RpcError::internal)
}

/// `apiKeys.validate`: asks the provider again and records the verdict.
async fn validate(
    ctx: Ctx,
    caller: SignedIn,
    input: ProviderInput,
) -> Result<KeyValidation, RpcError> {
    let state = &ctx.state;
    let provider = input.provider;
    limit_key_checks(&ctx, caller.user.id, provider).await?;
    let api_key = for_user(state, &ctx.request, caller.user.id, provider).await?;
    let (status, message) =
        match providers::check_key(&state.http, &state.config.ai, provider, &api_key).await {
            KeyCheck::Valid => (
                KeyStatus::Valid,
                format!("{} accepted the key.", provider.display_name()),
            ),
            KeyCheck::Rejected(message) => (KeyStatus::Invalid, message),
            KeyCheck::Unreachable(message) => return Err(unreachable(message)),
        };
    store::record_validation(&state.db, caller.user.id, provider, status.as_str())
        .await
        .map_err(internal("record a key validation"))?;
    let valid = status == KeyStatus::Valid;
    let metadata = json!({ "provider": provider.as_str(), "valid": valid });
    audit(&ctx, caller.user.id, AuditAction::ApiKeyValidated, metadata).await;
    Ok(KeyValidation { valid, message })
}

const KEY_CHECK_WINDOW: Duration = Duration::from_secs(3600);

/// Counts a `set` or `validate` against the user's hourly budget
/// (`ALIAS_API_KEY_CHECKS_PER_HOUR`): unbounded, they would let anyone test stolen keys
/// against the providers at our expense. The first refusal of a window is audited (not each
/// one: a flood of refusals must not become a flood of rows).
async fn limit_key_checks(ctx: &Ctx, user_id: Uuid, provider: AiProvider) -> Result<(), RpcError> {
    let state = &ctx.state;
    let limits = &state.auth.rate_limits;
    let budget = state.config.api_key_checks_per_hour;
    let retry = match limits
        .check("api_key_checks", user_id, budget, KEY_CHECK_WINDOW)
        .await
    {
        Ok(()) => return Ok(()),
        Err(Refusal::Limited(retry)) => retry,
        Err(Refusal::Unavailable) => return Err(Unavailable.into()),
    };
    let first_refusal = limits
        .hit(
            &format!("api_key_checks_refused:{user_id}"),
            1,
            KEY_CHECK_WINDOW,
        )
        .await
        .is_ok();
    if first_refusal {
        let metadata = json!({ "provider": provider.as_str(), "limitPerHour": budget });
        audit(ctx, user_id, AuditAction::ApiKeyCheckLimited, metadata).await;
    }
    Err(RpcError::new(
        ErrorCode::TooManyRequests,
        format!("Too many API key checks. Try again in {} seconds.", retry.0),
    )
    .with_reason(Reason::RateLimited)
    .with_retry_after(retry.0))
}

/// Records what the caller did with their keys (never the key).
async fn audit(ctx: &Ctx, user_id: Uuid, action: AuditAction, metadata: serde_json::Value) {
    audit::record(&ctx.state.db, &ctx.request, Some(user_id), action, metadata).await;
}

/// `apiKeys.delete`
async fn delete(ctx: Ctx, caller: SignedIn, input: ProviderInput) -> Result<(), RpcError> {
    let provider = input.provider;
    let deleted = store::delete(&ctx.state.db, caller.user.id, provider)
        .await
        .map_err(internal("delete an API key"))?;
    if !deleted {
        return Err(RpcError::not_found(format!(
            "No {} API key is saved.",
            provider.display_name()
        )));
    }
    let metadata = json!({ "provider": provider.as_str() });
    audit(&ctx, caller.user.id, AuditAction::ApiKeyDeleted, metadata).await;
    Ok(())
}

/// The user's key for `provider`, opened for one request. Failures are errors the app can
/// act on; a key that no longer opens is audited.
pub async fn for_user(
    state: &AppState,
    request: &RequestInfo,
    user_id: Uuid,
    provider: AiProvider,
) -> Result<Zeroizing<String>, RpcError> {
    match store::open(state, user_id, provider).await {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(missing(provider)),
        Err(error) => {
            if matches!(error, store::StoreError::Vault(VaultError::Integrity)) {
                let metadata = json!({ "provider": provider.as_str(), "cause": "unreadable" });
                audit::record(
                    &state.db,
                    request,
                    Some(user_id),
                    AuditAction::ApiKeyUseFailed,
                    metadata,
                )
                .await;
            }
            Err(key_error(error, "open an API key"))
        }
    }
}

/// Records that the provider refused the user's key while it was in use.
pub async fn mark_invalid(
    db: &sea_orm::DatabaseConnection,
    user_id: Uuid,
    provider: AiProvider,
) -> Result<(), sea_orm::DbErr> {
    store::record_validation(db, user_id, provider, KeyStatus::Invalid.as_str()).await
}

fn missing(provider: AiProvider) -> RpcError {
    RpcError::new(
        ErrorCode::PreconditionFailed,
        format!(
            "No {} API key is saved. Add one in settings.",
            provider.display_name()
        ),
    )
    .with_reason(Reason::ApiKeyMissing)
}

fn rejected(message: String) -> RpcError {
    RpcError::bad_request(message).with_reason(Reason::ApiKeyRejected)
}

fn unreachable(message: String) -> RpcError {
    RpcError::new(
        ErrorCode::BadGateway,
        format!("{message} Try again in a moment."),
    )
    .with_reason(Reason::ProviderUnreachable)
}

fn key_error(error: store::StoreError, doing: &'static str) -> RpcError {
    match error {
        store::StoreError::Vault(VaultError::Unavailable(detail)) => {
            tracing::warn!(%detail, "key service unavailable while trying to {doing}");
            RpcError::new(
                ErrorCode::ServiceUnavailable,
                "The key service is unavailable. Your key is safe; try again shortly.",
            )
            .with_reason(Reason::KeyServiceUnavailable)
            .with_retry_after(5)
        }
        store::StoreError::Vault(VaultError::Integrity) => {
            tracing::warn!("a stored API key failed its integrity check");
            RpcError::new(
                ErrorCode::PreconditionFailed,
                "Your saved key can no longer be read. Please set it again.",
            )
            .with_reason(Reason::ApiKeyUnreadable)
        }
        store::StoreError::Database(error) => internal(doing)(error),
        other => internal(doing)(other),
    }
}
