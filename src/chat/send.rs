//! Sending a message and its reply: `chat.send` (the mutation, and the legacy subscription
//! that sends and follows), `chat.follow` (replay and follow a reply's events) and
//! `chat.stop`.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::access::{not_found, owned_session};
use super::attachments;
use super::reply::{self, ReplyJob};
use super::store::{self, NewMessage};
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
fn parse_content(raw: &str, has_files: bool) -> Result<String, String> {
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

/// `chat.send`: saves the message and starts the reply, which runs on the server whatever
/// happens to the connection; `chat.follow` streams it. Failures before the reply starts
/// (no such chat, no key, limits) are this call's errors.
pub(super) async fn send(
    ctx: Ctx,
    caller: SignedIn,
    input: SendInput,
) -> Result<SentMessage, RpcError> {
    let reply = reply_stream(&ctx, caller, &input).await?;
    sent_message(reply).await
}

/// GET `chat.send`, the subscription of clients built before `chat.follow`: sends, then
/// follows the reply in one stream; reconnecting with the same input resumes after
/// `lastEventId`.
pub(super) async fn send_and_follow(
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
pub(super) async fn follow(
    ctx: Ctx,
    caller: SignedIn,
    input: FollowInput,
) -> Result<ChatEvents, RpcError> {
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
