//! With several instances (Redis), a reply whose instance died mid-reply would stay
//! `streaming` for ever. Every instance looks now and then for replies untouched for a lease's
//! length whose lease lapsed (no instance writes them) and marks them failed
//! (`interrupted`), keeping the text saved so far, and ends the reply's copy in Redis with that
//! `done`, so clients following it through another instance end too. Without Redis, start-up does this for the
//! lone instance (`fail_interrupted_replies`).

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::store;
use super::types::{ChatEvent, MessageStatus};
use crate::context::App;
use crate::streams::Streams;

/// Time between two looks.
const EVERY: Duration = Duration::from_secs(5);
/// Replies looked at per round at most.
const BATCH: u64 = 100;

/// Runs until `shutdown`; does nothing without Redis.
pub async fn sweep_periodically(state: App, shutdown: CancellationToken) {
    if !state.streams.is_shared() {
        return;
    }
    let mut ticks = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match sweep(&state).await {
            Ok(0) => {}
            Ok(failed) => tracing::warn!(
                failed,
                "chat replies orphaned by a stopped instance were marked as errors"
            ),
            Err(error) => tracing::debug!(%error, "could not look for orphaned chat replies"),
        }
    }
}

async fn sweep(state: &App) -> anyhow::Result<u64> {
    let quiet_since = Utc::now() - chrono::Duration::from_std(Streams::LEASE)?;
    let candidates = store::quiet_streaming_replies(&state.db, quiet_since, BATCH).await?;
    if candidates.is_empty() {
        return Ok(0);
    }
    let orphans = state
        .streams
        .orphaned(&candidates)
        .await
        .map_err(|error| anyhow::anyhow!("{}", error.message))?;
    if orphans.is_empty() {
        return Ok(0);
    }
    let failed = store::fail_replies(
        &state.db,
        Some(&orphans),
        "The server writing this reply stopped. Send your message again.",
    )
    .await?;
    tell_followers(state, &orphans).await?;
    Ok(failed)
}

/// Ends the Redis copies of the orphans' streams with their `done` as now saved, so clients
/// following them through another instance learn how they ended instead of waiting for the
/// copies to expire.
async fn tell_followers(state: &App, orphans: &[Uuid]) -> anyhow::Result<()> {
    let replies = store::find_messages(&state.db, orphans).await?;
    for reply in replies {
        if reply.status != MessageStatus::Error.as_str() {
            continue;
        }
        let subject = reply.id;
        let done = ChatEvent::Done {
            message: reply.into(),
        };
        if let Err(error) = state.streams.end_orphan(subject, &done).await {
            tracing::debug!(error = %error.message, "could not end an orphaned reply's stream");
        }
    }
    Ok(())
}
