//! Email flows of signing in: `auth.verifyEmail`, `auth.resendVerification`,
//! `auth.requestPasswordReset`, `auth.resetPassword`, and the mailed link `GET /auth/verify`.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::{Extensions, HeaderMap};
use axum::response::Html;
use chrono::Utc;
use entity::{email_tokens as email_token, user_identities, users};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, SqlErr};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{NoInput, limit_ip, parse_password, sessions};
use crate::audit::{self, AuditAction};
use crate::context::{App, AppState, Ctx};
use crate::guard::SignedIn;
use crate::rpc::{FieldErrors, RequestInfo, RpcError, internal};
use crate::users::email_tokens::{self, Purpose, consume, retire_all};
use crate::users::{
    Email, email_taken, find_by_email, invalid_code, send_verification, too_many_attempts,
};

const HOUR: Duration = Duration::from_secs(3600);
/// Verification mails an account may ask for per hour.
const RESENDS_PER_HOUR: u32 = 5;
/// Reset mails per address per hour (whether or not it has an account).
const RESETS_PER_EMAIL_PER_HOUR: u32 = 3;
/// What proves an address: a verification mail, or the mail of an email change.
const ADDRESS_PROOFS: &[Purpose] = &[Purpose::VerifyEmail, Purpose::ChangeEmail];

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifyEmailInput {
    /// The address the code was mailed to (for an email change, the new one).
    email: String,
    /// The 6 digits from the mail.
    code: String,
}

/// `auth.verifyEmail`: confirms an address with the code from its mail (5 tries per code).
pub(super) async fn verify_email(ctx: Ctx, input: VerifyEmailInput) -> Result<(), RpcError> {
    limit_ip(&ctx.state, &ctx.request, "verify").await?;
    let email = Email::parse(&input.email).map_err(|_| invalid_code())?;
    let state = &ctx.state;
    let mac = &state.auth.token_mac;
    let token =
        email_tokens::find_by_code(&state.db, mac, ADDRESS_PROOFS, email.as_str(), &input.code)
            .await
            .map_err(internal("look up an email code"))?
            .ok_or_else(invalid_code)?;
    confirm_email(state, &ctx.request, token).await
}

/// Applies a verification or email-change token found by its link or code: the address is
/// verified (and, for a change, becomes the account's), once; every other mailed link and
/// code of the account stops working. A verification only applies while the account has the
/// address it was mailed to, a change only while it has the address it was asked from.
async fn confirm_email(
    state: &AppState,
    request: &RequestInfo,
    token: email_token::Model,
) -> Result<(), RpcError> {
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
    let user = users::Entity::find_by_id(token.user_id)
        .one(&transaction)
        .await
        .map_err(internal("load a user"))?
        .ok_or_else(invalid_code)?;
    let required_address = match purpose {
        Some(Purpose::VerifyEmail) => Some(&token.email),
        Some(Purpose::ChangeEmail) => token.issued_for_email.as_ref(),
        _ => None,
    };
    if required_address != Some(&user.email) {
        return Err(invalid_code());
    }
    let now = Utc::now();
    let mut update = users::Entity::update_many()
        .col_expr(users::Column::EmailVerifiedAt, Expr::value(now))
        .col_expr(users::Column::UpdatedAt, Expr::value(now))
        .filter(users::Column::Id.eq(user.id))
        .filter(users::Column::Email.eq(&user.email));
    if purpose == Some(Purpose::ChangeEmail) {
        update = update.col_expr(users::Column::Email, Expr::value(token.email.clone()));
    }
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
    retire_all(&transaction, user.id)
        .await
        .map_err(internal("retire email tokens"))?;
    // Sessions and sign-ins stay: the person who registered usually confirms from the app
    // they are signed in to. A squatter is put out when the owner proves the address the
    // way only the owner can use against them: a password reset (new password, every
    // session ended, planted sign-ins removed) or a Google/Apple sign-in (a fresh account).
    if purpose == Some(Purpose::ChangeEmail) {
        audit::record(
            &transaction,
            request,
            Some(user.id),
            AuditAction::EmailChanged,
            json!({}),
        )
        .await;
    }
    transaction
        .commit()
        .await
        .map_err(internal("commit an email verification"))?;
    state.auth.session_cache.forget_user(user.id).await;
    Ok(())
}

/// Removes the account's Google/Apple sign-ins and ends every session, inside the
/// transaction that proves its address for the first time (a verification or a password
/// reset): none of them was made by someone who proved they own it.
async fn end_unproved_access(
    transaction: &DatabaseTransaction,
    user_id: Uuid,
) -> Result<(), RpcError> {
    user_identities::Entity::delete_many()
        .filter(user_identities::Column::UserId.eq(user_id))
        .exec(transaction)
        .await
        .map_err(internal("remove sign-in identities"))?;
    sessions::revoke_all(transaction, user_id)
        .await
        .map_err(internal("sign out every session"))?;
    Ok(())
}

/// `auth.resendVerification`: mails the caller a new link and code (the earlier ones stop
/// working); nothing when the address is already verified.
pub(super) async fn resend_verification(
    ctx: Ctx,
    caller: SignedIn,
    _: NoInput,
) -> Result<(), RpcError> {
    if caller.user.email_verified_at.is_some() {
        return Ok(());
    }
    let state = &ctx.state;
    state
        .auth
        .rate_limits
        .check("resend", caller.user.id, RESENDS_PER_HOUR, HOUR)
        .await
        .map_err(|refusal| refusal.into_error(too_many_attempts))?;
    send_verification(state, &caller.user).await;
    Ok(())
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestPasswordResetInput {
    email: String,
}

/// `auth.requestPasswordReset`: mails a reset link and code if the address has an account.
/// The answer is the same, and as quick, either way: the lookup and the mail happen after it.
pub(super) async fn request_password_reset(
    ctx: Ctx,
    input: RequestPasswordResetInput,
) -> Result<(), RpcError> {
    let state = &ctx.state;
    limit_ip(state, &ctx.request, "reset").await?;
    let email = Email::parse(&input.email).map_err(|message| {
        let mut errors = FieldErrors::default();
        errors.check::<()>("email", Err(message));
        errors.into_error()
    })?;
    state
        .auth
        .rate_limits
        .check("reset", email.as_str(), RESETS_PER_EMAIL_PER_HOUR, HOUR)
        .await
        .map_err(|refusal| refusal.into_error(too_many_attempts))?;
    let state = App::clone(state);
    tokio::spawn(async move {
        if let Err(error) = mail_reset(&state, &email).await {
            tracing::error!(%error, "could not issue a password reset");
        }
    });
    Ok(())
}

async fn mail_reset(state: &AppState, email: &Email) -> anyhow::Result<()> {
    let Some(user) = find_by_email(&state.db, email)
        .await
        .map_err(|_| anyhow::anyhow!("could not look up the account"))?
    else {
        return Ok(());
    };
    let issued = email_tokens::issue(
        &state.db,
        &state.auth.token_mac,
        user.id,
        Purpose::ResetPassword,
        &user.email,
        &user.email,
    )
    .await?;
    state.mailer.send(crate::users::mails::reset_password(
        &state.config.mail,
        &user.email,
        &issued,
    ));
    Ok(())
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResetPasswordInput {
    /// The `token` of the mailed link; or else `email` and `code`.
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    email: Option<String>,
    /// The 6 digits from the mail (5 tries per code).
    #[serde(default)]
    code: Option<String>,
    /// 8 to 128 characters.
    new_password: String,
}

/// `auth.resetPassword`: sets a new password with a mailed token or code, signs every session
/// out, marks the address verified (the mail proved it; if nothing had before, the account's
/// Google/Apple sign-ins are removed too), retires every other mailed link and code, ends the
/// account's sign-in lock and sends a notice. Sign in after it.
pub(super) async fn reset_password(ctx: Ctx, input: ResetPasswordInput) -> Result<(), RpcError> {
    let state = &ctx.state;
    limit_ip(state, &ctx.request, "reset").await?;
    let mut errors = FieldErrors::default();
    let password = errors.check("newPassword", parse_password(&input.new_password));
    let Some(password) = password else {
        return Err(errors.into_error());
    };
    let purposes = &[Purpose::ResetPassword];
    let mac = &state.auth.token_mac;
    let token = match (input.token, input.email, input.code) {
        (Some(token), _, _) => email_tokens::find_by_link(&state.db, mac, purposes, &token).await,
        (None, Some(email), Some(code)) => match Email::parse(&email) {
            Ok(email) => {
                email_tokens::find_by_code(&state.db, mac, purposes, email.as_str(), &code).await
            }
            Err(_) => Ok(None),
        },
        _ => {
            return Err(RpcError::bad_request(
                "Send the token from the link, or the email and the code from the mail.",
            ));
        }
    }
    .map_err(internal("look up a reset token"))?
    .ok_or_else(invalid_code)?;
    let hash = state
        .auth
        .passwords
        .hash(&token.email, password)
        .await
        .map_err(internal("hash a password"))?;
    let transaction = crate::db::begin_write(&state.db)
        .await
        .map_err(internal("begin a transaction"))?;
    if !consume(&transaction, &token)
        .await
        .map_err(internal("use a reset token"))?
    {
        return Err(invalid_code());
    }
    let user = users::Entity::find_by_id(token.user_id)
        .filter(users::Column::Email.eq(&token.email))
        .one(&transaction)
        .await
        .map_err(internal("load a user"))?
        // The account changed its address since the mail.
        .ok_or_else(invalid_code)?;
    let now = Utc::now();
    let updated = users::Entity::update_many()
        .col_expr(users::Column::PasswordHash, Expr::value(Some(hash)))
        .col_expr(users::Column::EmailVerifiedAt, Expr::value(now))
        .col_expr(users::Column::UpdatedAt, Expr::value(now))
        .filter(users::Column::Id.eq(user.id))
        .filter(users::Column::Email.eq(&token.email))
        .exec(&transaction)
        .await
        .map_err(internal("set a password"))?;
    if updated.rows_affected != 1 {
        return Err(invalid_code());
    }
    if user.email_verified_at.is_none() {
        // The first proof of the address: sign-ins planted before it go too.
        end_unproved_access(&transaction, user.id).await?;
    } else {
        sessions::revoke_all(&transaction, user.id)
            .await
            .map_err(internal("sign out every session"))?;
    }
    retire_all(&transaction, user.id)
        .await
        .map_err(internal("retire email tokens"))?;
    // The owner proved themselves: the account's lock ends.
    state
        .auth
        .passwords
        .clear_attempts(&transaction, &token.email)
        .await
        .map_err(internal("clear password attempts"))?;
    audit::record(
        &transaction,
        &ctx.request,
        Some(token.user_id),
        AuditAction::PasswordReset,
        json!({}),
    )
    .await;
    transaction
        .commit()
        .await
        .map_err(internal("commit a password reset"))?;
    state.auth.session_cache.forget_user(token.user_id).await;
    state
        .mailer
        .send(crate::users::mails::password_changed(&token.email));
    Ok(())
}

#[derive(Deserialize)]
pub(super) struct VerifyLink {
    #[serde(default)]
    token: String,
}

/// `GET /auth/verify?token=…`, the link in verification mails: a small page saying whether
/// it worked, with a link back to the app.
pub(super) async fn verify_link(
    State(app): State<App>,
    Query(link): Query<VerifyLink>,
    extensions: Extensions,
    headers: HeaderMap,
) -> (StatusCode, Html<String>) {
    let found =
        email_tokens::find_by_link(&app.db, &app.auth.token_mac, ADDRESS_PROOFS, &link.token).await;
    let request = RequestInfo::of_route(&extensions, headers, app.config.trust_proxy);
    let confirmed = match found {
        Ok(Some(token)) => confirm_email(&app, &request, token).await.is_ok(),
        Ok(None) => false,
        Err(error) => {
            tracing::error!(%error, "could not look up an email link");
            false
        }
    };
    let (status, message) = if confirmed {
        (StatusCode::OK, "Your email address is confirmed.")
    } else {
        (
            StatusCode::BAD_REQUEST,
            "This link has expired or was already used. Open the app to get a new one.",
        )
    };
    let app_url = crate::text::escape_html(&app.config.mail.app_url);
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>ALIAS</title></head><body style=\"font-family: system-ui, sans-serif; \
         max-width: 32rem; margin: 4rem auto; padding: 0 1rem\"><h1>ALIAS</h1><p>{message}</p>\
         <p><a href=\"{app_url}\">Open the app</a></p></body></html>"
    );
    (status, Html(page))
}
