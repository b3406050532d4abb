//! Password hashing with argon2id (OWASP parameters), off the async runtime and bounded so a
//! flood of sign-ins cannot take every core from other requests.

use std::sync::Arc;

use anyhow::Context as _;
use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier as _, Version,
};
use tokio::sync::Semaphore;

/// OWASP's argon2id recommendation: 19 MiB, 2 iterations, 1 lane.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub struct Passwords {
    permits: Arc<Semaphore>,
    /// Verified against when the account does not exist, so an unknown email takes as long
    /// as a wrong password.
    dummy_hash: String,
}

impl Passwords {
    pub fn new() -> anyhow::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(Self {
            permits: Arc::new(Semaphore::new(cores.saturating_sub(1).max(1))),
            dummy_hash: hash_now("not a real password: equalizes timing")?,
        })
    }

    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        self.run(move || hash_now(&password)).await?
    }

    /// Whether `password` matches `stored` (`None`: no such account; still costs a hash).
    pub async fn verify(&self, password: String, stored: Option<String>) -> anyhow::Result<bool> {
        let exists = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy_hash.clone());
        let matches = self.run(move || verify_now(&password, &hash)).await?;
        Ok(exists && matches)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
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
        let passwords = Passwords::new().expect("hasher");
        let hash = passwords
            .hash("correct horse".to_owned())
            .await
            .expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(
            passwords
                .verify("correct horse".to_owned(), Some(hash.clone()))
                .await
                .unwrap_or(false)
        );
        assert!(
            !passwords
                .verify("wrong horse".to_owned(), Some(hash))
                .await
                .unwrap_or(true)
        );
        assert!(
            !passwords
                .verify("anything".to_owned(), None)
                .await
                .unwrap_or(true)
        );
    }
}
