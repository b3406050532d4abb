use sea_orm::entity::prelude::*;

/// A user's replies and tokens on one of their days (what the daily quotas count).
#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "usage_days")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    /// The user's local date, `YYYY-MM-DD`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub day: String,
    pub messages: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

impl ActiveModelBehavior for ActiveModel {}
