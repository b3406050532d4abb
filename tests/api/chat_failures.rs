//! How replies fail once the user's message is saved: the stream ends normally with `done`,
//! whose message (status "error") says why, and the same reason is saved with it. Deleting a
//! chat or an account stops its reply at once; `chat.stop` never waits for a title; provider
//! texts never carry the user's key.

use std::time::Duration;

use entity::chat_messages;
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};

use crate::chat::{Chat, new_id, of_type, payloads, text_of};
use crate::each_database;
use crate::helpers::{DbKind, SseEvent, SseStream, data};
use crate::log_capture::LogCapture;

/// What a failing reply must end with: no serialized error, a `return`, and a `done` whose
/// message failed with `reason`. Answers that `done` event.
fn failed_with(events: &[SseEvent], reason: &str) -> Value {
    assert!(
        events
            .iter()
            .all(|e| e.event.as_deref() != Some("serialized-error")),
        "{events:?}"
    );
    assert_eq!(
        events.last().and_then(|e| e.event.as_deref()),
        Some("return"),
        "{events:?}"
    );
    let payloads = payloads(events);
    let done = payloads.last().cloned().expect("done");
    assert_eq!(done["type"], "done", "{events:?}");
    assert_eq!(done["message"]["status"], "error", "{done}");
    assert_eq!(done["message"]["error"]["reason"], reason, "{done}");
    assert!(
        done["message"]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.len() > 10),
        "{done}"
    );
    done
}

pub(crate) async fn sent_reply(chat: &Chat, input: &Value) -> String {
    let (status, body) = chat.send_message(input).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    data(&body)["replyMessageId"]
        .as_str()
        .expect("replyMessageId")
        .to_owned()
}

/// Every kind of provider failure, through `chat.send` then `chat.follow`: `done` tells the
/// reason (and when to retry); `chat.messages.list`, a resumed follow and a replay after a
/// restart tell the same.
async fn each_failure_ends_with_done_and_its_saved_reason(db: DbKind) {
    let chat = Chat::start_with(db, "gemini", |config| {
        config.ai.first_byte_timeout = Duration::from_secs(1);
    })
    .await;
    // (key for the provider, provider, what the user says, reason, retryAfterSeconds)
    let cases = [
        (
            None,
            "gemini",
            "rate limit me",
            "provider_rate_limited",
            json!(7),
        ),
        (
            None,
            "anthropic",
            "you are overloaded",
            "provider_overloaded",
            json!(11),
        ),
        (
            None,
            "openai",
            "slow start please",
            "provider_timeout",
            Value::Null,
        ),
        (
            None,
            "openai",
            "an error event please",
            "provider_error",
            Value::Null,
        ),
        (
            None,
            "gemini",
            "fail midway please",
            "provider_error",
            Value::Null,
        ),
        (
            Some("key-broken-2222"),
            "gemini",
            "hi",
            "provider_error",
            Value::Null,
        ),
        (
            Some("key-rejected-3333"),
            "openai",
            "hi",
            "api_key_rejected",
            Value::Null,
        ),
        (
            Some("key-forbidden-4444"),
            "anthropic",
            "hi",
            "api_key_rejected",
            Value::Null,
        ),
    ];
    for provider in ["openai", "anthropic"] {
        chat.set_key(provider, "key-valid-0000").await;
    }
    let mut failed = Vec::new();
    for (key, provider, said, reason, retry_after) in cases {
        if let Some(key) = key {
            chat.set_key(provider, key).await;
        }
        // A chat each: the fake reads the whole conversation's last user turn.
        let session_id = chat.create_session().await;
        let input = json!({ "sessionId": session_id, "content": said, "clientMessageId": new_id(), "provider": provider });
        let reply = sent_reply(&chat, &input).await;
        let events = chat.follow(&reply, None).await.collect().await;
        let done = failed_with(&events, reason);
        assert_eq!(
            done["message"]["error"]["retryAfterSeconds"], retry_after,
            "{said}: {done}"
        );
        if said.contains("error event") || said.contains("fail midway") {
            assert_eq!(text_of(&payloads(&events)), "Hello from", "the text so far");
            assert_eq!(done["message"]["content"], "Hello from");
        }
        // Resumed before `done`: only `done`, alike.
        let before_done = events
            .iter()
            .rev()
            .filter_map(|e| e.id.as_deref()?.parse::<u64>().ok())
            .nth(1)
            .expect("an event before done");
        let resumed = chat
            .follow(&reply, Some(&before_done.to_string()))
            .await
            .collect()
            .await;
        assert_eq!(payloads(&resumed), std::slice::from_ref(&done), "{said}");
        failed.push((reply, done));
    }
    for (reply, done) in &failed {
        let input = json!({ "sessionId": done["message"]["sessionId"] });
        let (_, page) = chat
            .app
            .query_as(&chat.token, "chat.messages.list", Some(input))
            .await;
        let listed = data(&page)["messages"]
            .as_array()
            .and_then(|messages| messages.iter().find(|m| m["id"] == reply.as_str()))
            .cloned()
            .expect("listed");
        assert_eq!(listed, done["message"], "listed as done said");
    }

    // After a restart, the replies are replayed from the database with their reasons.
    let restarted = chat.app.spawn_beside(|_| {}).await;
    for (reply, done) in &failed {
        let input = json!({ "messageId": reply });
        let replayed = restarted
            .subscribe_as(&chat.token, "chat.follow", Some(&input), None)
            .await
            .collect()
            .await;
        assert_eq!(payloads(&replayed).last(), Some(done), "replayed alike");
    }
}

each_database!(each_failure_ends_with_done_and_its_saved_reason);

/// Clients built before `chat.follow` (GET `chat.send`) see the same `done`.
#[tokio::test]
async fn the_legacy_subscription_ends_a_failure_with_done() {
    let chat = Chat::start(DbKind::Sqlite, "gemini").await;
    let events = chat
        .send(&chat.input("rate limit me", &new_id()), None)
        .await
        .collect()
        .await;
    let done = failed_with(&events, "provider_rate_limited");
    assert_eq!(done["message"]["error"]["retryAfterSeconds"], 7);
    assert_eq!(of_type(&payloads(&events), "userMessage").len(), 1);
}

/// Follows `reply` until `deltas` pieces of text arrived; answers the rest of the stream.
pub(crate) async fn following(chat: &Chat, reply: &str, deltas: usize) -> SseStream {
    let mut stream = chat.follow(reply, None).await;
    let mut seen = 0;
    while seen < deltas {
        let event = stream.next().await.expect("an event");
        seen += usize::from(event.event.is_none() && event.json()["type"] == "delta");
    }
    stream
}

/// The fake provider sees the streamed request dropped within a few seconds (it would stream
/// for a minute).
pub(crate) async fn provider_request_dropped(chat: &Chat) {
    for _ in 0..50 {
        if chat.providers.open_streams() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the provider request is still open");
}

/// The followers' stream ends normally: no error, no `done`.
pub(crate) async fn ends_cleanly(stream: SseStream) {
    let rest = stream.collect().await;
    assert!(
        rest.iter()
            .all(|e| e.event.as_deref() != Some("serialized-error")),
        "{rest:?}"
    );
    assert_eq!(
        rest.last().and_then(|e| e.event.as_deref()),
        Some("return"),
        "{rest:?}"
    );
    assert!(of_type(&payloads(&rest), "done").is_empty(), "{rest:?}");
}

async fn rows_of_session(chat: &Chat, session_id: &str) -> u64 {
    let session_id: uuid::Uuid = session_id.parse().expect("uuid");
    chat_messages::Entity::find()
        .filter(chat_messages::Column::SessionId.eq(session_id))
        .count(&chat.app.db().await)
        .await
        .expect("count")
}

/// Deleting a chat, then the account, while a reply runs: the provider request is dropped at
/// once, followers see their stream end, nothing of the deleted rows is written again.
async fn deleting_stops_the_running_reply(db: DbKind) {
    let chat = Chat::start(db, "openai").await;
    let reply = sent_reply(&chat, &chat.input("keep streaming please", &new_id())).await;
    let stream = following(&chat, &reply, 2).await;
    assert_eq!(chat.providers.open_streams(), 1);
    let (status, body) = chat
        .app
        .mutation_as(
            &chat.token,
            "chat.sessions.delete",
            Some(json!({ "id": chat.session_id })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    ends_cleanly(stream).await;
    provider_request_dropped(&chat).await;
    // Past a flush interval: a reply still running would have saved its progress.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(rows_of_session(&chat, &chat.session_id).await, 0);
    let gone = chat.follow(&reply, None).await.collect().await;
    let error = crate::chat::last_error(&gone);
    assert_eq!(error["data"]["code"], "NOT_FOUND", "{gone:?}");

    let session_id = chat.create_session().await;
    let input = json!({ "sessionId": session_id, "content": "keep streaming please", "clientMessageId": new_id() });
    let reply = sent_reply(&chat, &input).await;
    let stream = following(&chat, &reply, 2).await;
    let (status, body) = chat
        .app
        .mutation_as(
            &chat.token,
            "users.delete",
            Some(json!({ "password": "correct horse battery" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    ends_cleanly(stream).await;
    provider_request_dropped(&chat).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(rows_of_session(&chat, &session_id).await, 0);
    let calls = chat.providers.requests().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(chat.providers.requests().len(), calls, "no further call");
}

each_database!(deleting_stops_the_running_reply);

/// `chat.stop` while the title is being written (the provider takes a minute for it): `done`
/// comes at once, and the chat is named after the first words of the message.
async fn stop_during_the_title_is_prompt(db: DbKind) {
    let chat = Chat::start(db, "anthropic").await;
    let reply = sent_reply(&chat, &chat.input("slow title please", &new_id())).await;
    let mut stream = chat.follow(&reply, None).await;
    let mut titling = false;
    for _ in 0..100 {
        titling = chat
            .providers
            .requests()
            .iter()
            .any(|call| call.body["stream"] == false);
        if titling {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(titling, "the title call started");
    let (status, body) = chat
        .app
        .mutation_as(
            &chat.token,
            "chat.stop",
            Some(json!({ "messageId": reply })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // `next` allows 10 s per event: far less than the title call's minute.
    let mut rest = Vec::new();
    while let Some(event) = stream.next().await {
        rest.push(event);
    }
    let payloads = payloads(&rest);
    let done = payloads.last().expect("done");
    assert_eq!(done["type"], "done", "{rest:?}");
    assert_eq!(done["message"]["status"], "complete");
    assert_eq!(done["message"]["content"], "Hello from Anthropic.");
    let title = of_type(&payloads, "title");
    assert_eq!(
        title.first().map(|t| &t["title"]),
        Some(&json!("slow title please"))
    );
    assert_eq!(chat.session().await["title"], "slow title please");
}

each_database!(stop_during_the_title_is_prompt);

/// A provider quoting the key inside a streamed error event: the key reaches neither the app
/// (events, saved messages) nor the logs.
#[tokio::test]
async fn a_key_echoed_in_an_error_event_is_scrubbed() {
    let logs = LogCapture::start();
    let chat = Chat::start(DbKind::Sqlite, "gemini").await;
    for provider in ["gemini", "openai", "anthropic"] {
        let key = format!("key-valid-{provider}-SECRET-{}", new_id());
        chat.set_key(provider, &key).await;
        let input = json!({ "sessionId": chat.session_id, "content": "an error event please", "clientMessageId": new_id(), "provider": provider });
        let reply = sent_reply(&chat, &input).await;
        let events = chat.follow(&reply, None).await.collect().await;
        failed_with(&events, "provider_error");
        let seen: String = events.iter().map(|e| e.data.as_str()).collect();
        assert!(!seen.contains(&key), "{seen}");
        let messages = serde_json::to_string(&chat.messages().await).unwrap_or_default();
        assert!(!messages.contains(&key));
        let logged = logs.text();
        assert!(!logged.contains(&key), "the key is logged: {logged}");
        assert!(
            logged.contains("for API key [key]"),
            "the provider's words are logged, scrubbed: {logged}"
        );
    }
}
