//! Why a reply failed: `chat_messages.error`, a JSON object `{ reason, message,
//! retryAfterSeconds }` beside `status = 'error'` (null on every other message, and on replies
//! that failed before this column existed).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ChatMessages::Table)
                    .add_column(json_null(ChatMessages::Error))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ChatMessages::Table)
                    .drop_column(ChatMessages::Error)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum ChatMessages {
    Table,
    Error,
}
