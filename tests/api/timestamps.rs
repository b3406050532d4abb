//! Every time the server sends is what `Date.prototype.toISOString` writes:
//! `YYYY-MM-DDTHH:MM:SS.mmmZ`, milliseconds always present, UTC as `Z`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_databases;
use crate::helpers::{TestApp, data, unique_email};

/// Fields named like times (`…At`, `at`) anywhere in `value`, with their text.
fn times<'a>(value: &'a Value, found: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(object) => {
            for (key, value) in object {
                if key == "at" || key.ends_with("At") {
                    found.push((key.clone(), value));
                }
                times(value, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| times(item, found)),
        _ => {}
    }
}

fn is_iso_millis(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits =
        |range: std::ops::Range<usize>| range.into_iter().all(|i| bytes[i].is_ascii_digit());
    bytes.len() == 24
        && digits(0..4)
        && bytes[4] == b'-'
        && digits(5..7)
        && bytes[7] == b'-'
        && digits(8..10)
        && bytes[10] == b'T'
        && digits(11..13)
        && bytes[13] == b':'
        && digits(14..16)
        && bytes[16] == b':'
        && digits(17..19)
        && bytes[19] == b'.'
        && digits(20..23)
        && bytes[23] == b'Z'
}

async fn every_output_time_has_milliseconds_and_z(app: TestApp) {
    let session = app.register(&unique_email(), "correct horse battery").await;
    let token = session["accessToken"].as_str().expect("token");
    let key = json!({ "provider": "gemini", "apiKey": "AIza-test-key", "validate": false });
    let (status, body) = app.mutation_as(token, "apiKeys.set", Some(key)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, created) = app.mutation_as(token, "chat.sessions.create", None).await;

    let mut outputs = vec![session.clone(), data(&created).clone()];
    for path in [
        "users.me",
        "auth.sessions.list",
        "apiKeys.list",
        "chat.sessions.list",
        "audit.list",
    ] {
        let (status, body) = app.query_as(token, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        outputs.push(data(&body).clone());
    }
    let ticks = app
        .subscribe("system.streamCheck", Some(&json!({ "count": 2 })), None)
        .await
        .collect()
        .await;
    outputs.extend(ticks.iter().filter(|e| e.event.is_none()).map(|e| e.json()));

    let mut found = Vec::new();
    for output in &outputs {
        times(output, &mut found);
    }
    let names: std::collections::BTreeSet<&str> =
        found.iter().map(|(name, _)| name.as_str()).collect();
    for expected in [
        "createdAt",
        "updatedAt",
        "lastMessageAt",
        "lastUsedAt",
        "lastValidatedAt",
        "at",
    ] {
        assert!(names.contains(expected), "no {expected} among {names:?}");
    }
    for (name, value) in found {
        match value {
            Value::Null => assert_eq!(name, "lastValidatedAt", "only a time never reached is null"),
            Value::String(text) => assert!(is_iso_millis(text), "{name}: {text}"),
            other => panic!("{name}: {other}"),
        }
    }
}
both_databases!(every_output_time_has_milliseconds_and_z);

#[test]
fn the_check_itself_is_strict() {
    assert!(is_iso_millis("2025-01-31T09:30:00.120Z"));
    assert!(!is_iso_millis("2025-01-31T09:30:00Z"));
    assert!(!is_iso_millis("2025-01-31T09:30:00.120123Z"));
    assert!(!is_iso_millis("2025-01-31T09:30:00.120+00:00"));
}
