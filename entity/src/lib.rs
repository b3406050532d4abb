//! SeaORM entities: one module per table (see `migration/` for the schema itself).

pub mod api_keys;
pub mod audit_events;
pub mod auth_sessions;
pub mod chat_message_files;
pub mod chat_messages;
pub mod chat_sessions;
pub mod email_tokens;
pub mod files;
pub mod google_connections;
pub mod jobs;
pub mod mail_messages;
pub mod password_attempts;
pub mod preferences;
pub mod projects;
pub mod refresh_tokens;
pub mod shares;
pub mod usage_days;
pub mod usage_models;
pub mod user_identities;
pub mod users;
pub mod voice_segments;
pub mod voice_sessions;
pub mod voice_webhook_events;
