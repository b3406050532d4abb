//! The catalogue of machine-readable failure reasons (`error.data.reason`), typed in the
//! bindings as a closed union so the app can switch on them.

use serde::Serialize;

use crate::rpc::ErrorReason;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No `Authorization: Bearer …` header: sign in.
    MissingToken,
    /// The access or refresh token is not one of ours (malformed, tampered, wrong key).
    InvalidToken,
    /// The access token expired: call `auth.refresh`, then retry.
    TokenExpired,
    /// The session was signed out or revoked: sign in again.
    SessionRevoked,
    /// The session reached its fixed lifetime: sign in again.
    SessionExpired,
    /// A refresh token was used twice; the session is revoked: sign in again.
    RefreshTokenReused,
    /// Wrong email or password (deliberately not saying which).
    InvalidCredentials,
    /// Registration with an email that already has an account.
    EmailTaken,
    /// The provider's email is not verified and an account with it exists.
    EmailNotVerified,
    /// A mailed code or link is wrong, expired, already used or was tried too often: ask for
    /// a new one.
    InvalidCode,
    /// Google or Apple sign-in is not configured on this server.
    ProviderNotConfigured,
    /// The AI provider refused the API key: ask the user for another.
    ApiKeyRejected,
    /// The AI provider could not be reached: nothing is wrong with the key; try later.
    ProviderUnreachable,
    /// No API key is saved for that provider: ask the user to add one.
    ApiKeyMissing,
    /// The saved key can no longer be opened (damaged or moved): ask the user to set it again.
    ApiKeyUnreadable,
    /// The key service (KMS) is unavailable: nothing is lost; try again shortly.
    KeyServiceUnavailable,
    /// Too many attempts of this action: wait `retryAfterSeconds`.
    RateLimited,
    /// The database is saturated or locked for the moment: retry after `retryAfterSeconds`.
    DatabaseBusy,
    /// The database cannot be reached or cannot write at the moment: retry after
    /// `retryAfterSeconds`.
    DatabaseUnavailable,
    /// The store the server's instances share (Redis) cannot be reached: nothing is lost;
    /// retry after `retryAfterSeconds`.
    SharedStateUnavailable,
    /// The file is larger than allowed for its type (images and other files have their own
    /// limits).
    FileTooLarge,
    /// That kind of file is not accepted (allowed: JPEG, PNG, WebP, GIF, PDF, plain text,
    /// Markdown, CSV); HEIC/HEIF photos too, until the server can convert them.
    FileTypeNotAllowed,
    /// The bytes are not what was declared: another type, size or SHA-256.
    FileContentMismatch,
    /// The user's storage is full: delete files first.
    StorageQuotaExceeded,
    /// `files.complete` before the upload link received the bytes: upload, then complete.
    UploadIncomplete,
    /// The Google grant lacks the Gmail read-only scope: connect again and allow Gmail.
    ScopeMissing,
    /// Google no longer honours the connection (revoked or expired): connect Gmail again.
    GoogleReconnectRequired,
    /// Gmail is not connected for this account: connect it first.
    GoogleNotConnected,
    /// Google refused the authorization code (expired, already used, or without offline
    /// access): sign in with Google again.
    GoogleCodeRejected,
    /// The plan's daily message or token quota is used up: it resets at the user's midnight,
    /// in `retryAfterSeconds` (see `usage.summary`).
    QuotaExceeded,
    /// Voice calls are not configured on this server (no LiveKit).
    VoiceNotConfigured,
    /// A voice call's agent credential is past its use (the call ended a while ago).
    VoiceCredentialExpired,
    /// Share links are turned off on this server (`ALIAS_SHARING=false`).
    SharingDisabled,
}

impl ErrorReason for Reason {
    fn as_str(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::TokenExpired => "token_expired",
            Self::SessionRevoked => "session_revoked",
            Self::SessionExpired => "session_expired",
            Self::RefreshTokenReused => "refresh_token_reused",
            Self::InvalidCredentials => "invalid_credentials",
            Self::EmailTaken => "email_taken",
            Self::EmailNotVerified => "email_not_verified",
            Self::InvalidCode => "invalid_code",
            Self::ProviderNotConfigured => "provider_not_configured",
            Self::ApiKeyRejected => "api_key_rejected",
            Self::ProviderUnreachable => "provider_unreachable",
            Self::ApiKeyMissing => "api_key_missing",
            Self::ApiKeyUnreadable => "api_key_unreadable",
            Self::KeyServiceUnavailable => "key_service_unavailable",
            Self::RateLimited => "rate_limited",
            Self::DatabaseBusy => "database_busy",
            Self::DatabaseUnavailable => "database_unavailable",
            Self::SharedStateUnavailable => "shared_state_unavailable",
            Self::FileTooLarge => "file_too_large",
            Self::FileTypeNotAllowed => "file_type_not_allowed",
            Self::FileContentMismatch => "file_content_mismatch",
            Self::StorageQuotaExceeded => "storage_quota_exceeded",
            Self::UploadIncomplete => "upload_incomplete",
            Self::ScopeMissing => "scope_missing",
            Self::GoogleReconnectRequired => "google_reconnect_required",
            Self::GoogleNotConnected => "google_not_connected",
            Self::GoogleCodeRejected => "google_code_rejected",
            Self::QuotaExceeded => "quota_exceeded",
            Self::VoiceNotConfigured => "voice_not_configured",
            Self::VoiceCredentialExpired => "voice_credential_expired",
            Self::SharingDisabled => "sharing_disabled",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire string and the exported TypeScript union come from the same serde name.
    #[test]
    fn wire_names_match_serde_names() {
        use Reason::*;
        let all = [
            MissingToken,
            InvalidToken,
            TokenExpired,
            SessionRevoked,
            SessionExpired,
            RefreshTokenReused,
            InvalidCredentials,
            EmailTaken,
            EmailNotVerified,
            InvalidCode,
            ProviderNotConfigured,
            ApiKeyRejected,
            ProviderUnreachable,
            ApiKeyMissing,
            ApiKeyUnreadable,
            KeyServiceUnavailable,
            RateLimited,
            DatabaseBusy,
            DatabaseUnavailable,
            SharedStateUnavailable,
            FileTooLarge,
            FileTypeNotAllowed,
            FileContentMismatch,
            StorageQuotaExceeded,
            UploadIncomplete,
            QuotaExceeded,
            VoiceNotConfigured,
            VoiceCredentialExpired,
            SharingDisabled,
        ];
        for reason in all {
            assert_eq!(
                serde_json::to_value(reason).ok(),
                Some(serde_json::json!(reason.as_str()))
            );
        }
    }
}
