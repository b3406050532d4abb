//! Prometheus metrics: one recorder per process behind the `metrics` facade, rendered in the
//! Prometheus text format by `metrics-exporter-prometheus` on a listener of its own
//! (`ALIAS_METRICS_BIND`), never on the public port. Code records through the `metrics` macros
//! (`counter!`, `histogram!`, `gauge!`); this module installs the recorder, serves the scrape,
//! and keeps labels bounded. Infrastructure: it knows no metric of a domain.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics::Gauge;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Latency buckets, in seconds (5 ms to 60 s): calls, provider requests, time to first token.
const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// How often recorded latencies are folded into their buckets between scrapes (else they
/// pile up in memory when nobody scrapes).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Label value for anything outside a bounded set.
pub const OTHER: &str = "other";

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder the first time (every server in one process, as in the
/// tests, shares it) and returns its handle; `None` when another recorder was installed first.
/// Until it is installed the `metrics` macros record nothing, at no cost.
pub fn install() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(SECONDS_BUCKETS)
                .map_err(|error| tracing::error!(%error, "metrics buckets are invalid"))
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder)
                .map_err(|error| tracing::error!(%error, "a metrics recorder is already installed"))
                .ok()?;
            metrics::describe_gauge!(
                "alias_build_info",
                "Always 1; the labels say which build is running."
            );
            metrics::gauge!("alias_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Some(handle)
        })
        .clone()
}

/// Something to read just before each scrape (gauges of state held elsewhere: the database
/// pool, the job queue).
pub type BeforeScrape = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Serves `GET /metrics` on `listener` until `shutdown`, and folds latencies into their
/// buckets meanwhile.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    before_scrape: Vec<BeforeScrape>,
    shutdown: CancellationToken,
) {
    let upkeep = handle.clone();
    let upkeep_shutdown = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = upkeep_shutdown.cancelled() => return,
                () = tokio::time::sleep(UPKEEP_INTERVAL) => upkeep.run_upkeep(),
            }
        }
    });
    let scrape = Arc::new((handle, before_scrape));
    let router = axum::Router::new().route(
        "/metrics",
        get(move || {
            let scrape = Arc::clone(&scrape);
            async move { render(&scrape.0, &scrape.1).await }
        }),
    );
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "the metrics listener stopped");
    }
}

async fn render(handle: &PrometheusHandle, before_scrape: &[BeforeScrape]) -> Response {
    for read in before_scrape {
        read().await;
    }
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// A label whose values come from outside (a model name a user typed): the first `cap`
/// distinct values are kept, later ones are counted as [`OTHER`], so nobody can grow the
/// number of series without bound.
pub struct BoundedLabel {
    cap: usize,
    seen: Mutex<BTreeSet<String>>,
}

impl BoundedLabel {
    pub const fn new(cap: usize) -> Self {
        Self {
            cap,
            seen: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn value(&self, value: &str) -> String {
        // A poisoned lock only means a panic elsewhere mid-insert; the set is still usable.
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(value) {
            return value.to_owned();
        }
        if seen.len() >= self.cap {
            return OTHER.to_owned();
        }
        seen.insert(value.to_owned());
        value.to_owned()
    }
}

/// Counts something in progress (a call, an open subscription) for as long as it lives.
pub struct InProgress(Gauge);

impl InProgress {
    pub fn start(gauge: Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_label_keeps_its_first_values_and_folds_the_rest() {
        let label = BoundedLabel::new(2);
        assert_eq!(label.value("a"), "a");
        assert_eq!(label.value("b"), "b");
        assert_eq!(label.value("c"), OTHER);
        assert_eq!(label.value("a"), "a", "a kept value stays");
    }
}
