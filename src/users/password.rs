//! Checking an account's password, the one way every procedure does it (`auth.login`,
//! `users.delete`, `users.changeEmail`): through the account's shared attempt budget, so no
//! procedure is a password oracle beside the sign-in form.

use std::time::Duration;

use entity::users;
use serde_json::json;

use crate::audit::{self, AuditAction};
use crate::context::{AppState, Ctx};
use crate::rate_limit::RetryAfter;
use crate::reason::Reason;
use crate::rpc::{ErrorCode, RequestInfo, RpcError, internal};
use crate::security::CheckError;

/// Whether `password` is the account's (`account`: its normalized email; `stored`: its hash, `None` when there is no such
/// account or no password). TOO_MANY_REQUESTS, without hashing, once the account used up its
/// attempts (`ALIAS_LOGIN_LOCK_SECONDS`), whichever procedure used them.
pub async fn check_password(
    state: &AppState,
    account: &str,
    password: String,
    stored: Option<String>,
) -> Result<bool, RpcError> {
    state
        .auth
        .passwords
        .check(&state.db, account, password, stored)
        .await
        .map_err(|error| match error {
            CheckError::Locked(retry) => too_many_attempts(retry),
            CheckError::Database(error) => internal("count a password attempt")(error),
            CheckError::Hashing(error) => internal("check a password")(error),
        })
}

const IP_WINDOW: Duration = Duration::from_secs(60);

/// Counts an attempt of `action` (`login`, `register`, ...) from the caller's IP against the
/// per-minute limit (`ALIAS_AUTH_IP_LIMIT_PER_MINUTE`).
pub async fn limit_ip(
    state: &AppState,
    request: &RequestInfo,
    action: &str,
) -> Result<(), RpcError> {
    let subject = format!("{action}:{}", request.client_ip);
    state
        .auth
        .rate_limits
        .check(
            "ip",
            subject,
            state.config.auth.ip_limit_per_minute,
            IP_WINDOW,
        )
        .await
        .map_err(|refusal| refusal.into_error(too_many_attempts))
}

/// TOO_MANY_REQUESTS with reason `rate_limited` and `retryAfterSeconds`.
pub fn too_many_attempts(retry: RetryAfter) -> RpcError {
    RpcError::new(
        ErrorCode::TooManyRequests,
        format!("Too many attempts. Try again in {} seconds.", retry.0),
    )
    .with_reason(Reason::RateLimited)
    .with_retry_after(retry.0)
}

/// For a signed-in procedure that needs the password again (`procedure` names it in the
/// audit row written when it is wrong): UNAUTHORIZED `invalid_credentials` unless it matches.
/// It counts against the caller's per-IP sign-in limit too, like `auth.login`.
pub(super) async fn require_password(
    ctx: &Ctx,
    user: &users::Model,
    password: String,
    stored: String,
    procedure: &str,
) -> Result<(), RpcError> {
    limit_ip(&ctx.state, &ctx.request, "login").await?;
    if check_password(&ctx.state, &user.email, password, Some(stored)).await? {
        return Ok(());
    }
    audit::record(
        &ctx.state.db,
        &ctx.request,
        Some(user.id),
        AuditAction::PasswordCheckFailed,
        json!({ "procedure": procedure }),
    )
    .await;
    Err(
        RpcError::new(ErrorCode::Unauthorized, "The password is not correct.")
            .with_reason(Reason::InvalidCredentials),
    )
}
