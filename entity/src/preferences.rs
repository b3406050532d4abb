use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "preferences")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    pub theme: String,
    pub language: String,
    pub timezone: String,
    pub ai_provider: String,
    /// `None`: the provider's default model.
    pub ai_model: Option<String>,
    pub temperature: f64,
    pub max_tokens: i32,
    pub save_conversations: bool,
    pub notifications_enabled: bool,
    pub updated_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
