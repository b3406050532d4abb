//! `auth.*`: signing in (password, Google, Apple), keeping sessions alive with rotating
//! refresh tokens, and signing out.

mod email;
mod identity;
pub mod sessions;

use chrono::Utc;
use entity::users;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, SqlErr,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use self::sessions::{IssuedTokens, RefreshError};
use crate::audit::{self, AuditAction};
use crate::context::{App, Ctx};
use crate::guard::{SignedIn, signed_in_unverified};
use crate::reason::Reason;
use crate::rpc::Timestamp;
use crate::rpc::{ErrorCode, FieldErrors, Router, RpcError, internal};
use crate::users::{
    DisplayName, Email, User, check_password, email_taken, find_by_email, limit_ip,
    send_verification, view,
};

pub fn router() -> Router<App> {
    Router::new()
        .mutation("register", register)
        .mutation("login", login)
        .mutation("google", identity::google)
        .mutation("apple", identity::apple)
        .mutation("refresh", refresh)
        .mutation("verifyEmail", email::verify_email)
        .mutation(
            "resendVerification",
            signed_in_unverified(email::resend_verification),
        )
        .mutation("requestPasswordReset", email::request_password_reset)
        .mutation("resetPassword", email::reset_password)
        .mutation("logout", signed_in_unverified(logout))
        .query("sessions.list", signed_in_unverified(list_sessions))
        .mutation("sessions.revoke", signed_in_unverified(revoke_session))
}

/// The public keys that verify our access tokens, at `GET /.well-known/jwks.json`, and the
/// page verification mails link to, `GET /auth/verify`.
pub fn routes(app: App) -> axum::Router {
    async fn jwks(
        axum::extract::State(app): axum::extract::State<App>,
    ) -> axum::Json<serde_json::Value> {
        axum::Json(app.auth.access_tokens.jwks())
    }
    axum::Router::new()
        .route("/.well-known/jwks.json", axum::routing::get(jwks))
        .route("/auth/verify", axum::routing::get(email::verify_link))
        .with_state(app)
}

#[derive(Debug, Serialize, specta::Type)]
pub enum TokenType {
    Bearer,
}

/// What every sign-in and refresh returns.
#[derive(Debug, Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct AuthSession {
    pub user: User,
    /// Send as `Authorization: Bearer <accessToken>`.
    pub access_token: String,
    /// Single use: exchange it with `auth.refresh` for a new pair before `expiresIn` runs out.
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u32,
    pub token_type: TokenType,
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterInput {
    email: String,
    /// 8 to 128 characters.
    password: String,
    name: String,
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginInput {
    email: String,
    password: String,
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshInput {
    refresh_token: String,
}

/// An input with no fields (`{}`), which may also be left out.
#[derive(Deserialize, specta::Type)]
#[serde(deny_unknown_fields)]
pub struct NoInput {}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    id: Uuid,
    created_at: Timestamp,
    /// When the session last signed in or refreshed its tokens.
    last_used_at: Timestamp,
    user_agent: Option<String>,
    /// The session making this call.
    current: bool,
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokeSessionInput {
    id: Uuid,
}

fn unauthorized(reason: Reason, message: &'static str) -> RpcError {
    RpcError::new(ErrorCode::Unauthorized, message).with_reason(reason)
}

fn parse_password(raw: &str) -> Result<String, String> {
    let length = raw.chars().count();
    if (8..=128).contains(&length) {
        Ok(raw.to_owned())
    } else {
        Err("use 8 to 128 characters".to_owned())
    }
}

/// `auth.register`: the account starts unverified; a mail with a link and a code verifies it.
async fn register(ctx: Ctx, input: RegisterInput) -> Result<AuthSession, RpcError> {
    limit_ip(&ctx.state, &ctx.request, "register").await?;
    let mut errors = FieldErrors::default();
    let email = errors.check("email", Email::parse(&input.email));
    let password = errors.check("password", parse_password(&input.password));
    let name = errors.check("name", DisplayName::parse(&input.name));
    let (Some(email), Some(password), Some(name)) = (email, password, name) else {
        return Err(errors.into_error());
    };
    let db = &ctx.state.db;
    if find_by_email(db, &email).await?.is_some() {
        return Err(email_taken());
    }
    let password_hash = ctx
        .state
        .auth
        .passwords
        .hash(&format!("ip:{}", ctx.request.client_ip), password)
        .await
        .map_err(internal("hash a password"))?;
    // The account, its audit row and its first session are written together: a failure
    // anywhere leaves no account behind (registering again then works).
    let transaction = crate::db::begin_write(db)
        .await
        .map_err(internal("begin a transaction"))?;
    let now = Utc::now();
    let user = users::ActiveModel {
        id: Set(Uuid::now_v7()),
        email: Set(email.into_string()),
        name: Set(name.into_string()),
        avatar_url: Set(None),
        avatar_file_id: Set(None),
        password_hash: Set(Some(password_hash)),
        email_verified_at: Set(None),
        tier: Set(crate::users::Tier::default().as_str().to_owned()),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&transaction)
    .await
    .map_err(|error| match error.sql_err() {
        // Registered concurrently with the same email.
        Some(SqlErr::UniqueConstraintViolation(_)) => email_taken(),
        _ => internal("create a user")(error),
    })?;
    audit::record(
        &transaction,
        &ctx.request,
        Some(user.id),
        AuditAction::SignUp,
        json!({ "method": "password" }),
    )
    .await;
    let session = session_in(&ctx, &transaction, user.clone()).await?;
    transaction
        .commit()
        .await
        .map_err(internal("commit a registration"))?;
    send_verification(&ctx.state, &user).await;
    Ok(session)
}

/// `auth.login`: an unknown email and a wrong password get the same answer in about the
/// same time, and an account locks after repeated failures. Every verification is audited
/// (`sign_in` or `sign_in_failed`).
async fn login(ctx: Ctx, input: LoginInput) -> Result<AuthSession, RpcError> {
    let result = password_login(&ctx, input).await;
    count_sign_in("password", &result);
    result
}

pub fn describe_metrics() {
    metrics::describe_counter!(
        "alias_sign_ins_total",
        "Sign-in attempts, by method (password, google, apple) and outcome (success, or the refusal's reason or code)."
    );
}

/// Counts a sign-in by its outcome: `success`, or why it was refused (`invalid_credentials`,
/// `rate_limited`, ...; a code when the error has no reason).
fn count_sign_in<T>(method: &'static str, result: &Result<T, RpcError>) {
    let outcome = match result {
        Ok(_) => "success",
        Err(error) => error.reason.unwrap_or(error.code.as_str()),
    };
    metrics::counter!("alias_sign_ins_total", "method" => method, "outcome" => outcome)
        .increment(1);
}

async fn password_login(ctx: &Ctx, input: LoginInput) -> Result<AuthSession, RpcError> {
    let state = &ctx.state;
    limit_ip(state, &ctx.request, "login").await?;
    let invalid = || {
        unauthorized(
            Reason::InvalidCredentials,
            "The email or password is not correct.",
        )
    };
    let Ok(email) = Email::parse(&input.email) else {
        return Err(invalid());
    };
    let user = find_by_email(&state.db, &email).await?;
    let stored = user.as_ref().and_then(|user| user.password_hash.clone());
    // Reserves one of the account's attempts first (whether or not it exists, so the lock
    // does not reveal it); refused past them.
    let matches = check_password(state, email.as_str(), input.password, stored).await?;
    match user {
        Some(user) if matches => {
            audit::record(
                &state.db,
                &ctx.request,
                Some(user.id),
                AuditAction::SignIn,
                json!({ "method": "password" }),
            )
            .await;
            begin_session(ctx, user).await
        }
        user => {
            let user_id = user.map(|user| user.id);
            audit::record(
                &state.db,
                &ctx.request,
                user_id,
                AuditAction::SignInFailed,
                json!({ "method": "password" }),
            )
            .await;
            Err(invalid())
        }
    }
}

async fn begin_session(ctx: &Ctx, user: users::Model) -> Result<AuthSession, RpcError> {
    let transaction = crate::db::begin_write(&ctx.state.db)
        .await
        .map_err(internal("begin a transaction"))?;
    let session = session_in(ctx, &transaction, user).await?;
    transaction
        .commit()
        .await
        .map_err(internal("commit a sign-in"))?;
    Ok(session)
}

/// Starts `user`'s session inside the caller's transaction `db`.
async fn session_in(
    ctx: &Ctx,
    db: &impl ConnectionTrait,
    user: users::Model,
) -> Result<AuthSession, RpcError> {
    let tokens = sessions::start(&ctx.state, db, user.id, &ctx.request)
        .await
        .map_err(internal("start a session"))?;
    let user = view(ctx, db, user).await?;
    Ok(auth_session(user, tokens))
}

fn auth_session(user: User, tokens: IssuedTokens) -> AuthSession {
    AuthSession {
        user,
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        expires_in: u32::try_from(tokens.expires_in_seconds).unwrap_or(u32::MAX),
        token_type: TokenType::Bearer,
    }
}

/// `auth.refresh`: any UNAUTHORIZED answer means "sign in again".
async fn refresh(ctx: Ctx, input: RefreshInput) -> Result<AuthSession, RpcError> {
    let state = &ctx.state;
    limit_ip(state, &ctx.request, "refresh").await?;
    let tokens = sessions::refresh(state, input.refresh_token.trim(), &ctx.request)
        .await
        .map_err(|error| match error {
            RefreshError::Unknown => unauthorized(Reason::InvalidToken, "The refresh token is not valid; sign in again."),
            RefreshError::Revoked => unauthorized(Reason::SessionRevoked, "This session was signed out; sign in again."),
            RefreshError::Expired => unauthorized(Reason::SessionExpired, "This session expired; sign in again."),
            RefreshError::Reused => unauthorized(
                Reason::RefreshTokenReused,
                "This refresh token was already used, so the session was signed out for safety. Sign in again.",
            ),
            RefreshError::Internal(error) => internal("refresh a session")(error),
        })?;
    let user = users::Entity::find_by_id(tokens.user_id)
        .one(&state.db)
        .await
        .map_err(internal("load a user"))?
        .ok_or_else(|| unauthorized(Reason::SessionRevoked, "This account no longer exists."))?;
    Ok(auth_session(view(&ctx, &state.db, user).await?, tokens))
}

/// `auth.logout`: ends the calling session.
async fn logout(ctx: Ctx, caller: SignedIn, _: NoInput) -> Result<(), RpcError> {
    end_session(&ctx, &caller, caller.session_id, AuditAction::SignOut).await
}

/// `auth.sessions.list`
async fn list_sessions(ctx: Ctx, caller: SignedIn, _: ()) -> Result<Vec<SessionInfo>, RpcError> {
    let sessions = sessions::list_active(&ctx.state.db, caller.user.id)
        .await
        .map_err(internal("list sessions"))?;
    Ok(sessions
        .into_iter()
        .map(|session| SessionInfo {
            current: session.id == caller.session_id,
            id: session.id,
            created_at: session.created_at.into(),
            last_used_at: session.last_used_at.into(),
            user_agent: session.user_agent,
        })
        .collect())
}

/// `auth.sessions.revoke`: signs out one of the caller's sessions (another user's id is
/// NOT_FOUND, like an id that never existed).
async fn revoke_session(
    ctx: Ctx,
    caller: SignedIn,
    input: RevokeSessionInput,
) -> Result<(), RpcError> {
    let owned = entity::auth_sessions::Entity::find_by_id(input.id)
        .filter(entity::auth_sessions::Column::UserId.eq(caller.user.id))
        .one(&ctx.state.db)
        .await
        .map_err(internal("look up a session"))?;
    if owned.is_none() {
        return Err(RpcError::not_found("No such session."));
    }
    end_session(&ctx, &caller, input.id, AuditAction::SessionRevoked).await
}

async fn end_session(
    ctx: &Ctx,
    caller: &SignedIn,
    session_id: Uuid,
    action: AuditAction,
) -> Result<(), RpcError> {
    sessions::revoke_family(&ctx.state, caller.user.id, session_id)
        .await
        .map_err(internal("revoke a session"))?;
    let metadata = json!({ "sessionId": session_id });
    audit::record(
        &ctx.state.db,
        &ctx.request,
        Some(caller.user.id),
        action,
        metadata,
    )
    .await;
    Ok(())
}
