//! The audit log: who did what, from where, when. Rows never hold secrets.

use chrono::Utc;
use entity::audit_events;
use sea_orm::{ActiveModelTrait, ConnectionTrait, Set};
use serde::Serialize;
use uuid::Uuid;

use crate::rpc::RequestInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    SignUp,
    SignIn,
    SignInFailed,
    RefreshTokenReused,
    SignOut,
    SessionRevoked,
    AccountDeleted,
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
        }
    }
}

/// Writes one audit row. Failing to audit must not fail the user's action, so an error is
/// logged (with the action, never the metadata) and swallowed.
pub async fn record(
    db: &impl ConnectionTrait,
    request: &RequestInfo,
    user_id: Option<Uuid>,
    action: AuditAction,
    metadata: serde_json::Value,
) {
    let row = audit_events::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        action: Set(action.as_str().to_owned()),
        ip: Set(Some(request.client_ip.to_string())),
        user_agent: Set(request.user_agent().map(truncate_user_agent)),
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
        ] {
            assert_eq!(
                serde_json::to_value(action).ok(),
                Some(serde_json::json!(action.as_str()))
            );
        }
    }
}
