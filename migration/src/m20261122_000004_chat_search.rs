//! Full-text search indexes for chat titles and messages.
//!
//! Only user and assistant messages are indexed: tool results are machine output (JSON, fetched
//! pages) that would bloat the index and drown real hits.
//!
//! SQLite: FTS5 external-content tables, so the text is stored once (in the chat tables) and
//! the index is kept in step by triggers. Their rowid is the chat tables' implicit rowid; plain
//! VACUUM keeps those today, but should an index ever drift,
//! `INSERT INTO chat_messages_fts(chat_messages_fts) VALUES ('rebuild')` (and the same for
//! `chat_sessions_fts`) rebuilds it from the tables.
//!
//! PostgreSQL: a stored generated `tsvector` column on each table with a GIN index. The
//! `simple` configuration lowercases without stemming or stop words: chats are in any
//! language, and prefix matching already covers most word endings.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const SQLITE_UP: &[&str] = &[
    // The external content of the message index: the searchable roles only, so that the FTS5
    // `rebuild` and `integrity-check` commands agree with what the triggers index.
    "CREATE VIEW chat_messages_searchable AS \
     SELECT rowid AS search_rowid, content FROM chat_messages \
     WHERE role IN ('user', 'assistant')",
    // unicode61 folds case and, with remove_diacritics 2, accents.
    "CREATE VIRTUAL TABLE chat_messages_fts USING fts5(\
     content, content='chat_messages_searchable', content_rowid='search_rowid', \
     tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER chat_messages_fts_insert AFTER INSERT ON chat_messages \
     WHEN new.role IN ('user', 'assistant') BEGIN \
     INSERT INTO chat_messages_fts(rowid, content) VALUES (new.rowid, new.content); \
     END",
    // An external-content index forgets a row only when told the exact text it indexed.
    "CREATE TRIGGER chat_messages_fts_delete AFTER DELETE ON chat_messages \
     WHEN old.role IN ('user', 'assistant') BEGIN \
     INSERT INTO chat_messages_fts(chat_messages_fts, rowid, content) \
     VALUES ('delete', old.rowid, old.content); \
     END",
    // A streaming reply rewrites its row many times; only a change of the text (or of the
    // role, which decides whether the row is indexed at all) is worth reindexing.
    "CREATE TRIGGER chat_messages_fts_update AFTER UPDATE OF content, role ON chat_messages \
     WHEN old.content IS NOT new.content OR old.role IS NOT new.role BEGIN \
     INSERT INTO chat_messages_fts(chat_messages_fts, rowid, content) \
     SELECT 'delete', old.rowid, old.content WHERE old.role IN ('user', 'assistant'); \
     INSERT INTO chat_messages_fts(rowid, content) \
     SELECT new.rowid, new.content WHERE new.role IN ('user', 'assistant'); \
     END",
    "INSERT INTO chat_messages_fts(chat_messages_fts) VALUES ('rebuild')",
    "CREATE VIRTUAL TABLE chat_sessions_fts USING fts5(\
     title, content='chat_sessions', content_rowid='rowid', \
     tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER chat_sessions_fts_insert AFTER INSERT ON chat_sessions BEGIN \
     INSERT INTO chat_sessions_fts(rowid, title) VALUES (new.rowid, new.title); \
     END",
    "CREATE TRIGGER chat_sessions_fts_delete AFTER DELETE ON chat_sessions BEGIN \
     INSERT INTO chat_sessions_fts(chat_sessions_fts, rowid, title) \
     VALUES ('delete', old.rowid, old.title); \
     END",
    // Sessions are updated on every message (counters, timestamps); the title rarely.
    "CREATE TRIGGER chat_sessions_fts_update AFTER UPDATE OF title ON chat_sessions \
     WHEN old.title IS NOT new.title BEGIN \
     INSERT INTO chat_sessions_fts(chat_sessions_fts, rowid, title) \
     VALUES ('delete', old.rowid, old.title); \
     INSERT INTO chat_sessions_fts(rowid, title) VALUES (new.rowid, new.title); \
     END",
    "INSERT INTO chat_sessions_fts(chat_sessions_fts) VALUES ('rebuild')",
];

const SQLITE_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS chat_sessions_fts_update",
    "DROP TRIGGER IF EXISTS chat_sessions_fts_delete",
    "DROP TRIGGER IF EXISTS chat_sessions_fts_insert",
    "DROP TABLE IF EXISTS chat_sessions_fts",
    "DROP TRIGGER IF EXISTS chat_messages_fts_update",
    "DROP TRIGGER IF EXISTS chat_messages_fts_delete",
    "DROP TRIGGER IF EXISTS chat_messages_fts_insert",
    "DROP TABLE IF EXISTS chat_messages_fts",
    "DROP VIEW IF EXISTS chat_messages_searchable",
];

const POSTGRES_UP: &[&str] = &[
    // NULL for other roles: never matches, and costs nothing in the index.
    "ALTER TABLE chat_messages ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (\
     CASE WHEN role IN ('user', 'assistant') \
     THEN to_tsvector('simple'::regconfig, content) END) STORED",
    "CREATE INDEX idx_chat_messages_search_vector ON chat_messages USING GIN (search_vector)",
    "ALTER TABLE chat_sessions ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (\
     to_tsvector('simple'::regconfig, title)) STORED",
    "CREATE INDEX idx_chat_sessions_search_vector ON chat_sessions USING GIN (search_vector)",
];

const POSTGRES_DOWN: &[&str] = &[
    "DROP INDEX IF EXISTS idx_chat_sessions_search_vector",
    "ALTER TABLE chat_sessions DROP COLUMN IF EXISTS search_vector",
    "DROP INDEX IF EXISTS idx_chat_messages_search_vector",
    "ALTER TABLE chat_messages DROP COLUMN IF EXISTS search_vector",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// SeaORM wraps only PostgreSQL migrations in a transaction by default. On SQLite too, this
    /// makes the migration all-or-nothing (a half-made index would fail every retry with
    /// "already exists") and runs its statements on one connection instead of whichever pooled
    /// one is free.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, statements(manager.get_database_backend(), true)?).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, statements(manager.get_database_backend(), false)?).await
    }
}

fn statements(backend: DbBackend, up: bool) -> Result<&'static [&'static str], DbErr> {
    match (backend, up) {
        (DbBackend::Sqlite, true) => Ok(SQLITE_UP),
        (DbBackend::Sqlite, false) => Ok(SQLITE_DOWN),
        (DbBackend::Postgres, true) => Ok(POSTGRES_UP),
        (DbBackend::Postgres, false) => Ok(POSTGRES_DOWN),
        (other, _) => Err(DbErr::Migration(format!(
            "chat search is not available on {other:?}"
        ))),
    }
}

async fn run(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for sql in statements {
        db.execute_unprepared(sql).await?;
    }
    Ok(())
}
