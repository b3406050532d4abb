//! Shared security machinery, with no procedures of its own: our access tokens, password
//! hashing, Google/Apple ID-token verification, attempt limits and the signed-in session
//! cache. The `auth` domain issues and revokes with it; the signed-in guard checks with it.

mod access_token;
mod id_token;
mod password;
mod password_attempts;
mod session_cache;
mod token_mac;

use std::sync::Arc;

pub use access_token::{AccessTokens, TokenError, VerifiedToken, install_crypto_provider};
pub use id_token::{IdClaims, IdTokenError, IdTokenVerifier, Provider};
pub use password::{CheckError, Passwords};
pub use session_cache::{AuthProvider, KnownSession, Revocations, SessionCache, auth_providers};
pub use token_mac::TokenMac;

use crate::config::Config;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use self::password_attempts::AttemptBudget;
use crate::cluster::Redis;
use crate::rate_limit::{InMemoryRateLimits, RateLimitStore, RedisRateLimits};

/// Password verifications allowed per account per `ALIAS_LOGIN_LOCK_SECONDS`, right or
/// wrong.
pub const PASSWORD_ATTEMPTS_PER_ACCOUNT: u32 = 5;

/// Everything signing in and checking callers needs, built once at start-up.
pub struct Auth {
    pub access_tokens: AccessTokens,
    pub passwords: Passwords,
    pub google: Option<IdTokenVerifier>,
    pub apple: Option<IdTokenVerifier>,
    pub rate_limits: Arc<dyn RateLimitStore>,
    pub session_cache: SessionCache,
    /// Hashes the links and codes mailed to users.
    pub token_mac: TokenMac,
}

impl Auth {
    /// With `redis`, attempt limits and session evictions are shared by every instance.
    pub fn new(
        config: &Config,
        http: &reqwest::Client,
        redis: Option<&Redis>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let auth = &config.auth;
        let verifier = |provider, provider_config| {
            IdTokenVerifier::new(
                provider,
                provider_config,
                http.clone(),
                auth.jwks_min_refetch,
            )
        };
        let access_tokens = AccessTokens::load(auth, &config.data_dir)?;
        let token_mac = TokenMac::new(&access_tokens.derive_key("alias/v1/email-tokens"));
        Ok(Self {
            access_tokens,
            token_mac,
            passwords: Passwords::new(AttemptBudget {
                limit: PASSWORD_ATTEMPTS_PER_ACCOUNT,
                window: auth.login_lock,
            })?,
            google: verifier(Provider::Google, &auth.google),
            apple: verifier(Provider::Apple, &auth.apple),
            rate_limits: match redis {
                Some(redis) => Arc::new(RedisRateLimits::new(redis.clone())),
                None => Arc::new(InMemoryRateLimits::default()),
            },
            session_cache: SessionCache::new(auth.session_cache_ttl, redis, shutdown),
        })
    }
}

/// Hex SHA-256, how tokens and account keys are stored (never the token itself).
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
