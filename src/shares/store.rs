//! Queries for share links. The owner's reads are scoped to them, so another user's id finds
//! nothing; the public page finds a link only by its token's keyed hash.

use chrono::{DateTime, Utc};
use entity::shares;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, Set,
};
use uuid::Uuid;

use crate::pagination::PageRequest;

/// A link about to be saved: its snapshot and the hash of its token.
pub struct NewShare {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub token_hash: String,
    pub title: String,
    pub messages: serde_json::Value,
    pub message_count: i32,
    pub expires_at: Option<DateTime<Utc>>,
}

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "shares.insert"))]
pub async fn insert(db: &DatabaseConnection, share: NewShare) -> Result<shares::Model, DbErr> {
    shares::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(share.user_id),
        session_id: Set(share.session_id),
        token_hash: Set(share.token_hash),
        title: Set(share.title),
        messages: Set(share.messages),
        message_count: Set(share.message_count),
        created_at: Set(Utc::now()),
        expires_at: Set(share.expires_at),
        revoked_at: Set(None),
    }
    .insert(db)
    .await
}

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "shares.find_owned"))]
pub async fn find_owned(
    db: &DatabaseConnection,
    user_id: Uuid,
    id: Uuid,
) -> Result<Option<shares::Model>, DbErr> {
    shares::Entity::find_by_id(id)
        .filter(shares::Column::UserId.eq(user_id))
        .one(db)
        .await
}

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "shares.find_by_token_hash"))]
pub async fn find_by_token_hash(
    db: &DatabaseConnection,
    token_hash: &str,
) -> Result<Option<shares::Model>, DbErr> {
    shares::Entity::find()
        .filter(shares::Column::TokenHash.eq(token_hash))
        .one(db)
        .await
}

/// A page of the user's links (of one chat with `session_id`), in walk order: newest first
/// going forward.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "shares.list"))]
pub async fn list(
    db: &DatabaseConnection,
    user_id: Uuid,
    session_id: Option<Uuid>,
    page: &PageRequest<Uuid>,
) -> Result<Vec<shares::Model>, DbErr> {
    let mut owned = shares::Entity::find().filter(shares::Column::UserId.eq(user_id));
    if let Some(session_id) = session_id {
        owned = owned.filter(shares::Column::SessionId.eq(session_id));
    }
    page.newest_first(owned, shares::Column::Id).all(db).await
}

/// Marks the link revoked now; one revoked already keeps its first time.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "shares.revoke"))]
pub async fn revoke(db: &DatabaseConnection, share: shares::Model) -> Result<shares::Model, DbErr> {
    if share.revoked_at.is_some() {
        return Ok(share);
    }
    let mut row: shares::ActiveModel = share.into();
    row.revoked_at = Set(Some(Utc::now()));
    row.update(db).await
}
