//! `chat.*`: sessions, messages (a tree of branches: regenerated answers and edited
//! messages), streamed AI replies that persist and resume, and search.

mod access;
mod attachments;
mod branches;
pub mod export;
mod import;
mod measures;
mod orphans;
mod projects;
mod reply;
pub mod search;
#[cfg(test)]
mod search_tests;
mod send;
mod store;
mod tools;
mod tree;
mod types;
mod voice_turns;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use measures::describe_metrics;
pub use orphans::sweep_periodically as sweep_orphaned_replies;
// For the projects domain: deleting a project with its chats.
pub use projects::delete_project_sessions;
pub use store::fail_interrupted_replies;
// For domains built on chats (voice calls add spoken turns to a chat session).
pub use store::{create_session as new_session, find_session};
pub use types::{ChatEvent, ChatSession, Message, MessageSource, MessageStatus, Role};
pub use voice_turns::{VoiceTurn, delete_voice_turns, insert_voice_turn};
// For share links: the conversation as the user sees it.
pub use store::conversation;

use self::access::owned_session;
use self::store::{SessionChanges, SessionCursor, SessionQuery};
use crate::context::{App, Ctx};
use crate::guard::{SignedIn, signed_in};
use crate::pagination::{Direction, PageRequest, PageSize};
use crate::reason::Reason;
use crate::rpc::{ErrorCode, FieldErrors, Router, RpcError, Timestamp, internal, present};
use crate::text;

pub fn router() -> Router<App> {
    Router::new()
        .query("sessions.list", signed_in(list_sessions))
        .mutation("sessions.create", signed_in(create_session))
        .query("sessions.get", signed_in(get_session))
        .mutation("sessions.update", signed_in(update_session))
        .mutation("sessions.delete", signed_in(delete_session))
        .query("messages.list", signed_in(branches::list_messages))
        .mutation("messages.setLiked", signed_in(set_liked))
        .mutation("send", signed_in(send::send))
        .legacy_subscription("send", signed_in(send::send_and_follow))
        .subscription("follow", signed_in(send::follow))
        .mutation("stop", signed_in(send::stop))
        .mutation("regenerate", signed_in(branches::regenerate))
        .mutation("edit", signed_in(branches::edit))
        .mutation("branches.select", signed_in(branches::select))
        .query("search", signed_in(search_chats))
        .query("export", signed_in(export::export))
        .mutation("import", signed_in(import::import))
        .form_alternative("import", signed_in(import::import_file))
}

const MAX_TITLE_CHARS: usize = 200;
/// A pasted memo or email fits (64k characters); the 1 MiB body limit holds it in any script.
const SESSION_PAGE: PageSize = PageSize {
    default: 20,
    max: 100,
};
const MESSAGE_PAGE: PageSize = PageSize {
    default: 50,
    max: 100,
};
const SEARCH_HITS: PageSize = PageSize {
    default: 20,
    max: 50,
};

fn parse_title(raw: &str) -> Result<String, String> {
    let title = raw.trim();
    if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
        Err(format!("use 1 to {MAX_TITLE_CHARS} characters"))
    } else {
        text::check_plain(title).map(|()| title.to_owned())
    }
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListSessionsInput {
    /// 1 to 100 (default 20).
    #[serde(default)]
    limit: Option<u32>,
    /// The `nextCursor` of a previous page; absent or null for the first page.
    #[serde(default)]
    cursor: Option<String>,
    /// `forward` (default): on down the list after the cursor. `backward`: the sessions just
    /// above the cursor (still in list order); without a cursor, the end of the list.
    #[serde(default)]
    direction: Option<Direction>,
    /// Matches titles and message text.
    #[serde(default)]
    search: Option<String>,
    /// Only archived sessions when true; only active ones otherwise.
    #[serde(default)]
    archived: Option<bool>,
    /// Only the sessions of this project (`projects.list`); `null`: only those in no project;
    /// left out: every session.
    #[serde(default, deserialize_with = "present")]
    #[specta(type = Option<Uuid>, optional)]
    project_id: Option<Option<Uuid>>,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct SessionPage {
    /// Pinned first, then most recent activity.
    sessions: Vec<ChatSession>,
    /// The next page's `cursor`, in the same direction; null at the end.
    next_cursor: Option<String>,
}

/// How many search matches narrow the session list at most.
const SEARCH_SESSIONS: u64 = 500;

/// `chat.sessions.list`
async fn list_sessions(
    ctx: Ctx,
    caller: SignedIn,
    input: ListSessionsInput,
) -> Result<SessionPage, RpcError> {
    let page = PageRequest::<SessionCursor>::of_input(
        SESSION_PAGE,
        input.limit,
        input.cursor.as_deref(),
        input.direction,
    )?;
    if let Some(Some(project_id)) = input.project_id {
        projects::check_owned(&ctx, caller.user.id, project_id).await?;
    }
    let db = &ctx.state.db;
    let only = match input
        .search
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty())
    {
        Some(query) => Some({
            limit_searches(&ctx, &caller).await?;
            search::matching_session_ids(db, caller.user.id, query, SEARCH_SESSIONS)
                .await
                .map_err(internal("search chat sessions"))?
        }),
        None => None,
    };
    let query = SessionQuery {
        archived: input.archived.unwrap_or(false),
        only,
        project: input.project_id,
        page: &page,
    };
    let rows = store::list_sessions(db, caller.user.id, query)
        .await
        .map_err(internal("list chat sessions"))?;
    let (rows, next_cursor) = page.finish_in_list_order(rows, SessionCursor::of);
    Ok(SessionPage {
        sessions: rows.into_iter().map(ChatSession::from).collect(),
        next_cursor,
    })
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSessionInput {
    #[serde(default)]
    title: Option<String>,
    /// One of the caller's projects (`projects.list`): the session starts in it.
    #[serde(default)]
    project_id: Option<Uuid>,
}

/// `chat.sessions.create`
async fn create_session(
    ctx: Ctx,
    caller: SignedIn,
    input: CreateSessionInput,
) -> Result<ChatSession, RpcError> {
    let mut errors = FieldErrors::default();
    let title = match input.title {
        Some(title) => errors.check("title", parse_title(&title)),
        None => Some(store::DEFAULT_TITLE.to_owned()),
    };
    let Some(title) = title else {
        return Err(errors.into_error());
    };
    if let Some(project_id) = input.project_id {
        projects::check_owned(&ctx, caller.user.id, project_id).await?;
    }
    let session = store::create_session(&ctx.state.db, caller.user.id, &title, input.project_id)
        .await
        .map_err(projects::project_gone("create a chat session"))?;
    Ok(session.into())
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdInput {
    id: Uuid,
}

/// `chat.sessions.get`
async fn get_session(ctx: Ctx, caller: SignedIn, input: IdInput) -> Result<ChatSession, RpcError> {
    Ok(owned_session(&ctx, &caller, input.id).await?.into())
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateSessionInput {
    id: Uuid,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    is_pinned: Option<bool>,
    #[serde(default)]
    is_archived: Option<bool>,
    /// Moves the session into one of the caller's projects; `null` moves it out of its
    /// project; left out, it stays where it is.
    #[serde(default, deserialize_with = "present")]
    #[specta(type = Option<Uuid>, optional)]
    project_id: Option<Option<Uuid>>,
}

/// `chat.sessions.update`
async fn update_session(
    ctx: Ctx,
    caller: SignedIn,
    input: UpdateSessionInput,
) -> Result<ChatSession, RpcError> {
    let mut errors = FieldErrors::default();
    let title = input
        .title
        .map(|title| errors.check("title", parse_title(&title)));
    if !errors.is_empty() {
        return Err(errors.into_error());
    }
    let session = owned_session(&ctx, &caller, input.id).await?;
    if let Some(Some(project_id)) = input.project_id {
        projects::check_owned(&ctx, caller.user.id, project_id).await?;
    }
    let changes = SessionChanges {
        title: title.flatten(),
        is_pinned: input.is_pinned,
        is_archived: input.is_archived,
        project_id: input.project_id,
    };
    let updated = store::update_session(&ctx.state.db, session, changes)
        .await
        .map_err(projects::project_gone("update a chat session"))?;
    Ok(updated.into())
}

/// `chat.sessions.delete`: the session and all its messages. A reply still being written
/// stops at once (its provider request dropped, nothing more written) and its followers see
/// their stream end.
async fn delete_session(ctx: Ctx, caller: SignedIn, input: IdInput) -> Result<(), RpcError> {
    let session = owned_session(&ctx, &caller, input.id).await?;
    remove_session(&ctx, session.id).await
}

/// Deletes a chat (the caller's, already checked), its messages and what hangs on them: a
/// reply still being written stops, files uploaded into the chat are audited as deleted.
async fn remove_session(ctx: &Ctx, session_id: Uuid) -> Result<(), RpcError> {
    ctx.state.streams.revoke_scope(session_id);
    let files = crate::files::of_session(ctx, session_id).await?;
    store::delete_session(&ctx.state.db, session_id)
        .await
        .map_err(internal("delete a chat session"))?;
    crate::files::audit_removed_with_chat(ctx, &files).await;
    Ok(())
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct MessagePage {
    /// Oldest first within the page, in either direction.
    messages: Vec<Message>,
    /// The next page's `cursor` in the same direction (forward: older; backward: newer);
    /// null at the end.
    next_cursor: Option<String>,
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetLikedInput {
    id: Uuid,
    liked: bool,
}

/// `chat.messages.setLiked`
async fn set_liked(ctx: Ctx, caller: SignedIn, input: SetLikedInput) -> Result<Message, RpcError> {
    let db = &ctx.state.db;
    let message = store::find_message(db, caller.user.id, input.id)
        .await
        .map_err(internal("load a chat message"))?
        .ok_or_else(|| RpcError::not_found("No such message."))?;
    let updated = store::set_liked(db, message, input.liked)
        .await
        .map_err(internal("like a chat message"))?;
    Ok(updated.into())
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SearchInput {
    query: String,
    /// 1 to 50 (default 20).
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct SearchHit {
    session_id: Uuid,
    session_title: String,
    message_id: Uuid,
    /// An excerpt with the matched words in `**bold**`.
    snippet: String,
    /// "voice" when the match was said in a voice call (`voice.sessions.*`), else "text".
    source: MessageSource,
    created_at: Timestamp,
}

#[derive(Serialize, specta::Type)]
pub struct SearchResults {
    /// Best match first.
    hits: Vec<SearchHit>,
}

const SEARCH_WINDOW: Duration = Duration::from_secs(60);

/// Counts a search against the caller's budget (`ALIAS_CHAT_SEARCH_LIMIT_PER_MINUTE`), each
/// call of a batch on its own: a search reads only the caller's rows, but thousands of them
/// back to back would still hold the database for everyone. (The assistant's own search tool
/// is bounded by the tool rounds of a reply instead.)
async fn limit_searches(ctx: &Ctx, caller: &SignedIn) -> Result<(), RpcError> {
    let state = &ctx.state;
    state
        .auth
        .rate_limits
        .check(
            "chat_search",
            caller.user.id,
            state.config.chat.search_limit_per_minute,
            SEARCH_WINDOW,
        )
        .await
        .map_err(|refusal| {
            refusal.into_error(|retry| {
                RpcError::new(
                    ErrorCode::TooManyRequests,
                    format!("Too many searches. Try again in {} seconds.", retry.0),
                )
                .with_reason(Reason::RateLimited)
                .with_retry_after(retry.0)
            })
        })
}

/// `chat.search`: any text is a valid query.
async fn search_chats(
    ctx: Ctx,
    caller: SignedIn,
    input: SearchInput,
) -> Result<SearchResults, RpcError> {
    let mut errors = FieldErrors::default();
    let Some(limit) = SEARCH_HITS.parse(&mut errors, input.limit) else {
        return Err(errors.into_error());
    };
    limit_searches(&ctx, &caller).await?;
    let hits = search::search_messages(&ctx.state.db, caller.user.id, &input.query, limit)
        .await
        .map_err(internal("search chats"))?;
    Ok(SearchResults {
        hits: hits
            .into_iter()
            .map(|hit| SearchHit {
                session_id: hit.session_id,
                session_title: hit.session_title,
                message_id: hit.message_id,
                snippet: hit.snippet,
                source: MessageSource::parse(&hit.source),
                created_at: hit.created_at.into(),
            })
            .collect(),
    })
}
