//! The deployment guide: the systemd unit passes `systemd-analyze verify`; a signing key
//! rotates with overlap.

use std::process::Command;

/// Verified as installed, except that `ExecStart` names this build's binary (the unit's
/// `/usr/local/bin/alias-server` exists only once installed, and verify checks it).
#[test]
#[cfg_attr(
    not(alias_test_systemd_analyze),
    ignore = "systemd-analyze is not on the PATH"
)]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/alias-server.service"
    ))
    .expect("deploy/alias-server.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/alias-server serve"));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("alias-server.service");
    let built = unit.replace(
        "/usr/local/bin/alias-server",
        env!("CARGO_BIN_EXE_alias-server"),
    );
    std::fs::write(&path, built).expect("write the unit");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn jwks_kids(app: &crate::helpers::TestApp) -> Vec<String> {
    let jwks: serde_json::Value = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("jwks json");
    jwks["keys"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .filter_map(|key| key["kid"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The guide's signing-key rotation: a server with a new key and the old one in
/// `ALIAS_JWT_PREVIOUS_KEY_FILES` accepts tokens of both and publishes both; without the old
/// key, its tokens are refused.
#[tokio::test]
async fn a_rotated_signing_key_keeps_verifying_its_tokens_while_listed() {
    use crate::helpers::{DbKind, TestApp, error_reason};
    use reqwest::StatusCode;

    let old = TestApp::spawn(DbKind::Sqlite).await;
    let old_token = old.new_user().await;
    let old_key = old.data_dir.path().join("jwt-ed25519.pem");
    let database_url = old.database_url.clone();
    let rotated = TestApp::spawn_with(DbKind::Sqlite, {
        let (database_url, old_key) = (database_url.clone(), old_key.clone());
        move |config| {
            config.database_url = database_url;
            config.auth.jwt_previous_key_files = vec![old_key];
        }
    })
    .await;
    let (status, body) = rotated.query_as(&old_token, "users.me", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let kids = jwks_kids(&rotated).await;
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert_eq!(
        kids[1],
        jwks_kids(&old).await[0],
        "the old key is listed after the new"
    );
    let new_token = rotated.new_user().await;
    let (status, _) = rotated.query_as(&new_token, "users.me", None).await;
    assert_eq!(status, StatusCode::OK);

    let done = TestApp::spawn_with(DbKind::Sqlite, move |config| {
        config.database_url = database_url;
    })
    .await;
    let (status, body) = done.query_as(&old_token, "users.me", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_reason(&body), "invalid_token");
}
