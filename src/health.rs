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

/// The database answers and can take writes, and Redis answers when one is configured; a load
/// balancer stops sending traffic while they cannot (a read-only SQLite file, a PostgreSQL
/// standby, Redis down).
async fn ready(State(app): State<App>) -> (StatusCode, Json<Value>) {
    let problem = match app.db.ping().await {
        Err(error) => Some(("unreachable", error.to_string())),
        Ok(()) => db::check_writable(&app.db, &app.config.database_url)
            .await
            .err()
            .map(|error| ("read_only", error)),
    };
    let redis = match &app.redis {
        None => None,
        Some(redis) => Some(redis.ping().await.is_ok()),
    };
    let mut body = json!({ "status": "ready", "database": app.backend });
    if let Some(up) = redis {
        body["redis"] = json!(if up { "ok" } else { "unreachable" });
    }
    let problem = problem.or_else(|| {
        (redis == Some(false)).then(|| ("redis_unreachable", "Redis does not answer".to_owned()))
    });
    match problem {
        None => (StatusCode::OK, Json(body)),
        Some((problem, error)) => {
            tracing::warn!(%error, problem, "readiness check: cannot serve");
            body["status"] = json!("unavailable");
            body["problem"] = json!(problem);
            (StatusCode::SERVICE_UNAVAILABLE, Json(body))
        }
    }
}
