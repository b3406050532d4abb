//! Google and Apple ID tokens: RS256 JWTs verified against the provider's published keys.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Deserializer};
use tokio::sync::{Mutex, RwLock};

use crate::config::IdProviderConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Google,
    Apple,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Google => "google",
            Self::Apple => "apple",
        }
    }

    pub fn display_name(self) -> &'static str {
        match self {
            Self::Google => "Google",
            Self::Apple => "Apple",
        }
    }

    fn issuers(self) -> &'static [&'static str] {
        match self {
            Self::Google => &["https://accounts.google.com", "accounts.google.com"],
            Self::Apple => &["https://appleid.apple.com"],
        }
    }
}

/// What we use from a verified ID token.
#[derive(Debug, Deserialize)]
pub struct IdClaims {
    pub sub: String,
    pub email: Option<String>,
    /// Google sends a boolean, Apple the string "true".
    #[serde(default, deserialize_with = "bool_or_string")]
    pub email_verified: bool,
    pub name: Option<String>,
    pub picture: Option<String>,
}

#[derive(Debug)]
pub enum IdTokenError {
    /// Malformed, wrong signature, issuer or audience, expired: the app should get a new one.
    Invalid(String),
    /// The provider's keys could not be fetched.
    KeysUnavailable,
}

const JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// Used when the provider's response carries no usable Cache-Control.
const DEFAULT_KEYS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Never trust cached keys longer than this, whatever the provider says.
const MAX_KEYS_AGE: Duration = Duration::from_secs(24 * 3600);
/// How long a failed download stops others (at most `ALIAS_JWKS_MIN_REFETCH_SECONDS`): during
/// an outage, sign-ins answer at once instead of each waiting for its own download to fail.
const FAILURE_MEMORY: Duration = Duration::from_secs(10);

pub struct IdTokenVerifier {
    provider: Provider,
    jwks_url: String,
    validation: Validation,
    http: reqwest::Client,
    min_refetch: Duration,
    keys: RwLock<KeyState>,
    /// One download at a time; callers that waited for it use its outcome.
    fetching: Mutex<()>,
}

#[derive(Default)]
struct KeyState {
    /// The last keys downloaded, used past their max-age while downloads fail.
    cached: CachedKeys,
    /// Downloads finished, successful or not: a caller that waited for the download lock
    /// sees whether one ended meanwhile.
    downloads: u64,
    /// When the last download failed, unless one succeeded since.
    failed_at: Option<Instant>,
}

#[derive(Default)]
struct CachedKeys {
    by_kid: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
    max_age: Duration,
}

impl CachedKeys {
    fn is_fresh(&self) -> bool {
        self.fetched_at
            .is_some_and(|at| at.elapsed() < self.max_age)
    }

    fn fetched_within(&self, interval: Duration) -> bool {
        self.fetched_at.is_some_and(|at| at.elapsed() < interval)
    }
}

impl KeyState {
    fn fresh_key(&self, kid: &str) -> Option<DecodingKey> {
        self.cached
            .by_kid
            .get(kid)
            .filter(|_| self.cached.is_fresh())
            .cloned()
    }

    /// The key for `kid` without downloading: fresh, or the last good one while downloads
    /// fail (within a day of its download).
    fn lookup(&self, kid: &str) -> Result<DecodingKey, IdTokenError> {
        let usable = self.cached.fetched_within(MAX_KEYS_AGE);
        match self.cached.by_kid.get(kid) {
            Some(key) if usable => Ok(key.clone()),
            _ if self.failed_at.is_some() => Err(IdTokenError::KeysUnavailable),
            _ => Err(IdTokenError::Invalid(
                "the ID token's signing key is unknown".to_owned(),
            )),
        }
    }
}

impl IdTokenVerifier {
    /// `None` when no client ids are configured: that provider's sign-in is off.
    pub fn new(
        provider: Provider,
        config: &IdProviderConfig,
        http: reqwest::Client,
        min_refetch: Duration,
    ) -> Option<Self> {
        if config.client_ids.is_empty() {
            return None;
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(provider.issuers());
        validation.set_audience(&config.client_ids);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 60;
        Some(Self {
            provider,
            jwks_url: config.jwks_url.clone(),
            validation,
            http,
            min_refetch,
            keys: RwLock::new(KeyState::default()),
            fetching: Mutex::new(()),
        })
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    pub async fn verify(&self, id_token: &str) -> Result<IdClaims, IdTokenError> {
        let header = jsonwebtoken::decode_header(id_token)
            .map_err(|_| IdTokenError::Invalid("the ID token is malformed".to_owned()))?;
        if header.alg != Algorithm::RS256 {
            return Err(IdTokenError::Invalid(
                "the ID token is not signed with RS256".to_owned(),
            ));
        }
        let kid = header
            .kid
            .ok_or_else(|| IdTokenError::Invalid("the ID token names no signing key".to_owned()))?;
        let key = self.key(&kid).await?;
        jsonwebtoken::decode::<IdClaims>(id_token, &key, &self.validation)
            .map(|data| data.claims)
            .map_err(|error| IdTokenError::Invalid(format!("the ID token is not valid ({error})")))
    }

    /// The key for `kid`: from the cache while fresh; otherwise, or when `kid` is unknown
    /// (the provider rotated keys), downloaded again: one download at a time, shared by
    /// every caller waiting for it, at most once per `min_refetch` for unknown kids, not again
    /// soon after a failure. While downloads fail the last good keys still serve.
    async fn key(&self, kid: &str) -> Result<DecodingKey, IdTokenError> {
        let seen = {
            let state = self.keys.read().await;
            if let Some(key) = state.fresh_key(kid) {
                return Ok(key);
            }
            if !self.may_download(&state) {
                return state.lookup(kid);
            }
            state.downloads
        };
        let _one_download = self.fetching.lock().await;
        {
            let state = self.keys.read().await;
            if state.downloads != seen || !self.may_download(&state) {
                return state.lookup(kid);
            }
        }
        let downloaded = self.download().await;
        let mut state = self.keys.write().await;
        state.downloads += 1;
        match downloaded {
            Ok(keys) => {
                state.cached = keys;
                state.failed_at = None;
            }
            Err(_) => state.failed_at = Some(Instant::now()),
        }
        state.lookup(kid)
    }

    /// Not right after a failure, nor (for a kid the fresh keys lack) within `min_refetch`
    /// of the last download: an unknown kid must not make us download on every request.
    fn may_download(&self, state: &KeyState) -> bool {
        let failure_memory = self.min_refetch.min(FAILURE_MEMORY);
        let failed_recently = state
            .failed_at
            .is_some_and(|at| at.elapsed() < failure_memory);
        let refetched_recently =
            state.cached.is_fresh() && state.cached.fetched_within(self.min_refetch);
        !failed_recently && !refetched_recently
    }

    async fn download(&self) -> Result<CachedKeys, IdTokenError> {
        let unavailable = |error: &dyn std::fmt::Display| {
            tracing::warn!(provider = self.provider.as_str(), %error, "could not fetch ID token keys");
            IdTokenError::KeysUnavailable
        };
        let response = self
            .http
            .get(&self.jwks_url)
            .timeout(JWKS_TIMEOUT)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| unavailable(&e))?;
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|value| value.to_str().ok())
            .and_then(max_age)
            .unwrap_or(DEFAULT_KEYS_MAX_AGE)
            .min(MAX_KEYS_AGE);
        let set: JwkSet = response.json().await.map_err(|e| unavailable(&e))?;
        let by_kid = set
            .keys
            .iter()
            .filter_map(|jwk| Some((jwk.common.key_id.clone()?, DecodingKey::from_jwk(jwk).ok()?)))
            .collect();
        Ok(CachedKeys {
            by_kid,
            fetched_at: Some(Instant::now()),
            max_age,
        })
    }
}

/// `max-age=N` from a Cache-Control header.
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control
        .split(',')
        .filter_map(|directive| directive.trim().strip_prefix("max-age="))
        .find_map(|seconds| seconds.trim().parse().ok())
        .map(Duration::from_secs)
}

fn bool_or_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum BoolOrString {
        Bool(bool),
        String(String),
    }
    Ok(match Option::<BoolOrString>::deserialize(deserializer)? {
        Some(BoolOrString::Bool(value)) => value,
        Some(BoolOrString::String(value)) => value == "true",
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_max_age() {
        assert_eq!(
            max_age("public, max-age=19204, must-revalidate"),
            Some(Duration::from_secs(19204))
        );
        assert_eq!(max_age("no-cache"), None);
    }

    #[test]
    fn email_verified_accepts_both_spellings() {
        let parse = |json: &str| {
            serde_json::from_str::<IdClaims>(json)
                .map(|c| c.email_verified)
                .ok()
        };
        assert_eq!(parse(r#"{"sub":"1","email_verified":true}"#), Some(true));
        assert_eq!(parse(r#"{"sub":"1","email_verified":"true"}"#), Some(true));
        assert_eq!(
            parse(r#"{"sub":"1","email_verified":"false"}"#),
            Some(false)
        );
        assert_eq!(parse(r#"{"sub":"1"}"#), Some(false));
    }
}
