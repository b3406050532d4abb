//! Building and running the server: one function used by `main` and by every integration test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::http::{HeaderName, Method, header};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::app;
use crate::auth;
use crate::chat;
use crate::config::{Config, ConnectionConfig, CorsOrigins};
use crate::context::{App, AppState};
use crate::db;
use crate::files;
use crate::health;
use crate::jobs::{Worker, WorkerOptions};
use crate::mail;
use crate::rpc::{self, RpcOptions, RpcService};
use crate::secret_file;
use crate::security;
use crate::server;
use crate::storage;
use crate::users;
use crate::voice;

pub struct Application {
    listener: TcpListener,
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
            .merge(voice::routes(Arc::clone(&state)));
        if let Some(cors) = cors {
            router = router.layer(cors);
        }
        Ok(Self {
            listener,
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
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let (state, grace) = (Arc::clone(&self.state), self.grace);
        self.serve().await;
        state.streams.wait_for_saves(grace).await;
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
