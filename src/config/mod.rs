//! Configuration from the environment (`ALIAS_*`, `DATABASE_URL`), parsed once at start-up.
//! Every value has a default that works on a laptop; an invalid one stops start-up with a
//! message naming the variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::HeaderValue;

use crate::master_key::MasterKey;

mod env;
mod services;

use env::{Env, parse_bool};
pub use services::{
    FilesConfig, GoogleConfig, JobsConfig, LiveKitConfig, MailConfig, RedisConfig, Secret,
    StorageConfig, StorageLocation, VoiceConfig,
};
use services::{google_config, livekit_config, mail_config, redis_config, storage_config};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Which browser origins may call the API (native apps send no Origin and need none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    None,
    Any,
    List(Vec<HeaderValue>),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub db_max_connections: u32,
    /// How long a call waits for a free database connection before it is told to retry.
    pub db_acquire_timeout: Duration,
    pub log_format: LogFormat,
    /// A tracing filter directive (`info`, `alias_server=debug,info`).
    pub log_filter: String,
    pub max_body_bytes: usize,
    pub max_batch_size: usize,
    pub cors_origins: CorsOrigins,
    pub trust_proxy: bool,
    pub shutdown_grace: Duration,
    pub sse_ping_interval: Duration,
    pub connections: ConnectionConfig,
    pub auth: AuthConfig,
    pub key_vault: KeyVaultConfig,
    /// `apiKeys.set` and `apiKeys.validate` calls per user per hour.
    pub api_key_checks_per_hour: u32,
    pub ai: AiConfig,
    pub chat: ChatConfig,
    pub storage: StorageConfig,
    pub files: FilesConfig,
    pub mail: MailConfig,
    pub google: GoogleConfig,
    pub jobs: JobsConfig,
    pub usage: UsageConfig,
    pub voice: VoiceConfig,
    pub sharing: SharingConfig,
    /// Redis shared by several instances (`ALIAS_REDIS_URL`); `None`: one instance, in memory.
    pub redis: Option<RedisConfig>,
    /// Where Prometheus scrapes `/metrics` (`ALIAS_METRICS_BIND`); `None`: no metrics listener.
    pub metrics_bind: Option<SocketAddr>,
    /// The standard `OTEL_EXPORTER_OTLP_ENDPOINT`: traces are exported there over OTLP/HTTP
    /// when set (the exporter reads the other `OTEL_*` variables itself).
    pub otlp_endpoint: Option<String>,
}

/// Share links (`chat.shares.*`) and their public pages (`GET /s/{token}`).
#[derive(Debug, Clone)]
pub struct SharingConfig {
    /// `ALIAS_SHARING`: off, the procedures answer FORBIDDEN (`sharing_disabled`) and every
    /// page is a 404.
    pub enabled: bool,
    /// Share pages served per client IP per minute.
    pub page_views_per_minute: u32,
}

/// Per-user call budgets and the daily quotas of each tier (`free`, `plus`, `pro`).
#[derive(Debug, Clone)]
pub struct UsageConfig {
    /// Signed-in calls per user per minute, every procedure together (each call of a batch).
    pub calls_per_minute: u32,
    /// `chat.send` calls per user per minute (on top of `calls_per_minute`).
    pub chat_sends_per_minute: u32,
    pub free: DailyQuota,
    pub plus: DailyQuota,
    pub pro: DailyQuota,
}

/// What a tier may use per day (the user's day, in their timezone); `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyQuota {
    /// Replies (`chat.send` calls that reach a provider).
    pub messages: Option<u64>,
    /// Input and output tokens together.
    pub tokens: Option<u64>,
}

/// Bounds on client connections, so slow or idle clients cannot hold the server.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// A request's headers must arrive within this (from the connection's start, or from the
    /// first byte of a later request on a kept-alive connection).
    pub header_timeout: Duration,
    /// A request's body must arrive within this after its headers.
    pub body_timeout: Duration,
    /// A kept-alive connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// Open connections at most; past it, connections waiting on their client make room.
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Replaces the built-in system prompt when set.
    pub system_prompt: Option<String>,
    /// How much recent conversation (in characters) goes to the provider with each message.
    pub history_chars: usize,
    /// Least time between two saves of a streaming reply.
    pub flush_interval: Duration,
    /// Tool-call rounds allowed per reply.
    pub max_tool_rounds: u32,
    /// Searches (`chat.search`, `chat.sessions.list` with `search`) per user per minute.
    pub search_limit_per_minute: u32,
}

/// Where the data keys that seal users' API keys come from.
#[derive(Debug, Clone)]
pub enum KeyVaultConfig {
    /// A master key from `ALIAS_MASTER_KEY`, or generated into the data directory; earlier
    /// master keys still open what they wrapped until `keys rewrap` has run.
    Local {
        master_key: Option<MasterKey>,
        previous: Vec<MasterKey>,
    },
    /// AWS KMS (`ALIAS_KMS_KEY_ID`), reached at `AWS_ENDPOINT_URL` when set.
    Kms {
        key_id: String,
        endpoint: Option<String>,
    },
}

/// The AI providers' APIs (configurable so tests and self-hosted models can stand in).
#[derive(Debug, Clone)]
pub struct AiConfig {
    pub gemini_base_url: String,
    pub openai_base_url: String,
    pub anthropic_base_url: String,
    /// Bound on a key validation call.
    pub validate_timeout: Duration,
    /// How long a chat reply may take to start streaming.
    pub first_byte_timeout: Duration,
    /// How long a streaming reply may go quiet before it counts as failed.
    pub stream_idle_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// PKCS#8 PEM Ed25519 key; without it one is generated into the data directory.
    pub jwt_private_key_file: Option<PathBuf>,
    /// Earlier signing keys (PEM files) whose tokens still verify, during a rotation.
    pub jwt_previous_key_files: Vec<PathBuf>,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// How long a rotated refresh token may still be presented by a client that raced itself.
    pub refresh_reuse_interval: Duration,
    pub google: IdProviderConfig,
    pub apple: IdProviderConfig,
    /// Least time between two JWKS downloads triggered by an unknown key id.
    pub jwks_min_refetch: Duration,
    /// Sign-in, registration and refresh attempts per client IP per minute.
    pub ip_limit_per_minute: u32,
    /// How long an account stays locked after 5 failed password sign-ins.
    pub login_lock: Duration,
    /// How long a signed-in call may trust a session read from the database by an earlier
    /// call. This instance forgets a session the moment it changes one; another instance
    /// sees the change after at most this long. Zero reads the session on every call.
    pub session_cache_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct IdProviderConfig {
    /// Accepted `aud` values (iOS, Android and web client ids differ); empty turns sign-in off.
    pub client_ids: Vec<String>,
    pub jwks_url: String,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`, so tests can configure without touching the process
    /// environment. Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let data_dir = PathBuf::from(
            env.get("ALIAS_DATA_DIR")
                .unwrap_or_else(|| "data".to_owned()),
        );
        let database_url = match env.get("DATABASE_URL") {
            Some(url) => parse_database_url(&url)?,
            None => default_sqlite_url(&data_dir),
        };
        let storage = storage_config(&env, &data_dir)?;
        let bind = env.parse(
            "ALIAS_BIND",
            "127.0.0.1:8080",
            "an address like 127.0.0.1:8080",
        )?;
        let mail = mail_config(&env, bind, storage.public_url.as_deref())?;
        Ok(Self {
            storage,
            mail,
            bind,
            database_url,
            data_dir,
            log_format: env.parse_with(
                "ALIAS_LOG_FORMAT",
                LogFormat::Text,
                |value| match value {
                    "text" => Some(LogFormat::Text),
                    "json" => Some(LogFormat::Json),
                    _ => None,
                },
                "`text` or `json`",
            )?,
            db_max_connections: env.parse_positive("ALIAS_DB_MAX_CONNECTIONS", 10)?,
            db_acquire_timeout: env.seconds("ALIAS_DB_ACQUIRE_TIMEOUT_SECONDS", 5)?,
            log_filter: env.get("ALIAS_LOG").unwrap_or_else(|| "info".to_owned()),
            max_body_bytes: env.parse_positive("ALIAS_MAX_BODY_BYTES", 1024 * 1024)?,
            max_batch_size: env.parse_positive("ALIAS_MAX_BATCH_SIZE", 50)?,
            cors_origins: parse_cors(env.get("ALIAS_CORS_ORIGINS"))?,
            trust_proxy: env.parse_with(
                "ALIAS_TRUST_PROXY",
                false,
                parse_bool,
                "`true` or `false`",
            )?,
            shutdown_grace: Duration::from_secs(
                env.parse_positive("ALIAS_SHUTDOWN_GRACE_SECONDS", 10)?,
            ),
            sse_ping_interval: Duration::from_secs(
                env.parse_positive("ALIAS_SSE_PING_SECONDS", 10)?,
            ),
            connections: ConnectionConfig {
                header_timeout: env.seconds("ALIAS_HEADER_TIMEOUT_SECONDS", 10)?,
                body_timeout: env.seconds("ALIAS_BODY_TIMEOUT_SECONDS", 30)?,
                idle_timeout: env.seconds("ALIAS_KEEP_ALIVE_SECONDS", 75)?,
                max_connections: env.parse_positive("ALIAS_MAX_CONNECTIONS", 4096)?,
            },
            auth: auth_config(&env)?,
            key_vault: key_vault_config(&env)?,
            api_key_checks_per_hour: env.parse_positive("ALIAS_API_KEY_CHECKS_PER_HOUR", 20)?,
            chat: ChatConfig {
                system_prompt: env.get("ALIAS_SYSTEM_PROMPT"),
                history_chars: env.parse_positive("ALIAS_CHAT_HISTORY_CHARS", 24_000)?,
                flush_interval: Duration::from_millis(
                    env.parse_positive("ALIAS_CHAT_FLUSH_MS", 250)?,
                ),
                max_tool_rounds: env.parse("ALIAS_CHAT_MAX_TOOL_ROUNDS", "3", "a whole number")?,
                search_limit_per_minute: env
                    .parse_positive("ALIAS_CHAT_SEARCH_LIMIT_PER_MINUTE", 60)?,
            },
            files: FilesConfig {
                max_image_bytes: env.parse_positive("ALIAS_MAX_IMAGE_BYTES", 10 * 1024 * 1024)?,
                max_file_bytes: env.parse_positive("ALIAS_MAX_FILE_BYTES", 50 * 1024 * 1024)?,
                quota_bytes: env.parse_positive("ALIAS_STORAGE_QUOTA_BYTES", 1 << 30)?,
                url_ttl: env.seconds("ALIAS_FILE_URL_SECONDS", 900)?,
                upload_url_ttl: env.seconds("ALIAS_UPLOAD_URL_SECONDS", 900)?,
            },
            ai: AiConfig {
                gemini_base_url: env.url(
                    "ALIAS_GEMINI_BASE_URL",
                    "https://generativelanguage.googleapis.com",
                )?,
                openai_base_url: env.url("ALIAS_OPENAI_BASE_URL", "https://api.openai.com")?,
                anthropic_base_url: env
                    .url("ALIAS_ANTHROPIC_BASE_URL", "https://api.anthropic.com")?,
                validate_timeout: Duration::from_secs(
                    env.parse_positive("ALIAS_PROVIDER_TIMEOUT_SECONDS", 10)?,
                ),
                first_byte_timeout: Duration::from_secs(
                    env.parse_positive("ALIAS_PROVIDER_FIRST_BYTE_SECONDS", 30)?,
                ),
                stream_idle_timeout: Duration::from_secs(
                    env.parse_positive("ALIAS_PROVIDER_IDLE_SECONDS", 60)?,
                ),
            },
            google: google_config(&env)?,
            redis: redis_config(&env)?,
            jobs: JobsConfig {
                poll_interval: Duration::from_millis(
                    env.parse_positive("ALIAS_JOBS_POLL_MS", 1000)?,
                ),
                lease: env.seconds("ALIAS_JOBS_LEASE_SECONDS", 120)?,
                concurrency: env.parse_positive("ALIAS_JOBS_CONCURRENCY", 4)?,
                backoff_base: env.seconds("ALIAS_JOBS_BACKOFF_SECONDS", 10)?,
                backoff_max: env.seconds("ALIAS_JOBS_BACKOFF_MAX_SECONDS", 3600)?,
            },
            usage: usage_config(&env)?,
            metrics_bind: env.parse_with(
                "ALIAS_METRICS_BIND",
                None,
                |value| value.parse().ok().map(Some),
                "an address like 127.0.0.1:9464",
            )?,
            otlp_endpoint: env.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
            voice: VoiceConfig {
                livekit: livekit_config(&env)?,
                quiet_after: env.seconds("ALIAS_VOICE_QUIET_SECONDS", 7200)?,
            },
            sharing: SharingConfig {
                enabled: env.parse_with("ALIAS_SHARING", true, parse_bool, "`true` or `false`")?,
                page_views_per_minute: env
                    .parse_positive("ALIAS_SHARE_PAGE_LIMIT_PER_MINUTE", 60)?,
            },
        })
    }
}

fn usage_config(env: &Env<'_>) -> Result<UsageConfig, ConfigError> {
    let quota = |messages: (&'static str, Option<u64>), tokens: (&'static str, Option<u64>)| {
        Ok::<_, ConfigError>(DailyQuota {
            messages: env.limit(messages.0, messages.1)?,
            tokens: env.limit(tokens.0, tokens.1)?,
        })
    };
    Ok(UsageConfig {
        calls_per_minute: env.parse_positive("ALIAS_USER_CALLS_PER_MINUTE", 100)?,
        chat_sends_per_minute: env.parse_positive("ALIAS_USER_CHAT_SENDS_PER_MINUTE", 20)?,
        free: quota(
            ("ALIAS_QUOTA_FREE_MESSAGES_PER_DAY", Some(100)),
            ("ALIAS_QUOTA_FREE_TOKENS_PER_DAY", Some(1_000_000)),
        )?,
        plus: quota(
            ("ALIAS_QUOTA_PLUS_MESSAGES_PER_DAY", Some(1_000)),
            ("ALIAS_QUOTA_PLUS_TOKENS_PER_DAY", Some(10_000_000)),
        )?,
        pro: quota(
            ("ALIAS_QUOTA_PRO_MESSAGES_PER_DAY", None),
            ("ALIAS_QUOTA_PRO_TOKENS_PER_DAY", None),
        )?,
    })
}

fn key_vault_config(env: &Env<'_>) -> Result<KeyVaultConfig, ConfigError> {
    if let Some(key_id) = env.get("ALIAS_KMS_KEY_ID") {
        let endpoint = match env.get("AWS_ENDPOINT_URL") {
            Some(_) => Some(env.url("AWS_ENDPOINT_URL", "")?),
            None => None,
        };
        return Ok(KeyVaultConfig::Kms { key_id, endpoint });
    }
    let master_key = |var: &'static str, text: &str| {
        MasterKey::from_base64(text).map_err(|problem| ConfigError {
            var,
            message: format!("expected 32 random bytes in base64 ({problem})"),
        })
    };
    Ok(KeyVaultConfig::Local {
        master_key: env
            .get("ALIAS_MASTER_KEY")
            .map(|text| master_key("ALIAS_MASTER_KEY", &text))
            .transpose()?,
        previous: env
            .get("ALIAS_MASTER_KEY_PREVIOUS")
            .map(|list| {
                list.split(',')
                    .filter(|text| !text.trim().is_empty())
                    .map(|text| master_key("ALIAS_MASTER_KEY_PREVIOUS", text))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default(),
    })
}

fn auth_config(env: &Env<'_>) -> Result<AuthConfig, ConfigError> {
    let list = |var: &str| -> Vec<String> {
        env.get(var)
            .map(|value| {
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(AuthConfig {
        jwt_private_key_file: env.get("ALIAS_JWT_PRIVATE_KEY_FILE").map(PathBuf::from),
        jwt_previous_key_files: env
            .get("ALIAS_JWT_PREVIOUS_KEY_FILES")
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|path| !path.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default(),
        jwt_issuer: env
            .get("ALIAS_JWT_ISSUER")
            .unwrap_or_else(|| "alias-server".to_owned()),
        jwt_audience: env
            .get("ALIAS_JWT_AUDIENCE")
            .unwrap_or_else(|| "alias-app".to_owned()),
        access_ttl: Duration::from_secs(env.parse_positive("ALIAS_ACCESS_TTL_SECONDS", 900)?),
        refresh_ttl: Duration::from_secs(
            env.parse_positive::<u64>("ALIAS_REFRESH_TTL_DAYS", 30)? * 86_400,
        ),
        refresh_reuse_interval: Duration::from_secs(env.parse(
            "ALIAS_REFRESH_REUSE_SECONDS",
            "10",
            "a whole number of seconds",
        )?),
        google: IdProviderConfig {
            client_ids: list("ALIAS_GOOGLE_CLIENT_IDS"),
            jwks_url: env.url(
                "ALIAS_GOOGLE_JWKS_URL",
                "https://www.googleapis.com/oauth2/v3/certs",
            )?,
        },
        apple: IdProviderConfig {
            client_ids: list("ALIAS_APPLE_CLIENT_IDS"),
            jwks_url: env.url(
                "ALIAS_APPLE_JWKS_URL",
                "https://appleid.apple.com/auth/keys",
            )?,
        },
        jwks_min_refetch: Duration::from_secs(env.parse(
            "ALIAS_JWKS_MIN_REFETCH_SECONDS",
            "60",
            "a whole number of seconds",
        )?),
        ip_limit_per_minute: env.parse_positive("ALIAS_AUTH_IP_LIMIT_PER_MINUTE", 60)?,
        login_lock: Duration::from_secs(env.parse_positive("ALIAS_LOGIN_LOCK_SECONDS", 900)?),
        session_cache_ttl: Duration::from_secs(env.parse(
            "ALIAS_SESSION_CACHE_SECONDS",
            "5",
            "a whole number of seconds",
        )?),
    })
}

impl Config {
    /// A shared database or a public address: settings where local defaults deserve a warning.
    pub fn looks_like_production(&self) -> bool {
        self.database_url.starts_with("postgres") || !self.bind.ip().is_loopback()
    }
}

fn parse_database_url(url: &str) -> Result<String, ConfigError> {
    let supported = ["sqlite:", "postgres://", "postgresql://"];
    if supported.iter().any(|prefix| url.starts_with(prefix)) {
        Ok(url.to_owned())
    } else {
        Err(ConfigError {
            var: "DATABASE_URL",
            message: "expected a sqlite:// or postgres:// URL".to_owned(),
        })
    }
}

/// `mode=rwc` lets SQLite create the file on first start.
fn default_sqlite_url(data_dir: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join("alias.db").display())
}

fn parse_cors(value: Option<String>) -> Result<CorsOrigins, ConfigError> {
    let Some(value) = value else {
        return Ok(CorsOrigins::None);
    };
    if value == "*" {
        return Ok(CorsOrigins::Any);
    }
    value
        .split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            let valid = origin.starts_with("http://") || origin.starts_with("https://");
            HeaderValue::from_str(origin)
                .ok()
                .filter(|_| valid)
                .ok_or_else(|| ConfigError {
                    var: "ALIAS_CORS_ORIGINS",
                    message: format!("expected `*` or comma-separated origins like https://app.example.com, got {origin:?}"),
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(CorsOrigins::List)
}

#[cfg(test)]
mod tests;
