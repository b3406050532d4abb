//! Chat search latency when other users hold a lot of data (issue 9): 1,000,000 messages
//! spread over 1,000 other users, plus one user with 1,000 messages, searched through the
//! server's own search functions; p50/p99 per database. Target: p99 <= 20 ms. A report, not a
//! test: it always exits 0 once the databases are seeded.
//!
//!   cargo run --release --example search_bench [-- sqlite|postgres]
//!
//!   BENCH_OTHER_USERS=1000         users besides the one measured
//!   BENCH_MESSAGES_PER_USER=1000   messages of each user (the measured one included)
//!   BENCH_SEARCHES=60              timed runs of each query
//!   BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres
//!                                  an admin connection: a fresh database is created under
//!                                  it and dropped at the end
//!
//! Seeding writes the rows and their index terms in bulk (multi-row inserts; on PostgreSQL the
//! GIN index is built after the load, as a restore would), with the same terms the server
//! writes (`search_terms::Document`). Searches then run as `chat.search` (20 hits with
//! snippets) and `chat.sessions.list`'s `search` (up to 500 sessions) run them.

use std::time::{Duration, Instant};

use alias_server::chat::search::{matching_session_ids, search_messages};
use chrono::Utc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, Value};
use search_terms::Document;
use uuid::Uuid;

const SESSIONS_PER_USER: usize = 10;
const VOCABULARY: usize = 20_000;
const ROWS_PER_INSERT: usize = 500;
const HITS: u64 = 20;
const SESSIONS: u64 = 500;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let only = std::env::args().nth(1);
    let settings = Settings {
        other_users: env_number("BENCH_OTHER_USERS", 1_000),
        messages_per_user: env_number("BENCH_MESSAGES_PER_USER", 1_000),
        searches: env_number("BENCH_SEARCHES", 60),
    };
    if only.as_deref().is_none_or(|name| name == "sqlite") {
        let dir = tempfile::tempdir()?;
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        );
        let db = alias_server::db::connect_and_migrate(&url, 4).await?;
        run("SQLite", &db, &settings).await?;
    }
    if only.as_deref().is_none_or(|name| name == "postgres") {
        let admin_url = std::env::var("BENCH_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let name = format!("alias_bench_{}", Uuid::new_v4().simple());
        let admin = Database::connect(&admin_url).await?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await?;
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(b, _)| b);
        let result = async {
            let db = alias_server::db::connect_and_migrate(&format!("{base}/{name}"), 4).await?;
            run("PostgreSQL", &db, &settings).await?;
            db.close().await?;
            anyhow::Ok(())
        }
        .await;
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await?;
        result?;
    }
    Ok(())
}

struct Settings {
    other_users: usize,
    messages_per_user: usize,
    searches: usize,
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

async fn run(label: &str, db: &DatabaseConnection, settings: &Settings) -> anyhow::Result<()> {
    let words = vocabulary();
    let mut rng = StdRng::seed_from_u64(9);
    let started = Instant::now();
    let backend = db.get_database_backend();
    if backend == DbBackend::Postgres {
        db.execute_unprepared("DROP INDEX idx_chat_messages_search_terms")
            .await?;
    }
    let measured = Uuid::now_v7();
    let newcomer = Uuid::now_v7();
    let mut users = vec![measured, newcomer];
    users.extend((0..settings.other_users).map(|_| Uuid::now_v7()));
    insert_users(db, &users).await?;
    for (i, &user) in users.iter().enumerate() {
        if user == newcomer {
            continue;
        }
        seed_user(db, user, settings.messages_per_user, &words, &mut rng).await?;
        if i % 100 == 0 {
            eprint!("\r{label}: seeded {i} of {} users", users.len());
        }
    }
    if backend == DbBackend::Postgres {
        db.execute_unprepared(
            "CREATE INDEX idx_chat_messages_search_terms ON chat_messages \
             USING GIN (search_terms) WITH (fastupdate = off)",
        )
        .await?;
        db.execute_unprepared("VACUUM ANALYZE").await?;
    } else {
        db.execute_unprepared("ANALYZE").await?;
    }
    let total = (settings.other_users + 1) * settings.messages_per_user;
    eprintln!(
        "\r{label}: seeded {total} messages of {} users in {:.0} s",
        users.len() - 1,
        started.elapsed().as_secs_f64()
    );

    // By how common the word is: the most common ones are in most of the user's messages.
    let queries = [
        words[0].clone(),
        words[3].clone(),
        words[50].clone(),
        words[1_000].clone(),
        words[15_000].clone(),
        words[7][..2].to_owned(),
        format!("{} {}", words[1], words[20]),
        "zzzqx".to_owned(),
    ];
    let mut search_times = Vec::new();
    let mut session_times = Vec::new();
    let mut newcomer_times = Vec::new();
    let mut found = Vec::new();
    for query in &queries {
        let hits = search_messages(db, measured, query, HITS).await?.len();
        let sessions = matching_session_ids(db, measured, query, SESSIONS)
            .await?
            .len();
        found.push(format!("{query:?}: {hits} hits, {sessions} sessions"));
        for _ in 0..settings.searches {
            search_times.push(time(search_messages(db, measured, query, HITS)).await?);
            session_times.push(time(matching_session_ids(db, measured, query, SESSIONS)).await?);
            newcomer_times.push(time(search_messages(db, newcomer, query, HITS)).await?);
        }
    }
    println!(
        "\n== {label}: {total} messages over {} users ==",
        users.len() - 1
    );
    println!("queries: {}", found.join("; "));
    report("chat.search (20 hits, snippets)", &mut search_times);
    report("sessions.list search (500 sessions)", &mut session_times);
    report(
        "chat.search by a user with no messages",
        &mut newcomer_times,
    );
    Ok(())
}

async fn time<T>(
    search: impl std::future::Future<Output = Result<T, sea_orm::DbErr>>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    search.await?;
    Ok(started.elapsed())
}

fn report(name: &str, times: &mut [Duration]) {
    times.sort();
    let at = |q: f64| {
        let index = ((times.len() as f64 - 1.0) * q).round() as usize;
        times.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{name:<42} n={:<5} p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms  => {}",
        times.len(),
        at(0.5),
        at(0.99),
        at(1.0),
        if at(0.99) <= 20.0 { "PASS" } else { "FAIL" },
    );
}

/// Pronounceable made-up words, the most common first.
fn vocabulary() -> Vec<String> {
    const SYLLABLES: [&str; 24] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qui", "do", "fe", "gu", "ha",
        "ji", "bo", "ce", "wa", "xo", "ly", "mo", "nu", "ri",
    ];
    let mut rng = StdRng::seed_from_u64(1);
    let mut seen = std::collections::HashSet::new();
    let mut words = Vec::with_capacity(VOCABULARY);
    while words.len() < VOCABULARY {
        let length = rng.gen_range(2..=4);
        let word: String = (0..length)
            .map(|_| SYLLABLES[rng.gen_range(0..SYLLABLES.len())])
            .collect();
        if seen.insert(word.clone()) {
            words.push(word);
        }
    }
    words
}

/// A word by Zipf-like frequency: rank r is about 1/r as likely as the first.
fn pick<'a>(words: &'a [String], rng: &mut StdRng) -> &'a str {
    let rank = (words.len() as f64).powf(rng.r#gen::<f64>()) as usize;
    &words[rank.saturating_sub(1).min(words.len() - 1)]
}

async fn insert_users(db: &DatabaseConnection, users: &[Uuid]) -> anyhow::Result<()> {
    let now = Utc::now();
    for chunk in users.chunks(ROWS_PER_INSERT) {
        let rows = chunk
            .iter()
            .map(|&id| {
                vec![
                    Value::from(id),
                    Value::from(format!("{}@example.com", id.simple())),
                    Value::from("Bench"),
                    Value::from(now),
                    Value::from(now),
                ]
            })
            .collect();
        insert(
            db,
            "users(id, email, name, created_at, updated_at)",
            rows,
            false,
        )
        .await?;
    }
    Ok(())
}

async fn seed_user(
    db: &DatabaseConnection,
    user: Uuid,
    messages: usize,
    words: &[String],
    rng: &mut StdRng,
) -> anyhow::Result<()> {
    let now = Utc::now();
    let owner = user.as_u128();
    let transaction = alias_server::db::begin_write(db).await?;
    let sessions: Vec<Uuid> = (0..SESSIONS_PER_USER).map(|_| Uuid::now_v7()).collect();
    let session_rows = sessions
        .iter()
        .map(|&id| {
            let title = format!("{} {}", pick(words, rng), pick(words, rng));
            let terms = terms_value(db, &Document::new(owner, &title));
            vec![
                Value::from(id),
                Value::from(user),
                Value::from(title),
                Value::from(false),
                Value::from(false),
                Value::from(0),
                Value::from(now),
                Value::from(now),
                Value::from(now),
                terms,
            ]
        })
        .collect();
    insert_with_terms(
        &transaction,
        "chat_sessions(id, user_id, title, is_pinned, is_archived, message_count, \
         created_at, updated_at, last_message_at, search_terms)",
        session_rows,
        "chat_sessions",
    )
    .await?;
    for start in (0..messages).step_by(ROWS_PER_INSERT) {
        let rows = (start..messages.min(start + ROWS_PER_INSERT))
            .map(|i| {
                let length = rng.gen_range(5..=40);
                let content = (0..length)
                    .map(|_| pick(words, rng))
                    .collect::<Vec<_>>()
                    .join(" ");
                let terms = terms_value(db, &Document::new(owner, &content));
                let role = if i % 2 == 0 { "user" } else { "assistant" };
                vec![
                    Value::from(Uuid::now_v7()),
                    Value::from(sessions[i % SESSIONS_PER_USER]),
                    Value::from(user),
                    Value::from(role),
                    Value::from(content),
                    Value::from("complete"),
                    Value::from(false),
                    Value::from(now),
                    Value::from(now),
                    terms,
                ]
            })
            .collect();
        insert_with_terms(
            &transaction,
            "chat_messages(id, session_id, user_id, role, content, status, is_liked, \
             created_at, updated_at, search_terms)",
            rows,
            "chat_messages",
        )
        .await?;
    }
    transaction.commit().await?;
    Ok(())
}

/// The index terms as the server writes them: FTS5 text on SQLite, a tsvector on PostgreSQL.
fn terms_value(db: &DatabaseConnection, document: &Document) -> Value {
    Value::from(match db.get_database_backend() {
        DbBackend::Sqlite => document.fts5_text(),
        _ => document.tsvector(),
    })
}

/// Multi-row INSERT of `rows` into `table(columns)`. `tsvector_last`: the last column is a
/// tsvector literal (PostgreSQL).
async fn insert(
    db: &impl ConnectionTrait,
    target: &str,
    rows: Vec<Vec<Value>>,
    tsvector_last: bool,
) -> anyhow::Result<()> {
    let backend = db.get_database_backend();
    let mut values = Vec::new();
    let mut tuples = Vec::new();
    for row in rows {
        let width = row.len();
        let placeholders: Vec<String> = (0..width)
            .map(|column| {
                let n = values.len() + column + 1;
                let mark = match backend {
                    DbBackend::Sqlite => "?".to_owned(),
                    _ => format!("${n}"),
                };
                if tsvector_last && column + 1 == width {
                    format!("{mark}::tsvector")
                } else {
                    mark
                }
            })
            .collect();
        tuples.push(format!("({})", placeholders.join(", ")));
        values.extend(row);
    }
    let sql = format!("INSERT INTO {target} VALUES {}", tuples.join(", "));
    db.execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    Ok(())
}

/// Inserts rows whose last value is their index terms the way each backend keeps them: on
/// PostgreSQL in the row's `search_terms`, on SQLite in the table's FTS5 index by rowid.
async fn insert_with_terms(
    db: &impl ConnectionTrait,
    target: &str,
    rows: Vec<Vec<Value>>,
    table: &str,
) -> anyhow::Result<()> {
    if db.get_database_backend() != DbBackend::Sqlite {
        return insert(db, target, rows, true).await;
    }
    let target = target.replace(", search_terms)", ")");
    let mut plain = Vec::new();
    let mut terms = Vec::new();
    for mut row in rows {
        let last = row.pop().unwrap_or_else(|| Value::from(""));
        terms.push(row[0].clone());
        terms.push(last);
        plain.push(row);
    }
    insert(db, &target, plain, false).await?;
    let pairs = vec!["(?, ?)"; terms.len() / 2].join(", ");
    let sql = format!(
        "INSERT INTO {table}_search(rowid, terms) \
         SELECT t.rowid, v.column2 FROM (VALUES {pairs}) v JOIN {table} t ON t.id = v.column1"
    );
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Sqlite,
        sql,
        terms,
    ))
    .await?;
    Ok(())
}
