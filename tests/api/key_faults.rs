//! `apiKeys.set`/`validate` as a key-validity oracle (a per-user limit, audited), and a key
//! service (KMS) that throttles or fails: SERVICE_UNAVAILABLE after a bounded number of
//! retries, then back to normal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use alias_server::config::KeyVaultConfig;
use aws_config::BehaviorVersion;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode as AxumStatus, Uri};
use axum::response::{IntoResponse, Response};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::each_database;
use crate::fake_providers::FakeProviders;
use crate::helpers::{DbKind, TestApp, data, error_code, error_reason};

const CHECKS_PER_HOUR: u32 = 3;

async fn validate(app: &TestApp, token: &str) -> (StatusCode, Value) {
    app.mutation_as(
        token,
        "apiKeys.validate",
        Some(json!({ "provider": "gemini" })),
    )
    .await
}

/// Ten `apiKeys.set` calls in one batched request, as the oracle abuse sent them.
async fn batch_of_sets(app: &TestApp, token: &str, api_key: &str) -> Vec<Value> {
    let calls = 10;
    let paths = vec!["apiKeys.set"; calls].join(",");
    let input: serde_json::Map<String, Value> = (0..calls)
        .map(|i| {
            (
                i.to_string(),
                json!({ "provider": "gemini", "apiKey": format!("{api_key}-{i}") }),
            )
        })
        .collect();
    let response = app
        .http
        .post(app.url(&format!("/trpc/{paths}?batch=1")))
        .bearer_auth(token)
        .json(&input)
        .send()
        .await
        .expect("batch");
    let body: Value = response.json().await.expect("json");
    body.as_array().cloned().unwrap_or_default()
}

async fn key_checks_are_limited_per_user_and_audited(db_kind: DbKind) {
    let providers = FakeProviders::start().await;
    let base_url = providers.base_url.clone();
    let app = TestApp::spawn_with(db_kind, move |config| {
        config.ai.gemini_base_url = base_url;
        config.api_key_checks_per_hour = CHECKS_PER_HOUR;
    })
    .await;
    let token = app.new_user().await;

    let answers = batch_of_sets(&app, &token, "AIza-rejected-key").await;
    let reasons: Vec<&str> = answers.iter().map(error_reason).collect();
    let rejected = reasons.iter().filter(|r| **r == "api_key_rejected").count();
    let limited = reasons.iter().filter(|r| **r == "rate_limited").count();
    assert_eq!(
        (rejected, limited),
        (CHECKS_PER_HOUR as usize, 10 - CHECKS_PER_HOUR as usize),
        "{reasons:?}"
    );
    assert_eq!(
        providers.seen().len(),
        CHECKS_PER_HOUR as usize,
        "refused checks never reach the provider"
    );
    let limited_answer = answers
        .iter()
        .find(|answer| error_reason(answer) == "rate_limited")
        .cloned()
        .unwrap_or_default();
    assert_eq!(error_code(&limited_answer), "TOO_MANY_REQUESTS");
    assert!(
        limited_answer["error"]["data"]["retryAfterSeconds"]
            .as_u64()
            .is_some_and(|seconds| seconds > 0),
        "{limited_answer}"
    );
    let (status, body) = validate(&app, &token).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(error_reason(&body), "rate_limited");

    let (status, events) = app.query_as(&token, "audit.list", None).await;
    assert_eq!(status, StatusCode::OK, "{events}");
    let actions: Vec<&str> = data(&events)["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|event| event["action"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let count = |action: &str| actions.iter().filter(|a| **a == action).count();
    assert_eq!(
        count("api_key_rejected"),
        CHECKS_PER_HOUR as usize,
        "{actions:?}"
    );
    assert_eq!(
        count("api_key_check_limited"),
        1,
        "once, not per refusal: {actions:?}"
    );

    let other = app.new_user().await;
    let (status, body) = app
        .mutation_as(
            &other,
            "apiKeys.set",
            Some(json!({ "provider": "gemini", "apiKey": "AIza-valid-other-user" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the limit is per user: {body}");
}
each_database!(key_checks_are_limited_per_user_and_audited);

/// How the stand-in in front of KMS answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum KmsMode {
    /// Passes requests to the real (moto) KMS.
    Pass,
    /// 400 `ThrottlingException`, as KMS answers past its request quota.
    Throttle,
    /// 500 `KMSInternalException` in KMS's JSON error format.
    InternalError,
    /// 502 with an HTML page, as a load balancer in front of KMS might.
    BadGateway,
}

/// An HTTP stand-in in front of moto: passes requests through, or answers them as a
/// throttled or failing KMS would, counting those answers.
struct KmsFront {
    url: String,
    mode: Arc<AtomicU8>,
    refused: Arc<AtomicUsize>,
}

impl KmsFront {
    async fn start(upstream: String) -> Self {
        let mode = Arc::new(AtomicU8::new(KmsMode::Pass as u8));
        let refused = Arc::new(AtomicUsize::new(0));
        let (mode_in, refused_in) = (Arc::clone(&mode), Arc::clone(&refused));
        let http = reqwest::Client::new();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (mode, refused) = (Arc::clone(&mode_in), Arc::clone(&refused_in));
                let (http, upstream) = (http.clone(), upstream.clone());
                async move {
                    let mode = mode.load(Ordering::SeqCst);
                    if mode == KmsMode::Pass as u8 {
                        return pass(&http, &upstream, method, &uri, headers, body).await;
                    }
                    refused.fetch_add(1, Ordering::SeqCst);
                    kms_failure(mode)
                }
            },
        );
        let addr = crate::helpers::serve_in_background(app).await;
        Self {
            url: format!("http://{addr}"),
            mode,
            refused,
        }
    }

    fn answer(&self, mode: KmsMode) {
        self.refused.store(0, Ordering::SeqCst);
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

fn kms_failure(mode: u8) -> Response {
    let json = |status: AxumStatus, kind: &str, message: &str| {
        (
            status,
            [("content-type", "application/x-amz-json-1.1")],
            json!({ "__type": kind, "message": message }).to_string(),
        )
            .into_response()
    };
    match mode {
        m if m == KmsMode::Throttle as u8 => json(
            AxumStatus::BAD_REQUEST,
            "ThrottlingException",
            "Rate exceeded",
        ),
        m if m == KmsMode::InternalError as u8 => json(
            AxumStatus::INTERNAL_SERVER_ERROR,
            "KMSInternalException",
            "An internal error occurred",
        ),
        _ => (
            AxumStatus::BAD_GATEWAY,
            [("content-type", "text/html")],
            "<html><body>502 Bad Gateway</body></html>",
        )
            .into_response(),
    }
}

async fn pass(
    http: &reqwest::Client,
    upstream: &str,
    method: Method,
    uri: &Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut request = http.request(method, format!("{upstream}{uri}")).body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let Ok(response) = request.send().await else {
        return AxumStatus::BAD_GATEWAY.into_response();
    };
    let status =
        AxumStatus::from_u16(response.status().as_u16()).unwrap_or(AxumStatus::BAD_GATEWAY);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/x-amz-json-1.1")
        .to_owned();
    let body = response.bytes().await.unwrap_or_default();
    (status, [("content-type", content_type)], body).into_response()
}

async fn create_kms_key(endpoint: &str) -> String {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .load()
        .await;
    aws_sdk_kms::Client::new(&config)
        .create_key()
        .send()
        .await
        .expect("create a KMS key")
        .key_metadata()
        .map(|metadata| metadata.key_id().to_owned())
        .expect("key id")
}

#[tokio::test]
#[cfg_attr(not(alias_test_kms), ignore = "ALIAS_TEST_KMS_ENDPOINT is not set")]
async fn a_throttled_or_failing_kms_is_service_unavailable_after_bounded_retries() {
    let endpoint = std::env::var("ALIAS_TEST_KMS_ENDPOINT").expect("ALIAS_TEST_KMS_ENDPOINT");
    let endpoint = endpoint.trim_end_matches('/').to_owned();
    let key_id = create_kms_key(&endpoint).await;
    let front = KmsFront::start(endpoint).await;
    let providers = FakeProviders::start().await;
    let (base_url, front_url) = (providers.base_url.clone(), front.url.clone());
    let app = TestApp::spawn_with(DbKind::Sqlite, move |config| {
        config.ai.gemini_base_url = base_url.clone();
        config.ai.openai_base_url = base_url;
        config.key_vault = KeyVaultConfig::Kms {
            key_id,
            endpoint: Some(front_url),
        };
    })
    .await;
    let token = app.new_user().await;
    let set = |provider: &str, api_key: &str| {
        app.mutation_as(
            &token,
            "apiKeys.set",
            Some(json!({ "provider": provider, "apiKey": api_key })),
        )
    };
    let (status, body) = set("gemini", "AIzaSy-valid-kms-key").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    for mode in [
        KmsMode::Throttle,
        KmsMode::InternalError,
        KmsMode::BadGateway,
    ] {
        front.answer(mode);
        let (status, body) = validate(&app, &token).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{mode:?}: {body}");
        assert_eq!(error_reason(&body), "key_service_unavailable", "{mode:?}");
        let (status, body) = set("openai", "sk-valid-during-kms-trouble").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{mode:?}: {body}");
        assert_eq!(error_reason(&body), "key_service_unavailable", "{mode:?}");
        // Two calls (Decrypt, GenerateDataKey), each retried, a bounded number of times.
        let attempts = front.refused();
        assert!(
            (3..=6).contains(&attempts),
            "{mode:?}: {attempts} KMS requests for two calls"
        );
    }

    front.answer(KmsMode::Pass);
    let (status, body) = validate(&app, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(data(&body)["valid"], true);
    let (_, listed) = app.query_as(&token, "apiKeys.list", None).await;
    assert_eq!(
        data(&listed).as_array().map(Vec::len),
        Some(1),
        "nothing half-written: {listed}"
    );
}
