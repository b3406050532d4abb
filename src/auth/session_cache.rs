//! Sessions remembered between signed-in calls, so the common call (an app reusing its
//! access token) reads nothing from the database; see `ALIAS_SESSION_CACHE_SECONDS`.
//!
//! Revocation stays immediate on this instance: every change to a session or a user goes
//! through `forget_session` / `forget_user` after it commits (`sessions::revoke_family`,
//! `users.update`, `users.delete`, linking a sign-in identity). Another instance keeps
//! trusting what it read for at most the TTL.

use std::time::{Duration, Instant};

use entity::{auth_sessions, users};
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use super::sessions;
use crate::cache::Cache;
use crate::users::{self as accounts, AuthProvider};

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
        let Some((session, user)) = sessions::find_with_user(db, session_id).await? else {
            return Ok(None);
        };
        let auth_providers = accounts::auth_providers(db, &user).await?;
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
