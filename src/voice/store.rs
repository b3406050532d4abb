//! Queries for voice calls, their transcript segments and the webhook ids already applied.
//! Reads are scoped to their owner, so another user's id finds nothing.

use chrono::{DateTime, Utc};
use entity::{chat_messages, voice_segments, voice_sessions, voice_webhook_events};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select, Set,
};
use uuid::Uuid;

use crate::pagination::PageRequest;

/// Characters of `transcriptPreview`.
const PREVIEW_CHARS: usize = 160;

pub struct NewCall {
    pub id: Uuid,
    pub user_id: Uuid,
    pub chat_session_id: Uuid,
    pub room_name: String,
    pub agent_token_hash: String,
    pub now: DateTime<Utc>,
}

pub async fn insert_call(
    db: &impl ConnectionTrait,
    call: NewCall,
) -> Result<voice_sessions::Model, DbErr> {
    voice_sessions::ActiveModel {
        id: Set(call.id),
        user_id: Set(call.user_id),
        chat_session_id: Set(call.chat_session_id),
        room_name: Set(call.room_name),
        agent_token_hash: Set(call.agent_token_hash),
        transcript_preview: Set(String::new()),
        created_at: Set(call.now),
        started_at: Set(None),
        ended_at: Set(None),
        user_joined_at: Set(None),
        user_left_at: Set(None),
        last_activity_at: Set(call.now),
    }
    .insert(db)
    .await
}

pub async fn find_call(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    id: Uuid,
) -> Result<Option<voice_sessions::Model>, DbErr> {
    voice_sessions::Entity::find_by_id(id)
        .filter(voice_sessions::Column::UserId.eq(user_id))
        .one(db)
        .await
}

pub async fn find_by_agent_token(
    db: &DatabaseConnection,
    token_hash: &str,
) -> Result<Option<voice_sessions::Model>, DbErr> {
    voice_sessions::Entity::find()
        .filter(voice_sessions::Column::AgentTokenHash.eq(token_hash))
        .one(db)
        .await
}

/// A page of the user's calls, newest first (forward) or oldest first (backward).
pub async fn list_calls(
    db: &DatabaseConnection,
    user_id: Uuid,
    page: &PageRequest<Uuid>,
) -> Result<Vec<voice_sessions::Model>, DbErr> {
    let select = voice_sessions::Entity::find().filter(voice_sessions::Column::UserId.eq(user_id));
    page.newest_first(select, voice_sessions::Column::Id)
        .all(db)
        .await
}

/// A call's segments in time order, each with the text of the message it became.
pub async fn transcript(
    db: &impl ConnectionTrait,
    call_id: Uuid,
    limit: Option<u64>,
) -> Result<Vec<(voice_segments::Model, String)>, DbErr> {
    let mut select = voice_segments::Entity::find()
        .filter(voice_segments::Column::VoiceSessionId.eq(call_id))
        .order_by_asc(voice_segments::Column::StartMs)
        .order_by_asc(voice_segments::Column::MessageId);
    if let Some(limit) = limit {
        select = select.limit(limit);
    }
    let segments = select.all(db).await?;
    let ids: Vec<Uuid> = segments.iter().map(|segment| segment.message_id).collect();
    let mut texts: std::collections::HashMap<Uuid, String> = chat_messages::Entity::find()
        .filter(chat_messages::Column::Id.is_in(ids))
        .all(db)
        .await?
        .into_iter()
        .map(|message| (message.id, message.content))
        .collect();
    Ok(segments
        .into_iter()
        .filter_map(|segment| {
            let text = texts.remove(&segment.message_id)?;
            Some((segment, text))
        })
        .collect())
}

pub async fn segment_exists(
    db: &impl ConnectionTrait,
    call_id: Uuid,
    segment_id: &str,
) -> Result<bool, DbErr> {
    Ok(
        voice_segments::Entity::find_by_id((call_id, segment_id.to_owned()))
            .one(db)
            .await?
            .is_some(),
    )
}

pub async fn insert_segment(
    db: &impl ConnectionTrait,
    segment: voice_segments::Model,
) -> Result<(), DbErr> {
    voice_segments::Entity::insert(voice_segments::ActiveModel::from(segment))
        .exec_without_returning(db)
        .await
        .map(drop)
}

/// After new segments: the preview (the transcript's opening) and the call's activity.
pub async fn refresh_after_append(
    db: &impl ConnectionTrait,
    call_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let opening = transcript(db, call_id, Some(8)).await?;
    let mut preview = String::new();
    for (_, text) in opening {
        if !preview.is_empty() {
            preview.push(' ');
        }
        preview.push_str(&text);
        if preview.chars().count() >= PREVIEW_CHARS {
            break;
        }
    }
    if preview.chars().count() > PREVIEW_CHARS {
        preview = preview.chars().take(PREVIEW_CHARS - 1).collect();
        preview.push('…');
    }
    voice_sessions::Entity::update_many()
        .col_expr(
            voice_sessions::Column::TranscriptPreview,
            Expr::value(preview),
        )
        .col_expr(voice_sessions::Column::LastActivityAt, Expr::value(now))
        .filter(voice_sessions::Column::Id.eq(call_id))
        .exec(db)
        .await
        .map(drop)
}

/// The message ids of a call's transcript.
pub async fn message_ids(db: &impl ConnectionTrait, call_id: Uuid) -> Result<Vec<Uuid>, DbErr> {
    voice_segments::Entity::find()
        .select_only()
        .column(voice_segments::Column::MessageId)
        .filter(voice_segments::Column::VoiceSessionId.eq(call_id))
        .into_tuple()
        .all(db)
        .await
}

pub async fn delete_call(db: &impl ConnectionTrait, call_id: Uuid) -> Result<(), DbErr> {
    voice_sessions::Entity::delete_by_id(call_id)
        .exec(db)
        .await
        .map(drop)
}

/// The call row, locked for update on PostgreSQL (SQLite's write transaction is the lock).
pub fn locked(
    db: &impl ConnectionTrait,
    select: Select<voice_sessions::Entity>,
) -> Select<voice_sessions::Entity> {
    if db.get_database_backend() == DbBackend::Postgres {
        select.lock_exclusive()
    } else {
        select
    }
}

/// The calls's times, merged so that the order in which signals arrive does not matter:
/// the earliest start and end, the latest join and leave of the user, the latest activity.
#[derive(Debug, Default, Clone, Copy)]
pub struct Signals {
    pub started: Option<DateTime<Utc>>,
    pub ended: Option<DateTime<Utc>>,
    pub user_joined: Option<DateTime<Utc>>,
    pub user_left: Option<DateTime<Utc>>,
    pub activity: Option<DateTime<Utc>>,
}

fn earliest(current: Option<DateTime<Utc>>, new: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (current, new) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn latest(current: Option<DateTime<Utc>>, new: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (current, new) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Merges `signals` into the call (inside a write transaction, the row read with [`locked`]).
pub async fn merge_signals(
    db: &impl ConnectionTrait,
    call: voice_sessions::Model,
    signals: Signals,
) -> Result<voice_sessions::Model, DbErr> {
    let started_at = earliest(call.started_at, signals.started);
    let ended_at = earliest(call.ended_at, signals.ended);
    let user_joined_at = latest(call.user_joined_at, signals.user_joined);
    let user_left_at = latest(call.user_left_at, signals.user_left);
    let last_activity_at = call
        .last_activity_at
        .max(signals.activity.unwrap_or(call.last_activity_at));
    let mut row: voice_sessions::ActiveModel = call.into();
    row.started_at = Set(started_at);
    row.ended_at = Set(ended_at);
    row.user_joined_at = Set(user_joined_at);
    row.user_left_at = Set(user_left_at);
    row.last_activity_at = Set(last_activity_at);
    row.update(db).await
}

pub async fn find_call_by_room(
    db: &impl ConnectionTrait,
    room_name: &str,
) -> Result<Option<voice_sessions::Model>, DbErr> {
    let select =
        voice_sessions::Entity::find().filter(voice_sessions::Column::RoomName.eq(room_name));
    locked(db, select).one(db).await
}

/// Records a webhook event id; false when it was recorded before (a redelivery).
pub async fn record_event(
    db: &impl ConnectionTrait,
    id: &str,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let inserted = voice_webhook_events::Entity::insert(voice_webhook_events::ActiveModel {
        id: Set(id.to_owned()),
        received_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(voice_webhook_events::Column::Id)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(inserted == 1)
}

/// Ends every open call quiet since before `quiet_since`, as of its last activity.
pub async fn end_quiet_calls(
    db: &DatabaseConnection,
    quiet_since: DateTime<Utc>,
) -> Result<u64, DbErr> {
    voice_sessions::Entity::update_many()
        .col_expr(
            voice_sessions::Column::EndedAt,
            Expr::col(voice_sessions::Column::LastActivityAt),
        )
        .filter(voice_sessions::Column::EndedAt.is_null())
        .filter(voice_sessions::Column::LastActivityAt.lt(quiet_since))
        .exec(db)
        .await
        .map(|result| result.rows_affected)
}

/// Forgets webhook ids received before `before`.
pub async fn forget_events(db: &DatabaseConnection, before: DateTime<Utc>) -> Result<u64, DbErr> {
    voice_webhook_events::Entity::delete_many()
        .filter(voice_webhook_events::Column::ReceivedAt.lt(before))
        .exec(db)
        .await
        .map(|result| result.rows_affected)
}
