//! `voice.transcript.append`: from the app (the user's access token) or from the agent (the
//! call's own credential, minted by `voice.start` into the dispatch metadata). Each segment
//! becomes a message of the call's chat session, dated when it was said; a segment id seen
//! before changes nothing.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use entity::{voice_segments, voice_sessions};
use futures::future::BoxFuture;
use rand::RngCore as _;
use sea_orm::{DbErr, SqlErr};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::store;
use super::types::Speaker;
use super::{not_found, owned_call};
use crate::chat::{self, VoiceTurn};
use crate::context::Ctx;
use crate::db::begin_write;
use crate::guard::{SignedIn, authenticate, limit_calls};
use crate::reason::Reason;
use crate::rpc::{ErrorCode, FieldErrors, Guarded, RpcError, internal};
use crate::security::sha256_hex;
use crate::text;

/// Agent credentials start with this, so they are told from access tokens (JWTs) at a glance.
const AGENT_PREFIX: &str = "alias_voice_agent_";
/// An agent may still append this long after its call ended (its last words).
pub const AGENT_GRACE: chrono::Duration = chrono::Duration::minutes(10);
const MAX_SEGMENTS: usize = 100;
const MAX_SEGMENT_ID_CHARS: usize = 128;
const MAX_TEXT_CHARS: usize = 10_000;
/// Calls last at most a day.
const MAX_START_MS: u32 = 24 * 3600 * 1000;
/// A segment may be dated this far past the server's clock (client clocks drift).
const CLOCK_SLACK: chrono::Duration = chrono::Duration::minutes(1);

/// A new agent credential and its stored hash.
pub fn new_agent_credential() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let credential = format!("{AGENT_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = sha256_hex(&credential);
    (credential, hash)
}

/// Who is appending.
pub enum Appender {
    User(Box<SignedIn>),
    /// The agent of this call (its credential checked and still valid).
    Agent(Box<voice_sessions::Model>),
}

type Authenticate = fn(Ctx) -> BoxFuture<'static, Result<Appender, RpcError>>;

/// Like `signed_in`, but an agent credential is accepted too.
pub fn user_or_agent<F>(handler: F) -> Guarded<Authenticate, F> {
    Guarded::new(|ctx| Box::pin(async move { identify(&ctx).await }), handler)
}

async fn identify(ctx: &Ctx) -> Result<Appender, RpcError> {
    let credential = ctx
        .request
        .header("authorization")
        .and_then(|header| {
            header
                .strip_prefix("Bearer ")
                .or_else(|| header.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|token| token.starts_with(AGENT_PREFIX));
    let Some(credential) = credential else {
        return authenticate(ctx)
            .await
            .map(|user| Appender::User(Box::new(user)));
    };
    let call = store::find_by_agent_token(&ctx.state.db, &sha256_hex(credential))
        .await
        .map_err(internal("load a voice call by its agent credential"))?
        .ok_or_else(|| {
            RpcError::new(
                ErrorCode::Unauthorized,
                "This agent credential is not valid.",
            )
            .with_reason(Reason::InvalidToken)
        })?;
    if call
        .ended_at
        .is_some_and(|ended| Utc::now() > ended + AGENT_GRACE)
    {
        return Err(RpcError::new(
            ErrorCode::Unauthorized,
            "This call ended; its agent credential no longer works.",
        )
        .with_reason(Reason::VoiceCredentialExpired));
    }
    // The agent speaks for the user: its calls count against the user's budget.
    limit_calls(ctx, call.user_id).await?;
    Ok(Appender::Agent(Box::new(call)))
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TranscriptAppendInput {
    voice_session_id: Uuid,
    /// 1 to 100 segments, in any order.
    segments: Vec<TranscriptSegmentInput>,
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TranscriptSegmentInput {
    /// The client's id for the segment (1 to 128 characters), unique within the call:
    /// sending it again changes nothing.
    id: String,
    speaker: Speaker,
    /// 1 to 10,000 characters.
    text: String,
    /// Milliseconds since `voice.start`.
    start_ms: u32,
    #[serde(default)]
    end_ms: Option<u32>,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptAppendResult {
    /// Segments added now.
    appended: u32,
    /// Segments already known (ids sent before), left as they were.
    duplicates: u32,
}

struct Segment {
    id: String,
    speaker: Speaker,
    text: String,
    start_ms: u32,
    end_ms: Option<u32>,
}

fn parse_segments(
    input: Vec<TranscriptSegmentInput>,
    call: &voice_sessions::Model,
    now: DateTime<Utc>,
) -> Result<Vec<Segment>, RpcError> {
    let mut errors = FieldErrors::default();
    if input.is_empty() || input.len() > MAX_SEGMENTS {
        errors.check::<()>(
            "segments",
            Err(format!("send 1 to {MAX_SEGMENTS} segments")),
        );
        return Err(errors.into_error());
    }
    let elapsed_ms = (now + CLOCK_SLACK - call.created_at).num_milliseconds();
    let mut segments = Vec::with_capacity(input.len());
    for (index, segment) in input.into_iter().enumerate() {
        let field = |name: &str| format!("segments[{index}].{name}");
        let id = errors.check(&field("id"), {
            let id = segment.id.trim();
            if id.is_empty() || id.chars().count() > MAX_SEGMENT_ID_CHARS {
                Err(format!("use 1 to {MAX_SEGMENT_ID_CHARS} characters"))
            } else {
                text::check_plain(id).map(|()| id.to_owned())
            }
        });
        let content = errors.check(&field("text"), {
            let content = segment.text.trim();
            if !(1..=MAX_TEXT_CHARS).contains(&content.chars().count()) {
                Err(format!("write 1 to {MAX_TEXT_CHARS} characters"))
            } else {
                text::check_plain(content).map(|()| content.to_owned())
            }
        });
        let start_ms = errors.check(
            &field("startMs"),
            if segment.start_ms > MAX_START_MS {
                Err("calls last at most a day".to_owned())
            } else if i64::from(segment.start_ms) > elapsed_ms {
                Err("later than the call has lasted so far".to_owned())
            } else {
                Ok(segment.start_ms)
            },
        );
        let end_ms = errors.check(
            &field("endMs"),
            match segment.end_ms {
                Some(end) if end < segment.start_ms || end > MAX_START_MS => {
                    Err("use a time from startMs to a day".to_owned())
                }
                end => Ok(end),
            },
        );
        if let (Some(id), Some(text), Some(start_ms), Some(end_ms)) =
            (id, content, start_ms, end_ms)
        {
            segments.push(Segment {
                id,
                speaker: segment.speaker,
                text,
                start_ms,
                end_ms,
            });
        }
    }
    if errors.is_empty() {
        Ok(segments)
    } else {
        Err(errors.into_error())
    }
}

/// `voice.transcript.append`
pub async fn append(
    ctx: Ctx,
    appender: Appender,
    input: TranscriptAppendInput,
) -> Result<TranscriptAppendResult, RpcError> {
    let call = match appender {
        Appender::User(user) => owned_call(&ctx, &user, input.voice_session_id).await?,
        // A credential appends to its own call only; another id is as unknown as any.
        Appender::Agent(call) if call.id == input.voice_session_id => *call,
        Appender::Agent(_) => return Err(not_found()),
    };
    let segments = parse_segments(input.segments, &call, Utc::now())?;
    // Two requests racing with one segment id: the loser's insert breaks the unique key, and
    // its retry finds the winner's segment.
    match save(&ctx, &call, &segments).await {
        Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            save(&ctx, &call, &segments).await
        }
        result => result,
    }
    .map_err(internal("append to a voice transcript"))
}

async fn save(
    ctx: &Ctx,
    call: &voice_sessions::Model,
    segments: &[Segment],
) -> Result<TranscriptAppendResult, DbErr> {
    let db = &ctx.state.db;
    let transaction = begin_write(db).await?;
    let mut result = TranscriptAppendResult {
        appended: 0,
        duplicates: 0,
    };
    let mut seen = std::collections::HashSet::new();
    for segment in segments {
        if !seen.insert(segment.id.as_str())
            || store::segment_exists(&transaction, call.id, &segment.id).await?
        {
            result.duplicates += 1;
            continue;
        }
        let said_at = call.created_at + chrono::Duration::milliseconds(i64::from(segment.start_ms));
        let message = chat::insert_voice_turn(
            &transaction,
            VoiceTurn {
                session_id: call.chat_session_id,
                user_id: call.user_id,
                role: segment.speaker.role(),
                content: &segment.text,
                said_at,
            },
        )
        .await?;
        store::insert_segment(
            &transaction,
            voice_segments::Model {
                voice_session_id: call.id,
                segment_id: segment.id.clone(),
                message_id: message.id,
                speaker: segment.speaker.as_str().to_owned(),
                start_ms: i64::from(segment.start_ms),
                end_ms: segment.end_ms.map(i64::from),
            },
        )
        .await?;
        result.appended += 1;
    }
    if result.appended > 0 {
        store::refresh_after_append(&transaction, call.id, Utc::now()).await?;
    }
    transaction.commit().await?;
    Ok(result)
}
