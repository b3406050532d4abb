use sea_orm::entity::prelude::*;

/// A user's key for one AI provider, sealed with envelope encryption: nothing here opens it
/// without the master key or KMS.
#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub provider: String,
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    /// The data key, encrypted by the master key or KMS.
    pub wrapped_key: Vec<u8>,
    /// Which master key or KMS key wrapped it.
    pub key_id: String,
    pub format_version: i16,
    /// "…WXYZ": the last four characters, to recognise the key by.
    pub hint: String,
    pub status: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub last_validated_at: Option<DateTimeUtc>,
}

impl ActiveModelBehavior for ActiveModel {}
