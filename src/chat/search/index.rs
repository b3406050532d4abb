//! Keeping the index in step with the text (layout: migration m20261202_02_search_per_user).
//! The store calls these after writing a message's content or a session's title, in the same
//! transaction; deleted rows leave the index by trigger (SQLite) or with the row (PostgreSQL).

use entity::{chat_messages, chat_sessions};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, EntityTrait, Statement, Value};
use search_terms::Document;
use uuid::Uuid;

use super::unsupported;

/// Indexes a message as just written. Only user and assistant messages are searched (tool
/// results are machine output); roles never change, so another role has nothing to forget.
pub async fn index_message(
    db: &impl ConnectionTrait,
    message: &chat_messages::Model,
) -> Result<(), DbErr> {
    if !matches!(message.role.as_str(), "user" | "assistant") {
        return Ok(());
    }
    let document = Document::new(message.user_id.as_u128(), &message.content);
    write(db, Table::Messages, message.id, &document).await
}

/// Indexes message `id` with its stored text.
pub async fn reindex_message(db: &impl ConnectionTrait, id: Uuid) -> Result<(), DbErr> {
    match chat_messages::Entity::find_by_id(id).one(db).await? {
        Some(message) => index_message(db, &message).await,
        None => Ok(()),
    }
}

/// Indexes a session's title as just written.
pub async fn index_session(
    db: &impl ConnectionTrait,
    session: &chat_sessions::Model,
) -> Result<(), DbErr> {
    let document = Document::new(session.user_id.as_u128(), &session.title);
    write(db, Table::Sessions, session.id, &document).await
}

/// Indexes session `id` with its stored title.
pub async fn reindex_session(db: &impl ConnectionTrait, id: Uuid) -> Result<(), DbErr> {
    match chat_sessions::Entity::find_by_id(id).one(db).await? {
        Some(session) => index_session(db, &session).await,
        None => Ok(()),
    }
}

#[derive(Clone, Copy)]
enum Table {
    Messages,
    Sessions,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Self::Messages => "chat_messages",
            Self::Sessions => "chat_sessions",
        }
    }
}

async fn write(
    db: &impl ConnectionTrait,
    table: Table,
    id: Uuid,
    document: &Document,
) -> Result<(), DbErr> {
    let table = table.name();
    let backend = db.get_database_backend();
    let statement = match backend {
        // INSERT OR REPLACE replaces the row's terms (contentless_delete tables allow it).
        DbBackend::Sqlite if !document.is_empty() => Statement::from_sql_and_values(
            backend,
            format!(
                "INSERT OR REPLACE INTO {table}_search(rowid, terms) \
                 SELECT rowid, ?2 FROM {table} WHERE id = ?1"
            ),
            [Value::from(id), Value::from(document.fts5_text())],
        ),
        DbBackend::Sqlite => Statement::from_sql_and_values(
            backend,
            format!(
                "DELETE FROM {table}_search WHERE rowid = (SELECT rowid FROM {table} WHERE id = ?1)"
            ),
            [Value::from(id)],
        ),
        DbBackend::Postgres => Statement::from_sql_and_values(
            backend,
            format!("UPDATE {table} SET search_terms = $2::tsvector WHERE id = $1"),
            [
                Value::from(id),
                Value::from((!document.is_empty()).then(|| document.tsvector())),
            ],
        ),
        other => return Err(unsupported(other)),
    };
    db.execute_raw(statement).await.map(drop)
}
