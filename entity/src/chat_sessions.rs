use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "chat_sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub title: String,
    pub summary: Option<String>,
    pub is_pinned: bool,
    pub is_archived: bool,
    pub message_count: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub last_message_at: DateTimeUtc,
    /// The last message of the branch the session shows (null before its first message).
    pub current_leaf_id: Option<Uuid>,
    /// The project it belongs to (`projects`); null when in none.
    pub project_id: Option<Uuid>,
    #[sea_orm(has_many)]
    pub messages: HasMany<super::chat_messages::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}
