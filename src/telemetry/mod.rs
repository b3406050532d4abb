//! Logging through tracing (human-readable by default, JSON lines with
//! `ALIAS_LOG_FORMAT=json`), traces exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set ([`traces`]), and Prometheus metrics ([`metrics`]).

pub mod metrics;
pub mod traces;

use std::io::IsTerminal as _;

use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, Registry};

use crate::config::LogFormat;

/// What must outlive serving: the trace exporter, flushed by [`Telemetry::shutdown`].
pub struct Telemetry {
    exporter: Option<traces::Exporter>,
}

impl Telemetry {
    /// Sends the spans still batched (call before exiting).
    pub fn shutdown(&self) {
        if let Some(exporter) = &self.exporter {
            exporter.shutdown();
        }
    }
}

/// Installs the global subscriber. An invalid filter falls back to `info` with a warning, and
/// a trace exporter that cannot be built is reported and left out: logging and tracing must
/// never be the reason the server does not start.
pub fn init(format: LogFormat, filter: &str, export_traces: bool) -> Telemetry {
    let (filter, invalid) = match EnvFilter::try_new(filter) {
        Ok(filter) => (filter, None),
        Err(error) => (EnvFilter::new("info"), Some(error)),
    };
    // Colour codes only for a terminal: in a log file they are half of every line.
    let logs = tracing_subscriber::fmt::layer().with_ansi(std::io::stdout().is_terminal());
    let logs = match format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let (spans, exporter, failed) = match export_traces.then(traces::layer::<Registry>) {
        None => (None, None, None),
        Some(Ok((layer, exporter))) => (Some(layer), Some(exporter), None),
        Some(Err(error)) => (None, None, Some(error)),
    };
    // Our own spans only, whatever the log filter: dependencies' spans would be noise.
    let spans = spans
        .map(|layer| layer.with_filter(Targets::new().with_target("alias_server", Level::INFO)));
    let installed = tracing_subscriber::registry()
        .with(spans)
        .with(logs.with_filter(filter))
        .try_init();
    if installed.is_ok() {
        if let Some(error) = invalid {
            tracing::warn!(%error, "ALIAS_LOG is not a valid filter; logging at info");
        }
        if let Some(error) = failed {
            tracing::error!(%error, "traces cannot be exported (OTEL_EXPORTER_OTLP_*); serving without");
        }
    }
    Telemetry { exporter }
}
