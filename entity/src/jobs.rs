use sea_orm::entity::prelude::*;

/// A durable background job (see `src/jobs/`): due at `run_at`, held by one worker until
/// `locked_until`.
#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub kind: String,
    #[sea_orm(unique)]
    pub unique_key: String,
    pub payload: Json,
    pub run_at: DateTimeUtc,
    pub attempts: i32,
    pub requests: i64,
    pub locked_until: Option<DateTimeUtc>,
    pub locked_by: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
