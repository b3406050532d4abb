//! Backups that restore: the README's own backup and restore commands, run as written (with
//! `alias-server` on the PATH), and a drill that starts a server on the restored data.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database};
use serde_json::json;

use crate::chat::{Chat, new_id, payloads};
use crate::fake_providers::FakeProviders;
use crate::helpers::{DbKind, TestApp, data, unique_email};

const PASSWORD: &str = "correct horse battery";
const API_KEY: &str = "sk-drill-restored-key-0001";

/// The shell block the README marks `<!-- tested: NAME … -->`.
fn readme_block(name: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let marker = format!("<!-- tested: {name} ");
    let after = &readme[readme.find(&marker).expect("the README marks the block")..];
    let start = after.find("```sh\n").expect("a sh block after the marker") + "```sh\n".len();
    let end = after[start..].find("```").expect("the block ends") + start;
    after[start..end].to_owned()
}

/// Runs a README block with bash (`-euo pipefail`), this build's `alias-server` first on the
/// PATH and `envs` set; answers its stdout, failing the test with its stderr.
async fn run_readme_block(name: &str, envs: Vec<(&'static str, String)>) -> String {
    let (status, stdout, stderr) = run_block(name, envs).await;
    assert!(status, "README block {name} failed: {stderr}");
    stdout
}

async fn run_block(name: &str, envs: Vec<(&'static str, String)>) -> (bool, String, String) {
    let script = readme_block(name);
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_alias-server"))
        .parent()
        .expect("binary folder")
        .to_path_buf();
    // Off the runtime: the server under test serves from this thread meanwhile.
    let output = tokio::task::spawn_blocking(move || {
        let path = std::env::var("PATH").unwrap_or_default();
        let mut command = Command::new("bash");
        command
            .args(["-euo", "pipefail", "-c", &script])
            .env("PATH", format!("{}:{path}", bin_dir.display()))
            .env("ALIAS_LOG", "warn")
            .env_remove("DATABASE_URL")
            .env_remove("ALIAS_MASTER_KEY")
            .env_remove("ALIAS_KMS_KEY_ID");
        for (name, value) in envs {
            command.env(name, value);
        }
        command.output().expect("run bash")
    })
    .await
    .expect("the block ran");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Registers writers that keep writing (accounts, chat sessions) until told to stop.
struct Writers {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Writers {
    fn start(chat: &Chat) -> Self {
        let (stop, written) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (client_addr, token) = (chat.app.addr, chat.token.clone());
        let (stop_flag, count) = (Arc::clone(&stop), Arc::clone(&written));
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let url = format!("http://{client_addr}/trpc/chat.sessions.create");
            while !stop_flag.load(Ordering::SeqCst) {
                let response = http.post(&url).bearer_auth(&token).send().await;
                if response.is_ok_and(|r| r.status() == StatusCode::OK) {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Self {
            stop,
            written,
            task,
        }
    }

    fn written(&self) -> usize {
        self.written.load(Ordering::SeqCst)
    }

    async fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("writers");
        self.written.load(Ordering::SeqCst)
    }
}

/// An account with an API key and a chat with one exchange, on `db`.
async fn written_data(db: DbKind) -> (Chat, String) {
    let chat = Chat::start_with(db, "openai", |config| {
        // The writers create sessions as fast as they can.
        config.usage.calls_per_minute = 1_000_000;
    })
    .await;
    let email = unique_email();
    let session = chat.app.register(&email, PASSWORD).await;
    let token = session["accessToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let chat = Chat { token, ..chat };
    chat.set_key("openai", API_KEY).await;
    let (_, prefs) = chat
        .app
        .mutation_as(
            &chat.token,
            "preferences.update",
            Some(json!({ "aiProvider": "openai" })),
        )
        .await;
    assert_eq!(data(&prefs)["aiProvider"], "openai");
    let session_id = chat.create_session().await;
    let chat = Chat { session_id, ..chat };
    let events = chat
        .send(&chat.input("Before the backup", &new_id()), None)
        .await
        .collect()
        .await;
    assert_eq!(
        payloads(&events)
            .last()
            .map(|done| done["message"]["status"].clone()),
        Some(json!("complete"))
    );
    (chat, email)
}

/// A server on the restored data, with the fake providers.
async fn restored_server(
    providers: &FakeProviders,
    data_dir: &Path,
    database_url: String,
) -> TestApp {
    let (base_url, data_dir) = (providers.base_url.clone(), data_dir.to_path_buf());
    TestApp::spawn_with(DbKind::Sqlite, move |config| {
        config.ai.openai_base_url = base_url;
        config.data_dir = data_dir;
        config.database_url = database_url;
    })
    .await
}

/// Sign-in works, the chat is there, and the API key opens: a reply reaches the provider
/// with it.
async fn everything_is_back(restored: &TestApp, chat: &Chat, email: &str) {
    let (status, body) = restored
        .mutation(
            "auth.login",
            Some(json!({ "email": email, "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = data(&body)["accessToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let input = json!({ "sessionId": chat.session_id });
    let (status, body) = restored
        .query_as(&token, "chat.messages.list", Some(input))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let contents: Vec<&str> = data(&body)["messages"]
        .as_array()
        .map(|messages| {
            messages
                .iter()
                .filter_map(|m| m["content"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert!(contents.contains(&"Before the backup"), "{contents:?}");
    assert_eq!(contents.len(), 2, "the message and its reply: {contents:?}");

    let calls_before = chat.providers.requests().len();
    let input = json!({ "sessionId": chat.session_id, "content": "After the restore", "clientMessageId": new_id() });
    let events = restored
        .client
        .subscribe_as(&token, "chat.send", Some(&input), None)
        .await
        .collect()
        .await;
    let done = payloads(&events).pop().expect("done");
    assert_eq!(done["message"]["status"], "complete", "{done}");
    let calls = chat.providers.requests();
    assert!(calls.len() > calls_before);
    assert_eq!(calls[calls_before].api_key, API_KEY, "the key opened");
}

#[tokio::test]
async fn a_sqlite_backup_taken_during_writes_restores_into_a_fresh_data_dir() {
    let (chat, email) = written_data(DbKind::Sqlite).await;
    let (backups, keys, fresh) = (dir(), dir(), dir());
    let writers = Writers::start(&chat);
    while writers.written() < 5 {
        tokio::task::yield_now().await;
    }
    let during = writers.written();
    let data_dir = chat.app.data_dir.path().display().to_string();
    run_readme_block(
        "backup-sqlite",
        vec![
            ("ALIAS_DATA_DIR", data_dir),
            ("BACKUP_DIR", backups.path().display().to_string()),
            ("KEYS_DIR", keys.path().display().to_string()),
        ],
    )
    .await;
    let written = writers.stop().await;
    assert!(written > during, "writes went on during the backup");

    let restored_dir = fresh.path().join("data");
    let output = run_readme_block(
        "restore-sqlite",
        vec![
            ("ALIAS_DATA_DIR", restored_dir.display().to_string()),
            ("BACKUP_DIR", backups.path().display().to_string()),
            ("KEYS_DIR", keys.path().display().to_string()),
        ],
    )
    .await;
    assert!(output.contains("restored to"), "{output}");
    let url = format!(
        "sqlite://{}?mode=rwc",
        restored_dir.join("alias.db").display()
    );
    let restored = restored_server(&chat.providers, &restored_dir, url).await;
    everything_is_back(&restored, &chat, &email).await;
}

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn alias_server(args: &[&str], data_dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_alias-server"))
        .args(args)
        .env("ALIAS_DATA_DIR", data_dir)
        .env("ALIAS_LOG", "warn")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run alias-server")
}

#[tokio::test]
async fn a_restore_refuses_a_newer_schema_and_a_database_in_use() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    app.new_user().await;
    let backups = dir();
    let backup = backups.path().join("alias.db");
    let data_dir = app.data_dir.path().to_path_buf();
    let output = tokio::task::spawn_blocking({
        let (backup, data_dir) = (backup.clone(), data_dir.clone());
        move || alias_server(&["backup", &backup.display().to_string()], &data_dir)
    })
    .await
    .expect("backup");
    assert!(output.status.success(), "{output:?}");
    let again = alias_server(&["backup", &backup.display().to_string()], &data_dir);
    assert!(
        !again.status.success(),
        "an existing file is never overwritten"
    );

    let in_use = alias_server(&["restore", &backup.display().to_string()], &data_dir);
    assert!(!in_use.status.success());
    let stderr = String::from_utf8_lossy(&in_use.stderr);
    assert!(
        stderr.contains("in use by a running alias-server"),
        "{stderr}"
    );
    let (status, _) = app.query("system.health", None).await;
    assert_eq!(status, StatusCode::OK, "the serving database is untouched");

    let future = Database::connect(format!("sqlite://{}?mode=rw", backup.display()))
        .await
        .expect("open the backup");
    future
        .execute_unprepared(
            "INSERT INTO seaql_migrations (version, applied_at) VALUES ('m2099_01_from_the_future', 0)",
        )
        .await
        .expect("a migration from the future");
    future.close().await.ok();
    let fresh = dir();
    let newer = alias_server(&["restore", &backup.display().to_string()], fresh.path());
    assert!(!newer.status.success());
    let stderr = String::from_utf8_lossy(&newer.stderr);
    assert!(stderr.contains("newer schema"), "{stderr}");
    assert!(
        !fresh.path().join("alias.db").exists(),
        "nothing is put in place"
    );
}

#[tokio::test]
#[cfg_attr(
    not(all(alias_test_postgres, alias_test_pg_dump)),
    ignore = "needs ALIAS_TEST_POSTGRES_URL and pg_dump/pg_restore on the PATH"
)]
async fn the_readme_postgres_commands_restore_into_an_empty_database() {
    let (chat, email) = written_data(DbKind::Postgres).await;
    let backups = dir();
    let writers = Writers::start(&chat);
    run_readme_block(
        "backup-postgres",
        vec![
            ("DATABASE_URL", chat.app.database_url.clone()),
            ("BACKUP_DIR", backups.path().display().to_string()),
        ],
    )
    .await;
    writers.stop().await;
    let empty = crate::helpers::PostgresDatabase::create().await;
    run_readme_block(
        "restore-postgres",
        vec![
            ("DATABASE_URL", empty.url.clone()),
            ("BACKUP_DIR", backups.path().display().to_string()),
        ],
    )
    .await;
    // The keys are the data directory's (as copied back on a new machine).
    let restored =
        restored_server(&chat.providers, chat.app.data_dir.path(), empty.url.clone()).await;
    everything_is_back(&restored, &chat, &email).await;
}
