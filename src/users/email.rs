//! Proving an account's address: the verification mail, confirming it (by link or code), and
//! `users.changeEmail`, which applies only once the new address is confirmed.

use chrono::Utc;
use entity::{email_tokens, users};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, SqlErr};
use serde::Deserialize;

use super::email_tokens::{Purpose, consume, issue};
use super::password::require_password;
use super::{Email, find_by_email, mails};
use crate::context::{AppState, Ctx};
use crate::guard::SignedIn;
use crate::reason::Reason;
use crate::rpc::{ErrorCode, FieldErrors, RpcError, internal};

/// Mails `user` a link and code to verify its address. A failure is logged, not returned:
/// the account works without it and the app can ask again (`auth.resendVerification`).
pub async fn send_verification(state: &AppState, user: &users::Model) {
    match issue(&state.db, user.id, Purpose::VerifyEmail, &user.email).await {
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

/// Applies a verification or email-change token found by its link or code: the address is
/// verified (and, for a change, becomes the account's), once.
pub async fn confirm_email(state: &AppState, token: email_tokens::Model) -> Result<(), RpcError> {
    let purpose = Purpose::of(&token);
    let transaction = crate::db::begin_write(&state.db)
        .await
        .map_err(internal("begin a transaction"))?;
    if !consume(&transaction, &token)
        .await
        .map_err(internal("use an email token"))?
    {
        return Err(invalid_code());
    }
    let now = Utc::now();
    let mut update = users::Entity::update_many()
        .col_expr(users::Column::EmailVerifiedAt, Expr::value(now))
        .col_expr(users::Column::UpdatedAt, Expr::value(now))
        .filter(users::Column::Id.eq(token.user_id));
    update = match purpose {
        Some(Purpose::ChangeEmail) => {
            update.col_expr(users::Column::Email, Expr::value(token.email.clone()))
        }
        // Only while the account still has the address the mail went to.
        Some(Purpose::VerifyEmail) => update.filter(users::Column::Email.eq(&token.email)),
        _ => return Err(invalid_code()),
    };
    let updated = update.exec(&transaction).await.map_err(|error| {
        match error.sql_err() {
            // Another account took the address meanwhile.
            Some(SqlErr::UniqueConstraintViolation(_)) => email_taken(),
            _ => internal("verify an email address")(error),
        }
    })?;
    if updated.rows_affected != 1 {
        return Err(invalid_code());
    }
    transaction
        .commit()
        .await
        .map_err(internal("commit an email verification"))?;
    state.auth.session_cache.forget_user(token.user_id);
    Ok(())
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
/// or `auth.verifyEmail` with the new address).
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
    if let Some((hash, password)) = password {
        require_password(&ctx, user, password, hash, "users.changeEmail").await?;
    }
    if find_by_email(&state.db, &new_email).await?.is_some() {
        return Err(email_taken());
    }
    let issued = issue(&state.db, user.id, Purpose::ChangeEmail, new_email.as_str())
        .await
        .map_err(internal("issue an email change"))?;
    let mail = &state.config.mail;
    state
        .mailer
        .send(mails::change_email(mail, new_email.as_str(), &issued));
    state
        .mailer
        .send(mails::email_change_notice(&user.email, new_email.as_str()));
    Ok(())
}
