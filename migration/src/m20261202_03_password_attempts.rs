//! Password verifications counted per account, so the "5 attempts, then locked" rule holds
//! across requests, batches, addresses and server instances: an attempt is reserved here
//! (one conditional statement) before the password is hashed.

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
                    .table(PasswordAttempts::Table)
                    // Hex SHA-256 of the normalized email: emails typed at the sign-in form
                    // (existing or not) are not kept in clear.
                    .col(string(PasswordAttempts::Account).primary_key())
                    .col(timestamp_with_time_zone(PasswordAttempts::WindowStartedAt))
                    .col(integer(PasswordAttempts::Attempts))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PasswordAttempts::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum PasswordAttempts {
    Table,
    Account,
    WindowStartedAt,
    Attempts,
}
