//! Prometheus metrics on their own listener (`ALIAS_METRICS_BIND`): never on the public port,
//! counters that move with what the server does, and an exposition `promtool` accepts.

use std::collections::HashMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use serde_json::json;

use crate::chat::{Chat, new_id, payloads};
use crate::helpers::{DbKind, TestApp, unique_email};

const PASSWORD: &str = "correct horse battery";

async fn with_metrics(adjust: impl FnOnce(&mut alias_server::config::Config)) -> Chat {
    Chat::start_with(DbKind::Sqlite, "openai", |config| {
        config.metrics_bind = Some("127.0.0.1:0".parse().expect("address"));
        adjust(config);
    })
    .await
}

async fn scrape(app: &TestApp) -> String {
    let addr = app.metrics_addr.expect("a metrics listener");
    let response = app
        .http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.expect("metrics text")
}

/// Every sample of the exposition: `name{labels}` (labels as written) → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of the samples of `name` whose labels include every `label="value"` given.
fn total(samples: &HashMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
            series_name == name
                && labels
                    .iter()
                    .all(|(key, value)| rest.contains(&format!("{key}=\"{value}\"")))
        })
        .map(|(_, value)| value)
        .sum()
}

#[tokio::test]
async fn metrics_are_served_apart_and_never_on_the_public_port() {
    let chat = with_metrics(|_| {}).await;
    let (status, _) = chat.app.query("system.health", None).await;
    assert_eq!(status, StatusCode::OK);
    let public = chat
        .app
        .http
        .get(chat.app.url("/metrics"))
        .send()
        .await
        .expect("public /metrics");
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    let text = scrape(&chat.app).await;
    assert!(text.contains("alias_build_info{version=\""), "{text}");
    assert!(text.contains("# TYPE alias_rpc_call_duration_seconds histogram"));

    let without = TestApp::spawn(DbKind::Sqlite).await;
    assert_eq!(without.metrics_addr, None, "off unless ALIAS_METRICS_BIND");
}

/// Registers, signs in (right and wrong), has a reply written by the fake provider, has a
/// search refused by its limit and calls a path that does not exist; answers the scrapes from
/// before and after.
async fn scripted_session(chat: &Chat) -> (HashMap<String, f64>, String) {
    let app = &chat.app;
    let before = samples(&scrape(app).await);
    let email = unique_email();
    app.register(&email, PASSWORD).await;
    let right = json!({ "email": email, "password": PASSWORD });
    let (status, _) = app.mutation("auth.login", Some(right)).await;
    assert_eq!(status, StatusCode::OK);
    let wrong = json!({ "email": email, "password": "not the password" });
    let (status, _) = app.mutation("auth.login", Some(wrong)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let events = chat
        .send(&chat.input("Hi there", &new_id()), None)
        .await
        .collect()
        .await;
    let done = payloads(&events).pop().expect("done");
    assert_eq!(done["message"]["status"], "complete", "{done}");
    for expected in [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS] {
        let (status, body) = app
            .query_as(&chat.token, "chat.search", Some(json!({ "query": "hi" })))
            .await;
        assert_eq!(status, expected, "{body}");
    }
    let (status, _) = app.query("no.such.procedure", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    (before, scrape(app).await)
}

#[tokio::test]
async fn a_session_moves_the_counters() {
    let chat = with_metrics(|config| config.chat.search_limit_per_minute = 1).await;
    let (before, text) = scripted_session(&chat).await;
    let after = samples(&text);
    let moved = |name: &str, labels: &[(&str, &str)]| {
        total(&after, name, labels) - total(&before, name, labels)
    };
    let ok = [("procedure", "auth.register"), ("code", "OK")];
    assert_eq!(moved("alias_rpc_calls_total", &ok), 1.0, "{text}");
    let register = [("procedure", "auth.register")];
    assert_eq!(
        moved("alias_rpc_call_duration_seconds_count", &register),
        1.0
    );
    let success = [("method", "password"), ("outcome", "success")];
    assert_eq!(moved("alias_sign_ins_total", &success), 1.0, "{text}");
    let refused = [("method", "password"), ("outcome", "invalid_credentials")];
    assert_eq!(moved("alias_sign_ins_total", &refused), 1.0);
    let reply = [("provider", "openai"), ("outcome", "complete")];
    assert_eq!(moved("alias_chat_replies_total", &reply), 1.0, "{text}");
    assert!(moved("alias_chat_tokens_total", &[("direction", "output")]) > 0.0);
    assert_eq!(
        moved("alias_chat_time_to_first_token_seconds_count", &[]),
        1.0
    );
    let stream = [("provider", "openai"), ("operation", "stream")];
    assert!(moved("alias_provider_request_duration_seconds_count", &stream) >= 1.0);
    let search = [("limit", "chat_search")];
    assert_eq!(moved("alias_rate_limit_refusals_total", &search), 1.0);
    let limited = [("procedure", "chat.search"), ("code", "TOO_MANY_REQUESTS")];
    assert_eq!(moved("alias_rpc_calls_total", &limited), 1.0);
    let unknown = [("procedure", "unknown"), ("code", "NOT_FOUND")];
    assert_eq!(moved("alias_rpc_calls_total", &unknown), 1.0);
    assert!(
        !text.contains("no.such.procedure"),
        "a path that is no procedure never becomes a label"
    );
    let in_flight = [("procedure", "auth.register")];
    assert_eq!(total(&after, "alias_rpc_calls_in_flight", &in_flight), 0.0);
    let open = [("procedure", "chat.send")];
    assert_eq!(total(&after, "alias_rpc_subscriptions_open", &open), 0.0);
    assert!(total(&after, "alias_db_pool_connections", &[("state", "idle")]) >= 1.0);
    assert!(total(&after, "alias_db_pool_max_connections", &[]) >= 1.0);
}

/// The scrape after the same session passes `promtool check metrics` (Prometheus' own lint:
/// format, HELP and TYPE lines, `_total` counters, base units).
#[tokio::test]
#[cfg_attr(not(alias_test_promtool), ignore = "promtool is not on the PATH")]
async fn promtool_accepts_the_scrape() {
    let chat = with_metrics(|config| config.chat.search_limit_per_minute = 1).await;
    let (_, text) = scripted_session(&chat).await;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the scrape");
    let output = child.wait_with_output().expect("promtool");
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
