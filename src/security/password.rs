//! Password hashing with argon2id (OWASP parameters), off the async runtime and bounded so a
//! flood of sign-ins cannot take every core from other requests, nor one account (or one
//! client registering) more than one core at a time. Every check of a stored password first
//! reserves one of the account's attempts (`password_attempts`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier as _, Version,
};
use sea_orm::DatabaseConnection;
use tokio::sync::{OwnedMutexGuard, Semaphore};

use super::password_attempts::{AttemptBudget, Reservation};
use crate::rate_limit::RetryAfter;

/// OWASP's argon2id recommendation: 19 MiB, 2 iterations, 1 lane.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Why a password could not be checked.
#[derive(Debug)]
pub enum CheckError {
    /// The account used up its attempts: try again after this.
    Locked(RetryAfter),
    Database(sea_orm::DbErr),
    Hashing(anyhow::Error),
}

impl From<sea_orm::DbErr> for CheckError {
    fn from(error: sea_orm::DbErr) -> Self {
        Self::Database(error)
    }
}

pub struct Passwords {
    permits: Arc<Semaphore>,
    /// One hash at a time per account (or per client for registrations): the rest of an
    /// account's calls queue here, without holding a core.
    per_owner: OwnerLocks,
    attempts: AttemptBudget,
    /// Verified against when the account does not exist, so an unknown email takes as long
    /// as a wrong password.
    dummy_hash: String,
    /// Stored passwords verified (hash computations of `check`) since start-up.
    verifications: AtomicU64,
}

impl Passwords {
    pub fn new(attempts: AttemptBudget) -> anyhow::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(Self {
            permits: Arc::new(Semaphore::new(cores.saturating_sub(1).max(1))),
            per_owner: OwnerLocks::default(),
            attempts,
            dummy_hash: hash_now("not a real password: equalizes timing")?,
            verifications: AtomicU64::new(0),
        })
    }

    /// Hashes a new password; `owner` (the account's email, or the registering client) gets
    /// one hashing core at a time.
    pub async fn hash(&self, owner: &str, password: String) -> anyhow::Result<String> {
        self.run(owner, move || hash_now(&password)).await?
    }

    /// Whether `password` is `account`'s (`stored`: its hash; `None`: no such account or no
    /// password, which still costs a hash and an attempt, so neither is revealed). Refused
    /// without hashing once the account's attempts are used up, right password or not.
    pub async fn check(
        &self,
        db: &DatabaseConnection,
        account: &str,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, CheckError> {
        if let Reservation::Locked(retry) = self.attempts.reserve(db, account).await? {
            return Err(CheckError::Locked(retry));
        }
        self.verify(account, password, stored)
            .await
            .map_err(CheckError::Hashing)
    }

    /// Ends `account`'s lock (after a password reset).
    pub async fn clear_attempts(
        &self,
        db: &impl sea_orm::ConnectionTrait,
        account: &str,
    ) -> Result<(), sea_orm::DbErr> {
        self.attempts.clear(db, account).await
    }

    /// Deletes attempt windows that ended before `before`.
    pub async fn prune_attempts(
        &self,
        db: &DatabaseConnection,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, sea_orm::DbErr> {
        self.attempts.prune(db, before).await
    }

    /// Stored passwords verified since start-up (each one a hash computation): what the
    /// attempt budget bounds.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    async fn verify(
        &self,
        owner: &str,
        password: String,
        stored: Option<String>,
    ) -> anyhow::Result<bool> {
        let exists = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy_hash.clone());
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let matches = self
            .run(owner, move || verify_now(&password, &hash))
            .await?;
        Ok(exists && matches)
    }

    async fn run<T: Send + 'static>(
        &self,
        owner: &str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let _turn = self.per_owner.lock(owner).await;
        let _permit = self
            .permits
            .acquire()
            .await
            .context("password hashing is shut down")?;
        tokio::task::spawn_blocking(work)
            .await
            .context("password hashing task failed")
    }
}

/// A lock per owner, forgotten when nobody holds or waits for it.
#[derive(Default)]
struct OwnerLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl OwnerLocks {
    async fn lock(&self, owner: &str) -> OwnerTurn<'_> {
        let lock = Arc::clone(
            self.map()
                .entry(owner.to_owned())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(()))),
        );
        let guard = Arc::clone(&lock).lock_owned().await;
        OwnerTurn {
            locks: self,
            owner: owner.to_owned(),
            lock,
            guard: Some(guard),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        // A poisoned map only means a panic elsewhere mid-insert; the entries are still usable.
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct OwnerTurn<'a> {
    locks: &'a OwnerLocks,
    owner: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for OwnerTurn<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.locks.map();
        // Only the map and this turn hold it (clones are taken under the map's lock): no one
        // waits, so the entry can go.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.owner);
        }
    }
}

fn hash_now(password: &str) -> anyhow::Result<String> {
    argon2()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|error| anyhow::anyhow!("could not hash a password: {error}"))
}

fn verify_now(password: &str, hash: &str) -> bool {
    hash.parse::<PasswordHash>().is_ok_and(|parsed| {
        argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_only_the_right_password() {
        let passwords = Passwords::new(AttemptBudget {
            limit: 5,
            window: std::time::Duration::from_secs(60),
        })
        .expect("hasher");
        let hash = passwords
            .hash("ada@example.com", "correct horse".to_owned())
            .await
            .expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(
            passwords
                .verify(
                    "ada@example.com",
                    "correct horse".to_owned(),
                    Some(hash.clone())
                )
                .await
                .unwrap_or(false)
        );
        assert!(
            !passwords
                .verify("ada@example.com", "wrong horse".to_owned(), Some(hash))
                .await
                .unwrap_or(true)
        );
        assert!(
            !passwords
                .verify("ada@example.com", "anything".to_owned(), None)
                .await
                .unwrap_or(true)
        );
    }
}
