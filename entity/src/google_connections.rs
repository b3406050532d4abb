use sea_orm::entity::prelude::*;

/// A user's Gmail connection: the refresh token sealed with envelope encryption (as API keys
/// are), and where the mail sync stands.
#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "google_connections")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    pub email: String,
    pub scopes: String,
    pub status: String,
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub wrapped_key: Vec<u8>,
    pub key_id: String,
    pub format_version: i16,
    pub history_id: Option<String>,
    pub sync_page_token: Option<String>,
    pub last_error: Option<String>,
    pub last_sync_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
