//! `chat.import`: chats from ChatGPT's `conversations.json` (`chatgpt.rs`) or this server's
//! own JSON (`chat.export`'s, or the chats of `users.export`'s), as new sessions with their
//! trees. Everything is checked before anything is written, and written in one transaction:
//! a bad file imports nothing and says what is wrong where.

mod chatgpt;

use chrono::{DateTime, Utc};
use entity::{chat_messages, chat_sessions};
use sea_orm::{ActiveModelTrait, ConnectionTrait, DbErr, Set};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::MAX_TITLE_CHARS;
use super::export::{ExportedChat, FORMAT as ALIAS_CHAT};
use super::search;
use super::store::DEFAULT_TITLE;
use super::tree;
use super::types::{ChatSession, MessageSource, MessageStatus, Role};
use crate::context::Ctx;
use crate::db::begin_write;
use crate::guard::SignedIn;
use crate::rpc::{FieldErrors, FormBody, FormLimits, RpcError, internal};

/// Which export a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, specta::Type)]
#[serde(rename_all = "lowercase")]
pub enum ImportFormat {
    /// ChatGPT's `conversations.json` (an array of conversations, or one).
    Chatgpt,
    /// This server's: `chat.export`'s JSON (`format: "alias.chat"`) or `users.export`'s file
    /// (`format: "alias.account"`, every chat in it).
    Alias,
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportInput {
    /// Absent: told from the data.
    #[serde(default)]
    format: Option<ImportFormat>,
    /// The file: its JSON, or its text (a string holding the JSON). At most
    /// `ALIAS_MAX_BODY_BYTES` in all.
    #[specta(type = crate::rpc::JsonValue)]
    data: Value,
}

#[derive(Serialize, specta::Type)]
pub struct ImportResult {
    /// The new chats, in the file's order.
    sessions: Vec<ChatSession>,
}

/// What is wrong with a file, and where (`data[2].mapping.abc.parent`).
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    field: String,
    message: String,
}

impl Problem {
    fn new(field: &str, message: &str) -> Self {
        Self {
            field: field.to_owned(),
            message: message.to_owned(),
        }
    }

    fn into_error(self) -> RpcError {
        let mut errors = FieldErrors::default();
        errors.check::<()>(&self.field, Err(self.message));
        errors.into_error()
    }
}

/// A chat read from a file, checked, not saved yet.
#[derive(Debug)]
pub struct Draft {
    title: String,
    created_at: DateTime<Utc>,
    /// Parents before children.
    messages: Vec<DraftMessage>,
    /// The index of the message the chat shows the branch of.
    current_leaf: Option<usize>,
}

#[derive(Debug)]
pub struct DraftMessage {
    /// The index of its parent (earlier in the list).
    parent: Option<usize>,
    role: Role,
    content: String,
    created_at: DateTime<Utc>,
    provider: Option<String>,
    model: Option<String>,
}

/// Imported text as stored text: line breaks as `\n`, other control characters removed (the
/// rule of every text this server keeps, `text::check_plain`).
fn clean_text(text: &str) -> String {
    text.replace("\r\n", "\n")
        .chars()
        .filter(|&c| !c.is_control() || matches!(c, '\n' | '\t'))
        .collect()
}

/// `chat.import`
pub(in crate::chat) async fn import(
    ctx: Ctx,
    caller: SignedIn,
    input: ImportInput,
) -> Result<ImportResult, RpcError> {
    let drafts = drafts(input.format, input.data).map_err(Problem::into_error)?;
    saved(&ctx, &caller, drafts).await
}

/// `chat.import` posted as a `FormData` with the file as `file` (and `format`, as the JSON
/// input's, optionally): up to `ALIAS_MAX_FILE_BYTES`, past the JSON body limit.
pub(in crate::chat) async fn import_file(
    ctx: Ctx,
    caller: SignedIn,
    form: FormBody,
) -> Result<ImportResult, RpcError> {
    let max_bytes = ctx.state.config.files.max_file_bytes;
    let form = form
        .read(FormLimits {
            max_body_bytes: max_bytes.saturating_add(64 * 1024),
            max_text_bytes: 64,
            max_fields: 4,
        })
        .await?;
    let mut errors = FieldErrors::default();
    let file = errors.check(
        "file",
        form.file("file")
            .ok_or_else(|| "attach the export as `file`".to_owned()),
    );
    let format = errors
        .check(
            "format",
            form.text("format").and_then(|text| {
                text.map(|text| match text {
                    "chatgpt" => Ok(ImportFormat::Chatgpt),
                    "alias" => Ok(ImportFormat::Alias),
                    _ => Err("use chatgpt or alias".to_owned()),
                })
                .transpose()
            }),
        )
        .flatten();
    let (Some(file), true) = (file, errors.is_empty()) else {
        return Err(errors.into_error());
    };
    let data: Value = serde_json::from_slice(&file.bytes)
        .map_err(|error| Problem::new("file", &format!("not JSON ({error})")).into_error())?;
    let drafts = drafts(format, data).map_err(Problem::into_error)?;
    saved(&ctx, &caller, drafts).await
}

async fn saved(ctx: &Ctx, caller: &SignedIn, drafts: Vec<Draft>) -> Result<ImportResult, RpcError> {
    let sessions = save(&ctx.state.db, caller.user.id, drafts)
        .await
        .map_err(internal("import chats"))?;
    Ok(ImportResult {
        sessions: sessions.into_iter().map(ChatSession::from).collect(),
    })
}

/// The chats in `data`, checked.
fn drafts(format: Option<ImportFormat>, data: Value) -> Result<Vec<Draft>, Problem> {
    let data = match data {
        Value::String(text) => serde_json::from_str(&text)
            .map_err(|error| Problem::new("data", &format!("not JSON ({error})")))?,
        data => data,
    };
    let format = match format {
        Some(format) => format,
        None if data.is_array() || data.get("mapping").is_some() => ImportFormat::Chatgpt,
        None if data.get("format").is_some() => ImportFormat::Alias,
        None => {
            return Err(Problem::new(
                "data",
                "neither ChatGPT's conversations.json nor this server's export",
            ));
        }
    };
    let drafts = match format {
        ImportFormat::Chatgpt => chatgpt::drafts(data)?,
        ImportFormat::Alias => alias_drafts(data)?,
    };
    if drafts.is_empty() {
        return Err(Problem::new("data", "holds no chat"));
    }
    Ok(drafts)
}

/// This server's export: one chat, or an account's chats.
fn alias_drafts(data: Value) -> Result<Vec<Draft>, Problem> {
    const ACCOUNT: &str = "alias.account";
    let chats = match data.get("format").and_then(Value::as_str) {
        Some(ALIAS_CHAT) => vec![("data".to_owned(), data)],
        Some(ACCOUNT) => match data.get("chats") {
            Some(Value::Array(chats)) => chats
                .iter()
                .enumerate()
                .map(|(at, chat)| (format!("data.chats[{at}]"), chat.clone()))
                .collect(),
            _ => {
                return Err(Problem::new(
                    "data.chats",
                    "an account export lists its chats",
                ));
            }
        },
        _ => {
            return Err(Problem::new(
                "data.format",
                &format!("this server's exports say \"{ALIAS_CHAT}\" or \"{ACCOUNT}\""),
            ));
        }
    };
    chats
        .into_iter()
        .map(|(path, chat)| {
            let chat: ExportedChat = serde_json::from_value(chat)
                .map_err(|error| Problem::new(&path, &format!("not an exported chat ({error})")))?;
            alias_draft(&path, chat)
        })
        .collect()
}

fn alias_draft(path: &str, chat: ExportedChat) -> Result<Draft, Problem> {
    let position: std::collections::HashMap<Uuid, usize> = chat
        .messages
        .iter()
        .enumerate()
        .map(|(at, message)| (message.id, at))
        .collect();
    let mut parents = Vec::with_capacity(chat.messages.len());
    for (at, message) in chat.messages.iter().enumerate() {
        let parent = match message.parent_id {
            Some(id) => Some(*position.get(&id).ok_or_else(|| {
                Problem::new(
                    &format!("{path}.messages[{at}].parentId"),
                    "names a message that is not in the chat",
                )
            })?),
            None => None,
        };
        parents.push(parent);
    }
    let order = parents_first(&parents).map_err(|at| {
        Problem::new(
            &format!("{path}.messages[{at}].parentId"),
            "its parents form a cycle",
        )
    })?;
    let mut new_index = vec![0; order.len()];
    for (new, &old) in order.iter().enumerate() {
        new_index[old] = new;
    }
    let mut messages: Vec<Option<_>> = chat.messages.into_iter().map(Some).collect();
    let mut drafted = Vec::with_capacity(order.len());
    for &old in &order {
        let Some(message) = messages[old].take() else {
            continue;
        };
        let role = match message.role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => {
                return Err(Problem::new(
                    &format!("{path}.messages[{old}].role"),
                    "use user, assistant or tool",
                ));
            }
        };
        drafted.push(DraftMessage {
            parent: parents[old].map(|p| new_index[p]),
            role,
            content: clean_text(&message.content),
            created_at: message.created_at,
            provider: message.provider,
            model: message.model,
        });
    }
    let current_leaf = match chat.current_leaf_id {
        Some(id) => Some(
            new_index[*position.get(&id).ok_or_else(|| {
                Problem::new(
                    &format!("{path}.currentLeafId"),
                    "names a message that is not in the chat",
                )
            })?],
        ),
        None => None,
    };
    Ok(Draft {
        title: chat.title,
        created_at: chat.created_at,
        messages: drafted,
        current_leaf,
    })
}

/// An order of indexes with every parent before its children, as close to the given order
/// as that allows (the given order itself when it already is), or the index of a message on
/// a cycle.
fn parents_first(parents: &[Option<usize>]) -> Result<Vec<usize>, usize> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); parents.len()];
    let mut ready = BinaryHeap::new();
    for (at, parent) in parents.iter().enumerate() {
        match parent {
            Some(parent) => children[*parent].push(at),
            None => ready.push(Reverse(at)),
        }
    }
    let mut order = Vec::with_capacity(parents.len());
    while let Some(Reverse(at)) = ready.pop() {
        order.push(at);
        ready.extend(children[at].iter().map(|&child| Reverse(child)));
    }
    if order.len() == parents.len() {
        return Ok(order);
    }
    let placed: std::collections::HashSet<usize> = order.into_iter().collect();
    Err((0..parents.len())
        .find(|at| !placed.contains(at))
        .unwrap_or_default())
}

/// A title as stored: cleaned, at most `MAX_TITLE_CHARS`, the default when empty.
fn title_of(raw: &str) -> String {
    let cleaned = clean_text(raw).replace(['\n', '\t'], " ");
    let title: String = cleaned.trim().chars().take(MAX_TITLE_CHARS).collect();
    if title.trim().is_empty() {
        DEFAULT_TITLE.to_owned()
    } else {
        title.trim().to_owned()
    }
}

/// Saves every draft as a new session, all or nothing.
async fn save(
    db: &sea_orm::DatabaseConnection,
    user_id: Uuid,
    drafts: Vec<Draft>,
) -> Result<Vec<chat_sessions::Model>, DbErr> {
    let transaction = begin_write(db).await?;
    let mut sessions = Vec::with_capacity(drafts.len());
    for draft in drafts {
        sessions.push(save_one(&transaction, user_id, draft).await?);
    }
    transaction.commit().await?;
    Ok(sessions)
}

async fn save_one(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    draft: Draft,
) -> Result<chat_sessions::Model, DbErr> {
    let now = Utc::now();
    let last_message_at = draft
        .messages
        .iter()
        .map(|message| message.created_at)
        .max()
        .unwrap_or(draft.created_at);
    let count = i32::try_from(draft.messages.len()).unwrap_or(i32::MAX);
    let session = chat_sessions::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        title: Set(title_of(&draft.title)),
        summary: Set(None),
        is_pinned: Set(false),
        is_archived: Set(false),
        message_count: Set(count),
        created_at: Set(draft.created_at),
        updated_at: Set(now),
        last_message_at: Set(last_message_at),
        current_leaf_id: Set(None),
        // Imported chats start in no project.
        project_id: Set(None),
    }
    .insert(db)
    .await?;
    search::index_session(db, &session).await?;
    // New ids in list order: parents first, so ids grow along every branch.
    let ids: Vec<Uuid> = draft.messages.iter().map(|_| Uuid::now_v7()).collect();
    let roles: Vec<Role> = draft.messages.iter().map(|message| message.role).collect();
    for (at, message) in draft.messages.into_iter().enumerate() {
        let row = chat_messages::ActiveModel {
            id: Set(ids[at]),
            session_id: Set(session.id),
            user_id: Set(user_id),
            role: Set(message.role.as_str().to_owned()),
            content: Set(message.content),
            status: Set(MessageStatus::Complete.as_str().to_owned()),
            provider: Set(message.provider),
            model: Set(message.model),
            input_tokens: Set(None),
            output_tokens: Set(None),
            tool_calls: Set(None),
            is_liked: Set(false),
            client_message_id: Set(None),
            // An answer to a user message replies to it (so it can be regenerated).
            reply_to: Set(message
                .parent
                .filter(|&parent| message.role == Role::Assistant && roles[parent] == Role::User)
                .map(|parent| ids[parent])),
            error: Set(None),
            created_at: Set(message.created_at),
            updated_at: Set(now),
            source: Set(MessageSource::Text.as_str().to_owned()),
            parent_id: Set(message.parent.map(|parent| ids[parent])),
        }
        .insert(db)
        .await?;
        search::index_message(db, &row).await?;
    }
    let loaded = tree::Tree::load(db, session.id).await?;
    let leaf = draft
        .current_leaf
        .map(|at| loaded.latest_leaf_under(ids[at]))
        .or_else(|| loaded.latest_leaf());
    tree::set_leaf(db, session.id, leaf).await?;
    Ok(chat_sessions::Model {
        current_leaf_id: leaf,
        ..session
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_first_and_cycles_are_found() {
        assert_eq!(parents_first(&[Some(2), None, Some(1)]), Ok(vec![1, 2, 0]));
        assert_eq!(
            parents_first(&[None, Some(0), None, Some(1)]),
            Ok(vec![0, 1, 2, 3])
        );
        assert!(parents_first(&[Some(1), Some(0), None]).is_err());
        assert!(parents_first(&[Some(0)]).is_err());
    }

    #[test]
    fn imported_text_is_cleaned() {
        assert_eq!(clean_text("a\r\nb\u{0}c\td"), "a\nbc\td");
        assert_eq!(title_of("  \n "), DEFAULT_TITLE);
        assert_eq!(title_of(&"x".repeat(500)).chars().count(), MAX_TITLE_CHARS);
    }
}
