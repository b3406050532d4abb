//! `chat.search` and the `search` of `chat.sessions.list` over HTTP: only the caller's chats,
//! the index following renames and deletes, the per-user search limit (each call of a batch
//! counts), and a saturated database answered "retry later", never 500.

use std::time::Duration;

use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
use serde_json::{Value, json};

use crate::chat::{Chat, new_id};
use crate::each_database;
use crate::helpers::{DbKind, TestApp, data, encode, error_code, error_reason};

const PASSWORD: &str = "correct horse battery";

async fn hits(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let (status, body) = app
        .query_as(token, "chat.search", Some(json!({ "query": query })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    data(&body)["hits"].as_array().cloned().unwrap_or_default()
}

async fn listed(app: &TestApp, token: &str, search: &str) -> usize {
    let (status, body) = app
        .query_as(
            token,
            "chat.sessions.list",
            Some(json!({ "search": search })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    data(&body)["sessions"].as_array().map_or(0, Vec::len)
}

/// Index entries left in the database (SQLite keeps them in tables of their own; on
/// PostgreSQL they live in the chat rows, so none can outlive them).
async fn index_rows(app: &TestApp) -> i64 {
    if app.db_kind != DbKind::Sqlite {
        return 0;
    }
    let db = app.db().await;
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT (SELECT count(*) FROM chat_messages_search) \
             + (SELECT count(*) FROM chat_sessions_search) AS n",
        ))
        .await
        .expect("count index rows")
        .expect("a count");
    row.try_get("", "n").expect("count")
}

async fn only_the_callers_chats_are_found(db_kind: DbKind) {
    let chat = Chat::start(db_kind, "gemini").await;
    let app = &chat.app;
    chat.send(
        &chat.input("Plan the quarterly budget meeting", &new_id()),
        None,
    )
    .await
    .collect()
    .await;
    assert_eq!(hits(app, &chat.token, "budget").await.len(), 1);
    assert_eq!(listed(app, &chat.token, "budget").await, 1);

    // Someone with no messages finds nothing, whatever others wrote.
    let newcomer = app.new_user().await;
    for query in ["budget", "quarterly budget", "plan", "b", "meeting"] {
        assert!(hits(app, &newcomer, query).await.is_empty(), "{query}");
        assert_eq!(listed(app, &newcomer, query).await, 0, "{query}");
    }

    // A rename is searchable at once; the old title is not.
    let (status, body) = app
        .mutation_as(
            &chat.token,
            "chat.sessions.update",
            Some(json!({ "id": chat.session_id, "title": "Zebra logistics" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(listed(app, &chat.token, "zebra").await, 1);
    let found = hits(app, &chat.token, "budget").await;
    assert_eq!(found[0]["sessionTitle"], "Zebra logistics", "{found:?}");

    // Deleting the chat takes its messages out of the index.
    let (status, body) = app
        .mutation_as(
            &chat.token,
            "chat.sessions.delete",
            Some(json!({ "id": chat.session_id })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(hits(app, &chat.token, "budget").await.is_empty());
    assert_eq!(listed(app, &chat.token, "zebra").await, 0);

    // So does deleting the account, with its remaining chats.
    let kept = chat.create_session().await;
    let (status, body) = app
        .mutation_as(
            &chat.token,
            "chat.sessions.update",
            Some(json!({ "id": kept, "title": "Giraffe budget" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(listed(app, &chat.token, "giraffe").await, 1);
    let (status, body) = app
        .mutation_as(
            &chat.token,
            "users.delete",
            Some(json!({ "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        index_rows(app).await,
        0,
        "terms of deleted chats left behind"
    );
}
each_database!(only_the_callers_chats_are_found);

/// `GET /trpc/chat.search,…?batch=1`: `count` searches in one request.
async fn search_batch(app: &TestApp, token: &str, count: usize) -> (StatusCode, Vec<Value>) {
    let paths = vec!["chat.search"; count].join(",");
    let inputs: serde_json::Map<String, Value> = (0..count)
        .map(|i| (i.to_string(), json!({ "query": format!("word{i}") })))
        .collect();
    let url = app.url(&format!(
        "/trpc/{paths}?batch=1&input={}",
        encode(&Value::Object(inputs).to_string())
    ));
    let response = app
        .http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("batch");
    let status = response.status();
    let body: Value = response.json().await.expect("JSON batch");
    (status, body.as_array().cloned().unwrap_or_default())
}

fn is_rate_limited(answer: &Value) -> bool {
    answer["error"]["data"]["code"] == "TOO_MANY_REQUESTS"
        && answer["error"]["data"]["reason"] == "rate_limited"
        && answer["error"]["data"]["retryAfterSeconds"]
            .as_u64()
            .is_some_and(|seconds| (1..=60).contains(&seconds))
}

async fn searches_are_limited_per_user(db_kind: DbKind) {
    let app = TestApp::spawn_with(db_kind, |config| {
        config.chat.search_limit_per_minute = 60;
        // Only the search budget is tested here, not that of every call.
        config.usage.calls_per_minute = 1000;
    })
    .await;
    let token = app.new_user().await;
    let (status, answers) = search_batch(&app, &token, 50).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answers.len(), 50);
    assert!(
        answers
            .iter()
            .all(|a| a["result"]["data"]["hits"] == json!([]))
    );

    // Each call of a batch counts: 10 of the next 50 fit in the minute.
    let (status, answers) = search_batch(&app, &token, 50).await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    let refused = answers.iter().filter(|a| is_rate_limited(a)).count();
    let answered = answers.iter().filter(|a| a.get("result").is_some()).count();
    assert_eq!((answered, refused), (10, 40), "{answers:?}");

    let (status, body) = app
        .query_as(&token, "chat.search", Some(json!({ "query": "again" })))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(error_code(&body), "TOO_MANY_REQUESTS");
    assert_eq!(error_reason(&body), "rate_limited");
    let (status, body) = app
        .query_as(
            &token,
            "chat.sessions.list",
            Some(json!({ "search": "again" })),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // Listing without a search is no search.
    let (status, body) = app.query_as(&token, "chat.sessions.list", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Another user has a budget of their own.
    let other = app.new_user().await;
    assert!(hits(&app, &other, "anything").await.is_empty());
}
each_database!(searches_are_limited_per_user);

/// Searches that find the pool exhausted say "retry later", each call of a batch alike.
async fn a_saturated_database_asks_searches_to_retry(db_kind: DbKind) {
    let app = TestApp::spawn_with(db_kind, |config| {
        config.db_max_connections = 2;
        config.db_acquire_timeout = Duration::from_millis(500);
    })
    .await;
    let token = app.new_user().await;
    // The session is now cached: the calls below reach the search itself.
    assert!(hits(&app, &token, "warm").await.is_empty());
    let held = [
        app.state.db.begin().await.expect("hold a connection"),
        app.state.db.begin().await.expect("hold another"),
    ];
    let (status, answers) = search_batch(&app, &token, 3).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answers:?}");
    assert_eq!(answers.len(), 3);
    for answer in &answers {
        let error = &answer["error"]["data"];
        assert_eq!(error["code"], "SERVICE_UNAVAILABLE", "{answer}");
        assert_eq!(error["reason"], "database_busy", "{answer}");
        assert!(error["retryAfterSeconds"].as_u64().is_some_and(|s| s >= 1));
    }
    let (status, body) = app
        .query_as(
            &token,
            "chat.sessions.list",
            Some(json!({ "search": "busy" })),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_reason(&body), "database_busy");
    drop(held);
    assert!(hits(&app, &token, "free").await.is_empty());
}
each_database!(a_saturated_database_asks_searches_to_retry);
