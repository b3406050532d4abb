//! LiveKit's wire formats, as its server SDKs write and read them: access tokens (HS256 JWTs
//! signed with the API secret, `iss` the API key, the `video` grant and the `roomConfig`
//! with agent dispatch in protobuf-JSON field names) and webhooks (a JWT in `Authorization`
//! whose `sha256` claim is the base64 SHA-256 of the raw body; the event in protobuf JSON,
//! 64-bit numbers as strings).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::LiveKitConfig;

/// Clock skew tolerated on a webhook's token (LiveKit's SDKs allow 10 s too).
const LEEWAY_SECONDS: u64 = 10;

/// What a room join token grants.
pub struct JoinToken<'a> {
    pub room: &'a str,
    pub identity: &'a str,
    pub name: &'a str,
    /// The dispatched agent's job metadata.
    pub agent_metadata: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    name: &'a str,
    nbf: i64,
    exp: i64,
    video: VideoGrant<'a>,
    room_config: RoomConfiguration<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VideoGrant<'a> {
    room: &'a str,
    room_join: bool,
    can_publish: bool,
    can_subscribe: bool,
    can_publish_data: bool,
}

/// `livekit.RoomConfiguration` in protobuf JSON: the room created on join, and the agents
/// dispatched into it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RoomConfiguration<'a> {
    name: &'a str,
    agents: Vec<RoomAgentDispatch<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RoomAgentDispatch<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_name: Option<&'a str>,
    metadata: String,
}

/// A LiveKit access token joining `token.room` only, with publish, subscribe and data.
pub fn access_token(config: &LiveKitConfig, token: JoinToken<'_>) -> anyhow::Result<String> {
    let claims = AccessClaims {
        iss: &config.api_key,
        sub: token.identity,
        name: token.name,
        nbf: token.issued_at.timestamp(),
        exp: token.expires_at.timestamp(),
        video: VideoGrant {
            room: token.room,
            room_join: true,
            can_publish: true,
            can_subscribe: true,
            can_publish_data: true,
        },
        room_config: RoomConfiguration {
            name: token.room,
            agents: vec![RoomAgentDispatch {
                agent_name: config.agent_name.as_deref(),
                metadata: token.agent_metadata,
            }],
        },
    };
    let key = EncodingKey::from_secret(config.api_secret.0.as_bytes());
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &key,
    )?)
}

/// Why a webhook was refused (logged; the sender gets a bare 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MissingSignature,
    /// Not a JWT of ours: malformed, another algorithm, another key or secret, expired.
    BadToken,
    /// Signed, but for another body.
    BodyMismatch,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingSignature => "no Authorization header",
            Self::BadToken => "token not signed with our API key and secret, or expired",
            Self::BodyMismatch => "sha256 claim does not match the body",
        }
    }
}

#[derive(Deserialize)]
struct WebhookClaims {
    sha256: Option<String>,
}

/// Checks a webhook exactly as LiveKit's `WebhookReceiver` does: the `Authorization` header
/// (bare, or after `Bearer `) is an HS256 JWT from our API key (`iss`), signed with our
/// secret, unexpired (10 s leeway), whose `sha256` claim is the base64 SHA-256 of `body`.
pub fn verify_webhook(
    config: &LiveKitConfig,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<(), Refusal> {
    let header = authorization
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .ok_or(Refusal::MissingSignature)?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .unwrap_or(header)
        .trim();
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[config.api_key.as_str()]);
    validation.set_required_spec_claims(&["exp", "iss"]);
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.leeway = LEEWAY_SECONDS;
    let key = DecodingKey::from_secret(config.api_secret.0.as_bytes());
    let claims = jsonwebtoken::decode::<WebhookClaims>(token, &key, &validation)
        .map_err(|_| Refusal::BadToken)?
        .claims;
    let expected = STANDARD.encode(Sha256::digest(body));
    match claims.sha256 {
        Some(sha256) if sha256 == expected => Ok(()),
        _ => Err(Refusal::BodyMismatch),
    }
}

/// The parts of a `livekit.WebhookEvent` calls are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    pub id: String,
    pub kind: String,
    pub room_name: Option<String>,
    pub participant_identity: Option<String>,
    /// When LiveKit created the event; `None` when absent (the receiver uses its own clock).
    pub created_at: Option<DateTime<Utc>>,
}

/// Reads a verified body; `None` when it is no webhook event (no JSON object, no id, no event).
pub fn parse_event(body: &[u8]) -> Option<WebhookEvent> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let text = |value: &Value| {
        value
            .as_str()
            .filter(|text| !text.is_empty())
            .map(str::to_owned)
    };
    let id = text(value.get("id")?)?;
    let kind = text(value.get("event")?)?;
    let created_at = value
        .get("createdAt")
        .and_then(int64)
        .filter(|seconds| *seconds > 0)
        .and_then(|seconds| DateTime::from_timestamp(seconds, 0));
    Some(WebhookEvent {
        id,
        kind,
        room_name: value.pointer("/room/name").and_then(text),
        participant_identity: value.pointer("/participant/identity").and_then(text),
        created_at,
    })
}

/// Protobuf JSON writes 64-bit integers as strings; numbers are accepted too.
fn int64(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn config() -> LiveKitConfig {
        crate::security::install_crypto_provider();
        LiveKitConfig {
            url: "wss://lk.example.com".to_owned(),
            api_key: "APIkey".to_owned(),
            api_secret: Secret("secret-of-at-least-32-characters!".to_owned()),
            agent_name: Some("alias-agent".to_owned()),
        }
    }

    fn webhook_token(config: &LiveKitConfig, body: &[u8], exp: i64) -> String {
        let claims = serde_json::json!({
            "iss": config.api_key,
            "exp": exp,
            "nbf": 0,
            "sha256": STANDARD.encode(Sha256::digest(body)),
        });
        let key = EncodingKey::from_secret(config.api_secret.0.as_bytes());
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("sign")
    }

    #[test]
    fn webhooks_are_verified_against_key_secret_body_and_time() {
        let config = config();
        let body = br#"{"event":"room_started","id":"EV_1","createdAt":"1700000000"}"#;
        let later = Utc::now().timestamp() + 300;
        let token = webhook_token(&config, body, later);
        assert_eq!(verify_webhook(&config, Some(&token), body), Ok(()));
        let bearer = format!("Bearer {token}");
        assert_eq!(verify_webhook(&config, Some(&bearer), body), Ok(()));
        assert_eq!(
            verify_webhook(&config, Some(&token), b"{}"),
            Err(Refusal::BodyMismatch)
        );
        assert_eq!(
            verify_webhook(&config, None, body),
            Err(Refusal::MissingSignature)
        );
        let stale = webhook_token(&config, body, Utc::now().timestamp() - 60);
        assert_eq!(
            verify_webhook(&config, Some(&stale), body),
            Err(Refusal::BadToken)
        );
        let mut other = config.clone();
        other.api_secret = Secret("another-secret-of-32-characters!!".to_owned());
        let forged = webhook_token(&other, body, later);
        assert_eq!(
            verify_webhook(&config, Some(&forged), body),
            Err(Refusal::BadToken)
        );
    }

    #[test]
    fn events_read_protobuf_json() {
        let event = parse_event(
            br#"{"event":"participant_joined","id":"EV_2","createdAt":"1700000000",
                 "room":{"name":"r"},"participant":{"identity":"u","joinedAt":"1700000000"}}"#,
        )
        .expect("event");
        assert_eq!(event.kind, "participant_joined");
        assert_eq!(event.room_name.as_deref(), Some("r"));
        assert_eq!(event.participant_identity.as_deref(), Some("u"));
        assert_eq!(
            event.created_at.map(|at| at.timestamp()),
            Some(1_700_000_000)
        );
        assert_eq!(parse_event(br#"{"event":"room_started"}"#), None);
        assert_eq!(parse_event(b"not json"), None);
    }
}
