//! The Redis the instances behind one address share (`ALIAS_REDIS_URL`): the connection, and
//! messages every instance hears ([`Channel`]). Rate limits count in it
//! (`rate_limit::RedisRateLimits`). Without Redis none of this runs and each instance keeps its
//! own state in memory.
//!
//! Redis is never waited on for long: every command is bounded by `ALIAS_REDIS_TIMEOUT_MS`,
//! after which the call needing it is answered `SERVICE_UNAVAILABLE` (reason
//! `shared_state_unavailable`), and the connection is rebuilt in the background, so the
//! instance recovers by itself when Redis is back. This module knows no domain.

mod channel;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use channel::{Channel, Delivery};

use crate::config::RedisConfig;
use crate::reason::Reason;
use crate::rpc::{ErrorCode, RpcError};

/// Redis could not answer in time (down, unreachable, or refusing): the call cannot proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Redis is unavailable")]
pub struct Unavailable;

impl From<Unavailable> for RpcError {
    fn from(_: Unavailable) -> Self {
        RpcError::new(
            ErrorCode::ServiceUnavailable,
            "The service is briefly unavailable. Please try again shortly.",
        )
        .with_reason(Reason::SharedStateUnavailable)
        .with_retry_after(2)
    }
}

/// A handle on the shared Redis; cheap to clone.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    /// Replaced by a fresh one after a command times out: a connection that stopped
    /// answering (a dropped route, a frozen server) may never report an error.
    manager: RwLock<ConnectionManager>,
    prefix: String,
    timeout: Duration,
    /// Whether the last command succeeded, so an outage is logged once, not per call.
    healthy: AtomicBool,
}

impl Redis {
    /// Prepares the connection without waiting for it: the server starts (and `/ready` says
    /// what is wrong) while Redis is still down.
    pub fn new(config: &RedisConfig) -> anyhow::Result<Self> {
        let client = redis::Client::open(config.url.0.as_str())
            .map_err(|_| anyhow::anyhow!("ALIAS_REDIS_URL is not a valid Redis URL"))?;
        let manager = lazy_manager(&client, config.timeout)?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                manager: RwLock::new(manager),
                prefix: config.key_prefix.clone(),
                timeout: config.timeout,
                healthy: AtomicBool::new(true),
            }),
        })
    }

    /// `name` under this deployment's key prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.inner.prefix)
    }

    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    pub(crate) fn client(&self) -> &redis::Client {
        &self.inner.client
    }

    /// Runs `command` on the shared connection within the timeout.
    pub async fn run<T, F, Fut>(&self, doing: &'static str, command: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let manager = self
            .inner
            .manager
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match tokio::time::timeout(self.inner.timeout, command(manager)).await {
            Ok(Ok(value)) => {
                if !self.inner.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!("Redis answers again");
                }
                Ok(value)
            }
            Ok(Err(error)) => {
                self.failed(doing, &error);
                Err(Unavailable)
            }
            Err(_) => {
                self.failed(doing, &"no answer in time");
                self.reconnect();
                Err(Unavailable)
            }
        }
    }

    /// Stores under `name` (prefixed) a random value never stored there before, for `ttl`:
    /// whoever remembered the previous value (or its absence) sees that it changed. Random
    /// rather than a counter, which could start again from 1 after its key expired.
    pub async fn renew_mark(&self, name: &str, ttl: Duration) -> Result<(), Unavailable> {
        let key = self.key(name);
        let mark = uuid::Uuid::new_v4().simple().to_string();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.run("renew a mark", |mut connection| async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(&mark)
                .arg("PX")
                .arg(ttl_ms)
                .query_async::<()>(&mut connection)
                .await
        })
        .await
    }

    /// Whether Redis answers a PING now (for `/ready`).
    pub async fn ping(&self) -> Result<(), Unavailable> {
        self.run("ping", |mut connection| async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .map(drop)
        })
        .await
    }

    fn failed(&self, doing: &'static str, error: &dyn std::fmt::Display) {
        if self.inner.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(%error, "Redis failed to {doing}; calls needing it are refused until it answers");
        } else {
            tracing::debug!(%error, "Redis failed to {doing}");
        }
    }

    fn reconnect(&self) {
        match lazy_manager(&self.inner.client, self.inner.timeout) {
            Ok(manager) => {
                *self
                    .inner
                    .manager
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = manager;
            }
            Err(error) => tracing::warn!(%error, "could not prepare a new Redis connection"),
        }
    }
}

/// A connection manager that connects on first use, giving up on an attempt quickly: callers
/// are answered within the timeout anyway, and the next command tries again.
fn lazy_manager(client: &redis::Client, timeout: Duration) -> anyhow::Result<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(200));
    ConnectionManager::new_lazy_with_config(client.clone(), config)
        .map_err(|error| anyhow::anyhow!("could not prepare the Redis connection: {error}"))
}
