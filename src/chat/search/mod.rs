//! Full-text search over the user's chat titles and messages, at a cost that depends on the
//! caller's data only: every indexed term carries its owner's tag (the `search-terms` crate),
//! so a search reads the caller's posting lists and nobody else's. SQLite keeps the terms in
//! contentless FTS5 tables, PostgreSQL in a `tsvector` column with a GIN index (migration
//! m20261202_02_search_per_user); the server writes them with the text ([`index`]).
//!
//! A query is reduced to its words (runs of letters and digits, lowercased, Latin accents
//! removed); a hit must contain every word, each matched as a prefix so that "meet" finds
//! "meeting". No other query syntax exists: the backend expression is built from the words
//! alone, each quoted, so any text is safe to search. Ranking: SQLite's bm25 and PostgreSQL's
//! ts_rank (normalised by document length) agree that more occurrences and shorter texts rank
//! higher. Snippets are cut in Rust from the best rows' text ([`snippet`]).

mod index;
mod snippet;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, FromQueryResult, Statement, Value};
use search_terms::Query;
use uuid::Uuid;

pub use index::{index_message, index_session, reindex_message, reindex_session};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    pub session_id: Uuid,
    pub session_title: String,
    pub message_id: Uuid,
    /// A short excerpt around the match, matched words wrapped in `**`.
    pub snippet: String,
    /// The message's `source`: "text", or "voice" for what was said in a voice call.
    pub source: String,
    pub created_at: DateTime<Utc>,
}

#[derive(FromQueryResult)]
struct HitRow {
    session_id: Uuid,
    session_title: String,
    message_id: Uuid,
    content: String,
    source: String,
    created_at: DateTime<Utc>,
}

#[derive(FromQueryResult)]
struct SessionRow {
    session_id: Uuid,
}

/// The caller's messages matching `query`, best first. Any text is a valid query (no syntax
/// reaches the database); a query with no searchable words matches nothing.
pub async fn search_messages(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    query: &str,
    limit: u64,
) -> Result<Vec<SearchHit>, DbErr> {
    let query = Query::new(user_id.as_u128(), query);
    let Some(statement) = statement(db, &query, user_id, limit, MESSAGES)? else {
        return Ok(Vec::new());
    };
    let rows = HitRow::find_by_statement(statement).all(db).await?;
    Ok(rows
        .into_iter()
        .map(|row| SearchHit {
            snippet: snippet::snippet(&row.content, &query),
            session_id: row.session_id,
            session_title: row.session_title,
            message_id: row.message_id,
            source: row.source,
            created_at: row.created_at,
        })
        .collect())
}

/// Ids of the caller's sessions whose title or any message matches `query`, best first.
/// Each is matched alone: the title, or one message, must hold every word.
///
/// Title matches come first (a session named after the subject is the best answer), ordered by
/// how well the title matches; then sessions by their best matching message; ties go to the
/// most recently active.
pub async fn matching_session_ids(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    query: &str,
    limit: u64,
) -> Result<Vec<Uuid>, DbErr> {
    let query = Query::new(user_id.as_u128(), query);
    let Some(statement) = statement(db, &query, user_id, limit, SESSIONS)? else {
        return Ok(Vec::new());
    };
    let rows = SessionRow::find_by_statement(statement).all(db).await?;
    Ok(rows.into_iter().map(|row| row.session_id).collect())
}

/// One search's SQL per backend.
struct Sql {
    sqlite: &'static str,
    postgres: &'static str,
}

/// The statement of a search, or `None` when nothing can match.
fn statement(
    db: &impl ConnectionTrait,
    query: &Query,
    user_id: Uuid,
    limit: u64,
    sql: Sql,
) -> Result<Option<Statement>, DbErr> {
    if query.is_empty() || limit == 0 {
        return Ok(None);
    }
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let backend = db.get_database_backend();
    let (sql, expression) = match backend {
        DbBackend::Sqlite => (sql.sqlite, query.fts5_match()),
        DbBackend::Postgres => (sql.postgres, query.tsquery()),
        other => return Err(unsupported(other)),
    };
    Ok(Some(Statement::from_sql_and_values(
        backend,
        sql,
        [
            Value::from(expression),
            Value::from(user_id),
            Value::from(limit),
        ],
    )))
}

fn unsupported(backend: DbBackend) -> DbErr {
    DbErr::Custom(format!("chat search is not available on {backend:?}"))
}

// Both: 1 the match expression, 2 the caller's id (terms are tagged with it already; the
// filter only guards against two users sharing a tag), 3 the limit. The best rows are picked
// first and only they are read whole, for their snippets.

// CROSS JOIN keeps `top` the outer loop: chat_messages is then read by rowid.
const MESSAGES: Sql = Sql {
    sqlite: "
WITH top AS MATERIALIZED (
    SELECT m.rowid AS message_rowid, m.id AS id, chat_messages_search.rank AS score
    FROM chat_messages_search
    JOIN chat_messages m ON m.rowid = chat_messages_search.rowid
    WHERE chat_messages_search MATCH ?1 AND m.user_id = ?2
    ORDER BY score, m.id DESC
    LIMIT ?3
)
SELECT m.session_id AS session_id,
       s.title AS session_title,
       m.id AS message_id,
       m.content AS content,
       m.source AS source,
       m.created_at AS created_at
FROM top
CROSS JOIN chat_messages m ON m.rowid = top.message_rowid
JOIN chat_sessions s ON s.id = m.session_id
ORDER BY top.score, top.id DESC",
    // ts_rank's normalisation 1 divides by 1 + log(length): shorter texts rank higher, as
    // with bm25.
    postgres: "
WITH top AS (
    SELECT m.id, ts_rank(m.search_terms, $1::tsquery, 1) AS score
    FROM chat_messages m
    WHERE m.search_terms @@ $1::tsquery AND m.user_id = $2
    ORDER BY score DESC, m.id DESC
    LIMIT $3
)
SELECT m.session_id AS session_id,
       s.title AS session_title,
       m.id AS message_id,
       m.content AS content,
       m.source AS source,
       m.created_at AS created_at
FROM top
JOIN chat_messages m ON m.id = top.id
JOIN chat_sessions s ON s.id = m.session_id
ORDER BY top.score DESC, top.id DESC",
};

// bm25 is lower for better matches, ts_rank higher; NULLs (no title or no message match) are
// ordered last explicitly, the two backends default differently.
const SESSIONS: Sql = Sql {
    sqlite: "
WITH title_hits AS (
    SELECT s.id AS session_id, chat_sessions_search.rank AS score
    FROM chat_sessions_search
    JOIN chat_sessions s ON s.rowid = chat_sessions_search.rowid
    WHERE chat_sessions_search MATCH ?1 AND s.user_id = ?2
),
message_hits AS (
    SELECT m.session_id AS session_id, MIN(chat_messages_search.rank) AS score
    FROM chat_messages_search
    JOIN chat_messages m ON m.rowid = chat_messages_search.rowid
    WHERE chat_messages_search MATCH ?1 AND m.user_id = ?2
    GROUP BY m.session_id
)
SELECT s.id AS session_id
FROM (SELECT session_id FROM title_hits UNION SELECT session_id FROM message_hits) ids
JOIN chat_sessions s ON s.id = ids.session_id
LEFT JOIN title_hits t ON t.session_id = s.id
LEFT JOIN message_hits h ON h.session_id = s.id
WHERE s.user_id = ?2
ORDER BY t.score IS NULL, t.score, h.score IS NULL, h.score,
         s.last_message_at DESC, s.id DESC
LIMIT ?3",
    postgres: "
WITH title_hits AS (
    SELECT s.id AS session_id, ts_rank(s.search_terms, $1::tsquery, 1) AS score
    FROM chat_sessions s
    WHERE s.search_terms @@ $1::tsquery AND s.user_id = $2
),
message_hits AS (
    SELECT m.session_id AS session_id, MAX(ts_rank(m.search_terms, $1::tsquery, 1)) AS score
    FROM chat_messages m
    WHERE m.search_terms @@ $1::tsquery AND m.user_id = $2
    GROUP BY m.session_id
)
SELECT s.id AS session_id
FROM (SELECT session_id FROM title_hits UNION SELECT session_id FROM message_hits) ids
JOIN chat_sessions s ON s.id = ids.session_id
LEFT JOIN title_hits t ON t.session_id = s.id
LEFT JOIN message_hits h ON h.session_id = s.id
WHERE s.user_id = $2
ORDER BY t.score IS NULL, t.score DESC, h.score IS NULL, h.score DESC,
         s.last_message_at DESC, s.id DESC
LIMIT $3",
};
