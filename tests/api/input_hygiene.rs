//! Ugly input: control characters in stored text, an oversized model name, an event id at the
//! end of its range, forged `X-Forwarded-For` entries, and malformed input from a caller who
//! is not signed in.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_databases;
use crate::helpers::{DbKind, SseStream, TestApp, data, error_code, error_reason, unique_email};

const PASSWORD: &str = "correct horse battery";

fn field_error<'a>(body: &'a Value, field: &str) -> &'a Value {
    &body["error"]["data"]["fieldErrors"][field]
}

/// The `error` of a subscription's `serialized-error` event.
async fn subscription_error(app: &TestApp, token: &str, path: &str, input: &Value) -> Value {
    let response = app
        .http
        .get(app.trpc_url(path, Some(input)))
        .bearer_auth(token)
        .send()
        .await
        .expect("subscribe");
    let events = SseStream::from_response(response).collect().await;
    events
        .iter()
        .find(|event| event.event.as_deref() == Some("serialized-error"))
        .map(|event| json!({ "error": event.json() }))
        .unwrap_or(Value::Null)
}

async fn control_characters_are_field_errors_on_every_stored_text(app: TestApp) {
    let token = app.new_user().await;
    let (_, created) = app.mutation_as(&token, "chat.sessions.create", None).await;
    let session_id = data(&created)["id"].clone();
    for bad in [
        "nul \u{0} inside",
        "bell \u{7}",
        "escape \u{1b}[31m",
        "cr \r alone",
    ] {
        let send = |content: &str, model: Option<&str>| {
            json!({
                "sessionId": session_id,
                "content": content,
                "clientMessageId": uuid::Uuid::new_v4(),
                "model": model,
            })
        };
        let model = format!("gemini{bad}");
        let calls = [
            ("chat.sessions.create", json!({ "title": bad }), "title"),
            (
                "chat.sessions.update",
                json!({ "id": session_id, "title": bad }),
                "title",
            ),
            ("users.update", json!({ "name": bad }), "name"),
            ("projects.create", json!({ "name": bad }), "name"),
            (
                "projects.create",
                json!({ "name": "Plans", "instructions": bad }),
                "instructions",
            ),
            ("preferences.update", json!({ "aiModel": model }), "aiModel"),
            ("chat.send", send(bad, None), "content"),
            ("chat.send", send("hi", Some(&model)), "model"),
        ];
        for (path, input, field) in calls {
            let (status, body) = app.mutation_as(&token, path, Some(input)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {bad:?}: {body}");
            assert!(field_error(&body, field).is_string(), "{path}: {body}");
        }
        let input = json!({ "email": unique_email(), "password": PASSWORD, "name": bad });
        let (status, body) = app.mutation("auth.register", Some(input)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(field_error(&body, "name").is_string(), "{body}");
    }

    // Line breaks and tabs are text.
    let (status, body) = app
        .mutation_as(
            &token,
            "chat.sessions.create",
            Some(json!({ "title": "plan\tQ3" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let content = json!({
        "sessionId": session_id,
        "content": "two\nlines\tand a tab",
        "clientMessageId": uuid::Uuid::new_v4(),
    });
    let (_, body) = app.mutation_as(&token, "chat.send", Some(content)).await;
    assert_eq!(
        error_reason(&body),
        "api_key_missing",
        "past validation: {body}"
    );
}
both_databases!(control_characters_are_field_errors_on_every_stored_text);

#[tokio::test]
async fn chat_send_checks_its_model_as_preferences_do() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    let token = app.new_user().await;
    let (_, created) = app.mutation_as(&token, "chat.sessions.create", None).await;
    for model in ["m".repeat(5000), "gemini 2.5".to_owned(), String::new()] {
        let input = json!({
            "sessionId": data(&created)["id"],
            "content": "hello",
            "clientMessageId": uuid::Uuid::new_v4(),
            "model": model,
        });
        let (status, body) = app
            .mutation_as(&token, "chat.send", Some(input.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(field_error(&body, "model").is_string(), "{body}");
        // The same through the GET subscription of older clients.
        let error = subscription_error(&app, &token, "chat.send", &input).await;
        assert_eq!(error_code(&error), "BAD_REQUEST", "{error}");
        assert!(field_error(&error, "model").is_string(), "{error}");
    }
}

#[tokio::test]
async fn stream_check_resumes_after_the_largest_id_without_wrapping() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    for last_event_id in ["4294967295", "4294967296", "18446744073709551615"] {
        let events = app
            .subscribe(
                "system.streamCheck",
                Some(&json!({ "count": 3 })),
                Some(last_event_id),
            )
            .await
            .collect()
            .await;
        assert!(
            events.iter().all(|event| event.id.is_none()),
            "no tick comes after {last_event_id}: {events:?}"
        );
        assert_eq!(
            events.last().and_then(|event| event.event.as_deref()),
            Some("return"),
            "{events:?}"
        );
    }
}

/// The IP the audit log recorded for a sign-up sent with `forwarded` as `X-Forwarded-For`.
async fn recorded_ip(app: &TestApp, forwarded: &str) -> String {
    let input = json!({ "email": unique_email(), "password": PASSWORD, "name": "Proxy User" });
    let response = app
        .http
        .post(app.trpc_url("auth.register", None))
        .header("x-forwarded-for", forwarded)
        .json(&input)
        .send()
        .await
        .expect("register");
    let body: Value = response.json().await.expect("json");
    let token = data(&body)["accessToken"].as_str().unwrap_or_default();
    let (status, events) = app.query_as(token, "audit.list", None).await;
    assert_eq!(status, StatusCode::OK, "{events}");
    data(&events)["events"][0]["ip"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn behind_a_trusted_proxy_only_its_last_forwarded_entry_counts() {
    let app = TestApp::spawn_with(DbKind::Sqlite, |config| config.trust_proxy = true).await;
    for (forwarded, expected) in [
        ("6.6.6.6, 1.2.3.4", "1.2.3.4"),
        ("6.6.6.6, 1.2.3.4:5678", "1.2.3.4"),
        ("6.6.6.6, [2001:db8::1]", "2001:db8::1"),
        ("6.6.6.6, [2001:db8::1]:443", "2001:db8::1"),
        ("6.6.6.6, unknown", "127.0.0.1"),
        ("6.6.6.6, not-an-address", "127.0.0.1"),
    ] {
        assert_eq!(recorded_ip(&app, forwarded).await, expected, "{forwarded}");
    }
}

#[tokio::test]
async fn a_signed_out_call_with_malformed_input_is_unauthorized_first() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    let bad_inputs = [
        r#"{"id":"not-a-uuid"}"#,
        r#"{"id":42,"extra":true}"#,
        "{not json",
    ];
    for input in bad_inputs {
        let path = format!(
            "/trpc/chat.sessions.get?input={}",
            crate::helpers::encode(input)
        );
        let (status, body) = app.get_raw(&path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{input}: {body}");
        assert_eq!(error_reason(&body), "missing_token");
        for path in ["/trpc/chat.sessions.update", "/trpc/chat.send"] {
            let (status, body) = app.post_raw(path, "application/json", input).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} {input}: {body}");
        }
    }
    let response = app
        .http
        .get(app.trpc_url("chat.send", Some(&json!({ "sessionId": "nope" }))))
        .send()
        .await
        .expect("subscribe");
    let events = SseStream::from_response(response).collect().await;
    let error = events
        .iter()
        .find(|event| event.event.as_deref() == Some("serialized-error"))
        .map(|event| event.json())
        .unwrap_or_default();
    assert_eq!(error["data"]["code"], "UNAUTHORIZED", "{events:?}");
    // Signed in, the same input is a field error.
    let token = app.new_user().await;
    let (status, body) = app
        .query_as(
            &token,
            "chat.sessions.get",
            Some(json!({ "id": "not-a-uuid" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(field_error(&body, "id").is_string());
}
