//! `apiKeys.*` and envelope encryption over HTTP: the same suite with the local master key
//! (SQLite and PostgreSQL) and with KMS (a real KMS-compatible server, moto, when
//! `ALIAS_TEST_KMS_ENDPOINT` is set).

use std::process::Command;
use std::time::Duration;

use alias_server::config::KeyVaultConfig;
use alias_server::master_key::MasterKey;
use aws_config::BehaviorVersion;
use entity::{api_keys, audit_events};
use reqwest::StatusCode;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, Set};
use serde_json::{Value, json};

use crate::fake_providers::{FakeProviders, Seen};
use crate::helpers::{DbKind, TestApp, data, error_code, error_reason, unique_email};
use crate::tcp_proxy::TcpProxy;

const PASSWORD: &str = "correct horse battery";
const GEMINI_KEY: &str = "AIzaSy-valid-test-key-WXYZ";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum VaultKind {
    Local,
    Kms,
}

fn kms_endpoint() -> Option<String> {
    std::env::var("ALIAS_TEST_KMS_ENDPOINT")
        .ok()
        .filter(|url| !url.is_empty())
}

async fn kms_client(endpoint: &str) -> aws_sdk_kms::Client {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .load()
        .await;
    aws_sdk_kms::Client::new(&config)
}

/// A fresh KMS key on the test server.
async fn create_kms_key(endpoint: &str) -> String {
    let created = kms_client(endpoint)
        .await
        .create_key()
        .send()
        .await
        .expect("create a KMS key");
    created
        .key_metadata()
        .map(|m| m.key_id().to_owned())
        .expect("key id")
}

/// The app, a fake AI provider, and (for KMS) the cuttable road to KMS.
struct Setup {
    app: TestApp,
    providers: FakeProviders,
    kms: Option<TcpProxy>,
    vault: VaultKind,
}

impl Setup {
    async fn start(db: DbKind, vault: VaultKind) -> Self {
        let providers = FakeProviders::start().await;
        let kms = match vault {
            VaultKind::Local => None,
            VaultKind::Kms => {
                let endpoint = kms_endpoint().expect("ALIAS_TEST_KMS_ENDPOINT");
                let upstream = endpoint
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned();
                Some((
                    create_kms_key(&endpoint).await,
                    TcpProxy::start(upstream).await,
                ))
            }
        };
        let base_url = providers.base_url.clone();
        let vault_config = kms.as_ref().map(|(key_id, proxy)| KeyVaultConfig::Kms {
            key_id: key_id.clone(),
            endpoint: Some(proxy.url.clone()),
        });
        let app = TestApp::spawn_with(db, move |config| {
            config.ai.gemini_base_url = base_url.clone();
            config.ai.openai_base_url = base_url.clone();
            config.ai.anthropic_base_url = base_url;
            config.ai.validate_timeout = Duration::from_secs(1);
            if let Some(vault) = vault_config {
                config.key_vault = vault;
            }
        })
        .await;
        Self {
            app,
            providers,
            kms: kms.map(|(_, proxy)| proxy),
            vault,
        }
    }

    async fn user(&self) -> String {
        let session = self.app.register(&unique_email(), PASSWORD).await;
        session["accessToken"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn set(&self, token: &str, input: Value) -> (StatusCode, Value) {
        self.app
            .mutation_as(token, "apiKeys.set", Some(input))
            .await
    }

    async fn validate(&self, token: &str, provider: &str) -> (StatusCode, Value) {
        self.app
            .mutation_as(
                token,
                "apiKeys.validate",
                Some(json!({ "provider": provider })),
            )
            .await
    }

    async fn list(&self, token: &str) -> Vec<Value> {
        let (status, body) = self.app.query_as(token, "apiKeys.list", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        data(&body).as_array().cloned().unwrap_or_default()
    }
}

/// Runs `$test` (an `async fn(Setup)`) as `sqlite_local`, `postgres_local` and `sqlite_kms`.
macro_rules! every_vault {
    ($test:ident) => {
        mod $test {
            use super::*;

            #[tokio::test]
            async fn sqlite_local() {
                super::$test(Setup::start(DbKind::Sqlite, VaultKind::Local).await).await;
            }

            #[tokio::test]
            #[cfg_attr(
                not(alias_test_postgres),
                ignore = "ALIAS_TEST_POSTGRES_URL is not set"
            )]
            async fn postgres_local() {
                super::$test(Setup::start(DbKind::Postgres, VaultKind::Local).await).await;
            }

            #[tokio::test]
            #[cfg_attr(not(alias_test_kms), ignore = "ALIAS_TEST_KMS_ENDPOINT is not set")]
            async fn sqlite_kms() {
                super::$test(Setup::start(DbKind::Sqlite, VaultKind::Kms).await).await;
            }
        }
    };
}

async fn a_key_is_saved_listed_validated_and_deleted(setup: Setup) {
    let token = setup.user().await;
    let (status, body) = setup
        .set(
            &token,
            json!({ "provider": "gemini", "apiKey": GEMINI_KEY }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let saved = data(&body);
    assert_eq!(saved["provider"], "gemini");
    assert_eq!(saved["hint"], "…WXYZ");
    assert_eq!(saved["status"], "valid");
    assert!(saved["lastValidatedAt"].is_string());
    assert!(!body.to_string().contains(GEMINI_KEY));
    assert_eq!(
        setup.providers.seen(),
        [Seen {
            provider: "gemini",
            api_key: GEMINI_KEY.to_owned()
        }]
    );

    let listed = setup.list(&token).await;
    assert_eq!(listed.len(), 1);
    assert!(!Value::Array(listed).to_string().contains(GEMINI_KEY));

    let (status, body) = setup.validate(&token, "gemini").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(data(&body)["valid"], true);
    assert_eq!(
        setup.providers.seen().len(),
        2,
        "the stored key opened and reached the provider"
    );
    assert_eq!(setup.providers.seen()[1].api_key, GEMINI_KEY);

    let (status, _) = setup
        .app
        .mutation_as(
            &token,
            "apiKeys.delete",
            Some(json!({ "provider": "gemini" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(setup.list(&token).await.is_empty());
    let (status, _) = setup
        .app
        .mutation_as(
            &token,
            "apiKeys.delete",
            Some(json!({ "provider": "gemini" })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = setup.validate(&token, "gemini").await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(error_reason(&body), "api_key_missing");

    let actions: Vec<String> = audit_events::Entity::find()
        .all(&setup.app.db().await)
        .await
        .expect("audit rows")
        .into_iter()
        .map(|row| {
            assert!(
                !format!("{row:?}").contains(GEMINI_KEY),
                "no key material in audit rows"
            );
            row.action
        })
        .collect();
    for action in ["api_key_set", "api_key_validated", "api_key_deleted"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
}
every_vault!(a_key_is_saved_listed_validated_and_deleted);

/// Nothing in the database file (or a dump of it) reveals the key.
async fn the_database_never_holds_the_plaintext_key(setup: Setup) {
    let token = setup.user().await;
    let key = format!("sk-valid-{}", uuid::Uuid::new_v4().simple());
    let (status, body) = setup
        .set(&token, json!({ "provider": "openai", "apiKey": key }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let needle = &key[..24];
    let stored = match setup.app.db_kind {
        DbKind::Sqlite => {
            let mut bytes = Vec::new();
            for entry in std::fs::read_dir(setup.app.data_dir.path())
                .expect("data dir")
                .flatten()
            {
                if entry.file_name().to_string_lossy().starts_with("alias.db") {
                    bytes.extend(std::fs::read(entry.path()).expect("database file"));
                }
            }
            assert!(!bytes.is_empty());
            bytes
        }
        DbKind::Postgres => {
            let dump = Command::new("pg_dump")
                .arg("--data-only")
                .arg(&setup.app.database_url)
                .output()
                .expect("pg_dump");
            assert!(
                dump.status.success(),
                "{}",
                String::from_utf8_lossy(&dump.stderr)
            );
            assert!(String::from_utf8_lossy(&dump.stdout).contains("api_keys"));
            dump.stdout
        }
    };
    assert!(
        !stored.windows(needle.len()).any(|w| w == needle.as_bytes()),
        "plaintext key found in storage"
    );
}
every_vault!(the_database_never_holds_the_plaintext_key);

async fn api_key_row(setup: &Setup, provider: &str, token: &str) -> api_keys::Model {
    let (_, me) = setup.app.query_as(token, "users.me", None).await;
    let user_id: uuid::Uuid = data(&me)["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("user id");
    api_keys::Entity::find()
        .filter(api_keys::Column::UserId.eq(user_id))
        .filter(api_keys::Column::Provider.eq(provider))
        .one(&setup.app.db().await)
        .await
        .expect("query")
        .expect("row")
}

/// A sealed key copied onto another user's row does not open there.
async fn another_users_sealed_key_does_not_open(setup: Setup) {
    let alice = setup.user().await;
    let mallory = setup.user().await;
    setup
        .set(
            &alice,
            json!({ "provider": "gemini", "apiKey": "AIza-valid-alice-key-1111" }),
        )
        .await;
    setup
        .set(
            &mallory,
            json!({ "provider": "gemini", "apiKey": "AIza-valid-mallory-key-2222" }),
        )
        .await;
    let alice_row = api_key_row(&setup, "gemini", &alice).await;
    let mut mallory_row = api_key_row(&setup, "gemini", &mallory)
        .await
        .into_active_model();
    mallory_row.ciphertext = Set(alice_row.ciphertext);
    mallory_row.nonce = Set(alice_row.nonce);
    mallory_row.wrapped_key = Set(alice_row.wrapped_key);
    mallory_row.key_id = Set(alice_row.key_id);
    mallory_row
        .update(&setup.app.db().await)
        .await
        .expect("swap rows");

    let before = setup.providers.seen().len();
    let (status, body) = setup.validate(&mallory, "gemini").await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    assert_eq!(error_reason(&body), "api_key_unreadable");
    assert!(!body.to_string().contains("alice"));
    assert_eq!(
        setup.providers.seen().len(),
        before,
        "nothing reached the provider"
    );
    let failures = audit_events::Entity::find()
        .filter(audit_events::Column::Action.eq("api_key_use_failed"))
        .all(&setup.app.db().await)
        .await
        .expect("audit rows");
    assert_eq!(failures.len(), 1);
    // Alice's own key still opens.
    let (status, _) = setup.validate(&alice, "gemini").await;
    assert_eq!(status, StatusCode::OK);
}
every_vault!(another_users_sealed_key_does_not_open);

async fn tampering_with_the_ciphertext_or_wrapped_key_is_detected(setup: Setup) {
    let token = setup.user().await;
    for (provider, field) in [("gemini", "ciphertext"), ("anthropic", "wrapped_key")] {
        setup
            .set(
                &token,
                json!({ "provider": provider, "apiKey": "key-valid-tamper-test" }),
            )
            .await;
        let row = api_key_row(&setup, provider, &token).await;
        let mut active = row.clone().into_active_model();
        match field {
            "ciphertext" => {
                let mut bytes = row.ciphertext;
                bytes[0] ^= 0x01;
                active.ciphertext = Set(bytes);
            }
            _ => {
                let mut bytes = row.wrapped_key;
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x01;
                active.wrapped_key = Set(bytes);
            }
        }
        active.update(&setup.app.db().await).await.expect("tamper");
        let (status, body) = setup.validate(&token, provider).await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{field}: {body}");
        assert_eq!(error_reason(&body), "api_key_unreadable", "{field}");
    }
}
every_vault!(tampering_with_the_ciphertext_or_wrapped_key_is_detected);

#[tokio::test]
async fn a_rejected_key_is_not_saved() {
    let setup = Setup::start(DbKind::Sqlite, VaultKind::Local).await;
    let token = setup.user().await;
    for (provider, key) in [
        ("gemini", "AIza-rejected-key"),
        ("openai", "sk-rejected-key"),
        ("anthropic", "sk-ant-forbidden-key"),
    ] {
        let (status, body) = setup
            .set(&token, json!({ "provider": provider, "apiKey": key }))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{provider}: {body}");
        assert_eq!(error_reason(&body), "api_key_rejected", "{provider}");
    }
    assert!(setup.list(&token).await.is_empty());
    let providers: Vec<&str> = setup
        .providers
        .seen()
        .iter()
        .map(|seen| seen.provider)
        .collect();
    assert_eq!(
        providers,
        ["gemini", "openai", "anthropic"],
        "each provider was asked its own way"
    );
}

#[tokio::test]
async fn an_unvalidated_key_is_saved_then_found_invalid() {
    let setup = Setup::start(DbKind::Sqlite, VaultKind::Local).await;
    let token = setup.user().await;
    let (status, body) = setup
        .set(
            &token,
            json!({ "provider": "openai", "apiKey": "sk-rejected-later", "validate": false }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(data(&body)["status"], "unvalidated");
    assert_eq!(data(&body)["lastValidatedAt"], Value::Null);
    assert!(setup.providers.seen().is_empty());

    let (status, body) = setup.validate(&token, "openai").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(data(&body)["valid"], false);
    assert!(
        data(&body)["message"]
            .as_str()
            .is_some_and(|m| m.contains("OpenAI"))
    );
    assert_eq!(setup.list(&token).await[0]["status"], "invalid");
}

#[tokio::test]
async fn an_unreachable_or_slow_provider_is_not_an_invalid_key() {
    let setup = Setup::start(DbKind::Sqlite, VaultKind::Local).await;
    let token = setup.user().await;
    for key in ["AIza-slow-key-0000", "AIza-broken-key-0000"] {
        let (status, body) = setup
            .set(&token, json!({ "provider": "gemini", "apiKey": key }))
            .await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{key}: {body}");
        assert_eq!(error_reason(&body), "provider_unreachable");
    }
    assert!(setup.list(&token).await.is_empty());

    let closed = TestApp::spawn_with(DbKind::Sqlite, |config| {
        config.ai.gemini_base_url = "http://127.0.0.1:9".to_owned();
    })
    .await;
    let session = closed.register(&unique_email(), PASSWORD).await;
    let token = session["accessToken"].as_str().unwrap_or_default();
    let (status, body) = closed
        .mutation_as(
            token,
            "apiKeys.set",
            Some(json!({ "provider": "gemini", "apiKey": GEMINI_KEY })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(error_reason(&body), "provider_unreachable");
}

#[tokio::test]
async fn setting_again_replaces_the_key() {
    let setup = Setup::start(DbKind::Sqlite, VaultKind::Local).await;
    let token = setup.user().await;
    setup
        .set(
            &token,
            json!({ "provider": "gemini", "apiKey": "AIza-valid-first-AAAA" }),
        )
        .await;
    let (_, body) = setup
        .set(
            &token,
            json!({ "provider": "gemini", "apiKey": "AIza-valid-second-BBBB" }),
        )
        .await;
    assert_eq!(data(&body)["hint"], "…BBBB");
    let listed = setup.list(&token).await;
    assert_eq!(listed.len(), 1);
    setup.validate(&token, "gemini").await;
    assert_eq!(
        setup
            .providers
            .seen()
            .last()
            .map(|s| s.api_key.clone())
            .as_deref(),
        Some("AIza-valid-second-BBBB")
    );
}

#[tokio::test]
async fn malformed_key_input_names_the_field() {
    let setup = Setup::start(DbKind::Sqlite, VaultKind::Local).await;
    let token = setup.user().await;
    let (status, body) = setup
        .set(
            &token,
            json!({ "provider": "gemini", "apiKey": "two words key" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["data"]["fieldErrors"]["apiKey"].is_string());
    let (status, body) = setup
        .set(
            &token,
            json!({ "provider": "mistral", "apiKey": GEMINI_KEY }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["data"]["fieldErrors"]["provider"].is_string());
    let (status, body) = setup.app.query("apiKeys.list", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "UNAUTHORIZED");
}

#[tokio::test]
#[cfg_attr(not(alias_test_kms), ignore = "ALIAS_TEST_KMS_ENDPOINT is not set")]
async fn kms_unreachable_is_service_unavailable_and_the_key_survives() {
    let setup = Setup::start(DbKind::Sqlite, VaultKind::Kms).await;
    assert_eq!(setup.vault, VaultKind::Kms);
    let token = setup.user().await;
    let (status, body) = setup
        .set(
            &token,
            json!({ "provider": "gemini", "apiKey": GEMINI_KEY }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let kms = setup.kms.as_ref().expect("proxy");

    kms.cut();
    let (status, body) = setup.validate(&token, "gemini").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_reason(&body), "key_service_unavailable");
    let (status, _) = setup
        .set(
            &token,
            json!({ "provider": "openai", "apiKey": "sk-valid-during-outage" }),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        setup.list(&token).await.len(),
        1,
        "nothing lost, nothing half-written"
    );

    kms.restore();
    let (status, body) = setup.validate(&token, "gemini").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(data(&body)["valid"], true);
}

fn run_rewrap(database_url: &str, data_dir: &std::path::Path, envs: &[(&str, String)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_alias-server"));
    command
        .args(["keys", "rewrap"])
        .env("DATABASE_URL", database_url)
        .env("ALIAS_DATA_DIR", data_dir)
        .env("ALIAS_LOG", "warn")
        .env_remove("ALIAS_KMS_KEY_ID")
        .env_remove("ALIAS_MASTER_KEY")
        .env_remove("ALIAS_MASTER_KEY_PREVIOUS");
    for (name, value) in envs {
        command.env(name, value);
    }
    let output = command.output().expect("run keys rewrap");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn rewrap_after_rotating_the_master_key_keeps_keys_usable() {
    let old = MasterKey::from_bytes([1; 32]);
    let new = MasterKey::from_bytes([2; 32]);
    let providers = FakeProviders::start().await;
    let with_master = |master: MasterKey, base_url: String| {
        move |config: &mut alias_server::config::Config| {
            config.ai.gemini_base_url = base_url;
            config.key_vault = KeyVaultConfig::Local {
                master_key: Some(master),
                previous: Vec::new(),
            };
        }
    };
    let first = TestApp::spawn_with(
        DbKind::Sqlite,
        with_master(old.clone(), providers.base_url.clone()),
    )
    .await;
    let session = first.register(&unique_email(), PASSWORD).await;
    let token = session["accessToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, _) = first
        .mutation_as(
            &token,
            "apiKeys.set",
            Some(json!({ "provider": "gemini", "apiKey": GEMINI_KEY })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let envs = [
        ("ALIAS_MASTER_KEY", new.to_base64().to_string()),
        ("ALIAS_MASTER_KEY_PREVIOUS", old.to_base64().to_string()),
    ];
    let report = run_rewrap(&first.database_url, first.data_dir.path(), &envs);
    assert!(report.contains("rewrapped 1 API keys"), "{report}");
    assert!(
        run_rewrap(&first.database_url, first.data_dir.path(), &envs).contains("rewrapped 1"),
        "rerunnable"
    );

    let (database_url, data_dir) = (
        first.database_url.clone(),
        first.data_dir.path().to_path_buf(),
    );
    let rotated = TestApp::spawn_with(DbKind::Sqlite, {
        let adjust = with_master(new, providers.base_url.clone());
        move |config| {
            adjust(config);
            // Same database and signing key: the same deployment after the rotation.
            config.database_url = database_url;
            config.data_dir = data_dir;
        }
    })
    .await;
    let (status, body) = rotated
        .mutation_as(
            &token,
            "apiKeys.validate",
            Some(json!({ "provider": "gemini" })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "opens under the new master key alone: {body}"
    );
    assert_eq!(
        providers
            .seen()
            .last()
            .map(|s| s.api_key.clone())
            .as_deref(),
        Some(GEMINI_KEY)
    );
}

#[tokio::test]
#[cfg_attr(not(alias_test_kms), ignore = "ALIAS_TEST_KMS_ENDPOINT is not set")]
async fn rewrap_moves_keys_to_a_new_kms_key() {
    let endpoint = kms_endpoint().expect("ALIAS_TEST_KMS_ENDPOINT");
    let setup = Setup::start(DbKind::Sqlite, VaultKind::Kms).await;
    let token = setup.user().await;
    setup
        .set(
            &token,
            json!({ "provider": "gemini", "apiKey": GEMINI_KEY }),
        )
        .await;
    let before = api_key_row(&setup, "gemini", &token).await;

    let new_key = create_kms_key(&endpoint).await;
    let envs = [
        ("ALIAS_KMS_KEY_ID", new_key.clone()),
        ("AWS_ENDPOINT_URL", endpoint.clone()),
    ];
    let report = run_rewrap(&setup.app.database_url, setup.app.data_dir.path(), &envs);
    assert!(report.contains("rewrapped 1 API keys"), "{report}");
    let after = api_key_row(&setup, "gemini", &token).await;
    assert_ne!(after.wrapped_key, before.wrapped_key);
    assert!(
        after.key_id.contains(&new_key),
        "{} wraps with {new_key}",
        after.key_id
    );
    assert_eq!(
        after.ciphertext, before.ciphertext,
        "the sealed secret is untouched"
    );

    let (status, body) = setup.validate(&token, "gemini").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
