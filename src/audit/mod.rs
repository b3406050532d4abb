//! The audit log: who did what, from where, when. Rows never hold secrets.
//! `audit.list` shows users their own events.

use chrono::Utc;
use entity::audit_events;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::context::{App, Ctx};
use crate::guard::{SignedIn, signed_in};
use crate::pagination::{Direction, PageRequest, PageSize};
use crate::rpc::{RequestInfo, Router, RpcError, Timestamp, internal};

pub fn router() -> Router<App> {
    Router::new().query("list", signed_in(list))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    SignUp,
    SignIn,
    SignInFailed,
    RefreshTokenReused,
    SignOut,
    SessionRevoked,
    AccountDeleted,
    /// A Google/Apple sign-in proved the address of an account that never verified it: that
    /// account was deleted with all it held and this fresh one made for the caller.
    AccountReclaimed,
    /// `users.changeEmail`: a link and code were mailed to the new address.
    EmailChangeRequested,
    /// The new address was confirmed and became the account's.
    EmailChanged,
    /// `auth.resetPassword`: a new password set with a mailed token; every session ended.
    PasswordReset,
    /// A wrong password given to a procedure other than sign-in (`users.delete`, ...).
    PasswordCheckFailed,
    ApiKeySet,
    ApiKeyValidated,
    ApiKeyDeleted,
    ApiKeyUseFailed,
    /// `apiKeys.set` with a key the provider refused.
    ApiKeyRejected,
    /// `apiKeys.set`/`validate` refused for checking too many keys (once per window).
    ApiKeyCheckLimited,
    /// A file stored (`files.upload`, or `files.complete` after an upload link).
    FileUploaded,
    /// An upload refused after its bytes arrived (wrong type, size or checksum).
    FileRejected,
    FileDeleted,
    /// A share link made public a copy of a chat (`chat.shares.create`).
    ShareCreated,
    /// A share link was revoked (`chat.shares.revoke`).
    ShareRevoked,
}

impl AuditAction {
    fn as_str(self) -> &'static str {
        match self {
            Self::SignUp => "sign_up",
            Self::SignIn => "sign_in",
            Self::SignInFailed => "sign_in_failed",
            Self::RefreshTokenReused => "refresh_token_reused",
            Self::SignOut => "sign_out",
            Self::SessionRevoked => "session_revoked",
            Self::AccountDeleted => "account_deleted",
            Self::PasswordCheckFailed => "password_check_failed",
            Self::PasswordReset => "password_reset",
            Self::AccountReclaimed => "account_reclaimed",
            Self::EmailChangeRequested => "email_change_requested",
            Self::EmailChanged => "email_changed",
            Self::ApiKeySet => "api_key_set",
            Self::ApiKeyValidated => "api_key_validated",
            Self::ApiKeyDeleted => "api_key_deleted",
            Self::ApiKeyUseFailed => "api_key_use_failed",
            Self::ApiKeyRejected => "api_key_rejected",
            Self::ApiKeyCheckLimited => "api_key_check_limited",
            Self::FileUploaded => "file_uploaded",
            Self::FileRejected => "file_rejected",
            Self::FileDeleted => "file_deleted",
            Self::ShareCreated => "share_created",
            Self::ShareRevoked => "share_revoked",
        }
    }
}

/// Writes one audit row for a request. Failing to audit must not fail the user's action, so
/// an error is logged (with the action, never the metadata) and swallowed.
pub async fn record(
    db: &impl ConnectionTrait,
    request: &RequestInfo,
    user_id: Option<Uuid>,
    action: AuditAction,
    metadata: serde_json::Value,
) {
    let origin = Origin {
        ip: Some(request.client_ip.to_string()),
        user_agent: request.user_agent().map(truncate_user_agent),
    };
    insert(db, origin, user_id, action, metadata).await;
}

/// Writes one audit row for something the server did on its own (a background sweep): no
/// address, no user agent.
pub async fn record_by_server(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    action: AuditAction,
    metadata: serde_json::Value,
) {
    insert(db, Origin::default(), Some(user_id), action, metadata).await;
}

/// Where an audited action came from.
#[derive(Default)]
struct Origin {
    ip: Option<String>,
    user_agent: Option<String>,
}

async fn insert(
    db: &impl ConnectionTrait,
    origin: Origin,
    user_id: Option<Uuid>,
    action: AuditAction,
    metadata: serde_json::Value,
) {
    let row = audit_events::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        action: Set(action.as_str().to_owned()),
        ip: Set(origin.ip),
        user_agent: Set(origin.user_agent),
        metadata: Set(metadata),
        created_at: Set(Utc::now()),
    };
    if let Err(error) = row.insert(db).await {
        tracing::error!(action = action.as_str(), %error, "could not write audit event");
    }
}

/// User agents are client-controlled; keep rows bounded.
pub fn truncate_user_agent(user_agent: &str) -> String {
    user_agent.chars().take(512).collect()
}

const AUDIT_PAGE: PageSize = PageSize {
    default: 50,
    max: 100,
};

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditListInput {
    /// 1 to 100 (default 50).
    #[serde(default)]
    limit: Option<u32>,
    /// The `nextCursor` of a previous page; absent or null for the first page.
    #[serde(default)]
    cursor: Option<String>,
    /// `forward` (default): older events than the cursor. `backward`: newer ones (the events
    /// just above the cursor, still newest first); without a cursor, the oldest events.
    #[serde(default)]
    direction: Option<Direction>,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    id: Uuid,
    action: AuditAction,
    ip: Option<String>,
    user_agent: Option<String>,
    /// Details of the action (provider, session id, method); never secrets.
    #[specta(type = crate::rpc::JsonValue)]
    metadata: serde_json::Value,
    created_at: Timestamp,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    /// Newest first.
    events: Vec<AuditEvent>,
    /// The next page's `cursor`, in the same direction; null at the end.
    next_cursor: Option<String>,
}

/// `audit.list`: the caller's own events, newest first. Ids are time-ordered (UUIDv7), so
/// an event's id is its position in the list.
async fn list(ctx: Ctx, caller: SignedIn, input: AuditListInput) -> Result<AuditPage, RpcError> {
    let page = PageRequest::<Uuid>::of_input(
        AUDIT_PAGE,
        input.limit,
        input.cursor.as_deref(),
        input.direction,
    )?;
    let mine = audit_events::Entity::find().filter(audit_events::Column::UserId.eq(caller.user.id));
    let rows = page
        .newest_first(mine, audit_events::Column::Id)
        .all(&ctx.state.db)
        .await
        .map_err(internal("list audit events"))?;
    let (rows, next_cursor) = page.finish_in_list_order(rows, |row| row.id);
    let events = rows
        .into_iter()
        .filter_map(|row| {
            Some(AuditEvent {
                action: serde_json::from_value(serde_json::Value::String(row.action)).ok()?,
                id: row.id,
                ip: row.ip,
                user_agent: row.user_agent,
                metadata: row.metadata,
                created_at: row.created_at.into(),
            })
        })
        .collect();
    Ok(AuditPage {
        events,
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_match_serde_names() {
        use AuditAction::*;
        for action in [
            SignUp,
            SignIn,
            SignInFailed,
            RefreshTokenReused,
            SignOut,
            SessionRevoked,
            AccountDeleted,
            PasswordCheckFailed,
            PasswordReset,
            AccountReclaimed,
            ApiKeySet,
            ApiKeyValidated,
            ApiKeyDeleted,
            ApiKeyUseFailed,
        ] {
            assert_eq!(
                serde_json::to_value(action).ok(),
                Some(serde_json::json!(action.as_str()))
            );
        }
    }
}
