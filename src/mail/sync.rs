//! The `gmail.sync` job: one user's Gmail brought up to date, then scheduled again.
//!
//! A connection without a `historyId` gets a full sync: `users.getProfile` gives the history id
//! to continue from, then `messages.list` (the last `ALIAS_GMAIL_SYNC_DAYS` days, at most
//! `ALIAS_GMAIL_SYNC_MAX_MESSAGES`) and `messages.get`, one page per run (the job runs again at
//! once, behind other users' due jobs), the next page saved after each, so a restart resumes
//! where it stopped and a huge mailbox holds a worker slot for one page at a time. Then, and on
//! every later run, `history.list` applies what changed (added, deleted, labels added and
//! removed). History too old (404) deletes the stored mail and starts a full resync over; a 404
//! again right after a resync retries with backoff instead. A 401 gets a fresh access token
//! once; an `invalid_grant` marks the connection `reconnect_required` and ends the job; passing
//! failures retry with backoff. Each user is a job of its own, so one failing account delays
//! nobody else.

use chrono::Utc;
use entity::google_connections;
use uuid::Uuid;

use super::{parse, store};
use crate::context::App;
use crate::crypto::VaultError;
use crate::google::{self, Gmail, GoogleError, LabelChange};
use crate::integrations::{self, ConnectionStatus};
use crate::jobs::{Job, Outcome};

/// The `Retry` message of a history still unknown (404) right after a full resync: the next
/// run retries it (with backoff) rather than resyncing again.
const HISTORY_GONE: &str = "Gmail history unavailable right after a full resync";

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Google(#[from] GoogleError),
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
}

/// The job handler.
pub async fn run(state: App, job: Job) -> Outcome {
    let Some(user_id) = job.payload["userId"]
        .as_str()
        .and_then(|id| Uuid::parse_str(id).ok())
    else {
        return Outcome::Done;
    };
    let history_gone_before = job.last_error.as_deref() == Some(HISTORY_GONE);
    match run_for(&state, user_id, history_gone_before).await {
        Ok(outcome) => outcome,
        Err(SyncError::Database(error)) => Outcome::Retry(format!("database: {error}")),
        Err(SyncError::Google(error)) => google_failure(&state, user_id, error).await,
    }
}

async fn run_for(
    state: &App,
    user_id: Uuid,
    history_gone_before: bool,
) -> Result<Outcome, SyncError> {
    let db = &state.db;
    let Some(row) = integrations::store::find(db, user_id).await? else {
        // Disconnected meanwhile.
        return Ok(Outcome::Done);
    };
    if ConnectionStatus::parse(&row.status) == ConnectionStatus::ReconnectRequired {
        return Ok(Outcome::Done);
    }
    let refresh_token = match integrations::store::refresh_token(state, &row).await {
        Ok(token) => token,
        Err(VaultError::Unavailable(detail)) => {
            return Ok(Outcome::Retry(format!("key service: {detail}")));
        }
        Err(error) => {
            tracing::warn!(%error, user = %user_id, "a Google token no longer opens");
            let reason = Some("the stored Google token can no longer be read");
            let status = ConnectionStatus::ReconnectRequired.as_str();
            integrations::store::set_status(db, user_id, status, reason).await?;
            return Ok(Outcome::Done);
        }
    };
    let tokens = google::refresh(&state.http, &state.config.google, &refresh_token).await?;
    let gmail = Gmail::new(&state.http, &state.config.google, tokens.access_token)
        .refreshing_with(&refresh_token);
    let sync = Sync {
        state,
        gmail,
        user_id,
    };
    match sync.run(row, history_gone_before).await? {
        Step::MorePages => Ok(Outcome::RunAgainAt(Utc::now())),
        Step::HistoryGone => {
            let status = ConnectionStatus::Syncing.as_str();
            integrations::store::set_status(db, user_id, status, Some(HISTORY_GONE)).await?;
            Ok(Outcome::Retry(HISTORY_GONE.to_owned()))
        }
        Step::Synced => {
            integrations::store::mark_synced(db, user_id).await?;
            let next = Utc::now()
                + chrono::Duration::from_std(state.config.google.sync_interval)
                    .unwrap_or(chrono::Duration::minutes(5));
            Ok(Outcome::RunAgainAt(next))
        }
    }
}

async fn google_failure(state: &App, user_id: Uuid, error: GoogleError) -> Outcome {
    let db = &state.db;
    let (status, outcome) = match &error {
        GoogleError::InvalidGrant(_) | GoogleError::Unauthorized(_) => {
            (ConnectionStatus::ReconnectRequired, Outcome::Done)
        }
        GoogleError::RateLimited(Some(after)) => (
            ConnectionStatus::Syncing,
            Outcome::RetryAfter(*after, error.to_string()),
        ),
        GoogleError::RateLimited(None) | GoogleError::Unavailable(_) | GoogleError::NotFound => {
            (ConnectionStatus::Syncing, Outcome::Retry(error.to_string()))
        }
        GoogleError::Rejected(_) => (ConnectionStatus::Error, Outcome::Retry(error.to_string())),
    };
    tracing::info!(%error, user = %user_id, "Gmail sync failed");
    let message = error.to_string();
    if let Err(db_error) =
        integrations::store::set_status(db, user_id, status.as_str(), Some(&message)).await
    {
        tracing::warn!(error = %db_error, "could not record a Gmail sync failure");
    }
    outcome
}

struct Sync<'a> {
    state: &'a App,
    gmail: Gmail<'a>,
    user_id: Uuid,
}

/// Where a run left the sync.
enum Step {
    /// A full sync has more pages: run again now.
    MorePages,
    /// Up to date.
    Synced,
    /// `history.list` answered 404 right after a full resync: retry later.
    HistoryGone,
}

impl Sync<'_> {
    async fn run(
        &self,
        row: google_connections::Model,
        history_gone_before: bool,
    ) -> Result<Step, SyncError> {
        let db = &self.state.db;
        let (history_id, page_token) = match row.history_id {
            Some(history_id) => (history_id, row.sync_page_token),
            None => {
                let profile = self.gmail.profile().await?;
                integrations::store::save_progress(
                    db,
                    self.user_id,
                    Some(&profile.history_id),
                    Some(""),
                )
                .await?;
                (profile.history_id, Some(String::new()))
            }
        };
        let mut resynced = false;
        if let Some(page_token) = page_token {
            if self.page(&history_id, page_token).await? {
                return Ok(Step::MorePages);
            }
            resynced = true;
        }
        match self.incremental(&history_id).await {
            Err(SyncError::Google(GoogleError::NotFound)) if resynced || history_gone_before => {
                Ok(Step::HistoryGone)
            }
            Err(SyncError::Google(GoogleError::NotFound)) => {
                // History that old is gone: start over (what was deleted meanwhile goes too).
                tracing::info!(user = %self.user_id, "Gmail history expired; full resync");
                store::delete_all(db, self.user_id).await?;
                integrations::store::save_progress(db, self.user_id, None, None).await?;
                Ok(Step::MorePages)
            }
            Err(error) => Err(error),
            Ok(()) => Ok(Step::Synced),
        }
    }

    /// Stores one page of the sync window from `page_token` ("" for the first page), up to
    /// the message cap. Whether more pages follow.
    async fn page(&self, history_id: &str, page_token: String) -> Result<bool, SyncError> {
        let db = &self.state.db;
        let config = &self.state.config.google;
        let query = format!("newer_than:{}d", config.sync_days);
        let page = self
            .gmail
            .list_messages(&query, Some(page_token.as_str()).filter(|t| !t.is_empty()))
            .await?;
        let stored = integrations::store::message_count(db, self.user_id).await?;
        let room = u64::from(config.sync_max_messages).saturating_sub(stored);
        let room = usize::try_from(room).unwrap_or(usize::MAX);
        for reference in page.messages.iter().take(room) {
            self.fetch(&reference.id).await?;
        }
        let next = page
            .next_page_token
            .filter(|token| !token.is_empty() && page.messages.len() < room);
        integrations::store::save_progress(db, self.user_id, Some(history_id), next.as_deref())
            .await?;
        Ok(next.is_some())
    }

    /// Applies `history.list` from `history_id`, saving the new history id at the end.
    async fn incremental(&self, history_id: &str) -> Result<(), SyncError> {
        let db = &self.state.db;
        let mut page_token: Option<String> = None;
        let mut latest = history_id.to_owned();
        loop {
            let page = self
                .gmail
                .history(history_id, page_token.as_deref())
                .await?;
            for record in page.history {
                for added in record.messages_added {
                    self.fetch(&added.message.id).await?;
                }
                for change in record.labels_added {
                    self.relabel(change, true).await?;
                }
                for change in record.labels_removed {
                    self.relabel(change, false).await?;
                }
                for deleted in record.messages_deleted {
                    store::delete(db, self.user_id, &deleted.message.id).await?;
                }
            }
            if let Some(id) = page.history_id {
                latest = id;
            }
            match page.next_page_token.filter(|token| !token.is_empty()) {
                Some(token) => page_token = Some(token),
                None => break,
            }
        }
        integrations::store::save_progress(db, self.user_id, Some(&latest), None).await?;
        Ok(())
    }

    /// Applies a label change: the record's `labelIds` were added or removed (the message's
    /// own `labelIds`, when Google sends them, are its whole set after the change).
    async fn relabel(&self, change: LabelChange, added: bool) -> Result<(), SyncError> {
        let db = &self.state.db;
        let id = &change.message.id;
        match change.message.label_ids {
            Some(labels) => store::set_labels(db, self.user_id, id, &labels).await?,
            None => store::change_labels(db, self.user_id, id, &change.label_ids, added).await?,
        }
        Ok(())
    }

    /// Fetches and stores one message; one deleted since it was listed is skipped.
    async fn fetch(&self, gmail_id: &str) -> Result<(), SyncError> {
        let message = match self.gmail.message(gmail_id).await {
            Ok(message) => message,
            Err(GoogleError::NotFound) => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        let parsed = parse::parse(message, self.state.config.google.body_chars);
        store::upsert(&self.state.db, self.user_id, parsed).await?;
        Ok(())
    }
}
