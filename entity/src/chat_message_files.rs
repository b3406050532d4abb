use sea_orm::entity::prelude::*;

/// A file attached to a chat message, in the order sent. The name, type and size are kept
/// so the message still shows what it was once the file is deleted.
#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "chat_message_files")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub message_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub position: i32,
    pub file_id: Uuid,
    pub filename: String,
    pub mime_type: String,
    pub size_bytes: i64,
}

impl ActiveModelBehavior for ActiveModel {}
