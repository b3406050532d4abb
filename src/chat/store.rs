//! Queries for chat sessions and messages. Every read is scoped to its owner, so another
//! user's id finds nothing. Every write of a title or a message's text updates the search
//! index in the same transaction.

use chrono::{DateTime, Utc};
use entity::{chat_messages, chat_sessions};
use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbErr,
    EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde_json::Value;
use uuid::Uuid;

use super::search;
use super::tree;
use super::types::{
    MessageError, MessageErrorReason, MessageSource, MessageStatus, Role, ToolCallRecord, Usage,
};
use crate::db::begin_write;
use crate::pagination::{Cursor, PageRequest};

pub const DEFAULT_TITLE: &str = "New chat";

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.create_session"))]
pub async fn create_session(
    db: &DatabaseConnection,
    user_id: Uuid,
    title: &str,
    project_id: Option<Uuid>,
) -> Result<chat_sessions::Model, DbErr> {
    let now = Utc::now();
    let transaction = begin_write(db).await?;
    let session = chat_sessions::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        title: Set(title.to_owned()),
        summary: Set(None),
        is_pinned: Set(false),
        is_archived: Set(false),
        message_count: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
        last_message_at: Set(now),
        current_leaf_id: Set(None),
        project_id: Set(project_id),
    }
    .insert(&transaction)
    .await?;
    search::index_session(&transaction, &session).await?;
    transaction.commit().await?;
    Ok(session)
}

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.find_session"))]
pub async fn find_session(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    id: Uuid,
) -> Result<Option<chat_sessions::Model>, DbErr> {
    chat_sessions::Entity::find_by_id(id)
        .filter(chat_sessions::Column::UserId.eq(user_id))
        .one(db)
        .await
}

/// Where a page of the session list ends: the sort key of its last row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCursor {
    pub is_pinned: bool,
    pub last_message_at: DateTime<Utc>,
    pub id: Uuid,
}

impl SessionCursor {
    pub fn of(session: &chat_sessions::Model) -> Self {
        Self {
            is_pinned: session.is_pinned,
            last_message_at: session.last_message_at,
            id: session.id,
        }
    }
}

impl Cursor for SessionCursor {
    fn encode(&self) -> String {
        format!(
            "{}_{}_{}",
            u8::from(self.is_pinned),
            self.last_message_at.to_rfc3339(),
            self.id
        )
    }

    fn decode(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, '_');
        let is_pinned = match parts.next()? {
            "1" => true,
            "0" => false,
            _ => return None,
        };
        let last_message_at = DateTime::parse_from_rfc3339(parts.next()?)
            .ok()?
            .with_timezone(&Utc);
        let id = parts.next()?.parse().ok()?;
        Some(Self {
            is_pinned,
            last_message_at,
            id,
        })
    }
}

pub struct SessionQuery<'a> {
    pub archived: bool,
    pub only: Option<Vec<Uuid>>,
    /// `Some(Some(id))`: only that project's sessions; `Some(None)`: only those in none.
    pub project: Option<Option<Uuid>>,
    pub page: &'a PageRequest<SessionCursor>,
}

/// Pinned first, then most recent activity; keyset pagination on that order. Rows come in
/// walk order: the list's for forward pages, reversed for backward ones.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.list_sessions"))]
pub async fn list_sessions(
    db: &DatabaseConnection,
    user_id: Uuid,
    query: SessionQuery<'_>,
) -> Result<Vec<chat_sessions::Model>, DbErr> {
    use chat_sessions::Column as C;
    let order = if query.page.is_forward() {
        Order::Desc
    } else {
        Order::Asc
    };
    let mut select = chat_sessions::Entity::find()
        .filter(C::UserId.eq(user_id))
        .filter(C::IsArchived.eq(query.archived))
        .order_by(C::IsPinned, order.clone())
        .order_by(C::LastMessageAt, order.clone())
        .order_by(C::Id, order)
        .limit(query.page.rows_to_read());
    if let Some(ids) = query.only {
        select = select.filter(C::Id.is_in(ids));
    }
    match query.project {
        Some(Some(project_id)) => select = select.filter(C::ProjectId.eq(project_id)),
        Some(None) => select = select.filter(C::ProjectId.is_null()),
        None => {}
    }
    let forward = query.page.is_forward();
    if let Some(at) = &query.page.cursor {
        // Past the cursor in walk order: below it forward, above it backward.
        let past = |column: C, value: sea_orm::Value| {
            if forward {
                column.lt(value)
            } else {
                column.gt(value)
            }
        };
        let same_pin = Condition::all().add(C::IsPinned.eq(at.is_pinned));
        select = select.filter(
            Condition::any()
                .add(past(C::IsPinned, at.is_pinned.into()))
                .add(
                    same_pin
                        .clone()
                        .add(past(C::LastMessageAt, at.last_message_at.into())),
                )
                .add(
                    same_pin
                        .add(C::LastMessageAt.eq(at.last_message_at))
                        .add(past(C::Id, at.id.into())),
                ),
        );
    }
    select.all(db).await
}

pub struct SessionChanges {
    pub title: Option<String>,
    pub is_pinned: Option<bool>,
    pub is_archived: Option<bool>,
    /// `Some(None)` moves the session out of its project.
    pub project_id: Option<Option<Uuid>>,
}

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.update_session"))]
pub async fn update_session(
    db: &DatabaseConnection,
    session: chat_sessions::Model,
    changes: SessionChanges,
) -> Result<chat_sessions::Model, DbErr> {
    let mut row: chat_sessions::ActiveModel = session.into();
    let retitled = changes.title.is_some();
    if let Some(title) = changes.title {
        row.title = Set(title);
    }
    if let Some(pinned) = changes.is_pinned {
        row.is_pinned = Set(pinned);
    }
    if let Some(archived) = changes.is_archived {
        row.is_archived = Set(archived);
    }
    if let Some(project_id) = changes.project_id {
        row.project_id = Set(project_id);
    }
    row.updated_at = Set(Utc::now());
    let transaction = begin_write(db).await?;
    let session = row.update(&transaction).await?;
    if retitled {
        search::index_session(&transaction, &session).await?;
    }
    transaction.commit().await?;
    Ok(session)
}

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.set_title"))]
pub async fn set_title(
    db: &DatabaseConnection,
    session_id: Uuid,
    title: &str,
) -> Result<(), DbErr> {
    let transaction = begin_write(db).await?;
    chat_sessions::Entity::update_many()
        .col_expr(chat_sessions::Column::Title, Expr::value(title))
        .col_expr(chat_sessions::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(chat_sessions::Column::Id.eq(session_id))
        .exec(&transaction)
        .await?;
    search::reindex_session(&transaction, session_id).await?;
    transaction.commit().await
}

/// Counts `added` messages (negative when removed) and marks the session active now.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.touch_session"))]
pub async fn touch_session(
    db: &impl ConnectionTrait,
    session_id: Uuid,
    added: i32,
) -> Result<(), DbErr> {
    let now = Utc::now();
    chat_sessions::Entity::update_many()
        .col_expr(
            chat_sessions::Column::MessageCount,
            Expr::col(chat_sessions::Column::MessageCount).add(added),
        )
        .col_expr(chat_sessions::Column::LastMessageAt, Expr::value(now))
        .col_expr(chat_sessions::Column::UpdatedAt, Expr::value(now))
        .filter(chat_sessions::Column::Id.eq(session_id))
        .exec(db)
        .await
        .map(drop)
}

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.delete_session"))]
pub async fn delete_session(db: &DatabaseConnection, session_id: Uuid) -> Result<(), DbErr> {
    chat_sessions::Entity::delete_by_id(session_id)
        .exec(db)
        .await
        .map(drop)
}

/// A new message row.
pub struct NewMessage<'a> {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub role: Role,
    pub content: &'a str,
    pub status: MessageStatus,
    pub client_message_id: Option<Uuid>,
    pub reply_to: Option<Uuid>,
    /// The message it follows in its branch (see `tree`).
    pub parent_id: Option<Uuid>,
    pub provider: Option<&'a str>,
    pub model: Option<&'a str>,
    pub tool_calls: Option<Value>,
}

/// Searchable messages (user, assistant) are indexed too: insert them in a transaction, so
/// that both happen or neither.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.insert_message"))]
pub async fn insert_message(
    db: &impl ConnectionTrait,
    message: NewMessage<'_>,
) -> Result<chat_messages::Model, DbErr> {
    let now = Utc::now();
    let row = chat_messages::ActiveModel {
        id: Set(Uuid::now_v7()),
        session_id: Set(message.session_id),
        user_id: Set(message.user_id),
        role: Set(message.role.as_str().to_owned()),
        content: Set(message.content.to_owned()),
        status: Set(message.status.as_str().to_owned()),
        provider: Set(message.provider.map(str::to_owned)),
        model: Set(message.model.map(str::to_owned)),
        input_tokens: Set(None),
        output_tokens: Set(None),
        tool_calls: Set(message.tool_calls),
        is_liked: Set(false),
        client_message_id: Set(message.client_message_id),
        reply_to: Set(message.reply_to),
        error: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        source: Set(MessageSource::Text.as_str().to_owned()),
        parent_id: Set(message.parent_id),
    }
    .insert(db)
    .await?;
    search::index_message(db, &row).await?;
    Ok(row)
}

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.find_message"))]
pub async fn find_message(
    db: &DatabaseConnection,
    user_id: Uuid,
    id: Uuid,
) -> Result<Option<chat_messages::Model>, DbErr> {
    chat_messages::Entity::find_by_id(id)
        .filter(chat_messages::Column::UserId.eq(user_id))
        .one(db)
        .await
}

/// What the app asked for with `client_message_id`: the user message it sent (or edited) and
/// the first reply to it, or the user message and the answer it asked again for
/// (`chat.regenerate` keeps the id on the answer).
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.find_exchange"))]
pub async fn find_exchange(
    db: &DatabaseConnection,
    session_id: Uuid,
    client_message_id: Uuid,
) -> Result<Option<(chat_messages::Model, Option<chat_messages::Model>)>, DbErr> {
    let Some(asked) = chat_messages::Entity::find()
        .filter(chat_messages::Column::SessionId.eq(session_id))
        .filter(chat_messages::Column::ClientMessageId.eq(client_message_id))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    if asked.role == Role::Assistant.as_str() {
        let answered = match asked.reply_to {
            Some(id) => chat_messages::Entity::find_by_id(id).one(db).await?,
            None => None,
        };
        return Ok(answered.map(|user_message| (user_message, Some(asked))));
    }
    let reply = chat_messages::Entity::find()
        .filter(chat_messages::Column::ReplyTo.eq(asked.id))
        .filter(chat_messages::Column::Role.eq(Role::Assistant.as_str()))
        .filter(chat_messages::Column::ClientMessageId.is_null())
        .order_by_asc(chat_messages::Column::Id)
        .one(db)
        .await?;
    Ok(Some((asked, reply)))
}

/// Every message of a session (every branch), in creation order.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.all_messages"))]
pub async fn all_messages(
    db: &impl ConnectionTrait,
    session_id: Uuid,
) -> Result<Vec<chat_messages::Model>, DbErr> {
    chat_messages::Entity::find()
        .filter(chat_messages::Column::SessionId.eq(session_id))
        .order_by_asc(chat_messages::Column::Id)
        .all(db)
        .await
}

/// A session's messages `ids`, in creation order.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.messages_by_ids"))]
pub async fn messages_by_ids(
    db: &impl ConnectionTrait,
    session_id: Uuid,
    ids: Vec<Uuid>,
) -> Result<Vec<chat_messages::Model>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    chat_messages::Entity::find()
        .filter(chat_messages::Column::SessionId.eq(session_id))
        .filter(chat_messages::Column::Id.is_in(ids))
        .order_by_asc(chat_messages::Column::Id)
        .all(db)
        .await
}

/// A conversation as the user sees it, root first (user and assistant messages): the branch
/// through `through` up to it (empty when it is no message of the session), else the
/// session's current branch.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.conversation"))]
pub async fn conversation(
    db: &impl ConnectionTrait,
    session: &chat_sessions::Model,
    through: Option<Uuid>,
) -> Result<Vec<chat_messages::Model>, DbErr> {
    let tree = tree::Tree::load(db, session.id).await?;
    let ids = match through.or_else(|| tree.current_leaf(session)) {
        Some(last) => tree.branch(last),
        None => Vec::new(),
    };
    messages_by_ids(db, session.id, ids).await
}

/// Saves a streaming reply's text so far (a crash loses at most the last moments).
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.save_progress"))]
pub async fn save_progress(db: &DatabaseConnection, id: Uuid, content: &str) -> Result<(), DbErr> {
    let transaction = begin_write(db).await?;
    chat_messages::Entity::update_many()
        .col_expr(chat_messages::Column::Content, Expr::value(content))
        .col_expr(chat_messages::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(chat_messages::Column::Id.eq(id))
        .exec(&transaction)
        .await?;
    search::reindex_message(&transaction, id).await?;
    transaction.commit().await
}

/// The reply's final state.
pub struct Outcome<'a> {
    pub content: &'a str,
    pub status: MessageStatus,
    pub usage: Option<Usage>,
    pub tool_calls: &'a [ToolCallRecord],
    /// Why it failed, with status "error".
    pub error: Option<&'a MessageError>,
}

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.finish_reply"))]
pub async fn finish_reply(
    db: &DatabaseConnection,
    id: Uuid,
    outcome: Outcome<'_>,
) -> Result<chat_messages::Model, DbErr> {
    let tokens = |pick: fn(&Usage) -> u32| {
        outcome
            .usage
            .as_ref()
            .map(|usage| i32::try_from(pick(usage)).unwrap_or(i32::MAX))
    };
    let tool_calls = (!outcome.tool_calls.is_empty())
        .then(|| serde_json::to_value(outcome.tool_calls).unwrap_or_default());
    let row = chat_messages::ActiveModel {
        id: Set(id),
        content: Set(outcome.content.to_owned()),
        status: Set(outcome.status.as_str().to_owned()),
        input_tokens: Set(tokens(|usage| usage.input_tokens)),
        output_tokens: Set(tokens(|usage| usage.output_tokens)),
        tool_calls: Set(tool_calls),
        error: Set(outcome
            .error
            .and_then(|error| serde_json::to_value(error).ok())),
        updated_at: Set(Utc::now()),
        ..Default::default()
    };
    let transaction = begin_write(db).await?;
    let saved = row.update(&transaction).await?;
    search::index_message(&transaction, &saved).await?;
    transaction.commit().await?;
    Ok(saved)
}

/// The last `limit` user and assistant messages of the branch ending at `last` (its
/// ancestors, and `last`), newest first: what the provider sees, nothing of other branches.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.branch_messages"))]
pub async fn branch_messages(
    db: &DatabaseConnection,
    session_id: Uuid,
    last: Uuid,
    limit: usize,
) -> Result<Vec<chat_messages::Model>, DbErr> {
    let tree = tree::Tree::load(db, session_id).await?;
    let branch = tree.branch(last);
    let recent = branch[branch.len().saturating_sub(limit)..].to_vec();
    let mut rows = messages_by_ids(db, session_id, recent).await?;
    rows.reverse();
    Ok(rows)
}

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.set_liked"))]
pub async fn set_liked(
    db: &DatabaseConnection,
    message: chat_messages::Model,
    liked: bool,
) -> Result<chat_messages::Model, DbErr> {
    let mut row: chat_messages::ActiveModel = message.into();
    row.is_liked = Set(liked);
    row.update(db).await
}

/// Removes message `id` and everything under it (see `tree::delete_subtree`): an exchange
/// of a user who does not keep conversations.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.delete_subtree"))]
pub async fn delete_subtree(
    db: &DatabaseConnection,
    session_id: Uuid,
    id: Uuid,
) -> Result<(), DbErr> {
    let transaction = begin_write(db).await?;
    let Some(session) = chat_sessions::Entity::find_by_id(session_id)
        .one(&transaction)
        .await?
    else {
        return Ok(());
    };
    let removed = tree::delete_subtree(&transaction, &session, id).await?;
    touch_session(
        &transaction,
        session_id,
        -i32::try_from(removed).unwrap_or(0),
    )
    .await?;
    transaction.commit().await
}

/// Marks every reply still `streaming` as failed (`interrupted`), its text so far kept: at
/// start-up of a lone instance, nothing can be writing them.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.fail_interrupted_replies"))]
pub async fn fail_interrupted_replies(db: &DatabaseConnection) -> Result<u64, DbErr> {
    fail_replies(
        db,
        None,
        "The server stopped while writing this reply. Send your message again.",
    )
    .await
}

/// Replies `streaming` and untouched since `before`, at most `limit`: candidates for a dead
/// instance's orphans.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.quiet_streaming_replies"))]
pub async fn quiet_streaming_replies(
    db: &DatabaseConnection,
    before: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<Uuid>, DbErr> {
    chat_messages::Entity::find()
        .select_only()
        .column(chat_messages::Column::Id)
        .filter(chat_messages::Column::Status.eq(MessageStatus::Streaming.as_str()))
        .filter(chat_messages::Column::UpdatedAt.lt(before))
        .limit(limit)
        .into_tuple()
        .all(db)
        .await
}

/// The messages `ids` (of any user): for the orphan sweep, which acts for no caller.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.find_messages"))]
pub async fn find_messages(
    db: &DatabaseConnection,
    ids: &[Uuid],
) -> Result<Vec<chat_messages::Model>, DbErr> {
    chat_messages::Entity::find()
        .filter(chat_messages::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await
}

/// Marks the replies `ids` (every one without) that are still `streaming` as failed
/// (`interrupted`, saying `message`), their text so far kept.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "chat.fail_replies"))]
pub async fn fail_replies(
    db: &DatabaseConnection,
    ids: Option<&[Uuid]>,
    message: &str,
) -> Result<u64, DbErr> {
    let interrupted = MessageError {
        reason: MessageErrorReason::Interrupted,
        message: message.to_owned(),
        retry_after_seconds: None,
    };
    let mut update = chat_messages::Entity::update_many()
        .col_expr(
            chat_messages::Column::Status,
            Expr::value(MessageStatus::Error.as_str()),
        )
        .col_expr(
            chat_messages::Column::Error,
            Expr::value(serde_json::to_value(interrupted).unwrap_or_default()),
        )
        .col_expr(chat_messages::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(chat_messages::Column::Status.eq(MessageStatus::Streaming.as_str()));
    if let Some(ids) = ids {
        update = update.filter(chat_messages::Column::Id.is_in(ids.iter().copied()));
    }
    update.exec(db).await.map(|result| result.rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let cursor = SessionCursor {
            is_pinned: true,
            last_message_at: Utc::now(),
            id: Uuid::now_v7(),
        };
        assert_eq!(SessionCursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(SessionCursor::decode("garbage"), None);
    }
}
