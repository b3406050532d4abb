//! The database in trouble: an exhausted pool, a SQLite file made read-only then writable
//! again, a PostgreSQL that stops taking writes. Calls are told to retry (SERVICE_UNAVAILABLE
//! with `retryAfterSeconds`), never a 500; `/ready` says when the database cannot write; and
//! the server recovers by itself.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, TransactionTrait};
use serde_json::{Value, json};

use crate::each_database;
use crate::helpers::{DbKind, TestApp, error_code, error_reason};

async fn app(db_kind: DbKind, pool: u32) -> TestApp {
    TestApp::spawn_with(db_kind, |config| {
        config.db_max_connections = pool;
        config.db_acquire_timeout = Duration::from_millis(500);
    })
    .await
}

fn assert_retry_later(status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_code(body), "SERVICE_UNAVAILABLE");
    assert!(
        matches!(error_reason(body), "database_busy" | "database_unavailable"),
        "{body}"
    );
    assert!(
        body["error"]["data"]["retryAfterSeconds"]
            .as_u64()
            .is_some_and(|seconds| seconds >= 1),
        "{body}"
    );
}

async fn ready(app: &TestApp) -> StatusCode {
    app.http
        .get(app.url("/ready"))
        .send()
        .await
        .expect("/ready")
        .status()
}

async fn update_preferences(app: &TestApp, token: &str, temperature: f64) -> (StatusCode, Value) {
    app.mutation_as(
        token,
        "preferences.update",
        Some(json!({ "temperature": temperature })),
    )
    .await
}

async fn an_exhausted_pool_is_service_unavailable_then_recovers(db_kind: DbKind) {
    let app = app(db_kind, 2).await;
    let token = app.new_user().await;
    let held = [
        app.state.db.begin().await.expect("hold a connection"),
        app.state.db.begin().await.expect("hold another"),
    ];
    let (status, body) = app.query_as(&token, "chat.sessions.list", None).await;
    assert_retry_later(status, &body);
    assert_eq!(error_reason(&body), "database_busy");
    let (status, body) = update_preferences(&app, &token, 0.3).await;
    assert_retry_later(status, &body);

    drop(held);
    let (status, body) = app.query_as(&token, "chat.sessions.list", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
each_database!(an_exhausted_pool_is_service_unavailable_then_recovers);

/// Makes a file read-only for this process, even as root (which ignores modes: then the file
/// is also made immutable); undone on drop, so the test's folder can be removed.
struct ReadOnly {
    path: PathBuf,
    immutable: bool,
}

impl ReadOnly {
    fn make(path: &Path) -> Self {
        set_mode(path, 0o444);
        let mut read_only = Self {
            path: path.to_owned(),
            immutable: false,
        };
        if is_writable(path) {
            read_only.immutable = chattr(path, "+i");
        }
        assert!(
            !is_writable(path),
            "could not make {} read-only (as root without `chattr`?)",
            path.display()
        );
        read_only
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if self.immutable {
            chattr(&self.path, "-i");
        }
        set_mode(&self.path, 0o600);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn is_writable(path: &Path) -> bool {
    std::fs::OpenOptions::new().append(true).open(path).is_ok()
}

fn chattr(path: &Path, flag: &str) -> bool {
    std::process::Command::new("chattr")
        .arg(flag)
        .arg(path)
        .status()
        .is_ok_and(|status| status.success())
}

#[tokio::test]
async fn a_sqlite_file_made_read_only_then_writable_recovers_by_itself() {
    let app = app(DbKind::Sqlite, 6).await;
    let token = app.new_user().await;
    assert_eq!(ready(&app).await, StatusCode::OK);

    let read_only = ReadOnly::make(&app.data_dir.path().join("alias.db"));
    assert_eq!(ready(&app).await, StatusCode::SERVICE_UNAVAILABLE);
    // Concurrent writes make the pool open new connections while the file cannot be written.
    let writes = (0..20).map(|i| update_preferences(&app, &token, f64::from(i) / 20.0));
    for (status, body) in futures::future::join_all(writes).await {
        if status != StatusCode::OK {
            assert_retry_later(status, &body);
        }
    }

    drop(read_only);
    assert_eq!(ready(&app).await, StatusCode::OK);
    let writes = (0..40).map(|i| update_preferences(&app, &token, f64::from(i) / 40.0));
    for (status, body) in futures::future::join_all(writes).await {
        assert_eq!(
            status,
            StatusCode::OK,
            "no connection stayed read-only: {body}"
        );
    }
}

/// Sets `default_transaction_read_only` on the app's PostgreSQL database and closes its
/// sessions, so every new one is read-only (as on a standby), or undoes it.
async fn postgres_read_only(app: &TestApp, read_only: bool) {
    let name = app
        .database_url
        .rsplit('/')
        .next()
        .expect("database name")
        .to_owned();
    let admin = app.db().await;
    let setting = if read_only {
        format!("ALTER DATABASE \"{name}\" SET default_transaction_read_only = on")
    } else {
        format!("ALTER DATABASE \"{name}\" RESET default_transaction_read_only")
    };
    let transaction = admin.begin().await.expect("begin");
    // Sessions opened after the first call are read-only too, until told otherwise.
    for statement in ["SET TRANSACTION READ WRITE", setting.as_str()] {
        transaction
            .execute_unprepared(statement)
            .await
            .expect("alter database");
    }
    transaction.commit().await.expect("commit");
    admin
        .execute_unprepared(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await
        .expect("close the app's sessions");
    admin.close().await.ok();
}

#[tokio::test]
#[cfg_attr(
    not(alias_test_postgres),
    ignore = "ALIAS_TEST_POSTGRES_URL is not set"
)]
async fn a_postgres_that_cannot_write_is_not_ready_and_asks_to_retry() {
    let app = app(DbKind::Postgres, 4).await;
    let token = app.new_user().await;
    postgres_read_only(&app, true).await;
    // The pool notices its closed sessions; the new ones cannot write.
    let mut status = StatusCode::OK;
    for _ in 0..10 {
        status = ready(&app).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
    }
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, body) = update_preferences(&app, &token, 0.2).await;
    assert_retry_later(status, &body);

    postgres_read_only(&app, false).await;
    let mut answer = (StatusCode::SERVICE_UNAVAILABLE, Value::Null);
    for _ in 0..10 {
        answer = update_preferences(&app, &token, 0.4).await;
        if answer.0 == StatusCode::OK {
            break;
        }
    }
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    assert_eq!(ready(&app).await, StatusCode::OK);
}
