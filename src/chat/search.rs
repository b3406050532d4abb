//! Full-text search over the user's chat titles and messages: PostgreSQL `tsvector` with a GIN
//! index, SQLite FTS5 kept in sync by triggers (migration m20261122_000004_chat_search).
//!
//! A query is reduced to its words (runs of letters and digits); a hit must contain every word,
//! each matched as a prefix so that "meet" finds "meeting". No other query syntax exists: the
//! backend expression is built from the words alone, each quoted, so any text is safe to search.
//! Ranking: SQLite's bm25 and PostgreSQL's ts_rank (normalised by document length) agree that
//! more occurrences and shorter texts rank higher.
//!
//! PostgreSQL's parser keeps e-mail addresses, URLs and version numbers whole, so a part of one
//! (the "example" of "ann@example.com") finds it on SQLite only.

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DbBackend, DbErr, FromQueryResult, Statement, Value};
use uuid::Uuid;

/// More words narrow a search little but make it slower.
const MAX_WORDS: usize = 12;
/// Longer words are cut to a prefix, which still matches the whole word; PostgreSQL rejects
/// lexemes over 2047 bytes.
const MAX_WORD_CHARS: usize = 64;
/// Roughly a line of text, as both backends count words.
const SNIPPET_WORDS: u32 = 16;
/// Highlight markers the database wraps around matched words; turned into `**` only after the
/// message's own `**` (Markdown bold) is removed, so the two cannot be confused. Private-use
/// code points do not occur in ordinary text.
const MARK_START: char = '\u{E000}';
const MARK_END: char = '\u{E001}';

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    pub session_id: Uuid,
    pub session_title: String,
    pub message_id: Uuid,
    /// A short excerpt around the match, matched words wrapped in `**`.
    pub snippet: String,
    pub created_at: DateTime<Utc>,
}

#[derive(FromQueryResult)]
struct HitRow {
    session_id: Uuid,
    session_title: String,
    message_id: Uuid,
    snippet: String,
    created_at: DateTime<Utc>,
}

#[derive(FromQueryResult)]
struct SessionRow {
    session_id: Uuid,
}

/// The caller's messages matching `query`, best first. Any text is a valid query (no syntax
/// reaches the database); a query with no searchable words matches nothing.
pub async fn search_messages(
    db: &DatabaseConnection,
    user_id: Uuid,
    query: &str,
    limit: u64,
) -> Result<Vec<SearchHit>, DbErr> {
    let words = query_words(query);
    if words.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let backend = db.get_database_backend();
    let statement = match backend {
        DbBackend::Sqlite => Statement::from_sql_and_values(
            backend,
            SQLITE_SEARCH_MESSAGES,
            [
                Value::from(fts5_expression(&words)),
                Value::from(user_id),
                Value::from(limit),
                Value::from(MARK_START.to_string()),
                Value::from(MARK_END.to_string()),
                Value::from(SNIPPET_WORDS),
            ],
        ),
        DbBackend::Postgres => Statement::from_sql_and_values(
            backend,
            POSTGRES_SEARCH_MESSAGES,
            [
                Value::from(tsquery_expression(&words)),
                Value::from(user_id),
                Value::from(limit),
                Value::from(headline_options()),
                Value::from(format!("{MARK_START}{MARK_END}")),
            ],
        ),
        other => return Err(unsupported(other)),
    };
    let rows = HitRow::find_by_statement(statement).all(db).await?;
    Ok(rows
        .into_iter()
        .map(|row| SearchHit {
            session_id: row.session_id,
            session_title: row.session_title,
            message_id: row.message_id,
            snippet: finish_snippet(&row.snippet),
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
    db: &DatabaseConnection,
    user_id: Uuid,
    query: &str,
    limit: u64,
) -> Result<Vec<Uuid>, DbErr> {
    let words = query_words(query);
    if words.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let backend = db.get_database_backend();
    let (sql, expression) = match backend {
        DbBackend::Sqlite => (SQLITE_MATCHING_SESSIONS, fts5_expression(&words)),
        DbBackend::Postgres => (POSTGRES_MATCHING_SESSIONS, tsquery_expression(&words)),
        other => return Err(unsupported(other)),
    };
    let statement = Statement::from_sql_and_values(
        backend,
        sql,
        [
            Value::from(expression),
            Value::from(user_id),
            Value::from(limit),
        ],
    );
    let rows = SessionRow::find_by_statement(statement).all(db).await?;
    Ok(rows.into_iter().map(|row| row.session_id).collect())
}

// ?1 FTS5 expression, ?2 user id, ?3 limit, ?4/?5 highlight markers, ?6 snippet length in
// words. The best rows are picked first and only they get a snippet: snippet() rereads and
// retokenizes the whole message. CROSS JOIN keeps `top` the outer loop, so the index is then
// probed by rowid instead of running the whole match a second time.
const SQLITE_SEARCH_MESSAGES: &str = "
WITH top AS MATERIALIZED (
    SELECT chat_messages_fts.rowid AS search_rowid, chat_messages_fts.rank AS score
    FROM chat_messages_fts
    JOIN chat_messages m ON m.rowid = chat_messages_fts.rowid
    WHERE chat_messages_fts MATCH ?1
      AND m.user_id = ?2
      AND m.role IN ('user', 'assistant')
    ORDER BY chat_messages_fts.rank, m.id DESC
    LIMIT ?3
)
SELECT m.session_id AS session_id,
       s.title AS session_title,
       m.id AS message_id,
       snippet(chat_messages_fts, 0, ?4, ?5, '…', ?6) AS snippet,
       m.created_at AS created_at
FROM top
CROSS JOIN chat_messages_fts ON chat_messages_fts.rowid = top.search_rowid
JOIN chat_messages m ON m.rowid = top.search_rowid
JOIN chat_sessions s ON s.id = m.session_id
WHERE chat_messages_fts MATCH ?1
ORDER BY top.score, m.id DESC";

// $1 tsquery, $2 user id, $3 limit, $4 ts_headline options, $5 the highlight markers.
// ts_rank's normalisation 1 divides by 1 + log(length): shorter texts rank higher, as with
// bm25. As on SQLite, only the best rows get a headline. ts_headline marks no elision, so an
// ellipsis is added where the excerpt does not reach an end of the message.
const POSTGRES_SEARCH_MESSAGES: &str = "
WITH top AS (
    SELECT m.id, m.session_id, m.content, m.created_at,
           ts_rank(m.search_vector, to_tsquery('simple', $1), 1) AS score
    FROM chat_messages m
    WHERE m.search_vector @@ to_tsquery('simple', $1)
      AND m.user_id = $2
      AND m.role IN ('user', 'assistant')
    ORDER BY score DESC, m.id DESC
    LIMIT $3
)
SELECT top.session_id AS session_id,
       s.title AS session_title,
       top.id AS message_id,
       CASE WHEN starts_with(ltrim(top.content, E' \\t\\r\\n'), ltrim(plain, E' \\t\\r\\n'))
            THEN '' ELSE '…' END
       || headline
       || CASE WHEN right(rtrim(top.content, E' \\t\\r\\n'), length(rtrim(plain, E' \\t\\r\\n')))
                    = rtrim(plain, E' \\t\\r\\n')
               THEN '' ELSE '…' END AS snippet,
       top.created_at AS created_at
FROM top
JOIN chat_sessions s ON s.id = top.session_id
CROSS JOIN LATERAL (
    SELECT ts_headline('simple', top.content, to_tsquery('simple', $1), $4) AS headline
) h
CROSS JOIN LATERAL (SELECT translate(h.headline, $5, '') AS plain) p
ORDER BY top.score DESC, top.id DESC";

// ?1 FTS5 expression, ?2 user id, ?3 limit. bm25 is lower for better matches; NULLs (no title
// or no message match) are ordered last explicitly, the two backends default differently.
const SQLITE_MATCHING_SESSIONS: &str = "
WITH title_hits AS (
    SELECT s.id AS session_id, chat_sessions_fts.rank AS score
    FROM chat_sessions_fts
    JOIN chat_sessions s ON s.rowid = chat_sessions_fts.rowid
    WHERE chat_sessions_fts MATCH ?1 AND s.user_id = ?2
),
message_hits AS (
    SELECT m.session_id AS session_id, MIN(chat_messages_fts.rank) AS score
    FROM chat_messages_fts
    JOIN chat_messages m ON m.rowid = chat_messages_fts.rowid
    WHERE chat_messages_fts MATCH ?1
      AND m.user_id = ?2
      AND m.role IN ('user', 'assistant')
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
LIMIT ?3";

// $1 tsquery, $2 user id, $3 limit. ts_rank is higher for better matches.
const POSTGRES_MATCHING_SESSIONS: &str = "
WITH title_hits AS (
    SELECT s.id AS session_id, ts_rank(s.search_vector, to_tsquery('simple', $1), 1) AS score
    FROM chat_sessions s
    WHERE s.search_vector @@ to_tsquery('simple', $1) AND s.user_id = $2
),
message_hits AS (
    SELECT m.session_id AS session_id,
           MAX(ts_rank(m.search_vector, to_tsquery('simple', $1), 1)) AS score
    FROM chat_messages m
    WHERE m.search_vector @@ to_tsquery('simple', $1)
      AND m.user_id = $2
      AND m.role IN ('user', 'assistant')
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
LIMIT $3";

fn unsupported(backend: DbBackend) -> DbErr {
    DbErr::Custom(format!("chat search is not available on {backend:?}"))
}

/// The distinct words of a query (case-insensitively), in order, at most `MAX_WORDS`.
/// Everything that is not a letter or digit separates words, which is also how both backends
/// split the text they index.
fn query_words(query: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for word in query.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        let word: String = word.chars().take(MAX_WORD_CHARS).collect();
        let folded = word.to_lowercase();
        if seen.contains(&folded) {
            continue;
        }
        seen.push(folded);
        words.push(word);
        if words.len() == MAX_WORDS {
            break;
        }
    }
    words
}

/// An FTS5 query requiring every word as a prefix: `"meet"* "noon"*`. A quoted string is
/// always a plain phrase to FTS5 (never AND, NEAR, a column filter, …); `"` doubles inside it.
fn fts5_expression(words: &[String]) -> String {
    words
        .iter()
        .map(|word| format!("\"{}\"*", word.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A `to_tsquery` input requiring every word as a prefix: `'meet':* & 'noon':*`. Inside the
/// quotes a word is a plain lexeme; `'` doubles and `\` escapes there.
fn tsquery_expression(words: &[String]) -> String {
    words
        .iter()
        .map(|word| format!("'{}':*", word.replace('\\', "\\\\").replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(" & ")
}

/// One fragment centred on the best match, about as long as SQLite's snippet.
fn headline_options() -> String {
    format!(
        "StartSel={MARK_START}, StopSel={MARK_END}, MaxFragments=1, \
         MaxWords={SNIPPET_WORDS}, MinWords={}, ShortWord=0",
        SNIPPET_WORDS / 2
    )
}

/// A one-line excerpt with the matched words in `**`.
fn finish_snippet(raw: &str) -> String {
    raw.replace("**", "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace([MARK_START, MARK_END], "**")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(query: &str) -> Vec<String> {
        query_words(query)
    }

    #[test]
    fn words_are_runs_of_letters_and_digits() {
        assert_eq!(words("Meet me at 9am!"), ["Meet", "me", "at", "9am"]);
        assert_eq!(words("don't stop"), ["don", "t", "stop"]);
        assert_eq!(words("naïve café, Straße"), ["naïve", "café", "Straße"]);
        assert_eq!(words("日本語 テキスト"), ["日本語", "テキスト"]);
        assert_eq!(words("привет,мир"), ["привет", "мир"]);
        assert_eq!(words("🎉party🎉"), ["party"]);
    }

    #[test]
    fn syntax_is_not_a_word() {
        for query in [
            "", "   ", "\"", "*", "'", ":", "&", "!", "(", ")", "|", "<->", "🎉", "''", "\\", "-",
            "^", "{}", "+", "\"*\"", ":*", "\0",
        ] {
            assert!(words(query).is_empty(), "{query:?} has no words");
        }
        assert_eq!(
            words("NEAR(\"meet\" noon, 3) AND x:*"),
            ["NEAR", "meet", "noon", "3", "AND", "x"]
        );
        assert_eq!(
            words("'; DROP TABLE chat_messages; --"),
            ["DROP", "TABLE", "chat", "messages"]
        );
    }

    #[test]
    fn words_are_distinct_capped_and_cut() {
        assert_eq!(words("Meet meet MEET noon"), ["Meet", "noon"]);
        let many = (0..100)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let found = words(&many);
        assert_eq!(found.len(), MAX_WORDS);
        assert_eq!(found.first().map(String::as_str), Some("w0"));
        let long = "é".repeat(10_000);
        assert_eq!(words(&long), ["é".repeat(MAX_WORD_CHARS)]);
        assert_eq!(words(&"a ".repeat(5_000)), ["a"]);
    }

    #[test]
    fn fts5_expression_quotes_every_word() {
        let words = vec!["meet".to_owned(), "NEAR".to_owned(), "a\"b".to_owned()];
        assert_eq!(fts5_expression(&words), r#""meet"* "NEAR"* "a""b"*"#);
        assert_eq!(fts5_expression(&[]), "");
    }

    #[test]
    fn tsquery_expression_quotes_every_word() {
        let words = vec!["meet".to_owned(), "o'k".to_owned(), "a\\b".to_owned()];
        assert_eq!(
            tsquery_expression(&words),
            r"'meet':* & 'o''k':* & 'a\\b':*"
        );
    }

    #[test]
    fn snippets_are_one_line_with_only_match_highlights() {
        let raw = format!("…see **bold**\n\nthen {MARK_START}meet{MARK_END}  at noon…");
        assert_eq!(finish_snippet(&raw), "…see bold then **meet** at noon…");
        assert_eq!(finish_snippet("plain"), "plain");
    }

    mod database {
        use super::super::*;
        use chrono::Duration;
        use entity::{chat_messages, chat_sessions, users};
        use migration::{Migrator, MigratorTrait};
        use sea_orm::{
            ActiveModelTrait,
            ActiveValue::{NotSet, Set},
            ConnectionTrait, Database, EntityTrait,
        };

        /// A freshly migrated database, removed when dropped (even when the test panics).
        struct TestDb {
            db: DatabaseConnection,
            _dir: Option<tempfile::TempDir>,
            postgres: Option<PostgresDatabase>,
        }

        impl TestDb {
            async fn sqlite() -> Self {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
                // One connection, so every read follows the previous write. Under heavy load a
                // second pooled SQLite connection has been seen answering from the state
                // before the last write ("no such table" right after migrating), which would
                // fail these tests for reasons unrelated to search.
                let db = crate::db::connect_and_migrate(&url, 1)
                    .await
                    .expect("migrated SQLite database");
                Self {
                    db,
                    _dir: Some(dir),
                    postgres: None,
                }
            }

            /// `None` when `ALIAS_TEST_POSTGRES_URL` is not set.
            async fn postgres() -> Option<Self> {
                let admin_url = std::env::var("ALIAS_TEST_POSTGRES_URL")
                    .ok()
                    .filter(|url| !url.is_empty())?;
                let name = format!("alias_test_{}", Uuid::new_v4().simple());
                let admin = Database::connect(&admin_url)
                    .await
                    .expect("connect to ALIAS_TEST_POSTGRES_URL");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .expect("create test database");
                admin.close().await.ok();
                let postgres = PostgresDatabase { admin_url, name };
                let base = postgres
                    .admin_url
                    .rsplit_once('/')
                    .map_or(postgres.admin_url.as_str(), |(base, _)| base);
                let url = format!("{base}/{}", postgres.name);
                let db = crate::db::connect_and_migrate(&url, 4)
                    .await
                    .expect("migrated PostgreSQL database");
                Some(Self {
                    db,
                    _dir: None,
                    postgres: Some(postgres),
                })
            }

            /// On SQLite, checks both FTS5 indexes against their content tables: a trigger
            /// that indexed or forgot the wrong text would show here, not in query results.
            async fn check_indexes(&self) {
                if self.postgres.is_some() {
                    return;
                }
                for table in ["chat_messages_fts", "chat_sessions_fts"] {
                    self.db
                        .execute_unprepared(&format!(
                            "INSERT INTO {table}({table}, rank) VALUES ('integrity-check', 1)"
                        ))
                        .await
                        .unwrap_or_else(|error| panic!("{table} is out of step: {error}"));
                }
            }
        }

        struct PostgresDatabase {
            admin_url: String,
            name: String,
        }

        impl Drop for PostgresDatabase {
            fn drop(&mut self) {
                let admin_url = self.admin_url.clone();
                let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
                // Drop runs inside the test's runtime, which cannot be blocked on.
                let dropped = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .ok()?;
                    runtime.block_on(async {
                        let admin = Database::connect(&admin_url).await.ok()?;
                        admin.execute_unprepared(&sql).await.ok()
                    })
                })
                .join();
                if !matches!(dropped, Ok(Some(_))) {
                    eprintln!("could not drop test database {}", self.name);
                }
            }
        }

        /// Runs `$scenario` (an `async fn(&TestDb)`) on SQLite, and on PostgreSQL when
        /// `ALIAS_TEST_POSTGRES_URL` is set.
        macro_rules! both_databases {
            ($scenario:ident) => {
                mod $scenario {
                    #[tokio::test]
                    async fn sqlite() {
                        let test_db = super::TestDb::sqlite().await;
                        super::$scenario(&test_db).await;
                        test_db.check_indexes().await;
                    }

                    #[tokio::test]
                    async fn postgres() {
                        let Some(test_db) = super::TestDb::postgres().await else {
                            eprintln!("ALIAS_TEST_POSTGRES_URL is not set: PostgreSQL not run");
                            return;
                        };
                        super::$scenario(&test_db).await;
                    }
                }
            };
        }

        both_databases!(ranking);
        both_databases!(prefixes_and_every_word);
        both_databases!(only_the_callers_user_and_assistant_messages);
        both_databases!(sessions_by_title_or_message);
        both_databases!(any_text_is_a_valid_query);
        both_databases!(updates_are_reflected);
        both_databases!(deletes_remove_hits);
        both_databases!(snippets);
        both_databases!(migration_indexes_existing_rows_and_reverts);

        async fn user(db: &DatabaseConnection) -> Uuid {
            let id = Uuid::now_v7();
            let now = Utc::now();
            users::ActiveModel {
                id: Set(id),
                email: Set(format!("{}@example.com", id.simple())),
                name: Set("Test".to_owned()),
                avatar_url: Set(None),
                avatar_file_id: Set(None),
                password_hash: Set(None),
                created_at: Set(now),
                updated_at: Set(now),
            }
            .insert(db)
            .await
            .expect("insert user");
            id
        }

        async fn session(db: &DatabaseConnection, user_id: Uuid, title: &str) -> Uuid {
            let id = Uuid::now_v7();
            let now = Utc::now();
            chat_sessions::ActiveModel {
                id: Set(id),
                user_id: Set(user_id),
                title: Set(title.to_owned()),
                summary: Set(None),
                is_pinned: Set(false),
                is_archived: Set(false),
                message_count: Set(0),
                created_at: Set(now),
                updated_at: Set(now),
                last_message_at: Set(now),
            }
            .insert(db)
            .await
            .expect("insert session");
            id
        }

        async fn message_as(
            db: &DatabaseConnection,
            session_id: Uuid,
            user_id: Uuid,
            role: &str,
            content: &str,
        ) -> Uuid {
            let id = Uuid::now_v7();
            let now = Utc::now();
            let row = chat_messages::ActiveModel {
                id: Set(id),
                session_id: Set(session_id),
                user_id: Set(user_id),
                role: Set(role.to_owned()),
                content: Set(content.to_owned()),
                status: Set("complete".to_owned()),
                provider: Set(None),
                model: Set(None),
                input_tokens: Set(None),
                output_tokens: Set(None),
                tool_calls: Set(None),
                is_liked: Set(false),
                client_message_id: Set(None),
                reply_to: Set(None),
                // Not set nor read back: later migrations may be reverted by the test.
                error: NotSet,
                created_at: Set(now),
                updated_at: Set(now),
            };
            chat_messages::Entity::insert(row)
                .exec_without_returning(db)
                .await
                .expect("insert message");
            id
        }

        async fn message(
            db: &DatabaseConnection,
            session_id: Uuid,
            user_id: Uuid,
            content: &str,
        ) -> Uuid {
            message_as(db, session_id, user_id, "user", content).await
        }

        async fn search(db: &DatabaseConnection, user_id: Uuid, query: &str) -> Vec<SearchHit> {
            search_messages(db, user_id, query, 50)
                .await
                .unwrap_or_else(|error| panic!("search {query:?}: {error}"))
        }

        async fn ids(db: &DatabaseConnection, user_id: Uuid, query: &str) -> Vec<Uuid> {
            search(db, user_id, query)
                .await
                .into_iter()
                .map(|hit| hit.message_id)
                .collect()
        }

        async fn sessions(db: &DatabaseConnection, user_id: Uuid, query: &str) -> Vec<Uuid> {
            matching_session_ids(db, user_id, query, 50)
                .await
                .unwrap_or_else(|error| panic!("sessions {query:?}: {error}"))
        }

        /// Messages that mention none of the searched words, so that those words are rare
        /// (bm25 all but ignores a word found in over half the messages).
        async fn filler(db: &DatabaseConnection, session_id: Uuid, user_id: Uuid) {
            for content in [
                "What is the weather like in Lisbon today?",
                "Sunny with a light breeze, around twenty degrees.",
                "Can you recommend a good book about sailing?",
                "Try The Riddle of the Sands by Erskine Childers.",
                "Thanks, I will order it tonight.",
                "Enjoy the read, it is a classic.",
            ] {
                message(db, session_id, user_id, content).await;
            }
        }

        async fn ranking(test_db: &TestDb) {
            let db = &test_db.db;
            let alice = user(db).await;
            let chat = session(db, alice, "Planning").await;
            filler(db, chat, alice).await;
            let once = message(db, chat, alice, "Let us meet at the harbour then walk home").await;
            let twice = message(db, chat, alice, "Let us meet at the harbour and meet again").await;
            assert_eq!(ids(db, alice, "meet").await, [twice, once]);

            let long = message(
                db,
                chat,
                alice,
                "The quarterly budget review is next week and we still need to finish the slides",
            )
            .await;
            let short = message(db, chat, alice, "Quarterly budget review").await;
            assert_eq!(ids(db, alice, "budget review").await, [short, long]);

            let hits = search(db, alice, "budget review").await;
            let first = hits.first().expect("a hit");
            assert_eq!(first.session_id, chat);
            assert_eq!(first.session_title, "Planning");
            assert_eq!(first.snippet, "Quarterly **budget** **review**");
            let stored = chat_messages::Entity::find_by_id(short)
                .one(db)
                .await
                .expect("read message")
                .expect("message exists");
            assert_eq!(first.created_at, stored.created_at);

            let limited = search_messages(db, alice, "meet", 1)
                .await
                .expect("limited search");
            assert_eq!(
                limited.iter().map(|hit| hit.message_id).collect::<Vec<_>>(),
                [twice]
            );
            assert!(
                search_messages(db, alice, "meet", 0)
                    .await
                    .expect("zero limit")
                    .is_empty()
            );
        }

        async fn prefixes_and_every_word(test_db: &TestDb) {
            let db = &test_db.db;
            let alice = user(db).await;
            let chat = session(db, alice, "Work").await;
            filler(db, chat, alice).await;
            let meeting = message(db, chat, alice, "The Meeting moved to Thursday").await;
            let meet = message(db, chat, alice, "Can we meet on Friday instead?").await;
            let accents = message(db, chat, alice, "Le café est fermé").await;

            let mut found = ids(db, alice, "meet").await;
            found.sort();
            let mut expected = vec![meeting, meet];
            expected.sort();
            assert_eq!(found, expected);
            assert_eq!(ids(db, alice, "MEETING").await, [meeting]);
            assert_eq!(ids(db, alice, "thurs meet").await, [meeting]);
            assert_eq!(ids(db, alice, "friday MEET").await, [meet]);
            assert!(ids(db, alice, "meet saturday").await.is_empty());
            assert!(ids(db, alice, "eeting").await.is_empty());
            assert_eq!(ids(db, alice, "CAFÉ").await, [accents]);
            assert_eq!(ids(db, alice, "fermé café").await, [accents]);
        }

        async fn only_the_callers_user_and_assistant_messages(test_db: &TestDb) {
            let db = &test_db.db;
            let alice = user(db).await;
            let bob = user(db).await;
            let alices_chat = session(db, alice, "Zebras").await;
            let bobs_chat = session(db, bob, "Zebras").await;
            let asked = message(db, alices_chat, alice, "Why do zebras have stripes?").await;
            let answered = message_as(
                db,
                alices_chat,
                alice,
                "assistant",
                "Zebras' stripes may deter biting flies.",
            )
            .await;
            message_as(
                db,
                alices_chat,
                alice,
                "tool",
                r#"{"results": ["zebras stripes flies study"]}"#,
            )
            .await;
            let bobs = message(db, bobs_chat, bob, "Zebras in the wild").await;

            let mut found = ids(db, alice, "zebras").await;
            found.sort();
            let mut expected = vec![asked, answered];
            expected.sort();
            assert_eq!(found, expected);
            assert_eq!(ids(db, bob, "zebras").await, [bobs]);
            assert!(ids(db, bob, "stripes").await.is_empty());
            assert!(ids(db, alice, "study").await.is_empty(), "tool results");
            assert_eq!(sessions(db, alice, "zebra").await, [alices_chat]);
            assert_eq!(sessions(db, bob, "zebra").await, [bobs_chat]);
            assert!(sessions(db, bob, "flies").await.is_empty());
            assert!(
                sessions(db, alice, "study").await.is_empty(),
                "tool results"
            );
            let nobody = Uuid::now_v7();
            assert!(ids(db, nobody, "zebras").await.is_empty());
            assert!(sessions(db, nobody, "zebras").await.is_empty());
        }

        async fn sessions_by_title_or_message(test_db: &TestDb) {
            let db = &test_db.db;
            let alice = user(db).await;
            let by_message = session(db, alice, "Holiday ideas").await;
            message(db, by_message, alice, "Maybe Rome in spring?").await;
            let by_title = session(db, alice, "Rome itinerary").await;
            message(db, by_title, alice, "Day one: the Colosseum").await;
            let exact_title = session(db, alice, "Rome").await;
            let unrelated = session(db, alice, "Groceries").await;
            message(db, unrelated, alice, "Milk, eggs, bread").await;
            filler(db, unrelated, alice).await;

            // The shorter title is the better title match; then the message match.
            assert_eq!(
                sessions(db, alice, "rome").await,
                [exact_title, by_title, by_message]
            );
            assert_eq!(sessions(db, alice, "colosseum").await, [by_title]);
            assert_eq!(sessions(db, alice, "itin").await, [by_title]);
            assert_eq!(sessions(db, alice, "holiday").await, [by_message]);
            assert!(sessions(db, alice, "paris").await.is_empty());
            assert_eq!(
                matching_session_ids(db, alice, "rome", 2)
                    .await
                    .expect("limited sessions"),
                [exact_title, by_title]
            );
        }

        async fn any_text_is_a_valid_query(test_db: &TestDb) {
            let db = &test_db.db;
            let alice = user(db).await;
            let chat = session(db, alice, "Notes").await;
            filler(db, chat, alice).await;
            let note = message(db, chat, alice, "meet near the harbour at noon").await;

            let long_word = "x".repeat(10_000);
            let long_text = "meet ".repeat(2_000);
            let odd = [
                "\"",
                "\"meet",
                "meet\"",
                "*",
                "meet*",
                "'",
                "meet's",
                ":",
                "meet:*",
                "&",
                "!meet",
                "(",
                ")",
                "meet AND harbour",
                "meet OR nothing",
                "NOT meet",
                "NEAR(meet harbour)",
                "content:meet",
                "{content}: meet",
                "^meet",
                "meet + harbour",
                "meet <-> harbour",
                "meet | harbour",
                "🎉",
                "🎉 meet 🎉",
                "ा",
                "ा meet",
                "\\",
                "meet\\",
                "\0",
                "'; DROP TABLE chat_messages; --",
                "\"; DROP TABLE chat_messages; --",
                "meet' OR '1'='1",
                long_word.as_str(),
                long_text.as_str(),
            ];
            for query in odd {
                search_messages(db, alice, query, 10)
                    .await
                    .unwrap_or_else(|error| panic!("search {query:?}: {error}"));
                matching_session_ids(db, alice, query, 10)
                    .await
                    .unwrap_or_else(|error| panic!("sessions {query:?}: {error}"));
            }
            // Syntax is ignored; the words are still searched.
            assert_eq!(ids(db, alice, "\"meet").await, [note]);
            assert_eq!(ids(db, alice, "meet:*").await, [note]);
            assert_eq!(ids(db, alice, "🎉 meet 🎉").await, [note]);
            assert_eq!(ids(db, alice, "NEAR(meet harbour)").await, [note]);
            assert_eq!(ids(db, alice, &long_text).await, [note]);
            assert!(ids(db, alice, "meet OR nothing").await.is_empty());
            for query in ["", "   ", "\"*'&!():", "🎉"] {
                assert!(ids(db, alice, query).await.is_empty(), "{query:?}");
                assert!(sessions(db, alice, query).await.is_empty(), "{query:?}");
            }
            assert_eq!(ids(db, alice, "harbour").await, [note], "tables intact");
        }

        async fn updates_are_reflected(test_db: &TestDb) {
            let db = &test_db.db;
            let alice = user(db).await;
            let chat = session(db, alice, "Draft").await;
            filler(db, chat, alice).await;
            let reply = message_as(db, chat, alice, "assistant", "").await;
            // As a streaming reply grows.
            for content in ["Kangaroos", "Kangaroos can", "Kangaroos can hop fast"] {
                chat_messages::ActiveModel {
                    id: Set(reply),
                    content: Set(content.to_owned()),
                    status: Set("streaming".to_owned()),
                    ..Default::default()
                }
                .update(db)
                .await
                .expect("stream content");
            }
            assert_eq!(ids(db, alice, "hop").await, [reply]);
            // Other columns change without the text.
            chat_messages::ActiveModel {
                id: Set(reply),
                status: Set("complete".to_owned()),
                is_liked: Set(true),
                updated_at: Set(Utc::now() + Duration::seconds(1)),
                ..Default::default()
            }
            .update(db)
            .await
            .expect("complete reply");
            assert_eq!(ids(db, alice, "kangaroos hop").await, [reply]);
            // The same text written again.
            chat_messages::ActiveModel {
                id: Set(reply),
                content: Set("Kangaroos can hop fast".to_owned()),
                ..Default::default()
            }
            .update(db)
            .await
            .expect("rewrite same content");
            assert_eq!(ids(db, alice, "kangaroos").await, [reply]);

            chat_messages::ActiveModel {
                id: Set(reply),
                content: Set("Wombats dig burrows".to_owned()),
                ..Default::default()
            }
            .update(db)
            .await
            .expect("replace content");
            assert!(ids(db, alice, "kangaroos").await.is_empty());
            assert_eq!(ids(db, alice, "wombat").await, [reply]);

            chat_sessions::ActiveModel {
                id: Set(chat),
                title: Set("Marsupials".to_owned()),
                ..Default::default()
            }
            .update(db)
            .await
            .expect("rename session");
            chat_sessions::ActiveModel {
                id: Set(chat),
                message_count: Set(8),
                last_message_at: Set(Utc::now()),
                ..Default::default()
            }
            .update(db)
            .await
            .expect("touch session");
            assert_eq!(sessions(db, alice, "marsupial").await, [chat]);
            assert!(sessions(db, alice, "draft").await.is_empty());
            let hits = search(db, alice, "wombats").await;
            assert_eq!(
                hits.first().map(|hit| hit.session_title.as_str()),
                Some("Marsupials")
            );
        }

        async fn deletes_remove_hits(test_db: &TestDb) {
            let db = &test_db.db;
            let alice = user(db).await;
            let kept = session(db, alice, "Kept").await;
            filler(db, kept, alice).await;
            let gone = message(db, kept, alice, "Platypus facts").await;
            let stays = message(db, kept, alice, "More platypus facts").await;
            let doomed = session(db, alice, "Platypus chat").await;
            let cascaded = message(db, doomed, alice, "Platypus eggs").await;
            message_as(db, doomed, alice, "tool", "platypus tool output").await;
            assert_eq!(ids(db, alice, "platypus").await.len(), 3);

            chat_messages::Entity::delete_by_id(gone)
                .exec(db)
                .await
                .expect("delete message");
            let mut found = ids(db, alice, "platypus").await;
            found.sort();
            let mut expected = vec![stays, cascaded];
            expected.sort();
            assert_eq!(found, expected);

            // Deleting the session deletes its messages by cascade.
            chat_sessions::Entity::delete_by_id(doomed)
                .exec(db)
                .await
                .expect("delete session");
            assert_eq!(ids(db, alice, "platypus").await, [stays]);
            assert_eq!(sessions(db, alice, "platypus").await, [kept]);
            // A new message may reuse a freed SQLite rowid; only its own words must match.
            let fresh = message(db, kept, alice, "Echidna facts").await;
            assert_eq!(ids(db, alice, "echidna").await, [fresh]);
            assert!(ids(db, alice, "eggs").await.is_empty());
        }

        async fn migration_indexes_existing_rows_and_reverts(test_db: &TestDb) {
            let db = &test_db.db;
            let alice = user(db).await;
            // The search migration and every later one.
            let reverted = Migrator::migrations()
                .iter()
                .rev()
                .position(|m| m.name() == "m20261122_000004_chat_search")
                .and_then(|later| u32::try_from(later + 1).ok());
            Migrator::down(db, reverted).await.expect("revert search");
            assert!(
                search_messages(db, alice, "anything", 10).await.is_err(),
                "search objects removed"
            );
            // Written while no index exists.
            let chat = session(db, alice, "Koalas").await;
            filler(db, chat, alice).await;
            let earlier = message(db, chat, alice, "Koalas sleep most of the day").await;
            message_as(db, chat, alice, "tool", "koalas tool output").await;
            Migrator::up(db, None).await.expect("reapply search");
            assert_eq!(ids(db, alice, "koalas").await, [earlier]);
            assert_eq!(sessions(db, alice, "koala").await, [chat]);
            let later = message(db, chat, alice, "Koalas eat eucalyptus").await;
            let mut found = ids(db, alice, "koalas").await;
            found.sort();
            let mut expected = vec![earlier, later];
            expected.sort();
            assert_eq!(found, expected);
        }

        async fn snippets(test_db: &TestDb) {
            let db = &test_db.db;
            let alice = user(db).await;
            let chat = session(db, alice, "Prose").await;
            filler(db, chat, alice).await;
            let words = (1..=40)
                .map(|i| format!("word{i}"))
                .collect::<Vec<_>>()
                .join(" ");
            message(
                db,
                chat,
                alice,
                &format!("{words} the **important** meeting\n\nis at noon {words}"),
            )
            .await;
            let hits = search(db, alice, "meeting").await;
            let snippet = &hits.first().expect("a hit").snippet;
            assert!(snippet.contains("**meeting**"), "{snippet}");
            assert!(
                snippet.contains("important **meeting** is at noon"),
                "{snippet}"
            );
            assert!(
                snippet.starts_with('…') && snippet.ends_with('…'),
                "{snippet}"
            );
            let count = snippet.split_whitespace().count();
            assert!((10..=20).contains(&count), "{count} words: {snippet}");

            message(db, chat, alice, "Short note on gardening").await;
            let hits = search(db, alice, "garden").await;
            assert_eq!(
                hits.first().map(|hit| hit.snippet.as_str()),
                Some("Short note on **gardening**")
            );
        }
    }
}
