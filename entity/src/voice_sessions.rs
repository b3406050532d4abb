use sea_orm::entity::prelude::*;

/// A voice call (a LiveKit room) with the user's assistant, part of a chat session. Its
/// times come from LiveKit's webhooks, merged order-independently (earliest start, earliest
/// end, latest join and leave of the user).
#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "voice_sessions")]
pub struct Model {
    /// UUIDv7: ordering by id is ordering by creation.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub chat_session_id: Uuid,
    pub room_name: String,
    /// SHA-256 (hex) of the call's agent credential.
    pub agent_token_hash: String,
    pub transcript_preview: String,
    pub created_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub ended_at: Option<DateTimeUtc>,
    pub user_joined_at: Option<DateTimeUtc>,
    pub user_left_at: Option<DateTimeUtc>,
    pub last_activity_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
