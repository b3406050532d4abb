//! Durable background jobs, shared infrastructure with no domain knowledge: a domain enqueues
//! a job of its kind under a unique key (one queued job per key), and registers the handler
//! of that kind with the [`Worker`] at start-up.
//!
//! Jobs live in the `jobs` table, so they survive restarts. A worker claims due jobs with a
//! lease (`locked_until`), renews it while the handler runs, and releases it when the server
//! shuts down, so another instance (or this one after a restart) resumes the job. Claiming is
//! `FOR UPDATE SKIP LOCKED` on PostgreSQL and a conditional `UPDATE` (the single writer
//! decides) on SQLite: a job never runs twice at once. A handler whose lease renewal fails
//! (its job was cancelled, or the lease ran out and another worker may hold it) is stopped.
//! A failed run is retried after an exponential backoff with jitter.

mod store;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng as _;
use sea_orm::DatabaseConnection;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use store::{cancel, enqueue};

use crate::db::Backend;

pub fn describe_metrics() {
    metrics::describe_gauge!(
        "alias_jobs_due",
        "Background jobs due now that no worker holds yet, by kind (the queue's backlog)."
    );
    metrics::describe_counter!(
        "alias_jobs_failures_total",
        "Background job runs that failed and were scheduled again, by kind."
    );
}

/// The queue's backlog per kind, read at each scrape.
pub async fn record_queue_metrics(db: DatabaseConnection) {
    match store::due_by_kind(&db).await {
        Ok(due) => {
            for (kind, count) in due {
                // Kinds are the names the code registers, never user input.
                metrics::gauge!("alias_jobs_due", "kind" => kind).set(count as f64);
            }
        }
        Err(error) => tracing::warn!(%error, "could not count the job queue for metrics"),
    }
}

/// A claimed job, as its handler receives it.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: Uuid,
    pub kind: String,
    pub unique_key: String,
    pub payload: serde_json::Value,
    /// Failed runs before this one.
    pub attempts: i32,
    /// Why the last run failed (the `Retry` message), when it did.
    pub last_error: Option<String>,
    /// `enqueue` calls when it was claimed.
    pub(crate) requests: i64,
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    /// Finished: the job is removed.
    Done,
    /// Finished for now; run again at this time (a recurring job).
    RunAgainAt(DateTime<Utc>),
    /// Failed for a passing reason: run again after the backoff.
    Retry(String),
    /// Failed for a passing reason: run again after at least this long (a `Retry-After`).
    RetryAfter(Duration, String),
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Handler<S> = Arc<dyn Fn(S, Job) -> BoxFuture<Outcome> + Send + Sync>;

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// How often the queue is looked at for due jobs.
    pub poll_interval: Duration,
    /// How long a claim holds without renewal (a crashed worker's jobs wait this long).
    pub lease: Duration,
    /// Jobs run at once by this instance.
    pub concurrency: usize,
    /// First retry delay; doubles with each failure up to `backoff_max`, with ±25% jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

pub struct Worker<S> {
    db: DatabaseConnection,
    backend: Backend,
    options: WorkerOptions,
    handlers: HashMap<&'static str, Handler<S>>,
    id: String,
}

impl<S: Clone + Send + Sync + 'static> Worker<S> {
    pub fn new(db: DatabaseConnection, options: WorkerOptions) -> Self {
        Self {
            backend: Backend::of(&db),
            db,
            options,
            handlers: HashMap::new(),
            id: Uuid::now_v7().to_string(),
        }
    }

    /// Runs jobs of `kind` with `handler`.
    pub fn register<F, Fut>(mut self, kind: &'static str, handler: F) -> Self
    where
        F: Fn(S, Job) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        self.handlers.insert(
            kind,
            Arc::new(move |state, job| Box::pin(handler(state, job))),
        );
        self
    }

    /// Polls and runs jobs until `shutdown`; running jobs are then abandoned and released.
    pub fn spawn(self, state: S, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let worker = Arc::new(self);
        tokio::spawn(async move { worker.run(state, shutdown).await })
    }

    async fn run(self: Arc<Self>, state: S, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.options.concurrency.max(1)));
        let kinds: Vec<&'static str> = self.handlers.keys().copied().collect();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.options.poll_interval) => {}
            }
            let free = slots.available_permits();
            if free == 0 {
                continue;
            }
            let claimed = store::claim(
                &self.db,
                self.backend,
                &kinds,
                free,
                &self.id,
                self.options.lease,
            )
            .await;
            let jobs = match claimed {
                Ok(jobs) => jobs,
                Err(error) => {
                    tracing::warn!(%error, "could not claim jobs; trying again");
                    continue;
                }
            };
            for job in jobs {
                let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                let worker = Arc::clone(&self);
                let (state, shutdown) = (state.clone(), shutdown.clone());
                tokio::spawn(async move {
                    worker.run_one(state, job, &shutdown).await;
                    drop(permit);
                });
            }
        }
    }

    async fn run_one(&self, state: S, job: Job, shutdown: &CancellationToken) {
        let Some((&kind_label, handler)) = self.handlers.get_key_value(job.kind.as_str()) else {
            return;
        };
        let (id, kind, attempts, requests) = (job.id, job.kind.clone(), job.attempts, job.requests);
        let work = handler(state, job);
        // Renews the lease until it is lost (the job was cancelled, or the lease ran out
        // unrenewed and another worker may have it): then the handler is dropped, so a job
        // never runs twice at once.
        let renew = async {
            let mut every = tokio::time::interval(self.options.lease / 3);
            every.tick().await;
            let mut renewed_at = tokio::time::Instant::now();
            loop {
                every.tick().await;
                match store::renew(&self.db, id, &self.id, self.options.lease).await {
                    Ok(true) => renewed_at = tokio::time::Instant::now(),
                    Ok(false) => return,
                    Err(error) => {
                        tracing::warn!(%error, job = %id, "could not renew a job's lease");
                        // Stop before the lease can run out unrenewed (the next try is
                        // a third of a lease away).
                        let next_try = renewed_at.elapsed() + self.options.lease / 3;
                        if next_try >= self.options.lease {
                            return;
                        }
                    }
                }
            }
        };
        let outcome = tokio::select! {
            outcome = work => outcome,
            () = renew => {
                tracing::info!(job = %id, kind, "a job's lease was lost; its run stops");
                if let Err(error) = store::cancelled(&self.db, id).await {
                    tracing::warn!(%error, job = %id, "could not hand back a cancelled job");
                }
                return;
            }
            () = shutdown.cancelled() => {
                if let Err(error) = store::release(&self.db, id, &self.id).await {
                    tracing::warn!(%error, job = %id, "could not release a job at shutdown");
                }
                return;
            }
        };
        if matches!(outcome, Outcome::Retry(_) | Outcome::RetryAfter(..)) {
            metrics::counter!("alias_jobs_failures_total", "kind" => kind_label).increment(1);
        }
        let finished = match outcome {
            Outcome::Done => store::finish(&self.db, id, &self.id, requests).await,
            Outcome::RunAgainAt(at) => {
                store::reschedule(&self.db, id, &self.id, at, requests).await
            }
            Outcome::Retry(error) => {
                let delay = self.backoff(attempts);
                tracing::info!(job = %id, kind, attempts = attempts + 1, error, "job failed; retrying");
                store::retry(&self.db, id, &self.id, delay, &error).await
            }
            Outcome::RetryAfter(at_least, error) => {
                let delay = self.backoff(attempts).max(at_least);
                tracing::info!(job = %id, kind, attempts = attempts + 1, error, "job failed; retrying");
                store::retry(&self.db, id, &self.id, delay, &error).await
            }
        };
        if let Err(error) = finished {
            tracing::warn!(%error, job = %id, "could not record a job's outcome");
        }
    }

    /// `backoff_base * 2^attempts`, capped, then ±25% so failing jobs do not retry in step.
    fn backoff(&self, attempts: i32) -> Duration {
        let exponent = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
        let delay = self
            .options
            .backoff_base
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.options.backoff_max);
        delay.mul_f64(rand::thread_rng().gen_range(0.75..=1.25))
    }
}
