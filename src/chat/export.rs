//! `chat.export`: one chat as Markdown (the current branch, to read) or as this server's own
//! JSON (the whole tree, to keep or import again).

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use entity::{chat_messages, chat_sessions};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::access::owned_session;
use super::attachments::{self, SentFile};
use super::store;
use super::tree::Tree;
use super::types::Role;
use crate::context::Ctx;
use crate::guard::SignedIn;
use crate::rpc::{RpcError, internal};

/// The `format` field of this server's JSON export.
pub const FORMAT: &str = "alias.chat";
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, specta::Type)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// The current branch, readable: the title, then each message with who said it.
    Markdown,
    /// The whole tree in this server's format (see the README), for `chat.import`.
    Json,
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportInput {
    session_id: Uuid,
    format: ExportFormat,
}

/// This server's JSON export of one chat.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportedChat {
    /// Always `FORMAT`.
    pub format: String,
    pub version: u32,
    pub title: String,
    pub created_at: DateTime<Utc>,
    /// The message the chat shows the branch of.
    pub current_leaf_id: Option<Uuid>,
    /// Every message of every branch, oldest first.
    pub messages: Vec<ExportedMessage>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportedMessage {
    pub id: Uuid,
    pub parent_id: Option<Uuid>,
    /// "user", "assistant" or "tool".
    pub role: String,
    pub content: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    /// The files it carried, by name (their bytes stay in `files.*`).
    #[serde(default)]
    pub attachments: Vec<SentFile>,
}

/// `chat.export`: the text itself (the contract: the app saves or shares it as is).
pub(super) async fn export(
    ctx: Ctx,
    caller: SignedIn,
    input: ExportInput,
) -> Result<String, RpcError> {
    let session = owned_session(&ctx, &caller, input.session_id).await?;
    let chat = exported_chat(&ctx.state.db, &session)
        .await
        .map_err(internal("export a chat"))?;
    match input.format {
        ExportFormat::Json => {
            serde_json::to_string_pretty(&chat).map_err(internal("export a chat"))
        }
        ExportFormat::Markdown => Ok(markdown(&chat)),
    }
}

/// Every chat session of a user, oldest first.
pub async fn sessions_of(
    db: &sea_orm::DatabaseConnection,
    user_id: Uuid,
) -> Result<Vec<chat_sessions::Model>, sea_orm::DbErr> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    chat_sessions::Entity::find()
        .filter(chat_sessions::Column::UserId.eq(user_id))
        .order_by_asc(chat_sessions::Column::Id)
        .all(db)
        .await
}

/// One chat in this server's JSON format: every message of every branch.
pub async fn exported_chat(
    db: &sea_orm::DatabaseConnection,
    session: &chat_sessions::Model,
) -> Result<ExportedChat, sea_orm::DbErr> {
    let tree = Tree::load(db, session.id).await?;
    let rows: Vec<chat_messages::Model> = store::all_messages(db, session.id).await?;
    let mut files = attachments::sent_files(db, rows.iter().map(|row| row.id).collect()).await?;
    Ok(ExportedChat {
        format: FORMAT.to_owned(),
        version: VERSION,
        title: session.title.clone(),
        created_at: session.created_at,
        current_leaf_id: tree.current_leaf(session),
        messages: rows
            .into_iter()
            .map(|row| ExportedMessage {
                attachments: files.remove(&row.id).unwrap_or_default(),
                id: row.id,
                parent_id: row.parent_id,
                role: row.role,
                content: row.content,
                created_at: row.created_at,
                provider: row.provider,
                model: row.model,
            })
            .collect(),
    })
}

/// The current branch as Markdown (tool messages left out: the answers say what came of them).
fn markdown(chat: &ExportedChat) -> String {
    let by_id: HashMap<Uuid, &ExportedMessage> = chat.messages.iter().map(|m| (m.id, m)).collect();
    let tree = Tree::of(
        chat.messages
            .iter()
            .map(|m| (m.id, m.parent_id, m.role == Role::Tool.as_str())),
    );
    let branch = chat
        .current_leaf_id
        .map(|leaf| tree.branch(leaf))
        .unwrap_or_default();
    let mut text = format!("# {}\n", chat.title);
    for message in branch.iter().filter_map(|id| by_id.get(id)) {
        let who = match (message.role.as_str(), &message.model) {
            ("user", _) => "You".to_owned(),
            (_, Some(model)) => format!("Assistant ({model})"),
            _ => "Assistant".to_owned(),
        };
        let when = message
            .created_at
            .to_rfc3339_opts(SecondsFormat::Secs, true);
        text.push_str(&format!("\n**{who}** · {when}\n\n{}\n", message.content));
        if !message.attachments.is_empty() {
            let names: Vec<&str> = message
                .attachments
                .iter()
                .map(|file| file.name.as_str())
                .collect();
            text.push_str(&format!("\n_Attached: {}_\n", names.join(", ")));
        }
    }
    text
}
