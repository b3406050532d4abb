use sea_orm::entity::prelude::*;

/// A user's file: where its bytes are stored (object keys, never links) and what processing
/// found in them.
#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "files")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub session_id: Option<Uuid>,
    /// "attachment" or "avatar".
    pub purpose: String,
    /// "pending" (upload link handed out), "ready" or "rejected".
    pub status: String,
    pub filename: String,
    /// Declared while pending; the type sniffed from the bytes once ready.
    pub mime_type: String,
    pub size_bytes: i64,
    /// SHA-256 declared for an upload link, base64.
    pub sha256: Option<String>,
    pub object_key: String,
    pub thumbnail_key: Option<String>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub thumbhash: Option<String>,
    pub created_at: DateTimeUtc,
    pub completed_at: Option<DateTimeUtc>,
}

impl ActiveModelBehavior for ActiveModel {}
