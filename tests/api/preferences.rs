//! `preferences.*` over HTTP, on both databases where storage matters.

use entity::preferences;
use reqwest::StatusCode;
use sea_orm::EntityTrait;
use serde_json::{Value, json};

use crate::helpers::{DbKind, TestApp, data, error_code, error_reason, unique_email};
use crate::{both_databases, each_database};

const PASSWORD: &str = "correct horse battery";

/// Registers a fresh account and returns its access token and user id.
async fn sign_up(app: &TestApp) -> (String, uuid::Uuid) {
    let session = app.register(&unique_email(), PASSWORD).await;
    let token = session["accessToken"]
        .as_str()
        .expect("an access token")
        .to_owned();
    let id = session["user"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("a user id");
    (token, id)
}

fn defaults() -> Value {
    json!({
        "theme": "system",
        "language": "en",
        "timezone": "UTC",
        "aiProvider": "gemini",
        "aiModel": "gemini-2.5-flash",
        "temperature": 0.7,
        "maxTokens": 1024,
        "saveConversations": true,
        "notificationsEnabled": true,
    })
}

/// `expected` with the fields of `changes` replaced.
fn with(expected: &Value, changes: Value) -> Value {
    let mut merged = expected.clone();
    if let (Some(target), Value::Object(changes)) = (merged.as_object_mut(), changes) {
        target.extend(changes);
    }
    merged
}

async fn get(app: &TestApp, token: &str) -> Value {
    let (status, body) = app.query_as(token, "preferences.get", None).await;
    assert_eq!(status, StatusCode::OK, "preferences.get: {body}");
    data(&body).clone()
}

async fn update(app: &TestApp, token: &str, input: Value) -> (StatusCode, Value) {
    app.mutation_as(token, "preferences.update", Some(input))
        .await
}

/// An update that must succeed; returns the full `Preferences`.
async fn update_ok(app: &TestApp, token: &str, input: Value) -> Value {
    let (status, body) = update(app, token, input.clone()).await;
    assert_eq!(status, StatusCode::OK, "update {input}: {body}");
    data(&body).clone()
}

/// An update that must fail with BAD_REQUEST; returns `error.data.fieldErrors`.
async fn update_refused(app: &TestApp, token: &str, input: Value) -> Value {
    let (status, body) = update(app, token, input.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "update {input}: {body}");
    assert_eq!(error_code(&body), "BAD_REQUEST", "{body}");
    let fields = body["error"]["data"]["fieldErrors"].clone();
    assert!(fields.is_object(), "fieldErrors for {input}: {body}");
    fields
}

async fn stored_row(app: &TestApp, user_id: uuid::Uuid) -> Option<preferences::Model> {
    preferences::Entity::find_by_id(user_id)
        .one(&app.db().await)
        .await
        .expect("read the preferences table")
}

async fn a_new_user_gets_the_defaults(app: TestApp) {
    let (token, user_id) = sign_up(&app).await;
    assert_eq!(get(&app, &token).await, defaults());
    assert!(
        stored_row(&app, user_id).await.is_none(),
        "reading the defaults stores nothing"
    );
}
both_databases!(a_new_user_gets_the_defaults);

async fn partial_updates_keep_omitted_fields_and_persist(app: TestApp) {
    let (token, user_id) = sign_up(&app).await;

    let first = update_ok(
        &app,
        &token,
        json!({ "theme": "dark", "temperature": 0.2, "timezone": "Europe/Paris" }),
    )
    .await;
    let expected = with(
        &defaults(),
        json!({ "theme": "dark", "temperature": 0.2, "timezone": "Europe/Paris" }),
    );
    assert_eq!(first, expected);

    let second = update_ok(
        &app,
        &token,
        json!({ "language": "fr", "saveConversations": false, "maxTokens": 4096 }),
    )
    .await;
    let expected = with(
        &expected,
        json!({ "language": "fr", "saveConversations": false, "maxTokens": 4096 }),
    );
    assert_eq!(second, expected, "the first update's values are kept");

    let third = update_ok(&app, &token, json!({ "notificationsEnabled": false })).await;
    let expected = with(&expected, json!({ "notificationsEnabled": false }));
    assert_eq!(third, expected);

    assert_eq!(get(&app, &token).await, expected, "a fresh get sees it all");

    let row = stored_row(&app, user_id).await.expect("a stored row");
    assert_eq!(row.theme, "dark");
    assert_eq!(row.language, "fr");
    assert_eq!(row.timezone, "Europe/Paris");
    assert_eq!(row.ai_provider, "gemini");
    assert_eq!(
        row.ai_model, None,
        "the provider's default model is not pinned"
    );
    assert!((row.temperature - 0.2).abs() < f64::EPSILON);
    assert_eq!(row.max_tokens, 4096);
    assert!(!row.save_conversations);
    assert!(!row.notifications_enabled);
}
both_databases!(partial_updates_keep_omitted_fields_and_persist);

async fn an_empty_update_changes_nothing(app: TestApp) {
    let (token, _) = sign_up(&app).await;
    update_ok(&app, &token, json!({ "theme": "light" })).await;
    let expected = with(&defaults(), json!({ "theme": "light" }));

    let (status, body) = app.mutation_as(&token, "preferences.update", None).await;
    assert_eq!(status, StatusCode::OK, "no input: {body}");
    assert_eq!(data(&body), &expected);
    assert_eq!(update_ok(&app, &token, json!({})).await, expected);
    assert_eq!(get(&app, &token).await, expected);
}
both_databases!(an_empty_update_changes_nothing);

async fn changing_the_provider_picks_its_default_model(app: TestApp) {
    let (token, user_id) = sign_up(&app).await;

    let openai = update_ok(&app, &token, json!({ "aiProvider": "openai" })).await;
    assert_eq!(openai["aiProvider"], "openai");
    assert_eq!(openai["aiModel"], "gpt-4.1-mini");

    let anthropic = update_ok(&app, &token, json!({ "aiProvider": "anthropic" })).await;
    assert_eq!(anthropic["aiProvider"], "anthropic");
    assert_eq!(anthropic["aiModel"], "claude-sonnet-4-5");
    assert_eq!(get(&app, &token).await, anthropic);

    let chosen = update_ok(
        &app,
        &token,
        json!({ "aiProvider": "openai", "aiModel": "gpt-4o" }),
    )
    .await;
    assert_eq!(chosen["aiProvider"], "openai");
    assert_eq!(chosen["aiModel"], "gpt-4o", "a named model is kept");
    assert_eq!(get(&app, &token).await, chosen);
    let row = stored_row(&app, user_id).await.expect("a stored row");
    assert_eq!(row.ai_model.as_deref(), Some("gpt-4o"));

    // Naming the provider already in use is not a change: the chosen model stays.
    let same = update_ok(&app, &token, json!({ "aiProvider": "openai" })).await;
    assert_eq!(same["aiModel"], "gpt-4o");
    // Neither does updating something else.
    let other = update_ok(&app, &token, json!({ "temperature": 1.5 })).await;
    assert_eq!(other["aiModel"], "gpt-4o");

    let back = update_ok(&app, &token, json!({ "aiProvider": "gemini" })).await;
    assert_eq!(back["aiProvider"], "gemini");
    assert_eq!(back["aiModel"], "gemini-2.5-flash");
    assert_eq!(get(&app, &token).await, back);

    // A model alone keeps the provider.
    let model_only = update_ok(&app, &token, json!({ "aiModel": "gemini-2.5-pro" })).await;
    assert_eq!(model_only["aiProvider"], "gemini");
    assert_eq!(model_only["aiModel"], "gemini-2.5-pro");
    assert_eq!(get(&app, &token).await, model_only);
}
both_databases!(changing_the_provider_picks_its_default_model);

async fn every_invalid_field_is_named_and_nothing_changes(app: TestApp) {
    let (token, user_id) = sign_up(&app).await;

    // On a user who never saved anything, a refused update stores no row.
    let fields = update_refused(&app, &token, json!({ "theme": "blue" })).await;
    assert!(fields["theme"].is_string(), "{fields}");
    assert!(stored_row(&app, user_id).await.is_none());

    let before = update_ok(
        &app,
        &token,
        json!({ "theme": "dark", "aiProvider": "anthropic", "maxTokens": 2048 }),
    )
    .await;

    let fields = update_refused(
        &app,
        &token,
        json!({
            "theme": "blue",
            "language": "english_US",
            "timezone": "Mars/Olympus",
            "aiProvider": "mistral",
            "aiModel": "has spaces",
            "temperature": 2.5,
            "maxTokens": 0,
            // Valid, but must not be applied either.
            "saveConversations": false,
            "notificationsEnabled": false,
        }),
    )
    .await;
    let expected_fields = [
        "theme",
        "language",
        "timezone",
        "aiProvider",
        "aiModel",
        "temperature",
        "maxTokens",
    ];
    for field in expected_fields {
        let message = fields[field].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{field} is named: {fields}");
    }
    assert_eq!(
        fields.as_object().map(|f| f.len()),
        Some(expected_fields.len()),
        "only the invalid fields are named: {fields}"
    );

    // One bad field among good ones refuses the whole update.
    let fields = update_refused(
        &app,
        &token,
        json!({ "theme": "light", "language": "de", "temperature": -0.1 }),
    )
    .await;
    assert!(fields["temperature"].is_string(), "{fields}");
    assert!(fields.get("theme").is_none(), "{fields}");
    assert!(fields.get("language").is_none(), "{fields}");

    // A bad model with a provider change must not switch the provider.
    let fields = update_refused(
        &app,
        &token,
        json!({ "aiProvider": "openai", "aiModel": "" }),
    )
    .await;
    assert!(fields["aiModel"].is_string(), "{fields}");

    assert_eq!(get(&app, &token).await, before, "nothing changed");
    let row = stored_row(&app, user_id).await.expect("a stored row");
    assert_eq!(row.theme, "dark");
    assert_eq!(row.ai_provider, "anthropic");
    assert_eq!(row.max_tokens, 2048);
    assert!(row.save_conversations);
}
both_databases!(every_invalid_field_is_named_and_nothing_changes);

fn number(value: &Value) -> f64 {
    value.as_f64().expect("a number")
}

async fn boundary_values_are_accepted(app: TestApp) {
    let (token, _) = sign_up(&app).await;

    let low = update_ok(
        &app,
        &token,
        json!({ "temperature": 0, "maxTokens": 1, "language": "pt-BR" }),
    )
    .await;
    assert!(number(&low["temperature"]).abs() < f64::EPSILON, "{low}");
    assert_eq!(low["maxTokens"], 1);
    assert_eq!(low["language"], "pt-BR");
    let stored = get(&app, &token).await;
    assert!(number(&stored["temperature"]).abs() < f64::EPSILON);
    assert_eq!(stored["maxTokens"], 1);

    let high = update_ok(
        &app,
        &token,
        json!({
            "temperature": 2,
            "maxTokens": 65536,
            "timezone": "America/Argentina/Buenos_Aires",
        }),
    )
    .await;
    assert!((number(&high["temperature"]) - 2.0).abs() < f64::EPSILON);
    assert_eq!(high["maxTokens"], 65536);
    assert_eq!(high["timezone"], "America/Argentina/Buenos_Aires");
    assert_eq!(high["language"], "pt-BR");
    assert_eq!(get(&app, &token).await, high);

    // Just past each boundary.
    for (field, value) in [
        ("temperature", json!(-0.001)),
        ("temperature", json!(2.001)),
        ("maxTokens", json!(65537)),
        ("maxTokens", json!(-1)),
        ("maxTokens", json!(4_294_967_297_i64)),
        ("language", json!("e")),
        ("language", json!("en_US")),
        ("timezone", json!("")),
        ("aiModel", json!("x".repeat(101))),
    ] {
        let fields = update_refused(&app, &token, json!({ field: value })).await;
        assert!(fields[field].is_string(), "{field} = {value}: {fields}");
    }
    assert_eq!(get(&app, &token).await, high);
}
both_databases!(boundary_values_are_accepted);

#[tokio::test]
async fn unknown_fields_are_rejected() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    let (token, user_id) = sign_up(&app).await;

    for (input, unknown) in [
        (json!({ "colour": "red" }), "colour"),
        (json!({ "theme": "dark", "colour": "red" }), "colour"),
        (json!({ "colour": "red", "theme": "dark" }), "colour"),
        // The Rust spelling is not the wire spelling.
        (json!({ "max_tokens": 10 }), "max_tokens"),
        (json!({ "aiprovider": "openai" }), "aiprovider"),
        (json!({ "Theme": "dark" }), "Theme"),
    ] {
        let fields = update_refused(&app, &token, input.clone()).await;
        assert!(fields[unknown].is_string(), "{input}: {fields}");
    }
    assert_eq!(get(&app, &token).await, defaults(), "nothing was applied");
    assert!(stored_row(&app, user_id).await.is_none());
}

#[tokio::test]
async fn wrong_json_types_name_the_field() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    let (token, _) = sign_up(&app).await;

    for (field, value) in [
        ("temperature", json!("hot")),
        ("temperature", json!(true)),
        ("maxTokens", json!(1.5)),
        ("maxTokens", json!("1024")),
        ("theme", json!(1)),
        ("theme", json!({ "name": "dark" })),
        ("language", json!(["en"])),
        ("saveConversations", json!("yes")),
        ("notificationsEnabled", json!(0)),
    ] {
        let fields = update_refused(&app, &token, json!({ field: value })).await;
        assert!(fields[field].is_string(), "{field} = {value}: {fields}");
    }

    // Not an object at all.
    for input in [json!("dark"), json!([{ "theme": "dark" }]), json!(42)] {
        let (status, body) = update(&app, &token, input.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{input}: {body}");
    }
    assert_eq!(get(&app, &token).await, defaults());
}

async fn each_user_sees_only_their_own(app: TestApp) {
    let (alice, _) = sign_up(&app).await;
    let (bob, _) = sign_up(&app).await;

    let alices = update_ok(
        &app,
        &alice,
        json!({ "theme": "dark", "aiProvider": "openai", "language": "fr" }),
    )
    .await;
    assert_eq!(get(&app, &bob).await, defaults(), "Bob still has defaults");

    let bobs = update_ok(&app, &bob, json!({ "timezone": "Asia/Tokyo" })).await;
    assert_eq!(bobs, with(&defaults(), json!({ "timezone": "Asia/Tokyo" })));
    assert_eq!(get(&app, &alice).await, alices, "Alice's are untouched");
    assert_eq!(get(&app, &bob).await, bobs);
}
both_databases!(each_user_sees_only_their_own);

#[tokio::test]
async fn signed_out_callers_are_refused() {
    let app = TestApp::spawn(DbKind::Sqlite).await;

    let (status, body) = app.query("preferences.get", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_reason(&body), "missing_token");

    let (status, body) = app
        .mutation("preferences.update", Some(json!({ "theme": "dark" })))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_reason(&body), "missing_token");

    let (status, body) = app.query_as("not-a-token", "preferences.get", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_reason(&body), "invalid_token");

    let stored = preferences::Entity::find()
        .all(&app.db().await)
        .await
        .expect("read the preferences table");
    assert!(stored.is_empty(), "nothing stored: {stored:?}");
}

/// Two devices changing different fields at once must both be kept ("omitted fields stay as
/// they are"): the read-merge-write holds the row for its transaction. (120 calls in well
/// under a minute: past the default per-user budget, raised here.)
async fn concurrent_partial_updates_keep_both(db_kind: DbKind) {
    let app = TestApp::spawn_with(db_kind, |config| {
        config.usage.calls_per_minute = 1000;
    })
    .await;
    let (token, _) = sign_up(&app).await;
    for round in 0..40 {
        let (theme, language) = if round % 2 == 0 {
            ("dark", "fr")
        } else {
            ("light", "de")
        };
        let (a, b) = tokio::join!(
            update(&app, &token, json!({ "theme": theme })),
            update(&app, &token, json!({ "language": language })),
        );
        assert_eq!(a.0, StatusCode::OK, "{}", a.1);
        assert_eq!(b.0, StatusCode::OK, "{}", b.1);
        let now = get(&app, &token).await;
        assert_eq!(
            (&now["theme"], &now["language"]),
            (&json!(theme), &json!(language)),
            "round {round}: an update was lost: {now}"
        );
    }
}

each_database!(concurrent_partial_updates_keep_both);
