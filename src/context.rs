//! The state every procedure shares: shared infrastructure only (database, configuration,
//! key vault, HTTP client, security machinery, replay-able event streams, the mailer).
//! Domains read it through `Ctx`; none of it knows about a domain.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

use crate::cluster::Redis;
use crate::config::Config;
use crate::crypto::{self, KeyVault};
use crate::db::Backend;
use crate::mailer::Mailer;
use crate::rpc;
use crate::security::Auth;
use crate::storage::Storage;
use crate::streams::Streams;

pub struct AppState {
    pub db: DatabaseConnection,
    pub backend: Backend,
    pub config: Config,
    pub auth: Auth,
    /// Seals and opens users' secrets (API keys).
    pub vault: Arc<dyn KeyVault>,
    /// Server-owned event streams (chat replies) being written or recently written, for
    /// resuming, following and stopping them.
    pub streams: Streams,
    /// For calls to other services (identity providers' keys, AI providers).
    pub http: reqwest::Client,
    /// Files' bytes (`ALIAS_STORAGE`).
    pub storage: Arc<Storage>,
    /// Account mails, queued and sent in the background.
    pub mailer: Mailer,
    /// Shared by the instances behind one address (`ALIAS_REDIS_URL`); `None`: this instance
    /// alone, in memory.
    pub redis: Option<Redis>,
}

pub type App = Arc<AppState>;

/// What a procedure receives: the state plus the calling request (client IP, headers).
pub type Ctx = rpc::Context<App>;

impl AppState {
    /// Builds the shared state around a connected, migrated database. `shutdown` is the
    /// server's: when it fires, running streams stop.
    pub async fn new(
        config: Config,
        db: DatabaseConnection,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<App> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // No total timeout: a streamed reply may last minutes. Each call bounds itself
            // (key checks, JWKS, first byte and idle gaps of a reply).
            .build()
            .context("could not build the HTTP client")?;
        let vault = crypto::vault_from_config(
            &config.key_vault,
            &config.data_dir,
            config.looks_like_production(),
        )
        .await?;
        tracing::info!(vault = vault.describe(), "API keys are sealed with");
        let storage = Arc::new(Storage::open(&config.storage, &config.data_dir)?);
        tracing::info!(storage = storage.describe(), "files are stored in");
        let redis = config.redis.as_ref().map(Redis::new).transpose()?;
        if let Some(redis) = &redis {
            match redis.ping().await {
                Ok(()) => {
                    tracing::info!("rate limits and session evictions are shared through Redis")
                }
                Err(_) => tracing::error!(
                    "Redis (ALIAS_REDIS_URL) does not answer; calls needing it are refused until it does"
                ),
            }
        }
        Ok(Arc::new(Self {
            backend: Backend::of(&db),
            db,
            auth: Auth::new(&config, &http, redis.as_ref(), shutdown)?,
            vault,
            streams: Streams::new(shutdown.clone(), redis.as_ref()),
            mailer: Mailer::start(&config.mail, shutdown)?,
            config,
            http,
            storage,
            redis,
        }))
    }
}
