//! Keeping storage and the `files` table in step: uploads never completed go after a day,
//! and whatever a crash, a deleted chat or a deleted account left behind (objects without
//! rows, rows without objects) is removed. Runs hourly, and once shortly after start-up.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::files;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::store::{self, OBJECT_PREFIX};
use super::types::FileStatus;
use crate::audit::{self, AuditAction};
use crate::context::App;

/// Uploads still pending after this are abandoned.
const PENDING_LIFETIME: chrono::Duration = chrono::Duration::hours(24);
/// An object younger than this may belong to a row being written: left alone.
const OBJECT_GRACE: chrono::Duration = chrono::Duration::hours(1);
const INTERVAL: Duration = Duration::from_secs(3600);
const FIRST_RUN: Duration = Duration::from_secs(60);
/// Ids per `IN (…)` query.
const CHUNK: usize = 500;

/// What one sweep removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub abandoned_uploads: usize,
    pub orphaned_objects: usize,
    pub missing_objects: usize,
}

/// Sweeps until `shutdown`.
pub async fn run_periodically(state: App, shutdown: CancellationToken) {
    crate::periodic::every("file sweep", FIRST_RUN, INTERVAL, shutdown, || {
        sweep(&state, Utc::now())
    })
    .await;
}

/// `files/<user id>/<file id>` or `…/<file id>.thumb` → the file id.
fn file_id_of(key: &str) -> Option<Uuid> {
    let name = key.rsplit('/').next()?;
    name.strip_suffix(".thumb").unwrap_or(name).parse().ok()
}

/// One sweep, as of `now`.
pub async fn sweep(state: &App, now: DateTime<Utc>) -> anyhow::Result<Swept> {
    let db = &state.db;
    let storage = &state.storage;
    let mut swept = Swept::default();

    let abandoned = files::Entity::find()
        .filter(files::Column::Status.eq(FileStatus::Pending.as_str()))
        .filter(files::Column::CreatedAt.lt(now - PENDING_LIFETIME))
        .all(db)
        .await?;
    for row in abandoned {
        store::delete(db, row.id).await?;
        storage.delete(&row.object_key).await?;
        audit_removal(db, &row, "upload_abandoned").await;
        swept.abandoned_uploads += 1;
    }

    let listed_at = Utc::now();
    let objects = storage.list(OBJECT_PREFIX).await?;
    let mut by_file: HashMap<Uuid, Vec<(String, DateTime<Utc>)>> = HashMap::new();
    for object in objects {
        if let Some(id) = file_id_of(&object.key) {
            by_file
                .entry(id)
                .or_default()
                .push((object.key, object.last_modified));
        }
    }
    let ids: Vec<Uuid> = by_file.keys().copied().collect();
    let mut known = HashSet::new();
    for chunk in ids.chunks(CHUNK) {
        let rows = files::Entity::find()
            .filter(files::Column::Id.is_in(chunk.iter().copied()))
            .all(db)
            .await?;
        known.extend(rows.into_iter().map(|row| row.id));
    }
    for (id, objects) in &by_file {
        if known.contains(id) {
            continue;
        }
        for (key, modified) in objects {
            if *modified < now - OBJECT_GRACE {
                storage.delete(key).await?;
                swept.orphaned_objects += 1;
            }
        }
    }

    // Ready files whose bytes are gone (lost outside this server): their rows go too.
    let ready = files::Entity::find()
        .filter(files::Column::Status.eq(FileStatus::Ready.as_str()))
        .filter(files::Column::CompletedAt.lt(listed_at))
        .all(db)
        .await?;
    for row in ready {
        let stored = by_file
            .get(&row.id)
            .is_some_and(|objects| objects.iter().any(|(key, _)| *key == row.object_key));
        if !stored {
            store::clear_avatar(db, row.user_id, row.id).await?;
            store::delete(db, row.id).await?;
            if let Some(thumbnail) = &row.thumbnail_key {
                storage.delete(thumbnail).await?;
            }
            audit_removal(db, &row, "object_missing").await;
            swept.missing_objects += 1;
        }
    }
    Ok(swept)
}

/// A file the sweep removed is in its owner's audit log like one they deleted, with why.
/// (Objects without rows belong to no file any more: only the log line counts them.)
async fn audit_removal(db: &sea_orm::DatabaseConnection, row: &files::Model, why: &str) {
    audit::record_by_server(
        db,
        row.user_id,
        AuditAction::FileDeleted,
        serde_json::json!({ "fileId": row.id, "purpose": row.purpose, "removedBy": "sweep", "reason": why }),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_name_their_file() {
        let user = Uuid::now_v7();
        let file = Uuid::now_v7();
        assert_eq!(file_id_of(&store::object_key(user, file)), Some(file));
        assert_eq!(file_id_of(&store::thumbnail_key(user, file)), Some(file));
        assert_eq!(file_id_of("files/x/readme"), None);
    }
}
