//! Accounts, sign-in identities, sessions with their refresh-token families, and the audit log.

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
                    .table(Users::Table)
                    .col(uuid(Users::Id).primary_key())
                    // Stored lower-cased: emails compare case-insensitively.
                    .col(string_uniq(Users::Email))
                    .col(string(Users::Name))
                    .col(string_null(Users::AvatarUrl))
                    .col(string_null(Users::PasswordHash))
                    .col(timestamp_with_time_zone(Users::CreatedAt))
                    .col(timestamp_with_time_zone(Users::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(UserIdentities::Table)
                    .col(uuid(UserIdentities::Id).primary_key())
                    .col(uuid(UserIdentities::UserId))
                    .col(string(UserIdentities::Provider))
                    .col(string(UserIdentities::Subject))
                    .col(timestamp_with_time_zone(UserIdentities::CreatedAt))
                    .foreign_key(&mut cascade_to_user(
                        UserIdentities::Table,
                        UserIdentities::UserId,
                    ))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            UserIdentities::Table,
            &[UserIdentities::Provider, UserIdentities::Subject],
            true,
        )
        .await?;
        create_index(
            manager,
            UserIdentities::Table,
            &[UserIdentities::UserId],
            false,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(AuthSessions::Table)
                    .col(uuid(AuthSessions::Id).primary_key())
                    .col(uuid(AuthSessions::UserId))
                    .col(string_null(AuthSessions::UserAgent))
                    .col(string_null(AuthSessions::Ip))
                    .col(timestamp_with_time_zone(AuthSessions::CreatedAt))
                    .col(timestamp_with_time_zone(AuthSessions::LastUsedAt))
                    .col(timestamp_with_time_zone(AuthSessions::ExpiresAt))
                    .col(timestamp_with_time_zone_null(AuthSessions::RevokedAt))
                    .foreign_key(&mut cascade_to_user(
                        AuthSessions::Table,
                        AuthSessions::UserId,
                    ))
                    .to_owned(),
            )
            .await?;
        create_index(manager, AuthSessions::Table, &[AuthSessions::UserId], false).await?;

        manager
            .create_table(
                Table::create()
                    .table(RefreshTokens::Table)
                    .col(uuid(RefreshTokens::Id).primary_key())
                    .col(uuid(RefreshTokens::SessionId))
                    // SHA-256 of the token; the token itself is never stored.
                    .col(string_uniq(RefreshTokens::TokenHash))
                    .col(uuid_null(RefreshTokens::ParentId))
                    .col(boolean(RefreshTokens::Revoked))
                    .col(timestamp_with_time_zone_null(RefreshTokens::RevokedAt))
                    .col(timestamp_with_time_zone(RefreshTokens::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(RefreshTokens::Table, RefreshTokens::SessionId)
                            .to(AuthSessions::Table, AuthSessions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            RefreshTokens::Table,
            &[RefreshTokens::SessionId],
            false,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(uuid(AuditEvents::Id).primary_key())
                    .col(uuid_null(AuditEvents::UserId))
                    .col(string(AuditEvents::Action))
                    .col(string_null(AuditEvents::Ip))
                    .col(string_null(AuditEvents::UserAgent))
                    .col(json(AuditEvents::Metadata))
                    .col(timestamp_with_time_zone(AuditEvents::CreatedAt))
                    .foreign_key(&mut cascade_to_user(
                        AuditEvents::Table,
                        AuditEvents::UserId,
                    ))
                    .to_owned(),
            )
            .await?;
        create_index(
            manager,
            AuditEvents::Table,
            &[AuditEvents::UserId, AuditEvents::CreatedAt],
            false,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditEvents::Table.into_iden(),
            RefreshTokens::Table.into_iden(),
            AuthSessions::Table.into_iden(),
            UserIdentities::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// A user's rows go with the user: deleting an account deletes everything it owns.
fn cascade_to_user(table: impl IntoIden, column: impl IntoIden) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(table, column)
        .to(Users::Table, Users::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

async fn create_index<T: IntoIden + Copy + 'static>(
    manager: &SchemaManager<'_>,
    table: T,
    columns: &[T],
    unique: bool,
) -> Result<(), DbErr> {
    let table_name = table.into_iden().to_string();
    let column_names: Vec<String> = columns.iter().map(|c| c.into_iden().to_string()).collect();
    let mut index = Index::create();
    index
        .name(format!("idx_{table_name}_{}", column_names.join("_")))
        .table(table);
    for column in columns {
        index.col(*column);
    }
    if unique {
        index.unique();
    }
    manager.create_index(index.to_owned()).await
}

#[derive(DeriveIden, Clone, Copy)]
enum Users {
    Table,
    Id,
    Email,
    Name,
    AvatarUrl,
    PasswordHash,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum UserIdentities {
    Table,
    Id,
    UserId,
    Provider,
    Subject,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum AuthSessions {
    Table,
    Id,
    UserId,
    UserAgent,
    Ip,
    CreatedAt,
    LastUsedAt,
    ExpiresAt,
    RevokedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum RefreshTokens {
    Table,
    Id,
    SessionId,
    TokenHash,
    ParentId,
    Revoked,
    RevokedAt,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum AuditEvents {
    Table,
    Id,
    UserId,
    Action,
    Ip,
    UserAgent,
    Metadata,
    CreatedAt,
}
