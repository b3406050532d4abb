//! `users.*`: the signed-in user's account.

mod email;
pub mod email_tokens;
mod fields;
pub mod mails;
mod password;
mod prune;
mod tier;

use chrono::Utc;
use entity::users;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    IntoActiveModel, QueryFilter, Set,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use email::{email_taken, invalid_code, send_verification};
pub use fields::{DisplayName, Email, parse_avatar_url};
pub use password::{check_password, limit_ip, too_many_attempts};
pub use prune::{Pruned, prune, run_periodically as prune_periodically};
pub use tier::{SetTierError, Tier, set_tier};

use email::change_email;
use password::require_password;

use crate::audit::{self, AuditAction};
use crate::context::{App, Ctx};
use crate::files;
use crate::guard::{SignedIn, signed_in_unverified};
use crate::rpc::Timestamp;
use crate::rpc::{FieldErrors, Router, RpcError, internal, present};
use crate::security::{AuthProvider, auth_providers};

pub fn router() -> Router<App> {
    Router::new()
        .query("me", signed_in_unverified(me))
        .mutation("update", signed_in_unverified(update))
        .mutation("delete", signed_in_unverified(delete))
        .mutation("changeEmail", signed_in_unverified(change_email))
}

#[derive(Debug, Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub avatar_url: Option<String>,
    /// Whether the account proved it receives mail at `email` (a mailed link or code, a
    /// password reset, or Google/Apple vouching for it).
    pub email_verified: bool,
    /// The server's `ALIAS_REQUIRE_VERIFIED_EMAIL`: when true and `emailVerified` is false,
    /// every signed-in procedure but `users.me`, `update`, `changeEmail`, `delete` and
    /// `auth.*` answers FORBIDDEN `email_not_verified`; the app asks the user to verify.
    pub email_verification_required: bool,
    /// How this account can sign in.
    pub auth_providers: Vec<AuthProvider>,
    /// The subscription plan, which sets the daily quotas (`usage.summary`).
    pub tier: Tier,
    pub created_at: Timestamp,
}

impl User {
    /// The client's view of an account; `ctx` signs the avatar's link.
    pub fn new(ctx: &Ctx, user: users::Model, auth_providers: Vec<AuthProvider>) -> Self {
        let tier = Tier::of(&user);
        let avatar_url = match user.avatar_file_id {
            Some(file_id) => Some(files::avatar_url(ctx, user.id, file_id)),
            None => user.avatar_url,
        };
        Self {
            id: user.id,
            email: user.email,
            name: user.name,
            avatar_url,
            email_verified: user.email_verified_at.is_some(),
            email_verification_required: ctx.state.config.mail.require_verified_email,
            auth_providers,
            tier,
            created_at: user.created_at.into(),
        }
    }
}

/// The client's view of an account (one query for its sign-in identities, through `db`: the
/// caller's transaction or the pool).
pub async fn view(
    ctx: &Ctx,
    db: &impl ConnectionTrait,
    user: users::Model,
) -> Result<User, RpcError> {
    let providers = auth_providers(db, &user)
        .await
        .map_err(internal("load sign-in identities"))?;
    Ok(User::new(ctx, user, providers))
}

/// The account with this address, if any.
pub async fn find_by_email(
    db: &DatabaseConnection,
    email: &Email,
) -> Result<Option<users::Model>, RpcError> {
    users::Entity::find()
        .filter(users::Column::Email.eq(email.as_str()))
        .one(db)
        .await
        .map_err(internal("look up a user by email"))
}

/// `users.me`
async fn me(ctx: Ctx, caller: SignedIn, _: ()) -> Result<User, RpcError> {
    Ok(User::new(&ctx, caller.user, caller.auth_providers))
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateUserInput {
    #[serde(default)]
    name: Option<String>,
    /// A ready file uploaded with purpose `avatar` becomes the picture (the previous one is
    /// deleted); `null` removes the picture, leaving it out keeps it.
    #[serde(default, deserialize_with = "present")]
    #[specta(type = Option<Uuid>, optional)]
    avatar_file_id: Option<Option<Uuid>>,
}

/// `users.update`
async fn update(ctx: Ctx, caller: SignedIn, input: UpdateUserInput) -> Result<User, RpcError> {
    let mut errors = FieldErrors::default();
    let name = input
        .name
        .map(|name| errors.check("name", DisplayName::parse(&name)));
    if !errors.is_empty() {
        return Err(errors.into_error());
    }
    let user_id = caller.user.id;
    if let Some(Some(file_id)) = input.avatar_file_id {
        files::find_avatar(&ctx, user_id, file_id).await?;
    }
    let previous_avatar = caller.user.avatar_file_id;
    let mut user = caller.user.into_active_model();
    if let Some(Some(name)) = name {
        user.name = Set(name.into_string());
    }
    if let Some(avatar_file_id) = input.avatar_file_id {
        user.avatar_file_id = Set(avatar_file_id);
        user.avatar_url = Set(None);
    }
    user.updated_at = Set(Utc::now());
    let user = user
        .update(&ctx.state.db)
        .await
        .map_err(internal("update a user"))?;
    ctx.state.auth.session_cache.forget_user(user.id).await;
    if let Some(previous) = previous_avatar
        && input.avatar_file_id.is_some()
        && user.avatar_file_id != Some(previous)
    {
        files::remove_avatar(&ctx, user_id, previous).await?;
    }
    Ok(User::new(&ctx, user, caller.auth_providers))
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteUserInput {
    /// Required for accounts that have a password.
    #[serde(default)]
    password: Option<String>,
}

/// `users.delete`: the account and everything it owns (sessions, identities, audit rows)
/// go in one cascade. The password is checked like a sign-in (shared attempts, audited).
async fn delete(ctx: Ctx, caller: SignedIn, input: DeleteUserInput) -> Result<(), RpcError> {
    let user = caller.user;
    if let Some(hash) = user.password_hash.clone() {
        let password = input.password.ok_or_else(|| {
            let mut errors = FieldErrors::default();
            errors.check::<()>(
                "password",
                Err("enter your password to delete the account".to_owned()),
            );
            errors.into_error()
        })?;
        require_password(&ctx, &user, password, hash, "users.delete").await?;
    }
    // Its running chat replies stop first: none may call a provider with its key again.
    ctx.state.streams.revoke_owner(user.id);
    users::Entity::delete_by_id(user.id)
        .exec(&ctx.state.db)
        .await
        .map_err(internal("delete a user"))?;
    ctx.state.auth.session_cache.forget_user(user.id).await;
    // The account's own audit rows are gone; this one outlives it, keyed by the old id.
    let metadata = serde_json::json!({ "userId": user.id });
    audit::record(
        &ctx.state.db,
        &ctx.request,
        None,
        AuditAction::AccountDeleted,
        metadata,
    )
    .await;
    Ok(())
}
