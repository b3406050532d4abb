//! `system.*`: facts about the running server, and a check that streaming reaches the app.

use std::time::Duration;

use chrono::Utc;
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::context::{App, Ctx};
use crate::db::Backend;
use crate::rpc::Timestamp;
use crate::rpc::{Router, RpcError, Tracked};

pub fn router() -> Router<App> {
    Router::new()
        .query("health", health)
        .subscription("streamCheck", stream_check)
}

#[derive(Serialize, specta::Type)]
pub struct SystemHealth {
    status: HealthStatus,
    /// The server's version (Cargo package version).
    version: &'static str,
    database: Backend,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
}

/// `system.health`: answers without touching the database (use `GET /ready` for that).
async fn health(ctx: Ctx, _: ()) -> Result<SystemHealth, RpcError> {
    Ok(SystemHealth {
        status: HealthStatus::Ok,
        version: env!("CARGO_PKG_VERSION"),
        database: ctx.state.backend,
    })
}

const MAX_STREAM_CHECK_TICKS: u32 = 20;
const STREAM_CHECK_PACE: Duration = Duration::from_millis(100);

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamCheckInput {
    /// How many ticks to send, 1..=20 (default 3).
    #[serde(default)]
    count: Option<u32>,
    /// Set by the client when it reconnects: ticks up to this one are not sent again.
    #[serde(default)]
    last_event_id: Option<String>,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct StreamTick {
    /// 1-based; also the event id.
    seq: u32,
    at: Timestamp,
}

/// `system.streamCheck`: a few ticks over server-sent events, so the app can tell whether
/// streaming works on its current network (some proxies buffer it) before a chat needs it.
async fn stream_check(
    _: Ctx,
    input: StreamCheckInput,
) -> Result<impl Stream<Item = Result<Tracked<StreamTick>, RpcError>>, RpcError> {
    let count = input.count.unwrap_or(3);
    if !(1..=MAX_STREAM_CHECK_TICKS).contains(&count) {
        return Err(RpcError::bad_request(format!(
            "count must be between 1 and {MAX_STREAM_CHECK_TICKS}"
        )));
    }
    // Any whole number is a valid id to resume after (all ticks past it: none, for a huge one).
    let resume_after = match input.last_event_id.as_deref().map(str::parse::<u64>) {
        None => 0,
        Some(Ok(seq)) => seq,
        Some(Err(_)) => {
            return Err(RpcError::bad_request(
                "lastEventId is not an event id of this stream",
            ));
        }
    };
    let first = u32::try_from(resume_after.saturating_add(1)).unwrap_or(u32::MAX);
    Ok(futures::stream::unfold(first, move |seq| async move {
        if seq > count {
            return None;
        }
        tokio::time::sleep(STREAM_CHECK_PACE).await;
        let tick = StreamTick {
            seq,
            at: Utc::now().into(),
        };
        Some((Ok(Tracked::new(seq.to_string(), tick)), seq + 1))
    }))
}
