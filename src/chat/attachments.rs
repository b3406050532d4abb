//! Files sent with messages (`chat.send { fileIds }`): linked to the user's message in the
//! order sent, shown as `Message.attachments` (signed links made fresh on every read; a file
//! deleted since shows as a placeholder with status "deleted"), and sent to the model with the
//! message's text, in the reply to it and in the history of later replies.

use std::collections::HashMap;

use entity::{chat_message_files, files as file_rows};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    Set,
};
use uuid::Uuid;

use super::types::{Message, Role};
use crate::context::{App, Ctx};
use crate::files::{self, attach};
use crate::providers::FilePart;
use crate::rpc::{RpcError, internal};

/// Files one message may carry.
pub const MAX_FILES: usize = 10;
/// What an inline file (image or PDF) costs of the history's character budget.
const INLINE_FILE_CHARS: usize = 2_000;
/// Inline bytes (before base64) one request may carry: Gemini takes 20 MB per request, base64
/// included. Older files past it are named, not sent again.
const MAX_INLINE_BYTES: usize = 12_000_000;

/// `fileIds`: at most `MAX_FILES`, each once.
pub fn check_ids(ids: &[Uuid]) -> Result<(), String> {
    if ids.len() > MAX_FILES {
        return Err(format!("send at most {MAX_FILES} files with a message"));
    }
    let mut seen = std::collections::HashSet::new();
    if ids.iter().all(|id| seen.insert(id)) {
        Ok(())
    } else {
        Err("send each file once".to_owned())
    }
}

/// Links the files to the message, in order.
pub async fn save(
    db: &impl ConnectionTrait,
    message_id: Uuid,
    rows: &[file_rows::Model],
) -> Result<(), DbErr> {
    for (position, row) in (0_i32..).zip(rows) {
        chat_message_files::ActiveModel {
            message_id: Set(message_id),
            position: Set(position),
            file_id: Set(row.id),
            filename: Set(row.filename.clone()),
            mime_type: Set(row.mime_type.clone()),
            size_bytes: Set(row.size_bytes),
        }
        .insert(db)
        .await?;
    }
    Ok(())
}

async fn links_of(
    db: &impl ConnectionTrait,
    message_ids: Vec<Uuid>,
) -> Result<Vec<chat_message_files::Model>, DbErr> {
    if message_ids.is_empty() {
        return Ok(Vec::new());
    }
    chat_message_files::Entity::find()
        .filter(chat_message_files::Column::MessageId.is_in(message_ids))
        .order_by_asc(chat_message_files::Column::MessageId)
        .order_by_asc(chat_message_files::Column::Position)
        .all(db)
        .await
}

/// The user's files the links point to, by id (deleted ones are absent).
async fn files_of(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    links: &[chat_message_files::Model],
) -> Result<HashMap<Uuid, file_rows::Model>, DbErr> {
    let ids = links.iter().map(|link| link.file_id).collect();
    Ok(attach::find_many(db, user_id, ids)
        .await?
        .into_iter()
        .map(|row| (row.id, row))
        .collect())
}

/// A file a message carried, as exported: by name (its bytes stay in `files.*`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SentFile {
    pub name: String,
    pub mime_type: String,
    pub size_bytes: i64,
}

/// The files each of `message_ids` carried, in order, by message.
pub async fn sent_files(
    db: &impl ConnectionTrait,
    message_ids: Vec<Uuid>,
) -> Result<HashMap<Uuid, Vec<SentFile>>, DbErr> {
    let mut sent: HashMap<Uuid, Vec<SentFile>> = HashMap::new();
    for link in links_of(db, message_ids).await? {
        sent.entry(link.message_id).or_default().push(SentFile {
            name: link.filename,
            mime_type: link.mime_type,
            size_bytes: link.size_bytes,
        });
    }
    Ok(sent)
}

/// The files a message carries that still exist, in order: what an edit of it carries.
pub async fn kept_file_ids(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    message_id: Uuid,
) -> Result<Vec<Uuid>, DbErr> {
    let links = links_of(db, vec![message_id]).await?;
    let rows = files_of(db, user_id, &links).await?;
    Ok(links
        .iter()
        .map(|link| link.file_id)
        .filter(|id| rows.contains_key(id))
        .collect())
}

/// Fills the user's messages' `attachments`.
pub async fn show(ctx: &Ctx, user_id: Uuid, messages: &mut [Message]) -> Result<(), RpcError> {
    let ids = messages
        .iter()
        .filter(|message| message.role == Role::User)
        .map(|message| message.id)
        .collect();
    let db = &ctx.state.db;
    let links = links_of(db, ids)
        .await
        .map_err(internal("load a message's files"))?;
    if links.is_empty() {
        return Ok(());
    }
    let rows = files_of(db, user_id, &links)
        .await
        .map_err(internal("load a message's files"))?;
    let view = files::links(ctx);
    for message in messages {
        message.attachments = links
            .iter()
            .filter(|link| link.message_id == message.id)
            .map(|link| match rows.get(&link.file_id) {
                Some(row) => view.view(row.clone()),
                None => attach::deleted(&attach::Sent {
                    id: link.file_id,
                    filename: &link.filename,
                    mime_type: &link.mime_type,
                    size_bytes: link.size_bytes,
                    sent_at: message.created_at,
                }),
            })
            .collect();
    }
    Ok(())
}

/// One message as the app sees it, with its attachments.
pub async fn shown(
    ctx: &Ctx,
    user_id: Uuid,
    row: entity::chat_messages::Model,
) -> Result<Message, RpcError> {
    let mut messages = [Message::from(row)];
    show(ctx, user_id, &mut messages).await?;
    let [message] = messages;
    Ok(message)
}

/// What the model receives of one message's files.
#[derive(Default)]
pub struct ForModel {
    /// Images and PDFs, inline.
    pub parts: Vec<FilePart>,
    /// Text files' contents and notes (deleted files, files not sent again), after the text.
    pub text: String,
    /// What they cost of the history's character budget.
    pub chars: usize,
}

impl ForModel {
    /// Whether the message had no files at all.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty() && self.text.is_empty()
    }
}

/// The files of the messages of one history, read as the history is built (newest first),
/// within `MAX_INLINE_BYTES`.
pub struct HistoryFiles<'a> {
    state: &'a App,
    links: Vec<chat_message_files::Model>,
    rows: HashMap<Uuid, file_rows::Model>,
    inline_left: usize,
    max_text_chars: usize,
}

impl<'a> HistoryFiles<'a> {
    pub async fn load(
        state: &'a App,
        user_id: Uuid,
        message_ids: Vec<Uuid>,
        max_text_chars: usize,
    ) -> Result<Self, DbErr> {
        let links = links_of(&state.db, message_ids).await?;
        let rows = files_of(&state.db, user_id, &links).await?;
        Ok(Self {
            state,
            links,
            rows,
            inline_left: MAX_INLINE_BYTES,
            max_text_chars,
        })
    }

    /// The files of one message, read from storage. The message being answered (`current`)
    /// always has its images sent, made smaller as needed so that all of them fit the
    /// request's inline budget; an older message's files are sent while the budget lasts,
    /// then only named.
    pub async fn of(&mut self, message_id: Uuid, current: bool) -> ForModel {
        let mut out = ForModel::default();
        let mut notes = Vec::new();
        let links: Vec<&chat_message_files::Model> = self
            .links
            .iter()
            .filter(|link| link.message_id == message_id)
            .collect();
        for (index, link) in links.iter().enumerate() {
            let Some(row) = self.rows.get(&link.file_id) else {
                notes.push(format!("[The file \"{}\" was deleted.]", link.filename));
                continue;
            };
            // The current message shares what is left among its remaining files.
            let share = if current {
                self.inline_left / (links.len() - index)
            } else {
                self.inline_left
            };
            let read = attach::for_model(&self.state.storage, row, self.max_text_chars, share);
            match read.await {
                attach::ForModel::Inline(part) if part.data.len() > self.inline_left => {
                    notes.push(if current {
                        format!(
                            "[The file \"{}\" is attached but too large to send with the others.]",
                            link.filename
                        )
                    } else {
                        format!(
                            "[The file \"{}\" was attached here; it is not sent again.]",
                            link.filename
                        )
                    });
                }
                attach::ForModel::Inline(part) => {
                    self.inline_left -= part.data.len();
                    out.chars += INLINE_FILE_CHARS;
                    out.parts.push(part);
                }
                attach::ForModel::Text(text) => notes.push(text),
            }
        }
        for note in notes {
            out.chars += note.chars().count();
            out.text.push_str("\n\n");
            out.text.push_str(&note);
        }
        out
    }
}
