//! Usage accounting and tiers: `users.tier` (`free`, `plus` or `pro`), the replies and tokens
//! of each user per day (their local day, `YYYY-MM-DD`) in `usage_days` (what daily quotas
//! count), and the same per provider and model in `usage_models`.

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
                    .table(Users::Table)
                    .add_column(string(Users::Tier).default("free"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(UsageDays::Table)
                    .col(uuid(UsageDays::UserId))
                    .col(string_len(UsageDays::Day, 10))
                    .col(big_integer(UsageDays::Messages).default(0))
                    .col(big_integer(UsageDays::InputTokens).default(0))
                    .col(big_integer(UsageDays::OutputTokens).default(0))
                    .primary_key(Index::create().col(UsageDays::UserId).col(UsageDays::Day))
                    .foreign_key(
                        ForeignKey::create()
                            .from(UsageDays::Table, UsageDays::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(UsageModels::Table)
                    .col(uuid(UsageModels::UserId))
                    .col(string_len(UsageModels::Day, 10))
                    .col(string(UsageModels::Provider))
                    .col(string(UsageModels::Model))
                    .col(big_integer(UsageModels::Messages).default(0))
                    .col(big_integer(UsageModels::InputTokens).default(0))
                    .col(big_integer(UsageModels::OutputTokens).default(0))
                    .primary_key(
                        Index::create()
                            .col(UsageModels::UserId)
                            .col(UsageModels::Day)
                            .col(UsageModels::Provider)
                            .col(UsageModels::Model),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(UsageModels::Table, UsageModels::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(UsageModels::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(UsageDays::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::Tier)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Tier,
}

#[derive(DeriveIden)]
enum UsageDays {
    Table,
    UserId,
    Day,
    Messages,
    InputTokens,
    OutputTokens,
}

#[derive(DeriveIden)]
enum UsageModels {
    Table,
    UserId,
    Day,
    Provider,
    Model,
    Messages,
    InputTokens,
    OutputTokens,
}
