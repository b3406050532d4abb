//! Building and running the server: one function used by `main` and by every integration test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::http::{HeaderName, Method, header};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::app;
use crate::auth;
use crate::backup;
use crate::chat;
use crate::config::{Config, ConnectionConfig, CorsOrigins};
use crate::context::{App, AppState};
use crate::db;
use crate::files;
use crate::health;
use crate::jobs::{self, Worker, WorkerOptions};
use crate::mail;
use crate::providers;
use crate::rate_limit;
use crate::rpc::{self, RpcOptions, RpcService};
use crate::secret_file;
use crate::security;
use crate::server;
use crate::shares;
use crate::storage;
use crate::telemetry::metrics;
use crate::users;
use crate::voice;

pub struct Application {
    listener: TcpListener,
    /// `/metrics` for Prometheus (`ALIAS_METRICS_BIND`), never on the public listener.
    metrics: Option<MetricsListener>,
    /// Held while serving a SQLite database, so a restore cannot replace it meanwhile.
    serving: Option<backup::ServingLock>,
    router: axum::Router,
    state: App,
    connections: ConnectionConfig,
    shutdown: CancellationToken,
    grace: Duration,
}

impl Application {
    /// Connects to and migrates the database, then binds the listener (port 0 picks a free one).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        security::install_crypto_provider();
        rpc::recognise_transient(db::transient_error);
        secret_file::create_private_dir(&config.data_dir)?;
        let db = db::open(&config).await?;
        let serving = backup::lock_serving(&config.database_url)?;
        // With Redis, other instances may be writing replies right now: those whose instance
        // stopped are found by their lapsed lease instead (`chat::sweep_orphaned_replies`).
        if config.redis.is_none() {
            let interrupted = chat::fail_interrupted_replies(&db).await?;
            if interrupted > 0 {
                tracing::warn!(
                    interrupted,
                    "chat replies cut off by the last shutdown were marked as errors"
                );
            }
        }
        let listener = TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("could not listen on {} (ALIAS_BIND)", config.bind))?;
        let metrics = match config.metrics_bind {
            Some(address) => MetricsListener::bind(address).await?,
            None => None,
        };
        let shutdown = CancellationToken::new();
        let grace = config.shutdown_grace;
        let rpc_options = RpcOptions {
            max_body_bytes: config.max_body_bytes,
            max_batch_size: config.max_batch_size,
            sse_ping_interval: config.sse_ping_interval,
            trust_proxy: config.trust_proxy,
        };
        let cors = cors_layer(&config.cors_origins);
        let connections = config.connections.clone();
        let state = AppState::new(config, db, &shutdown).await?;
        tokio::spawn(files::sweep_periodically(
            Arc::clone(&state),
            shutdown.clone(),
        ));
        tokio::spawn(users::prune_periodically(
            Arc::clone(&state),
            shutdown.clone(),
        ));
        tokio::spawn(crate::portability::sweep_periodically(
            Arc::clone(&state),
            shutdown.clone(),
        ));
        tokio::spawn(voice::sweep_periodically(
            Arc::clone(&state),
            shutdown.clone(),
        ));
        tokio::spawn(chat::sweep_orphaned_replies(
            Arc::clone(&state),
            shutdown.clone(),
        ));
        let jobs = &state.config.jobs;
        let worker = Worker::new(
            state.db.clone(),
            WorkerOptions {
                poll_interval: jobs.poll_interval,
                lease: jobs.lease,
                concurrency: jobs.concurrency,
                backoff_base: jobs.backoff_base,
                backoff_max: jobs.backoff_max,
            },
        );
        mail::register_jobs(worker).spawn(Arc::clone(&state), shutdown.clone());
        let rpc = RpcService::new(
            app::router(),
            Arc::clone(&state),
            rpc_options,
            shutdown.clone(),
        );
        let mut router = rpc
            .into_axum()
            .merge(health::routes(Arc::clone(&state)))
            .merge(auth::routes(Arc::clone(&state)))
            .merge(storage::routes(Arc::clone(&state.storage)))
            .merge(voice::routes(Arc::clone(&state)))
            .merge(shares::routes(Arc::clone(&state)));
        if let Some(cors) = cors {
            router = router.layer(cors);
        }
        Ok(Self {
            listener,
            metrics,
            serving,
            router,
            state,
            connections,
            shutdown,
            grace,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where `/metrics` is served, when `ALIAS_METRICS_BIND` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|metrics| metrics.address)
    }

    /// The shared state the procedures see (for tests that need to hold its resources).
    pub fn state(&self) -> App {
        Arc::clone(&self.state)
    }

    /// Cancelling it starts a graceful shutdown (what SIGTERM/SIGINT do in `main`).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until shut down: then stops accepting, ends open event streams, stops running
    /// chat replies (saved as "stopped"), and waits for in-flight calls and those saves at
    /// most `ALIAS_SHUTDOWN_GRACE_SECONDS`.
    pub async fn run_until_stopped(mut self) -> std::io::Result<()> {
        let (state, grace) = (Arc::clone(&self.state), self.grace);
        if let Some(metrics) = self.metrics.take() {
            tokio::spawn(metrics.serve(Arc::clone(&state), self.shutdown.clone()));
        }
        // Until the last save: a restore must not replace the database under it.
        let serving = self.serving.take();
        self.serve().await;
        state.streams.wait_for_saves(grace).await;
        drop(serving);
        Ok(())
    }

    async fn serve(self) {
        let shutdown = self.shutdown;
        let server = server::serve(
            self.listener,
            self.router,
            self.connections,
            shutdown.clone(),
        );
        let grace = self.grace;
        let deadline = async move {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            () = server => {}
            () = deadline => {
                tracing::warn!(grace_seconds = grace.as_secs(), "shutdown grace period over; abandoning calls still running");
            }
        }
    }
}

/// The metrics listener, bound at start-up so a taken address stops the start.
struct MetricsListener {
    listener: TcpListener,
    address: SocketAddr,
    handle: PrometheusHandle,
}

impl MetricsListener {
    /// `None` (with an error logged) when another metrics recorder owns the process.
    async fn bind(address: SocketAddr) -> anyhow::Result<Option<Self>> {
        let Some(handle) = metrics::install() else {
            return Ok(None);
        };
        describe_metrics();
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("could not listen on {address} (ALIAS_METRICS_BIND)"))?;
        let address = listener.local_addr()?;
        tracing::info!(%address, "metrics served at /metrics");
        Ok(Some(Self {
            listener,
            address,
            handle,
        }))
    }

    async fn serve(self, state: App, shutdown: CancellationToken) {
        let before_scrape: Vec<metrics::BeforeScrape> = vec![
            {
                let db = state.db.clone();
                Arc::new(move || Box::pin(db::record_pool_metrics(db.clone())))
            },
            {
                let db = state.db.clone();
                Arc::new(move || Box::pin(jobs::record_queue_metrics(db.clone())))
            },
        ];
        metrics::serve(self.listener, self.handle, before_scrape, shutdown).await;
    }
}

/// HELP lines for every metric, once the recorder is installed (each layer describes its own).
fn describe_metrics() {
    rpc::describe_metrics();
    db::describe_metrics();
    jobs::describe_metrics();
    rate_limit::describe_metrics();
    providers::describe_metrics();
    auth::describe_metrics();
    chat::describe_metrics();
}

fn cors_layer(origins: &CorsOrigins) -> Option<CorsLayer> {
    let allow_origin = match origins {
        CorsOrigins::None => return None,
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(list.clone()),
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("trpc-accept"),
                HeaderName::from_static("x-trpc-source"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}
