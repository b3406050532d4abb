//! What the app sees of chats: sessions, messages and the events of a streamed reply.

use entity::{chat_messages, chat_sessions};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::files::File;
use crate::providers::AiProvider;
use crate::rpc::Timestamp;

#[derive(Debug, Clone, Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct ChatSession {
    pub id: Uuid,
    pub title: String,
    pub summary: Option<String>,
    pub is_pinned: bool,
    pub is_archived: bool,
    pub message_count: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_message_at: Timestamp,
    /// The last message of the branch the session shows (`chat.messages.list`); null before
    /// its first message.
    pub current_leaf_id: Option<Uuid>,
    /// The project it is in (`projects.list`), or null.
    pub project_id: Option<Uuid>,
}

impl From<chat_sessions::Model> for ChatSession {
    fn from(row: chat_sessions::Model) -> Self {
        Self {
            id: row.id,
            title: row.title,
            summary: row.summary,
            is_pinned: row.is_pinned,
            is_archived: row.is_archived,
            message_count: u32::try_from(row.message_count).unwrap_or_default(),
            created_at: row.created_at.into(),
            updated_at: row.updated_at.into(),
            last_message_at: row.last_message_at.into(),
            current_leaf_id: row.current_leaf_id,
            project_id: row.project_id,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, specta::Type)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "user" => Self::User,
            "tool" => Self::Tool,
            _ => Self::Assistant,
        }
    }
}

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, specta::Type)]
#[serde(rename_all = "lowercase")]
pub enum MessageSource {
    /// Typed in the chat (and the assistant's written replies).
    Text,
    /// Said in a voice call (`voice.transcript.append`), by the user or the assistant.
    Voice,
}

impl MessageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Voice => "voice",
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "voice" => Self::Voice,
            _ => Self::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, specta::Type)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    Complete,
    /// Being written: the text grows until the reply ends.
    Streaming,
    /// Stopped by the user or a server shutdown; the text so far is kept.
    Stopped,
    /// Failed: the message's `error` says why; the text so far is kept.
    Error,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Streaming => "streaming",
            Self::Stopped => "stopped",
            Self::Error => "error",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "complete" => Self::Complete,
            "streaming" => Self::Streaming,
            "stopped" => Self::Stopped,
            _ => Self::Error,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// A tool the assistant ran while writing a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, specta::Type)]
pub struct ToolCallRecord {
    pub name: String,
    #[specta(type = crate::rpc::JsonValue)]
    pub arguments: Value,
    #[specta(type = crate::rpc::JsonValue)]
    pub result: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: Uuid,
    pub session_id: Uuid,
    pub role: Role,
    pub content: String,
    /// "voice" for a turn said in a voice call (dated when it was said), "text" otherwise.
    pub source: MessageSource,
    pub status: MessageStatus,
    pub provider: Option<AiProvider>,
    pub model: Option<String>,
    pub usage: Option<Usage>,
    pub tool_calls: Vec<ToolCallRecord>,
    pub is_liked: bool,
    pub created_at: Timestamp,
    /// Why the reply failed, when `status` is "error" (null otherwise, and for replies that
    /// failed before the server kept reasons).
    pub error: Option<MessageError>,
    /// The files sent with a user's message (`chat.send { fileIds }`), in order, with fresh
    /// links. A file deleted since stays as a placeholder: status "deleted", no links.
    pub attachments: Vec<File>,
    /// The message it follows in its branch; null for a first message (and edits of it).
    pub parent_id: Option<Uuid>,
    /// The versions of this message (itself included), oldest first: the answers to the
    /// same message (`chat.regenerate`) or the edits of the same message (`chat.edit`), for
    /// "2/3" arrows; select one with `chat.branches.select`. Filled by `chat.messages.list`;
    /// elsewhere (events, `chat.send`'s answer) just this message's id. A tool message is
    /// alone.
    pub sibling_ids: Vec<Uuid>,
    /// This message's place in `siblingIds` (0-based).
    pub sibling_index: u32,
}

impl From<chat_messages::Model> for Message {
    fn from(row: chat_messages::Model) -> Self {
        let usage = match (row.input_tokens, row.output_tokens) {
            (Some(input), Some(output)) => Some(Usage {
                input_tokens: u32::try_from(input).unwrap_or_default(),
                output_tokens: u32::try_from(output).unwrap_or_default(),
            }),
            _ => None,
        };
        Self {
            id: row.id,
            session_id: row.session_id,
            role: Role::parse(&row.role),
            content: row.content,
            source: MessageSource::parse(&row.source),
            status: MessageStatus::parse(&row.status),
            provider: row.provider.as_deref().and_then(AiProvider::parse),
            model: row.model,
            usage,
            tool_calls: row
                .tool_calls
                .and_then(|calls| serde_json::from_value(calls).ok())
                .unwrap_or_default(),
            is_liked: row.is_liked,
            created_at: row.created_at.into(),
            error: row
                .error
                .and_then(|error| serde_json::from_value(error).ok()),
            attachments: Vec::new(),
            parent_id: row.parent_id,
            sibling_ids: vec![row.id],
            sibling_index: 0,
        }
    }
}

/// Why a reply failed: the app shows `message` and may switch on `reason`; with
/// `retryAfterSeconds`, sending again before then fails the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct MessageError {
    pub reason: MessageErrorReason,
    pub message: String,
    pub retry_after_seconds: Option<u32>,
}

/// The closed set of reasons a reply fails after the user's message was saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum MessageErrorReason {
    /// The provider refused the API key (now marked invalid): the user must update it.
    ApiKeyRejected,
    /// The provider is rate limiting the key (quota, requests per minute): retry after
    /// `retryAfterSeconds`.
    ProviderRateLimited,
    /// The provider is overloaded: retry after `retryAfterSeconds`.
    ProviderOverloaded,
    /// The provider did not start, or stopped sending, within the configured time.
    ProviderTimeout,
    /// The provider failed otherwise: an error status or an error inside the stream, a broken
    /// or malformed stream, or no connection at all.
    ProviderError,
    /// The server stopped (a crash) before the reply ended; the text so far is kept.
    Interrupted,
    /// The server could not save the reply.
    Internal,
}

/// One event of a reply (`chat.follow`), tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ChatEvent {
    /// The user's message, as saved, and the id of the reply being written (for `chat.stop`).
    UserMessage {
        message: Message,
        reply_message_id: Option<Uuid>,
    },
    /// More of the reply's text.
    Delta { text: String },
    ToolCall {
        name: String,
        #[specta(type = crate::rpc::JsonValue)]
        arguments: Value,
    },
    ToolResult {
        name: String,
        #[specta(type = crate::rpc::JsonValue)]
        result: Value,
    },
    /// The session's new title, after its first reply.
    Title { title: String },
    /// The reply as saved (its status tells complete, stopped or error, and `error` why it
    /// failed); the last event, however the reply ends.
    Done { message: Message },
}
