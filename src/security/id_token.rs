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

const JWKS_TIMEOUT: Duration = Duration::from_secs(10);

/// Used when the provider's response carries no usable Cache-Control.
const DEFAULT_KEYS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Never trust cached keys longer than this, whatever the provider says.
const MAX_KEYS_AGE: Duration = Duration::from_secs(24 * 3600);

pub struct IdTokenVerifier {
    provider: Provider,
    jwks_url: String,
    validation: Validation,
    http: reqwest::Client,
    min_refetch: Duration,
    keys: RwLock<CachedKeys>,
    /// One download at a time; concurrent callers wait and reuse its result.
    fetching: Mutex<()>,
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
            keys: RwLock::new(CachedKeys::default()),
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
    /// (the provider rotated keys), downloaded again, at most once per `min_refetch`.
    async fn key(&self, kid: &str) -> Result<DecodingKey, IdTokenError> {
        {
            let keys = self.keys.read().await;
            if keys.is_fresh()
                && let Some(key) = keys.by_kid.get(kid)
            {
                return Ok(key.clone());
            }
        }
        let _one_download = self.fetching.lock().await;
        {
            // Another caller may have downloaded while we waited; and an unknown kid must not
            // let anyone make us download on every request.
            let keys = self.keys.read().await;
            let known = keys.by_kid.get(kid).filter(|_| keys.is_fresh());
            if known.is_some() || keys.fetched_within(self.min_refetch) {
                return known
                    .or_else(|| keys.by_kid.get(kid))
                    .cloned()
                    .ok_or_else(|| {
                        IdTokenError::Invalid("the ID token's signing key is unknown".to_owned())
                    });
            }
        }
        let fetched = self.download().await?;
        let mut keys = self.keys.write().await;
        *keys = fetched;
        keys.by_kid.get(kid).cloned().ok_or_else(|| {
            IdTokenError::Invalid("the ID token's signing key is unknown".to_owned())
        })
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
