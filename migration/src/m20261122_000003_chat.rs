//! Chat sessions and their messages.

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
                    .table(ChatSessions::Table)
                    .col(uuid(ChatSessions::Id).primary_key())
                    .col(uuid(ChatSessions::UserId))
                    .col(string(ChatSessions::Title))
                    .col(string_null(ChatSessions::Summary))
                    .col(boolean(ChatSessions::IsPinned))
                    .col(boolean(ChatSessions::IsArchived))
                    .col(integer(ChatSessions::MessageCount))
                    .col(timestamp_with_time_zone(ChatSessions::CreatedAt))
                    .col(timestamp_with_time_zone(ChatSessions::UpdatedAt))
                    .col(timestamp_with_time_zone(ChatSessions::LastMessageAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ChatSessions::Table, ChatSessions::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_chat_sessions_listing")
                    .table(ChatSessions::Table)
                    .col(ChatSessions::UserId)
                    .col(ChatSessions::IsArchived)
                    .col(ChatSessions::IsPinned)
                    .col(ChatSessions::LastMessageAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ChatMessages::Table)
                    .col(uuid(ChatMessages::Id).primary_key())
                    .col(uuid(ChatMessages::SessionId))
                    // The owner, so ownership checks and search need no join.
                    .col(uuid(ChatMessages::UserId))
                    .col(string(ChatMessages::Role))
                    .col(text(ChatMessages::Content))
                    .col(string(ChatMessages::Status))
                    .col(string_null(ChatMessages::Provider))
                    .col(string_null(ChatMessages::Model))
                    .col(integer_null(ChatMessages::InputTokens))
                    .col(integer_null(ChatMessages::OutputTokens))
                    .col(json_null(ChatMessages::ToolCalls))
                    .col(boolean(ChatMessages::IsLiked))
                    // The app's id for a user message: resending it never creates a second one.
                    .col(uuid_null(ChatMessages::ClientMessageId))
                    // For an assistant or tool message: the user message it answers.
                    .col(uuid_null(ChatMessages::ReplyTo))
                    .col(timestamp_with_time_zone(ChatMessages::CreatedAt))
                    .col(timestamp_with_time_zone(ChatMessages::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ChatMessages::Table, ChatMessages::SessionId)
                            .to(ChatSessions::Table, ChatSessions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_chat_messages_session_id_id")
                    .table(ChatMessages::Table)
                    .col(ChatMessages::SessionId)
                    .col(ChatMessages::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_chat_messages_session_id_client_message_id")
                    .table(ChatMessages::Table)
                    .col(ChatMessages::SessionId)
                    .col(ChatMessages::ClientMessageId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_chat_messages_status")
                    .table(ChatMessages::Table)
                    .col(ChatMessages::Status)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ChatMessages::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(ChatSessions::Table).to_owned())
            .await
    }
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
    UserId,
    Title,
    Summary,
    IsPinned,
    IsArchived,
    MessageCount,
    CreatedAt,
    UpdatedAt,
    LastMessageAt,
}

#[derive(DeriveIden)]
enum ChatMessages {
    Table,
    Id,
    SessionId,
    UserId,
    Role,
    Content,
    Status,
    Provider,
    Model,
    InputTokens,
    OutputTokens,
    ToolCalls,
    IsLiked,
    ClientMessageId,
    ReplyTo,
    CreatedAt,
    UpdatedAt,
}
