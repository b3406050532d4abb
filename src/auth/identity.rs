//! `auth.google` and `auth.apple`: signing in with an ID token from Google or Apple.

use chrono::Utc;
use entity::{user_identities, users};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, Set,
    SqlErr,
};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{AuthSession, begin_session, limit_ip, unauthorized};
use crate::audit::{self, AuditAction};
use crate::context::Ctx;
use crate::reason::Reason;
use crate::rpc::{ErrorCode, RpcError, internal};
use crate::security::{IdClaims, IdTokenError, IdTokenVerifier, Provider};
use crate::users::{DisplayName, Email, parse_avatar_url};

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
    let result = sign_in_with_id_token(&ctx, verifier, &input.id_token, None).await;
    super::count_sign_in("google", &result);
    result
}

/// `auth.apple`
pub(super) async fn apple(ctx: Ctx, input: AppleSignInInput) -> Result<AuthSession, RpcError> {
    let verifier = ctx.state.auth.apple.as_ref();
    let result = sign_in_with_id_token(&ctx, verifier, &input.id_token, input.name).await;
    super::count_sign_in("apple", &result);
    result
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
/// verified is replaced by a clean one first: see `reclaim`); else a new one. Concurrent first
/// sign-ins race inside their write transactions: the loser's write hits a unique index (the
/// email, or the provider's subject) or finds the squatted row already gone, and on a second
/// look finds the winner's account.
async fn find_or_create_identity_user(
    ctx: &Ctx,
    provider: Provider,
    claims: &IdClaims,
    name_from_app: Option<&str>,
) -> Result<users::Model, RpcError> {
    for _ in 0..3 {
        if let Some(user) = link_or_create(ctx, provider, claims, name_from_app).await? {
            return Ok(user);
        }
    }
    tracing::error!(
        provider = provider.as_str(),
        "an identity sign-in lost a race three times"
    );
    Err(RpcError::internal())
}

/// One pass of [`find_or_create_identity_user`]; `None` when a concurrent sign-in created,
/// reclaimed or linked the account first (nothing was written).
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
    let transaction = crate::db::begin_write(db)
        .await
        .map_err(internal("begin a transaction"))?;
    // Read inside the writing transaction: what it decides (link, reclaim, create) is checked
    // again by its writes, so two sign-ins never both act on the same squatted account.
    let existing = users::Entity::find()
        .filter(users::Column::Email.eq(email.as_str()))
        .one(&transaction)
        .await
        .map_err(internal("look up a user by email"))?;
    let mut replaced = None;
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
        Some(squatted) => {
            let Some(user) = reclaim(
                ctx,
                &transaction,
                &squatted,
                provider,
                claims,
                &email,
                name_from_app,
            )
            .await?
            else {
                return Ok(None);
            };
            replaced = Some(squatted.id);
            user
        }
        None => {
            let Some(user) = create_user(&transaction, claims, &email, name_from_app).await? else {
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
    if let Some(squatter) = replaced {
        // Its running chat replies stop; its sessions are gone with it.
        ctx.state.streams.revoke_owner(squatter);
        ctx.state.auth.session_cache.forget_user(squatter).await;
    }
    // Its sessions now have one more way to sign in (`authProviders`).
    ctx.state.auth.session_cache.forget_user(user.id).await;
    Ok(Some(user))
}

/// A new account for the ID token's address (`None`: a concurrent sign-in created it).
async fn create_user(
    transaction: &DatabaseTransaction,
    claims: &IdClaims,
    email: &Email,
    name_from_app: Option<&str>,
) -> Result<Option<users::Model>, RpcError> {
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
        email: Set(email.as_str().to_owned()),
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
    .insert(transaction)
    .await;
    unless_raced(inserted, "create a user")
}

/// Gives whoever just proved the address of an account that never proved it a clean account:
/// the squatted one is deleted with everything it owns (sessions, sign-ins, API keys, chats,
/// files, integrations; files' bytes go with the next sweep) and a fresh one is made, audited
/// `account_reclaimed`. `None` when a concurrent call reclaimed or verified it first (the
/// delete, conditional on the account still being unverified, then removes nothing).
async fn reclaim(
    ctx: &Ctx,
    transaction: &DatabaseTransaction,
    squatted: &users::Model,
    provider: Provider,
    claims: &IdClaims,
    email: &Email,
    name_from_app: Option<&str>,
) -> Result<Option<users::Model>, RpcError> {
    let deleted = users::Entity::delete_many()
        .filter(users::Column::Id.eq(squatted.id))
        .filter(users::Column::EmailVerifiedAt.is_null())
        .exec(transaction)
        .await
        .map_err(internal("remove a squatted account"))?;
    if deleted.rows_affected != 1 {
        return Ok(None);
    }
    let Some(user) = create_user(transaction, claims, email, name_from_app).await? else {
        return Ok(None);
    };
    audit::record(
        transaction,
        &ctx.request,
        Some(user.id),
        AuditAction::AccountReclaimed,
        json!({ "method": provider.as_str(), "replacedUserId": squatted.id }),
    )
    .await;
    Ok(Some(user))
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
