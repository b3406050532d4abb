//! `voice.*`: calls with the user's assistant over LiveKit. `voice.start` opens a room (a
//! token for the app, the agent dispatched with the call's metadata and credential); what is
//! said arrives through `voice.transcript.append` and becomes part of the call's chat
//! session; LiveKit's webhooks (`POST /webhooks/livekit`) date the call; a sweep ends calls
//! that went quiet.

mod livekit;
mod store;
mod sweep;
mod transcript;
mod types;
mod webhook;

use chrono::Utc;
use entity::voice_sessions;
use sea_orm::EntityTrait as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use sweep::{Swept, run_periodically as sweep_periodically, sweep};
pub use types::{CallStatus, Speaker, TranscriptSegment, VoiceSession, VoiceSessionDetail};
pub use webhook::routes;

use self::store::{NewCall, Signals};
use crate::chat;
use crate::config::LiveKitConfig;
use crate::context::{App, Ctx};
use crate::db::begin_write;
use crate::guard::{SignedIn, signed_in};
use crate::pagination::{Direction, PageRequest, PageSize};
use crate::reason::Reason;
use crate::rpc::{ErrorCode, Router, RpcError, Timestamp, internal};

pub fn router() -> Router<App> {
    Router::new()
        .mutation("start", signed_in(start))
        .mutation("end", signed_in(end))
        .mutation(
            "transcript.append",
            transcript::user_or_agent(transcript::append),
        )
        .query("sessions.list", signed_in(list_sessions))
        .query("sessions.get", signed_in(get_session))
        .mutation("sessions.delete", signed_in(delete_session))
}

/// How long a join token lets the app connect (a joined call outlives it).
const TOKEN_LIFETIME: chrono::Duration = chrono::Duration::minutes(10);
const CALL_TITLE: &str = "Voice call";
const SESSION_PAGE: PageSize = PageSize {
    default: 20,
    max: 100,
};

fn not_found() -> RpcError {
    RpcError::not_found("No such voice call.")
}

fn livekit(ctx: &Ctx) -> Result<&LiveKitConfig, RpcError> {
    ctx.state.config.voice.livekit.as_ref().ok_or_else(|| {
        RpcError::new(
            ErrorCode::PreconditionFailed,
            "Voice calls are not configured on this server.",
        )
        .with_reason(Reason::VoiceNotConfigured)
    })
}

async fn owned_call(
    ctx: &Ctx,
    caller: &SignedIn,
    id: Uuid,
) -> Result<voice_sessions::Model, RpcError> {
    store::find_call(&ctx.state.db, caller.user.id, id)
        .await
        .map_err(internal("load a voice call"))?
        .ok_or_else(not_found)
}

/// The room of a call: named after it, so webhooks find it.
fn room_name(call_id: Uuid) -> String {
    format!("alias-voice-{call_id}")
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VoiceStartInput {
    /// The chat the call continues; absent or null: a new chat session for the call.
    #[serde(default)]
    chat_session_id: Option<Uuid>,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct StartedCall {
    voice_session_id: Uuid,
    chat_session_id: Uuid,
    room_name: String,
    /// The LiveKit server to connect to (`ALIAS_LIVEKIT_URL`).
    server_url: String,
    /// LiveKit access token for this room only (join, publish, subscribe, data); it also
    /// creates the room with the assistant's agent dispatched.
    token: String,
    /// Connect before this; a joined call is not cut when it passes.
    expires_at: Timestamp,
}

/// What the dispatched agent receives as its job metadata (JSON).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AgentMetadata<'a> {
    voice_session_id: Uuid,
    chat_session_id: Uuid,
    user_id: Uuid,
    /// For `voice.transcript.append` (as `Authorization: Bearer …`), this call only.
    agent_token: &'a str,
}

/// `voice.start`
async fn start(
    ctx: Ctx,
    caller: SignedIn,
    input: VoiceStartInput,
) -> Result<StartedCall, RpcError> {
    let config = livekit(&ctx)?;
    let db = &ctx.state.db;
    let chat_session_id = match input.chat_session_id {
        Some(id) => {
            chat::find_session(db, caller.user.id, id)
                .await
                .map_err(internal("load a chat session"))?
                .ok_or_else(|| RpcError::not_found("No such chat."))?
                .id
        }
        None => {
            chat::new_session(db, caller.user.id, CALL_TITLE, None)
                .await
                .map_err(internal("create a chat session for a call"))?
                .id
        }
    };
    let now = Utc::now();
    let id = Uuid::now_v7();
    let room = room_name(id);
    let (agent_token, agent_token_hash) = transcript::new_agent_credential();
    let metadata = serde_json::to_string(&AgentMetadata {
        voice_session_id: id,
        chat_session_id,
        user_id: caller.user.id,
        agent_token: &agent_token,
    })
    .map_err(internal("write a call's agent metadata"))?;
    let expires_at = now + TOKEN_LIFETIME;
    let identity = caller.user.id.to_string();
    let token = livekit::access_token(
        config,
        livekit::JoinToken {
            room: &room,
            identity: &identity,
            name: &caller.user.name,
            agent_metadata: metadata,
            issued_at: now,
            expires_at,
        },
    )
    .map_err(internal("sign a LiveKit token"))?;
    store::insert_call(
        db,
        NewCall {
            id,
            user_id: caller.user.id,
            chat_session_id,
            room_name: room.clone(),
            agent_token_hash,
            now,
        },
    )
    .await
    .map_err(internal("save a voice call"))?;
    Ok(StartedCall {
        voice_session_id: id,
        chat_session_id,
        room_name: room,
        server_url: config.url.clone(),
        token,
        expires_at: expires_at.into(),
    })
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VoiceEndInput {
    voice_session_id: Uuid,
}

/// `voice.end`: the call ends now (or stays ended when it already was).
async fn end(ctx: Ctx, caller: SignedIn, input: VoiceEndInput) -> Result<VoiceSession, RpcError> {
    owned_call(&ctx, &caller, input.voice_session_id).await?;
    let ended = async {
        let transaction = begin_write(&ctx.state.db).await?;
        let select = voice_sessions::Entity::find_by_id(input.voice_session_id);
        let Some(call) = store::locked(&transaction, select)
            .one(&transaction)
            .await?
        else {
            return Ok(None);
        };
        let now = Utc::now();
        let signals = Signals {
            ended: Some(now),
            activity: Some(now),
            ..Signals::default()
        };
        let call = store::merge_signals(&transaction, call, signals).await?;
        transaction.commit().await?;
        Ok::<_, sea_orm::DbErr>(Some(call))
    }
    .await
    .map_err(internal("end a voice call"))?
    .ok_or_else(not_found)?;
    Ok(VoiceSession::from(&ended))
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VoiceListInput {
    /// 1 to 100 (default 20).
    #[serde(default)]
    limit: Option<u32>,
    /// The `nextCursor` of a previous page; absent or null for the first page.
    #[serde(default)]
    cursor: Option<String>,
    /// `forward` (default): older calls after the cursor. `backward`: newer ones.
    #[serde(default)]
    direction: Option<Direction>,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct VoiceSessionPage {
    /// Newest first within the page, in either direction.
    sessions: Vec<VoiceSession>,
    /// The next page's `cursor`, in the same direction; null at the end.
    next_cursor: Option<String>,
}

/// `voice.sessions.list`
async fn list_sessions(
    ctx: Ctx,
    caller: SignedIn,
    input: VoiceListInput,
) -> Result<VoiceSessionPage, RpcError> {
    let page = PageRequest::<Uuid>::of_input(
        SESSION_PAGE,
        input.limit,
        input.cursor.as_deref(),
        input.direction,
    )?;
    let rows = store::list_calls(&ctx.state.db, caller.user.id, &page)
        .await
        .map_err(internal("list voice calls"))?;
    let (rows, next_cursor) = page.finish_in_list_order(rows, |row| row.id);
    Ok(VoiceSessionPage {
        sessions: rows.iter().map(VoiceSession::from).collect(),
        next_cursor,
    })
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VoiceIdInput {
    id: Uuid,
}

/// `voice.sessions.get`
async fn get_session(
    ctx: Ctx,
    caller: SignedIn,
    input: VoiceIdInput,
) -> Result<VoiceSessionDetail, RpcError> {
    let call = owned_call(&ctx, &caller, input.id).await?;
    let transcript = store::transcript(&ctx.state.db, call.id, None)
        .await
        .map_err(internal("load a voice transcript"))?;
    Ok(VoiceSessionDetail {
        session: VoiceSession::from(&call),
        transcript: transcript
            .into_iter()
            .map(TranscriptSegment::from)
            .collect(),
    })
}

/// `voice.sessions.delete`: the call and what was said in it (its messages leave the chat
/// session and search); the chat session stays.
async fn delete_session(ctx: Ctx, caller: SignedIn, input: VoiceIdInput) -> Result<(), RpcError> {
    let call = owned_call(&ctx, &caller, input.id).await?;
    async {
        let transaction = begin_write(&ctx.state.db).await?;
        let messages = store::message_ids(&transaction, call.id).await?;
        store::delete_call(&transaction, call.id).await?;
        chat::delete_voice_turns(&transaction, call.chat_session_id, messages).await?;
        transaction.commit().await
    }
    .await
    .map_err(internal("delete a voice call"))
}
