//! Users' files: uploads (attachments, avatars), their processing results and where their
//! bytes are stored (object keys only; links are signed when asked for).

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
                    .table(Files::Table)
                    .col(uuid(Files::Id).primary_key())
                    .col(uuid(Files::UserId))
                    // The chat it was uploaded for; its files go with it.
                    .col(uuid_null(Files::SessionId))
                    .col(string(Files::Purpose))
                    .col(string(Files::Status))
                    .col(string(Files::Filename))
                    .col(string(Files::MimeType))
                    .col(big_integer(Files::SizeBytes))
                    // Declared by `files.createUpload` (base64), checked on completion.
                    .col(string_null(Files::Sha256))
                    .col(string(Files::ObjectKey))
                    .col(string_null(Files::ThumbnailKey))
                    .col(integer_null(Files::Width))
                    .col(integer_null(Files::Height))
                    .col(string_null(Files::Thumbhash))
                    .col(timestamp_with_time_zone(Files::CreatedAt))
                    .col(timestamp_with_time_zone_null(Files::CompletedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Files::Table, Files::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Files::Table, Files::SessionId)
                            .to(ChatSessions::Table, ChatSessions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_files_user_id_id")
                    .table(Files::Table)
                    .col(Files::UserId)
                    .col(Files::Id)
                    .to_owned(),
            )
            .await?;
        // The sweep of uploads never completed.
        manager
            .create_index(
                Index::create()
                    .name("idx_files_status_created_at")
                    .table(Files::Table)
                    .col(Files::Status)
                    .col(Files::CreatedAt)
                    .to_owned(),
            )
            .await?;
        // The uploaded picture shown as the user's avatar (`users.avatar_url` keeps a
        // picture from Google or Apple sign-in, shown when there is none).
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(uuid_null(Users::AvatarFileId))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::AvatarFileId)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(Files::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    AvatarFileId,
}

#[derive(DeriveIden)]
enum ChatSessions {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Files {
    Table,
    Id,
    UserId,
    SessionId,
    Purpose,
    Status,
    Filename,
    MimeType,
    SizeBytes,
    Sha256,
    ObjectKey,
    ThumbnailKey,
    Width,
    Height,
    Thumbhash,
    CreatedAt,
    CompletedAt,
}
