//! Liveness and readiness probes, plain JSON outside the RPC layer.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use crate::context::App;
use crate::db;

pub fn routes(app: App) -> axum::Router {
    axum::Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(app)
}

/// The process is up and serving.
async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The database answers and can take writes; a load balancer stops sending traffic while it
/// cannot (a read-only SQLite file, a PostgreSQL standby).
async fn ready(State(app): State<App>) -> (StatusCode, Json<Value>) {
    let problem = match app.db.ping().await {
        Err(error) => Some(("unreachable", error.to_string())),
        Ok(()) => db::check_writable(&app.db, &app.config.database_url)
            .await
            .err()
            .map(|error| ("read_only", error)),
    };
    match problem {
        None => (
            StatusCode::OK,
            Json(json!({ "status": "ready", "database": app.backend })),
        ),
        Some((problem, error)) => {
            tracing::warn!(%error, problem, "readiness check: the database cannot serve");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(
                    json!({ "status": "unavailable", "database": app.backend, "problem": problem }),
                ),
            )
        }
    }
}
