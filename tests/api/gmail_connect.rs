//! Connecting Gmail, continued: grants never left open at Google, concurrent connects, and
//! the refresh token kept out of the logs and the database (against `fake_google.rs`).

use entity::{google_connections, jobs};
use reqwest::StatusCode;
use sea_orm::EntityTrait;
use serde_json::json;

use crate::each_database;
use crate::fake_google::FakeGoogle;
use crate::gmail::{connect, integration, spawn, synced, wait_for};
use crate::helpers::{DbKind, data, error_reason};
use crate::log_capture::LogCapture;

/// A grant refused for lacking the Gmail scope is revoked; connecting another Google account
/// revokes the previous account's grant, connecting the same one again revokes nothing.
async fn unused_grants_are_revoked(db: DbKind) {
    let google = FakeGoogle::start().await;
    let app = spawn(db, &google).await;
    let token = app.new_user().await;
    let (status, body) = app
        .mutation_as(
            &token,
            "integrations.google.connect",
            Some(json!({ "serverAuthCode": "nogmail:narrow@example.com" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_reason(&body), "scope_missing");
    let revoked = google.revoked();
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert!(revoked[0].starts_with("1//refresh-"), "{revoked:?}");
    assert!(google.refresh_tokens().is_empty(), "the grant is gone");

    let (first, second) = ("first@example.com", "second@example.com");
    google.add(first, "t1", "a@example.com", "One", "one");
    google.add(second, "t2", "a@example.com", "Two", "two");
    connect(&app, &token, first).await;
    wait_for(&app, &token, synced(1)).await;
    connect(&app, &token, first).await;
    assert_eq!(
        google.revoked().len(),
        1,
        "the same account: nothing revoked"
    );
    connect(&app, &token, second).await;
    let revoked = google.revoked();
    assert_eq!(revoked.len(), 2, "{revoked:?}");
    assert!(
        revoked[1].contains("first-example.com"),
        "the first account's grant: {revoked:?}"
    );
    assert!(
        google
            .refresh_tokens()
            .iter()
            .all(|token| !token.contains("second") || !revoked.contains(token)),
        "the new account's grant stays"
    );
    let connection = wait_for(&app, &token, synced(1)).await;
    assert_eq!(connection["email"], second);
}
each_database!(unused_grants_are_revoked);

/// Concurrent connects of one user all succeed: one connection, one queued sync.
async fn concurrent_connects(db: DbKind) {
    let google = FakeGoogle::start().await;
    let email = "eager@example.com";
    google.add(email, "t1", "a@example.com", "One", "one");
    let app = spawn(db, &google).await;
    let token = app.new_user().await;
    let calls = (0..6).map(|n| {
        let (app, token) = (&app, &token);
        let account = if n % 3 == 2 {
            "other@example.com"
        } else {
            email
        };
        async move {
            app.mutation_as(
                token,
                "integrations.google.connect",
                Some(json!({ "serverAuthCode": format!("gmail:{account}") })),
            )
            .await
        }
    });
    for (status, body) in futures::future::join_all(calls).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let db_conn = app.db().await;
    let rows = google_connections::Entity::find()
        .all(&db_conn)
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1);
    let queued = jobs::Entity::find().all(&db_conn).await.expect("jobs");
    assert!(queued.len() <= 1, "{queued:?}");
    // Whichever account won, it syncs.
    connect(&app, &token, email).await;
    wait_for(&app, &token, synced(1)).await;
    let (_, listed) = app.query_as(&token, "integrations.list", None).await;
    assert_eq!(data(&listed).as_array().map(Vec::len), Some(1));
}
each_database!(concurrent_connects);

/// Through connecting, syncing, a refused refresh and disconnecting, the refresh token is
/// never logged, never stored in plaintext, never returned.
async fn refresh_token_stays_secret(db: DbKind) {
    let logs = LogCapture::start();
    let google = FakeGoogle::start().await;
    let email = "secret@example.com";
    google.add(email, "t1", "a@example.com", "One", "one");
    let app = spawn(db, &google).await;
    let token = app.new_user().await;
    connect(&app, &token, email).await;
    wait_for(&app, &token, synced(1)).await;
    let refresh_token = google.refresh_tokens().pop().expect("issued");

    let db_conn = app.db().await;
    let rows = google_connections::Entity::find()
        .all(&db_conn)
        .await
        .expect("rows");
    let stored = format!("{rows:?}");
    assert!(!stored.contains(&refresh_token));
    let bytes = refresh_token.as_bytes();
    for row in &rows {
        for column in [&row.ciphertext, &row.nonce, &row.wrapped_key] {
            assert!(!column.windows(bytes.len()).any(|window| window == bytes));
        }
    }
    let queued = jobs::Entity::find().all(&db_conn).await.expect("jobs");
    assert!(!format!("{queued:?}").contains(&refresh_token));
    let listed = integration(&app, &token).await;
    assert!(!listed.to_string().contains(&refresh_token));

    // A refused refresh (logged as a failure) and a disconnect (revoking) log no token.
    google.revoke_all(email);
    app.mutation_as(&token, "integrations.google.syncNow", None)
        .await;
    wait_for(&app, &token, |c| c["status"] == "reconnect_required").await;
    let (status, _) = app
        .mutation_as(&token, "integrations.google.disconnect", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let logged = logs.text();
    assert!(
        logged.contains("Gmail sync failed"),
        "the capture works: {logged}"
    );
    assert!(
        !logged.contains(&refresh_token),
        "the token is logged: {logged}"
    );
    assert!(
        !logged.contains("1//refresh-"),
        "a token is logged: {logged}"
    );
}
each_database!(refresh_token_stays_secret);
