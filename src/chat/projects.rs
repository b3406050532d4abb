//! Chats in projects: which project a chat may join, the instructions it adds to a reply's
//! system prompt, and removing a project's chats. The `projects` domain sits above chat (it
//! deletes a project's chats through [`delete_project_sessions`]), so chat reads the few
//! project fields it needs from the table itself instead of calling up into `projects`.

use entity::{chat_sessions, projects};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect, SqlErr,
};
use uuid::Uuid;

use super::remove_session;
use crate::context::Ctx;
use crate::rpc::{RpcError, internal};

pub fn project_not_found() -> RpcError {
    RpcError::not_found("No such project.")
}

/// NOT_FOUND unless `project_id` is one of the caller's projects.
pub async fn check_owned(ctx: &Ctx, user_id: Uuid, project_id: Uuid) -> Result<(), RpcError> {
    let found: Option<Uuid> = projects::Entity::find_by_id(project_id)
        .filter(projects::Column::UserId.eq(user_id))
        .select_only()
        .column(projects::Column::Id)
        .into_tuple()
        .one(&ctx.state.db)
        .await
        .map_err(internal("load a project"))?;
    found.map(drop).ok_or_else(project_not_found)
}

/// A write naming a project deleted since it was checked fails on the foreign key: the
/// project is gone, as if it had never been found.
pub fn project_gone(doing: &'static str) -> impl Fn(DbErr) -> RpcError {
    move |error| match error.sql_err() {
        Some(SqlErr::ForeignKeyConstraintViolation(_)) => project_not_found(),
        _ => internal(doing)(error),
    }
}

/// The instructions of the session's project, when it is in one that has some.
pub async fn instructions(
    db: &DatabaseConnection,
    session: &chat_sessions::Model,
) -> Result<Option<String>, DbErr> {
    let Some(project_id) = session.project_id else {
        return Ok(None);
    };
    let found: Option<String> = projects::Entity::find_by_id(project_id)
        .filter(projects::Column::UserId.eq(session.user_id))
        .select_only()
        .column(projects::Column::Instructions)
        .into_tuple()
        .one(db)
        .await?;
    Ok(found.filter(|text| !text.trim().is_empty()))
}

/// Deletes every chat of the caller's project the way `chat.sessions.delete` deletes one:
/// replies still being written stop at once, files uploaded into them are audited as deleted.
pub async fn delete_project_sessions(
    ctx: &Ctx,
    user_id: Uuid,
    project_id: Uuid,
) -> Result<(), RpcError> {
    let ids: Vec<Uuid> = chat_sessions::Entity::find()
        .filter(chat_sessions::Column::UserId.eq(user_id))
        .filter(chat_sessions::Column::ProjectId.eq(project_id))
        .select_only()
        .column(chat_sessions::Column::Id)
        .into_tuple()
        .all(&ctx.state.db)
        .await
        .map_err(internal("list a project's chats"))?;
    for id in ids {
        remove_session(ctx, id).await?;
    }
    Ok(())
}
