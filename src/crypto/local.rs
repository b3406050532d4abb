//! The default key vault: a 256-bit master key held by this process wraps the data keys.

use rand::RngCore as _;
use zeroize::Zeroizing;

use crate::master_key::MasterKey;

use super::{
    DataKey, EncryptionContext, KeyVault, NONCE_LEN, VaultError, aead_open, aead_seal, random_nonce,
};

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
            .find(|master| master.id() == key_id)
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
            self.current.bytes(),
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
        format!("local master key {}", self.current.id())
    }

    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey, VaultError> {
        let mut plaintext = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(plaintext.as_mut_slice());
        Ok(DataKey {
            wrapped: self.wrap(&plaintext, context)?,
            plaintext,
            key_id: self.current.id().to_owned(),
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
        let plaintext = aead_open(master.bytes(), nonce, sealed, &context.associated_data())?;
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
        Ok((self.wrap(&data_key, context)?, self.current.id().to_owned()))
    }
}
