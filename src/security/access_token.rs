//! Access tokens: short-lived EdDSA (Ed25519) JWTs naming the user and the session.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use zeroize::Zeroizing;

use super::token_mac::derive_key;
use crate::cache::Cache;
use crate::config::AuthConfig;

const GENERATED_KEY_FILE: &str = "jwt-ed25519.pem";
/// Verified tokens remembered at most (~100 bytes each).
const VERIFIED_TOKENS_CAPACITY: usize = 50_000;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    pub sub: Uuid,
    /// The session, checked on every call so revocation takes effect at once.
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
}

/// What a valid access token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedToken {
    pub user_id: Uuid,
    pub session_id: Uuid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Expired,
    Invalid,
}

/// A public key tokens are verified with, named by its key id.
struct PublicKey {
    kid: String,
    /// The key, base64url (the JWK's `x`).
    x: String,
    decoding: DecodingKey,
}

impl PublicKey {
    fn of(key: &VerifyingKey) -> anyhow::Result<Self> {
        let public = key.to_bytes();
        let x = URL_SAFE_NO_PAD.encode(public);
        Ok(Self {
            kid: URL_SAFE_NO_PAD.encode(&Sha256::digest(public)[..12]),
            decoding: DecodingKey::from_ed_components(&x).context("JWT verifying key")?,
            x,
        })
    }

    /// An earlier signing key from a PEM file: its private key (PKCS#8) or only its public
    /// key (SPKI).
    fn read_previous(path: &Path) -> anyhow::Result<Self> {
        let pem = Zeroizing::new(std::fs::read_to_string(path).with_context(|| {
            format!(
                "could not read {} (ALIAS_JWT_PREVIOUS_KEY_FILES)",
                path.display()
            )
        })?);
        let key = SigningKey::from_pkcs8_pem(&pem)
            .map(|signing| signing.verifying_key())
            .or_else(|_| VerifyingKey::from_public_key_pem(&pem))
            .with_context(|| {
                format!(
                    "{} (ALIAS_JWT_PREVIOUS_KEY_FILES) is not a PEM Ed25519 key",
                    path.display()
                )
            })?;
        Self::of(&key)
    }
}

pub struct AccessTokens {
    encoding: EncodingKey,
    /// The signing key's public half, then earlier signing keys still accepted (a rotation).
    keys: Vec<PublicKey>,
    issuer: String,
    audience: String,
    ttl: Duration,
    validation: Validation,
    /// SHA-256 of a token → what it said, until it expires. A client presents the same token
    /// on every call for 15 minutes and checking the signature again (~25 µs) is the
    /// largest cost of a signed-in call left once its session is cached. Keyed by a hash so
    /// bearer tokens are not kept in memory.
    verified: Cache<[u8; 32], VerifiedToken>,
    /// Derived from the signing key (never the key itself): the root of other server
    /// secrets, which every instance shares as it shares the signing key.
    server_secret: Zeroizing<[u8; 32]>,
}

impl AccessTokens {
    /// Loads the signing key from `ALIAS_JWT_PRIVATE_KEY_FILE`, or from the data directory,
    /// generating it there (mode 0600) on first start.
    pub fn load(config: &AuthConfig, data_dir: &Path) -> anyhow::Result<Self> {
        let pem = match &config.jwt_private_key_file {
            Some(path) => std::fs::read_to_string(path).with_context(|| {
                format!(
                    "could not read ALIAS_JWT_PRIVATE_KEY_FILE {}",
                    path.display()
                )
            })?,
            None => load_or_generate(&data_dir.join(GENERATED_KEY_FILE))?,
        };
        let signing = SigningKey::from_pkcs8_pem(&pem)
            .context("the JWT signing key is not a PKCS#8 PEM Ed25519 private key")?;
        let server_secret = derive_key(signing.as_bytes(), "alias/v1/server-secret");
        let mut keys = vec![PublicKey::of(&signing.verifying_key())?];
        for path in &config.jwt_previous_key_files {
            keys.push(PublicKey::read_previous(path)?);
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&config.jwt_issuer]);
        validation.set_audience(&[&config.jwt_audience]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        validation.leeway = 5;
        Ok(Self {
            encoding: EncodingKey::from_ed_pem(pem.as_bytes()).context("JWT signing key")?,
            keys,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            ttl: config.access_ttl,
            validation,
            verified: Cache::new(VERIFIED_TOKENS_CAPACITY),
            server_secret,
        })
    }

    /// A 32-byte key for `label` (e.g. the hashes of mailed codes), derived from the
    /// signing key: stable across restarts and instances.
    pub fn derive_key(&self, label: &str) -> Zeroizing<[u8; 32]> {
        derive_key(self.server_secret.as_slice(), label)
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn issue(&self, user_id: Uuid, session_id: Uuid) -> anyhow::Result<String> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user_id,
            sid: session_id,
            iat: now,
            exp: now + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = self.keys.first().map(|key| key.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .context("could not sign an access token")
    }

    /// Checks signature, algorithm (only EdDSA: `none` and HS256 confusion fail), key id,
    /// issuer, audience and expiry; a token verified before is answered from memory.
    pub fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(verified) = self.verified.get(&key) {
            return Ok(verified);
        }
        let read_at = self.verified.generation();
        let claims = self.verify_signature(token)?;
        let verified = VerifiedToken {
            user_id: claims.sub,
            session_id: claims.sid,
        };
        let remaining = u64::try_from(claims.exp - Utc::now().timestamp()).unwrap_or(0);
        let expires_at = Instant::now() + Duration::from_secs(remaining);
        self.verified.insert(key, verified, expires_at, read_at);
        Ok(verified)
    }

    fn verify_signature(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let key = self
            .keys
            .iter()
            .find(|key| header.kid.as_deref() == Some(key.kid.as_str()))
            .ok_or(TokenError::Invalid)?;
        jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }

    /// The public key set served at `/.well-known/jwks.json`: the signing key's, then the
    /// earlier ones still accepted.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|key| {
                json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": key.x,
                    "kid": key.kid,
                    "alg": "EdDSA",
                    "use": "sig",
                })
            })
            .collect();
        json!({ "keys": keys })
    }
}

fn load_or_generate(path: &PathBuf) -> anyhow::Result<String> {
    if path.exists() {
        crate::secret_file::tighten(path)?;
        return std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()));
    }
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .context("could not encode the generated JWT key")?;
    crate::secret_file::write_new(path, pem.as_bytes())?;
    tracing::info!(path = %path.display(), "generated a JWT signing key");
    Ok(pem.to_string())
}

/// jsonwebtoken needs exactly one crypto backend; choose it explicitly so another crate's
/// feature flags can never leave it without one (it would panic at the first token).
pub fn install_crypto_provider() {
    // Err means it is already installed (several servers in one test process).
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}
