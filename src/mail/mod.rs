//! `mail.*`: each connected user's synced Gmail. The background sync (`sync.rs`, the
//! `gmail.sync` job) keeps it; `mail.search` finds messages, `mail.thread.get` reads a thread.

mod parse;
pub mod search;
mod store;
mod sync;

use serde::{Deserialize, Serialize};

use crate::context::{App, Ctx};
use crate::guard::{SignedIn, signed_in};
use crate::integrations::{self, SYNC_JOB};
use crate::jobs::Worker;
use crate::rpc::{FieldErrors, Router, RpcError, Timestamp, internal};

pub fn router() -> Router<App> {
    Router::new()
        .query("search", signed_in(search_mail))
        .nest("thread", Router::new().query("get", signed_in(thread_get)))
}

/// Whether the user has Gmail connected (what offers the mail tools to the assistant).
pub async fn connected(db: &sea_orm::DatabaseConnection, user_id: uuid::Uuid) -> bool {
    matches!(integrations::store::find(db, user_id).await, Ok(Some(_)))
}

/// Why the user's synced mail cannot be relied on: not connected, or Google no longer honours
/// the connection (the mail stops syncing until the user connects again).
pub async fn check_connection(
    db: &sea_orm::DatabaseConnection,
    user_id: uuid::Uuid,
) -> Result<(), RpcError> {
    let row = integrations::store::find(db, user_id)
        .await
        .map_err(internal("read the Google connection"))?
        .ok_or_else(integrations::not_connected)?;
    if integrations::ConnectionStatus::parse(&row.status)
        == integrations::ConnectionStatus::ReconnectRequired
    {
        return Err(integrations::reconnect_required());
    }
    Ok(())
}

/// For the assistant's `search_email` tool: the best matches (the newest, without words) by
/// sender (a part of the From header) and date range.
pub async fn search_for_tool(
    db: &sea_orm::DatabaseConnection,
    user_id: uuid::Uuid,
    query: &str,
    filters: &search::Filters<'_>,
    limit: u32,
) -> Result<Vec<search::Hit>, sea_orm::DbErr> {
    search::search(db, user_id, query, filters, limit, 0).await
}

/// For the assistant's `read_email_thread` tool: the thread's messages, oldest first.
pub async fn thread_for_tool(
    db: &sea_orm::DatabaseConnection,
    user_id: uuid::Uuid,
    thread_id: &str,
) -> Result<Vec<entity::mail_messages::Model>, sea_orm::DbErr> {
    store::thread(db, user_id, thread_id).await
}

/// Registers the mail jobs with the worker.
pub fn register_jobs(worker: Worker<App>) -> Worker<App> {
    worker.register(SYNC_JOB, sync::run)
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MailThreadInput {
    thread_id: String,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct MailThread {
    thread_id: String,
    /// Oldest first.
    messages: Vec<MailMessage>,
}

/// A synced message with its plain text.
#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct MailMessage {
    /// Gmail's message id.
    id: String,
    from: String,
    to: String,
    cc: String,
    subject: String,
    date: Timestamp,
    /// Gmail label ids (`INBOX`, `UNREAD`, …).
    labels: Vec<String>,
    /// Plain text (HTML converted), trimmed to `ALIAS_GMAIL_BODY_CHARS`.
    text: String,
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MailSearchInput {
    query: String,
    /// From the previous page's `nextCursor`.
    #[serde(default)]
    cursor: Option<u32>,
    /// 1 to 50 (default 20).
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct MailSearchPage {
    /// Best first.
    messages: Vec<MailHit>,
    next_cursor: Option<u32>,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct MailHit {
    id: String,
    thread_id: String,
    from: String,
    subject: String,
    date: Timestamp,
    snippet: String,
}

/// `mail.search`: the caller's synced mail matching every word of `query` (as prefixes), not
/// in the bin, spam or drafts.
async fn search_mail(
    ctx: Ctx,
    caller: SignedIn,
    input: MailSearchInput,
) -> Result<MailSearchPage, RpcError> {
    let mut errors = FieldErrors::default();
    let query = errors.check(
        "query",
        if input.query.chars().count() > 500 {
            Err("a search has at most 500 characters".to_owned())
        } else {
            Ok(input.query.as_str())
        },
    );
    let limit = errors.check(
        "limit",
        match input.limit.unwrap_or(20) {
            limit @ 1..=50 => Ok(limit),
            _ => Err("limit is 1 to 50".to_owned()),
        },
    );
    let (Some(query), Some(limit)) = (query, limit) else {
        return Err(errors.into_error());
    };
    let db = &ctx.state.db;
    check_connection(db, caller.user.id).await?;
    let offset = input.cursor.unwrap_or(0);
    let filters = search::Filters::default();
    let mut hits = search::search(db, caller.user.id, query, &filters, limit + 1, offset)
        .await
        .map_err(internal("search mail"))?;
    let more = hits.len() > limit as usize;
    hits.truncate(limit as usize);
    Ok(MailSearchPage {
        next_cursor: more.then(|| offset.saturating_add(limit)),
        messages: hits
            .into_iter()
            .map(|hit| MailHit {
                id: hit.gmail_id,
                thread_id: hit.thread_id,
                from: hit.from_addr,
                subject: hit.subject,
                date: hit.date.into(),
                snippet: hit.snippet,
            })
            .collect(),
    })
}

/// Gmail ids are short runs of hex digits; anything else names no thread.
fn parse_thread_id(raw: &str) -> Result<&str, String> {
    let id = raw.trim();
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err("a Gmail thread id is 1 to 64 letters and digits".to_owned());
    }
    Ok(id)
}

/// `mail.thread.get`
async fn thread_get(
    ctx: Ctx,
    caller: SignedIn,
    input: MailThreadInput,
) -> Result<MailThread, RpcError> {
    let mut errors = FieldErrors::default();
    let Some(thread_id) = errors.check("threadId", parse_thread_id(&input.thread_id)) else {
        return Err(errors.into_error());
    };
    let db = &ctx.state.db;
    check_connection(db, caller.user.id).await?;
    let rows = store::thread(db, caller.user.id, thread_id)
        .await
        .map_err(internal("read a mail thread"))?;
    if rows.is_empty() {
        return Err(RpcError::not_found(
            "No synced mail has this thread id (it may be older than the sync window).",
        ));
    }
    Ok(MailThread {
        thread_id: thread_id.to_owned(),
        messages: rows
            .into_iter()
            .map(|row| MailMessage {
                id: row.gmail_id,
                from: row.from_addr,
                to: row.to_addr,
                cc: row.cc,
                subject: row.subject,
                date: row.date.into(),
                labels: row.labels.split_whitespace().map(str::to_owned).collect(),
                text: row.body,
            })
            .collect(),
    })
}
