//! Settings of the optional services: file storage, mail, Gmail and its job queue, voice
//! (LiveKit) and the Redis shared by several instances.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;
use super::env::{Env, parse_bool};
use crate::master_key::MasterKey;

/// A setting that is a secret or carries one (a shared secret, a URL with a password): kept
/// out of debug output, so a logged configuration never shows it.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Secret(<redacted>)")
    }
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
    pub api_secret: Secret,
    /// The agent dispatched into every call's room by name (none: LiveKit's default).
    pub agent_name: Option<String>,
}

/// Redis shared by the instances behind one address: rate limits and cache evictions.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://` or `rediss://`, maybe with a password.
    pub url: Secret,
    /// Put before every key and channel name, so several deployments can share one Redis.
    pub key_prefix: String,
    /// How long a call waits for Redis before it is answered `SERVICE_UNAVAILABLE`.
    pub timeout: Duration,
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
    /// Where mails are sent (`smtp://` or `smtps://`, maybe with credentials); `None`: written
    /// to the log instead (development).
    pub smtp_url: Option<Secret>,
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

/// All of URL, key and secret, or none of them (then voice is off).
pub(super) fn livekit_config(env: &Env<'_>) -> Result<Option<LiveKitConfig>, ConfigError> {
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
        api_secret: Secret(required("ALIAS_LIVEKIT_API_SECRET", api_secret)?),
        agent_name,
    }))
}

pub(super) fn storage_config(
    env: &Env<'_>,
    data_dir: &std::path::Path,
) -> Result<StorageConfig, ConfigError> {
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
pub(super) fn redis_config(env: &Env<'_>) -> Result<Option<RedisConfig>, ConfigError> {
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
        url: Secret(url),
        key_prefix,
        timeout,
    }))
}

/// `public_url`: `ALIAS_PUBLIC_URL`, as the storage settings read it.
pub(super) fn mail_config(
    env: &Env<'_>,
    bind: SocketAddr,
    public_url: Option<&str>,
) -> Result<MailConfig, ConfigError> {
    let smtp_url = env
        .get("ALIAS_SMTP_URL")
        .map(|url| {
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(&url)
                .map(|_| Secret(url))
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

pub(super) fn google_config(env: &Env<'_>) -> Result<GoogleConfig, ConfigError> {
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
