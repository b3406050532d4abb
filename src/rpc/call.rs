//! One procedure call as the server sees it: its span (continuing the caller's trace), its
//! log line, its metrics (calls, latency, in flight) and the panic guard.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures::FutureExt;
use tracing::Instrument;

use super::error::{ErrorCode, RpcError};
use super::router::{Kind, RequestInfo};
use crate::telemetry::metrics::InProgress;
use crate::telemetry::traces;

/// The `procedure` label of calls to paths no procedure has.
pub(super) const UNKNOWN_PROCEDURE: &str = "unknown";

pub fn describe_metrics() {
    metrics::describe_counter!(
        "alias_rpc_calls_total",
        "Procedure calls answered, by procedure, kind and tRPC code (OK for successes)."
    );
    metrics::describe_histogram!(
        "alias_rpc_call_duration_seconds",
        metrics::Unit::Seconds,
        "Time to answer a procedure call (a subscription: to set it up), by procedure and kind."
    );
    metrics::describe_gauge!(
        "alias_rpc_calls_in_flight",
        "Procedure calls being answered now, by procedure."
    );
    metrics::describe_gauge!(
        "alias_rpc_subscriptions_open",
        "Subscriptions streaming now, by procedure."
    );
}

pub(super) fn count_call(procedure: &str, kind: &'static str, code: &'static str) {
    metrics::counter!(
        "alias_rpc_calls_total",
        "procedure" => procedure.to_owned(),
        "kind" => kind,
        "code" => code,
    )
    .increment(1);
}

/// Runs one procedure (`path`, a procedure's own) inside its span: logs path, kind, duration
/// and outcome (never the input; successes at debug, failures at info, server errors at warn),
/// counts it in the metrics, continues the caller's trace (`traceparent`), and turns a panic
/// into a generic INTERNAL_SERVER_ERROR so the server keeps serving.
pub(super) fn run_guarded<T, F: Future<Output = Result<T, RpcError>>>(
    path: &str,
    kind: Kind,
    request: &RequestInfo,
    call: F,
) -> impl Future<Output = Result<T, RpcError>> + use<T, F> {
    let kind = kind.as_str();
    let span = tracing::info_span!(
        "rpc",
        path,
        kind,
        "rpc.system" = "trpc",
        "rpc.method" = path,
        "otel.name" = path,
        "otel.kind" = "server",
    );
    traces::continue_trace(&span, &request.headers);
    let procedure = path.to_owned();
    async move {
        let _in_flight = InProgress::start(metrics::gauge!(
            "alias_rpc_calls_in_flight",
            "procedure" => procedure.clone(),
        ));
        let started = Instant::now();
        let result = AssertUnwindSafe(call)
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                tracing::error!("procedure panicked");
                Err(RpcError::internal())
            });
        let elapsed = started.elapsed();
        metrics::histogram!(
            "alias_rpc_call_duration_seconds",
            "procedure" => procedure.clone(),
            "kind" => kind,
        )
        .record(elapsed.as_secs_f64());
        let code = result
            .as_ref()
            .err()
            .map_or("OK", |error| error.code.as_str());
        count_call(&procedure, kind, code);
        let duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        // Successes at debug: a line per call at info halves throughput (bench/run.sh).
        match &result {
            Ok(_) => tracing::debug!(duration_us, outcome = "ok", "rpc call"),
            // A flood of refusals would otherwise flood the log too.
            Err(error) if error.code == ErrorCode::TooManyRequests => {
                tracing::debug!(duration_us, outcome = ?error.code, "rpc call refused");
            }
            Err(error) if error.code.http_status() >= 500 => {
                tracing::warn!(duration_us, outcome = ?error.code, "rpc call failed");
            }
            Err(error) => tracing::info!(duration_us, outcome = ?error.code, "rpc call failed"),
        }
        result
    }
    .instrument(span)
}
