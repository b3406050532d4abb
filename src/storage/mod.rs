//! Where files' bytes live: one `object_store` code path for a local folder and for any
//! S3-compatible bucket (AWS S3, Cloudflare R2, MinIO, SeaweedFS). Only object keys are kept
//! in the database; links are signed when asked for, never saved (a saved signed link expires
//! and breaks what refers to it).
//!
//! Shared infrastructure: keys and links, no knowledge of users or files' meaning. This server
//! answers the links it signs itself (`routes`): downloads with the stored type, `nosniff`, a
//! disposition and caching that fit the link, and uploads that must match a declared type,
//! size and SHA-256.

mod presign;
mod routes;
mod signing;

use std::path::Path as FsPath;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::config::{StorageConfig, StorageLocation};

pub use presign::PresignedPut;
use presign::S3Presigner;
pub use routes::routes;
use signing::UrlSigner;
pub use signing::{Download, Expiry, Upload};

/// The key generated into the data directory to sign links when `ALIAS_STORAGE_URL_KEY` is
/// unset (every instance must share it, like the JWT key).
const GENERATED_URL_KEY_FILE: &str = "storage-url.key";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("no such object")]
    NotFound,
    #[error("storage failed: {0}")]
    Failed(#[from] object_store::Error),
}

fn classify(error: object_store::Error) -> StorageError {
    match error {
        object_store::Error::NotFound { .. } => StorageError::NotFound,
        other => StorageError::Failed(other),
    }
}

/// An object found by [`Storage::list`].
pub struct StoredObject {
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// Upload links straight to the bucket (S3); else this server answers them.
    presigner: Option<S3Presigner>,
    signer: UrlSigner,
    public_url: Option<String>,
    description: String,
}

impl Storage {
    /// Opens the configured store (creating the local folder, private, if needed).
    pub fn open(config: &StorageConfig, data_dir: &FsPath) -> anyhow::Result<Self> {
        let mut presigner = None;
        let (store, description): (Arc<dyn ObjectStore>, String) = match &config.location {
            StorageLocation::Local(root) => {
                crate::secret_file::create_private_dir(root)?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(root)
                    .with_context(|| format!("could not open {} (ALIAS_STORAGE)", root.display()))?
                    .with_automatic_cleanup(true);
                (Arc::new(store), format!("folder {}", root.display()))
            }
            StorageLocation::S3 {
                bucket,
                prefix,
                endpoint,
                virtual_hosted_style,
            } => {
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_virtual_hosted_style_request(*virtual_hosted_style);
                if let Some(endpoint) = endpoint {
                    builder = builder
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_endpoint(endpoint);
                }
                let region = builder
                    .get_config_value(&object_store::aws::AmazonS3ConfigKey::Region)
                    .unwrap_or_else(|| "us-east-1".to_owned());
                let store = builder
                    .build()
                    .context("could not configure S3 storage (ALIAS_STORAGE, AWS_*)")?;
                presigner = Some(S3Presigner {
                    credentials: Arc::clone(store.credentials()),
                    endpoint: endpoint
                        .clone()
                        .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"))
                        .trim_end_matches('/')
                        .to_owned(),
                    region,
                    bucket: bucket.clone(),
                    prefix: prefix.clone(),
                    virtual_hosted_style: *virtual_hosted_style,
                });
                let description = format!("s3://{bucket}/{prefix}");
                let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                    Arc::new(store)
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(
                        store,
                        prefix.as_str(),
                    ))
                };
                (store, description)
            }
        };
        let url_key = match &config.url_key {
            Some(key) => key.clone(),
            None => crate::crypto::load_or_generate_key(
                &data_dir.join(GENERATED_URL_KEY_FILE),
                "a key for signing file links",
            )?,
        };
        Ok(Self {
            store,
            presigner,
            signer: UrlSigner::new(&url_key),
            public_url: config.public_url.clone(),
            description,
        })
    }

    pub fn describe(&self) -> &str {
        &self.description
    }

    fn path(key: &str) -> Result<Path, StorageError> {
        Path::parse(key).map_err(|error| StorageError::Failed(error.into()))
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.store
            .put(&Self::path(key)?, PutPayload::from_bytes(bytes))
            .await
            .map(drop)
            .map_err(classify)
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let found = self.store.get(&Self::path(key)?).await.map_err(classify)?;
        found.bytes().await.map_err(classify)
    }

    /// The first `length` bytes of an object `size` bytes long (all of it when shorter).
    pub async fn get_prefix(
        &self,
        key: &str,
        size: u64,
        length: u64,
    ) -> Result<Bytes, StorageError> {
        if size <= length {
            return self.get(key).await;
        }
        self.store
            .get_range(&Self::path(key)?, 0..length)
            .await
            .map_err(classify)
    }

    /// The object's size, or `NotFound`.
    pub async fn size(&self, key: &str) -> Result<u64, StorageError> {
        let meta = self.store.head(&Self::path(key)?).await.map_err(classify)?;
        Ok(meta.size)
    }

    /// Deletes an object; one already gone is no error.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&Self::path(key)?).await.map_err(classify) {
            Ok(()) | Err(StorageError::NotFound) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Every object under `prefix` (a folder-like key prefix, without trailing slash).
    pub async fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, StorageError> {
        let prefix = Self::path(prefix)?;
        self.store
            .list(Some(&prefix))
            .map_ok(|meta| StoredObject {
                key: meta.location.to_string(),
                size: meta.size,
                last_modified: meta.last_modified,
            })
            .try_collect()
            .await
            .map_err(classify)
    }

    /// The base of the links this server answers: `ALIAS_PUBLIC_URL`, else the address the
    /// client used (`host`, from its request).
    pub fn base_url(&self, host: Option<&str>) -> String {
        match (&self.public_url, host) {
            (Some(url), _) => url.clone(),
            (None, Some(host)) => format!("http://{host}"),
            (None, None) => String::new(),
        }
    }

    /// A link to download `key` (see [`Download`]), answered by this server.
    pub fn download_url(&self, base: &str, download: &Download<'_>) -> String {
        format!("{base}{}", self.signer.download_path(download))
    }

    /// A link to upload exactly the declared bytes to `key` (see [`Upload`]): presigned
    /// straight to the bucket on S3, else answered by this server (`base`).
    pub async fn upload_url(
        &self,
        base: &str,
        upload: &Upload<'_>,
    ) -> Result<PresignedPut, StorageError> {
        match &self.presigner {
            Some(presigner) => presigner.presign_put(upload, Utc::now()).await,
            None => Ok(PresignedPut {
                url: format!("{base}{}", self.signer.upload_path(upload)),
                headers: [("Content-Type".to_owned(), upload.content_type.to_owned())].into(),
            }),
        }
    }
}
