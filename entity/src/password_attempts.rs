use sea_orm::entity::prelude::*;

/// Password verifications of one account in its current window.
#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "password_attempts")]
pub struct Model {
    /// Hex SHA-256 of the account's normalized email.
    #[sea_orm(primary_key, auto_increment = false)]
    pub account: String,
    pub window_started_at: DateTimeUtc,
    pub attempts: i32,
}

impl ActiveModelBehavior for ActiveModel {}
