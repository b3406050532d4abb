//! Queries for projects. Every read is scoped to its owner, so another user's id finds nothing.

use chrono::Utc;
use entity::projects;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    Set,
};
use uuid::Uuid;

use super::ProjectFields;
use crate::pagination::PageRequest;

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "projects.insert"))]
pub async fn insert(
    db: &DatabaseConnection,
    user_id: Uuid,
    fields: ProjectFields,
) -> Result<projects::Model, DbErr> {
    let now = Utc::now();
    projects::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        name: Set(fields.name),
        instructions: Set(fields.instructions),
        color: Set(fields.color),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(db)
    .await
}

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "projects.find_owned"))]
pub async fn find_owned(
    db: &DatabaseConnection,
    user_id: Uuid,
    id: Uuid,
) -> Result<Option<projects::Model>, DbErr> {
    projects::Entity::find_by_id(id)
        .filter(projects::Column::UserId.eq(user_id))
        .one(db)
        .await
}

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "projects.all_of"))]
pub async fn all_of(db: &DatabaseConnection, user_id: Uuid) -> Result<Vec<projects::Model>, DbErr> {
    projects::Entity::find()
        .filter(projects::Column::UserId.eq(user_id))
        .order_by_asc(projects::Column::Id)
        .all(db)
        .await
}

/// A page of the user's projects in walk order (newest first going forward).
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "projects.list"))]
pub async fn list(
    db: &DatabaseConnection,
    user_id: Uuid,
    page: &PageRequest<Uuid>,
) -> Result<Vec<projects::Model>, DbErr> {
    let owned = projects::Entity::find().filter(projects::Column::UserId.eq(user_id));
    page.newest_first(owned, projects::Column::Id).all(db).await
}

/// What `projects.update` changes: `None` keeps a field.
pub struct ProjectChanges {
    pub name: Option<String>,
    pub instructions: Option<String>,
    /// `Some(None)` removes the colour.
    pub color: Option<Option<String>>,
}

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "projects.update"))]
pub async fn update(
    db: &DatabaseConnection,
    project: projects::Model,
    changes: ProjectChanges,
) -> Result<projects::Model, DbErr> {
    let mut row: projects::ActiveModel = project.into();
    if let Some(name) = changes.name {
        row.name = Set(name);
    }
    if let Some(instructions) = changes.instructions {
        row.instructions = Set(instructions);
    }
    if let Some(color) = changes.color {
        row.color = Set(color);
    }
    row.updated_at = Set(Utc::now());
    row.update(db).await
}

/// Deletes the project; sessions still in it are moved out (the foreign key sets their
/// `project_id` to null).
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "projects.delete"))]
pub async fn delete(db: &DatabaseConnection, id: Uuid) -> Result<(), DbErr> {
    projects::Entity::delete_by_id(id).exec(db).await.map(drop)
}
