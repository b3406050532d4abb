//! Tools the assistant may call while replying. The registry is where more tools (mail,
//! calendar) will go: each has a name, a description and a JSON Schema for its arguments.

use std::str::FromStr as _;

use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use super::search;
use crate::context::AppState;
use crate::providers::{ToolCallRequest, ToolSpec};

const SEARCH_RESULTS: u64 = 5;

pub fn specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "get_current_time",
            description: "The current date and time in the user's time zone (or another IANA time zone).",
            parameters: json!({
                "type": "object",
                "properties": {
                    "timezone": { "type": "string", "description": "IANA time zone, e.g. Europe/Paris. Defaults to the user's." }
                }
            }),
        },
        ToolSpec {
            name: "search_conversations",
            description: "Search the user's earlier conversations with you. Returns matching excerpts.",
            parameters: json!({
                "type": "object",
                "properties": { "query": { "type": "string", "description": "Words to look for." } },
                "required": ["query"]
            }),
        },
    ]
}

/// What the caller is allowed to reach.
pub struct ToolContext<'a> {
    pub state: &'a AppState,
    pub user_id: Uuid,
    pub timezone: &'a str,
}

/// Runs a call; failures are results the model can read, never errors of the reply.
pub async fn run(context: &ToolContext<'_>, call: &ToolCallRequest) -> Value {
    match call.name.as_str() {
        "get_current_time" => current_time(context, &call.arguments),
        "search_conversations" => search_conversations(context, &call.arguments).await,
        other => json!({ "error": format!("there is no tool named {other}") }),
    }
}

fn current_time(context: &ToolContext<'_>, arguments: &Value) -> Value {
    let name = arguments["timezone"].as_str().unwrap_or(context.timezone);
    let Ok(timezone) = chrono_tz::Tz::from_str(name) else {
        return json!({ "error": format!("unknown time zone {name}") });
    };
    let now = Utc::now().with_timezone(&timezone);
    json!({
        "timezone": timezone.name(),
        "localTime": now.to_rfc3339(),
        "weekday": now.format("%A").to_string(),
    })
}

async fn search_conversations(context: &ToolContext<'_>, arguments: &Value) -> Value {
    let Some(query) = arguments["query"].as_str() else {
        return json!({ "error": "query is required" });
    };
    match search::search_messages(&context.state.db, context.user_id, query, SEARCH_RESULTS).await {
        Ok(hits) => json!({
            "results": hits.iter().map(|hit| json!({
                "conversation": hit.session_title,
                "excerpt": hit.snippet,
                "date": crate::rpc::Timestamp(hit.created_at).to_iso(),
            })).collect::<Vec<_>>()
        }),
        Err(error) => {
            tracing::error!(%error, "search_conversations tool failed");
            json!({ "error": "search is unavailable right now" })
        }
    }
}
