//! `projects.*` and chats in projects: CRUD with validation, another user's ids, the
//! `projectId` of sessions (create, move, filter), deleting a project with or without its
//! chats, and the project's instructions reaching the provider.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::{Chat, new_id};
use crate::chat_failures::{ends_cleanly, following, provider_request_dropped, sent_reply};
use crate::helpers::{DbKind, TestApp, data, error_code};
use crate::{both_databases, each_database};

async fn create_project(app: &TestApp, token: &str, input: Value) -> Value {
    let (status, body) = app.mutation_as(token, "projects.create", Some(input)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    data(&body).clone()
}

async fn create_session(app: &TestApp, token: &str, input: Value) -> Value {
    let (status, body) = app
        .mutation_as(token, "chat.sessions.create", Some(input))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    data(&body).clone()
}

/// The ids of `chat.sessions.list` with `filter` merged into its input.
async fn listed_sessions(app: &TestApp, token: &str, filter: Value) -> Vec<String> {
    let (status, body) = app
        .query_as(token, "chat.sessions.list", Some(filter))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    data(&body)["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|session| session["id"].as_str().map(str::to_owned))
        .collect()
}

async fn project_crud(app: TestApp) {
    let token = app.new_user().await;
    let created = create_project(
        &app,
        &token,
        json!({ "name": "  Trip to Lisbon ", "instructions": "Plan on foot.", "color": "#3B82F6" }),
    )
    .await;
    assert_eq!(created["name"], "Trip to Lisbon");
    assert_eq!(created["instructions"], "Plan on foot.");
    assert_eq!(created["color"], "#3b82f6");
    let bare = create_project(&app, &token, json!({ "name": "Taxes" })).await;
    assert_eq!(bare["instructions"], "");
    assert_eq!(bare["color"], Value::Null);

    // Every bad field is named at once.
    let input = json!({ "name": " ", "instructions": "x".repeat(8001), "color": "blue" });
    let (status, body) = app
        .mutation_as(&token, "projects.create", Some(input))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let fields = &body["error"]["data"]["fieldErrors"];
    for field in ["name", "instructions", "color"] {
        assert!(fields[field].is_string(), "{field}: {body}");
    }
    let (status, _) = app
        .mutation_as(
            &token,
            "projects.create",
            Some(json!({ "name": "n".repeat(101) })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, body) = app.query_as(&token, "projects.list", None).await;
    let names: Vec<&str> = data(&body)["projects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["Taxes", "Trip to Lisbon"], "newest first");
    let (_, body) = app
        .query_as(&token, "projects.list", Some(json!({ "limit": 1 })))
        .await;
    let cursor = data(&body)["nextCursor"].clone();
    let (_, body) = app
        .query_as(
            &token,
            "projects.list",
            Some(json!({ "limit": 1, "cursor": cursor })),
        )
        .await;
    assert_eq!(data(&body)["projects"][0]["id"], created["id"]);
    assert_eq!(data(&body)["nextCursor"], Value::Null);

    let update = json!({ "id": created["id"], "name": "Lisbon", "instructions": "Plan by tram.", "color": null });
    let (status, body) = app
        .mutation_as(&token, "projects.update", Some(update))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(data(&body)["name"], "Lisbon");
    assert_eq!(data(&body)["instructions"], "Plan by tram.");
    assert_eq!(data(&body)["color"], Value::Null);
    let (_, body) = app
        .mutation_as(
            &token,
            "projects.update",
            Some(json!({ "id": created["id"], "color": "#00ff00" })),
        )
        .await;
    assert_eq!(data(&body)["name"], "Lisbon", "left out, kept");
    assert_eq!(data(&body)["color"], "#00ff00");
    let (status, body) = app
        .mutation_as(
            &token,
            "projects.update",
            Some(json!({ "id": created["id"], "color": "#00ff0" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["data"]["fieldErrors"]["color"].is_string());

    // Another user sees none of it and can change none of it.
    let other = app.new_user().await;
    let (_, body) = app.query_as(&other, "projects.list", None).await;
    assert_eq!(data(&body)["projects"], json!([]));
    for (path, input) in [
        (
            "projects.update",
            json!({ "id": created["id"], "name": "mine" }),
        ),
        ("projects.delete", json!({ "id": created["id"] })),
        ("projects.delete", json!({ "id": uuid::Uuid::now_v7() })),
    ] {
        let (status, body) = app.mutation_as(&other, path, Some(input)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }

    let (status, _) = app
        .mutation_as(
            &token,
            "projects.delete",
            Some(json!({ "id": created["id"] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .mutation_as(
            &token,
            "projects.update",
            Some(json!({ "id": created["id"], "name": "again" })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
both_databases!(project_crud);

async fn sessions_join_filter_and_leave_projects(app: TestApp) {
    let token = app.new_user().await;
    let work = create_project(&app, &token, json!({ "name": "Work" })).await;
    let home = create_project(&app, &token, json!({ "name": "Home" })).await;
    let in_work = create_session(&app, &token, json!({ "projectId": work["id"] })).await;
    assert_eq!(in_work["projectId"], work["id"]);
    let loose = create_session(&app, &token, json!({ "title": "Loose" })).await;
    assert_eq!(loose["projectId"], Value::Null);
    let moved = create_session(&app, &token, json!({})).await;
    let (status, body) = app
        .mutation_as(
            &token,
            "chat.sessions.update",
            Some(json!({ "id": moved["id"], "projectId": home["id"] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(data(&body)["projectId"], home["id"]);

    let ids = |sessions: &[&Value]| -> Vec<String> {
        sessions
            .iter()
            .filter_map(|s| s["id"].as_str().map(str::to_owned))
            .collect()
    };
    let only_work = listed_sessions(&app, &token, json!({ "projectId": work["id"] })).await;
    assert_eq!(only_work, ids(&[&in_work]));
    let in_none = listed_sessions(&app, &token, json!({ "projectId": null })).await;
    assert_eq!(in_none, ids(&[&loose]));
    let all = listed_sessions(&app, &token, json!({})).await;
    assert_eq!(all.len(), 3);
    // With its other filters and paging.
    let searched = listed_sessions(
        &app,
        &token,
        json!({ "projectId": null, "search": "loose", "limit": 1 }),
    )
    .await;
    assert_eq!(searched, ids(&[&loose]));
    let archived = listed_sessions(
        &app,
        &token,
        json!({ "projectId": work["id"], "archived": true }),
    )
    .await;
    assert!(archived.is_empty());

    // Moving a session out; title and pin left alone.
    let (_, body) = app
        .mutation_as(
            &token,
            "chat.sessions.update",
            Some(json!({ "id": moved["id"], "projectId": null, "isPinned": true })),
        )
        .await;
    assert_eq!(data(&body)["projectId"], Value::Null);
    assert_eq!(data(&body)["isPinned"], true);
    let (_, body) = app
        .mutation_as(
            &token,
            "chat.sessions.update",
            Some(json!({ "id": in_work["id"], "title": "Renamed" })),
        )
        .await;
    assert_eq!(
        data(&body)["projectId"],
        work["id"],
        "left out, it stays in"
    );

    // Another user's project (or none at all) is NOT_FOUND everywhere.
    let other = app.new_user().await;
    let theirs = create_project(&app, &other, json!({ "name": "Theirs" })).await;
    for (path, input, mutation) in [
        (
            "chat.sessions.create",
            json!({ "projectId": theirs["id"] }),
            true,
        ),
        (
            "chat.sessions.update",
            json!({ "id": loose["id"], "projectId": theirs["id"] }),
            true,
        ),
        (
            "chat.sessions.create",
            json!({ "projectId": uuid::Uuid::now_v7() }),
            true,
        ),
        (
            "chat.sessions.list",
            json!({ "projectId": theirs["id"] }),
            false,
        ),
    ] {
        let (status, body) = if mutation {
            app.mutation_as(&token, path, Some(input)).await
        } else {
            app.query_as(&token, path, Some(input)).await
        };
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(error_code(&body), "NOT_FOUND");
    }
    let (status, _) = app
        .mutation_as(
            &token,
            "chat.sessions.update",
            Some(json!({ "id": loose["id"], "projectId": "not-a-uuid" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Their session cannot be pulled into my project either.
    let their_session = create_session(&app, &other, json!({})).await;
    let (status, _) = app
        .mutation_as(
            &token,
            "chat.sessions.update",
            Some(json!({ "id": their_session["id"], "projectId": work["id"] })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
both_databases!(sessions_join_filter_and_leave_projects);

async fn session_of(app: &TestApp, token: &str, id: &Value) -> (StatusCode, Value) {
    let (status, body) = app
        .query_as(token, "chat.sessions.get", Some(json!({ "id": id })))
        .await;
    (status, data(&body).clone())
}

async fn deleting_a_project_keeps_or_deletes_its_sessions(app: TestApp) {
    let token = app.new_user().await;
    let kept = create_project(&app, &token, json!({ "name": "Kept chats" })).await;
    let first = create_session(&app, &token, json!({ "projectId": kept["id"] })).await;
    let (status, _) = app
        .mutation_as(&token, "projects.delete", Some(json!({ "id": kept["id"] })))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, session) = session_of(&app, &token, &first["id"]).await;
    assert_eq!(status, StatusCode::OK, "the chat stays");
    assert_eq!(session["projectId"], Value::Null, "moved out");

    let dropped = create_project(&app, &token, json!({ "name": "Dropped chats" })).await;
    let inside = [
        create_session(&app, &token, json!({ "projectId": dropped["id"] })).await,
        create_session(&app, &token, json!({ "projectId": dropped["id"] })).await,
    ];
    let outside = create_session(&app, &token, json!({})).await;
    let input = json!({ "id": dropped["id"], "deleteSessions": true });
    let (status, body) = app
        .mutation_as(&token, "projects.delete", Some(input))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for session in &inside {
        let (status, _) = session_of(&app, &token, &session["id"]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    for session in [&first, &outside] {
        let (status, _) = session_of(&app, &token, &session["id"]).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (_, body) = app.query_as(&token, "projects.list", None).await;
    assert_eq!(data(&body)["projects"], json!([]));
}
both_databases!(deleting_a_project_keeps_or_deletes_its_sessions);

/// The instructions go in the system prompt of the project's chats only, as they stand at
/// each reply; the chat's reply to a deleted project's chat deleted with it stops at once.
async fn instructions_reach_the_provider(db: DbKind) {
    let chat = Chat::start(db, "gemini").await;
    let (app, token) = (&chat.app, &chat.token);
    let instructions = "Always answer like a pirate.";
    let project = create_project(
        app,
        token,
        json!({ "name": "Pirates", "instructions": instructions }),
    )
    .await;
    let (status, _) = app
        .mutation_as(
            token,
            "chat.sessions.update",
            Some(json!({ "id": chat.session_id, "projectId": project["id"] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    chat.send(&chat.input("Hi there", &new_id()), None)
        .await
        .collect()
        .await;
    let system = |call: usize| {
        chat.providers.requests()[call].body["systemInstruction"]["parts"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let first = system(0);
    assert!(
        first.contains("ALIAS"),
        "the server's prompt stays: {first}"
    );
    assert!(first.contains(instructions), "{first}");

    let update = json!({ "id": project["id"], "instructions": "Answer in haiku." });
    app.mutation_as(token, "projects.update", Some(update))
        .await;
    let calls = chat.providers.requests().len();
    chat.send(&chat.input("Again", &new_id()), None)
        .await
        .collect()
        .await;
    let second = system(calls);
    assert!(second.contains("Answer in haiku."), "{second}");
    assert!(!second.contains(instructions), "{second}");

    let loose = chat.create_session().await;
    let calls = chat.providers.requests().len();
    let input = json!({ "sessionId": loose, "content": "Hello", "clientMessageId": new_id() });
    chat.send(&input, None).await.collect().await;
    assert!(!system(calls).contains("haiku"), "{}", system(calls));

    // Deleting the project with its chats stops a reply running in one of them.
    let reply = sent_reply(&chat, &chat.input("keep streaming please", &new_id())).await;
    let stream = following(&chat, &reply, 2).await;
    let input = json!({ "id": project["id"], "deleteSessions": true });
    let (status, body) = app.mutation_as(token, "projects.delete", Some(input)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    ends_cleanly(stream).await;
    provider_request_dropped(&chat).await;
    let (status, _) = app
        .query_as(
            token,
            "chat.sessions.get",
            Some(json!({ "id": chat.session_id })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
each_database!(instructions_reach_the_provider);

/// Chats joining a project while it is deleted: each join either lands (and the chat is then
/// moved out with the rest) or is NOT_FOUND; never a failure, never a chat left pointing at
/// a project that is gone.
async fn joining_a_project_while_it_is_deleted(app: TestApp) {
    let token = app.new_user().await;
    let project = create_project(&app, &token, json!({ "name": "Short-lived" })).await;
    let joins = (0..8).map(|_| {
        app.mutation_as(
            &token,
            "chat.sessions.create",
            Some(json!({ "projectId": project["id"] })),
        )
    });
    let delete = app.mutation_as(
        &token,
        "projects.delete",
        Some(json!({ "id": project["id"] })),
    );
    let (joined, (status, body)) = tokio::join!(futures::future::join_all(joins), delete);
    assert_eq!(status, StatusCode::OK, "{body}");
    for (status, body) in joined {
        assert!(
            status == StatusCode::OK || status == StatusCode::NOT_FOUND,
            "{status}: {body}"
        );
    }
    let (_, body) = app.query_as(&token, "chat.sessions.list", None).await;
    for session in data(&body)["sessions"].as_array().into_iter().flatten() {
        assert_eq!(session["projectId"], Value::Null, "{session}");
    }
}
both_databases!(joining_a_project_while_it_is_deleted);
