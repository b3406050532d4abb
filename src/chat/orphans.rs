//! With several instances (Redis), a reply whose instance died mid-reply would stay
//! `streaming` for ever. Every instance looks now and then for replies untouched for a lease's
//! length whose lease lapsed (no instance writes them) and marks them failed
//! (`interrupted`), keeping the text saved so far. Without Redis, start-up does this for the
//! lone instance (`fail_interrupted_replies`).

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::store;
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
    Ok(store::fail_replies(
        &state.db,
        Some(&orphans),
        "The server writing this reply stopped. Send your message again.",
    )
    .await?)
}
