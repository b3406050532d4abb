//! Projects and share links. A project (`projects`) groups a user's chats under a name, a
//! colour and instructions added to their system prompt; `chat_sessions.project_id` points at
//! it and falls back to null when the project is deleted (its chats stay, moved out). A share
//! link (`shares`) is a frozen copy of a chat's messages at the moment it was made, found by a
//! keyed hash of its token (never the token itself); it goes with its chat or its owner.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_projects(manager).await?;
        // SQLite cannot add a foreign key to an existing table with ALTER TABLE … ADD
        // CONSTRAINT, but accepts one on a new nullable column; PostgreSQL accepts both.
        manager
            .alter_table(
                Table::alter()
                    .table(ChatSessions::Table)
                    .add_column(
                        uuid_null(ChatSessions::ProjectId)
                            .extra("REFERENCES projects (id) ON DELETE SET NULL"),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_chat_sessions_project")
                    .table(ChatSessions::Table)
                    .col(ChatSessions::ProjectId)
                    .to_owned(),
            )
            .await?;
        create_shares(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Shares::Table).to_owned())
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_chat_sessions_project")
                    .table(ChatSessions::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ChatSessions::Table)
                    .drop_column(ChatSessions::ProjectId)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(Projects::Table).to_owned())
            .await
    }
}

async fn create_projects(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(Projects::Table)
                .col(uuid(Projects::Id).primary_key())
                .col(uuid(Projects::UserId))
                .col(string(Projects::Name))
                .col(text(Projects::Instructions))
                // `#rrggbb`, lower case.
                .col(string_null(Projects::Color))
                .col(timestamp_with_time_zone(Projects::CreatedAt))
                .col(timestamp_with_time_zone(Projects::UpdatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(Projects::Table, Projects::UserId)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
    manager
        .create_index(
            Index::create()
                .name("idx_projects_user")
                .table(Projects::Table)
                .col(Projects::UserId)
                .col(Projects::Id)
                .to_owned(),
        )
        .await
}

async fn create_shares(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(Shares::Table)
                .col(uuid(Shares::Id).primary_key())
                .col(uuid(Shares::UserId))
                .col(uuid(Shares::SessionId))
                // HMAC-SHA256 (hex) of the link's token under a server key.
                .col(string(Shares::TokenHash).unique_key())
                // The chat's title when the link was made.
                .col(string(Shares::Title))
                // `[{ role, content, model, createdAt }]`, in conversation order.
                .col(json(Shares::Messages))
                .col(integer(Shares::MessageCount))
                .col(timestamp_with_time_zone(Shares::CreatedAt))
                .col(timestamp_with_time_zone_null(Shares::ExpiresAt))
                .col(timestamp_with_time_zone_null(Shares::RevokedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(Shares::Table, Shares::UserId)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(Shares::Table, Shares::SessionId)
                        .to(ChatSessions::Table, ChatSessions::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
    for (name, column) in [
        ("idx_shares_user", Shares::UserId),
        ("idx_shares_session", Shares::SessionId),
    ] {
        manager
            .create_index(
                Index::create()
                    .name(name)
                    .table(Shares::Table)
                    .col(column)
                    .col(Shares::Id)
                    .to_owned(),
            )
            .await?;
    }
    Ok(())
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum ChatSessions {
    Table,
    Id,
    ProjectId,
}

#[derive(DeriveIden)]
enum Projects {
    Table,
    Id,
    UserId,
    Name,
    Instructions,
    Color,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Shares {
    Table,
    Id,
    UserId,
    SessionId,
    TokenHash,
    Title,
    Messages,
    MessageCount,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
}
