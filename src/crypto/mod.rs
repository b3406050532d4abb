//! Envelope encryption for secrets at rest: each secret is sealed with AES-256-GCM under its
//! own data key, and only the data key's wrapped form (by a local master key or AWS KMS) is
//! stored beside it. Shared infrastructure: callers name what a secret is bound to through
//! an `EncryptionContext`; nothing here knows what the secrets are.

mod kms;
mod local;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore as _;
use zeroize::Zeroizing;

use crate::config::KeyVaultConfig;

pub use kms::KmsVault;
pub use local::LocalVault;

use crate::master_key::MasterKey;

/// The layout of what `seal` produces, stored with it so a later format can still open it.
pub const FORMAT_VERSION: i16 = 1;

const NONCE_LEN: usize = 12;

/// What a secret is bound to. It is authenticated with the secret (AES-GCM associated data)
/// and with its data key (KMS encryption context), so a sealed secret copied to another
/// owner or purpose fails to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionContext {
    pub owner: String,
    pub purpose: String,
}

impl EncryptionContext {
    pub fn new(owner: impl Into<String>, purpose: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            purpose: purpose.into(),
        }
    }

    fn associated_data(&self) -> Vec<u8> {
        format!("alias/v1;user_id={};purpose={}", self.owner, self.purpose).into_bytes()
    }

    fn as_map(&self) -> HashMap<String, String> {
        HashMap::from([
            ("user_id".to_owned(), self.owner.clone()),
            ("purpose".to_owned(), self.purpose.clone()),
        ])
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The key service could not be reached; nothing is wrong with the data.
    #[error("the key service is unavailable: {0}")]
    Unavailable(String),
    /// Tampered, corrupted, or bound to another owner or purpose.
    #[error("the secret failed its integrity check")]
    Integrity,
    #[error("key vault error: {0}")]
    Other(String),
}

/// A fresh data key: the plaintext for one use, and its wrapped form to store.
pub struct DataKey {
    pub plaintext: Zeroizing<[u8; 32]>,
    pub wrapped: Vec<u8>,
    pub key_id: String,
}

/// Where data keys come from and are unwrapped: a local master key or AWS KMS.
#[async_trait::async_trait]
pub trait KeyVault: Send + Sync {
    /// For logs and start-up messages.
    fn describe(&self) -> String;

    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey, VaultError>;

    async fn unwrap_data_key(
        &self,
        wrapped: &[u8],
        key_id: &str,
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; 32]>, VaultError>;

    /// Re-wraps a data key under the current master key / KMS key, never exposing the sealed
    /// secret. Returns the new wrapped key and its key id.
    async fn rewrap(
        &self,
        wrapped: &[u8],
        key_id: &str,
        context: &EncryptionContext,
    ) -> Result<(Vec<u8>, String), VaultError>;
}

/// A sealed secret, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub wrapped_key: Vec<u8>,
    pub key_id: String,
    pub format_version: i16,
}

pub async fn seal(
    vault: &dyn KeyVault,
    secret: &[u8],
    context: &EncryptionContext,
) -> Result<Sealed, VaultError> {
    let data_key = vault.generate_data_key(context).await?;
    let nonce = random_nonce();
    let ciphertext = aead_seal(
        &data_key.plaintext,
        &nonce,
        secret,
        &context.associated_data(),
    )?;
    Ok(Sealed {
        ciphertext,
        nonce: nonce.to_vec(),
        wrapped_key: data_key.wrapped,
        key_id: data_key.key_id,
        format_version: FORMAT_VERSION,
    })
}

pub async fn open(
    vault: &dyn KeyVault,
    sealed: &Sealed,
    context: &EncryptionContext,
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    if sealed.format_version != FORMAT_VERSION {
        return Err(VaultError::Other(format!(
            "unknown format version {}",
            sealed.format_version
        )));
    }
    let data_key = vault
        .unwrap_data_key(&sealed.wrapped_key, &sealed.key_id, context)
        .await?;
    aead_open(
        &data_key,
        &sealed.nonce,
        &sealed.ciphertext,
        &context.associated_data(),
    )
}

fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    nonce
}

fn aead_seal(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, VaultError> {
    let cipher = Aes256Gcm::new_from_slice(key)
        .map_err(|_| VaultError::Other("bad key length".to_owned()))?;
    cipher
        .encrypt(
            &Nonce::from(*nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| VaultError::Other("encryption failed".to_owned()))
}

fn aead_open(
    key: &[u8; 32],
    nonce: &[u8],
    ciphertext: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| VaultError::Integrity)?;
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| VaultError::Integrity)?;
    cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| VaultError::Integrity)
}

const GENERATED_MASTER_KEY_FILE: &str = "master.key";

/// The vault the configuration asks for. Without `ALIAS_MASTER_KEY` a master key is
/// generated once into the data directory; `production` makes that a loud warning, since
/// whoever copies that directory can open every stored secret.
pub async fn vault_from_config(
    config: &KeyVaultConfig,
    data_dir: &Path,
    production: bool,
) -> anyhow::Result<Arc<dyn KeyVault>> {
    let (master_key, previous) = match config {
        KeyVaultConfig::Kms { key_id, endpoint } => {
            return Ok(Arc::new(
                KmsVault::connect(key_id.clone(), endpoint.clone()).await?,
            ));
        }
        KeyVaultConfig::Local {
            master_key,
            previous,
        } => (master_key.clone(), previous.clone()),
    };
    let master_key = match master_key {
        Some(key) => key,
        None => {
            let path = data_dir.join(GENERATED_MASTER_KEY_FILE);
            if production {
                tracing::warn!(
                    path = %path.display(),
                    "NO ALIAS_MASTER_KEY OR ALIAS_KMS_KEY_ID: user API keys are sealed with a master key stored beside the data. Set ALIAS_KMS_KEY_ID (or ALIAS_MASTER_KEY from a secret store) in production."
                );
            }
            load_or_generate_key(&path, "a master key for API keys")?
        }
    };
    Ok(Arc::new(LocalVault::new(master_key, previous)))
}

/// Reads the 32-byte key at `path` (base64), or generates it there (a private file) the first
/// time; `what` names it in the log.
pub fn load_or_generate_key(path: &Path, what: &str) -> anyhow::Result<MasterKey> {
    if path.exists() {
        crate::secret_file::tighten(path)?;
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("could not read {}", path.display()))?,
        );
        return MasterKey::from_base64(&text)
            .map_err(|problem| anyhow::anyhow!("{} is not {what}: {problem}", path.display()));
    }
    let key = MasterKey::generate();
    crate::secret_file::write_new(path, key.to_base64().as_bytes())?;
    tracing::info!(path = %path.display(), "generated {what}");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> LocalVault {
        LocalVault::new(MasterKey::from_bytes([7; 32]), Vec::new())
    }

    #[tokio::test]
    async fn seals_and_opens_only_in_its_context() {
        let vault = vault();
        let context = EncryptionContext::new("user-a", "api_key:gemini");
        let sealed = seal(&vault, b"AIza-secret", &context).await.expect("seal");
        assert!(!sealed.ciphertext.windows(6).any(|w| w == b"secret"));
        let opened = open(&vault, &sealed, &context).await.expect("open");
        assert_eq!(opened.as_slice(), b"AIza-secret");

        let other_owner = EncryptionContext::new("user-b", "api_key:gemini");
        assert!(matches!(
            open(&vault, &sealed, &other_owner).await,
            Err(VaultError::Integrity)
        ));
        let other_purpose = EncryptionContext::new("user-a", "api_key:openai");
        assert!(matches!(
            open(&vault, &sealed, &other_purpose).await,
            Err(VaultError::Integrity)
        ));
    }

    #[tokio::test]
    async fn tampering_is_detected() {
        let vault = vault();
        let context = EncryptionContext::new("user-a", "api_key:gemini");
        let sealed = seal(&vault, b"AIza-secret", &context).await.expect("seal");
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert!(matches!(
            open(&vault, &flipped, &context).await,
            Err(VaultError::Integrity)
        ));
        let mut flipped = sealed;
        flipped.wrapped_key[20] ^= 1;
        assert!(matches!(
            open(&vault, &flipped, &context).await,
            Err(VaultError::Integrity)
        ));
    }
}
