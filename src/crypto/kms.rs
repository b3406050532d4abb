//! AWS KMS as the key vault: data keys from `GenerateDataKey`, bound to their encryption
//! context, which KMS enforces on `Decrypt` and `ReEncrypt`.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_kms::Client;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use zeroize::Zeroizing;

use super::{DataKey, EncryptionContext, KeyVault, VaultError};

/// Attempts per KMS call (the first and its retries).
const MAX_ATTEMPTS: u32 = 3;

pub struct KmsVault {
    client: Client,
    key_id: String,
}

impl KmsVault {
    /// Region and credentials come from the standard AWS chain; `endpoint` (from
    /// `AWS_ENDPOINT_URL`) points at a KMS-compatible server instead of AWS.
    pub async fn connect(key_id: String, endpoint: Option<String>) -> anyhow::Result<Self> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .operation_timeout(Duration::from_secs(5))
                    .build(),
            )
            // Throttling and 5xx answers are retried, a bounded number of times with a short
            // backoff, all within the operation timeout above.
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(100))
                    .with_max_backoff(Duration::from_secs(1)),
            );
        if let Some(endpoint) = endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let config = loader.load().await;
        if config.region().is_none() {
            anyhow::bail!(
                "ALIAS_KMS_KEY_ID is set but no AWS region is configured (set AWS_REGION)"
            );
        }
        Ok(Self {
            client: Client::new(&config),
            key_id,
        })
    }
}

/// Unreachable, timed out, throttled or failing on its side (any 5xx): try later. A service
/// answer about the ciphertext: integrity. Anything else: a misconfiguration.
fn vault_error<E: ProvideErrorMetadata + std::fmt::Debug>(error: SdkError<E>) -> VaultError {
    let server_failed = error
        .raw_response()
        .is_some_and(|response| response.status().is_server_error());
    match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => {
            VaultError::Unavailable(format!("{error}"))
        }
        SdkError::ServiceError(service) => match service.err().code() {
            Some("InvalidCiphertextException" | "IncorrectKeyException") => VaultError::Integrity,
            Some(
                code @ ("ThrottlingException"
                | "KMSInternalException"
                | "DependencyTimeoutException"
                | "KeyUnavailableException"),
            ) => VaultError::Unavailable(code.to_owned()),
            code if server_failed => {
                VaultError::Unavailable(code.unwrap_or("a server error").to_owned())
            }
            code => VaultError::Other(format!(
                "KMS refused the request: {}",
                code.unwrap_or("unknown error")
            )),
        },
        SdkError::ResponseError(_) if server_failed => {
            VaultError::Unavailable("an unreadable server error".to_owned())
        }
        _ => VaultError::Other(format!("{error}")),
    }
}

#[async_trait::async_trait]
impl KeyVault for KmsVault {
    fn describe(&self) -> String {
        format!("AWS KMS key {}", self.key_id)
    }

    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey, VaultError> {
        let output = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(context.as_map()))
            .send()
            .await
            .map_err(vault_error)?;
        let plaintext = output
            .plaintext()
            .and_then(|blob| <[u8; 32]>::try_from(blob.as_ref()).ok())
            .map(Zeroizing::new)
            .ok_or_else(|| VaultError::Other("KMS returned no 256-bit data key".to_owned()))?;
        let wrapped = output
            .ciphertext_blob()
            .map(|blob| blob.as_ref().to_vec())
            .ok_or_else(|| VaultError::Other("KMS returned no wrapped data key".to_owned()))?;
        Ok(DataKey {
            plaintext,
            wrapped,
            key_id: output.key_id().unwrap_or(&self.key_id).to_owned(),
        })
    }

    async fn unwrap_data_key(
        &self,
        wrapped: &[u8],
        key_id: &str,
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        let output = self
            .client
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .set_encryption_context(Some(context.as_map()))
            .send()
            .await
            .map_err(vault_error)?;
        output
            .plaintext()
            .and_then(|blob| <[u8; 32]>::try_from(blob.as_ref()).ok())
            .map(Zeroizing::new)
            .ok_or(VaultError::Integrity)
    }

    async fn rewrap(
        &self,
        wrapped: &[u8],
        _key_id: &str,
        context: &EncryptionContext,
    ) -> Result<(Vec<u8>, String), VaultError> {
        let output = self
            .client
            .re_encrypt()
            .ciphertext_blob(Blob::new(wrapped))
            .set_source_encryption_context(Some(context.as_map()))
            .destination_key_id(&self.key_id)
            .set_destination_encryption_context(Some(context.as_map()))
            .send()
            .await
            .map_err(vault_error)?;
        let rewrapped = output
            .ciphertext_blob()
            .map(|blob| blob.as_ref().to_vec())
            .ok_or_else(|| VaultError::Other("KMS returned no re-encrypted key".to_owned()))?;
        Ok((
            rewrapped,
            output.key_id().unwrap_or(&self.key_id).to_owned(),
        ))
    }
}
