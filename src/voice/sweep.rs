//! Webhooks arrive out of order, twice or never: a call nothing was heard of (no webhook, no
//! transcript) for `ALIAS_VOICE_QUIET_SECONDS` is ended as of its last activity, and webhook
//! ids older than a day are forgotten (their signatures expired long before).

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::store;
use crate::context::App;

const FIRST_RUN: Duration = Duration::from_secs(30);
const EVENT_MEMORY: chrono::Duration = chrono::Duration::days(1);

/// What one sweep did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub ended_calls: u64,
    pub forgotten_events: u64,
}

/// Sweeps until `shutdown`, every tenth of the quiet time (between 10 s and 5 min).
pub async fn run_periodically(state: App, shutdown: CancellationToken) {
    let interval = (state.config.voice.quiet_after / 10)
        .clamp(Duration::from_secs(10), Duration::from_secs(300));
    crate::periodic::every("voice sweep", FIRST_RUN, interval, shutdown, || {
        sweep(&state, Utc::now())
    })
    .await;
}

/// One sweep, as of `now`.
pub async fn sweep(state: &App, now: DateTime<Utc>) -> anyhow::Result<Swept> {
    let quiet = chrono::Duration::from_std(state.config.voice.quiet_after)?;
    Ok(Swept {
        ended_calls: store::end_quiet_calls(&state.db, now - quiet).await?,
        forgotten_events: store::forget_events(&state.db, now - EVENT_MEMORY).await?,
    })
}
