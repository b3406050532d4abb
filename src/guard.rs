//! Signed-in procedures: the user arrives as a typed argument, checked once here, so no
//! handler can forget to authenticate.

use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use entity::users;
use futures::future::BoxFuture;
use uuid::Uuid;

use crate::context::Ctx;
use crate::rate_limit::RetryAfter;
use crate::reason::Reason;
use crate::rpc::{ErrorCode, Guarded, RpcError, internal};
use crate::security::{
    AuthProvider, KnownSession, Revocations, SessionCache, TokenError, VerifiedToken,
};

/// The caller of a signed-in procedure.
pub struct SignedIn {
    pub user: users::Model,
    pub session_id: Uuid,
    /// How the user can sign in (part of the `User` the app sees).
    pub auth_providers: Vec<AuthProvider>,
}

type Authenticate = fn(Ctx) -> BoxFuture<'static, Result<SignedIn, RpcError>>;

/// Wraps `handler(ctx, signed_in, input)` into a procedure that first authenticates the
/// `Authorization: Bearer` access token and its session, before its input is even parsed:
/// a signed-out caller is told to sign in, never what is wrong with the input. With
/// `ALIAS_REQUIRE_VERIFIED_EMAIL`, an account that has not verified its address is refused
/// (FORBIDDEN, `email_not_verified`): every signed-in procedure is closed to it unless it
/// is declared with [`signed_in_unverified`].
pub fn signed_in<I, O, F, Fut>(handler: F) -> Guarded<Authenticate, F>
where
    F: Fn(Ctx, SignedIn, I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, RpcError>> + Send + 'static,
{
    Guarded::new(
        |ctx| {
            Box::pin(async move {
                let caller = authenticate(&ctx).await?;
                if ctx.state.config.mail.require_verified_email
                    && caller.user.email_verified_at.is_none()
                {
                    return Err(RpcError::new(
                        ErrorCode::Forbidden,
                        "Confirm your email address first: open the link or enter the code we mailed you.",
                    )
                    .with_reason(Reason::EmailNotVerified));
                }
                Ok(caller)
            })
        },
        handler,
    )
}

/// [`signed_in`] for the few procedures an account may use before it verified its address
/// even when `ALIAS_REQUIRE_VERIFIED_EMAIL` is set: seeing and fixing the account (`users.me`,
/// `update`, `changeEmail`, `delete`) and `auth.*` (asking for the mail again, sessions,
/// signing out).
pub fn signed_in_unverified<I, O, F, Fut>(handler: F) -> Guarded<Authenticate, F>
where
    F: Fn(Ctx, SignedIn, I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, RpcError>> + Send + 'static,
{
    Guarded::new(
        |ctx| Box::pin(async move { authenticate(&ctx).await }),
        handler,
    )
}

fn unauthorized(reason: Reason, message: &'static str) -> RpcError {
    RpcError::new(ErrorCode::Unauthorized, message).with_reason(reason)
}

/// The signed-in caller of the request (for guards that also accept other credentials).
///
/// The call is counted against its user's budget (the user is known from the signed token)
/// in the same round trip that reads the user's revocation mark, which tells the session
/// cache whether what it remembers is current (see `security::session_cache`). The budget's
/// verdict waits until the session is checked: a revoked or expired session is told so even
/// over budget or with Redis unreachable.
pub async fn authenticate(ctx: &Ctx) -> Result<SignedIn, RpcError> {
    let token = verified_token(ctx)?;
    let auth = &ctx.state.auth;
    let counted = auth
        .rate_limits
        .check_and_read(
            CALLS_LIMIT,
            token.user_id,
            ctx.state.config.usage.calls_per_minute,
            CALLS_WINDOW,
            &SessionCache::revocation_key(token.user_id),
        )
        .await;
    let revocations = match &counted {
        Ok(counted) => Revocations::Seen(counted.read.clone()),
        Err(_) => Revocations::Unknown,
    };
    let found = auth
        .session_cache
        .find(&ctx.state.db, token.session_id, revocations)
        .await
        .map_err(internal("load the session of an access token"))?;
    let revoked = || {
        unauthorized(
            Reason::SessionRevoked,
            "This session was signed out; sign in again.",
        )
    };
    let KnownSession {
        session,
        user,
        auth_providers,
    } = found.ok_or_else(revoked)?;
    if session.revoked_at.is_some() {
        return Err(revoked());
    }
    if session.expires_at <= Utc::now() {
        return Err(unauthorized(
            Reason::SessionExpired,
            "This session expired; sign in again.",
        ));
    }
    if session.user_id != token.user_id {
        return Err(unauthorized(
            Reason::InvalidToken,
            "The access token is not valid; sign in again.",
        ));
    }
    counted?.allowed.map_err(over_budget)?;
    Ok(SignedIn {
        user,
        session_id: session.id,
        auth_providers,
    })
}

/// The `Authorization: Bearer` access token, its signature and expiry checked.
fn verified_token(ctx: &Ctx) -> Result<VerifiedToken, RpcError> {
    let header = ctx
        .request
        .header("authorization")
        .ok_or_else(|| unauthorized(Reason::MissingToken, "Sign in to continue."))?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| {
            unauthorized(
                Reason::InvalidToken,
                "The Authorization header must be `Bearer <access token>`.",
            )
        })?;
    ctx.state
        .auth
        .access_tokens
        .verify(token.trim())
        .map_err(|error| match error {
            TokenError::Expired => unauthorized(
                Reason::TokenExpired,
                "The access token expired; refresh it.",
            ),
            TokenError::Invalid => unauthorized(
                Reason::InvalidToken,
                "The access token is not valid; sign in again.",
            ),
        })
}

/// The per-user budget of signed-in calls (`ALIAS_USER_CALLS_PER_MINUTE`) is per minute.
const CALLS_WINDOW: Duration = Duration::from_secs(60);

/// The per-user budget's name (its Redis key's and its refusals' in the metrics).
const CALLS_LIMIT: &str = "user_calls";

fn over_budget(retry: RetryAfter) -> RpcError {
    RpcError::new(
        ErrorCode::TooManyRequests,
        format!("Too many requests. Try again in {} seconds.", retry.0),
    )
    .with_reason(Reason::RateLimited)
    .with_retry_after(retry.0)
}

/// Counts the call against its user's budget (`ALIAS_USER_CALLS_PER_MINUTE`): once per
/// signed-in call ([`authenticate`] does), each call of a batch on its own, before its input
/// is read; and for calls made on the user's behalf, such as a voice call's agent appending
/// its transcript.
pub async fn limit_calls(ctx: &Ctx, user_id: Uuid) -> Result<(), RpcError> {
    let state = &ctx.state;
    state
        .auth
        .rate_limits
        .check(
            CALLS_LIMIT,
            user_id,
            state.config.usage.calls_per_minute,
            CALLS_WINDOW,
        )
        .await
        .map_err(|refusal| refusal.into_error(over_budget))
}
