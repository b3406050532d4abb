//! Chat search indexes whose cost depends on the caller's data only (replacing
//! m20261122_000004_chat_search, whose indexes held plain words: a search read every user's
//! posting lists for its words, then kept the caller's rows).
//!
//! Every term is tagged with its owner (the `search-terms` crate, also used by the server to
//! index new text and to build queries), so a search reads the caller's terms only. Text is
//! tokenized in Rust, not by the database: the server writes a row's terms whenever it writes
//! the row's text, and this migration indexes the rows that exist.
//!
//! Only user and assistant messages are indexed: tool results are machine output (JSON,
//! fetched pages) that would bloat the index and drown real hits. Session titles are indexed
//! the same way.
//!
//! SQLite: contentless FTS5 tables (`contentless_delete=1`: a row is forgotten by its rowid
//! alone) keyed by the chat tables' implicit rowid; a trigger forgets a row deleted from the
//! chat table, cascades (session or account deleted) included. The `ascii` tokenizer only
//! splits at the spaces between the terms. Plain VACUUM keeps rowids today; should it ever
//! renumber them, reverting and reapplying this migration rebuilds the index.
//!
//! PostgreSQL: a `search_terms tsvector` column on each table with a GIN index. `fastupdate`
//! is off: a pending list would hold every user's recent terms and be scanned by every search.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use search_terms::Document;

use crate::m20261122_000004_chat_search as plain_words;

#[derive(DeriveMigrationName)]
pub struct Migration;

const SQLITE_UP: &[&str] = &[
    "CREATE VIRTUAL TABLE chat_messages_search USING fts5(\
     terms, content='', contentless_delete=1, tokenize='ascii')",
    "CREATE TRIGGER chat_messages_search_delete AFTER DELETE ON chat_messages BEGIN \
     DELETE FROM chat_messages_search WHERE rowid = old.rowid; \
     END",
    "CREATE VIRTUAL TABLE chat_sessions_search USING fts5(\
     terms, content='', contentless_delete=1, tokenize='ascii')",
    "CREATE TRIGGER chat_sessions_search_delete AFTER DELETE ON chat_sessions BEGIN \
     DELETE FROM chat_sessions_search WHERE rowid = old.rowid; \
     END",
];

const SQLITE_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS chat_sessions_search_delete",
    "DROP TABLE IF EXISTS chat_sessions_search",
    "DROP TRIGGER IF EXISTS chat_messages_search_delete",
    "DROP TABLE IF EXISTS chat_messages_search",
];

const POSTGRES_COLUMNS: &[&str] = &[
    "ALTER TABLE chat_messages ADD COLUMN search_terms tsvector",
    "ALTER TABLE chat_sessions ADD COLUMN search_terms tsvector",
];

/// Built after the rows are indexed: one bulk build instead of a million inserts.
const POSTGRES_INDEXES: &[&str] = &[
    "CREATE INDEX idx_chat_messages_search_terms ON chat_messages \
     USING GIN (search_terms) WITH (fastupdate = off)",
    "CREATE INDEX idx_chat_sessions_search_terms ON chat_sessions \
     USING GIN (search_terms) WITH (fastupdate = off)",
];

const POSTGRES_DOWN: &[&str] = &[
    "DROP INDEX IF EXISTS idx_chat_sessions_search_terms",
    "ALTER TABLE chat_sessions DROP COLUMN IF EXISTS search_terms",
    "DROP INDEX IF EXISTS idx_chat_messages_search_terms",
    "ALTER TABLE chat_messages DROP COLUMN IF EXISTS search_terms",
];

/// A table whose text is indexed.
struct Source {
    table: &'static str,
    text: &'static str,
    /// Which rows are searchable (SQL condition).
    searchable: &'static str,
    /// SQLite: the FTS5 table.
    fts: &'static str,
}

const SOURCES: [Source; 2] = [
    Source {
        table: "chat_messages",
        text: "content",
        searchable: "role IN ('user', 'assistant')",
        fts: "chat_messages_search",
    },
    Source {
        table: "chat_sessions",
        text: "title",
        searchable: "TRUE",
        fts: "chat_sessions_search",
    },
];

/// Rows read and written per statement.
const BATCH: u64 = 500;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// All-or-nothing on SQLite too, as m20261122_000004_chat_search.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        plain_words::Migration.down(manager).await?;
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Sqlite => {
                run(db, SQLITE_UP).await?;
                for source in &SOURCES {
                    reindex_sqlite(db, source).await?;
                }
                Ok(())
            }
            DbBackend::Postgres => {
                run(db, POSTGRES_COLUMNS).await?;
                for source in &SOURCES {
                    reindex_postgres(db, source).await?;
                }
                run(db, POSTGRES_INDEXES).await
            }
            other => Err(unsupported(other)),
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Sqlite => run(db, SQLITE_DOWN).await?,
            DbBackend::Postgres => run(db, POSTGRES_DOWN).await?,
            other => return Err(unsupported(other)),
        }
        plain_words::Migration.up(manager).await
    }
}

fn unsupported(backend: DbBackend) -> DbErr {
    DbErr::Migration(format!("chat search is not available on {backend:?}"))
}

async fn run(db: &SchemaManagerConnection<'_>, statements: &[&str]) -> Result<(), DbErr> {
    for sql in statements {
        db.execute_unprepared(sql).await?;
    }
    Ok(())
}

/// The owner's id from its hexadecimal digits (dashes ignored).
fn owner(hex: &str) -> Result<u128, DbErr> {
    u128::from_str_radix(&hex.replace('-', ""), 16)
        .map_err(|_| DbErr::Migration(format!("unexpected user id {hex:?}")))
}

async fn reindex_sqlite(db: &SchemaManagerConnection<'_>, source: &Source) -> Result<(), DbErr> {
    let Source {
        table,
        text,
        searchable,
        fts,
    } = source;
    let read = format!(
        "SELECT rowid AS key, hex(user_id) AS owner, {text} AS text FROM {table} \
         WHERE {searchable} AND rowid > ? ORDER BY rowid LIMIT {BATCH}"
    );
    let mut after = 0_i64;
    loop {
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                &read,
                [Value::from(after)],
            ))
            .await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.try_get("", "key")?;
        let mut values = Vec::new();
        for row in &rows {
            let owner = owner(&row.try_get::<String>("", "owner")?)?;
            let document = Document::new(owner, &row.try_get::<String>("", "text")?);
            if !document.is_empty() {
                values.push(Value::from(row.try_get::<i64>("", "key")?));
                values.push(Value::from(document.fts5_text()));
            }
        }
        if values.is_empty() {
            continue;
        }
        let tuples = vec!["(?, ?)"; values.len() / 2].join(", ");
        let write = format!("INSERT INTO {fts}(rowid, terms) VALUES {tuples}");
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            &write,
            values,
        ))
        .await?;
    }
}

async fn reindex_postgres(db: &SchemaManagerConnection<'_>, source: &Source) -> Result<(), DbErr> {
    let Source {
        table,
        text,
        searchable,
        ..
    } = source;
    let read = format!(
        "SELECT id::text AS key, user_id::text AS owner, {text} AS text FROM {table} \
         WHERE {searchable} AND id > $1::uuid ORDER BY id LIMIT {BATCH}"
    );
    let mut after = "00000000-0000-0000-0000-000000000000".to_owned();
    loop {
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                &read,
                [Value::from(after.clone())],
            ))
            .await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.try_get("", "key")?;
        let mut values = Vec::new();
        for row in &rows {
            let owner = owner(&row.try_get::<String>("", "owner")?)?;
            let document = Document::new(owner, &row.try_get::<String>("", "text")?);
            if !document.is_empty() {
                values.push(Value::from(row.try_get::<String>("", "key")?));
                values.push(Value::from(document.tsvector()));
            }
        }
        if values.is_empty() {
            continue;
        }
        let tuples = (0..values.len() / 2)
            .map(|i| format!("(${}::uuid, ${}::text)", 2 * i + 1, 2 * i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let write = format!(
            "UPDATE {table} AS t SET search_terms = v.terms::tsvector \
             FROM (VALUES {tuples}) AS v(id, terms) WHERE t.id = v.id"
        );
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            &write,
            values,
        ))
        .await?;
    }
}
