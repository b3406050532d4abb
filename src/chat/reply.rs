//! Writing one reply: the provider streams it, tools run in between rounds, the text is
//! saved as it grows, and every step becomes an event of the generation.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use entity::{chat_messages, chat_sessions, users};
use futures::StreamExt;
use serde_json::json;
use zeroize::Zeroizing;

use super::attachments::HistoryFiles;
use super::measures;
use super::store::{self, NewMessage, Outcome};
use super::tools::{self, ToolContext};
use super::types::{
    ChatEvent, Message, MessageError, MessageErrorReason, MessageStatus, Role, ToolCallRecord,
    Usage,
};
use crate::audit::{self, AuditAction};
use crate::context::App;
use crate::keys;
use crate::preferences::Preferences;
use crate::providers::{self, AiProvider, ChatRequest, FilePart, ProviderError, Turn, Upstream};
use crate::rpc::RequestInfo;
use crate::streams::LiveStream;
use crate::usage;

/// Messages read for the history before the character budget trims them.
const HISTORY_MESSAGES: usize = 60;
const TITLE_CHARS: usize = 60;

pub struct ReplyJob {
    pub state: App,
    pub generation: Arc<LiveStream>,
    pub request: Arc<RequestInfo>,
    pub user: users::Model,
    pub session: chat_sessions::Model,
    pub user_message: chat_messages::Model,
    /// The reply's row as first saved (empty, streaming).
    pub assistant: chat_messages::Model,
    /// The first message this request saved (the user's, or the answer asked again for):
    /// what a conversation not kept discards, with everything under it.
    pub asked: uuid::Uuid,
    pub provider: AiProvider,
    pub model: String,
    pub api_key: Zeroizing<String>,
    pub preferences: Preferences,
    pub first_exchange: bool,
    /// Where the reply's tokens are counted.
    pub usage: usage::Admitted,
}

enum Ending {
    Completed,
    Stopped,
}

/// What has been written so far.
struct Progress {
    text: String,
    tool_calls: Vec<ToolCallRecord>,
    usage: Option<Usage>,
    saved_at: Instant,
    started: Instant,
    /// Whether text has come yet (the time to first token is measured once).
    has_text: bool,
}

impl Progress {
    fn add_usage(&mut self, input_tokens: u32, output_tokens: u32) {
        let usage = self.usage.get_or_insert(Usage {
            input_tokens: 0,
            output_tokens: 0,
        });
        usage.input_tokens = usage.input_tokens.saturating_add(input_tokens);
        usage.output_tokens = usage.output_tokens.saturating_add(output_tokens);
    }
}

/// Runs the reply to its end and records how it ended; never returns an error, because
/// nobody may be listening: the outcome is in the generation's events and the database.
/// Every ending, failures included, is a `done` whose message tells how it ended (the
/// subscription itself never fails once the message is saved). A revoked generation (its
/// chat or account deleted) ends without writing anything.
pub async fn run(job: ReplyJob) {
    let mut progress = Progress {
        text: String::new(),
        tool_calls: Vec::new(),
        usage: None,
        saved_at: Instant::now(),
        started: Instant::now(),
        has_text: false,
    };
    let result = write(&job, &mut progress).await;
    // Counted even when the chat was deleted meanwhile: the tokens were spent.
    let used = progress
        .usage
        .as_ref()
        .map(|usage| (usage.input_tokens, usage.output_tokens));
    usage::settle(&job.state, &job.usage, used, result.is_err()).await;
    if job.generation.is_revoked() {
        return;
    }
    let (status, error) = match result {
        Ok(Ending::Completed) => (MessageStatus::Complete, None),
        Ok(Ending::Stopped) => (MessageStatus::Stopped, None),
        Err(error) => (MessageStatus::Error, Some(error)),
    };
    measures::reply_ended(
        job.provider,
        &job.model,
        status,
        error.as_ref(),
        progress.usage.as_ref(),
    );
    let outcome = Outcome {
        content: &progress.text,
        status,
        usage: progress.usage,
        tool_calls: &progress.tool_calls,
        error: error.as_ref(),
    };
    let db = &job.state.db;
    let saved = match store::finish_reply(db, job.assistant.id, outcome).await {
        Ok(saved) => Some(saved),
        Err(error) => {
            tracing::error!(%error, "could not save a finished reply");
            None
        }
    };
    if let Err(error) = store::touch_session(db, job.session.id, 0).await {
        tracing::error!(%error, "could not update a chat session after a reply");
    }
    // Before the last event: once the app sees `done`, nothing of an unsaved exchange is left.
    if !job.preferences.save_conversations
        && let Err(error) = store::delete_subtree(db, job.session.id, job.asked).await
    {
        tracing::error!(%error, "could not discard an unsaved conversation");
    }
    let message = match saved {
        Some(saved) => saved,
        // As it stands in memory, so the app still learns how the reply ended.
        None => chat_messages::Model {
            content: progress.text.clone(),
            status: MessageStatus::Error.as_str().to_owned(),
            error: serde_json::to_value(internal_error()).ok(),
            ..job.assistant.clone()
        },
    };
    if status == MessageStatus::Complete
        && message.status == status.as_str()
        && job.first_exchange
        && job.preferences.save_conversations
    {
        let title = title(&job, &progress.text).await;
        if job.generation.is_revoked() {
            return;
        }
        if let Err(error) = store::set_title(db, job.session.id, &title).await {
            tracing::error!(%error, "could not save a chat title");
        }
        job.generation.push(&ChatEvent::Title { title });
    }
    job.generation.push(&ChatEvent::Done {
        message: message.into(),
    });
    job.generation.finish();
}

async fn write(job: &ReplyJob, progress: &mut Progress) -> Result<Ending, MessageError> {
    let state = &job.state;
    let max_rounds = state.config.chat.max_tool_rounds;
    let mut turns = history(job).await?;
    let instructions = super::projects::instructions(&state.db, &job.session)
        .await
        .map_err(saving_failed)?;
    let system = system_prompt(job, instructions.as_deref());
    let gmail = crate::mail::connected(&state.db, job.user.id).await;
    let upstream = Upstream {
        http: &state.http,
        config: &state.config.ai,
        provider: job.provider,
        api_key: &job.api_key,
    };
    for round in 0..=max_rounds {
        let request = ChatRequest {
            model: job.model.clone(),
            system: system.clone(),
            turns: turns.clone(),
            temperature: job.preferences.temperature,
            max_tokens: job.preferences.max_tokens,
            // The last round must answer in words.
            tools: if round < max_rounds {
                tools::specs(gmail)
            } else {
                Vec::new()
            },
        };
        let round_start = progress.text.len();
        let mut events = tokio::select! {
            biased;
            () = job.generation.stop.cancelled() => return Ok(Ending::Stopped),
            events = providers::stream_chat(&upstream, &request) => events.map_err(|e| provider_failure(job, e))?,
        };
        let mut calls = Vec::new();
        loop {
            let event = tokio::select! {
                biased;
                () = job.generation.stop.cancelled() => return Ok(Ending::Stopped),
                event = events.next() => event,
            };
            match event {
                None => break,
                Some(Err(error)) => return Err(provider_failure(job, error)),
                Some(Ok(providers::StreamEvent::Text(text))) => {
                    if !progress.has_text {
                        progress.has_text = true;
                        measures::first_text(job.provider, &job.model, progress.started.elapsed());
                    }
                    progress.text.push_str(&text);
                    job.generation.push(&ChatEvent::Delta { text });
                    save_progress(job, progress).await;
                }
                Some(Ok(providers::StreamEvent::ToolCall(call))) => calls.push(call),
                Some(Ok(providers::StreamEvent::Usage {
                    input_tokens,
                    output_tokens,
                })) => progress.add_usage(input_tokens, output_tokens),
                Some(Ok(providers::StreamEvent::Finished { .. })) => {}
            }
        }
        if calls.is_empty() {
            return Ok(Ending::Completed);
        }
        turns.push(Turn::Assistant {
            text: progress.text[round_start..].to_owned(),
            tool_calls: calls.clone(),
        });
        for call in calls {
            let result = run_tool(job, &call).await?;
            turns.push(Turn::ToolResult {
                call_id: call.id.clone(),
                name: call.name.clone(),
                result: result.clone(),
            });
            progress.tool_calls.push(ToolCallRecord {
                name: call.name,
                arguments: call.arguments,
                result,
            });
        }
    }
    Ok(Ending::Completed)
}

/// Runs one tool call, streams it, and saves it as a `tool` message.
async fn run_tool(
    job: &ReplyJob,
    call: &providers::ToolCallRequest,
) -> Result<serde_json::Value, MessageError> {
    job.generation.push(&ChatEvent::ToolCall {
        name: call.name.clone(),
        arguments: call.arguments.clone(),
    });
    let context = ToolContext {
        state: &job.state,
        user_id: job.user.id,
        timezone: &job.preferences.timezone,
    };
    let result = tools::run(&context, call).await;
    job.generation.push(&ChatEvent::ToolResult {
        name: call.name.clone(),
        result: result.clone(),
    });
    let record = ToolCallRecord {
        name: call.name.clone(),
        arguments: call.arguments.clone(),
        result: result.clone(),
    };
    let content = result.to_string();
    let message = NewMessage {
        session_id: job.session.id,
        user_id: job.user.id,
        role: Role::Tool,
        content: &content,
        status: MessageStatus::Complete,
        client_message_id: None,
        reply_to: Some(job.user_message.id),
        parent_id: Some(job.assistant.id),
        provider: Some(job.provider.as_str()),
        model: Some(&job.model),
        tool_calls: Some(json!([record])),
    };
    let db = &job.state.db;
    // A tool may take a while: its chat may have been deleted meanwhile.
    if job.generation.is_revoked() {
        return Ok(result);
    }
    store::insert_message(db, message)
        .await
        .map_err(saving_failed)?;
    store::touch_session(db, job.session.id, 1)
        .await
        .map_err(saving_failed)?;
    Ok(result)
}

fn saving_failed(error: sea_orm::DbErr) -> MessageError {
    tracing::error!(%error, "could not save part of a reply");
    internal_error()
}

fn internal_error() -> MessageError {
    MessageError {
        reason: MessageErrorReason::Internal,
        message: "The reply could not be saved. Send your message again.".to_owned(),
        retry_after_seconds: None,
    }
}

/// Saves the growing text at most once per flush interval, so a crash loses little and the
/// database is not written on every word.
async fn save_progress(job: &ReplyJob, progress: &mut Progress) {
    if progress.saved_at.elapsed() < job.state.config.chat.flush_interval {
        return;
    }
    progress.saved_at = Instant::now();
    if let Err(error) = store::save_progress(&job.state.db, job.assistant.id, &progress.text).await
    {
        tracing::warn!(%error, "could not save a streaming reply's progress");
    }
}

/// The conversation for the provider: the user message's branch (never another one's), its
/// newest messages that fit the character budget, oldest first, consecutive messages of one
/// role merged (providers want alternation).
async fn history(job: &ReplyJob) -> Result<Vec<Turn>, MessageError> {
    let rows = store::branch_messages(
        &job.state.db,
        job.session.id,
        job.user_message.id,
        HISTORY_MESSAGES,
    )
    .await
    .map_err(saving_failed)?;
    let mut budget = job.state.config.chat.history_chars;
    let ids = rows.iter().map(|row| row.id).collect();
    let mut files = HistoryFiles::load(&job.state, job.user.id, ids, budget)
        .await
        .map_err(saving_failed)?;
    let mut kept: Vec<(Role, String, Vec<FilePart>)> = Vec::new();
    for row in rows {
        let mut message = Message::from(row);
        if message.id == job.assistant.id {
            continue;
        }
        let attached = files
            .of(message.id, message.id == job.user_message.id)
            .await;
        if message.content.trim().is_empty() && attached.is_empty() {
            continue;
        }
        let length = message.content.chars().count() + attached.chars;
        if length > budget && !kept.is_empty() {
            break;
        }
        budget = budget.saturating_sub(length);
        message.content.push_str(&attached.text);
        kept.push((message.role, message.content, attached.parts));
    }
    kept.reverse();
    let mut turns: Vec<Turn> = Vec::new();
    for (role, content, parts) in kept {
        if !parts.is_empty() {
            turns.push(Turn::Files(parts));
        }
        if content.trim().is_empty() {
            // Files without words: the files are the message (providers refuse empty text).
            continue;
        }
        match (role, turns.last_mut()) {
            (Role::User, Some(Turn::User(text))) => {
                text.push_str("\n\n");
                text.push_str(&content);
            }
            (Role::Assistant, Some(Turn::Assistant { text, .. })) => {
                text.push_str("\n\n");
                text.push_str(&content);
            }
            (Role::User, _) => turns.push(Turn::User(content)),
            (_, _) => turns.push(Turn::Assistant {
                text: content,
                tool_calls: Vec::new(),
            }),
        }
    }
    // A conversation starts with the user.
    while matches!(turns.first(), Some(Turn::Assistant { .. })) {
        turns.remove(0);
    }
    Ok(turns)
}

/// The server's prompt (the built-in one or `ALIAS_SYSTEM_PROMPT`), then the instructions of
/// the session's project, if any.
fn system_prompt(job: &ReplyJob, project_instructions: Option<&str>) -> String {
    let prompt = server_prompt(job);
    match project_instructions {
        Some(instructions) => format!(
            "{prompt}\n\nThe user gave these instructions for the project this conversation \
             belongs to; follow them:\n{instructions}"
        ),
        None => prompt,
    }
}

fn server_prompt(job: &ReplyJob) -> String {
    if let Some(prompt) = &job.state.config.chat.system_prompt {
        return prompt.clone();
    }
    let preferences = &job.preferences;
    let local_time = preferences
        .timezone
        .parse::<chrono_tz::Tz>()
        .map(|tz| {
            Utc::now()
                .with_timezone(&tz)
                .format("%A %-d %B %Y, %H:%M")
                .to_string()
        })
        .unwrap_or_else(|_| Utc::now().format("%A %-d %B %Y, %H:%M UTC").to_string());
    format!(
        "You are ALIAS, an AI executive assistant working for {name}. Be concise, accurate and proactive; \
         say so when you are unsure. Reply in the user's language ({language}) unless asked otherwise. \
         The user's local time is {local_time} ({timezone}). Use the tools when they help.",
        name = job.user.name,
        language = preferences.language,
        timezone = preferences.timezone,
    )
}

/// A short title from the same provider; on any failure, or when the reply is stopped (or the
/// server shuts down) meanwhile, the first words of the message, at once.
async fn title(job: &ReplyJob, reply: &str) -> String {
    let fallback = first_words(&job.user_message.content);
    let request = ChatRequest {
        model: job.model.clone(),
        system:
            "Write a title of at most six words for this conversation. Answer with the title only, \
                 no quotes or punctuation at the end."
                .to_owned(),
        turns: vec![
            Turn::User(if job.user_message.content.is_empty() {
                "(Files without words.)".to_owned()
            } else {
                job.user_message.content.clone()
            }),
            Turn::Assistant {
                text: reply.to_owned(),
                tool_calls: Vec::new(),
            },
            Turn::User("Title?".to_owned()),
        ],
        temperature: 0.3,
        // Generous: thinking models spend output tokens before the title.
        max_tokens: 256,
        tools: Vec::new(),
    };
    let upstream = Upstream {
        http: &job.state.http,
        config: &job.state.config.ai,
        provider: job.provider,
        api_key: &job.api_key,
    };
    let generated = tokio::select! {
        biased;
        () = job.generation.stop.cancelled() => return fallback,
        generated = providers::complete_chat(&upstream, &request) => generated,
    };
    match generated {
        Ok(completion) => {
            // The title's tokens are spent on the user's key: they count as the reply's do
            // (in the day's totals, not in the reply's own `usage`).
            if completion.usage.is_some() {
                usage::settle(&job.state, &job.usage, completion.usage, false).await;
            }
            clean_title(&completion.text).unwrap_or(fallback)
        }
        Err(error) => {
            tracing::info!(%error, "title generation failed; using the first words");
            fallback
        }
    }
}

fn clean_title(text: &str) -> Option<String> {
    let line = text.lines().find(|line| !line.trim().is_empty())?;
    let title: String = line
        .trim()
        .trim_matches(|c: char| matches!(c, '"' | '\'' | '*' | '#' | '.'))
        .trim()
        .chars()
        .take(TITLE_CHARS)
        .collect();
    (!title.is_empty()).then_some(title)
}

fn first_words(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().take(6).collect();
    let title: String = words.join(" ").chars().take(TITLE_CHARS).collect();
    if title.is_empty() {
        store::DEFAULT_TITLE.to_owned()
    } else {
        title
    }
}

/// Why the reply failed, in words the app can show; a refused key is also marked invalid.
fn provider_failure(job: &ReplyJob, error: ProviderError) -> MessageError {
    let name = job.provider.display_name();
    let (reason, message, retry_after_seconds) = match error {
        ProviderError::KeyRejected => {
            mark_key_invalid(job);
            (
                MessageErrorReason::ApiKeyRejected,
                format!("{name} refused your API key. Update it in settings."),
                None,
            )
        }
        ProviderError::RateLimited {
            retry_after_seconds,
        } => (
            MessageErrorReason::ProviderRateLimited,
            format!(
                "{name} is rate limiting your key. Try again in {retry_after_seconds} seconds."
            ),
            Some(retry_after_seconds),
        ),
        ProviderError::Overloaded {
            retry_after_seconds,
        } => (
            MessageErrorReason::ProviderOverloaded,
            format!("{name} is overloaded. Try again in {retry_after_seconds} seconds."),
            Some(retry_after_seconds),
        ),
        ProviderError::Timeout => (
            MessageErrorReason::ProviderTimeout,
            format!("{name} did not answer in time. Try again."),
            None,
        ),
        ProviderError::Upstream(detail) => {
            tracing::warn!(provider = job.provider.as_str(), %detail, "provider failed during a reply");
            (
                MessageErrorReason::ProviderError,
                format!("{name} failed while writing the reply. Try again."),
                None,
            )
        }
    };
    MessageError {
        reason,
        message,
        retry_after_seconds,
    }
}

fn mark_key_invalid(job: &ReplyJob) {
    let (state, request) = (Arc::clone(&job.state), Arc::clone(&job.request));
    let (user_id, provider) = (job.user.id, job.provider);
    tokio::spawn(async move {
        if let Err(error) = keys::mark_invalid(&state.db, user_id, provider).await {
            tracing::error!(%error, "could not mark a refused key invalid");
        }
        let metadata = json!({ "provider": provider.as_str(), "cause": "rejected" });
        audit::record(
            &state.db,
            &request,
            Some(user_id),
            AuditAction::ApiKeyUseFailed,
            metadata,
        )
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_cleaned_or_fall_back_to_first_words() {
        assert_eq!(
            clean_title("\n\"Quarterly budget review.\"\n").as_deref(),
            Some("Quarterly budget review")
        );
        assert_eq!(clean_title("   "), None);
        assert_eq!(
            first_words("Can you draft the agenda for Monday's board meeting please"),
            "Can you draft the agenda for"
        );
        assert_eq!(first_words(""), store::DEFAULT_TITLE);
    }
}
