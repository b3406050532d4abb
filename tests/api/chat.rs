//! `chat.*` over HTTP: replies streamed from local providers that speak the real formats.

use std::time::Duration;

use entity::chat_messages;
use reqwest::StatusCode;
use sea_orm::{EntityTrait, Set};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::both_databases;
use crate::fake_providers::{FakeProviders, GEMINI_THOUGHT_SIGNATURE, TITLE};
use crate::helpers::{DbKind, SseEvent, SseStream, TestApp, data, error_code, unique_email};

const PASSWORD: &str = "correct horse battery";

pub(crate) struct Chat {
    pub app: TestApp,
    pub providers: FakeProviders,
    pub token: String,
    pub session_id: String,
}

impl Chat {
    pub(crate) async fn start(db: DbKind, provider: &str) -> Self {
        Self::start_with(db, provider, |_| {}).await
    }

    pub(crate) async fn start_with(
        db: DbKind,
        provider: &str,
        adjust: impl FnOnce(&mut alias_server::config::Config),
    ) -> Self {
        let providers = FakeProviders::start().await;
        let base_url = providers.base_url.clone();
        let app = TestApp::spawn_with(db, move |config| {
            config.ai.gemini_base_url = base_url.clone();
            config.ai.openai_base_url = base_url.clone();
            config.ai.anthropic_base_url = base_url;
            adjust(config);
        })
        .await;
        let session = app.register(&unique_email(), PASSWORD).await;
        let token = session["accessToken"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let chat = Self {
            app,
            providers,
            token,
            session_id: String::new(),
        };
        chat.set_key(provider, "key-valid-0000").await;
        let (_, prefs) = chat
            .app
            .mutation_as(
                &chat.token,
                "preferences.update",
                Some(json!({ "aiProvider": provider })),
            )
            .await;
        assert_eq!(data(&prefs)["aiProvider"], provider);
        let session_id = chat.create_session().await;
        Self { session_id, ..chat }
    }

    pub(crate) async fn set_key(&self, provider: &str, key: &str) {
        let input = json!({ "provider": provider, "apiKey": key, "validate": false });
        let (status, body) = self
            .app
            .mutation_as(&self.token, "apiKeys.set", Some(input))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    pub(crate) async fn create_session(&self) -> String {
        let (status, body) = self
            .app
            .mutation_as(&self.token, "chat.sessions.create", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        data(&body)["id"].as_str().unwrap_or_default().to_owned()
    }

    pub(crate) fn input(&self, content: &str, client_message_id: &str) -> Value {
        json!({ "sessionId": self.session_id, "content": content, "clientMessageId": client_message_id })
    }

    pub(crate) async fn send(&self, input: &Value, last_event_id: Option<&str>) -> SseStream {
        let mut request = self
            .app
            .http
            .get(self.app.trpc_url("chat.send", Some(input)))
            .bearer_auth(&self.token);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        SseStream::from_response(request.send().await.expect("subscribe"))
    }

    pub(crate) async fn messages(&self) -> Vec<Value> {
        let input = json!({ "sessionId": self.session_id });
        let (status, body) = self
            .app
            .query_as(&self.token, "chat.messages.list", Some(input))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        data(&body)["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) async fn session(&self) -> Value {
        let input = json!({ "id": self.session_id });
        let (status, body) = self
            .app
            .query_as(&self.token, "chat.sessions.get", Some(input))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        data(&body).clone()
    }

    /// `chat.send`, the mutation: saves the message and starts the reply.
    pub(crate) async fn send_message(&self, input: &Value) -> (StatusCode, Value) {
        self.app
            .mutation_as(&self.token, "chat.send", Some(input.clone()))
            .await
    }

    /// `chat.follow`: the reply's events over SSE, after `last_event_id` (sent as a
    /// reconnecting EventSource does, in the `Last-Event-ID` header).
    pub(crate) async fn follow(&self, message_id: &str, last_event_id: Option<&str>) -> SseStream {
        let input = json!({ "messageId": message_id });
        self.app
            .client
            .subscribe_as(&self.token, "chat.follow", Some(&input), last_event_id)
            .await
    }

    /// Streamed chat requests to the provider (titles are not streamed).
    pub(crate) fn streamed_calls(&self) -> usize {
        self.providers.streamed_calls()
    }
}

pub(crate) fn new_id() -> String {
    Uuid::new_v4().to_string()
}

/// The data events' payloads (`connected`, `ping` and `return` left out).
pub(crate) fn payloads(events: &[SseEvent]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.event.is_none())
        .map(SseEvent::json)
        .collect()
}

pub(crate) fn of_type<'a>(payloads: &'a [Value], kind: &str) -> Vec<&'a Value> {
    payloads.iter().filter(|p| p["type"] == kind).collect()
}

pub(crate) fn text_of(payloads: &[Value]) -> String {
    of_type(payloads, "delta")
        .iter()
        .filter_map(|d| d["text"].as_str())
        .collect()
}

pub(crate) fn last_error(events: &[SseEvent]) -> Value {
    events
        .iter()
        .rev()
        .find(|e| e.event.as_deref() == Some("serialized-error"))
        .map(SseEvent::json)
        .unwrap_or(Value::Null)
}

async fn happy_path(db: DbKind, provider: &str) {
    let chat = Chat::start(db, provider).await;
    let events = chat
        .send(&chat.input("Hi there", &new_id()), None)
        .await
        .collect()
        .await;
    assert_eq!(
        events.first().and_then(|e| e.event.as_deref()),
        Some("connected")
    );
    assert_eq!(
        events.last().and_then(|e| e.event.as_deref()),
        Some("return"),
        "{events:?}"
    );
    let payloads = payloads(&events);
    assert_eq!(payloads[0]["type"], "userMessage");
    assert_eq!(payloads[0]["message"]["content"], "Hi there");
    let display =
        alias_server::providers::AiProvider::parse(provider).map_or("", |p| p.display_name());
    let expected = format!("Hello from {display}.");
    assert_eq!(text_of(&payloads), expected);
    assert!(of_type(&payloads, "delta").len() > 1, "streamed in pieces");
    assert_eq!(of_type(&payloads, "title")[0]["title"], TITLE);
    let done = payloads.last().expect("done");
    assert_eq!(done["type"], "done");
    assert_eq!(done["message"]["content"], expected);
    assert_eq!(done["message"]["status"], "complete");
    assert_eq!(done["message"]["provider"], provider);
    assert_eq!(done["message"]["id"], payloads[0]["replyMessageId"]);
    let ids: Vec<u64> = events
        .iter()
        .filter_map(|e| e.id.as_deref()?.parse().ok())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "ids count up: {ids:?}"
    );

    let messages = chat.messages().await;
    let roles: Vec<&str> = messages.iter().filter_map(|m| m["role"].as_str()).collect();
    assert_eq!(roles, ["user", "assistant"]);
    assert_eq!(messages[1]["content"], expected);
    let session = chat.session().await;
    assert_eq!(session["title"], TITLE);
    assert_eq!(session["messageCount"], 2);
    let call = &chat.providers.requests()[0];
    assert_eq!(call.api_key, "key-valid-0000");
    assert!(
        call.body.to_string().contains("ALIAS"),
        "the system prompt went along"
    );
}

#[tokio::test]
async fn gemini_streams_a_reply() {
    happy_path(DbKind::Sqlite, "gemini").await;
}

#[tokio::test]
async fn openai_streams_a_reply() {
    happy_path(DbKind::Sqlite, "openai").await;
}

#[tokio::test]
async fn anthropic_streams_a_reply() {
    happy_path(DbKind::Sqlite, "anthropic").await;
}

#[tokio::test]
#[cfg_attr(
    not(alias_test_postgres),
    ignore = "ALIAS_TEST_POSTGRES_URL is not set"
)]
async fn a_reply_streams_on_postgres() {
    happy_path(DbKind::Postgres, "gemini").await;
}

async fn tool_round_trip(provider: &str) {
    let chat = Chat::start(DbKind::Sqlite, provider).await;
    let events = chat
        .send(&chat.input("Please use a tool", &new_id()), None)
        .await
        .collect()
        .await;
    let payloads = payloads(&events);
    let call = of_type(&payloads, "toolCall");
    assert_eq!(call.len(), 1, "{payloads:?}");
    assert_eq!(call[0]["name"], "get_current_time");
    let result = of_type(&payloads, "toolResult");
    assert!(
        result[0]["result"]["localTime"].is_string(),
        "{:?}",
        result[0]
    );
    assert_eq!(text_of(&payloads), "The time is known.");
    let done = payloads.last().expect("done");
    assert_eq!(done["message"]["toolCalls"][0]["name"], "get_current_time");
    let roles: Vec<String> = chat
        .messages()
        .await
        .iter()
        .filter_map(|m| m["role"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool"]);
    assert_eq!(chat.streamed_calls(), 2, "one round to call, one to answer");
    let second = chat
        .providers
        .requests()
        .into_iter()
        .filter(|c| c.body["stream"] == true || c.path.contains("stream"))
        .nth(1)
        .expect("second call");
    assert!(
        second.body.to_string().contains("localTime"),
        "the tool result went back: {}",
        second.body
    );
    if provider == "gemini" {
        let call = &second.body["contents"][1]["parts"][0];
        assert_eq!(call["functionCall"]["name"], "get_current_time", "{call}");
        assert_eq!(call["thoughtSignature"], GEMINI_THOUGHT_SIGNATURE, "{call}");
    }
}

#[tokio::test]
async fn tools_round_trip_on_every_provider() {
    for provider in ["gemini", "openai", "anthropic"] {
        tool_round_trip(provider).await;
    }
}

#[tokio::test]
async fn an_upstream_failure_mid_stream_keeps_the_text_so_far() {
    let chat = Chat::start(DbKind::Sqlite, "openai").await;
    let events = chat
        .send(&chat.input("Now fail midway please", &new_id()), None)
        .await
        .collect()
        .await;
    assert_eq!(last_error(&events), Value::Null, "{events:?}");
    let done = payloads(&events).last().cloned().expect("done");
    assert_eq!(
        done["message"]["error"]["reason"], "provider_error",
        "{done}"
    );
    let partial = text_of(&payloads(&events));
    assert!(!partial.is_empty());
    let reply = &chat.messages().await[1];
    assert_eq!(reply["status"], "error");
    assert_eq!(reply["content"], partial);
    assert_eq!(reply, &done["message"]);
}

#[tokio::test]
async fn a_slow_first_byte_times_out() {
    let chat = Chat::start_with(DbKind::Sqlite, "anthropic", |config| {
        config.ai.first_byte_timeout = Duration::from_secs(1);
    })
    .await;
    let events = chat
        .send(&chat.input("slow start please", &new_id()), None)
        .await
        .collect()
        .await;
    let done = payloads(&events).last().cloned().expect("done");
    assert_eq!(
        done["message"]["error"]["reason"], "provider_timeout",
        "{events:?}"
    );
    assert_eq!(chat.messages().await[1]["status"], "error");
}

#[tokio::test]
async fn a_provider_rate_limit_says_when_to_retry() {
    let chat = Chat::start(DbKind::Sqlite, "gemini").await;
    let events = chat
        .send(&chat.input("rate limit me", &new_id()), None)
        .await
        .collect()
        .await;
    let error = &payloads(&events).last().cloned().expect("done")["message"]["error"];
    assert_eq!(error["reason"], "provider_rate_limited", "{events:?}");
    assert_eq!(error["retryAfterSeconds"], 7);
}

/// The connection drops mid-reply; reconnecting with the last event id resumes without
/// duplicate text and without a second provider call.
async fn a_dropped_connection_resumes_after_the_last_event(db: DbKind) {
    let chat = Chat::start(db, "gemini").await;
    let input = chat.input("Give me a long reply", &new_id());
    let mut first = chat.send(&input, None).await;
    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|e: &&SseEvent| e.event.is_none())
        .count()
        < 4
    {
        seen.push(first.next().await.expect("event"));
    }
    drop(first);
    let last_id = seen
        .iter()
        .rev()
        .find_map(|e| e.id.clone())
        .expect("an event id");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rest = chat.send(&input, Some(&last_id)).await.collect().await;
    let before = payloads(&seen);
    let after = payloads(&rest);
    assert!(
        of_type(&after, "userMessage").is_empty(),
        "nothing replayed twice"
    );
    let text = text_of(&before) + &text_of(&after);
    let done = after.last().expect("done");
    assert_eq!(done["type"], "done");
    assert_eq!(done["message"]["content"], text, "no gap, no duplicate");
    assert_eq!(text.split_whitespace().count(), 50);
    assert_eq!(chat.streamed_calls(), 1, "one provider call");
}

#[tokio::test]
async fn a_dropped_connection_resumes_sqlite() {
    a_dropped_connection_resumes_after_the_last_event(DbKind::Sqlite).await;
}

#[tokio::test]
#[cfg_attr(
    not(alias_test_postgres),
    ignore = "ALIAS_TEST_POSTGRES_URL is not set"
)]
async fn a_dropped_connection_resumes_postgres() {
    a_dropped_connection_resumes_after_the_last_event(DbKind::Postgres).await;
}

#[tokio::test]
async fn resending_the_same_message_follows_the_first_reply() {
    let chat = Chat::start(DbKind::Sqlite, "anthropic").await;
    let input = chat.input("Hello once", &new_id());
    let (first, second) = tokio::join!(
        async { chat.send(&input, None).await.collect().await },
        async { chat.send(&input, None).await.collect().await }
    );
    assert_eq!(text_of(&payloads(&first)), "Hello from Anthropic.");
    assert_eq!(payloads(&first), payloads(&second), "both follow one reply");
    let again = chat.send(&input, None).await.collect().await;
    assert_eq!(
        payloads(&again).last(),
        payloads(&first).last(),
        "a later resend replays to done"
    );
    assert_eq!(chat.streamed_calls(), 1);
    assert_eq!(chat.messages().await.len(), 2);
}

#[tokio::test]
async fn a_resend_after_a_restart_replays_the_saved_reply() {
    let chat = Chat::start(DbKind::Sqlite, "gemini").await;
    let input = chat.input("Remember me", &new_id());
    let first = chat.send(&input, None).await.collect().await;
    let done = payloads(&first).last().cloned().expect("done");

    let base_url = chat.providers.base_url.clone();
    let restarted = chat
        .app
        .spawn_beside(move |config| config.ai.gemini_base_url = base_url)
        .await;
    let response = restarted
        .http
        .get(restarted.trpc_url("chat.send", Some(&input)))
        .bearer_auth(&chat.token)
        .send()
        .await
        .expect("subscribe");
    let replayed = payloads(&SseStream::from_response(response).collect().await);
    assert_eq!(replayed[0]["type"], "userMessage");
    assert_eq!(replayed.last(), Some(&done));
    assert_eq!(chat.streamed_calls(), 1, "no second provider call");
}

#[tokio::test]
async fn stop_keeps_the_text_so_far() {
    let chat = Chat::start(DbKind::Sqlite, "openai").await;
    let mut stream = chat
        .send(&chat.input("A long reply please", &new_id()), None)
        .await;
    let mut reply_id = Value::Null;
    let mut deltas = 0;
    while deltas < 3 {
        let event = stream.next().await.expect("event");
        let payload = event.json();
        if payload["type"] == "userMessage" {
            reply_id = payload["replyMessageId"].clone();
        }
        deltas += usize::from(payload["type"] == "delta");
    }
    let (status, body) = chat
        .app
        .mutation_as(
            &chat.token,
            "chat.stop",
            Some(json!({ "messageId": reply_id })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rest = payloads(&stream.collect().await);
    let done = rest.last().expect("done");
    assert_eq!(done["type"], "done");
    assert_eq!(done["message"]["status"], "stopped");
    let saved = &chat.messages().await[1];
    assert_eq!(saved["status"], "stopped");
    assert_eq!(saved["content"], done["message"]["content"]);
    assert!(
        saved["content"]
            .as_str()
            .is_some_and(|t| t.split_whitespace().count() < 50)
    );
    let (status, _) = chat
        .app
        .mutation_as(
            &chat.token,
            "chat.stop",
            Some(json!({ "messageId": reply_id })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "stopping an ended reply does nothing"
    );
}

#[tokio::test]
async fn replies_cut_off_by_a_crash_become_errors_at_start_up() {
    let chat = Chat::start(DbKind::Sqlite, "gemini").await;
    let db = chat.app.db().await;
    let (_, me) = chat.app.query_as(&chat.token, "users.me", None).await;
    let now = chrono::Utc::now();
    let orphan = chat_messages::ActiveModel {
        id: Set(Uuid::now_v7()),
        session_id: Set(chat.session_id.parse().expect("uuid")),
        user_id: Set(data(&me)["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("user id")),
        role: Set("assistant".to_owned()),
        content: Set("half a sente".to_owned()),
        status: Set("streaming".to_owned()),
        provider: Set(Some("gemini".to_owned())),
        model: Set(None),
        input_tokens: Set(None),
        output_tokens: Set(None),
        tool_calls: Set(None),
        is_liked: Set(false),
        client_message_id: Set(None),
        reply_to: Set(None),
        error: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        source: Set("text".to_owned()),
        parent_id: Set(None),
    };
    chat_messages::Entity::insert(orphan)
        .exec(&db)
        .await
        .expect("insert");
    let _restarted = chat.app.spawn_beside(|_| {}).await;
    let messages = chat.messages().await;
    assert_eq!(messages[0]["status"], "error");
    assert_eq!(messages[0]["error"]["reason"], "interrupted");
    assert_eq!(messages[0]["content"], "half a sente", "the text is kept");
}

#[tokio::test]
async fn a_missing_key_is_a_precondition_and_a_refused_one_ends_the_reply() {
    let chat = Chat::start(DbKind::Sqlite, "gemini").await;
    let missing = json!({ "sessionId": chat.session_id, "content": "hi", "clientMessageId": new_id(), "provider": "openai" });
    let events = chat.send(&missing, None).await.collect().await;
    assert_eq!(
        last_error(&events)["data"]["reason"],
        "api_key_missing",
        "{events:?}"
    );
    assert!(
        chat.messages().await.is_empty(),
        "nothing stored without a key"
    );

    chat.set_key("anthropic", "key-rejected-1111").await;
    let refused = json!({ "sessionId": chat.session_id, "content": "hi", "clientMessageId": new_id(), "provider": "anthropic" });
    let events = chat.send(&refused, None).await.collect().await;
    let done = payloads(&events).last().cloned().expect("done");
    assert_eq!(done["message"]["status"], "error", "{events:?}");
    assert_eq!(done["message"]["error"]["reason"], "api_key_rejected");
    // The key is marked invalid beside the reply's end: give it a moment under load.
    let mut status = Value::Null;
    for _ in 0..50 {
        let (_, keys) = chat.app.query_as(&chat.token, "apiKeys.list", None).await;
        status = data(&keys)
            .as_array()
            .and_then(|keys| keys.iter().find(|k| k["provider"] == "anthropic").cloned())
            .map(|k| k["status"].clone())
            .unwrap_or_default();
        if status == "invalid" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, json!("invalid"));
}

#[tokio::test]
async fn conversations_are_not_kept_when_the_user_says_so() {
    let chat = Chat::start(DbKind::Sqlite, "gemini").await;
    chat.app
        .mutation_as(
            &chat.token,
            "preferences.update",
            Some(json!({ "saveConversations": false })),
        )
        .await;
    let events = chat
        .send(&chat.input("Forget this", &new_id()), None)
        .await
        .collect()
        .await;
    assert_eq!(
        payloads(&events).last().map(|p| p["type"].clone()),
        Some(json!("done"))
    );
    assert!(chat.messages().await.is_empty());
    assert_eq!(chat.session().await["messageCount"], 0);
}

#[tokio::test]
async fn another_users_chats_are_not_found() {
    let chat = Chat::start(DbKind::Sqlite, "gemini").await;
    let events = chat
        .send(&chat.input("mine", &new_id()), None)
        .await
        .collect()
        .await;
    let reply_id = payloads(&events)
        .last()
        .map(|p| p["message"]["id"].clone())
        .expect("done");
    let other = chat.app.register(&unique_email(), PASSWORD).await;
    let token = other["accessToken"].as_str().unwrap_or_default();
    let session = json!({ "id": chat.session_id });
    for (path, input, mutation) in [
        ("chat.sessions.get", session.clone(), false),
        (
            "chat.sessions.update",
            json!({ "id": chat.session_id, "title": "mine now" }),
            true,
        ),
        ("chat.sessions.delete", session.clone(), true),
        (
            "chat.messages.list",
            json!({ "sessionId": chat.session_id }),
            false,
        ),
        (
            "chat.messages.setLiked",
            json!({ "id": reply_id, "liked": true }),
            true,
        ),
        ("chat.stop", json!({ "messageId": reply_id }), true),
    ] {
        let (status, body) = if mutation {
            chat.app.mutation_as(token, path, Some(input)).await
        } else {
            chat.app.query_as(token, path, Some(input)).await
        };
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(error_code(&body), "NOT_FOUND");
    }
    let response = chat
        .app
        .http
        .get(
            chat.app
                .trpc_url("chat.send", Some(&chat.input("sneaky", &new_id()))),
        )
        .bearer_auth(token)
        .send()
        .await
        .expect("subscribe");
    let events = SseStream::from_response(response).collect().await;
    assert_eq!(last_error(&events)["data"]["code"], "NOT_FOUND");
    assert_eq!(chat.messages().await.len(), 2, "untouched");
}

async fn sessions_list_pinned_first_and_pages(app: TestApp) {
    let session = app.register(&unique_email(), PASSWORD).await;
    let token = session["accessToken"].as_str().unwrap_or_default();
    let mut ids = Vec::new();
    for i in 0..5 {
        let (_, body) = app
            .mutation_as(
                token,
                "chat.sessions.create",
                Some(json!({ "title": format!("Chat {i}") })),
            )
            .await;
        ids.push(data(&body)["id"].clone());
    }
    app.mutation_as(
        token,
        "chat.sessions.update",
        Some(json!({ "id": ids[0], "isPinned": true })),
    )
    .await;
    app.mutation_as(
        token,
        "chat.sessions.update",
        Some(json!({ "id": ids[1], "isArchived": true })),
    )
    .await;

    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let (status, body) = app
            .query_as(
                token,
                "chat.sessions.list",
                Some(json!({ "limit": 2, "cursor": cursor })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        seen.extend(
            data(&body)["sessions"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        cursor = data(&body)["nextCursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    let titles: Vec<&str> = seen.iter().filter_map(|s| s["title"].as_str()).collect();
    assert_eq!(
        titles,
        ["Chat 0", "Chat 4", "Chat 3", "Chat 2"],
        "pinned first, then newest activity"
    );
    let (_, archived) = app
        .query_as(
            token,
            "chat.sessions.list",
            Some(json!({ "archived": true })),
        )
        .await;
    assert_eq!(data(&archived)["sessions"][0]["title"], "Chat 1");
    let (status, body) = app
        .query_as(
            token,
            "chat.sessions.list",
            Some(json!({ "cursor": "nope", "limit": 500 })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["data"]["fieldErrors"]["cursor"].is_string());
    assert!(body["error"]["data"]["fieldErrors"]["limit"].is_string());

    let (_, body) = app
        .mutation_as(token, "chat.sessions.delete", Some(json!({ "id": ids[2] })))
        .await;
    assert_eq!(data(&body), &Value::Null);
    let (status, _) = app
        .query_as(token, "chat.sessions.get", Some(json!({ "id": ids[2] })))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
both_databases!(sessions_list_pinned_first_and_pages);

/// One page of `chat.messages.list`: its messages and `nextCursor`.
async fn message_page(chat: &Chat, paging: Value) -> (Vec<Value>, Value) {
    let mut input = json!({ "sessionId": chat.session_id });
    if let (Some(input), Some(paging)) = (input.as_object_mut(), paging.as_object()) {
        input.extend(paging.clone());
    }
    let (status, body) = chat
        .app
        .query_as(&chat.token, "chat.messages.list", Some(input))
        .await;
    assert_eq!(status, StatusCode::OK, "{paging}: {body}");
    let page = data(&body);
    let messages = page["messages"].as_array().cloned().unwrap_or_default();
    (messages, page["nextCursor"].clone())
}

/// A chat with three exchanges (six messages).
async fn chat_of_six_messages() -> Chat {
    let chat = Chat::start(DbKind::Sqlite, "gemini").await;
    for i in 0..3 {
        chat.send(&chat.input(&format!("message {i}"), &new_id()), None)
            .await
            .collect()
            .await;
    }
    chat
}

#[tokio::test]
async fn messages_page_back_from_the_newest_oldest_first_within_a_page() {
    let chat = chat_of_six_messages().await;
    let all = chat.messages().await;
    assert_eq!(all.len(), 6);
    // As tRPC's infinite queries send them: cursor null, then the previous nextCursor.
    let (newest, next) = message_page(
        &chat,
        json!({ "limit": 4, "cursor": null, "direction": "forward" }),
    )
    .await;
    assert_eq!(newest, all[2..].to_vec());
    assert_eq!(next, all[2]["id"], "the oldest of the page");
    let (older, end) = message_page(
        &chat,
        json!({ "limit": 4, "cursor": next, "direction": "forward" }),
    )
    .await;
    assert_eq!(older, all[..2].to_vec());
    assert_eq!(end, Value::Null);

    // Backward: newer messages than the cursor, from the oldest without one.
    let (first, next) = message_page(&chat, json!({ "limit": 4, "direction": "backward" })).await;
    assert_eq!(first, all[..4].to_vec());
    assert_eq!(next, all[3]["id"], "the newest of the page");
    let (rest, end) = message_page(
        &chat,
        json!({ "limit": 4, "cursor": next, "direction": "backward" }),
    )
    .await;
    assert_eq!(rest, all[4..].to_vec());
    assert_eq!(end, Value::Null);

    for (input, field) in [
        (json!({ "before": all[2]["id"] }), "before"),
        (json!({ "hasMore": true }), "hasMore"),
        (json!({ "direction": "sideways" }), "direction"),
        (json!({ "cursor": "not-an-id" }), "cursor"),
        (json!({ "limit": 101 }), "limit"),
    ] {
        let mut input = input;
        input["sessionId"] = json!(chat.session_id);
        let (status, body) = chat
            .app
            .query_as(&chat.token, "chat.messages.list", Some(input.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{input}: {body}");
        assert!(
            body["error"]["data"]["fieldErrors"][field].is_string(),
            "{input}: {body}"
        );
    }

    let (status, body) = chat
        .app
        .mutation_as(
            &chat.token,
            "chat.messages.setLiked",
            Some(json!({ "id": all[1]["id"], "liked": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(data(&body)["isLiked"], true);
}

/// Pages walk back from the newest by id: messages arriving meanwhile never shift them, so
/// the pages hold every message that existed when the first was read, once.
#[tokio::test]
async fn message_pages_keep_their_place_while_new_messages_arrive() {
    let chat = chat_of_six_messages().await;
    let before: Vec<Value> = chat
        .messages()
        .await
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    for page in 0.. {
        let (messages, next) = message_page(
            &chat,
            json!({ "limit": 2, "cursor": cursor, "direction": "forward" }),
        )
        .await;
        // Newest pages first, each oldest first: prepend to keep the whole chronological.
        let ids: Vec<Value> = messages.iter().map(|m| m["id"].clone()).collect();
        seen.splice(0..0, ids);
        if page == 0 {
            chat.send(&chat.input("arrives meanwhile", &new_id()), None)
                .await
                .collect()
                .await;
        }
        if next.is_null() {
            break;
        }
        cursor = next;
    }
    assert_eq!(seen, before, "three pages, no duplicates, no gaps");
    assert_eq!(chat.messages().await.len(), 8);
}

async fn search_finds_the_callers_messages(app: TestApp) {
    let session = app.register(&unique_email(), PASSWORD).await;
    let token = session["accessToken"].as_str().unwrap_or_default();
    let (_, body) = app
        .query_as(token, "chat.search", Some(json!({ "query": "anything" })))
        .await;
    assert_eq!(data(&body)["hits"], json!([]));
    for odd in [
        "\"",
        "*",
        "AND OR NOT",
        "NEAR(",
        "'; DROP TABLE chat_messages; --",
        "🙂",
        "a:b & !c",
        &"x".repeat(5000),
    ] {
        let (status, body) = app
            .query_as(token, "chat.search", Some(json!({ "query": odd })))
            .await;
        assert_eq!(status, StatusCode::OK, "{odd:.20}: {body}");
    }
}
both_databases!(search_finds_the_callers_messages);

#[tokio::test]
async fn search_ranks_words_from_replies_and_titles() {
    let chat = Chat::start(DbKind::Sqlite, "gemini").await;
    chat.send(
        &chat.input("Plan the quarterly budget meeting", &new_id()),
        None,
    )
    .await
    .collect()
    .await;
    let (status, body) = chat
        .app
        .query_as(
            &chat.token,
            "chat.search",
            Some(json!({ "query": "budget meet" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let hits = data(&body)["hits"].as_array().cloned().unwrap_or_default();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0]["sessionTitle"], TITLE);
    assert!(
        hits[0]["snippet"]
            .as_str()
            .is_some_and(|s| s.contains("**")),
        "{hits:?}"
    );
    let (_, listed) = chat
        .app
        .query_as(
            &chat.token,
            "chat.sessions.list",
            Some(json!({ "search": "budget" })),
        )
        .await;
    assert_eq!(data(&listed)["sessions"].as_array().map(Vec::len), Some(1));
    let (_, listed) = chat
        .app
        .query_as(
            &chat.token,
            "chat.sessions.list",
            Some(json!({ "search": "zebra" })),
        )
        .await;
    assert_eq!(data(&listed)["sessions"].as_array().map(Vec::len), Some(0));
    let other = chat.app.register(&unique_email(), PASSWORD).await;
    let (_, body) = chat
        .app
        .query_as(
            other["accessToken"].as_str().unwrap_or_default(),
            "chat.search",
            Some(json!({ "query": "budget" })),
        )
        .await;
    assert_eq!(data(&body)["hits"], json!([]), "only the caller's data");
}

#[tokio::test]
async fn send_validates_its_input() {
    let chat = Chat::start(DbKind::Sqlite, "gemini").await;
    let events = chat
        .send(&chat.input("   ", &new_id()), None)
        .await
        .collect()
        .await;
    assert!(last_error(&events)["data"]["fieldErrors"]["content"].is_string());
    let events = chat
        .send(
            &json!({ "sessionId": chat.session_id, "content": "x", "clientMessageId": "nope" }),
            None,
        )
        .await
        .collect()
        .await;
    assert!(last_error(&events)["data"]["fieldErrors"]["clientMessageId"].is_string());
    let response = chat
        .app
        .http
        .get(
            chat.app
                .trpc_url("chat.send", Some(&chat.input("x", &new_id()))),
        )
        .send()
        .await
        .expect("send");
    let events = SseStream::from_response(response).collect().await;
    assert_eq!(last_error(&events)["data"]["reason"], "missing_token");
}

#[tokio::test]
async fn shutdown_saves_running_replies_as_stopped() {
    let chat = Chat::start(DbKind::Sqlite, "gemini").await;
    let mut stream = chat
        .send(&chat.input("A long reply before shutdown", &new_id()), None)
        .await;
    let mut deltas = 0;
    while deltas < 2 {
        let event = stream.next().await.expect("event");
        deltas += usize::from(event.json()["type"] == "delta");
    }
    chat.app.shutdown.cancel();
    let rest = stream.collect().await;
    assert!(
        rest.iter().all(|e| e.event.as_deref() != Some("return")),
        "the stream ends for a reconnect"
    );
    let db = chat.app.db().await;
    let mut reply = None;
    for _ in 0..50 {
        let rows = chat_messages::Entity::find()
            .all(&db)
            .await
            .expect("messages");
        reply = rows
            .into_iter()
            .find(|m| m.role == "assistant" && m.status != "streaming");
        if reply.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reply = reply.expect("the reply was saved");
    assert_eq!(reply.status, "stopped");
    assert!(!reply.content.is_empty(), "its text so far is kept");
}
