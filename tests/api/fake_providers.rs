//! A local stand-in for the Gemini, OpenAI and Anthropic APIs, speaking their wire formats.
//! What it answers depends on the API key: `…valid…` works, `…rejected…` is refused (as each
//! provider refuses), `…forbidden…` gets 403, `…slow…` answers after 3 s, `…broken…` gets 500.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

/// One request the fake received: which provider's API and the key it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub provider: &'static str,
    pub api_key: String,
}

pub struct FakeProviders {
    pub base_url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeProviders {
    pub async fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (gemini, openai, anthropic) = (Arc::clone(&seen), Arc::clone(&seen), Arc::clone(&seen));
        let app = axum::Router::new()
            .route(
                "/v1beta/models",
                get(move |headers: HeaderMap| gemini_models(headers, gemini)),
            )
            .route(
                "/v1/models",
                get(move |headers: HeaderMap| {
                    let seen = if headers.contains_key("x-api-key") {
                        Arc::clone(&anthropic)
                    } else {
                        Arc::clone(&openai)
                    };
                    openai_or_anthropic_models(headers, seen)
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base_url: format!("http://{addr}"),
            seen,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .map(|seen| seen.clone())
            .unwrap_or_default()
    }
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn verdict(api_key: &str) -> Option<StatusCode> {
    if api_key.contains("slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if api_key.contains("rejected") {
        Some(StatusCode::UNAUTHORIZED)
    } else if api_key.contains("forbidden") {
        Some(StatusCode::FORBIDDEN)
    } else if api_key.contains("broken") {
        Some(StatusCode::INTERNAL_SERVER_ERROR)
    } else {
        None
    }
}

async fn gemini_models(headers: HeaderMap, seen: Arc<Mutex<Vec<Seen>>>) -> Response {
    let api_key = header(&headers, "x-goog-api-key");
    record(&seen, "gemini", &api_key);
    match verdict(&api_key).await {
        // Gemini refuses a bad key with 400 INVALID_ARGUMENT, not 401.
        Some(StatusCode::UNAUTHORIZED) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": { "code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT" } })),
        )
            .into_response(),
        Some(status) => status.into_response(),
        None => axum::Json(json!({ "models": [{ "name": "models/gemini-2.5-flash" }] })).into_response(),
    }
}

async fn openai_or_anthropic_models(headers: HeaderMap, seen: Arc<Mutex<Vec<Seen>>>) -> Response {
    let (provider, api_key) = if headers.contains_key("x-api-key") {
        if header(&headers, "anthropic-version").is_empty() {
            return StatusCode::BAD_REQUEST.into_response();
        }
        ("anthropic", header(&headers, "x-api-key"))
    } else {
        let bearer = header(&headers, "authorization");
        (
            "openai",
            bearer
                .strip_prefix("Bearer ")
                .unwrap_or_default()
                .to_owned(),
        )
    };
    record(&seen, provider, &api_key);
    match verdict(&api_key).await {
        Some(status) => (
            status,
            axum::Json(json!({ "error": { "message": "invalid key" } })),
        )
            .into_response(),
        None => axum::Json(json!({ "data": [{ "id": "model-1" }] })).into_response(),
    }
}

fn record(seen: &Mutex<Vec<Seen>>, provider: &'static str, api_key: &str) {
    if let Ok(mut seen) = seen.lock() {
        seen.push(Seen {
            provider,
            api_key: api_key.to_owned(),
        });
    }
}
