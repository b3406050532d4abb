//! Proving an account's address: the verification mail, and `users.changeEmail`, which
//! applies only once the new address is confirmed (`auth.verifyEmail`, `GET /auth/verify`).

use std::time::Duration;

use entity::users;
use serde::Deserialize;
use serde_json::json;

use super::email_tokens::{Purpose, issue};
use super::password::{require_password, too_many_attempts};
use super::{Email, find_by_email, mails};
use crate::audit::{self, AuditAction};
use crate::context::{AppState, Ctx};
use crate::guard::SignedIn;
use crate::reason::Reason;
use crate::rpc::{ErrorCode, FieldErrors, RpcError, internal};

/// `users.changeEmail` calls per user per hour (each mails two addresses).
const CHANGES_PER_HOUR: u32 = 5;
const HOUR: Duration = Duration::from_secs(3600);

/// Mails `user` a link and code to verify its address. A failure is logged, not returned:
/// the account works without it and the app can ask again (`auth.resendVerification`).
pub async fn send_verification(state: &AppState, user: &users::Model) {
    let mac = &state.auth.token_mac;
    match issue(
        &state.db,
        mac,
        user.id,
        Purpose::VerifyEmail,
        &user.email,
        &user.email,
    )
    .await
    {
        Ok(issued) => state.mailer.send(mails::verify_email(
            &state.config.mail,
            &user.email,
            &issued,
        )),
        Err(error) => tracing::error!(%error, "could not issue an email verification"),
    }
}

/// BAD_REQUEST `invalid_code`: the code or link is wrong, expired, used or tried too often.
pub fn invalid_code() -> RpcError {
    RpcError::new(
        ErrorCode::BadRequest,
        "This code or link is wrong, expired or already used. Ask for a new one.",
    )
    .with_reason(Reason::InvalidCode)
}

pub fn email_taken() -> RpcError {
    RpcError::new(
        ErrorCode::Conflict,
        "An account with this email already exists. Sign in instead.",
    )
    .with_reason(Reason::EmailTaken)
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangeEmailInput {
    new_email: String,
    /// Required for accounts that have a password.
    #[serde(default)]
    password: Option<String>,
}

/// `users.changeEmail`: mails a link and code to the new address and a notice to the current
/// one; the account's address changes only when the new one is confirmed (`GET /auth/verify`
/// or `auth.verifyEmail` with the new address), and only while the account still has the
/// address it was asked from. 5 per hour per account, and each counts against the caller's
/// per-IP sign-in limit.
pub async fn change_email(
    ctx: Ctx,
    caller: SignedIn,
    input: ChangeEmailInput,
) -> Result<(), RpcError> {
    let mut errors = FieldErrors::default();
    let new_email = errors.check(
        "newEmail",
        Email::parse(&input.new_email).and_then(|email| {
            if email.as_str() == caller.user.email {
                Err("this is already your address".to_owned())
            } else {
                Ok(email)
            }
        }),
    );
    let password = match (&caller.user.password_hash, input.password) {
        (Some(hash), Some(password)) => Some((hash.clone(), password)),
        (Some(_), None) => {
            errors.check::<()>(
                "password",
                Err("enter your password to change the address".to_owned()),
            );
            None
        }
        (None, _) => None,
    };
    let Some(new_email) = new_email else {
        return Err(errors.into_error());
    };
    if !errors.is_empty() {
        return Err(errors.into_error());
    }
    let state = &ctx.state;
    let user = &caller.user;
    state
        .auth
        .rate_limits
        .check("change-email", user.id, CHANGES_PER_HOUR, HOUR)
        .await
        .map_err(|refusal| refusal.into_error(too_many_attempts))?;
    if let Some((hash, password)) = password {
        require_password(&ctx, user, password, hash, "users.changeEmail").await?;
    }
    if find_by_email(&state.db, &new_email).await?.is_some() {
        return Err(email_taken());
    }
    let issued = issue(
        &state.db,
        &state.auth.token_mac,
        user.id,
        Purpose::ChangeEmail,
        new_email.as_str(),
        &user.email,
    )
    .await
    .map_err(internal("issue an email change"))?;
    audit::record(
        &state.db,
        &ctx.request,
        Some(user.id),
        AuditAction::EmailChangeRequested,
        json!({}),
    )
    .await;
    let mail = &state.config.mail;
    state
        .mailer
        .send(mails::change_email(mail, new_email.as_str(), &issued));
    state
        .mailer
        .send(mails::email_change_notice(&user.email, new_email.as_str()));
    Ok(())
}
