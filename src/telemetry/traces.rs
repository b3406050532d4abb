//! OpenTelemetry traces: with the standard `OTEL_EXPORTER_OTLP_ENDPOINT` set, the spans of this
//! crate (a span per RPC call with `rpc.method`, per provider request, and a `db` span with
//! `db.operation` per database query group: each function of a domain's store) are exported over
//! OTLP/HTTP (protobuf) in batches; the exporter reads the other `OTEL_*` variables
//! (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`, `OTEL_BSP_SCHEDULE_DELAY`, ...) itself.
//! An incoming W3C `traceparent` is continued ([`continue_trace`]).

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::SpanExporter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt as _};
use tracing_subscriber::registry::LookupSpan;

const SERVICE_NAME: &str = "alias-server";

/// The exporting tracer provider; shutting it down sends the spans still batched.
pub struct Exporter(SdkTracerProvider);

impl Exporter {
    pub fn shutdown(&self) {
        if let Err(error) = self.0.shutdown() {
            eprintln!("warning: traces not exported at shutdown: {error}");
        }
    }
}

/// The layer that turns spans into OpenTelemetry spans and exports them.
pub fn layer<S>() -> anyhow::Result<(OpenTelemetryLayer<S, SdkTracer>, Exporter)>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let exporter = SpanExporter::builder().with_http().build()?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer(SERVICE_NAME);
    let layer = tracing_opentelemetry::layer().with_tracer(tracer);
    Ok((layer, Exporter(provider)))
}

/// Makes `span` a child of the caller's trace when the request carries a W3C `traceparent`
/// (without one, or without an exporter, nothing changes).
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    // Fails only when no OpenTelemetry layer is installed: then there is nothing to continue.
    let _ = span.set_parent(parent);
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}
