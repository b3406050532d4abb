//! The default key vault: a 256-bit master key held by this process wraps the data keys.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{
    DataKey, EncryptionContext, KeyVault, NONCE_LEN, VaultError, aead_open, aead_seal, random_nonce,
};

/// A master key; its id (a fingerprint, not the key) is stored with what it wrapped.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let digest = Sha256::digest(bytes);
        let id = format!(
            "local:{}",
            digest[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        Self {
            id,
            key: Zeroizing::new(bytes),
        }
    }

    /// Parses standard base64 of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| "not valid base64".to_owned())?,
        );
        let array: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| format!("expected 32 bytes, got {}", bytes.len()))?;
        Ok(Self::from_bytes(array))
    }

    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.key.as_slice()))
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Wraps with the current master key; unwraps with it or a previous one (during rotation).
pub struct LocalVault {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl LocalVault {
    pub fn new(current: MasterKey, previous: Vec<MasterKey>) -> Self {
        Self { current, previous }
    }

    fn master(&self, key_id: &str) -> Result<&MasterKey, VaultError> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|master| master.id == key_id)
            .ok_or_else(|| {
                VaultError::Other(format!(
                    "master key {key_id} is not configured (after a rotation, list the old key in ALIAS_MASTER_KEY_PREVIOUS until `keys rewrap` has run)"
                ))
            })
    }

    fn wrap(
        &self,
        data_key: &[u8; 32],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>, VaultError> {
        let nonce = random_nonce();
        let sealed = aead_seal(
            &self.current.key,
            &nonce,
            data_key,
            &context.associated_data(),
        )?;
        Ok([nonce.as_slice(), &sealed].concat())
    }
}

#[async_trait::async_trait]
impl KeyVault for LocalVault {
    fn describe(&self) -> String {
        format!("local master key {}", self.current.id)
    }

    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey, VaultError> {
        let mut plaintext = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(plaintext.as_mut_slice());
        Ok(DataKey {
            wrapped: self.wrap(&plaintext, context)?,
            plaintext,
            key_id: self.current.id.clone(),
        })
    }

    async fn unwrap_data_key(
        &self,
        wrapped: &[u8],
        key_id: &str,
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        let master = self.master(key_id)?;
        if wrapped.len() <= NONCE_LEN {
            return Err(VaultError::Integrity);
        }
        let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
        let plaintext = aead_open(&master.key, nonce, sealed, &context.associated_data())?;
        let key: [u8; 32] = plaintext
            .as_slice()
            .try_into()
            .map_err(|_| VaultError::Integrity)?;
        Ok(Zeroizing::new(key))
    }

    async fn rewrap(
        &self,
        wrapped: &[u8],
        key_id: &str,
        context: &EncryptionContext,
    ) -> Result<(Vec<u8>, String), VaultError> {
        let data_key = self.unwrap_data_key(wrapped, key_id, context).await?;
        Ok((self.wrap(&data_key, context)?, self.current.id.clone()))
    }
}
