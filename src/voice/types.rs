//! What the app sees of voice calls.

use chrono::{DateTime, Utc};
use entity::{voice_segments, voice_sessions};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::chat::Role;
use crate::rpc::Timestamp;

/// Who said a transcript segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    User,
    Assistant,
}

impl Speaker {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "user" => Self::User,
            _ => Self::Assistant,
        }
    }

    pub fn role(self) -> Role {
        match self {
            Self::User => Role::User,
            Self::Assistant => Role::Assistant,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, specta::Type)]
#[serde(rename_all = "lowercase")]
pub enum CallStatus {
    /// Not ended yet (`voice.end`, LiveKit's `room_finished` or the quiet-call sweep end it).
    Active,
    Ended,
}

#[derive(Debug, Clone, Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct VoiceSession {
    pub id: Uuid,
    pub chat_session_id: Uuid,
    pub room_name: String,
    pub status: CallStatus,
    /// From the start to the end of the call (the user's leaving, when they left before the
    /// room closed); null while it lasts.
    pub duration_seconds: Option<u32>,
    /// The transcript's opening words ("" before anything was said).
    pub transcript_preview: String,
    /// When LiveKit saw the room start or the user join (`voice.start`'s time until then).
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
}

/// When the call ended for the user: the room's end, or their leaving before it when they
/// left last (a leave followed by a rejoin does not count).
fn effective_end(call: &voice_sessions::Model) -> Option<DateTime<Utc>> {
    let ended = call.ended_at?;
    let left_last = match (call.user_left_at, call.user_joined_at) {
        (Some(left), Some(joined)) => (left >= joined).then_some(left),
        (left, None) => left,
        (None, Some(_)) => None,
    };
    Some(left_last.map_or(ended, |left| left.min(ended)))
}

impl From<&voice_sessions::Model> for VoiceSession {
    fn from(call: &voice_sessions::Model) -> Self {
        let started = call.started_at.unwrap_or(call.created_at);
        let duration_seconds = effective_end(call)
            .map(|end| u32::try_from((end - started).num_seconds().max(0)).unwrap_or(u32::MAX));
        Self {
            id: call.id,
            chat_session_id: call.chat_session_id,
            room_name: call.room_name.clone(),
            status: if call.ended_at.is_some() {
                CallStatus::Ended
            } else {
                CallStatus::Active
            },
            duration_seconds,
            transcript_preview: call.transcript_preview.clone(),
            started_at: started.into(),
            ended_at: call.ended_at.map(Timestamp::from),
        }
    }
}

/// One thing said, as its chat message shows it.
#[derive(Debug, Clone, Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptSegment {
    /// The client's segment id.
    pub id: String,
    /// The chat message it became (in the call's chat session).
    pub message_id: Uuid,
    pub speaker: Speaker,
    pub text: String,
    /// Milliseconds since `voice.start`.
    pub start_ms: u32,
    pub end_ms: Option<u32>,
}

impl From<(voice_segments::Model, String)> for TranscriptSegment {
    fn from((segment, text): (voice_segments::Model, String)) -> Self {
        let millis = |value: i64| u32::try_from(value).unwrap_or_default();
        Self {
            id: segment.segment_id,
            message_id: segment.message_id,
            speaker: Speaker::parse(&segment.speaker),
            text,
            start_ms: millis(segment.start_ms),
            end_ms: segment.end_ms.map(millis),
        }
    }
}

#[derive(Debug, Clone, Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct VoiceSessionDetail {
    #[serde(flatten)]
    pub session: VoiceSession,
    /// In time order.
    pub transcript: Vec<TranscriptSegment>,
}
