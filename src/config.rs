//! Configuration from the environment (`ALIAS_*`, `DATABASE_URL`), parsed once at start-up.
//! Every value has a default that works on a laptop; an invalid one stops start-up with a
//! message naming the variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use axum::http::HeaderValue;

use crate::master_key::MasterKey;

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
    /// Redis shared by several instances (`ALIAS_REDIS_URL`); `None`: one instance, in memory.
    pub redis: Option<RedisConfig>,
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

/// Voice calls through LiveKit.
#[derive(Debug, Clone)]
pub struct VoiceConfig {
    /// Without it the voice procedures answer `voice_not_configured`.
    pub livekit: Option<LiveKitConfig>,
    /// A call with no webhook and no transcript for this long is ended by the sweep.
    pub quiet_after: Duration,
}

#[derive(Debug, Clone)]
pub struct LiveKitConfig {
    /// The `wss://` URL the app connects to.
    pub url: String,
    pub api_key: String,
    pub api_secret: ApiSecret,
    /// The agent dispatched into every call's room by name (none: LiveKit's default).
    pub agent_name: Option<String>,
}

/// A shared secret, kept out of debug output.
#[derive(Clone)]
pub struct ApiSecret(pub String);

impl std::fmt::Debug for ApiSecret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ApiSecret(<redacted>)")
    }
}

/// Redis shared by the instances behind one address: rate limits and cache evictions.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: RedisUrl,
    /// Put before every key and channel name, so several deployments can share one Redis.
    pub key_prefix: String,
    /// How long a call waits for Redis before it is answered `SERVICE_UNAVAILABLE`.
    pub timeout: Duration,
}

/// `redis://` or `rediss://`, maybe with a password: shown without it.
#[derive(Clone)]
pub struct RedisUrl(pub String);

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("RedisUrl(<redacted>)")
    }
}

/// Where files' bytes live (`ALIAS_STORAGE`), and how links to them are signed.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub location: StorageLocation,
    /// Signs the links this server answers (downloads, local uploads); generated into the data
    /// directory when unset.
    pub url_key: Option<MasterKey>,
    /// The address clients reach this server at, for the links it signs; else taken from each
    /// request's `Host`.
    pub public_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageLocation {
    /// A folder on this machine.
    Local(PathBuf),
    /// An S3-compatible bucket; endpoint, region and credentials from the `AWS_*` variables
    /// (`ALIAS_S3_ENDPOINT` overrides the endpoint).
    S3 {
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
        virtual_hosted_style: bool,
    },
}

/// Limits on users' files.
#[derive(Debug, Clone)]
pub struct FilesConfig {
    pub max_image_bytes: u64,
    pub max_file_bytes: u64,
    /// Bytes each user may keep (pending uploads count).
    pub quota_bytes: u64,
    /// Lifetime of a download link.
    pub url_ttl: Duration,
    /// Lifetime of an upload link (`files.createUpload`).
    pub upload_url_ttl: Duration,
}

/// Account emails (verification, password reset, notices).
#[derive(Debug, Clone)]
pub struct MailConfig {
    /// Where mails are sent; `None`: written to the log instead (development).
    pub smtp_url: Option<SmtpUrl>,
    /// The `From` of every mail, as `Name <address>` or `address`.
    pub from: String,
    /// This server as the app and mail readers reach it: links in mails point here.
    pub public_url: String,
    /// Where "open the app" links go after a link in a mail worked (a deep link).
    pub app_url: String,
    /// Whether an account must verify its email before using the app (told to the app by
    /// `users.me`).
    pub require_verified_email: bool,
}

/// `smtp://` or `smtps://` with credentials: shown without them.
#[derive(Clone)]
pub struct SmtpUrl(pub String);

impl std::fmt::Debug for SmtpUrl {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SmtpUrl(<redacted>)")
    }
}

/// Gmail access: the OAuth client, Google's endpoints (configurable so tests can stand in)
/// and how mail is synced.
#[derive(Debug, Clone)]
pub struct GoogleConfig {
    /// Without both, `integrations.google.connect` answers `provider_not_configured`.
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub token_url: String,
    pub revoke_url: String,
    pub gmail_base_url: String,
    /// Time between two incremental syncs of a connection.
    pub sync_interval: Duration,
    /// How many days back the first sync reaches (at most 365).
    pub sync_days: u32,
    /// Characters of a message's plain text kept.
    pub body_chars: usize,
    /// Messages a first sync (or a resync) stores at most, newest first.
    pub sync_max_messages: u32,
}

/// The background job worker.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    pub poll_interval: Duration,
    pub lease: Duration,
    pub concurrency: usize,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
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
            voice: VoiceConfig {
                livekit: livekit_config(&env)?,
                quiet_after: env.seconds("ALIAS_VOICE_QUIET_SECONDS", 7200)?,
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

/// All of URL, key and secret, or none of them (then voice is off).
fn livekit_config(env: &Env<'_>) -> Result<Option<LiveKitConfig>, ConfigError> {
    let url = env.get("ALIAS_LIVEKIT_URL");
    let api_key = env.get("ALIAS_LIVEKIT_API_KEY");
    let api_secret = env.get("ALIAS_LIVEKIT_API_SECRET");
    let agent_name = env.get("ALIAS_LIVEKIT_AGENT_NAME");
    if url.is_none() && api_key.is_none() && api_secret.is_none() && agent_name.is_none() {
        return Ok(None);
    }
    let required = |var: &'static str, value: Option<String>| {
        value.ok_or_else(|| ConfigError {
            var,
            message: "needed with the other ALIAS_LIVEKIT_* variables (set URL, API key and \
                      secret together, or none of them)"
                .to_owned(),
        })
    };
    let url = required("ALIAS_LIVEKIT_URL", url)?;
    let valid = reqwest::Url::parse(&url).is_ok_and(|parsed| {
        matches!(parsed.scheme(), "ws" | "wss" | "http" | "https") && parsed.has_host()
    });
    if !valid {
        return Err(ConfigError {
            var: "ALIAS_LIVEKIT_URL",
            message: format!("expected a wss:// URL, got {url:?}"),
        });
    }
    Ok(Some(LiveKitConfig {
        url,
        api_key: required("ALIAS_LIVEKIT_API_KEY", api_key)?,
        api_secret: ApiSecret(required("ALIAS_LIVEKIT_API_SECRET", api_secret)?),
        agent_name,
    }))
}

fn storage_config(env: &Env<'_>, data_dir: &std::path::Path) -> Result<StorageConfig, ConfigError> {
    let location = match env.get("ALIAS_STORAGE").as_deref() {
        None | Some("local") => StorageLocation::Local(data_dir.join("files")),
        Some(url) => {
            let invalid = || ConfigError {
                var: "ALIAS_STORAGE",
                message: format!("expected `local` or `s3://bucket/prefix`, got {url:?}"),
            };
            let rest = url.strip_prefix("s3://").ok_or_else(invalid)?;
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid());
            }
            let endpoint = match env.get("ALIAS_S3_ENDPOINT") {
                Some(_) => Some(env.url("ALIAS_S3_ENDPOINT", "")?),
                None => None,
            };
            StorageLocation::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
                endpoint,
                virtual_hosted_style: env.parse_with(
                    "ALIAS_S3_VIRTUAL_HOSTED_STYLE",
                    false,
                    parse_bool,
                    "`true` or `false`",
                )?,
            }
        }
    };
    let url_key = env
        .get("ALIAS_STORAGE_URL_KEY")
        .map(|text| {
            MasterKey::from_base64(&text).map_err(|problem| ConfigError {
                var: "ALIAS_STORAGE_URL_KEY",
                message: format!("expected 32 random bytes in base64 ({problem})"),
            })
        })
        .transpose()?;
    let public_url = match env.get("ALIAS_PUBLIC_URL") {
        Some(_) => Some(
            env.url("ALIAS_PUBLIC_URL", "")?
                .trim_end_matches('/')
                .to_owned(),
        ),
        None => None,
    };
    Ok(StorageConfig {
        location,
        url_key,
        public_url,
    })
}

/// Prefix and timeout are checked even without a URL, so a typo never waits for the day Redis
/// is turned on.
fn redis_config(env: &Env<'_>) -> Result<Option<RedisConfig>, ConfigError> {
    let key_prefix = env
        .get("ALIAS_REDIS_KEY_PREFIX")
        .unwrap_or_else(|| "alias:".to_owned());
    if key_prefix.chars().any(char::is_whitespace) {
        return Err(ConfigError {
            var: "ALIAS_REDIS_KEY_PREFIX",
            message: format!("expected a prefix without spaces, got {key_prefix:?}"),
        });
    }
    let timeout = Duration::from_millis(env.parse_positive("ALIAS_REDIS_TIMEOUT_MS", 1000)?);
    let Some(url) = env.get("ALIAS_REDIS_URL") else {
        return Ok(None);
    };
    let supported = url.starts_with("redis://") || url.starts_with("rediss://");
    if !supported || redis::Client::open(url.as_str()).is_err() {
        // The value may hold a password: never echo it.
        return Err(ConfigError {
            var: "ALIAS_REDIS_URL",
            message: "expected redis://[:password@]host[:port][/db] or rediss://…".to_owned(),
        });
    }
    Ok(Some(RedisConfig {
        url: RedisUrl(url),
        key_prefix,
        timeout,
    }))
}

/// `public_url`: `ALIAS_PUBLIC_URL`, as the storage settings read it.
fn mail_config(
    env: &Env<'_>,
    bind: SocketAddr,
    public_url: Option<&str>,
) -> Result<MailConfig, ConfigError> {
    let smtp_url = env
        .get("ALIAS_SMTP_URL")
        .map(|url| {
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(&url)
                .map(|_| SmtpUrl(url))
                .map_err(|_| ConfigError {
                    var: "ALIAS_SMTP_URL",
                    message: "expected smtp://user:password@host:port or smtps://… (credentials percent-encoded)".to_owned(),
                })
        })
        .transpose()?;
    let from = env.parse_with(
        "ALIAS_MAIL_FROM",
        "ALIAS <no-reply@localhost>".to_owned(),
        |value| {
            value
                .parse::<lettre::message::Mailbox>()
                .ok()
                .map(|_| value.to_owned())
        },
        "an address, e.g. `ALIAS <no-reply@example.com>`",
    )?;
    let app_url = env.parse_with(
        "ALIAS_APP_URL",
        "alias://".to_owned(),
        |value| reqwest::Url::parse(value).ok().map(|_| value.to_owned()),
        "a URL, e.g. `alias://` or `https://app.example.com`",
    )?;
    Ok(MailConfig {
        smtp_url,
        from,
        public_url: public_url.map_or_else(|| format!("http://{bind}"), str::to_owned),
        app_url,
        require_verified_email: env.parse_with(
            "ALIAS_REQUIRE_VERIFIED_EMAIL",
            false,
            parse_bool,
            "`true` or `false`",
        )?,
    })
}

fn google_config(env: &Env<'_>) -> Result<GoogleConfig, ConfigError> {
    let sync_days: u32 = env.parse_positive("ALIAS_GMAIL_SYNC_DAYS", 30)?;
    if sync_days > 365 {
        return Err(ConfigError {
            var: "ALIAS_GMAIL_SYNC_DAYS",
            message: format!("expected at most 365 days, got {sync_days}"),
        });
    }
    Ok(GoogleConfig {
        client_id: env.get("ALIAS_GOOGLE_OAUTH_CLIENT_ID"),
        client_secret: env.get("ALIAS_GOOGLE_OAUTH_CLIENT_SECRET"),
        token_url: env.url(
            "ALIAS_GOOGLE_TOKEN_URL",
            "https://oauth2.googleapis.com/token",
        )?,
        revoke_url: env.url(
            "ALIAS_GOOGLE_REVOKE_URL",
            "https://oauth2.googleapis.com/revoke",
        )?,
        gmail_base_url: env.url("ALIAS_GMAIL_BASE_URL", "https://gmail.googleapis.com")?,
        sync_interval: env.seconds("ALIAS_GMAIL_SYNC_INTERVAL_SECONDS", 300)?,
        sync_days,
        body_chars: env.parse_positive("ALIAS_GMAIL_BODY_CHARS", 20_000)?,
        sync_max_messages: env.parse_positive("ALIAS_GMAIL_SYNC_MAX_MESSAGES", 5_000)?,
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

struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn get(&self, var: &str) -> Option<String> {
        (self.0)(var)
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    }

    fn parse_with<T>(
        &self,
        var: &'static str,
        default: T,
        parse: impl Fn(&str) -> Option<T>,
        expected: &str,
    ) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(value) => parse(&value).ok_or_else(|| ConfigError {
                var,
                message: format!("expected {expected}, got {value:?}"),
            }),
        }
    }

    fn parse<T: FromStr>(
        &self,
        var: &'static str,
        default: &str,
        expected: &str,
    ) -> Result<T, ConfigError> {
        let value = self.get(var).unwrap_or_else(|| default.to_owned());
        value.parse().map_err(|_| ConfigError {
            var,
            message: format!("expected {expected}, got {value:?}"),
        })
    }

    fn parse_positive<T: FromStr + Default + PartialOrd + ToString>(
        &self,
        var: &'static str,
        default: T,
    ) -> Result<T, ConfigError> {
        let parse = |value: &str| value.parse::<T>().ok().filter(|n| *n > T::default());
        self.parse_with(var, default, parse, "a whole number above zero")
    }

    /// A positive whole number of seconds.
    fn seconds(&self, var: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.parse_positive(var, default).map(Duration::from_secs)
    }
}

impl Env<'_> {
    /// A daily limit: a whole number (0 allows nothing) or `unlimited` (`None`).
    fn limit(&self, var: &'static str, default: Option<u64>) -> Result<Option<u64>, ConfigError> {
        let parse = |value: &str| {
            if value.eq_ignore_ascii_case("unlimited") {
                Some(None)
            } else {
                value.parse::<u64>().ok().map(Some)
            }
        };
        self.parse_with(var, default, parse, "a whole number or `unlimited`")
    }

    /// An http(s) base URL; every external service's is configurable so tests can stand in.
    fn url(&self, var: &'static str, default: &str) -> Result<String, ConfigError> {
        let value = self.get(var).unwrap_or_else(|| default.to_owned());
        let valid =
            reqwest::Url::parse(&value).is_ok_and(|url| matches!(url.scheme(), "http" | "https"));
        if valid {
            Ok(value)
        } else {
            Err(ConfigError {
                var,
                message: format!("expected an http(s) URL, got {value:?}"),
            })
        }
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
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
mod tests {
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
}
