//! `chat.export`: Markdown of the current branch, this server's JSON of the whole tree.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::{Chat, new_id};
use crate::chat_branches::ask;
use crate::each_database;
use crate::helpers::{DbKind, data, error_code};

async fn export(chat: &Chat, token: &str, format: &str) -> (StatusCode, Value) {
    let input = json!({ "sessionId": chat.session_id, "format": format });
    chat.app.query_as(token, "chat.export", Some(input)).await
}

async fn exports_the_branch_as_markdown_and_the_tree_as_json(db: DbKind) {
    let chat = Chat::start(db, "openai").await;
    let first = ask(
        &chat,
        "chat.send",
        chat.input("Plan a trip to Rome", &new_id()),
    )
    .await;
    let edit = json!({
        "messageId": first["userMessage"]["id"],
        "content": "Plan a trip to Lisbon",
        "clientMessageId": new_id(),
    });
    let edited = ask(&chat, "chat.edit", edit).await;

    let (status, body) = export(&chat, &chat.token, "json").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let text = data(&body).as_str().expect("the export's text");
    let exported: Value = serde_json::from_str(text).expect("JSON");
    assert_eq!(exported["format"], "alias.chat");
    assert_eq!(exported["version"], 1);
    assert_eq!(exported["title"], chat.session().await["title"]);
    assert_eq!(exported["currentLeafId"], edited["replyMessageId"]);
    let messages = exported["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 4, "both branches");
    let contents: Vec<&str> = messages
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(
        contents,
        [
            "Plan a trip to Rome",
            "Hello from OpenAI.",
            "Plan a trip to Lisbon",
            "Hello from OpenAI."
        ]
    );
    assert_eq!(messages[1]["parentId"], messages[0]["id"]);
    assert_eq!(messages[2]["parentId"], Value::Null);
    assert_eq!(messages[3]["role"], "assistant");
    assert!(messages[3]["model"].is_string());
    assert!(messages[3]["createdAt"].is_string());

    let (status, body) = export(&chat, &chat.token, "markdown").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let text = data(&body).as_str().expect("the export's text");
    assert!(text.starts_with("# "), "{text}");
    assert!(text.contains("**You**"), "{text}");
    assert!(text.contains("Plan a trip to Lisbon"), "{text}");
    assert!(text.contains("Hello from OpenAI."), "{text}");
    assert!(!text.contains("Rome"), "only the current branch: {text}");

    let (status, body) = export(&chat, &chat.token, "pdf").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "BAD_REQUEST")
    );
    let other = chat.app.new_user().await;
    let (status, body) = export(&chat, &other, "json").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );
}
each_database!(exports_the_branch_as_markdown_and_the_tree_as_json);

async fn users_export_downloads_everything_but_secrets(db: DbKind) {
    let chat = Chat::start(db, "openai").await;
    ask(
        &chat,
        "chat.send",
        chat.input("Remember the milk", &new_id()),
    )
    .await;
    let input = json!({ "name": "Errands", "instructions": "Keep lists short." });
    let (_, project) = chat
        .app
        .mutation_as(&chat.token, "projects.create", Some(input))
        .await;
    let project_id = data(&project)["id"].clone();
    let input = json!({ "id": chat.session_id, "projectId": project_id });
    chat.app
        .mutation_as(&chat.token, "chat.sessions.update", Some(input))
        .await;
    let (status, body) = chat
        .app
        .mutation_as(&chat.token, "users.export", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let download = data(&body).clone();
    assert!(
        download["filename"]
            .as_str()
            .is_some_and(|n| n.ends_with(".json"))
    );
    assert!(download["expiresAt"].is_string() || download["expiresAt"].is_number());
    let url = download["url"].as_str().expect("url");
    let response = chat.app.http.get(url).send().await.expect("download");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body");
    assert_eq!(download["sizeBytes"], text.len());
    let account: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(account["format"], "alias.account");
    assert_eq!(
        account["profile"]["email"],
        chat.app.query_as(&chat.token, "users.me", None).await.1["result"]["data"]["email"]
    );
    assert_eq!(account["preferences"]["aiProvider"], "openai");
    let chats = account["chats"].as_array().expect("chats");
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0]["id"], chat.session_id.as_str());
    assert_eq!(chats[0]["messages"][0]["content"], "Remember the milk");
    assert_eq!(chats[0]["projectId"], project_id);
    assert_eq!(account["projects"][0]["id"], project_id);
    assert_eq!(account["projects"][0]["instructions"], "Keep lists short.");
    for secret in [
        "key-valid-0000",
        "passwordHash",
        "password_hash",
        "argon2",
        &chat.token,
    ] {
        assert!(!text.contains(secret), "{secret} leaked");
    }

    // Another export replaces this one; the sweep deletes what is left after an hour.
    let (_, body) = chat
        .app
        .mutation_as(&chat.token, "users.export", None)
        .await;
    let second = data(&body)["url"].as_str().expect("url").to_owned();
    let response = chat.app.http.get(url).send().await.expect("download");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let later = chrono::Utc::now() + chrono::Duration::hours(2);
    let swept = alias_server::portability::sweep(&chat.app.state, later)
        .await
        .expect("sweep");
    assert_eq!(swept, 1);
    let response = chat.app.http.get(&second).send().await.expect("download");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // Signed in only.
    let (status, _) = chat.app.mutation("users.export", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
each_database!(users_export_downloads_everything_but_secrets);
