//! The `files` table: rows are created before bytes are stored (a pending row reserves quota),
//! and read only by their owner.

use chrono::Utc;
use entity::{chat_sessions, files, users};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, FromQueryResult,
    IntoActiveModel, QueryFilter, QuerySelect, Set,
};
use uuid::Uuid;

use super::types::{FilePurpose, FileStatus};

/// A row about to be created.
pub struct NewRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub session_id: Option<Uuid>,
    pub purpose: FilePurpose,
    pub status: FileStatus,
    pub filename: String,
    pub mime_type: String,
    pub size_bytes: u64,
    pub sha256: Option<String>,
}

/// Where a file's bytes are stored: under the owner, so a sweep can tell whose they are.
pub fn object_key(user_id: Uuid, file_id: Uuid) -> String {
    format!("{OBJECT_PREFIX}/{user_id}/{file_id}")
}

pub fn thumbnail_key(user_id: Uuid, file_id: Uuid) -> String {
    format!("{OBJECT_PREFIX}/{user_id}/{file_id}.thumb")
}

pub const OBJECT_PREFIX: &str = "files";

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "files.insert"))]
pub async fn insert(db: &impl ConnectionTrait, row: NewRow) -> Result<files::Model, DbErr> {
    files::ActiveModel {
        id: Set(row.id),
        user_id: Set(row.user_id),
        session_id: Set(row.session_id),
        purpose: Set(row.purpose.as_str().to_owned()),
        status: Set(row.status.as_str().to_owned()),
        filename: Set(row.filename),
        mime_type: Set(row.mime_type),
        size_bytes: Set(i64::try_from(row.size_bytes).unwrap_or(i64::MAX)),
        sha256: Set(row.sha256),
        object_key: Set(object_key(row.user_id, row.id)),
        thumbnail_key: Set(None),
        width: Set(None),
        height: Set(None),
        thumbhash: Set(None),
        created_at: Set(Utc::now()),
        completed_at: Set(None),
    }
    .insert(db)
    .await
}

#[derive(FromQueryResult)]
struct Total {
    total: Option<i64>,
}

/// Bytes the user keeps, pending uploads included.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "files.used_bytes"))]
pub async fn used_bytes(db: &impl ConnectionTrait, user_id: Uuid) -> Result<u64, DbErr> {
    let total = files::Entity::find()
        .select_only()
        // PostgreSQL sums BIGINT as NUMERIC: back to BIGINT for both databases.
        .column_as(
            sea_orm::sea_query::Expr::cust("CAST(SUM(size_bytes) AS BIGINT)"),
            "total",
        )
        .filter(files::Column::UserId.eq(user_id))
        .filter(files::Column::Status.ne(FileStatus::Rejected.as_str()))
        .into_model::<Total>()
        .one(db)
        .await?;
    Ok(total
        .and_then(|total| total.total)
        .and_then(|total| u64::try_from(total).ok())
        .unwrap_or_default())
}

/// The user's file with this id; another user's is `None`, like a missing one.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "files.find_owned"))]
pub async fn find_owned(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    id: Uuid,
) -> Result<Option<files::Model>, DbErr> {
    files::Entity::find_by_id(id)
        .filter(files::Column::UserId.eq(user_id))
        .one(db)
        .await
}

/// Whether the chat exists and is the user's.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "files.owns_session"))]
pub async fn owns_session(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    session_id: Uuid,
) -> Result<bool, DbErr> {
    let found = chat_sessions::Entity::find_by_id(session_id)
        .filter(chat_sessions::Column::UserId.eq(user_id))
        .one(db)
        .await?;
    Ok(found.is_some())
}

/// What processing found, recorded as the file becomes ready.
pub struct Processed {
    pub mime_type: String,
    pub size_bytes: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub thumbhash: Option<String>,
    pub has_thumbnail: bool,
}

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "files.mark_ready"))]
pub async fn mark_ready(
    db: &impl ConnectionTrait,
    row: files::Model,
    processed: Processed,
) -> Result<files::Model, DbErr> {
    let thumbnail = processed
        .has_thumbnail
        .then(|| thumbnail_key(row.user_id, row.id));
    let mut active = row.into_active_model();
    active.status = Set(FileStatus::Ready.as_str().to_owned());
    active.mime_type = Set(processed.mime_type);
    active.size_bytes = Set(i64::try_from(processed.size_bytes).unwrap_or(i64::MAX));
    active.width = Set(processed.width.and_then(|w| i32::try_from(w).ok()));
    active.height = Set(processed.height.and_then(|h| i32::try_from(h).ok()));
    active.thumbhash = Set(processed.thumbhash);
    active.thumbnail_key = Set(thumbnail);
    active.completed_at = Set(Some(Utc::now()));
    active.update(db).await
}

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "files.mark_rejected"))]
pub async fn mark_rejected(
    db: &impl ConnectionTrait,
    row: files::Model,
) -> Result<files::Model, DbErr> {
    let mut active = row.into_active_model();
    active.status = Set(FileStatus::Rejected.as_str().to_owned());
    active.completed_at = Set(Some(Utc::now()));
    active.update(db).await
}

/// Stops `file_id` being the user's picture; true when it was.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "files.clear_avatar"))]
pub async fn clear_avatar(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    file_id: Uuid,
) -> Result<bool, DbErr> {
    let result = users::Entity::update_many()
        .col_expr(
            users::Column::AvatarFileId,
            sea_orm::sea_query::Expr::value(Option::<Uuid>::None),
        )
        .filter(users::Column::Id.eq(user_id))
        .filter(users::Column::AvatarFileId.eq(file_id))
        .exec(db)
        .await?;
    Ok(result.rows_affected > 0)
}

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "files.delete"))]
pub async fn delete(db: &impl ConnectionTrait, id: Uuid) -> Result<(), DbErr> {
    files::Entity::delete_by_id(id).exec(db).await.map(drop)
}
