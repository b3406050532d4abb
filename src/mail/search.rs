//! Full-text search over the caller's synced mail (subject, sender, text): SQLite FTS5 and
//! PostgreSQL `tsvector` (migration m20261202_05_gmail), each hit scoped to its owner.
//!
//! As chat search does, a query is reduced to its words (runs of letters and digits), each
//! quoted and matched as a prefix, every word required: no query syntax reaches the database.
//! (Chat's search is being moved onto owner-tagged terms in a shared crate; mail should follow
//! it when that lands, sharing its word handling instead of this copy.)
//! Ranked pages are offsets into the ranking: a message synced between two pages may shift it.
//! Sender and date filters are conditions of the same query, so they page like the words do.

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

/// What else a hit must match, applied in the query (before ranking and paging).
#[derive(Debug, Default)]
pub struct Filters<'a> {
    /// A part of the From header (name or address), any case.
    pub from: Option<&'a str>,
    /// Sent at or after.
    pub after: Option<DateTime<Utc>>,
    /// Sent before.
    pub before: Option<DateTime<Utc>>,
}

impl Filters<'_> {
    pub fn is_empty(&self) -> bool {
        self.from.is_none() && self.after.is_none() && self.before.is_none()
    }
}

/// Numbered placeholders (`?1` or `$1`) and their values.
struct Params {
    postgres: bool,
    values: Vec<Value>,
}

impl Params {
    fn push(&mut self, value: impl Into<Value>) -> String {
        self.values.push(value.into());
        let n = self.values.len();
        if self.postgres {
            format!("${n}")
        } else {
            format!("?{n}")
        }
    }
}

/// `%text%` for `LIKE … ESCAPE '\'`, its wildcards taken literally.
fn contains_pattern(text: &str) -> String {
    let escaped = text
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// The caller's visible messages (not in the bin, spam or drafts) matching `query` and
/// `filters`, best first (newest first without words), `limit` from `offset`. A query without
/// words matches everything the filters let through; without filters either, nothing.
pub async fn search(
    db: &DatabaseConnection,
    user_id: Uuid,
    query: &str,
    filters: &Filters<'_>,
    limit: u32,
    offset: u32,
) -> Result<Vec<Hit>, DbErr> {
    let words = words(query);
    if words.is_empty() && filters.is_empty() {
        return Ok(Vec::new());
    }
    let backend = db.get_database_backend();
    let postgres = backend == DbBackend::Postgres;
    let mut params = Params {
        postgres,
        values: Vec::new(),
    };
    let columns = "m.gmail_id, m.thread_id, m.from_addr, m.subject, m.date, m.snippet";
    let (mut sql, order) = if words.is_empty() {
        let user = params.push(user_id);
        (
            format!("SELECT {columns} FROM mail_messages m WHERE m.user_id = {user}"),
            "m.date DESC, m.gmail_id".to_owned(),
        )
    } else if postgres {
        let matched = params.push(tsquery(&words));
        let user = params.push(user_id);
        (
            format!(
                "SELECT {columns} FROM mail_messages m \
                 WHERE m.search_vector @@ to_tsquery('simple', {matched}) AND m.user_id = {user}"
            ),
            format!(
                "ts_rank(m.search_vector, to_tsquery('simple', {matched}), 1) DESC, \
                 m.date DESC, m.gmail_id"
            ),
        )
    } else {
        let matched = params.push(fts5(&words));
        let user = params.push(user_id);
        (
            format!(
                "SELECT {columns} FROM mail_messages_fts \
                 JOIN mail_messages m ON m.rowid = mail_messages_fts.rowid \
                 WHERE mail_messages_fts MATCH {matched} AND m.user_id = {user}"
            ),
            "bm25(mail_messages_fts), m.date DESC, m.gmail_id".to_owned(),
        )
    };
    sql.push_str(&format!(" AND {}", super::store::visible("m.labels")));
    if let Some(from) = filters.from {
        let pattern = params.push(contains_pattern(from));
        sql.push_str(&format!(
            " AND lower(m.from_addr) LIKE {pattern} ESCAPE '\\'"
        ));
    }
    if let Some(after) = filters.after {
        let after = params.push(after);
        sql.push_str(&format!(" AND m.date >= {after}"));
    }
    if let Some(before) = filters.before {
        let before = params.push(before);
        sql.push_str(&format!(" AND m.date < {before}"));
    }
    let limit = params.push(i64::from(limit));
    let offset = params.push(i64::from(offset));
    sql.push_str(&format!(" ORDER BY {order} LIMIT {limit} OFFSET {offset}"));
    let statement = Statement::from_sql_and_values(backend, sql, params.values);
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
