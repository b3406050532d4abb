//! Background chores run on a timer until shutdown (the file sweep, the voice sweep).
//! Infrastructure: no domain knowledge.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `chore` after `first`, then every `interval`, until `shutdown`. What it did is logged
/// when it did anything (anything but `T::default()`); a failure is logged and retried at
/// the next turn.
pub async fn every<T, F, Fut>(
    what: &'static str,
    first: Duration,
    interval: Duration,
    shutdown: CancellationToken,
    mut chore: F,
) where
    T: Debug + Default + PartialEq,
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut wait = first;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        match chore().await {
            Ok(done) if done != T::default() => tracing::info!(?done, "{what}"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "{what} failed; retrying later"),
        }
        wait = interval;
    }
}
