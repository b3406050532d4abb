//! `alias-server backup PATH` and `alias-server restore PATH` for the SQLite database.
//!
//! A backup is SQLite's `VACUUM INTO`: one read transaction, so a consistent snapshot of the
//! committed data however many writes the running server makes meanwhile, written to a new
//! private file. A restore checks the backup (integrity, and a schema this binary knows: never
//! a newer one), refuses while a server serves the database (each holds a shared lock on
//! `<database>.lock` while it runs), sets the current database aside and puts the copy in its
//! place; the next start migrates it up if it is older.
//!
//! PostgreSQL is backed up with `pg_dump`/`pg_restore` (see the README). The keys in the data
//! directory are not part of a database backup, on purpose: see the README.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use migration::{Migrator, MigratorTrait as _};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sea_orm::sqlx::{self};

use crate::config::Config;
use crate::db;
use crate::secret_file;

/// What a backup or a restore did, for the operator.
#[derive(Debug)]
pub struct Report {
    pub path: PathBuf,
    pub bytes: u64,
    /// The newest migration the copy has.
    pub schema: String,
    /// Where a restore set the database it replaced aside.
    pub replaced: Option<PathBuf>,
}

/// Copies the configured SQLite database to `destination`, a new file (an existing one is
/// never overwritten), while the server may be serving.
pub async fn backup(config: &Config, destination: &Path) -> anyhow::Result<Report> {
    let source = sqlite_file(config)?;
    if !source.exists() {
        bail!("there is no database at {}", source.display());
    }
    secret_file::write_new(destination, b"")
        .with_context(|| format!("{} must be a new file", destination.display()))?;
    let copied = copy_into(&source, destination).await;
    if copied.is_err() {
        // A half-written backup must not be mistaken for one.
        let _ = std::fs::remove_file(destination);
    }
    copied?;
    let schema = check_backup(destination).await?;
    Ok(Report {
        path: destination.to_path_buf(),
        bytes: std::fs::metadata(destination)?.len(),
        schema,
        replaced: None,
    })
}

async fn copy_into(source: &Path, destination: &Path) -> anyhow::Result<()> {
    let pool = open(source, true).await?;
    let destination = destination.to_string_lossy().into_owned();
    sqlx::query("VACUUM INTO ?")
        .bind(destination)
        .execute(&pool)
        .await
        .context("could not copy the database")?;
    pool.close().await;
    Ok(())
}

/// Puts the backup at `source` in place of the configured SQLite database.
pub async fn restore(config: &Config, source: &Path) -> anyhow::Result<Report> {
    let target = sqlite_file(config)?;
    if !source.is_file() {
        bail!("there is no backup at {}", source.display());
    }
    let schema = check_backup(source).await?;
    if let Some(dir) = target.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        secret_file::create_private_dir(dir)?;
    }
    // Held until the restore is done: a server starting meanwhile waits for nothing, it fails.
    let _lock = lock_exclusive(&target)?;
    let staged = companion(&target, ".restoring");
    let _ = std::fs::remove_file(&staged);
    secret_file::write_new(&staged, b"")?;
    copy_into(source, &staged).await?;
    let replaced = set_aside(&target).await?;
    std::fs::rename(&staged, &target)
        .with_context(|| format!("could not move the backup to {}", target.display()))?;
    Ok(Report {
        bytes: std::fs::metadata(&target)?.len(),
        path: target,
        schema,
        replaced,
    })
}

/// A SQLite backup that is whole and whose schema this binary knows; answers its newest
/// migration.
async fn check_backup(path: &Path) -> anyhow::Result<String> {
    let pool = open(path, true).await?;
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .with_context(|| format!("{} is not a SQLite database", path.display()))?;
    if integrity != "ok" {
        bail!("{} is damaged: {integrity}", path.display());
    }
    let applied: Vec<String> =
        sqlx::query_scalar("SELECT version FROM seaql_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .with_context(|| format!("{} is not an ALIAS database", path.display()))?;
    pool.close().await;
    let known: Vec<String> = Migrator::migrations()
        .iter()
        .map(|migration| migration.name().to_owned())
        .collect();
    if let Some(unknown) = applied.iter().find(|version| !known.contains(version)) {
        bail!(
            "{} has a newer schema than this alias-server (migration {unknown} is unknown to it): restore it with the version that wrote it",
            path.display()
        );
    }
    applied
        .last()
        .cloned()
        .with_context(|| format!("{} has no schema", path.display()))
}

/// Flushes the current database's write-ahead log into it and moves it (with what is left of
/// its companions) to `<database>.replaced-<time>`; `None` when there was none.
async fn set_aside(target: &Path) -> anyhow::Result<Option<PathBuf>> {
    if !target.exists() {
        remove_companions(target)?;
        return Ok(None);
    }
    let pool = open(target, false).await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .context("could not flush the current database")?;
    pool.close().await;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let aside = companion(target, &format!(".replaced-{stamp}"));
    std::fs::rename(target, &aside)
        .with_context(|| format!("could not move {} aside", target.display()))?;
    remove_companions(target)?;
    Ok(Some(aside))
}

/// A stale `-wal` next to the restored file would be replayed into it: they go.
fn remove_companions(target: &Path) -> anyhow::Result<()> {
    for suffix in ["-wal", "-shm"] {
        let path = companion(target, suffix);
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(error).with_context(|| format!("could not remove {}", path.display()));
            }
            _ => {}
        }
    }
    Ok(())
}

async fn open(path: &Path, read_only: bool) -> anyhow::Result<SqlitePool> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(read_only)
        .busy_timeout(Duration::from_secs(10));
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .with_context(|| format!("could not open {}", path.display()))
}

fn sqlite_file(config: &Config) -> anyhow::Result<PathBuf> {
    db::sqlite_path(&config.database_url).context(
        "backup and restore are for the SQLite database; for PostgreSQL use pg_dump and pg_restore (see the README)",
    )
}

fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The lock a serving process holds shared on its SQLite database (`<database>.lock`), so a
/// restore (which takes it exclusively) cannot swap the file under it. Not the database file
/// itself: closing any handle on that file would drop SQLite's own locks.
pub struct ServingLock {
    _file: File,
}

/// Taken by the server for as long as it serves a SQLite database; `None` for PostgreSQL.
pub fn lock_serving(database_url: &str) -> anyhow::Result<Option<ServingLock>> {
    let Some(database) = db::sqlite_path(database_url) else {
        return Ok(None);
    };
    let file = lock_file(&database)?;
    file.try_lock_shared().map_err(|_| {
        anyhow::anyhow!(
            "{} is being restored (alias-server restore); start the server when it is done",
            database.display()
        )
    })?;
    Ok(Some(ServingLock { _file: file }))
}

fn lock_exclusive(database: &Path) -> anyhow::Result<File> {
    let file = lock_file(database)?;
    file.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "{} is in use by a running alias-server: stop it before restoring",
            database.display()
        )
    })?;
    Ok(file)
}

fn lock_file(database: &Path) -> anyhow::Result<File> {
    let path = companion(database, ".lock");
    secret_file::create_private_file(&path)?;
    File::open(&path).with_context(|| format!("could not open {}", path.display()))
}
