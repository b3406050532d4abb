//! Users' AI provider keys (envelope-encrypted) and their preferences.

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
                    .table(ApiKeys::Table)
                    .col(uuid(ApiKeys::Id).primary_key())
                    .col(uuid(ApiKeys::UserId))
                    .col(string(ApiKeys::Provider))
                    // AES-256-GCM of the key under a per-secret data key; the data key is
                    // stored only wrapped by the master key or KMS.
                    .col(binary(ApiKeys::Ciphertext))
                    .col(binary(ApiKeys::Nonce))
                    .col(binary(ApiKeys::WrappedKey))
                    .col(string(ApiKeys::KeyId))
                    .col(small_integer(ApiKeys::FormatVersion))
                    .col(string(ApiKeys::Hint))
                    .col(string(ApiKeys::Status))
                    .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                    .col(timestamp_with_time_zone(ApiKeys::UpdatedAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::LastValidatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ApiKeys::Table, ApiKeys::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_api_keys_user_id_provider")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::UserId)
                    .col(ApiKeys::Provider)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Preferences::Table)
                    .col(uuid(Preferences::UserId).primary_key())
                    .col(string(Preferences::Theme))
                    .col(string(Preferences::Language))
                    .col(string(Preferences::Timezone))
                    .col(string(Preferences::AiProvider))
                    // NULL: the provider's default model.
                    .col(string_null(Preferences::AiModel))
                    .col(double(Preferences::Temperature))
                    .col(integer(Preferences::MaxTokens))
                    .col(boolean(Preferences::SaveConversations))
                    .col(boolean(Preferences::NotificationsEnabled))
                    .col(timestamp_with_time_zone(Preferences::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Preferences::Table, Preferences::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Preferences::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(ApiKeys::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    UserId,
    Provider,
    Ciphertext,
    Nonce,
    WrappedKey,
    KeyId,
    FormatVersion,
    Hint,
    Status,
    CreatedAt,
    UpdatedAt,
    LastValidatedAt,
}

#[derive(DeriveIden)]
enum Preferences {
    Table,
    UserId,
    Theme,
    Language,
    Timezone,
    AiProvider,
    AiModel,
    Temperature,
    MaxTokens,
    SaveConversations,
    NotificationsEnabled,
    UpdatedAt,
}
