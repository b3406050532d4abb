//! Full-text search over the caller's synced mail (subject, sender, text): SQLite FTS5 and
//! PostgreSQL `tsvector` (migration m20261202_05_gmail), each hit scoped to its owner.
//!
//! As chat search does, a query is reduced to its words (runs of letters and digits), each
//! quoted and matched as a prefix, every word required: no query syntax reaches the database.
//! (Chat's search is being moved onto owner-tagged terms in a shared crate; mail should follow
//! it when that lands, sharing its word handling instead of this copy.)
//! Ranked pages are offsets into the ranking: a message synced between two pages may shift it.

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DbBackend, DbErr, FromQueryResult, Statement, Value};
use uuid::Uuid;

const MAX_WORDS: usize = 12;
const MAX_WORD_CHARS: usize = 64;

#[derive(Debug, FromQueryResult)]
pub struct Hit {
    pub gmail_id: String,
    pub thread_id: String,
    pub from_addr: String,
    pub subject: String,
    pub date: DateTime<Utc>,
    pub snippet: String,
}

const SQLITE: &str = "
SELECT m.gmail_id, m.thread_id, m.from_addr, m.subject, m.date, m.snippet
FROM mail_messages_fts
JOIN mail_messages m ON m.rowid = mail_messages_fts.rowid
WHERE mail_messages_fts MATCH ?1 AND m.user_id = ?2
ORDER BY bm25(mail_messages_fts), m.date DESC, m.gmail_id
LIMIT ?3 OFFSET ?4";

const POSTGRES: &str = "
SELECT gmail_id, thread_id, from_addr, subject, date, snippet
FROM mail_messages
WHERE search_vector @@ to_tsquery('simple', $1) AND user_id = $2
ORDER BY ts_rank(search_vector, to_tsquery('simple', $1), 1) DESC, date DESC, gmail_id
LIMIT $3 OFFSET $4";

/// The caller's messages matching `query`, best first, `limit` from `offset`.
pub async fn search(
    db: &DatabaseConnection,
    user_id: Uuid,
    query: &str,
    limit: u32,
    offset: u32,
) -> Result<Vec<Hit>, DbErr> {
    let words = words(query);
    if words.is_empty() {
        return Ok(Vec::new());
    }
    let backend = db.get_database_backend();
    let (sql, expression) = match backend {
        DbBackend::Postgres => (POSTGRES, tsquery(&words)),
        _ => (SQLITE, fts5(&words)),
    };
    let statement = Statement::from_sql_and_values(
        backend,
        sql,
        [
            Value::from(expression),
            Value::from(user_id),
            Value::from(i64::from(limit)),
            Value::from(i64::from(offset)),
        ],
    );
    Hit::find_by_statement(statement).all(db).await
}

fn words(query: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for word in query.split(|c: char| !c.is_alphanumeric()) {
        let word: String = word
            .chars()
            .take(MAX_WORD_CHARS)
            .collect::<String>()
            .to_lowercase();
        if !word.is_empty() && !words.contains(&word) && words.len() < MAX_WORDS {
            words.push(word);
        }
    }
    words
}

fn fts5(words: &[String]) -> String {
    let quoted: Vec<String> = words
        .iter()
        .map(|word| format!("\"{}\"*", word.replace('"', "\"\"")))
        .collect();
    quoted.join(" ")
}

fn tsquery(words: &[String]) -> String {
    let quoted: Vec<String> = words
        .iter()
        .map(|word| format!("'{}':*", word.replace('\\', "\\\\").replace('\'', "''")))
        .collect();
    quoted.join(" & ")
}
