use sea_orm::entity::prelude::*;

/// A share link: a frozen copy of a chat's messages, public to whoever holds its token.
#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "shares")]
pub struct Model {
    /// UUIDv7: ordering by id is ordering by creation.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub session_id: Uuid,
    /// HMAC-SHA256 (hex) of the link's token; the token itself is never stored.
    pub token_hash: String,
    /// The chat's title when the link was made.
    pub title: String,
    /// `[{ role, content, model, createdAt }]`, in conversation order.
    pub messages: Json,
    pub message_count: i32,
    pub created_at: DateTimeUtc,
    pub expires_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
}

impl ActiveModelBehavior for ActiveModel {}
