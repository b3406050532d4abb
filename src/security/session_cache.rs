//! Sessions remembered between signed-in calls, so the common call (an app reusing its
//! access token) reads nothing from the database; see `ALIAS_SESSION_CACHE_SECONDS`.
//!
//! Revocation stays immediate on this instance: every change to a session or a user goes
//! through `forget_session` / `forget_user` after it commits (`auth::sessions::revoke_family`,
//! `users.update`, `users.delete`, linking a sign-in identity). Without Redis another instance
//! keeps trusting what it read for at most the TTL.
//!
//! With Redis it is immediate everywhere. Before the call answers, the instance renews the
//! user's revocation mark in Redis (a fresh random value), then publishes the eviction. Every
//! signed-in call reads its user's mark in the same round trip that counts it against the
//! user's budget, and an entry is used only if it was remembered under that same mark: any
//! call that arrives after the revoking call answered sees the new mark and reads the
//! database, on whichever instance, with no wait for pub/sub (which delivers a few ms later).
//! The published eviction frees the entries at once, and is the fallback should Redis lose
//! the marks (a restart without persistence): an instance trusts its cache only while it is
//! subscribed, and clears it whenever it subscribes again, as messages may have been missed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use entity::{auth_sessions, user_identities, users};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::cache::Cache;
use crate::cluster::{Channel, Delivery, Redis, Unavailable};

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

/// How much longer than a cache entry a revocation mark lives: an entry stored just after
/// the mark was renewed (its lookup began before) must see the mark until the entry expires.
const MARK_OUTLIVES_ENTRIES: Duration = Duration::from_secs(60);

/// A session as the database had it, with its user and how they can sign in.
#[derive(Clone)]
pub struct KnownSession {
    pub session: auth_sessions::Model,
    pub user: users::Model,
    pub auth_providers: Vec<AuthProvider>,
}

/// What a signed-in call learned of its user's revocations before its session is looked up
/// (read with the call's budget, in the same round trip: `guard::authenticate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocations {
    /// The user's revocation mark in Redis (see the module comment); `None` when there is
    /// none, as always without Redis.
    Seen(Option<String>),
    /// Redis could not be asked: whether a remembered session is current cannot be told.
    Unknown,
}

#[derive(Clone)]
struct Entry {
    known: KnownSession,
    /// The user's mark when the session was read: any other mark means it may be stale.
    mark: Option<String>,
}

pub struct SessionCache {
    ttl: Duration,
    entries: Arc<Cache<Uuid, Entry>>,
    /// Evictions heard from and told to the other instances, with Redis.
    shared: Option<Shared>,
}

/// The pub/sub channel (under the key prefix) evictions travel on.
const EVICTIONS: &str = "session-cache";

impl SessionCache {
    /// With `redis`, evictions are shared by every instance (see the module comment);
    /// `shutdown` ends the subscription.
    pub fn new(ttl: Duration, redis: Option<&Redis>, shutdown: &CancellationToken) -> Self {
        let entries = Arc::new(Cache::new(CAPACITY));
        let shared = redis.map(|redis| {
            let heard = Arc::clone(&entries);
            let evictions =
                Channel::subscribe(redis, EVICTIONS, shutdown.clone(), move |delivery| {
                    match delivery {
                        Delivery::Subscribed => heard.invalidate(|_, _| true),
                        Delivery::Message(message) => match Eviction::parse(message) {
                            Some(eviction) => eviction.apply(&heard),
                            None => tracing::warn!(message, "ignored an unknown cache eviction"),
                        },
                    }
                });
            Shared {
                redis: redis.clone(),
                evictions,
                mark_ttl: ttl + MARK_OUTLIVES_ENTRIES,
            }
        });
        Self {
            ttl,
            entries,
            shared,
        }
    }

    /// The key (under the prefix) of `user_id`'s revocation mark, for
    /// `RateLimitStore::hit_and_read` to read into [`Revocations::Seen`].
    pub fn revocation_key(user_id: Uuid) -> String {
        format!("revocations:{user_id}")
    }

    /// Whether this instance hears the other instances' evictions now (Redis configured and
    /// subscribed).
    pub fn hears_other_instances(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|shared| shared.evictions.is_live())
    }

    /// Whether remembered sessions may be used: always alone; with Redis, only while this
    /// instance hears every eviction.
    fn trusted(&self) -> bool {
        self.shared
            .as_ref()
            .is_none_or(|shared| shared.evictions.is_live())
    }

    /// The session with its user, from memory (if remembered under the mark `revocations`
    /// saw) or else the database; `None` if either is gone. Revoked and expired sessions are
    /// returned too: the caller decides.
    pub async fn find(
        &self,
        db: &DatabaseConnection,
        session_id: Uuid,
        revocations: Revocations,
    ) -> Result<Option<KnownSession>, sea_orm::DbErr> {
        let mark = match revocations {
            Revocations::Seen(mark) if self.trusted() => Some(mark),
            Revocations::Seen(_) | Revocations::Unknown => None,
        };
        if let Some(mark) = &mark
            && let Some(entry) = self.entries.get(&session_id)
            && entry.mark == *mark
        {
            return Ok(Some(entry.known));
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
        if let Some(mark) = mark {
            let expires_at = Instant::now() + self.ttl;
            let entry = Entry {
                known: known.clone(),
                mark,
            };
            self.entries.insert(session_id, entry, expires_at, read_at);
        }
        Ok(Some(known))
    }

    /// Call after a session's row changed (revoked).
    pub async fn forget_session(&self, user_id: Uuid, session_id: Uuid) {
        self.forget(user_id, Eviction::Session(session_id)).await;
    }

    /// Call after a user's row or sign-in identities changed, or the user was deleted.
    pub async fn forget_user(&self, user_id: Uuid) {
        self.forget(user_id, Eviction::User(user_id)).await;
    }

    /// Forgets here at once, then tells the other instances. The change is committed, so the
    /// call succeeds even when Redis cannot take the news: it is retried in the background
    /// for as long as another instance may hold the entry (the TTL).
    async fn forget(&self, user_id: Uuid, eviction: Eviction) {
        eviction.apply(&self.entries);
        let Some(shared) = &self.shared else {
            return;
        };
        if shared.tell(user_id, eviction).await.is_ok() {
            return;
        }
        tracing::warn!(%eviction, "could not tell the other instances to forget a session; retrying");
        let (shared, ttl) = (shared.clone(), self.ttl);
        tokio::spawn(async move {
            let give_up = Instant::now() + ttl;
            while Instant::now() < give_up {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if shared.tell(user_id, eviction).await.is_ok() {
                    return;
                }
            }
        });
    }
}

/// How evictions reach the other instances, with Redis.
#[derive(Clone)]
struct Shared {
    redis: Redis,
    evictions: Channel,
    mark_ttl: Duration,
}

impl Shared {
    /// Renews the user's revocation mark, so the next call any instance counts sees it
    /// changed, then publishes the eviction, so every instance frees the entries at once.
    async fn tell(&self, user_id: Uuid, eviction: Eviction) -> Result<(), Unavailable> {
        let key = SessionCache::revocation_key(user_id);
        self.redis.renew_mark(&key, self.mark_ttl).await?;
        self.evictions.publish(&eviction.to_string()).await
    }
}

/// What a cache eviction message says: `session:<id>` or `user:<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eviction {
    Session(Uuid),
    User(Uuid),
}

impl Eviction {
    fn parse(message: &str) -> Option<Self> {
        let (kind, id) = message.split_once(':')?;
        let id = Uuid::parse_str(id).ok()?;
        match kind {
            "session" => Some(Self::Session(id)),
            "user" => Some(Self::User(id)),
            _ => None,
        }
    }

    fn apply(self, entries: &Cache<Uuid, Entry>) {
        match self {
            Self::Session(session_id) => entries.invalidate(|id, _| *id == session_id),
            Self::User(user_id) => entries.invalidate(|_, entry| entry.known.user.id == user_id),
        }
    }
}

impl std::fmt::Display for Eviction {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Session(id) => write!(formatter, "session:{id}"),
            Self::User(id) => write!(formatter, "user:{id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evictions_survive_the_wire() {
        let id = Uuid::now_v7();
        for eviction in [Eviction::Session(id), Eviction::User(id)] {
            assert_eq!(Eviction::parse(&eviction.to_string()), Some(eviction));
        }
        assert_eq!(Eviction::parse("team:1"), None);
        assert_eq!(Eviction::parse("user:not-an-id"), None);
    }
}
