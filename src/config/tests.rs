use std::collections::HashMap;

use super::*;

fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_lookup(|name| vars.get(name).cloned())
}

#[test]
fn defaults_work_without_any_variable() {
    let config = config(&[]).expect("defaults are valid");
    assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(config.database_url, "sqlite://data/alias.db?mode=rwc");
    assert_eq!(config.max_body_bytes, 1024 * 1024);
    assert_eq!(config.cors_origins, CorsOrigins::None);
    assert_eq!(
        config.storage.location,
        StorageLocation::Local(PathBuf::from("data/files"))
    );
    assert!(config.sharing.enabled, "sharing is on unless turned off");
}

#[test]
fn s3_storage_reads_bucket_and_prefix() {
    let config = config(&[("ALIAS_STORAGE", "s3://media/alias/files/")]).expect("valid");
    assert!(matches!(
        config.storage.location,
        StorageLocation::S3 { ref bucket, ref prefix, endpoint: None, virtual_hosted_style: false }
            if bucket == "media" && prefix == "alias/files"
    ));
}

#[test]
fn invalid_values_name_their_variable() {
    for (var, value) in [
        ("ALIAS_BIND", "localhost"),
        ("ALIAS_METRICS_BIND", "9464"),
        ("ALIAS_MAX_BODY_BYTES", "0"),
        ("ALIAS_MAX_BATCH_SIZE", "many"),
        ("ALIAS_LOG_FORMAT", "xml"),
        ("ALIAS_TRUST_PROXY", "maybe"),
        ("ALIAS_CORS_ORIGINS", "app.example.com"),
        ("DATABASE_URL", "mysql://localhost/db"),
        ("ALIAS_ACCESS_TTL_SECONDS", "-5"),
        ("ALIAS_GOOGLE_JWKS_URL", "not a url"),
        ("ALIAS_AUTH_IP_LIMIT_PER_MINUTE", "0"),
        ("ALIAS_SESSION_CACHE_SECONDS", "5s"),
        ("ALIAS_MASTER_KEY", "c2hvcnQ="),
        ("ALIAS_GEMINI_BASE_URL", "ftp://example.com"),
        ("ALIAS_HEADER_TIMEOUT_SECONDS", "0"),
        ("ALIAS_BODY_TIMEOUT_SECONDS", "soon"),
        ("ALIAS_KEEP_ALIVE_SECONDS", "-1"),
        ("ALIAS_MAX_CONNECTIONS", "0"),
        ("ALIAS_DB_ACQUIRE_TIMEOUT_SECONDS", "0"),
        ("ALIAS_API_KEY_CHECKS_PER_HOUR", "0"),
        ("ALIAS_STORAGE", "ftp://bucket"),
        ("ALIAS_STORAGE", "s3:///prefix"),
        ("ALIAS_MAX_IMAGE_BYTES", "0"),
        ("ALIAS_STORAGE_URL_KEY", "c2hvcnQ="),
        ("ALIAS_PUBLIC_URL", "example.com"),
        ("ALIAS_CHAT_SEARCH_LIMIT_PER_MINUTE", "0"),
        ("ALIAS_SMTP_URL", "mail.example.com"),
        ("ALIAS_MAIL_FROM", "not an address"),
        ("ALIAS_APP_URL", "no scheme"),
        ("ALIAS_REQUIRE_VERIFIED_EMAIL", "sometimes"),
        ("ALIAS_GMAIL_SYNC_DAYS", "366"),
        ("ALIAS_GMAIL_BASE_URL", "gmail"),
        ("ALIAS_GMAIL_SYNC_MAX_MESSAGES", "0"),
        ("ALIAS_JOBS_POLL_MS", "0"),
        ("ALIAS_USER_CALLS_PER_MINUTE", "0"),
        ("ALIAS_USER_CHAT_SENDS_PER_MINUTE", "fast"),
        ("ALIAS_QUOTA_FREE_MESSAGES_PER_DAY", "-1"),
        ("ALIAS_QUOTA_PLUS_TOKENS_PER_DAY", "lots"),
        ("ALIAS_QUOTA_PRO_MESSAGES_PER_DAY", "1.5"),
        ("ALIAS_LIVEKIT_URL", "livekit.example.com"),
        ("ALIAS_VOICE_QUIET_SECONDS", "0"),
        ("ALIAS_REDIS_URL", "localhost:6379"),
        ("ALIAS_REDIS_URL", "redis://:pw@host:port"),
        ("ALIAS_REDIS_KEY_PREFIX", "my app:"),
        ("ALIAS_REDIS_TIMEOUT_MS", "0"),
        ("ALIAS_SHARING", "public"),
        ("ALIAS_SHARE_PAGE_LIMIT_PER_MINUTE", "0"),
    ] {
        let error = config(&[(var, value)]).expect_err(var);
        assert_eq!(error.var, var);
        assert!(error.to_string().contains(var));
    }
}

#[test]
fn quotas_are_numbers_or_unlimited() {
    let config = config(&[
        ("ALIAS_QUOTA_FREE_MESSAGES_PER_DAY", "unlimited"),
        ("ALIAS_QUOTA_FREE_TOKENS_PER_DAY", "0"),
        ("ALIAS_QUOTA_PRO_TOKENS_PER_DAY", "5000"),
    ])
    .expect("valid");
    assert_eq!(
        config.usage.free,
        DailyQuota {
            messages: None,
            tokens: Some(0)
        }
    );
    assert_eq!(config.usage.plus.messages, Some(1_000));
    assert_eq!(config.usage.pro.tokens, Some(5000));
    assert_eq!(config.usage.calls_per_minute, 100);
    assert_eq!(config.usage.chat_sends_per_minute, 20);
}

#[test]
fn livekit_needs_url_key_and_secret_together_and_hides_the_secret() {
    let error = config(&[("ALIAS_LIVEKIT_URL", "wss://lk.example.com")]).expect_err("no key");
    assert_eq!(error.var, "ALIAS_LIVEKIT_API_KEY");
    let error = config(&[
        ("ALIAS_LIVEKIT_URL", "wss://lk.example.com"),
        ("ALIAS_LIVEKIT_API_KEY", "APIkey"),
    ])
    .expect_err("no secret");
    assert_eq!(error.var, "ALIAS_LIVEKIT_API_SECRET");
    let config = config(&[
        ("ALIAS_LIVEKIT_URL", "wss://lk.example.com"),
        ("ALIAS_LIVEKIT_API_KEY", "APIkey"),
        ("ALIAS_LIVEKIT_API_SECRET", "lk-s3cret"),
    ])
    .expect("valid");
    assert!(config.voice.livekit.is_some());
    assert!(!format!("{config:?}").contains("lk-s3cret"));
}

#[test]
fn smtp_credentials_stay_out_of_debug_output() {
    let config =
        config(&[("ALIAS_SMTP_URL", "smtps://ada:s3cret@mail.example.com")]).expect("valid");
    assert!(!format!("{config:?}").contains("s3cret"));
    assert_eq!(config.mail.public_url, "http://127.0.0.1:8080");
}

#[test]
fn redis_is_off_unless_configured_and_its_password_stays_hidden() {
    assert!(config(&[]).expect("defaults").redis.is_none());
    let config = config(&[
        ("ALIAS_REDIS_URL", "redis://:s3cret@cache.internal:6379/2"),
        ("ALIAS_REDIS_TIMEOUT_MS", "250"),
    ])
    .expect("valid");
    let redis = config.redis.as_ref().expect("configured");
    assert_eq!(redis.key_prefix, "alias:");
    assert_eq!(redis.timeout, Duration::from_millis(250));
    assert!(!format!("{config:?}").contains("s3cret"));
    let invalid = super::Config::from_lookup(|name| {
        (name == "ALIAS_REDIS_URL").then(|| "redis://:s3cret@host:port".to_owned())
    })
    .expect_err("a port must be a number");
    assert!(!invalid.to_string().contains("s3cret"));
}

#[test]
fn data_dir_moves_the_default_database() {
    let config = config(&[("ALIAS_DATA_DIR", "/var/lib/alias")]).expect("valid");
    assert_eq!(
        config.database_url,
        "sqlite:///var/lib/alias/alias.db?mode=rwc"
    );
}

#[test]
fn operations_settings_are_off_unless_set() {
    let defaults = config(&[]).expect("defaults are valid");
    assert_eq!(defaults.metrics_bind, None);
    assert_eq!(defaults.otlp_endpoint, None);
    assert!(defaults.auth.jwt_previous_key_files.is_empty());
    let set = config(&[
        ("ALIAS_METRICS_BIND", "127.0.0.1:9464"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        (
            "ALIAS_JWT_PREVIOUS_KEY_FILES",
            "/keys/jwt-1.pem, /keys/jwt-0.pem,",
        ),
    ])
    .expect("valid");
    assert_eq!(set.metrics_bind.map(|a| a.port()), Some(9464));
    assert_eq!(set.otlp_endpoint.as_deref(), Some("http://collector:4318"));
    assert_eq!(
        set.auth.jwt_previous_key_files,
        [
            PathBuf::from("/keys/jwt-1.pem"),
            PathBuf::from("/keys/jwt-0.pem")
        ]
    );
}
