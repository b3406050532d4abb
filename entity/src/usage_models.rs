use sea_orm::entity::prelude::*;

/// A user's replies and tokens on one of their days with one provider and model.
#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "usage_models")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    /// The user's local date, `YYYY-MM-DD`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub day: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub provider: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub model: String,
    pub messages: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

impl ActiveModelBehavior for ActiveModel {}
