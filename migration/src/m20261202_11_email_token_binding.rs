//! Hardening accounts: mailed links and codes are now stored as keyed hashes (HMAC under a
//! server secret) and an email change records the address it was asked from. Tokens stored
//! before (plain SHA-256) can no longer match and are removed. Accounts that signed in with
//! Google or Apple had their address verified by the provider: they are marked verified.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .exec_stmt(Query::delete().from_table(EmailTokens::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(EmailTokens::Table)
                    .add_column(string_null(EmailTokens::IssuedForEmail))
                    .to_owned(),
            )
            .await?;
        // Verified when the first identity was linked: that sign-in's provider vouched.
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE users SET email_verified_at = \
                 (SELECT MIN(user_identities.created_at) FROM user_identities \
                  WHERE user_identities.user_id = users.id) \
                 WHERE email_verified_at IS NULL AND EXISTS \
                 (SELECT 1 FROM user_identities WHERE user_identities.user_id = users.id \
                  AND user_identities.provider IN ('google', 'apple'))",
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_email_tokens_expires_at")
                    .table(EmailTokens::Table)
                    .col(EmailTokens::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_email_tokens_expires_at")
                    .table(EmailTokens::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(EmailTokens::Table)
                    .drop_column(EmailTokens::IssuedForEmail)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum EmailTokens {
    Table,
    IssuedForEmail,
    ExpiresAt,
}
