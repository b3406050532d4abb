use sea_orm::entity::prelude::*;

/// One Gmail message of a connected user, as synced: headers, labels and plain text.
#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "mail_messages")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub gmail_id: String,
    pub thread_id: String,
    pub from_addr: String,
    pub to_addr: String,
    pub cc: String,
    pub subject: String,
    pub date: DateTimeUtc,
    pub labels: String,
    pub snippet: String,
    pub body: String,
    pub updated_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
