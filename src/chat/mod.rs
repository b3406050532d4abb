//! `chat.*`: sessions, messages, streamed AI replies that persist and resume, and search.

mod attachments;
mod orphans;
mod reply;
pub mod search;
#[cfg(test)]
mod search_tests;
mod store;
mod tools;
mod types;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

pub use orphans::sweep_periodically as sweep_orphaned_replies;
pub use store::fail_interrupted_replies;
// For domains built on chats (voice calls add spoken turns to a chat session).
pub use store::{
    VoiceTurn, create_session as new_session, delete_voice_turns, find_session, insert_voice_turn,
};
pub use types::{ChatEvent, ChatSession, Message, MessageSource, Role};

use self::reply::ReplyJob;
use self::store::{NewMessage, SessionChanges, SessionCursor, SessionQuery};
use self::types::MessageStatus;
use crate::context::{App, Ctx};
use crate::guard::{SignedIn, signed_in};
use crate::keys;
use crate::pagination::{Direction, PageRequest, PageSize};
use crate::preferences;
use crate::providers::AiProvider;
use crate::reason::Reason;
use crate::rpc::{
    ErrorCode, FieldErrors, Resumed, Router, RpcError, Serialized, Timestamp, Tracked, internal,
};
use crate::streams::{LiveStream, Reservation};
use crate::text;
use crate::usage;

pub fn router() -> Router<App> {
    Router::new()
        .query("sessions.list", signed_in(list_sessions))
        .mutation("sessions.create", signed_in(create_session))
        .query("sessions.get", signed_in(get_session))
        .mutation("sessions.update", signed_in(update_session))
        .mutation("sessions.delete", signed_in(delete_session))
        .query("messages.list", signed_in(list_messages))
        .mutation("messages.setLiked", signed_in(set_liked))
        .mutation("send", signed_in(send))
        .legacy_subscription("send", signed_in(send_and_follow))
        .subscription("follow", signed_in(follow))
        .mutation("stop", signed_in(stop))
        .query("search", signed_in(search_chats))
}

const MAX_TITLE_CHARS: usize = 200;
/// A pasted memo or email fits (64k characters); the 1 MiB body limit holds it in any script.
const MAX_MESSAGE_CHARS: usize = 100_000;
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

fn not_found() -> RpcError {
    RpcError::not_found("No such chat.")
}

fn parse_title(raw: &str) -> Result<String, String> {
    let title = raw.trim();
    if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
        Err(format!("use 1 to {MAX_TITLE_CHARS} characters"))
    } else {
        text::check_plain(title).map(|()| title.to_owned())
    }
}

/// A message's text: 1 to `MAX_MESSAGE_CHARS` characters, or none when it carries files (a
/// photo or a PDF alone is a question too).
fn parse_content(raw: &str, has_files: bool) -> Result<String, String> {
    let content = raw.trim();
    let least = usize::from(!has_files);
    if !(least..=MAX_MESSAGE_CHARS).contains(&content.chars().count()) {
        return Err(format!("write {least} to {MAX_MESSAGE_CHARS} characters"));
    }
    text::check_plain(content).map(|()| content.to_owned())
}

async fn owned_session(
    ctx: &Ctx,
    caller: &SignedIn,
    id: Uuid,
) -> Result<entity::chat_sessions::Model, RpcError> {
    store::find_session(&ctx.state.db, caller.user.id, id)
        .await
        .map_err(internal("load a chat session"))?
        .ok_or_else(not_found)
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
    let mut errors = FieldErrors::default();
    let Some(page) = PageRequest::<SessionCursor>::parse(
        &mut errors,
        SESSION_PAGE,
        input.limit,
        input.cursor.as_deref(),
        input.direction,
    ) else {
        return Err(errors.into_error());
    };
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
        page: &page,
    };
    let rows = store::list_sessions(db, caller.user.id, query)
        .await
        .map_err(internal("list chat sessions"))?;
    let (mut rows, next_cursor) = page.finish(rows, SessionCursor::of);
    if !page.is_forward() {
        rows.reverse();
    }
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
    let session = store::create_session(&ctx.state.db, caller.user.id, &title)
        .await
        .map_err(internal("create a chat session"))?;
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
    let changes = SessionChanges {
        title: title.flatten(),
        is_pinned: input.is_pinned,
        is_archived: input.is_archived,
    };
    let updated = store::update_session(&ctx.state.db, session, changes)
        .await
        .map_err(internal("update a chat session"))?;
    Ok(updated.into())
}

/// `chat.sessions.delete`: the session and all its messages. A reply still being written
/// stops at once (its provider request dropped, nothing more written) and its followers see
/// their stream end.
async fn delete_session(ctx: Ctx, caller: SignedIn, input: IdInput) -> Result<(), RpcError> {
    let session = owned_session(&ctx, &caller, input.id).await?;
    ctx.state.streams.revoke_scope(session.id);
    let files = crate::files::of_session(&ctx, session.id).await?;
    store::delete_session(&ctx.state.db, session.id)
        .await
        .map_err(internal("delete a chat session"))?;
    crate::files::audit_removed_with_chat(&ctx, &files).await;
    Ok(())
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListMessagesInput {
    session_id: Uuid,
    /// 1 to 100 (default 50).
    #[serde(default)]
    limit: Option<u32>,
    /// A message id: the `nextCursor` of a previous page, or any message's (e.g. a search
    /// hit's). The page starts next to it, without it. Absent or null: from the newest
    /// message (forward) or the oldest (backward).
    #[serde(default)]
    cursor: Option<String>,
    /// `forward` (default, `fetchNextPage`): older messages, so pages walk back from the
    /// newest and new messages never shift them. `backward` (`fetchPreviousPage`): newer ones.
    #[serde(default)]
    direction: Option<Direction>,
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

/// `chat.messages.list`
async fn list_messages(
    ctx: Ctx,
    caller: SignedIn,
    input: ListMessagesInput,
) -> Result<MessagePage, RpcError> {
    let mut errors = FieldErrors::default();
    let Some(page) = PageRequest::<Uuid>::parse(
        &mut errors,
        MESSAGE_PAGE,
        input.limit,
        input.cursor.as_deref(),
        input.direction,
    ) else {
        return Err(errors.into_error());
    };
    let session = owned_session(&ctx, &caller, input.session_id).await?;
    let rows = store::list_messages(&ctx.state.db, session.id, &page)
        .await
        .map_err(internal("list chat messages"))?;
    let (mut rows, next_cursor) = page.finish(rows, |row| row.id);
    if page.is_forward() {
        rows.reverse();
    }
    let mut messages: Vec<Message> = rows.into_iter().map(Message::from).collect();
    attachments::show(&ctx, caller.user.id, &mut messages).await?;
    Ok(MessagePage {
        messages,
        next_cursor,
    })
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
pub struct SendInput {
    session_id: Uuid,
    /// 1 to 100,000 characters; may be empty when `fileIds` carries files.
    content: String,
    /// A UUID the app makes per message: sending it again never makes a second message or
    /// a second provider call, it answers with the first.
    client_message_id: Uuid,
    /// Defaults to the user's preference.
    #[serde(default)]
    provider: Option<AiProvider>,
    /// Defaults to the user's preference (or the provider's default model).
    #[serde(default)]
    model: Option<String>,
    /// Up to 10 of the caller's ready files (`files.*`), sent to the model with the text:
    /// images and PDFs inline, text files as text. They become the message's `attachments`.
    #[serde(default)]
    file_ids: Option<Vec<Uuid>>,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct SentMessage {
    /// The user's message, as saved.
    user_message: Serialized<Message>,
    /// The reply being written: stream it with `chat.follow`, stop it with `chat.stop`.
    reply_message_id: Uuid,
}

type ChatEvents =
    Pin<Box<dyn Stream<Item = Result<Tracked<Serialized<ChatEvent>>, RpcError>> + Send>>;

/// `chat.send`: saves the message and starts the reply, which runs on the server whatever
/// happens to the connection; `chat.follow` streams it. Failures before the reply starts
/// (no such chat, no key, limits) are this call's errors.
async fn send(ctx: Ctx, caller: SignedIn, input: SendInput) -> Result<SentMessage, RpcError> {
    let reply = reply_stream(&ctx, caller, &input).await?;
    sent_message(reply).await
}

/// GET `chat.send`, the subscription of clients built before `chat.follow`: sends, then
/// follows the reply in one stream; reconnecting with the same input resumes after
/// `lastEventId`.
async fn send_and_follow(
    ctx: Ctx,
    caller: SignedIn,
    resumed: Resumed<SendInput>,
) -> Result<ChatEvents, RpcError> {
    let reply = reply_stream(&ctx, caller, &resumed.input).await?;
    Ok(Box::pin(reply.subscribe(resumed.last_event_id.as_deref())))
}

/// Checks a message, then finds the stream of its reply (sent before with this
/// `clientMessageId`) or starts it.
async fn reply_stream(
    ctx: &Ctx,
    caller: SignedIn,
    input: &SendInput,
) -> Result<Arc<LiveStream>, RpcError> {
    usage::limit_sends(ctx, caller.user.id).await?;
    let mut errors = FieldErrors::default();
    let has_files = input.file_ids.as_ref().is_some_and(|ids| !ids.is_empty());
    let content = errors.check("content", parse_content(&input.content, has_files));
    if let Some(model) = &input.model {
        errors.check("model", preferences::parse_model(model));
    }
    if let Some(file_ids) = &input.file_ids {
        errors.check("fileIds", attachments::check_ids(file_ids));
    }
    let (Some(content), true) = (content, errors.is_empty()) else {
        return Err(errors.into_error());
    };
    let session = owned_session(ctx, &caller, input.session_id).await?;
    let streams = &ctx.state.streams;
    match streams.reserve(session.id, input.client_message_id, caller.user.id) {
        Reservation::Existing(generation) if generation.owner == caller.user.id => Ok(generation),
        Reservation::Existing(_) => Err(not_found()),
        Reservation::New(generation) => {
            let started = start(
                ctx,
                caller,
                session,
                input,
                content,
                Arc::clone(&generation),
            )
            .await;
            if let Err(error) = started {
                streams.release(input.session_id, input.client_message_id);
                generation.fail(error.clone());
                return Err(error);
            }
            Ok(generation)
        }
    }
}

/// The saved message and its reply's id, from the reply stream's first event: the same for
/// every send of one `clientMessageId`, waiting while a concurrent first send still starts
/// the reply (and failing as it does).
async fn sent_message(reply: Arc<LiveStream>) -> Result<SentMessage, RpcError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct FirstEvent {
        #[serde(rename = "type")]
        kind: String,
        message: Box<RawValue>,
        reply_message_id: Option<Uuid>,
    }
    let events = reply.subscribe::<ChatEvent>(None);
    let first = match std::pin::pin!(events).next().await {
        Some(event) => event?,
        None => {
            tracing::error!("a chat reply stream ended without events");
            return Err(RpcError::internal());
        }
    };
    let event: FirstEvent = serde_json::from_str(first.data.raw().get())
        .map_err(internal("read a chat reply's first event"))?;
    if event.kind != "userMessage" {
        tracing::error!(
            kind = event.kind,
            "a chat reply stream starts with another event"
        );
        return Err(RpcError::internal());
    }
    let reply_message_id = event
        .reply_message_id
        .ok_or_else(|| RpcError::not_found("This message's reply no longer exists."))?;
    Ok(SentMessage {
        user_message: Serialized::assume(event.message),
        reply_message_id,
    })
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FollowInput {
    /// The reply: `replyMessageId` from `chat.send`.
    message_id: Uuid,
    /// Set by httpSubscriptionLink on reconnect (or by the app reopening a reply): the stream
    /// resumes after it.
    #[serde(default)]
    last_event_id: Option<String>,
}

/// `chat.follow`: a reply's events from the start (or after `lastEventId`) until its `done`,
/// live while it is written, whichever instance writes it (another one's through Redis). A
/// reply that ended before the server's memory of it (a restart, or long ago) is replayed
/// from what was saved: `userMessage`, then `done` with the whole text; after a
/// `lastEventId`, only that `done`, numbered after it.
async fn follow(ctx: Ctx, caller: SignedIn, input: FollowInput) -> Result<ChatEvents, RpcError> {
    let last_event_id = input.last_event_id.as_deref();
    if let Some(reply) = ctx
        .state
        .streams
        .producing(caller.user.id, input.message_id)
    {
        return Ok(Box::pin(reply.subscribe(last_event_id)));
    }
    let db = &ctx.state.db;
    let no_reply = || RpcError::not_found("No such reply.");
    let reply = store::find_message(db, caller.user.id, input.message_id)
        .await
        .map_err(internal("load a chat reply"))?
        .filter(|message| message.role == Role::Assistant.as_str())
        .ok_or_else(no_reply)?;
    match ctx
        .state
        .streams
        .follow_elsewhere(reply.id, last_event_id)
        .await
    {
        Ok(Some(elsewhere)) => return Ok(Box::pin(elsewhere)),
        Ok(None) => {}
        // Redis down: a reply still being written cannot be followed; a finished one is
        // replayed from what was saved.
        Err(error) if reply.status == MessageStatus::Streaming.as_str() => return Err(error),
        Err(_) => {}
    }
    let user_message = match reply.reply_to {
        Some(id) => store::find_message(db, caller.user.id, id)
            .await
            .map_err(internal("load a chat message"))?,
        None => None,
    };
    let after = last_event_id
        .and_then(|id| id.parse::<u64>().ok())
        .unwrap_or(0);
    let mut events = Vec::new();
    if after == 0
        && let Some(message) = user_message
    {
        events.push(saved_event(
            1,
            &ChatEvent::UserMessage {
                message: attachments::shown(&ctx, caller.user.id, message).await?,
                reply_message_id: Some(reply.id),
            },
        ));
    }
    let done = ChatEvent::Done {
        message: reply.into(),
    };
    events.push(saved_event(after.max(1) + 1, &done));
    Ok(Box::pin(futures::stream::iter(events)))
}

fn saved_event(id: u64, event: &ChatEvent) -> Result<Tracked<Serialized<ChatEvent>>, RpcError> {
    let event = Serialized::new(event).map_err(internal("serialize a chat event"))?;
    Ok(Tracked::new(id.to_string(), event))
}

/// Starts the reply to a new message; or, when this message was answered before the
/// generation left memory (or the server restarted), replays the saved outcome.
async fn start(
    ctx: &Ctx,
    caller: SignedIn,
    session: entity::chat_sessions::Model,
    input: &SendInput,
    content: String,
    generation: Arc<LiveStream>,
) -> Result<(), RpcError> {
    let state = &ctx.state;
    let db = &state.db;
    if replay_saved(ctx, &caller, &session, input, &generation).await? {
        return Ok(());
    }
    let files = crate::files::attach::sendable(
        ctx,
        caller.user.id,
        input.file_ids.as_deref().unwrap_or_default(),
    )
    .await?;
    let preferences = preferences::for_user(db, caller.user.id).await?;
    let provider = input.provider.unwrap_or(preferences.ai_provider);
    let model = match (&input.model, input.provider) {
        (Some(model), _) => model.trim().to_owned(),
        (None, Some(provider)) if provider != preferences.ai_provider => {
            provider.default_model().to_owned()
        }
        (None, _) => preferences.ai_model.clone(),
    };
    let api_key = keys::for_user(state, &ctx.request, caller.user.id, provider).await?;
    let first_exchange = session.message_count == 0;
    // The last check before anything is saved: a refused send costs no provider call.
    let admitted = usage::admit(ctx, &caller.user, &preferences.timezone, provider, &model).await?;
    let saved = save_exchange(
        db,
        &caller,
        &session,
        input,
        (&content, &files),
        provider,
        &model,
    )
    .await;
    let (user_message, assistant) = match saved {
        Ok(saved) => saved,
        Err(error) => {
            usage::release(state, &admitted).await;
            // Another instance saved this `clientMessageId` meanwhile (the unique index claims
            // it once across instances): answer with its exchange, never a second provider call.
            if replay_saved(ctx, &caller, &session, input, &generation).await? {
                tracing::debug!(?error, "a concurrent send of the same message won");
                return Ok(());
            }
            return Err(error);
        }
    };
    generation.set_subject(assistant.id);
    generation.push(&ChatEvent::UserMessage {
        message: attachments::shown(ctx, caller.user.id, user_message.clone()).await?,
        reply_message_id: Some(assistant.id),
    });
    let job = ReplyJob {
        state: Arc::clone(state),
        generation,
        request: Arc::clone(&ctx.request),
        user: caller.user,
        session,
        user_message,
        assistant,
        provider,
        model,
        api_key,
        preferences,
        first_exchange,
        usage: admitted,
    };
    state.streams.spawn(reply::run(job));
    Ok(())
}

/// When the message was saved before (by an earlier send, maybe on another instance), pushes
/// its saved outcome to `generation` instead of starting a reply: `userMessage`, then `done`
/// when the reply exists. Whether it was.
async fn replay_saved(
    ctx: &Ctx,
    caller: &SignedIn,
    session: &entity::chat_sessions::Model,
    input: &SendInput,
    generation: &LiveStream,
) -> Result<bool, RpcError> {
    let Some((user_message, reply)) =
        store::find_exchange(&ctx.state.db, session.id, input.client_message_id)
            .await
            .map_err(internal("look up a chat message"))?
    else {
        return Ok(false);
    };
    generation.push(&ChatEvent::UserMessage {
        message: attachments::shown(ctx, caller.user.id, user_message).await?,
        reply_message_id: reply.as_ref().map(|reply| reply.id),
    });
    if let Some(reply) = reply {
        generation.push(&ChatEvent::Done {
            message: reply.into(),
        });
    }
    generation.finish();
    Ok(true)
}

/// The user's message (its text and files) and the (still empty) reply, saved together.
async fn save_exchange(
    db: &sea_orm::DatabaseConnection,
    caller: &SignedIn,
    session: &entity::chat_sessions::Model,
    input: &SendInput,
    (content, files): (&str, &[entity::files::Model]),
    provider: AiProvider,
    model: &str,
) -> Result<(entity::chat_messages::Model, entity::chat_messages::Model), RpcError> {
    let transaction = crate::db::begin_write(db)
        .await
        .map_err(internal("begin a transaction"))?;
    let user_message = store::insert_message(
        &transaction,
        NewMessage {
            session_id: session.id,
            user_id: caller.user.id,
            role: Role::User,
            content,
            status: MessageStatus::Complete,
            client_message_id: Some(input.client_message_id),
            reply_to: None,
            provider: None,
            model: None,
            tool_calls: None,
        },
    )
    .await
    .map_err(|error| match error.sql_err() {
        // Sent concurrently (maybe through another instance): the caller replays that one.
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
            RpcError::new(ErrorCode::Conflict, "This message was just sent.")
        }
        _ => internal("save a chat message")(error),
    })?;
    attachments::save(&transaction, user_message.id, files)
        .await
        .map_err(internal("save a message's files"))?;
    let assistant = store::insert_message(
        &transaction,
        NewMessage {
            session_id: session.id,
            user_id: caller.user.id,
            role: Role::Assistant,
            content: "",
            status: MessageStatus::Streaming,
            client_message_id: None,
            reply_to: Some(user_message.id),
            provider: Some(provider.as_str()),
            model: Some(model),
            tool_calls: None,
        },
    )
    .await
    .map_err(internal("save a chat reply"))?;
    store::touch_session(&transaction, session.id, 2)
        .await
        .map_err(internal("update a chat session"))?;
    transaction
        .commit()
        .await
        .map_err(internal("save a chat message"))?;
    Ok((user_message, assistant))
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StopInput {
    message_id: Uuid,
}

/// `chat.stop`: ends a running reply, whichever instance writes it; its text so far is kept
/// with status "stopped". Stopping a reply that already ended does nothing.
async fn stop(ctx: Ctx, caller: SignedIn, input: StopInput) -> Result<(), RpcError> {
    let streams = &ctx.state.streams;
    if let Some(generation) = streams.running(caller.user.id, input.message_id) {
        generation.stop.cancel();
        return Ok(());
    }
    let message = store::find_message(&ctx.state.db, caller.user.id, input.message_id)
        .await
        .map_err(internal("load a chat message"))?
        .ok_or_else(|| RpcError::not_found("No such message."))?;
    if message.status == MessageStatus::Streaming.as_str() {
        streams.stop_elsewhere(message.id).await?;
    }
    Ok(())
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
        .hit(
            &format!("chat_search:{}", caller.user.id),
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
