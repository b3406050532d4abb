//! The database connection: SQLite by default, PostgreSQL when `DATABASE_URL` says so. The
//! same SeaORM code serves both.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteError, SqliteJournalMode, SqliteSynchronous};
use sea_orm::sqlx::{self, postgres::PgDatabaseError};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, RuntimeErr, SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};
use serde::Serialize;

use crate::config::Config;
use crate::reason::Reason;
use crate::rpc::{ErrorCode, RpcError};
use crate::secret_file;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, specta::Type)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(db: &DatabaseConnection) -> Self {
        match db.get_database_backend() {
            DbBackend::Postgres => Self::Postgres,
            _ => Self::Sqlite,
        }
    }
}

/// How long a SQLite writer waits for the write lock before failing with SQLITE_BUSY.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a call waits for a pooled connection unless configured.
const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects as configured (`DATABASE_URL`, `ALIAS_DB_*`) and brings the schema up to date.
pub async fn open(config: &Config) -> anyhow::Result<DatabaseConnection> {
    connect(
        &config.database_url,
        config.db_max_connections,
        config.db_acquire_timeout,
    )
    .await
}

/// Connects with `max_connections` and brings the schema up to date.
pub async fn connect_and_migrate(
    url: &str,
    max_connections: u32,
) -> anyhow::Result<DatabaseConnection> {
    connect(url, max_connections, DEFAULT_ACQUIRE_TIMEOUT).await
}

/// A SQLite file and its folder are created private (0600, 0700), and looser modes of
/// existing files are tightened.
async fn connect(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> anyhow::Result<DatabaseConnection> {
    let path = sqlite_path(url);
    if let Some(path) = &path {
        prepare_sqlite_files(path)?;
    }
    let mut options = ConnectOptions::new(url);
    options
        // SeaORM would give SQLite a single connection; WAL serves many readers beside the
        // one writer, and busy_timeout queues writers.
        .max_connections(max_connections)
        .connect_timeout(Duration::from_secs(10))
        // A call waiting longer for a connection is told to retry (`database_busy`).
        .acquire_timeout(acquire_timeout)
        .sqlx_logging(false)
        // WAL lets readers work while a write commits; waiting on a lock beats failing at once.
        .map_sqlx_sqlite_opts(|sqlite| {
            sqlite
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true)
        })
        .map_sqlx_sqlite_pool_opts(move |pool| match path.clone() {
            Some(path) => pool.after_connect(move |_, _| {
                let checked = refuse_read_only(&path);
                Box::pin(async move { checked })
            }),
            None => pool,
        });
    let db = Database::connect(options)
        .await
        .context("could not connect to the database (check DATABASE_URL)")?;
    Migrator::up(&db, None)
        .await
        .context("could not run the database migrations")?;
    Ok(db)
}

/// Begins a transaction that will write. On SQLite it takes the write lock at `BEGIN`
/// (IMMEDIATE), waiting on the busy timeout; a deferred transaction that reads first fails at
/// once with SQLITE_BUSY when another connection wrote meanwhile. PostgreSQL ignores the mode.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let options = TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    };
    db.begin_with_options(options).await
}

/// The file of a `sqlite://` URL; `None` for PostgreSQL and in-memory databases.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let in_memory = path.is_empty() || path == ":memory:" || query.contains("mode=memory");
    (!in_memory).then(|| PathBuf::from(path))
}

/// SQLite gives new files the process's default mode (0644: readable by every local user)
/// and its `-wal` and `-shm` files the database file's mode. So the file is created 0600
/// before SQLite opens it, and existing files are tightened (by path: an existing database
/// is never opened here, since another server in this process may be using it and closing
/// a handle on it would release SQLite's locks).
fn prepare_sqlite_files(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        secret_file::create_private_dir(dir)?;
    }
    if !path.exists() {
        secret_file::create_private_file(path)?;
    }
    for file in companions(path) {
        secret_file::tighten(&file)?;
    }
    Ok(())
}

/// SQLite opens a file it cannot write read-only, without a word, and such a connection stays
/// read-only for life: every write through it fails long after the file is writable again.
/// So a new connection is kept only if its files are writable right after SQLite opened them
/// (else the pool retries until its acquire timeout and the caller is told to retry): the
/// pool holds connections that can write, and recovers by itself.
fn refuse_read_only(path: &Path) -> Result<(), sqlx::Error> {
    check_files_writable(path).map_err(|problem| {
        sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            problem,
        ))
    })
}

/// Whether this process can open the database file and its `-wal` and `-shm` companions
/// (when present) for writing.
fn check_files_writable(path: &Path) -> Result<(), String> {
    for file in companions(path) {
        match writable(&file) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && file != path => {}
            Err(error) => return Err(format!("{} cannot be written: {error}", file.display())),
        }
    }
    Ok(())
}

/// Asks the kernel (access(2): modes, read-only mounts, immutable files) rather than opening
/// the file: closing any handle this process holds on a SQLite file releases every POSIX lock
/// SQLite holds on it here, and another process opening the database (a backup, a second
/// instance) would then take itself for the only one and reset the shared-memory file under
/// this one (which dies of SIGBUS).
#[cfg(unix)]
fn writable(file: &Path) -> std::io::Result<()> {
    rustix::fs::access(file, rustix::fs::Access::WRITE_OK).map_err(std::io::Error::from)
}

#[cfg(not(unix))]
fn writable(file: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new().write(true).open(file).map(drop)
}

/// The database file, then its `-wal` and `-shm` files.
fn companions(path: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [path.to_owned(), with("-wal"), with("-shm")]
}

/// Whether the database can take writes now, for the readiness probe: `Err` says why not.
/// SQLite: the file and its folder are writable by their mode (a read-only mode is a
/// deliberate "no writes", even for a root process that could ignore it) and the files can
/// be opened for writing. PostgreSQL: the session is not read-only (as on a standby).
pub async fn check_writable(db: &DatabaseConnection, url: &str) -> Result<(), String> {
    if let Some(path) = sqlite_path(url) {
        check_modes(&path)?;
        return check_files_writable(&path);
    }
    let statement = Statement::from_string(db.get_database_backend(), "SHOW transaction_read_only");
    let row = db
        .query_one_raw(statement)
        .await
        .map_err(|e| e.to_string())?;
    let read_only: Option<String> = row
        .map(|row| row.try_get_by_index(0))
        .transpose()
        .map_err(|e| e.to_string())?;
    match read_only.as_deref() {
        Some("off") => Ok(()),
        _ => Err("the PostgreSQL session is read-only".to_owned()),
    }
}

#[cfg(unix)]
fn check_modes(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty());
    for item in dir.into_iter().chain([path]) {
        let mode = std::fs::metadata(item)
            .map_err(|error| format!("{}: {error}", item.display()))?
            .permissions()
            .mode();
        if mode & 0o200 == 0 {
            return Err(format!(
                "{} is read-only (mode {:o})",
                item.display(),
                mode & 0o777
            ));
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_modes(_: &Path) -> Result<(), String> {
    Ok(())
}

/// A database failure that passes by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transient {
    /// Every connection in use, or the data locked: retry in a moment.
    Busy,
    /// The database unreachable or unable to write: retry a little later.
    Unavailable,
}

impl Transient {
    fn into_error(self) -> RpcError {
        let (reason, message, retry_after) = match self {
            Self::Busy => (
                Reason::DatabaseBusy,
                "The service is busy. Please try again in a moment.",
                1,
            ),
            Self::Unavailable => (
                Reason::DatabaseUnavailable,
                "The service cannot save right now. Please try again shortly.",
                5,
            ),
        };
        RpcError::new(ErrorCode::ServiceUnavailable, message)
            .with_reason(reason)
            .with_retry_after(retry_after)
    }
}

/// For `rpc::recognise_transient`: a database failure that passes by itself, as the
/// SERVICE_UNAVAILABLE error the client retries, never a 500.
pub fn transient_error(error: &dyn Any) -> Option<RpcError> {
    let db_error = error.downcast_ref::<DbErr>().or_else(|| {
        error
            .downcast_ref::<anyhow::Error>()
            .and_then(anyhow::Error::downcast_ref)
    })?;
    if waited_for_a_connection(db_error) {
        metrics::counter!("alias_db_pool_acquire_timeouts_total").increment(1);
    }
    transient(db_error).map(Transient::into_error)
}

fn waited_for_a_connection(error: &DbErr) -> bool {
    match error {
        DbErr::ConnectionAcquire(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(error)) | DbErr::Query(RuntimeErr::SqlxError(error)) => {
            matches!(**error, sqlx::Error::PoolTimedOut)
        }
        _ => false,
    }
}

pub fn describe_metrics() {
    metrics::describe_gauge!(
        "alias_db_pool_connections",
        "Database connections open in the pool, by state (in_use, idle)."
    );
    metrics::describe_gauge!(
        "alias_db_pool_max_connections",
        "Most connections the pool opens (ALIAS_DB_MAX_CONNECTIONS)."
    );
    metrics::describe_counter!(
        "alias_db_pool_acquire_timeouts_total",
        "Calls that waited ALIAS_DB_ACQUIRE_TIMEOUT_SECONDS for a connection and were told to retry."
    );
}

/// The pool's connections in use and idle, read at each scrape.
pub async fn record_pool_metrics(db: DatabaseConnection) {
    let (size, idle, max) = match Backend::of(&db) {
        Backend::Sqlite => {
            let pool = db.get_sqlite_connection_pool();
            (
                pool.size(),
                pool.num_idle(),
                pool.options().get_max_connections(),
            )
        }
        Backend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            (
                pool.size(),
                pool.num_idle(),
                pool.options().get_max_connections(),
            )
        }
    };
    let idle = u32::try_from(idle).unwrap_or(u32::MAX);
    metrics::gauge!("alias_db_pool_connections", "state" => "in_use")
        .set(f64::from(size.saturating_sub(idle)));
    metrics::gauge!("alias_db_pool_connections", "state" => "idle").set(f64::from(idle));
    metrics::gauge!("alias_db_pool_max_connections").set(f64::from(max));
}

pub fn transient(error: &DbErr) -> Option<Transient> {
    match error {
        DbErr::ConnectionAcquire(_) => Some(Transient::Busy),
        DbErr::Conn(_) => Some(Transient::Unavailable),
        DbErr::Exec(RuntimeErr::SqlxError(error)) | DbErr::Query(RuntimeErr::SqlxError(error)) => {
            transient_sqlx(error)
        }
        _ => None,
    }
}

const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_READONLY: i32 = 8;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;

fn transient_sqlx(error: &sqlx::Error) -> Option<Transient> {
    match error {
        sqlx::Error::PoolTimedOut => Some(Transient::Busy),
        sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => Some(Transient::Unavailable),
        sqlx::Error::Database(database) => {
            if let Some(code) = sqlite_code(error) {
                return match code & 0xff {
                    SQLITE_BUSY | SQLITE_LOCKED => Some(Transient::Busy),
                    SQLITE_READONLY | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN => {
                        Some(Transient::Unavailable)
                    }
                    _ => None,
                };
            }
            let sqlstate = database.try_downcast_ref::<PgDatabaseError>()?.code();
            transient_sqlstate(sqlstate)
        }
        _ => None,
    }
}

/// PostgreSQL's codes for conditions that pass: serialization failures, deadlocks, lock and
/// statement timeouts (busy); lost connections, exhausted resources, shutdowns, a read-only
/// standby (unavailable).
fn transient_sqlstate(sqlstate: &str) -> Option<Transient> {
    match sqlstate {
        "40001" | "40P01" | "55P03" | "57014" => Some(Transient::Busy),
        "25006" | "57P01" | "57P02" | "57P03" | "58030" => Some(Transient::Unavailable),
        _ if sqlstate.starts_with("08") || sqlstate.starts_with("53") => {
            Some(Transient::Unavailable)
        }
        _ => None,
    }
}

/// The SQLite extended result code of a database error.
fn sqlite_code(error: &sqlx::Error) -> Option<i32> {
    let sqlx::Error::Database(database) = error else {
        return None;
    };
    database.try_downcast_ref::<SqliteError>()?;
    database.code()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_come_from_file_urls_only() {
        assert_eq!(
            sqlite_path("sqlite://data/alias.db?mode=rwc"),
            Some(PathBuf::from("data/alias.db"))
        );
        assert_eq!(
            sqlite_path("sqlite:///var/lib/alias/alias.db"),
            Some(PathBuf::from("/var/lib/alias/alias.db"))
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("sqlite://x.db?mode=memory"), None);
        assert_eq!(sqlite_path("postgres://localhost/alias"), None);
    }

    #[test]
    fn pool_and_connection_failures_are_transient() {
        use sea_orm::ConnAcquireErr;
        assert_eq!(
            transient(&DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)),
            Some(Transient::Busy)
        );
        assert_eq!(
            transient(&DbErr::RecordNotFound("x".to_owned())),
            None,
            "a bug stays a bug"
        );
        assert_eq!(transient_sqlstate("40001"), Some(Transient::Busy));
        assert_eq!(transient_sqlstate("08006"), Some(Transient::Unavailable));
        assert_eq!(
            transient_sqlstate("23505"),
            None,
            "a unique violation is not"
        );
    }
}
