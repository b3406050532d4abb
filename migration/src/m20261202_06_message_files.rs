//! Files attached to chat messages. A link keeps the file's name, type and size, so a message
//! whose file was deleted still shows what it was (no foreign key to `files`: deleting a file
//! leaves its links as "file deleted" placeholders).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ChatMessageFiles::Table)
                    .col(uuid(ChatMessageFiles::MessageId))
                    .col(integer(ChatMessageFiles::Position))
                    .col(uuid(ChatMessageFiles::FileId))
                    .col(string(ChatMessageFiles::Filename))
                    .col(string(ChatMessageFiles::MimeType))
                    .col(big_integer(ChatMessageFiles::SizeBytes))
                    .primary_key(
                        Index::create()
                            .col(ChatMessageFiles::MessageId)
                            .col(ChatMessageFiles::Position),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(ChatMessageFiles::Table, ChatMessageFiles::MessageId)
                            .to(ChatMessages::Table, ChatMessages::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ChatMessageFiles::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum ChatMessages {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum ChatMessageFiles {
    Table,
    MessageId,
    Position,
    FileId,
    Filename,
    MimeType,
    SizeBytes,
}
