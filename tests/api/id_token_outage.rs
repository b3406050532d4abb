//! Google's (or Apple's) key server down: sign-ins waiting together share one download, a
//! failure is remembered briefly, and the last good keys keep working meanwhile.

use std::time::Duration;

use alias_server::config::IdProviderConfig;
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{DbKind, TestApp, error_code, unique_email};
use crate::id_provider::{FakeIdProvider, GOOGLE_CLIENT_ID, google_claims, sign};

/// Failures are remembered for `min_refetch` (at most 10 s).
async fn app(provider: &FakeIdProvider, min_refetch: Duration) -> TestApp {
    let jwks_url = provider.jwks_url.clone();
    TestApp::spawn_with(DbKind::Sqlite, move |config| {
        config.auth.google = IdProviderConfig {
            client_ids: vec![GOOGLE_CLIENT_ID.to_owned()],
            jwks_url,
        };
        config.auth.jwks_min_refetch = min_refetch;
    })
    .await
}

async fn google_sign_in(app: &TestApp, subject: &str) -> (StatusCode, Value) {
    let id_token = sign(0, &google_claims(subject, &unique_email(), true));
    app.mutation("auth.google", Some(json!({ "idToken": id_token })))
        .await
}

async fn sign_ins_together(app: &TestApp, count: usize) -> Vec<(StatusCode, Value)> {
    join_all((0..count).map(|i| async move { google_sign_in(app, &format!("g-{i}")).await })).await
}

#[tokio::test]
async fn sign_ins_during_an_outage_share_one_download_and_remember_its_failure() {
    let provider = FakeIdProvider::start().await;
    let app = app(&provider, Duration::from_secs(3)).await;
    provider.go_down();

    for (status, body) in sign_ins_together(&app, 8).await {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(error_code(&body), "SERVICE_UNAVAILABLE");
    }
    assert_eq!(
        provider.fetches(),
        1,
        "the waiting sign-ins shared one download instead of each waiting for its own"
    );
    let (status, _) = google_sign_in(&app, "g-again").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(provider.fetches(), 1, "the failure is remembered");

    provider.come_back();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, body) = google_sign_in(&app, "g-after").await;
    assert_eq!(status, StatusCode::OK, "only briefly: {body}");
    assert_eq!(provider.fetches(), 2);
}

#[tokio::test]
async fn the_last_good_keys_serve_while_the_key_server_is_down() {
    let provider = FakeIdProvider::start().await;
    provider.set_max_age(1);
    let app = app(&provider, Duration::from_secs(60)).await;
    let (status, body) = google_sign_in(&app, "g-before").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(provider.fetches(), 1);

    // The keys are now past their max-age, and the server is down.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    provider.go_down();
    for (status, body) in sign_ins_together(&app, 6).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(
        provider.fetches(),
        2,
        "one (failed) download for all of them"
    );
}
