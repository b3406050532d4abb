//! Chat search against real databases: SQLite, and PostgreSQL when
//! `ALIAS_TEST_POSTGRES_URL` is set at build time (otherwise reported ignored). Rows are
//! written through the chat store, as the server writes them, so the index maintenance is
//! tested with the queries.

use chrono::Utc;
use entity::{chat_messages, chat_sessions, users};
use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::{NotSet, Set},
    ConnectionTrait, Database, DatabaseConnection, DbBackend, EntityTrait, Statement, Value,
};
use search_terms::Document;
use uuid::Uuid;

use super::search::{SearchHit, matching_session_ids, search_messages};
use super::store::{self, NewMessage, Outcome, SessionChanges};
use super::types::{MessageStatus, Role};

/// A freshly migrated database, removed when dropped (even when the test panics).
struct TestDb {
    db: DatabaseConnection,
    _dir: Option<tempfile::TempDir>,
    /// Dropped with the test: removes the database.
    _postgres: Option<PostgresDatabase>,
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
            _postgres: None,
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
            _postgres: Some(postgres),
        })
    }

    /// Checks the index against the tables: exactly the searchable rows with words are
    /// indexed (on PostgreSQL, with exactly their terms); on SQLite the FTS5 structures are
    /// sound. A write that forgot the index, or a delete that left terms behind, shows here.
    async fn check_indexes(&self) {
        let db = &self.db;
        let messages = chat_messages::Entity::find()
            .all(db)
            .await
            .expect("messages");
        let sessions = chat_sessions::Entity::find()
            .all(db)
            .await
            .expect("sessions");
        let expected = |owner: Uuid, text: &str| {
            Some(Document::new(owner.as_u128(), text)).filter(|doc| !doc.is_empty())
        };
        let mut rows: Vec<(&str, Uuid, Option<Document>)> = Vec::new();
        for message in &messages {
            let searchable = matches!(message.role.as_str(), "user" | "assistant");
            let terms = expected(message.user_id, &message.content).filter(|_| searchable);
            rows.push(("chat_messages", message.id, terms));
        }
        for session in &sessions {
            rows.push((
                "chat_sessions",
                session.id,
                expected(session.user_id, &session.title),
            ));
        }
        for (table, id, terms) in rows {
            let indexed = match db.get_database_backend() {
                DbBackend::Sqlite => format!(
                    "SELECT count(*) AS n FROM {table}_search \
                     WHERE rowid = (SELECT rowid FROM {table} WHERE id = ?1)"
                ),
                _ => format!(
                    "SELECT count(*) AS n FROM {table} WHERE id = $1 \
                     AND search_terms IS NOT DISTINCT FROM $2::tsvector"
                ),
            };
            let literal = terms.as_ref().map(Document::tsvector);
            let row = db
                .query_one_raw(Statement::from_sql_and_values(
                    db.get_database_backend(),
                    indexed,
                    [Value::from(id), Value::from(literal)],
                ))
                .await
                .expect("read the index")
                .expect("a count");
            let count: i64 = row.try_get("", "n").expect("count");
            let want = match db.get_database_backend() {
                DbBackend::Sqlite => i64::from(terms.is_some()),
                _ => 1,
            };
            assert_eq!(count, want, "{table} {id} indexed wrongly");
        }
        if db.get_database_backend() != DbBackend::Sqlite {
            return;
        }
        for table in ["chat_messages_search", "chat_sessions_search"] {
            db.execute_unprepared(&format!(
                "INSERT INTO {table}({table}, rank) VALUES ('integrity-check', 1)"
            ))
            .await
            .unwrap_or_else(|error| panic!("{table} is damaged: {error}"));
            let row = db
                .query_one_raw(Statement::from_string(
                    DbBackend::Sqlite,
                    format!("SELECT count(*) AS n FROM {table}"),
                ))
                .await
                .expect("count the index")
                .expect("a count");
            let indexed: i64 = row.try_get("", "n").expect("count");
            let table_rows = if table == "chat_messages_search" {
                messages
                    .iter()
                    .filter(|m| matches!(m.role.as_str(), "user" | "assistant"))
                    .filter(|m| expected(m.user_id, &m.content).is_some())
                    .count()
            } else {
                sessions.len()
            };
            assert_eq!(
                usize::try_from(indexed).ok(),
                Some(table_rows),
                "{table}: rows of deleted text left behind"
            );
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
            #[cfg_attr(
                not(alias_test_postgres),
                ignore = "set ALIAS_TEST_POSTGRES_URL when building to run PostgreSQL tests"
            )]
            async fn postgres() {
                let test_db = super::TestDb::postgres()
                    .await
                    .expect("ALIAS_TEST_POSTGRES_URL is set");
                super::$scenario(&test_db).await;
                test_db.check_indexes().await;
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
both_databases!(a_user_without_messages_finds_nothing);
both_databases!(cascades_remove_hits);
both_databases!(the_longest_messages_are_indexed);

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
        email_verified_at: Set(None),
        tier: Set(crate::users::Tier::default().as_str().to_owned()),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(db)
    .await
    .expect("insert user");
    id
}

async fn session(db: &DatabaseConnection, user_id: Uuid, title: &str) -> Uuid {
    store::create_session(db, user_id, title, None)
        .await
        .expect("create session")
        .id
}

async fn message_as(
    db: &DatabaseConnection,
    session_id: Uuid,
    user_id: Uuid,
    role: Role,
    content: &str,
) -> Uuid {
    let message = NewMessage {
        session_id,
        user_id,
        role,
        content,
        status: MessageStatus::Complete,
        client_message_id: None,
        reply_to: None,
        parent_id: None,
        provider: None,
        model: None,
        tool_calls: None,
    };
    let transaction = crate::db::begin_write(db).await.expect("begin");
    let id = store::insert_message(&transaction, message)
        .await
        .expect("insert message")
        .id;
    transaction.commit().await.expect("commit");
    id
}

/// A session written as an older server did: no index entry.
async fn unindexed_session(db: &DatabaseConnection, user_id: Uuid, title: &str) -> Uuid {
    let id = Uuid::now_v7();
    let now = Utc::now();
    let row = chat_sessions::ActiveModel {
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
        // Not set nor read back: the migration test reverts the migration that adds it.
        current_leaf_id: NotSet,
        project_id: NotSet,
    };
    chat_sessions::Entity::insert(row)
        .exec_without_returning(db)
        .await
        .expect("insert session");
    id
}

/// A message written as an older server did: no index entry.
async fn unindexed_message(
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
        // Not set nor read back: the migration test reverts the migration that adds it.
        error: NotSet,
        created_at: Set(now),
        updated_at: Set(now),
        source: NotSet,
        parent_id: NotSet,
    };
    chat_messages::Entity::insert(row)
        .exec_without_returning(db)
        .await
        .expect("insert message");
    id
}

async fn message(db: &DatabaseConnection, session_id: Uuid, user_id: Uuid, content: &str) -> Uuid {
    message_as(db, session_id, user_id, Role::User, content).await
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
        Role::Assistant,
        "Zebras' stripes may deter biting flies.",
    )
    .await;
    message_as(
        db,
        alices_chat,
        alice,
        Role::Tool,
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
    let reply = message_as(db, chat, alice, Role::Assistant, "").await;
    // As a streaming reply grows.
    for content in ["Kangaroos", "Kangaroos can", "Kangaroos can hop fast"] {
        store::save_progress(db, reply, content)
            .await
            .expect("stream content");
    }
    assert_eq!(ids(db, alice, "hop").await, [reply]);
    // Other columns change without the text.
    let stored = chat_messages::Entity::find_by_id(reply)
        .one(db)
        .await
        .expect("read reply")
        .expect("reply exists");
    store::set_liked(db, stored, true)
        .await
        .expect("like reply");
    assert_eq!(ids(db, alice, "kangaroos hop").await, [reply]);
    // The same text written again, as the reply ends.
    finish(db, reply, "Kangaroos can hop fast").await;
    assert_eq!(ids(db, alice, "kangaroos").await, [reply]);

    finish(db, reply, "Wombats dig burrows").await;
    assert!(ids(db, alice, "kangaroos").await.is_empty());
    assert_eq!(ids(db, alice, "wombat").await, [reply]);
    // A text with no words leaves nothing behind.
    finish(db, reply, "🎉").await;
    assert!(ids(db, alice, "wombat").await.is_empty());
    finish(db, reply, "Wombats dig burrows").await;

    store::set_title(db, chat, "Marsupials")
        .await
        .expect("rename session");
    store::touch_session(db, chat, 1)
        .await
        .expect("touch session");
    assert_eq!(sessions(db, alice, "marsupial").await, [chat]);
    assert!(sessions(db, alice, "draft").await.is_empty());
    let hits = search(db, alice, "wombats").await;
    assert_eq!(
        hits.first().map(|hit| hit.session_title.as_str()),
        Some("Marsupials")
    );
    let renamed = chat_sessions::Entity::find_by_id(chat)
        .one(db)
        .await
        .expect("read session")
        .expect("session exists");
    let changes = SessionChanges {
        title: Some("Antipodes".to_owned()),
        is_pinned: None,
        is_archived: None,
        project_id: None,
    };
    store::update_session(db, renamed, changes)
        .await
        .expect("retitle session");
    assert_eq!(sessions(db, alice, "antipodes").await, [chat]);
    assert!(sessions(db, alice, "marsupial").await.is_empty());
    let pinned = SessionChanges {
        title: None,
        is_pinned: Some(true),
        is_archived: None,
        project_id: None,
    };
    let current = chat_sessions::Entity::find_by_id(chat)
        .one(db)
        .await
        .expect("read session")
        .expect("session exists");
    store::update_session(db, current, pinned)
        .await
        .expect("pin session");
    assert_eq!(sessions(db, alice, "antipodes").await, [chat]);
}

async fn finish(db: &DatabaseConnection, id: Uuid, content: &str) {
    let outcome = Outcome {
        content,
        status: MessageStatus::Complete,
        usage: None,
        tool_calls: &[],
        error: None,
    };
    store::finish_reply(db, id, outcome)
        .await
        .expect("finish reply");
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
    message_as(db, doomed, alice, Role::Tool, "platypus tool output").await;
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
    store::delete_session(db, doomed)
        .await
        .expect("delete session");
    assert_eq!(ids(db, alice, "platypus").await, [stays]);
    assert_eq!(sessions(db, alice, "platypus").await, [kept]);
    // A new message may reuse a freed SQLite rowid; only its own words must match.
    let fresh = message(db, kept, alice, "Echidna facts").await;
    assert_eq!(ids(db, alice, "echidna").await, [fresh]);
    assert!(ids(db, alice, "eggs").await.is_empty());
}

/// Deleting the account deletes its sessions and messages by cascade; their terms go too,
/// and nobody else's.
async fn cascades_remove_hits(test_db: &TestDb) {
    let db = &test_db.db;
    let alice = user(db).await;
    let bob = user(db).await;
    let alices = session(db, alice, "Otters").await;
    message(db, alices, alice, "Otters hold hands while sleeping").await;
    let bobs = session(db, bob, "Otters").await;
    let kept = message(db, bobs, bob, "Sea otters use tools").await;
    users::Entity::delete_by_id(alice)
        .exec(db)
        .await
        .expect("delete account");
    assert!(ids(db, alice, "otters").await.is_empty());
    assert!(sessions(db, alice, "otters").await.is_empty());
    assert_eq!(ids(db, bob, "otters").await, [kept]);
    assert_eq!(sessions(db, bob, "otters").await, [bobs]);
}

/// Someone with no messages pays nothing for everyone else's, and finds nothing of theirs,
/// even for the words everyone else uses.
async fn a_user_without_messages_finds_nothing(test_db: &TestDb) {
    let db = &test_db.db;
    let others = [user(db).await, user(db).await];
    for other in others {
        let chat = session(db, other, "Meeting notes").await;
        filler(db, chat, other).await;
        message(db, chat, other, "Meeting at noon about the meeting").await;
    }
    let newcomer = user(db).await;
    for query in ["meeting", "meet", "m", "the", "noon meeting", "lisbon"] {
        assert!(ids(db, newcomer, query).await.is_empty(), "{query}");
        assert!(sessions(db, newcomer, query).await.is_empty(), "{query}");
    }
    let nobody = Uuid::now_v7();
    assert!(ids(db, nobody, "meeting").await.is_empty());
    assert_eq!(ids(db, others[0], "noon meeting").await.len(), 1);
}

/// How many migrations to revert to undo `name` and every later one.
fn reverted_from(name: &str) -> Option<u32> {
    Migrator::migrations()
        .iter()
        .rev()
        .position(|migration| migration.name() == name)
        .and_then(|later| u32::try_from(later + 1).ok())
}

async fn migration_indexes_existing_rows_and_reverts(test_db: &TestDb) {
    let db = &test_db.db;
    let alice = user(db).await;
    let bob = user(db).await;
    let chat = session(db, alice, "Koalas").await;
    let before = message(db, chat, alice, "Koalas are not bears").await;
    // Back before any search index (this migration, the plain-word one it replaces and every
    // later one).
    Migrator::down(db, reverted_from("m20261122_000004_chat_search"))
        .await
        .expect("revert search");
    assert!(
        search_messages(db, alice, "anything", 10).await.is_err(),
        "search objects removed"
    );
    // Written while no index exists.
    let unindexed = unindexed_session(db, alice, "Marsupial facts").await;
    let earlier =
        unindexed_message(db, unindexed, alice, "user", "Koalas sleep most of the day").await;
    unindexed_message(db, unindexed, alice, "tool", "koalas tool output").await;
    let bobs = unindexed_session(db, bob, "Koalas").await;
    let bobs_koala = unindexed_message(db, bobs, bob, "assistant", "Koalas eat eucalyptus").await;
    Migrator::up(db, None).await.expect("reapply search");
    let mut found = ids(db, alice, "koalas").await;
    found.sort();
    let mut expected = vec![before, earlier];
    expected.sort();
    assert_eq!(found, expected);
    assert_eq!(sessions(db, alice, "marsupial").await, [unindexed]);
    assert_eq!(ids(db, bob, "koala").await, [bobs_koala]);
    assert_eq!(sessions(db, bob, "koala").await, [bobs]);
    // Reverting this migration (and later ones), then reapplying it, reindexes again.
    Migrator::down(db, reverted_from("m20261202_02_search_per_user"))
        .await
        .expect("revert per-user search");
    Migrator::up(db, None)
        .await
        .expect("reapply per-user search");
    let later = message(db, chat, alice, "Koalas have fingerprints").await;
    let mut found = ids(db, alice, "koalas").await;
    found.sort();
    let mut expected = vec![before, earlier, later];
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

/// A message as long as `chat.send` takes, of as many different words as fit: its terms stay
/// within what each backend can index (a PostgreSQL tsvector holds at most 1 MiB).
async fn the_longest_messages_are_indexed(test_db: &TestDb) {
    let db = &test_db.db;
    let alice = user(db).await;
    let chat = session(db, alice, "Characters").await;
    let words: Vec<String> = ('\u{4e00}'..='\u{9fff}')
        .chain('\u{3400}'..='\u{4dbf}')
        .chain('\u{20000}'..='\u{2a6df}')
        .filter(|c| c.is_alphanumeric())
        .take(50_000)
        .map(String::from)
        .collect();
    let text = words.join(" ");
    assert!(text.chars().count() < 100_000);
    let long = message(db, chat, alice, &text).await;
    assert_eq!(ids(db, alice, &words[0]).await, [long]);
    assert_eq!(ids(db, alice, &words[1_000]).await, [long]);
    let hits = search(db, alice, &words[0]).await;
    let snippet = &hits.first().expect("a hit").snippet;
    assert!(
        snippet.starts_with(&format!("**{}**", words[0])),
        "{snippet}"
    );
}
