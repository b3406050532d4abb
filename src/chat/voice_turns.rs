//! Voice turns in chats: what was said in a voice call (`voice.*`) becomes messages of its
//! chat session, placed on the current branch in the order things were said, and leaves it
//! when the call is deleted.

use chrono::{DateTime, Utc};
use entity::{chat_messages, chat_sessions};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Set,
};
use uuid::Uuid;

use super::search;
use super::store::touch_session;
use super::tree;
use super::types::{MessageSource, MessageStatus, Role};

/// A turn said in a voice call.
pub struct VoiceTurn<'a> {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub role: Role,
    pub content: &'a str,
    /// When it was said: the message is dated then, and its id (UUIDv7) carries that time,
    /// so the session's messages stay in time order however late the transcript arrives.
    pub said_at: DateTime<Utc>,
}

/// Adds a voice turn to its chat session (indexed for search, counted in the session), on
/// the current branch in the order things were said; call it inside a transaction.
pub async fn insert_voice_turn(
    db: &impl ConnectionTrait,
    turn: VoiceTurn<'_>,
) -> Result<chat_messages::Model, DbErr> {
    let session = chat_sessions::Entity::find_by_id(turn.session_id)
        .one(db)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("the voice call's chat session".to_owned()))?;
    let millis = u64::try_from(turn.said_at.timestamp_millis()).unwrap_or_default();
    let timestamp = uuid::Timestamp::from_unix(
        uuid::NoContext,
        millis / 1000,
        u32::try_from(millis % 1000).unwrap_or_default() * 1_000_000,
    );
    let id = Uuid::new_v7(timestamp);
    let place = tree::place_in_time(db, &session, id).await?;
    let row = chat_messages::ActiveModel {
        id: Set(id),
        session_id: Set(turn.session_id),
        user_id: Set(turn.user_id),
        role: Set(turn.role.as_str().to_owned()),
        content: Set(turn.content.to_owned()),
        status: Set(MessageStatus::Complete.as_str().to_owned()),
        provider: Set(None),
        model: Set(None),
        input_tokens: Set(None),
        output_tokens: Set(None),
        tool_calls: Set(None),
        is_liked: Set(false),
        client_message_id: Set(None),
        reply_to: Set(None),
        error: Set(None),
        created_at: Set(turn.said_at),
        updated_at: Set(Utc::now()),
        source: Set(MessageSource::Voice.as_str().to_owned()),
        parent_id: Set(place.parent),
    }
    .insert(db)
    .await?;
    tree::follow_up(db, session.id, row.id, &place).await?;
    search::index_message(db, &row).await?;
    touch_session(db, turn.session_id, 1).await?;
    Ok(row)
}

/// Removes voice turns (by message id) from their chat session and its search index; the
/// branches through them close up.
pub async fn delete_voice_turns(
    db: &impl ConnectionTrait,
    session_id: Uuid,
    message_ids: Vec<Uuid>,
) -> Result<(), DbErr> {
    if message_ids.is_empty() {
        return Ok(());
    }
    if let Some(session) = chat_sessions::Entity::find_by_id(session_id)
        .one(db)
        .await?
    {
        tree::close_up(db, &session, &message_ids).await?;
    }
    let removed = chat_messages::Entity::delete_many()
        .filter(chat_messages::Column::SessionId.eq(session_id))
        .filter(chat_messages::Column::Source.eq(MessageSource::Voice.as_str()))
        .filter(chat_messages::Column::Id.is_in(message_ids))
        .exec(db)
        .await?
        .rows_affected;
    touch_session(db, session_id, -i32::try_from(removed).unwrap_or(0)).await
}
