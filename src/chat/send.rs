//! Sending a message and its reply: `chat.send` (the mutation, and the legacy subscription
//! that sends and follows), `chat.follow` (replay and follow a reply's events) and
//! `chat.stop`. `chat.regenerate` and `chat.edit` (`branches.rs`) ask through the same path
//! (`ask`): one reply stream per `clientMessageId`, the same limits, events and errors.

use std::pin::Pin;
use std::sync::Arc;

use entity::{chat_messages, chat_sessions};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::access::{not_found, owned_session};
use super::attachments;
use super::reply::{self, ReplyJob};
use super::store::{self, NewMessage};
use super::tree;
use super::types::{ChatEvent, Message, MessageStatus, Role};
use crate::context::Ctx;
use crate::guard::SignedIn;
use crate::keys;
use crate::preferences;
use crate::providers::AiProvider;
use crate::rpc::{ErrorCode, FieldErrors, Resumed, RpcError, Serialized, Tracked, internal};
use crate::streams::{LiveStream, Reservation};
use crate::text;
use crate::usage;

/// The longest message text.
const MAX_MESSAGE_CHARS: usize = 100_000;

/// A message's text: 1 to `MAX_MESSAGE_CHARS` characters, or none when it carries files (a
/// photo or a PDF alone is a question too).
pub(super) fn parse_content(raw: &str, has_files: bool) -> Result<String, String> {
    let content = raw.trim();
    let least = usize::from(!has_files);
    if !(least..=MAX_MESSAGE_CHARS).contains(&content.chars().count()) {
        return Err(format!("write {least} to {MAX_MESSAGE_CHARS} characters"));
    }
    text::check_plain(content).map(|()| content.to_owned())
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

/// What a reply answers.
pub(super) enum Prompt {
    /// A new user message: sent at the end of the current branch (`chat.send`), or an edit
    /// beside the message it edits (`chat.edit`).
    New {
        content: String,
        file_ids: Vec<Uuid>,
        parent: Parent,
    },
    /// A saved user message, answered again (`chat.regenerate`).
    Again(Box<chat_messages::Model>),
}

/// Where a new user message goes in the tree.
pub(super) enum Parent {
    /// After the session's current leaf, whatever it is when the message is saved.
    CurrentLeaf,
    /// Under this message (`None`: a new first message).
    Under(Option<Uuid>),
}

/// A checked request for a reply in one of the caller's sessions.
pub(super) struct Ask {
    pub session: chat_sessions::Model,
    pub client_message_id: Uuid,
    pub provider: Option<AiProvider>,
    pub model: Option<String>,
    pub prompt: Prompt,
}

/// Records a problem with `model` (the provider is typed already).
pub(super) fn check_model(errors: &mut FieldErrors, model: Option<&str>) {
    if let Some(model) = model {
        errors.check("model", preferences::parse_model(model));
    }
}

/// `chat.send`: saves the message and starts the reply, which runs on the server whatever
/// happens to the connection; `chat.follow` streams it. Failures before the reply starts
/// (no such chat, no key, limits) are this call's errors.
pub(super) async fn send(
    ctx: Ctx,
    caller: SignedIn,
    input: SendInput,
) -> Result<SentMessage, RpcError> {
    let ask = checked(&ctx, &caller, &input).await?;
    self::ask(&ctx, caller, ask).await
}

/// Starts (or finds, for a `clientMessageId` seen before) the reply `ask` wants: the answer
/// of `chat.send`, `chat.regenerate` and `chat.edit`.
pub(super) async fn ask(ctx: &Ctx, caller: SignedIn, ask: Ask) -> Result<SentMessage, RpcError> {
    let reply = reply_stream(ctx, caller, ask).await?;
    sent_message(reply).await
}

/// GET `chat.send`, the subscription of clients built before `chat.follow`: sends, then
/// follows the reply in one stream, as `chat.follow` does; reconnecting with the same input
/// resumes after `lastEventId`.
pub(super) async fn send_and_follow(
    ctx: Ctx,
    caller: SignedIn,
    resumed: Resumed<SendInput>,
) -> Result<ChatEvents, RpcError> {
    let user_id = caller.user.id;
    let ask = checked(&ctx, &caller, &resumed.input).await?;
    let reply = reply_stream(&ctx, caller, ask).await?;
    let last_event_id = resumed.last_event_id.as_deref();
    // A message sent before (maybe through another instance, which may still be writing the
    // reply) is answered with its saved state: follow the reply itself instead, wherever it
    // is written, so the stream ends when the reply does.
    match sent_message(Arc::clone(&reply)).await {
        Ok(sent) => follow_reply(&ctx, user_id, sent.reply_message_id, last_event_id).await,
        // It failed to start, or has no reply (any more): the stream says so.
        Err(_) => Ok(Box::pin(reply.subscribe(last_event_id))),
    }
}

/// A `chat.send` input checked: counted against the send limit, its fields valid, its
/// session the caller's.
async fn checked(ctx: &Ctx, caller: &SignedIn, input: &SendInput) -> Result<Ask, RpcError> {
    usage::limit_sends(ctx, caller.user.id).await?;
    let mut errors = FieldErrors::default();
    let has_files = input.file_ids.as_ref().is_some_and(|ids| !ids.is_empty());
    let content = errors.check("content", parse_content(&input.content, has_files));
    check_model(&mut errors, input.model.as_deref());
    if let Some(file_ids) = &input.file_ids {
        errors.check("fileIds", attachments::check_ids(file_ids));
    }
    let (Some(content), true) = (content, errors.is_empty()) else {
        return Err(errors.into_error());
    };
    Ok(Ask {
        session: owned_session(ctx, caller, input.session_id).await?,
        client_message_id: input.client_message_id,
        provider: input.provider,
        model: input.model.clone(),
        prompt: Prompt::New {
            content,
            file_ids: input.file_ids.clone().unwrap_or_default(),
            parent: Parent::CurrentLeaf,
        },
    })
}

/// Finds the stream of the reply asked for before with this `clientMessageId`, or starts it.
async fn reply_stream(ctx: &Ctx, caller: SignedIn, ask: Ask) -> Result<Arc<LiveStream>, RpcError> {
    let streams = &ctx.state.streams;
    let (session_id, client_message_id) = (ask.session.id, ask.client_message_id);
    match streams.reserve(session_id, client_message_id, caller.user.id) {
        Reservation::Existing(generation) if generation.owner == caller.user.id => Ok(generation),
        Reservation::Existing(_) => Err(not_found()),
        Reservation::New(generation) => {
            let started = start(ctx, caller, ask, Arc::clone(&generation)).await;
            if let Err(error) = started {
                streams.release(session_id, client_message_id);
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
pub(super) async fn follow(
    ctx: Ctx,
    caller: SignedIn,
    input: FollowInput,
) -> Result<ChatEvents, RpcError> {
    let last_event_id = input.last_event_id.as_deref();
    follow_reply(&ctx, caller.user.id, input.message_id, last_event_id).await
}

/// The events of `user_id`'s reply `message_id` after `last_event_id`: see `follow`.
async fn follow_reply(
    ctx: &Ctx,
    user_id: Uuid,
    message_id: Uuid,
    last_event_id: Option<&str>,
) -> Result<ChatEvents, RpcError> {
    if let Some(reply) = ctx.state.streams.producing(user_id, message_id) {
        return Ok(Box::pin(reply.subscribe(last_event_id)));
    }
    let db = &ctx.state.db;
    let no_reply = || RpcError::not_found("No such reply.");
    let reply = store::find_message(db, user_id, message_id)
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
        Some(id) => store::find_message(db, user_id, id)
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
                message: attachments::shown(ctx, user_id, message).await?,
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

/// Starts the reply asked for; or, when it was asked for before the generation left memory
/// (or the server restarted), replays the saved outcome.
async fn start(
    ctx: &Ctx,
    caller: SignedIn,
    ask: Ask,
    generation: Arc<LiveStream>,
) -> Result<(), RpcError> {
    let state = &ctx.state;
    let db = &state.db;
    if replay_saved(ctx, &caller, &ask, &generation).await? {
        return Ok(());
    }
    let file_ids = match &ask.prompt {
        Prompt::New { file_ids, .. } => file_ids.as_slice(),
        Prompt::Again(_) => &[],
    };
    let files = crate::files::attach::sendable(ctx, caller.user.id, file_ids).await?;
    let preferences = preferences::for_user(db, caller.user.id).await?;
    let provider = ask.provider.unwrap_or(preferences.ai_provider);
    let model = match (&ask.model, ask.provider) {
        (Some(model), _) => model.trim().to_owned(),
        (None, Some(provider)) if provider != preferences.ai_provider => {
            provider.default_model().to_owned()
        }
        (None, _) => preferences.ai_model.clone(),
    };
    let api_key = keys::for_user(state, &ctx.request, caller.user.id, provider).await?;
    let first_exchange = ask.session.message_count == 0;
    // The last check before anything is saved: a refused send costs no provider call.
    let admitted = usage::admit(ctx, &caller.user, &preferences.timezone, provider, &model).await?;
    let saved = save_exchange(db, &caller, &ask, &files, provider, &model).await;
    let (user_message, assistant) = match saved {
        Ok(saved) => saved,
        Err(error) => {
            usage::release(state, &admitted).await;
            // Another instance saved this `clientMessageId` meanwhile (the unique index claims
            // it once across instances): answer with its exchange, never a second provider call.
            if replay_saved(ctx, &caller, &ask, &generation).await? {
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
    let asked = match ask.prompt {
        Prompt::New { .. } => user_message.id,
        Prompt::Again(_) => assistant.id,
    };
    let job = ReplyJob {
        state: Arc::clone(state),
        generation,
        request: Arc::clone(&ctx.request),
        user: caller.user,
        session: ask.session,
        user_message,
        assistant,
        asked,
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

/// When the reply was asked for before (by an earlier call, maybe on another instance),
/// pushes its saved outcome to `generation` instead of starting a reply: `userMessage`, then
/// `done` when the reply exists. Whether it was.
async fn replay_saved(
    ctx: &Ctx,
    caller: &SignedIn,
    ask: &Ask,
    generation: &LiveStream,
) -> Result<bool, RpcError> {
    let Some((user_message, reply)) =
        store::find_exchange(&ctx.state.db, ask.session.id, ask.client_message_id)
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

/// A unique `clientMessageId` claimed meanwhile (maybe through another instance): the caller
/// replays that one.
fn claimed_meanwhile(what: &'static str) -> impl FnOnce(sea_orm::DbErr) -> RpcError {
    move |error| match error.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
            RpcError::new(ErrorCode::Conflict, "This message was just sent.")
        }
        _ => internal(what)(error),
    }
}

/// The user's message (its text and files; unless answered again) and the (still empty)
/// reply, saved together; the reply becomes the end of the session's current branch.
async fn save_exchange(
    db: &sea_orm::DatabaseConnection,
    caller: &SignedIn,
    ask: &Ask,
    files: &[entity::files::Model],
    provider: AiProvider,
    model: &str,
) -> Result<(chat_messages::Model, chat_messages::Model), RpcError> {
    let transaction = crate::db::begin_write(db)
        .await
        .map_err(internal("begin a transaction"))?;
    let session = ask.session.id;
    let (user_message, again) = match &ask.prompt {
        Prompt::New {
            content, parent, ..
        } => {
            let parent_id = match parent {
                Parent::CurrentLeaf => tree::locked_leaf(&transaction, session)
                    .await
                    .map_err(internal("load a chat session"))?,
                Parent::Under(parent) => *parent,
            };
            let message = NewMessage {
                session_id: session,
                user_id: caller.user.id,
                role: Role::User,
                content,
                status: MessageStatus::Complete,
                client_message_id: Some(ask.client_message_id),
                reply_to: None,
                parent_id,
                provider: None,
                model: None,
                tool_calls: None,
            };
            let saved = store::insert_message(&transaction, message)
                .await
                .map_err(claimed_meanwhile("save a chat message"))?;
            attachments::save(&transaction, saved.id, files)
                .await
                .map_err(internal("save a message's files"))?;
            (saved, false)
        }
        Prompt::Again(user_message) => (chat_messages::Model::clone(user_message), true),
    };
    let reply = NewMessage {
        session_id: session,
        user_id: caller.user.id,
        role: Role::Assistant,
        content: "",
        status: MessageStatus::Streaming,
        // An answer asked again carries the request's id (no new user message does).
        client_message_id: again.then_some(ask.client_message_id),
        reply_to: Some(user_message.id),
        parent_id: Some(user_message.id),
        provider: Some(provider.as_str()),
        model: Some(model),
        tool_calls: None,
    };
    let assistant = store::insert_message(&transaction, reply)
        .await
        .map_err(claimed_meanwhile("save a chat reply"))?;
    tree::set_leaf(&transaction, session, Some(assistant.id))
        .await
        .map_err(internal("update a chat session"))?;
    store::touch_session(&transaction, session, if again { 1 } else { 2 })
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
pub(super) async fn stop(ctx: Ctx, caller: SignedIn, input: StopInput) -> Result<(), RpcError> {
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
