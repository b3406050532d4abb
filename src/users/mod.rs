//! `users.*`: the signed-in user's account.

mod fields;

use chrono::Utc;
use entity::users;
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, IntoActiveModel, Set};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

pub use fields::{DisplayName, Email, parse_avatar_url};

use crate::audit::{self, AuditAction};
use crate::context::{App, Ctx};
use crate::guard::{SignedIn, signed_in};
use crate::reason::Reason;
use crate::rpc::Timestamp;
use crate::rpc::{ErrorCode, FieldErrors, Router, RpcError, internal};
use crate::security::{AuthProvider, auth_providers};

pub fn router() -> Router<App> {
    Router::new()
        .query("me", signed_in(me))
        .mutation("update", signed_in(update))
        .mutation("delete", signed_in(delete))
}

#[derive(Debug, Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub avatar_url: Option<String>,
    /// How this account can sign in.
    pub auth_providers: Vec<AuthProvider>,
    pub created_at: Timestamp,
}

impl User {
    pub fn new(user: users::Model, auth_providers: Vec<AuthProvider>) -> Self {
        Self {
            id: user.id,
            email: user.email,
            name: user.name,
            avatar_url: user.avatar_url,
            auth_providers,
            created_at: user.created_at.into(),
        }
    }
}

/// The client's view of an account (one query for its sign-in identities).
pub async fn view(db: &impl ConnectionTrait, user: users::Model) -> Result<User, RpcError> {
    let providers = auth_providers(db, &user)
        .await
        .map_err(internal("load sign-in identities"))?;
    Ok(User::new(user, providers))
}

/// `users.me`
async fn me(_: Ctx, caller: SignedIn, _: ()) -> Result<User, RpcError> {
    Ok(User::new(caller.user, caller.auth_providers))
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateUserInput {
    #[serde(default)]
    name: Option<String>,
    /// An https URL; `null` removes the avatar, leaving it out keeps it.
    #[serde(default, deserialize_with = "present")]
    #[specta(type = Option<String>, optional)]
    avatar_url: Option<Option<String>>,
}

/// Tells "absent" (`None`, via `default`) from "null" (`Some(None)`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `users.update`
async fn update(ctx: Ctx, caller: SignedIn, input: UpdateUserInput) -> Result<User, RpcError> {
    let mut errors = FieldErrors::default();
    let name = input
        .name
        .map(|name| errors.check("name", DisplayName::parse(&name)));
    let avatar_url = input
        .avatar_url
        .map(|url| url.map(|url| errors.check("avatarUrl", parse_avatar_url(&url))));
    if !errors.is_empty() {
        return Err(errors.into_error());
    }
    let mut user = caller.user.into_active_model();
    if let Some(Some(name)) = name {
        user.name = Set(name.into_string());
    }
    if let Some(avatar_url) = avatar_url {
        user.avatar_url = Set(avatar_url.flatten());
    }
    user.updated_at = Set(Utc::now());
    let user = user
        .update(&ctx.state.db)
        .await
        .map_err(internal("update a user"))?;
    ctx.state.auth.session_cache.forget_user(user.id);
    Ok(User::new(user, caller.auth_providers))
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteUserInput {
    /// Required for accounts that have a password.
    #[serde(default)]
    password: Option<String>,
}

/// `users.delete`: the account and everything it owns (sessions, identities, audit rows)
/// go in one cascade.
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
        let matches = ctx
            .state
            .auth
            .passwords
            .verify(password, Some(hash))
            .await
            .map_err(internal("verify a password"))?;
        if !matches {
            return Err(
                RpcError::new(ErrorCode::Unauthorized, "The password is not correct.")
                    .with_reason(Reason::InvalidCredentials),
            );
        }
    }
    // Its running chat replies stop first: none may call a provider with its key again.
    ctx.state.streams.revoke_owner(user.id);
    users::Entity::delete_by_id(user.id)
        .exec(&ctx.state.db)
        .await
        .map_err(internal("delete a user"))?;
    ctx.state.auth.session_cache.forget_user(user.id);
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
