//! The application's own routes and `system.*` procedures, on both databases.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_databases;
use crate::helpers::{DbKind, TestApp};

async fn health_reports_the_database_in_use(app: TestApp) {
    let (status, body) = app.query("system.health", None).await;
    assert_eq!(status, StatusCode::OK);
    let expected = match app.db_kind {
        DbKind::Sqlite => "sqlite",
        DbKind::Postgres => "postgres",
    };
    assert_eq!(body["result"]["data"]["database"], expected);
    assert_eq!(body["result"]["data"]["status"], "ok");
    assert_eq!(body["result"]["data"]["version"], env!("CARGO_PKG_VERSION"));
}
both_databases!(health_reports_the_database_in_use);

async fn probes_answer_plain_json(app: TestApp) {
    let health: Value = app
        .http
        .get(app.url("/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health, json!({ "status": "ok" }));
    let response = app.http.get(app.url("/ready")).send().await.expect("ready");
    assert_eq!(response.status(), StatusCode::OK);
    let ready: Value = response.json().await.expect("json");
    assert_eq!(ready["status"], "ready");
}
both_databases!(probes_answer_plain_json);

async fn stream_check_ticks_and_resumes(app: TestApp) {
    let events = app
        .subscribe(
            "system.streamCheck",
            Some(&json!({ "count": 4 })),
            Some("2"),
        )
        .await
        .collect()
        .await;
    let seqs: Vec<_> = events
        .iter()
        .filter(|e| e.id.is_some())
        .map(|e| e.json()["seq"].clone())
        .collect();
    assert_eq!(seqs, [json!(3), json!(4)]);
    assert_eq!(
        events.last().and_then(|e| e.event.as_deref()),
        Some("return")
    );
}
both_databases!(stream_check_ticks_and_resumes);

#[tokio::test]
async fn stream_check_rejects_out_of_range_counts() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    let events = app
        .subscribe("system.streamCheck", Some(&json!({ "count": 500 })), None)
        .await
        .collect()
        .await;
    let last = events.last().expect("events");
    assert_eq!(last.event.as_deref(), Some("serialized-error"));
    assert_eq!(last.json()["data"]["code"], "BAD_REQUEST");
}

#[tokio::test]
async fn the_sqlite_database_is_a_real_file_in_the_data_dir() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    assert!(app.data_dir.path().join("alias.db").is_file());
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let app = TestApp::spawn_with(DbKind::Sqlite, |config| {
        config.cors_origins =
            alias_server::config::CorsOrigins::List(vec![axum::http::HeaderValue::from_static(
                "https://app.alias.test",
            )]);
    })
    .await;
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url("/trpc/system.health"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://app.alias.test")
        .await
        .expect("preflight");
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://app.alias.test")
    );
    let denied = preflight("https://evil.test").await.expect("preflight");
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

/// Start-up with a bad variable stops with one line that names it.
#[test]
fn invalid_configuration_stops_start_up_naming_the_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_alias-server"))
        .env("ALIAS_BIND", "not-an-address")
        .env(
            "ALIAS_DATA_DIR",
            std::env::temp_dir().join("alias-config-test"),
        )
        .output()
        .expect("run the binary");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("ALIAS_BIND"), "{stderr}");
}
