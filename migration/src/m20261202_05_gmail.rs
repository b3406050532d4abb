//! Gmail: the durable job queue (`jobs`, shared by every background feature), each user's
//! Google connection with its sealed refresh token (`google_connections`), and the synced mail
//! (`mail_messages`, deleted with the connection) with its full-text index: SQLite FTS5 over
//! subject, sender and text kept in step by triggers (labels-only updates do not reindex);
//! PostgreSQL a generated `tsvector` (`simple` configuration, as chat) with a GIN index.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::DbBackend;

const SQLITE_SEARCH: &[&str] = &[
    "CREATE VIRTUAL TABLE mail_messages_fts USING fts5(\
     subject, from_addr, body, content='mail_messages', content_rowid='rowid', \
     tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER mail_messages_fts_insert AFTER INSERT ON mail_messages BEGIN \
     INSERT INTO mail_messages_fts(rowid, subject, from_addr, body) \
     VALUES (new.rowid, new.subject, new.from_addr, new.body); \
     END",
    "CREATE TRIGGER mail_messages_fts_delete AFTER DELETE ON mail_messages BEGIN \
     INSERT INTO mail_messages_fts(mail_messages_fts, rowid, subject, from_addr, body) \
     VALUES ('delete', old.rowid, old.subject, old.from_addr, old.body); \
     END",
    "CREATE TRIGGER mail_messages_fts_update AFTER UPDATE OF subject, from_addr, body \
     ON mail_messages BEGIN \
     INSERT INTO mail_messages_fts(mail_messages_fts, rowid, subject, from_addr, body) \
     VALUES ('delete', old.rowid, old.subject, old.from_addr, old.body); \
     INSERT INTO mail_messages_fts(rowid, subject, from_addr, body) \
     VALUES (new.rowid, new.subject, new.from_addr, new.body); \
     END",
];

const POSTGRES_SEARCH: &[&str] = &[
    "ALTER TABLE mail_messages ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (\
     to_tsvector('simple'::regconfig, subject || ' ' || from_addr || ' ' || body)) STORED",
    "CREATE INDEX idx_mail_messages_search_vector ON mail_messages USING GIN (search_vector)",
];

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// All or nothing on SQLite too (a half-made index would fail every retry).
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Jobs::Table)
                    .col(uuid(Jobs::Id).primary_key())
                    .col(string(Jobs::Kind))
                    // One queued job per key ("gmail.sync:<user id>"): enqueueing again
                    // moves the existing one instead of adding a second.
                    .col(string(Jobs::UniqueKey).unique_key())
                    .col(json(Jobs::Payload))
                    .col(timestamp_with_time_zone(Jobs::RunAt))
                    // Failed runs since the last success (drives the backoff).
                    .col(integer(Jobs::Attempts))
                    // Counts enqueue calls, so a run that ends finds out it was asked for
                    // again meanwhile (and runs again instead of dropping the request).
                    .col(big_integer(Jobs::Requests))
                    // Set while a worker holds the job; past it, another worker may take it.
                    .col(timestamp_with_time_zone_null(Jobs::LockedUntil))
                    .col(string_null(Jobs::LockedBy))
                    .col(text_null(Jobs::LastError))
                    .col(timestamp_with_time_zone(Jobs::CreatedAt))
                    .col(timestamp_with_time_zone(Jobs::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_jobs_run_at")
                    .table(Jobs::Table)
                    .col(Jobs::RunAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(GoogleConnections::Table)
                    .col(uuid(GoogleConnections::UserId).primary_key())
                    .col(string(GoogleConnections::Email))
                    // Space-separated, as Google grants them.
                    .col(text(GoogleConnections::Scopes))
                    .col(string(GoogleConnections::Status))
                    // The refresh token, sealed like API keys (bound to the user).
                    .col(binary(GoogleConnections::Ciphertext))
                    .col(binary(GoogleConnections::Nonce))
                    .col(binary(GoogleConnections::WrappedKey))
                    .col(string(GoogleConnections::KeyId))
                    .col(small_integer(GoogleConnections::FormatVersion))
                    // Gmail's historyId after the last complete sync; NULL: a full sync is due.
                    .col(string_null(GoogleConnections::HistoryId))
                    // A full sync in progress: the next messages.list page to fetch.
                    .col(text_null(GoogleConnections::SyncPageToken))
                    .col(text_null(GoogleConnections::LastError))
                    .col(timestamp_with_time_zone_null(GoogleConnections::LastSyncAt))
                    .col(timestamp_with_time_zone(GoogleConnections::CreatedAt))
                    .col(timestamp_with_time_zone(GoogleConnections::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(GoogleConnections::Table, GoogleConnections::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(MailMessages::Table)
                    .col(uuid(MailMessages::Id).primary_key())
                    .col(uuid(MailMessages::UserId))
                    .col(string(MailMessages::GmailId))
                    .col(string(MailMessages::ThreadId))
                    .col(text(MailMessages::FromAddr))
                    .col(text(MailMessages::ToAddr))
                    .col(text(MailMessages::Cc))
                    .col(text(MailMessages::Subject))
                    .col(timestamp_with_time_zone(MailMessages::Date))
                    // Space-separated Gmail label ids.
                    .col(text(MailMessages::Labels))
                    .col(text(MailMessages::Snippet))
                    // Plain text (HTML converted), trimmed to the configured budget.
                    .col(text(MailMessages::Body))
                    .col(timestamp_with_time_zone(MailMessages::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(MailMessages::Table, MailMessages::UserId)
                            .to(GoogleConnections::Table, GoogleConnections::UserId)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_mail_messages_user_gmail_id")
                    .table(MailMessages::Table)
                    .col(MailMessages::UserId)
                    .col(MailMessages::GmailId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_mail_messages_user_thread")
                    .table(MailMessages::Table)
                    .col(MailMessages::UserId)
                    .col(MailMessages::ThreadId)
                    .to_owned(),
            )
            .await?;
        let search = match manager.get_database_backend() {
            DbBackend::Postgres => POSTGRES_SEARCH,
            _ => SQLITE_SEARCH,
        };
        let db = manager.get_connection();
        for sql in search {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Sqlite {
            let db = manager.get_connection();
            for name in ["update", "delete", "insert"] {
                db.execute_unprepared(&format!("DROP TRIGGER IF EXISTS mail_messages_fts_{name}"))
                    .await?;
            }
            db.execute_unprepared("DROP TABLE IF EXISTS mail_messages_fts")
                .await?;
        }
        for table in [
            MailMessages::Table.into_iden(),
            GoogleConnections::Table.into_iden(),
            Jobs::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Id,
    Kind,
    UniqueKey,
    Payload,
    RunAt,
    Attempts,
    Requests,
    LockedUntil,
    LockedBy,
    LastError,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum GoogleConnections {
    Table,
    UserId,
    Email,
    Scopes,
    Status,
    Ciphertext,
    Nonce,
    WrappedKey,
    KeyId,
    FormatVersion,
    HistoryId,
    SyncPageToken,
    LastError,
    LastSyncAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum MailMessages {
    Table,
    Id,
    UserId,
    GmailId,
    ThreadId,
    FromAddr,
    ToAddr,
    Cc,
    Subject,
    Date,
    Labels,
    Snippet,
    Body,
    UpdatedAt,
}
