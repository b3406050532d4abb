//! OpenTelemetry traces: the server (the real binary, whose process installs the exporter)
//! sends its spans over OTLP/HTTP to a small receiver here, which decodes the protobuf the
//! collector would.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use serde_json::{Value, json};

use crate::fake_providers::FakeProviders;
use crate::helpers::{serve_in_background, unique_email};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// Every span received on `POST /v1/traces`.
async fn receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let received = Arc::clone(&spans);
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let received = Arc::clone(&received);
            async move {
                let request = ExportTraceServiceRequest::decode(body).unwrap_or_default();
                let batch = request
                    .resource_spans
                    .into_iter()
                    .flat_map(|resource| resource.scope_spans)
                    .flat_map(|scope| scope.spans);
                if let Ok(mut spans) = received.lock() {
                    spans.extend(batch);
                }
                ""
            }
        }),
    );
    let addr = serve_in_background(app).await;
    (format!("http://{addr}"), spans)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(
            |attribute| match attribute.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(value) => Some(value.as_str()),
                _ => None,
            },
        )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test]
async fn an_rpc_span_continues_the_callers_trace() {
    let (endpoint, spans) = receiver().await;
    let providers = FakeProviders::start().await;
    let data_dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_alias-server"))
            .env("ALIAS_BIND", format!("127.0.0.1:{port}"))
            .env("ALIAS_DATA_DIR", data_dir.path())
            .env("ALIAS_LOG", "warn")
            .env_remove("DATABASE_URL")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("ALIAS_OPENAI_BASE_URL", &providers.base_url)
            .stdout(Stdio::null())
            .spawn()
            .expect("start alias-server"),
    );
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/trpc/system.health");
    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01");
    let mut answered = false;
    for _ in 0..100 {
        let sent = http
            .get(&url)
            .header("traceparent", &traceparent)
            .send()
            .await;
        if sent.is_ok_and(|response| response.status().is_success()) {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "the server answers");

    let span = wait_for(&spans, |span| {
        attribute(span, "rpc.method") == Some("system.health")
    })
    .await;
    assert_eq!(hex(&span.trace_id), TRACE_ID, "the caller's trace goes on");
    assert_eq!(hex(&span.parent_span_id), PARENT_SPAN_ID);
    assert_eq!(span.name, "system.health");
    assert_eq!(attribute(&span, "rpc.system"), Some("trpc"));

    // A key check: the provider request is a span inside the call's.
    let register =
        json!({ "email": unique_email(), "password": "correct horse battery", "name": "T" });
    let session: Value = http
        .post(format!("http://127.0.0.1:{port}/trpc/auth.register"))
        .json(&register)
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    let token = session["result"]["data"]["accessToken"]
        .as_str()
        .unwrap_or_default();
    let set = json!({ "provider": "openai", "apiKey": "sk-valid-traced-key" });
    let response = http
        .post(format!("http://127.0.0.1:{port}/trpc/apiKeys.set"))
        .bearer_auth(token)
        .json(&set)
        .send()
        .await
        .expect("apiKeys.set");
    assert!(response.status().is_success());
    let call = wait_for(&spans, |span| {
        attribute(span, "rpc.method") == Some("apiKeys.set")
    })
    .await;
    let provider = wait_for(&spans, |span| {
        attribute(span, "gen_ai.system") == Some("openai")
    })
    .await;
    assert_eq!(provider.trace_id, call.trace_id);
    assert_eq!(provider.parent_span_id, call.span_id);
    assert_eq!(attribute(&provider, "operation"), Some("check_key"));
    // And the key's database work is a span inside the call's too.
    let saved = wait_for(&spans, |span| {
        attribute(span, "db.operation") == Some("keys.save")
    })
    .await;
    assert_eq!(saved.name, "db");
    assert_eq!(saved.trace_id, call.trace_id);
    assert_eq!(saved.parent_span_id, call.span_id);
}

/// The first span received that `matches`, waiting up to 10 s.
async fn wait_for(spans: &Mutex<Vec<Span>>, matches: impl Fn(&Span) -> bool) -> Span {
    for _ in 0..100 {
        let found = spans
            .lock()
            .ok()
            .and_then(|spans| spans.iter().find(|span| matches(span)).cloned());
        if let Some(span) = found {
            return span;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no such span arrived");
}
