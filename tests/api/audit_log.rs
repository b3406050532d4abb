//! `audit.list` over HTTP, on both databases where storage matters.

use entity::audit_events;
use reqwest::StatusCode;
use sea_orm::EntityTrait;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::both_databases;
use crate::helpers::{DbKind, TestApp, data, error_code, error_reason, unique_email};

const PASSWORD: &str = "correct horse battery";
const WRONG_PASSWORD: &str = "not the password at all";

/// A call with an optional bearer token and `User-Agent`, as a real app sends them.
async fn call(
    app: &TestApp,
    path: &str,
    input: Option<Value>,
    token: Option<&str>,
    user_agent: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = app.http.post(app.trpc_url(path, None));
    if let Some(input) = input {
        request = request.json(&input);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(user_agent) = user_agent {
        request = request.header("user-agent", user_agent);
    }
    let response = request.send().await.expect("request reached the server");
    let status = response.status();
    let body = response.json().await.expect("a JSON response");
    (status, body)
}

async fn login(
    app: &TestApp,
    email: &str,
    password: &str,
    user_agent: Option<&str>,
) -> (StatusCode, Value) {
    let input = json!({ "email": email, "password": password });
    call(app, "auth.login", Some(input), None, user_agent).await
}

async fn login_ok(app: &TestApp, email: &str, user_agent: Option<&str>) -> String {
    let (status, body) = login(app, email, PASSWORD, user_agent).await;
    assert_eq!(status, StatusCode::OK, "login: {body}");
    access_token(data(&body))
}

async fn login_fails(app: &TestApp, email: &str, user_agent: Option<&str>) {
    let (status, body) = login(app, email, WRONG_PASSWORD, user_agent).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "wrong password: {body}");
    assert_eq!(error_reason(&body), "invalid_credentials");
}

fn access_token(session: &Value) -> String {
    session["accessToken"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

async fn list(app: &TestApp, token: &str, input: Option<Value>) -> (StatusCode, Value) {
    app.query_as(token, "audit.list", input).await
}

/// One page that must succeed: its events and `nextCursor`.
async fn page(app: &TestApp, token: &str, input: Option<Value>) -> (Vec<Value>, Option<String>) {
    let (status, body) = list(app, token, input.clone()).await;
    assert_eq!(status, StatusCode::OK, "audit.list {input:?}: {body}");
    let page = data(&body);
    let events = page["events"].as_array().expect("events").clone();
    let next = &page["nextCursor"];
    assert!(next.is_null() || next.is_string(), "nextCursor: {page}");
    (events, next.as_str().map(str::to_owned))
}

fn id_of(event: &Value) -> Uuid {
    event["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("a UUID id: {event}"))
}

fn actions(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event["action"].as_str().unwrap_or("<no action>"))
        .collect()
}

fn assert_newest_first(events: &[Value]) {
    for pair in events.windows(2) {
        assert!(
            id_of(&pair[0]) > id_of(&pair[1]),
            "ids strictly descending: {} then {}",
            pair[0],
            pair[1]
        );
        let newer = pair[0]["createdAt"].as_str().unwrap_or_default();
        let older = pair[1]["createdAt"].as_str().unwrap_or_default();
        let newer = chrono::DateTime::parse_from_rfc3339(newer).expect("an RFC 3339 createdAt");
        let older = chrono::DateTime::parse_from_rfc3339(older).expect("an RFC 3339 createdAt");
        assert!(
            newer >= older,
            "createdAt not increasing: {newer} then {older}"
        );
    }
}

/// No key anywhere under `value` mentions a password, and no string holds `secret`.
fn assert_no_secret(value: &Value, secret: &str) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                assert!(
                    !key.to_ascii_lowercase().contains("password"),
                    "a password key in {map:?}"
                );
                assert_no_secret(value, secret);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| assert_no_secret(item, secret)),
        Value::String(text) => assert!(!text.contains(secret), "{secret:?} in {text:?}"),
        _ => {}
    }
}

async fn lists_own_events_newest_first_with_request_details(app: TestApp) {
    let email = unique_email();
    let session = app.register(&email, PASSWORD).await;
    let token = access_token(&session);

    let login_token = login_ok(&app, &email, Some("alias-ios/1.0 (iPhone)")).await;
    login_fails(&app, &email, Some("curl/8.0")).await;
    // A failure for an address nobody has belongs to no one's log.
    login_fails(&app, &unique_email(), Some("curl/8.0")).await;

    let (status, body) = app.query_as(&login_token, "auth.sessions.list", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let login_session = data(&body)
        .as_array()
        .and_then(|sessions| sessions.iter().find(|s| s["current"] == true))
        .map(|s| s["id"].clone())
        .expect("the current session");
    let (status, body) = call(
        &app,
        "auth.logout",
        None,
        Some(&login_token),
        Some("alias-ios/1.0 (iPhone)"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "logout: {body}");

    // Someone else's activity in between.
    let other_email = unique_email();
    let other = app.register(&other_email, PASSWORD).await;
    let other_token = access_token(&other);
    login_fails(&app, &other_email, None).await;

    let (events, next) = page(&app, &token, None).await;
    assert_eq!(
        actions(&events),
        ["sign_out", "sign_in_failed", "sign_in", "sign_up"]
    );
    assert_eq!(next, None, "one page holds them all");
    assert_newest_first(&events);
    for event in &events {
        assert_eq!(event["ip"], "127.0.0.1", "{event}");
        assert!(event["createdAt"].is_string(), "{event}");
        assert_no_secret(event, PASSWORD);
        assert_no_secret(event, WRONG_PASSWORD);
        assert_no_secret(event, &token);
        assert_no_secret(event, &login_token);
    }
    let [sign_out, failed, sign_in, sign_up] = &events[..] else {
        panic!("four events: {events:?}");
    };
    assert_eq!(sign_out["userAgent"], "alias-ios/1.0 (iPhone)");
    assert_eq!(sign_out["metadata"], json!({ "sessionId": login_session }));
    assert_eq!(failed["userAgent"], "curl/8.0");
    assert_eq!(failed["metadata"], json!({ "method": "password" }));
    assert_eq!(sign_in["userAgent"], "alias-ios/1.0 (iPhone)");
    assert_eq!(sign_in["metadata"], json!({ "method": "password" }));
    assert_eq!(
        sign_up["userAgent"],
        Value::Null,
        "sent without a user agent"
    );
    assert_eq!(sign_up["metadata"], json!({ "method": "password" }));

    let (others, _) = page(&app, &other_token, None).await;
    assert_eq!(actions(&others), ["sign_in_failed", "sign_up"]);
    let mine: Vec<Uuid> = events.iter().map(id_of).collect();
    assert!(others.iter().all(|event| !mine.contains(&id_of(event))));

    // Nothing stored anywhere in the table holds a password, including the unowned failure.
    let rows = audit_events::Entity::find()
        .all(&app.db().await)
        .await
        .expect("read the audit table");
    assert_eq!(rows.len(), 7, "{rows:?}");
    assert_eq!(rows.iter().filter(|row| row.user_id.is_none()).count(), 1);
    for row in &rows {
        assert_no_secret(&row.metadata, PASSWORD);
        assert_no_secret(&row.metadata, WRONG_PASSWORD);
    }
}
both_databases!(lists_own_events_newest_first_with_request_details);

#[tokio::test]
async fn long_user_agents_are_truncated() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    let email = unique_email();
    let token = access_token(&app.register(&email, PASSWORD).await);
    let long = "a".repeat(2000);
    login_ok(&app, &email, Some(&long)).await;

    let (events, _) = page(&app, &token, Some(json!({ "limit": 1 }))).await;
    assert_eq!(actions(&events), ["sign_in"]);
    assert_eq!(events[0]["userAgent"], "a".repeat(512));
}

async fn pages_visit_every_event_once(app: TestApp) {
    let email = unique_email();
    let token = access_token(&app.register(&email, PASSWORD).await);
    // 10 events in all, with the 5 password verifications the lock window allows (right
    // ones count too): sign-up, 1 failure, 4 sign-ins, 4 sign-outs.
    login_fails(&app, &email, None).await;
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(login_ok(&app, &email, None).await);
    }
    for session in &sessions {
        let (status, body) = app.mutation_as(session, "auth.logout", None).await;
        assert_eq!(status, StatusCode::OK, "logout: {body}");
    }

    let (all, next) = page(&app, &token, Some(json!({ "limit": 100 }))).await;
    assert_eq!(next, None);
    assert_eq!(all.len(), 10, "{}", actions(&all).join(", "));
    assert_newest_first(&all);
    assert_eq!(actions(&all).first(), Some(&"sign_out"));
    assert_eq!(actions(&all).last(), Some(&"sign_up"));
    let all_ids: Vec<Uuid> = all.iter().map(id_of).collect();

    for limit in [3_usize, 5, 1, 9, 10] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut input = json!({ "limit": limit });
            if let Some(cursor) = &cursor {
                input["cursor"] = json!(cursor);
            }
            let (events, next) = page(&app, &token, Some(input)).await;
            pages += 1;
            assert!(
                pages <= all.len() + 1,
                "limit {limit}: pagination never ends"
            );
            assert!(
                events.len() <= limit,
                "limit {limit}: {} events",
                events.len()
            );
            assert!(!events.is_empty(), "limit {limit}: an empty page");
            seen.extend(events.iter().map(id_of));
            match next {
                Some(next) => {
                    assert_eq!(events.len(), limit, "limit {limit}: a short page mid-way");
                    let last_id = events.last().map(id_of).expect("a last event");
                    assert_eq!(next, last_id.to_string(), "the cursor is the last id");
                    cursor = Some(next);
                }
                None => break,
            }
        }
        assert_eq!(
            seen, all_ids,
            "limit {limit}: every event once, newest first"
        );
        assert_eq!(
            pages,
            all.len().div_ceil(limit),
            "limit {limit}: page count"
        );
    }

    // Without input, `null` or `{}`: the default page (50) holds all ten.
    for input in [None, Some(Value::Null), Some(json!({}))] {
        let (events, next) = page(&app, &token, input).await;
        assert_eq!(events.iter().map(id_of).collect::<Vec<_>>(), all_ids);
        assert_eq!(next, None);
    }

    // Cursors past either end.
    let (events, next) = page(&app, &token, Some(json!({ "cursor": Uuid::max() }))).await;
    assert_eq!(events.len(), 10);
    assert_eq!(next, None);
    let (events, next) = page(&app, &token, Some(json!({ "cursor": Uuid::nil() }))).await;
    assert!(events.is_empty());
    assert_eq!(next, None);
}
both_databases!(pages_visit_every_event_once);

/// tRPC's infinite queries add `cursor` (null first) and `direction` to the input:
/// forward walks to older events, backward to newer ones, pages newest first either way.
async fn pages_go_both_ways_as_trpc_drives_them(app: TestApp) {
    let email = unique_email();
    let token = access_token(&app.register(&email, PASSWORD).await);
    for _ in 0..4 {
        login_fails(&app, &email, None).await;
    }
    let (all, _) = page(&app, &token, None).await;
    let all_ids: Vec<Uuid> = all.iter().map(id_of).collect();
    assert_eq!(all_ids.len(), 5);

    let mut forward = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let input = json!({ "limit": 2, "cursor": cursor, "direction": "forward" });
        let (events, next) = page(&app, &token, Some(input)).await;
        forward.extend(events.iter().map(id_of));
        match next {
            Some(next) => cursor = json!(next),
            None => break,
        }
    }
    assert_eq!(forward, all_ids, "three pages, no duplicates, no gaps");

    // Backward from the oldest event: the newer ones, two by two, each page newest first.
    let oldest = all_ids[4].to_string();
    let input = json!({ "limit": 2, "cursor": oldest, "direction": "backward" });
    let (events, next) = page(&app, &token, Some(input)).await;
    assert_eq!(events.iter().map(id_of).collect::<Vec<_>>(), all_ids[2..4]);
    assert_eq!(next, Some(all_ids[2].to_string()));
    let input = json!({ "limit": 2, "cursor": next, "direction": "backward" });
    let (events, next) = page(&app, &token, Some(input)).await;
    assert_eq!(events.iter().map(id_of).collect::<Vec<_>>(), all_ids[..2]);
    assert_eq!(next, None);

    let (status, body) = list(&app, &token, Some(json!({ "direction": "up" }))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["data"]["fieldErrors"]["direction"].is_string(),
        "{body}"
    );
}
both_databases!(pages_go_both_ways_as_trpc_drives_them);

#[tokio::test]
async fn invalid_list_input_names_the_field() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    let token = access_token(&app.register(&unique_email(), PASSWORD).await);

    for (input, fields) in [
        (json!({ "limit": 0 }), &["limit"][..]),
        (json!({ "limit": 101 }), &["limit"]),
        (json!({ "limit": -1 }), &["limit"]),
        (json!({ "limit": 2.5 }), &["limit"]),
        (json!({ "limit": "3" }), &["limit"]),
        (json!({ "cursor": "garbage" }), &["cursor"]),
        (json!({ "cursor": "" }), &["cursor"]),
        (json!({ "cursor": 42 }), &["cursor"]),
        (
            json!({ "limit": 0, "cursor": "garbage" }),
            &["limit", "cursor"],
        ),
        (json!({ "limit": 3, "page": 2 }), &["page"]),
    ] {
        let (status, body) = list(&app, &token, Some(input.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{input}: {body}");
        assert_eq!(error_code(&body), "BAD_REQUEST", "{body}");
        let named = &body["error"]["data"]["fieldErrors"];
        for field in fields {
            assert!(named[field].is_string(), "{input}: {field} in {body}");
        }
    }

    // The bounds themselves are fine.
    for limit in [1, 100] {
        let (events, _) = page(&app, &token, Some(json!({ "limit": limit }))).await;
        assert_eq!(actions(&events), ["sign_up"]);
    }
}

#[tokio::test]
async fn signed_out_callers_are_refused() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    let (status, body) = app.query("audit.list", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_reason(&body), "missing_token");

    // A signed-out session's token no longer reads the log.
    let token = access_token(&app.register(&unique_email(), PASSWORD).await);
    let (status, body) = app.mutation_as(&token, "auth.logout", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = list(&app, &token, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}
