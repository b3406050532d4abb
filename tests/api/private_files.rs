//! Data at rest is private to the server's user: the data folder 0700, the SQLite files and
//! generated keys 0600, and looser modes found at start-up are tightened.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use alias_server::config::Config;
use reqwest::StatusCode;

use crate::helpers::{DbKind, TestApp, unique_email};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Moves the data folder (and the SQLite file in it) to `var/alias` under the test's folder,
/// where it does not exist yet.
fn nested_data_dir(config: &mut Config) {
    let data_dir = config.data_dir.join("var").join("alias");
    config.database_url = format!("sqlite://{}?mode=rwc", data_dir.join("alias.db").display());
    config.data_dir = data_dir;
}

fn files(data_dir: &Path) -> Vec<PathBuf> {
    [
        "alias.db",
        "alias.db-wal",
        "alias.db-shm",
        "jwt-ed25519.pem",
        "master.key",
    ]
    .iter()
    .map(|name| data_dir.join(name))
    .collect()
}

#[tokio::test]
async fn the_data_folder_and_its_files_are_created_private_and_kept_private() {
    let app = TestApp::spawn_with(DbKind::Sqlite, nested_data_dir).await;
    let data_dir = app.data_dir.path().join("var").join("alias");
    // A write, so the WAL files exist.
    app.register(&unique_email(), "correct horse battery").await;
    assert_eq!(mode(&data_dir), 0o700, "data folder");
    for file in files(&data_dir) {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }

    // Loosened by someone (a backup restored with the wrong umask): tightened at start.
    set_mode(&data_dir, 0o755);
    for file in files(&data_dir) {
        set_mode(&file, 0o644);
    }
    let nested = data_dir.clone();
    let again = app
        .spawn_beside(move |config| config.data_dir = nested)
        .await;
    let (status, _) = again.query("system.health", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mode(&data_dir), 0o700, "data folder");
    for file in files(&data_dir) {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}
