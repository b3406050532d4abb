use sea_orm::entity::prelude::*;

/// One transcript segment of a call, by the client's segment id; its text is the chat
/// message it became (`message_id`).
#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "voice_segments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub voice_session_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub segment_id: String,
    pub message_id: Uuid,
    /// "user" or "assistant".
    pub speaker: String,
    /// Milliseconds since the call started.
    pub start_ms: i64,
    pub end_ms: Option<i64>,
}

impl ActiveModelBehavior for ActiveModel {}
