//! Forgetting what account security no longer needs: mailed links and codes a day after they
//! expired or were used, and password-attempt windows that ended. Runs hourly, and once
//! shortly after start-up (like the file sweep).

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::email_tokens;
use crate::context::App;
use crate::periodic;

/// Used or expired tokens are kept this long (for a look when a user reports a problem).
const TOKEN_RETENTION: chrono::Duration = chrono::Duration::hours(24);
const INTERVAL: Duration = Duration::from_secs(3600);
const FIRST_RUN: Duration = Duration::from_secs(90);

/// What one prune removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub email_tokens: u64,
    pub password_attempts: u64,
}

/// Prunes until `shutdown`.
pub async fn run_periodically(state: App, shutdown: CancellationToken) {
    periodic::every("account prune", FIRST_RUN, INTERVAL, shutdown, || {
        prune(&state, Utc::now())
    })
    .await;
}

/// One prune, as of `now`.
pub async fn prune(state: &App, now: DateTime<Utc>) -> anyhow::Result<Pruned> {
    Ok(Pruned {
        email_tokens: email_tokens::prune(&state.db, now - TOKEN_RETENTION).await?,
        password_attempts: state.auth.passwords.prune_attempts(&state.db, now).await?,
    })
}
