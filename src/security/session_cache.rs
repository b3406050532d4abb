//! Sessions remembered between signed-in calls, so the common call (an app reusing its
//! access token) reads nothing from the database; see `ALIAS_SESSION_CACHE_SECONDS`.
//!
//! Revocation stays immediate on this instance: every change to a session or a user goes
//! through `forget_session` / `forget_user` after it commits (`auth::sessions::revoke_family`,
//! `users.update`, `users.delete`, linking a sign-in identity). Another instance keeps
//! trusting what it read for at most the TTL.

use std::time::{Duration, Instant};

use entity::{auth_sessions, user_identities, users};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde::Serialize;
use uuid::Uuid;

use crate::cache::Cache;

/// A way to sign in to an account (part of the `User` the app sees).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, specta::Type)]
#[serde(rename_all = "lowercase")]
pub enum AuthProvider {
    Password,
    Google,
    Apple,
}

impl AuthProvider {
    fn from_identity(provider: &str) -> Option<Self> {
        match provider {
            "google" => Some(Self::Google),
            "apple" => Some(Self::Apple),
            _ => None,
        }
    }
}

/// How `user` can sign in: a password, and each linked identity provider.
pub async fn auth_providers(
    db: &impl ConnectionTrait,
    user: &users::Model,
) -> Result<Vec<AuthProvider>, sea_orm::DbErr> {
    let identities = user_identities::Entity::find()
        .filter(user_identities::Column::UserId.eq(user.id))
        .all(db)
        .await?;
    let mut providers: Vec<AuthProvider> = user
        .password_hash
        .is_some()
        .then_some(AuthProvider::Password)
        .into_iter()
        .chain(
            identities
                .iter()
                .filter_map(|identity| AuthProvider::from_identity(&identity.provider)),
        )
        .collect();
    providers.dedup();
    Ok(providers)
}

/// The session behind an access token, with its user, for the per-call check.
async fn find_with_user(
    db: &DatabaseConnection,
    session_id: Uuid,
) -> Result<Option<(auth_sessions::Model, users::Model)>, sea_orm::DbErr> {
    let found = auth_sessions::Entity::find_by_id(session_id)
        .find_also_related(users::Entity)
        .one(db)
        .await?;
    Ok(found.and_then(|(session, user)| Some((session, user?))))
}

/// Sessions remembered at most (~500 bytes each).
const CAPACITY: usize = 50_000;

/// A session as the database had it, with its user and how they can sign in.
#[derive(Clone)]
pub struct KnownSession {
    pub session: auth_sessions::Model,
    pub user: users::Model,
    pub auth_providers: Vec<AuthProvider>,
}

pub struct SessionCache {
    ttl: Duration,
    entries: Cache<Uuid, KnownSession>,
}

impl SessionCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Cache::new(CAPACITY),
        }
    }

    /// The session with its user, from memory or else the database; `None` if either is
    /// gone. Revoked and expired sessions are returned too: the caller decides.
    pub async fn find(
        &self,
        db: &DatabaseConnection,
        session_id: Uuid,
    ) -> Result<Option<KnownSession>, sea_orm::DbErr> {
        if let Some(known) = self.entries.get(&session_id) {
            return Ok(Some(known));
        }
        let read_at = self.entries.generation();
        let Some((session, user)) = find_with_user(db, session_id).await? else {
            return Ok(None);
        };
        let auth_providers = auth_providers(db, &user).await?;
        let known = KnownSession {
            session,
            user,
            auth_providers,
        };
        let expires_at = Instant::now() + self.ttl;
        self.entries
            .insert(session_id, known.clone(), expires_at, read_at);
        Ok(Some(known))
    }

    /// Call after a session's row changed (revoked).
    pub fn forget_session(&self, session_id: Uuid) {
        self.entries.invalidate(|id, _| *id == session_id);
    }

    /// Call after a user's row or sign-in identities changed, or the user was deleted.
    pub fn forget_user(&self, user_id: Uuid) {
        self.entries.invalidate(|_, known| known.user.id == user_id);
    }
}
