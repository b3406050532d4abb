use sea_orm::entity::prelude::*;

/// A single-use link and code mailed to prove an address (see the migration).
#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "email_tokens")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    /// `verify_email`, `reset_password` or `change_email`.
    pub purpose: String,
    /// Where it was mailed (for a change of address, the new one).
    pub email: String,
    /// The account's address when the token was issued (an email change applies only while
    /// the account still has it); `None` on rows from before it was recorded.
    pub issued_for_email: Option<String>,
    /// Hex HMAC-SHA256 (server secret) of the link's token.
    #[sea_orm(unique)]
    pub token_hash: String,
    /// Hex HMAC-SHA256 (server secret) of `"<id>:<code>"`.
    pub code_hash: String,
    /// Codes tried against it; it stops working at the limit.
    pub code_attempts: i32,
    pub expires_at: DateTimeUtc,
    pub used_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    #[sea_orm(belongs_to, from = "user_id", to = "id")]
    pub user: HasOne<super::users::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}
