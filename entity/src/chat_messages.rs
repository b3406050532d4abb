use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "chat_messages")]
pub struct Model {
    /// UUIDv7: ordering by id is ordering by creation.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub session_id: Uuid,
    pub user_id: Uuid,
    /// "user", "assistant" or "tool".
    pub role: String,
    pub content: String,
    /// "complete", "streaming", "stopped" or "error".
    pub status: String,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub input_tokens: Option<i32>,
    pub output_tokens: Option<i32>,
    pub tool_calls: Option<Json>,
    pub is_liked: bool,
    pub client_message_id: Option<Uuid>,
    pub reply_to: Option<Uuid>,
    /// Why the reply failed (`status` "error"): `{ reason, message, retryAfterSeconds }`.
    pub error: Option<Json>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// "text" (typed in chat) or "voice" (said in a voice call).
    pub source: String,
    /// The message this one follows in its branch: null for a session's first message (and
    /// an edit of it). A tool message's parent is the reply that ran it.
    pub parent_id: Option<Uuid>,
    #[sea_orm(belongs_to, from = "session_id", to = "id")]
    pub session: HasOne<super::chat_sessions::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}
