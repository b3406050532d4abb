//! What a share link holds: a copy of the conversation's words at the moment it was made
//! (later messages, edits and deletions never reach it), and the link's secret token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use entity::chat_messages;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::chat::{MessageStatus, Role};
use crate::security::TokenMac;

/// Messages one link holds at most (a page past that is unreadable on a phone anyway).
pub const MAX_MESSAGES: usize = 1_000;

/// One message as the page shows it. Tool calls and results (which may quote the user's
/// mail), attachments (private files) and replies still being written are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SharedMessage {
    /// "user" or "assistant".
    pub role: String,
    pub content: String,
    /// The model that wrote an assistant's reply.
    pub model: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl SharedMessage {
    pub fn is_user(&self) -> bool {
        self.role == Role::User.as_str()
    }
}

/// Why a conversation cannot be shared as asked.
#[derive(Debug, PartialEq, Eq)]
pub enum SnapshotError {
    /// `upToMessageId` is not a message of this conversation.
    NoSuchMessage,
    /// More than [`MAX_MESSAGES`] messages would be shared.
    TooLong,
}

/// The conversation (oldest first) up to and including `up_to`, as shared.
pub fn take(
    conversation: Vec<chat_messages::Model>,
    up_to: Option<Uuid>,
) -> Result<Vec<SharedMessage>, SnapshotError> {
    let mut conversation = conversation;
    if let Some(last) = up_to {
        let position = conversation
            .iter()
            .position(|message| message.id == last)
            .ok_or(SnapshotError::NoSuchMessage)?;
        conversation.truncate(position + 1);
    }
    let shared: Vec<SharedMessage> = conversation
        .into_iter()
        .filter(is_shared)
        .map(|message| SharedMessage {
            role: message.role,
            content: message.content,
            model: message.model,
            created_at: message.created_at,
        })
        .collect();
    if shared.len() > MAX_MESSAGES {
        return Err(SnapshotError::TooLong);
    }
    Ok(shared)
}

fn is_shared(message: &chat_messages::Model) -> bool {
    let said = [Role::User.as_str(), Role::Assistant.as_str()].contains(&message.role.as_str());
    said && message.status != MessageStatus::Streaming.as_str() && !message.content.is_empty()
}

/// The messages as stored in `shares.messages`.
pub fn to_json(messages: &[SharedMessage]) -> serde_json::Value {
    serde_json::to_value(messages).unwrap_or_default()
}

/// The messages of a stored snapshot (none if the stored value is not one).
pub fn from_json(value: serde_json::Value) -> Vec<SharedMessage> {
    serde_json::from_value(value).unwrap_or_default()
}

/// The key under which link tokens are hashed (a token of another kind never matches).
const TOKEN_DOMAIN: &str = "share-link";

/// A new link's token (32 random bytes, base64url: 43 characters) and its keyed hash, the
/// only form stored.
pub fn new_token(mac: &TokenMac) -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = token_hash(mac, &token);
    (token, hash)
}

pub fn token_hash(mac: &TokenMac, token: &str) -> String {
    mac.hex(TOKEN_DOMAIN, token)
}

/// Whether `text` could be a token at all (so garbage is turned away without a lookup).
pub fn looks_like_token(text: &str) -> bool {
    text.len() == 43
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: Role, content: &str, status: MessageStatus) -> chat_messages::Model {
        let now = Utc::now();
        chat_messages::Model {
            id: Uuid::now_v7(),
            session_id: Uuid::nil(),
            user_id: Uuid::nil(),
            role: role.as_str().to_owned(),
            content: content.to_owned(),
            status: status.as_str().to_owned(),
            provider: None,
            model: None,
            input_tokens: None,
            output_tokens: None,
            tool_calls: None,
            is_liked: false,
            client_message_id: None,
            reply_to: None,
            parent_id: None,
            error: None,
            created_at: now,
            updated_at: now,
            source: "text".to_owned(),
        }
    }

    #[test]
    fn only_finished_words_of_user_and_assistant_are_shared() {
        let conversation = vec![
            message(Role::User, "What time is it?", MessageStatus::Complete),
            message(
                Role::Tool,
                "{\"localTime\":\"9:00\"}",
                MessageStatus::Complete,
            ),
            message(Role::Assistant, "Nine.", MessageStatus::Complete),
            message(Role::User, "Thanks", MessageStatus::Complete),
            message(Role::Assistant, "You're we", MessageStatus::Streaming),
        ];
        let shared = take(conversation, None).unwrap_or_default();
        let said: Vec<&str> = shared.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(said, ["What time is it?", "Nine.", "Thanks"]);
        assert!(shared[0].is_user());
    }

    #[test]
    fn up_to_cuts_after_that_message_and_must_be_in_the_conversation() {
        let conversation = vec![
            message(Role::User, "one", MessageStatus::Complete),
            message(Role::Assistant, "two", MessageStatus::Complete),
            message(Role::User, "three", MessageStatus::Complete),
        ];
        let second = conversation[1].id;
        let shared = take(conversation.clone(), Some(second)).unwrap_or_default();
        assert_eq!(shared.len(), 2);
        assert_eq!(
            take(conversation, Some(Uuid::now_v7())),
            Err(SnapshotError::NoSuchMessage)
        );
    }

    #[test]
    fn snapshots_round_trip_through_json() {
        let shared = take(
            vec![message(Role::User, "hi", MessageStatus::Complete)],
            None,
        )
        .unwrap_or_default();
        assert_eq!(from_json(to_json(&shared)), shared);
        assert!(from_json(serde_json::json!({ "not": "a list" })).is_empty());
    }

    #[test]
    fn tokens_are_43_url_safe_characters_and_only_their_hash_is_kept() {
        let mac = TokenMac::new(&zeroize::Zeroizing::new([7u8; 32]));
        let (token, hash) = new_token(&mac);
        assert!(looks_like_token(&token), "{token}");
        assert_eq!(hash, token_hash(&mac, &token));
        assert!(!hash.contains(&token));
        assert_ne!(new_token(&mac).0, token);
        assert!(!looks_like_token("short"));
        assert!(!looks_like_token(&format!("{}!", &token[..42])));
    }
}
