//! `POST /webhooks/livekit`: LiveKit's room and participant events, verified as LiveKit signs
//! them (anything else: 401, logged). Each event id is applied once; every event only moves
//! a call's times toward their earliest start and end and latest join, leave and activity,
//! so any order of arrival gives the same call.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};

use super::livekit::{self, WebhookEvent};
use super::store::{self, Signals};
use crate::context::App;
use crate::db::begin_write;

/// Largest webhook body accepted (LiveKit's events are a few kilobytes).
const MAX_BODY_BYTES: usize = 256 * 1024;

pub fn routes(app: App) -> axum::Router {
    axum::Router::new()
        .route("/webhooks/livekit", axum::routing::post(receive))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

async fn receive(State(app): State<App>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let Some(config) = app.config.voice.livekit.as_ref() else {
        tracing::warn!("refused a LiveKit webhook: voice calls are not configured");
        return StatusCode::NOT_FOUND;
    };
    let authorization = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok());
    if let Err(refusal) = livekit::verify_webhook(config, authorization, &body) {
        tracing::warn!(reason = refusal.as_str(), "refused a LiveKit webhook");
        return StatusCode::UNAUTHORIZED;
    }
    let Some(event) = livekit::parse_event(&body) else {
        tracing::warn!("a signed LiveKit webhook is no event (no id or event name)");
        return StatusCode::BAD_REQUEST;
    };
    match apply(&app, &event, Utc::now()).await {
        Ok(()) => StatusCode::OK,
        Err(error) => {
            // LiveKit retries a failed delivery; the id was not recorded.
            tracing::error!(%error, event = event.kind, "could not apply a LiveKit webhook");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

async fn apply(app: &App, event: &WebhookEvent, now: DateTime<Utc>) -> Result<(), sea_orm::DbErr> {
    let transaction = begin_write(&app.db).await?;
    if !store::record_event(&transaction, &event.id, now).await? {
        return transaction.commit().await;
    }
    let call = match event.room_name.as_deref() {
        Some(room) => store::find_call_by_room(&transaction, room).await?,
        None => None,
    };
    if let Some(call) = call {
        let at = Some(event.created_at.unwrap_or(now));
        let is_user = event.participant_identity.as_deref() == Some(&call.user_id.to_string());
        let signals = match event.kind.as_str() {
            "room_started" => Signals {
                started: at,
                ..Signals::default()
            },
            "participant_joined" if is_user => Signals {
                started: at,
                user_joined: at,
                ..Signals::default()
            },
            "participant_left" if is_user => Signals {
                user_left: at,
                ..Signals::default()
            },
            "room_finished" => Signals {
                ended: at,
                ..Signals::default()
            },
            _ => Signals::default(),
        };
        let signals = Signals {
            activity: at,
            ..signals
        };
        store::merge_signals(&transaction, call, signals).await?;
    }
    transaction.commit().await
}
