//! `chat.import`: ChatGPT's `conversations.json` and this server's own export, as new chats
//! with their branches; bad files import nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::{Chat, new_id, payloads};
use crate::chat_branches::{ask, contents};
use crate::each_database;
use crate::helpers::{DbKind, data, error_code};

const CHATGPT: &str = include_str!("fixtures/chatgpt_conversations.json");

async fn import(chat: &Chat, token: &str, input: Value) -> (StatusCode, Value) {
    chat.app
        .mutation_as(token, "chat.import", Some(input))
        .await
}

async fn branch_of(chat: &Chat, session_id: &str) -> Vec<Value> {
    let input = json!({ "sessionId": session_id });
    let (status, body) = chat
        .app
        .query_as(&chat.token, "chat.messages.list", Some(input))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    data(&body)["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn session_count(chat: &Chat) -> usize {
    let (_, body) = chat
        .app
        .query_as(&chat.token, "chat.sessions.list", None)
        .await;
    data(&body)["sessions"].as_array().map_or(0, Vec::len)
}

async fn chatgpt_exports_keep_their_branches(db: DbKind) {
    let chat = Chat::start(db, "openai").await;
    let file: Value = serde_json::from_str(CHATGPT).expect("fixture");
    let (status, body) = import(
        &chat,
        &chat.token,
        json!({ "format": "chatgpt", "data": file }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sessions = data(&body)["sessions"]
        .as_array()
        .expect("sessions")
        .clone();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0]["title"], "Trip to Rome");
    assert_eq!(sessions[0]["messageCount"], 5);
    assert_eq!(sessions[1]["title"], "A photo question");
    let trip = sessions[0]["id"].as_str().expect("id");

    // The current node's branch; the system, code and tool nodes skipped.
    let messages = branch_of(&chat, trip).await;
    assert_eq!(
        contents(&messages),
        [
            "Plan a three-day trip to Rome.\nI like museums.",
            "Day 1: the Colosseum and the Forum.",
            "What will the weather be like?",
            "Sunny, around 24°C: pack light.",
        ]
    );
    assert_eq!(messages[0]["parentId"], Value::Null);
    assert_eq!(messages[1]["siblingIds"].as_array().map(Vec::len), Some(2));
    assert_eq!(messages[1]["siblingIndex"], 1);
    assert_eq!(messages[3]["parentId"], messages[2]["id"]);
    assert_eq!(messages[3]["model"], "gpt-4o");
    assert_eq!(messages[0]["createdAt"], "2024-12-02T12:00:01.000Z");
    // The other answer is a branch of its own.
    let (status, _) = chat
        .app
        .mutation_as(
            &chat.token,
            "chat.branches.select",
            Some(json!({ "messageId": messages[1]["siblingIds"][0] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        contents(&branch_of(&chat, trip).await),
        [
            "Plan a three-day trip to Rome.\nI like museums.",
            "Day 1: the Vatican Museums."
        ]
    );
    let photo = branch_of(&chat, sessions[1]["id"].as_str().expect("id")).await;
    assert_eq!(
        contents(&photo),
        ["What bird is this?", "A European robin."]
    );

    // An imported answer can be asked again; the provider sees its branch only.
    let input = json!({ "messageId": messages[3]["id"], "clientMessageId": new_id() });
    let (status, body) = chat
        .app
        .mutation_as(&chat.token, "chat.regenerate", Some(input))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reply = data(&body)["replyMessageId"]
        .as_str()
        .expect("reply")
        .to_owned();
    let events = chat.follow(&reply, None).await.collect().await;
    assert_eq!(payloads(&events).last().expect("done")["type"], "done");
    let call = chat
        .providers
        .requests()
        .into_iter()
        .rev()
        .find(|call| call.body["stream"] == true)
        .expect("a streamed call");
    let said = call.body["messages"].to_string();
    assert!(said.contains("What will the weather be like?"), "{said}");
    assert!(said.contains("Colosseum"), "{said}");
    assert!(!said.contains("Vatican"), "another branch leaked: {said}");
    assert!(
        !said.contains("pack light"),
        "the answer asked again: {said}"
    );
}
each_database!(chatgpt_exports_keep_their_branches);

/// What an export says of a chat, ids replaced by positions.
fn shape(exported: &Value) -> Value {
    let messages = exported["messages"].as_array().expect("messages");
    let at = |id: &Value| messages.iter().position(|m| m["id"] == *id);
    json!({
        "title": exported["title"],
        "currentLeaf": at(&exported["currentLeafId"]),
        "messages": messages.iter().map(|m| json!({
            "parent": at(&m["parentId"]),
            "role": m["role"],
            "content": m["content"],
            "createdAt": m["createdAt"],
            "model": m["model"],
        })).collect::<Vec<_>>(),
    })
}

async fn export_json(chat: &Chat, session_id: &str) -> Value {
    let input = json!({ "sessionId": session_id, "format": "json" });
    let (status, body) = chat
        .app
        .query_as(&chat.token, "chat.export", Some(input))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(data(&body).as_str().expect("the export's text")).expect("JSON")
}

async fn exports_import_back_the_same(db: DbKind) {
    let chat = Chat::start(db, "openai").await;
    let first = ask(&chat, "chat.send", chat.input("First question", &new_id())).await;
    let edit = json!({
        "messageId": first["userMessage"]["id"],
        "content": "First question, better put",
        "clientMessageId": new_id(),
    });
    ask(&chat, "chat.edit", edit).await;
    let original = export_json(&chat, &chat.session_id).await;

    // Sent as the file's text, its format told from it.
    let (status, body) = import(&chat, &chat.token, json!({ "data": original.to_string() })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let copy = data(&body)["sessions"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_ne!(copy, chat.session_id);
    let imported = export_json(&chat, &copy).await;
    assert_eq!(shape(&imported), shape(&original));
    assert_eq!(
        contents(&branch_of(&chat, &copy).await),
        contents(&chat.messages().await)
    );

    // Another user importing it gets a copy of their own: new ids, the owner's chat untouched.
    let other = chat.app.new_user().await;
    let (status, body) = import(
        &chat,
        &other,
        json!({ "format": "alias", "data": original }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let theirs = data(&body)["sessions"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let input = json!({ "sessionId": theirs });
    let (status, body) = chat
        .app
        .query_as(&other, "chat.messages.list", Some(input))
        .await;
    assert_eq!(status, StatusCode::OK);
    let their_ids: Vec<&Value> = data(&body)["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| &m["id"])
        .collect();
    let mine = chat.messages().await;
    assert!(mine.iter().all(|m| !their_ids.contains(&&m["id"])));
    let input = json!({ "sessionId": theirs, "format": "json" });
    let (status, _) = chat
        .app
        .query_as(&chat.token, "chat.export", Some(input))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        shape(&export_json(&chat, &chat.session_id).await),
        shape(&original)
    );
}
each_database!(exports_import_back_the_same);

async fn bad_files_import_nothing(db: DbKind) {
    let chat = Chat::start(db, "openai").await;
    let good: Value = serde_json::from_str(CHATGPT).expect("fixture");
    let node = |parent: Value, role: &str, text: &str| {
        json!({ "parent": parent, "message": {
            "author": { "role": role },
            "content": { "content_type": "text", "parts": [text] }
        }})
    };
    let cycle = json!([{ "title": "Loop", "mapping": {
        "a": node(json!("b"), "user", "hi"),
        "b": node(json!("a"), "assistant", "hello"),
    }, "current_node": "a" }]);
    let orphan = json!([{ "title": "Lost", "mapping": {
        "a": node(json!(null), "user", "hi"),
        "b": node(json!("nowhere"), "assistant", "hello"),
    }}]);
    let mut good_then_bad = good.as_array().cloned().expect("array");
    good_then_bad.push(json!({ "title": "No mapping" }));
    let alias = |messages: Value| {
        json!({ "format": "alias.chat", "version": 1, "title": "T", "createdAt": "2026-12-01T10:00:00Z",
                "currentLeafId": null, "messages": messages })
    };
    let id = uuid::Uuid::new_v4();
    let cases = [
        (json!({ "data": "this is not { JSON" }), "not JSON"),
        (json!({ "data": { "hello": "world" } }), "neither"),
        (
            json!({ "format": "chatgpt", "data": 42 }),
            "array of conversations",
        ),
        (json!({ "format": "chatgpt", "data": [] }), "no chat"),
        (json!({ "format": "chatgpt", "data": cycle }), "cycle"),
        (
            json!({ "format": "chatgpt", "data": orphan }),
            "not in the mapping",
        ),
        (json!({ "data": good_then_bad }), "data[2]"),
        (
            json!({ "format": "alias", "data": { "format": "something.else" } }),
            "data.format",
        ),
        (
            json!({ "data": alias(json!([{ "id": id, "parentId": uuid::Uuid::new_v4(), "role": "user",
                    "content": "x", "createdAt": "2026-12-01T10:00:00Z" }])) }),
            "parentId",
        ),
        (
            json!({ "data": alias(json!([{ "id": id, "parentId": id, "role": "user",
                    "content": "x", "createdAt": "2026-12-01T10:00:00Z" }])) }),
            "cycle",
        ),
        (
            json!({ "data": alias(json!([{ "id": id, "parentId": null, "role": "system",
                    "content": "x", "createdAt": "2026-12-01T10:00:00Z" }])) }),
            "role",
        ),
        (
            json!({ "data": alias(json!([{ "id": id }])) }),
            "not an exported chat",
        ),
    ];
    for (input, expected) in cases {
        let (status, body) = import(&chat, &chat.token, input.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{input}: {body}");
        assert_eq!(error_code(&body), "BAD_REQUEST");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{expected:?} in {message:?}");
    }
    // Past the body limit (ALIAS_MAX_BODY_BYTES, 1 MiB by default).
    let huge =
        json!({ "format": "chatgpt", "data": [{ "title": "x".repeat(2 << 20), "mapping": {} }] });
    let (status, body) = import(&chat, &chat.token, huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    // Signed in only.
    let (status, _) = chat
        .app
        .mutation("chat.import", Some(json!({ "data": good })))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        session_count(&chat).await,
        1,
        "only the chat it started with"
    );
}
each_database!(bad_files_import_nothing);

/// `chat.import` with the export uploaded as a file (FormData), past the JSON body limit.
async fn files_import_past_the_body_limit(db: DbKind) {
    use crate::files::{file_part, multipart, text_part};

    let chat = Chat::start(db, "openai").await;
    let post = |parts: Vec<u8>, content_type: String| {
        let chat = &chat;
        async move {
            let response = chat
                .app
                .http
                .post(chat.app.trpc_url("chat.import", None))
                .bearer_auth(&chat.token)
                .header("content-type", content_type)
                .body(parts)
                .send()
                .await
                .expect("request reached the server");
            let status = response.status();
            (
                status,
                response.json::<Value>().await.expect("a JSON answer"),
            )
        }
    };
    // One conversation whose answer alone is past the 1 MiB JSON body limit.
    let mut file: Value = serde_json::from_str(CHATGPT).expect("fixture");
    let long = "word ".repeat(300_000);
    file[1]["mapping"]["r"]["message"]["content"]["parts"] = json!([long]);
    let bytes = file.to_string().into_bytes();
    assert!(bytes.len() > 1 << 20);
    let (content_type, body) = multipart(&[
        file_part("conversations.json", "application/json", &bytes),
        text_part("format", "chatgpt"),
    ]);
    let (status, answer) = post(body, content_type).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let sessions = data(&answer)["sessions"]
        .as_array()
        .expect("sessions")
        .clone();
    assert_eq!(sessions.len(), 2);
    let photo = branch_of(&chat, sessions[1]["id"].as_str().expect("id")).await;
    assert_eq!(photo[1]["content"].as_str().map(str::len), Some(long.len()));

    let (content_type, body) = multipart(&[file_part(
        "conversations.json",
        "application/json",
        b"{ not json",
    )]);
    let (status, answer) = post(body, content_type).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not JSON"))
    );
    let (content_type, body) = multipart(&[text_part("format", "chatgpt")]);
    let (status, _) = post(body, content_type).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no file");
    assert_eq!(session_count(&chat).await, 3);
}
each_database!(files_import_past_the_body_limit);
