//! `auth.google` and `auth.apple`: signing in with an ID token from Google or Apple.

use chrono::Utc;
use entity::{user_identities, users};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, Set, SqlErr,
};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{AuthSession, begin_session, limit_ip, sessions, unauthorized};
use crate::audit::{self, AuditAction};
use crate::context::Ctx;
use crate::reason::Reason;
use crate::rpc::{ErrorCode, RpcError, internal};
use crate::security::{IdClaims, IdTokenError, IdTokenVerifier, Provider};
use crate::users::{DisplayName, Email, find_by_email, parse_avatar_url};

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GoogleSignInInput {
    id_token: String,
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppleSignInInput {
    id_token: String,
    /// Apple sends the name only on the first sign-in; pass it then.
    #[serde(default)]
    name: Option<String>,
}

/// `auth.google`
pub(super) async fn google(ctx: Ctx, input: GoogleSignInInput) -> Result<AuthSession, RpcError> {
    let verifier = ctx.state.auth.google.as_ref();
    sign_in_with_id_token(&ctx, verifier, &input.id_token, None).await
}

/// `auth.apple`
pub(super) async fn apple(ctx: Ctx, input: AppleSignInInput) -> Result<AuthSession, RpcError> {
    let verifier = ctx.state.auth.apple.as_ref();
    sign_in_with_id_token(&ctx, verifier, &input.id_token, input.name).await
}

async fn sign_in_with_id_token(
    ctx: &Ctx,
    verifier: Option<&IdTokenVerifier>,
    id_token: &str,
    name_from_app: Option<String>,
) -> Result<AuthSession, RpcError> {
    limit_ip(&ctx.state, &ctx.request, "login").await?;
    let verifier = verifier.ok_or_else(|| {
        RpcError::new(
            ErrorCode::PreconditionFailed,
            "This sign-in method is not enabled on this server.",
        )
        .with_reason(Reason::ProviderNotConfigured)
    })?;
    let provider = verifier.provider();
    let claims = verifier
        .verify(id_token)
        .await
        .map_err(|error| match error {
            IdTokenError::Invalid(detail) => {
                tracing::info!(provider = provider.as_str(), %detail, "ID token rejected");
                unauthorized(
                    Reason::InvalidToken,
                    "The sign-in could not be verified. Please try again.",
                )
            }
            IdTokenError::KeysUnavailable => RpcError::new(
                ErrorCode::ServiceUnavailable,
                format!(
                    "{} could not be reached to verify the sign-in. Please try again.",
                    provider.display_name()
                ),
            ),
        })?;
    let user =
        find_or_create_identity_user(ctx, provider, &claims, name_from_app.as_deref()).await?;
    audit::record(
        &ctx.state.db,
        &ctx.request,
        Some(user.id),
        AuditAction::SignIn,
        json!({ "method": provider.as_str() }),
    )
    .await;
    begin_session(ctx, user).await
}

/// The account an ID token signs in to: the one linked to it; else the one with its email,
/// linked now if the provider verified that email (an account whose own address was never
/// verified is reclaimed first: see `reclaim`); else a new one. Two first sign-ins with
/// one token race: both find nothing and both create, the loser's insert hits a unique index
/// (the email, or the provider's subject) and, on a second look, finds the winner's account.
async fn find_or_create_identity_user(
    ctx: &Ctx,
    provider: Provider,
    claims: &IdClaims,
    name_from_app: Option<&str>,
) -> Result<users::Model, RpcError> {
    if let Some(user) = link_or_create(ctx, provider, claims, name_from_app).await? {
        return Ok(user);
    }
    link_or_create(ctx, provider, claims, name_from_app)
        .await?
        .ok_or_else(|| {
            tracing::error!(
                provider = provider.as_str(),
                "an identity sign-in lost a race twice"
            );
            RpcError::internal()
        })
}

/// One pass of [`find_or_create_identity_user`]; `None` when a concurrent sign-in created
/// the account or link first (nothing was written).
async fn link_or_create(
    ctx: &Ctx,
    provider: Provider,
    claims: &IdClaims,
    name_from_app: Option<&str>,
) -> Result<Option<users::Model>, RpcError> {
    let db = &ctx.state.db;
    let linked = user_identities::Entity::find()
        .filter(user_identities::Column::Provider.eq(provider.as_str()))
        .filter(user_identities::Column::Subject.eq(&claims.sub))
        .find_also_related(users::Entity)
        .one(db)
        .await
        .map_err(internal("look up a sign-in identity"))?;
    if let Some((_, Some(user))) = linked {
        return Ok(Some(user));
    }
    let email = claims
        .email
        .as_deref()
        .and_then(|email| Email::parse(email).ok())
        .ok_or_else(|| RpcError::bad_request("The sign-in did not include an email address."))?;
    let existing = find_by_email(db, &email).await?;
    let transaction = crate::db::begin_write(db)
        .await
        .map_err(internal("begin a transaction"))?;
    let user = match existing {
        Some(_) if !claims.email_verified => {
            return Err(RpcError::new(
                ErrorCode::Conflict,
                "An account with this email exists, but the provider has not verified the email. Sign in with your password.",
            )
            .with_reason(Reason::EmailNotVerified));
        }
        Some(user) if user.email_verified_at.is_some() => user,
        // Nobody ever proved this address for the account (it may be a squatter's, made to
        // catch the owner signing in later); the provider just proved it for this caller.
        Some(user) => reclaim(ctx, &transaction, user, provider).await?,
        None => {
            let name = name_from_app
                .or(claims.name.as_deref())
                .and_then(|name| DisplayName::parse(name).ok())
                .map_or_else(
                    || {
                        email
                            .as_str()
                            .split('@')
                            .next()
                            .unwrap_or_default()
                            .to_owned()
                    },
                    DisplayName::into_string,
                );
            let now = Utc::now();
            let inserted = users::ActiveModel {
                id: Set(Uuid::now_v7()),
                email: Set(email.into_string()),
                name: Set(name),
                avatar_url: Set(claims
                    .picture
                    .clone()
                    .filter(|url| parse_avatar_url(url).is_ok())),
                avatar_file_id: Set(None),
                password_hash: Set(None),
                // The provider vouches for the address, or not.
                email_verified_at: Set(claims.email_verified.then_some(now)),
                tier: Set(crate::users::Tier::default().as_str().to_owned()),
                created_at: Set(now),
                updated_at: Set(now),
            }
            .insert(&transaction)
            .await;
            let Some(user) = unless_raced(inserted, "create a user")? else {
                return Ok(None);
            };
            audit::record(
                &transaction,
                &ctx.request,
                Some(user.id),
                AuditAction::SignUp,
                json!({ "method": provider.as_str() }),
            )
            .await;
            user
        }
    };
    let link = user_identities::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user.id),
        provider: Set(provider.as_str().to_owned()),
        subject: Set(claims.sub.clone()),
        created_at: Set(Utc::now()),
    }
    .insert(&transaction)
    .await;
    if unless_raced(link, "link a sign-in identity")?.is_none() {
        return Ok(None);
    }
    transaction
        .commit()
        .await
        .map_err(internal("commit a sign-in"))?;
    // Its sessions now have one more way to sign in (`authProviders`).
    ctx.state.auth.session_cache.forget_user(user.id);
    Ok(Some(user))
}

/// Hands an unverified account to whoever just proved its address: everything that let
/// anyone else in (its password, its sessions, other sign-in identities) stops working.
async fn reclaim(
    ctx: &Ctx,
    transaction: &DatabaseTransaction,
    user: users::Model,
    provider: Provider,
) -> Result<users::Model, RpcError> {
    let now = Utc::now();
    user_identities::Entity::delete_many()
        .filter(user_identities::Column::UserId.eq(user.id))
        .exec(transaction)
        .await
        .map_err(internal("remove sign-in identities"))?;
    sessions::revoke_all(transaction, user.id)
        .await
        .map_err(internal("sign out every session"))?;
    let mut account = user.into_active_model();
    account.password_hash = Set(None);
    account.email_verified_at = Set(Some(now));
    account.updated_at = Set(now);
    let user = account
        .update(transaction)
        .await
        .map_err(internal("reclaim an account"))?;
    audit::record(
        transaction,
        &ctx.request,
        Some(user.id),
        AuditAction::AccountReclaimed,
        json!({ "method": provider.as_str() }),
    )
    .await;
    Ok(user)
}

/// `None` for a unique-index violation: a concurrent call wrote the same row first (the
/// transaction is then rolled back when dropped).
fn unless_raced<T>(result: Result<T, DbErr>, doing: &'static str) -> Result<Option<T>, RpcError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            Ok(None)
        }
        Err(error) => Err(internal(doing)(error)),
    }
}
