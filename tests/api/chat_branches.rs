//! The message tree: `chat.regenerate` and `chat.edit` (asked and followed like `chat.send`),
//! `chat.branches.select`, `chat.messages.list` showing the current branch, the history the
//! provider sees (only the branch's ancestors), and the migration of existing chats.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::chat::{Chat, new_id, payloads, text_of};
use crate::each_database;
use crate::helpers::{DbKind, data, error_code};

/// Asks through `path` (`chat.send`, `chat.regenerate`, `chat.edit`), follows the reply to
/// its end and returns the `{ userMessage, replyMessageId }` answer.
pub(crate) async fn ask(chat: &Chat, path: &str, input: Value) -> Value {
    let (status, body) = chat.app.mutation_as(&chat.token, path, Some(input)).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    let sent = data(&body).clone();
    let reply = sent["replyMessageId"].as_str().expect("replyMessageId");
    let events = chat.follow(reply, None).await.collect().await;
    let payloads = payloads(&events);
    assert_eq!(payloads[0]["type"], "userMessage", "{payloads:?}");
    assert_eq!(payloads[0]["message"], sent["userMessage"]);
    assert_eq!(text_of(&payloads), "Hello from OpenAI.");
    let done = payloads.last().expect("done");
    assert_eq!(done["type"], "done");
    assert_eq!(done["message"]["status"], "complete");
    sent
}

async fn send(chat: &Chat, content: &str) -> Value {
    ask(chat, "chat.send", chat.input(content, &new_id())).await
}

fn id_of(message: &Value) -> String {
    message["id"].as_str().expect("id").to_owned()
}

/// What the provider was asked last: its user and assistant turns, as (role, text).
fn last_conversation(chat: &Chat) -> Vec<(String, String)> {
    let call = chat
        .providers
        .requests()
        .into_iter()
        .rev()
        .find(|call| call.body["stream"] == true)
        .expect("a streamed request");
    call.body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "user" || m["role"] == "assistant")
        .map(|m| {
            (
                m["role"].as_str().unwrap_or_default().to_owned(),
                m["content"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn said_by_user(conversation: &[(String, String)]) -> Vec<&str> {
    conversation
        .iter()
        .filter(|(role, _)| role == "user")
        .map(|(_, text)| text.as_str())
        .collect()
}

pub(crate) fn contents(messages: &[Value]) -> Vec<&str> {
    messages
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default())
        .collect()
}

async fn regenerate_adds_a_sibling_answer(db: DbKind) {
    let chat = Chat::start(db, "openai").await;
    let first = send(&chat, "Tell me a joke").await;
    let old_answer = first["replyMessageId"].as_str().expect("reply").to_owned();
    let client_message_id = new_id();
    let input = json!({ "messageId": old_answer, "clientMessageId": client_message_id });
    let again = ask(&chat, "chat.regenerate", input.clone()).await;
    assert_eq!(
        again["userMessage"], first["userMessage"],
        "the message answered again"
    );
    let new_answer = again["replyMessageId"].as_str().expect("reply").to_owned();
    assert_ne!(new_answer, old_answer);
    // The provider saw the question alone: not the answer it replaces.
    assert_eq!(
        last_conversation(&chat),
        [("user".to_owned(), "Tell me a joke".to_owned())]
    );

    let messages = chat.messages().await;
    assert_eq!(messages.len(), 2);
    assert_eq!(id_of(&messages[1]), new_answer);
    assert_eq!(messages[1]["parentId"], first["userMessage"]["id"]);
    assert_eq!(messages[1]["siblingIds"], json!([old_answer, new_answer]));
    assert_eq!(messages[1]["siblingIndex"], 1);
    assert_eq!(messages[0]["parentId"], Value::Null);
    assert_eq!(messages[0]["siblingIds"], json!([id_of(&messages[0])]));
    let session = chat.session().await;
    assert_eq!(session["currentLeafId"], new_answer.as_str());
    assert_eq!(session["messageCount"], 3);

    // The same clientMessageId answers with the same reply, without a provider call.
    let calls = chat.streamed_calls();
    let (status, body) = chat
        .app
        .mutation_as(&chat.token, "chat.regenerate", Some(input))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(data(&body)["replyMessageId"], new_answer.as_str());
    assert_eq!(chat.streamed_calls(), calls);

    // Without messageId: the session's current answer.
    let input = json!({ "sessionId": chat.session_id, "clientMessageId": new_id() });
    let third = ask(&chat, "chat.regenerate", input).await;
    let messages = chat.messages().await;
    assert_eq!(messages[1]["siblingIds"].as_array().map(Vec::len), Some(3));
    assert_eq!(messages[1]["id"], third["replyMessageId"]);
}
each_database!(regenerate_adds_a_sibling_answer);

async fn edits_and_selection_keep_branches_apart(db: DbKind) {
    let chat = Chat::start(db, "openai").await;
    send(&chat, "Plan a trip to Rome").await;
    let second = send(&chat, "Make it three days").await;
    let original = second["userMessage"].clone();
    let edit = json!({
        "messageId": original["id"],
        "content": "Make it a week",
        "clientMessageId": new_id(),
    });
    let edited = ask(&chat, "chat.edit", edit).await;
    assert_eq!(edited["userMessage"]["content"], "Make it a week");
    assert_eq!(edited["userMessage"]["parentId"], original["parentId"]);
    assert_eq!(
        said_by_user(&last_conversation(&chat)),
        ["Plan a trip to Rome", "Make it a week"],
        "the edited-away message never reaches the provider"
    );
    let messages = chat.messages().await;
    assert_eq!(
        contents(&messages),
        [
            "Plan a trip to Rome",
            "Hello from OpenAI.",
            "Make it a week",
            "Hello from OpenAI."
        ]
    );
    let versions = json!([original["id"], edited["userMessage"]["id"]]);
    assert_eq!(messages[2]["siblingIds"], versions);
    assert_eq!(messages[2]["siblingIndex"], 1);

    // Back to the first version: its branch, down to its answer.
    let (status, body) = chat
        .app
        .mutation_as(
            &chat.token,
            "chat.branches.select",
            Some(json!({ "messageId": original["id"] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(data(&body)["currentLeafId"], second["replyMessageId"]);
    let messages = chat.messages().await;
    assert_eq!(contents(&messages)[2], "Make it three days");
    assert_eq!(messages[2]["siblingIds"], versions);
    assert_eq!(messages[2]["siblingIndex"], 0);

    // A new message follows the selected branch, and sees only it.
    send(&chat, "Add a day trip").await;
    assert_eq!(
        said_by_user(&last_conversation(&chat)),
        [
            "Plan a trip to Rome",
            "Make it three days",
            "Add a day trip"
        ]
    );
    let messages = chat.messages().await;
    assert_eq!(messages.len(), 6);
    assert_eq!(messages[4]["parentId"], second["replyMessageId"]);

    // Selecting the root follows the latest child at each step: the edit's branch.
    chat.app
        .mutation_as(
            &chat.token,
            "chat.branches.select",
            Some(json!({ "messageId": messages[0]["id"] })),
        )
        .await;
    assert_eq!(contents(&chat.messages().await)[2], "Make it a week");
}
each_database!(edits_and_selection_keep_branches_apart);

async fn editing_the_first_message_makes_a_second_root(db: DbKind) {
    let chat = Chat::start(db, "openai").await;
    let first = send(&chat, "Hello").await;
    let edit = json!({
        "messageId": first["userMessage"]["id"],
        "content": "Good morning",
        "clientMessageId": new_id(),
    });
    let edited = ask(&chat, "chat.edit", edit).await;
    assert_eq!(edited["userMessage"]["parentId"], Value::Null);
    assert_eq!(
        last_conversation(&chat),
        [("user".to_owned(), "Good morning".to_owned())]
    );
    let messages = chat.messages().await;
    assert_eq!(contents(&messages), ["Good morning", "Hello from OpenAI."]);
    assert_eq!(
        messages[0]["siblingIds"],
        json!([first["userMessage"]["id"], edited["userMessage"]["id"]])
    );
}
each_database!(editing_the_first_message_makes_a_second_root);

async fn branch_procedures_check_what_they_are_given(db: DbKind) {
    let chat = Chat::start(db, "openai").await;
    let sent = send(&chat, "Hello").await;
    let question = sent["userMessage"]["id"].clone();
    let answer = sent["replyMessageId"].clone();
    let call = |path: &'static str, input: Value| {
        let chat = &chat;
        async move {
            let (status, body) = chat.app.mutation_as(&chat.token, path, Some(input)).await;
            (status, error_code(&body).to_owned())
        }
    };
    let bad = (StatusCode::BAD_REQUEST, "BAD_REQUEST".to_owned());
    let missing = (StatusCode::NOT_FOUND, "NOT_FOUND".to_owned());
    assert_eq!(
        call(
            "chat.regenerate",
            json!({ "messageId": question, "clientMessageId": new_id() })
        )
        .await,
        bad,
        "a user message is edited, not regenerated"
    );
    assert_eq!(
        call(
            "chat.edit",
            json!({ "messageId": answer, "content": "x", "clientMessageId": new_id() })
        )
        .await,
        bad
    );
    assert_eq!(
        call(
            "chat.edit",
            json!({ "messageId": question, "content": "  ", "clientMessageId": new_id() })
        )
        .await,
        bad
    );
    assert_eq!(
        call("chat.regenerate", json!({ "clientMessageId": new_id() })).await,
        bad
    );
    assert_eq!(
        call(
            "chat.regenerate",
            json!({ "messageId": answer, "sessionId": Uuid::new_v4(), "clientMessageId": new_id() })
        )
        .await,
        missing,
        "an answer of another chat"
    );
    // Someone else's messages do not exist for this user.
    let other = chat.app.new_user().await;
    for (path, input) in [
        (
            "chat.regenerate",
            json!({ "messageId": answer, "clientMessageId": new_id() }),
        ),
        (
            "chat.regenerate",
            json!({ "sessionId": chat.session_id, "clientMessageId": new_id() }),
        ),
        (
            "chat.edit",
            json!({ "messageId": question, "content": "mine now", "clientMessageId": new_id() }),
        ),
        ("chat.branches.select", json!({ "messageId": answer })),
        (
            "chat.branches.select",
            json!({ "messageId": Uuid::new_v4() }),
        ),
    ] {
        let (status, body) = chat.app.mutation_as(&other, path, Some(input)).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::NOT_FOUND, "NOT_FOUND"),
            "{path}: {body}"
        );
    }
    assert_eq!(chat.messages().await.len(), 2, "nothing added");
}
each_database!(branch_procedures_check_what_they_are_given);

async fn pages_walk_the_current_branch(db: DbKind) {
    let chat = Chat::start(db, "openai").await;
    for n in 0..3 {
        send(&chat, &format!("Question {n}")).await;
    }
    let messages = chat.messages().await;
    let list = |input: Value| {
        let chat = &chat;
        async move {
            let (status, body) = chat
                .app
                .query_as(&chat.token, "chat.messages.list", Some(input))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            data(&body).clone()
        }
    };
    let newest = list(json!({ "sessionId": chat.session_id, "limit": 4 })).await;
    assert_eq!(newest["messages"].as_array(), Some(&messages[2..].to_vec()));
    let older = list(json!({
        "sessionId": chat.session_id, "limit": 4, "cursor": newest["nextCursor"]
    }))
    .await;
    assert_eq!(older["messages"].as_array(), Some(&messages[..2].to_vec()));
    assert_eq!(older["nextCursor"], Value::Null);
    let newer = list(json!({
        "sessionId": chat.session_id, "limit": 3, "cursor": messages[0]["id"], "direction": "backward"
    }))
    .await;
    assert_eq!(newer["messages"].as_array(), Some(&messages[1..4].to_vec()));
    assert_eq!(newer["nextCursor"], messages[3]["id"]);
}
each_database!(pages_walk_the_current_branch);

/// Chats saved before the tree existed become one branch each, in creation order, tool
/// messages under the reply that ran them.
async fn the_migration_makes_existing_chats_one_branch(db_kind: DbKind) {
    use migration::{Migrator, MigratorTrait};
    use sea_orm::{ConnectionTrait, Statement};

    let chat = Chat::start(db_kind, "openai").await;
    let db = chat.app.db().await;
    let migrations = Migrator::migrations();
    let position = migrations
        .iter()
        .position(|migration| migration.name() == "m20261202_12_message_tree")
        .expect("the migration is listed");
    let steps = u32::try_from(migrations.len() - position).expect("a few");
    Migrator::down(&db, Some(steps))
        .await
        .expect("revert to before it");

    let (_, me) = chat.app.query_as(&chat.token, "users.me", None).await;
    let user_id: Uuid = data(&me)["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("user id");
    let session_id: Uuid = chat.session_id.parse().expect("uuid");
    let backend = db.get_database_backend();
    let rows = [
        ("user", "Old question"),
        ("assistant", "Old answer"),
        ("tool", "{\"ran\":true}"),
        ("user", "Old follow-up"),
        ("assistant", "Old second answer"),
    ];
    let mut ids = Vec::new();
    for (role, content) in rows {
        let id = Uuid::now_v7();
        let now = chrono::Utc::now();
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            "INSERT INTO chat_messages (id, session_id, user_id, role, content, status, \
             is_liked, created_at, updated_at, source) \
             VALUES ($1, $2, $3, $4, $5, 'complete', false, $6, $6, 'text')",
            [
                id.into(),
                session_id.into(),
                user_id.into(),
                role.into(),
                content.into(),
                now.into(),
            ],
        ))
        .await
        .expect("an old message");
        ids.push(id);
    }
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        "UPDATE chat_sessions SET message_count = 5 WHERE id = $1",
        [session_id.into()],
    ))
    .await
    .expect("count them");
    Migrator::up(&db, None).await.expect("migrate");

    let messages = chat.messages().await;
    let listed: Vec<String> = messages.iter().map(id_of).collect();
    let expected: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    assert_eq!(listed, expected, "one branch, tool message after its reply");
    assert_eq!(messages[0]["parentId"], Value::Null);
    for (at, parent) in [(1, 0), (2, 1), (3, 1), (4, 3)] {
        assert_eq!(messages[at]["parentId"], expected[parent].as_str(), "{at}");
    }
    assert_eq!(chat.session().await["currentLeafId"], expected[4].as_str());
    // The conversation goes on from its last answer, with its whole history.
    send(&chat, "New question").await;
    assert_eq!(
        said_by_user(&last_conversation(&chat)),
        ["Old question", "Old follow-up", "New question"]
    );
    assert_eq!(chat.messages().await[5]["parentId"], expected[4].as_str());
}
each_database!(the_migration_makes_existing_chats_one_branch);

/// Sends racing in one chat chain up (each follows the other's reply) instead of forking.
async fn concurrent_sends_chain_up(db: DbKind) {
    let chat = Chat::start(db, "openai").await;
    let inputs: Vec<Value> = (0..4)
        .map(|n| chat.input(&format!("Racing message {n}"), &new_id()))
        .collect();
    let sends = inputs.iter().map(|input| chat.send_message(input));
    let answers = futures::future::join_all(sends).await;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        let reply = data(body)["replyMessageId"].as_str().expect("reply");
        chat.follow(reply, None).await.collect().await;
    }
    let messages = chat.messages().await;
    assert_eq!(messages.len(), 8, "one branch holds every message");
    for (at, message) in messages.iter().enumerate() {
        assert_eq!(
            message["siblingIds"].as_array().map(Vec::len),
            Some(1),
            "{at}"
        );
        let parent = at.checked_sub(1).map(|p| messages[p]["id"].clone());
        assert_eq!(message["parentId"], parent.unwrap_or(Value::Null), "{at}");
    }
}
each_database!(concurrent_sends_chain_up);
