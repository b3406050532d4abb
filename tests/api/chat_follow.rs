//! `chat.send` as a mutation (the message in a POST body) and `chat.follow` streaming its
//! reply: resume, replay from the database, one provider call, errors before the reply.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::{Chat, last_error, new_id, of_type, payloads, text_of};
use crate::helpers::{DbKind, SseEvent, data, error_code, error_reason, unique_email};

/// Sends through the mutation and returns `{ userMessage, replyMessageId }`.
async fn sent(chat: &Chat, input: &Value) -> Value {
    let (status, body) = chat.send_message(input).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    data(&body).clone()
}

fn reply_id(sent: &Value) -> String {
    sent["replyMessageId"]
        .as_str()
        .expect("replyMessageId")
        .to_owned()
}

fn ids(events: &[SseEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| e.id.as_deref()?.parse().ok())
        .collect()
}

async fn send_then_follow(db: DbKind) {
    let chat = Chat::start(db, "gemini").await;
    let input = chat.input("Hi there", &new_id());
    let sent = sent(&chat, &input).await;
    assert_eq!(sent["userMessage"]["content"], "Hi there");
    assert_eq!(sent["userMessage"]["role"], "user");
    assert_eq!(sent["userMessage"]["sessionId"], chat.session_id.as_str());
    let reply = reply_id(&sent);

    let events = chat.follow(&reply, None).await.collect().await;
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
    assert_eq!(payloads[0]["message"], sent["userMessage"]);
    assert_eq!(payloads[0]["replyMessageId"], reply.as_str());
    assert_eq!(text_of(&payloads), "Hello from Gemini.");
    let done = payloads.last().expect("done");
    assert_eq!(done["type"], "done");
    assert_eq!(done["message"]["id"], reply.as_str());
    assert_eq!(done["message"]["status"], "complete");
    let ids = ids(&events);
    assert_eq!(ids.first(), Some(&1));
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "ids count up: {ids:?}"
    );
    let messages = chat.messages().await;
    assert_eq!(messages[0], sent["userMessage"]);
    assert_eq!(messages[1]["content"], "Hello from Gemini.");
    assert_eq!(chat.streamed_calls(), 1);
}

#[tokio::test]
async fn send_then_follow_sqlite() {
    send_then_follow(DbKind::Sqlite).await;
}

#[tokio::test]
#[cfg_attr(
    not(alias_test_postgres),
    ignore = "ALIAS_TEST_POSTGRES_URL is not set"
)]
async fn send_then_follow_postgres() {
    send_then_follow(DbKind::Postgres).await;
}

#[tokio::test]
async fn sending_again_answers_with_the_same_message_and_one_reply() {
    let chat = Chat::start(DbKind::Sqlite, "anthropic").await;
    let input = chat.input("Hello once", &new_id());
    let (first, second) = tokio::join!(sent(&chat, &input), sent(&chat, &input));
    assert_eq!(first, second, "concurrent sends answer alike");
    let events = chat.follow(&reply_id(&first), None).await.collect().await;
    assert_eq!(text_of(&payloads(&events)), "Hello from Anthropic.");
    let again = sent(&chat, &input).await;
    assert_eq!(again, first, "a later resend too");
    assert_eq!(chat.streamed_calls(), 1, "one provider call");
    assert_eq!(chat.messages().await.len(), 2, "one message, one reply");
}

/// The connection drops mid-reply; following again with the last event id resumes without
/// duplicate text and without a second provider call.
#[tokio::test]
async fn follow_resumes_after_the_last_event_id() {
    let chat = Chat::start(DbKind::Sqlite, "gemini").await;
    let sent = sent(&chat, &chat.input("Give me a long reply", &new_id())).await;
    let reply = reply_id(&sent);
    let mut first = chat.follow(&reply, None).await;
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
    let last_id = seen.iter().rev().find_map(|e| e.id.clone()).expect("an id");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rest = chat.follow(&reply, Some(&last_id)).await.collect().await;
    let after = payloads(&rest);
    assert!(of_type(&after, "userMessage").is_empty(), "nothing twice");
    let text = text_of(&payloads(&seen)) + &text_of(&after);
    let done = after.last().expect("done");
    assert_eq!(done["type"], "done");
    assert_eq!(done["message"]["content"], text, "no gap, no duplicate");
    assert_eq!(text.split_whitespace().count(), 50);
    let next: u64 = last_id.parse().expect("numeric id");
    assert_eq!(ids(&rest).first(), Some(&(next + 1)));

    // The id may also come in the input, as httpSubscriptionLink sends it.
    let input = json!({ "messageId": reply, "lastEventId": last_id });
    let again = chat
        .app
        .client
        .subscribe_as(&chat.token, "chat.follow", Some(&input), None)
        .await
        .collect()
        .await;
    assert_eq!(payloads(&again), after);
    assert_eq!(chat.streamed_calls(), 1, "one provider call");
}

/// After a restart the reply is not in memory: following it replays what was saved, the
/// whole text in `done`; after a last event id from before, only `done`, numbered after it.
#[tokio::test]
async fn follow_after_a_restart_replays_the_saved_reply() {
    let chat = Chat::start(DbKind::Sqlite, "gemini").await;
    let input = chat.input("Remember me", &new_id());
    let sent = sent(&chat, &input).await;
    let reply = reply_id(&sent);
    let live = chat.follow(&reply, None).await.collect().await;
    let done = payloads(&live).last().cloned().expect("done");
    let last_live_id = *ids(&live).last().expect("ids");

    let base_url = chat.providers.base_url.clone();
    let restarted = chat
        .app
        .spawn_beside(move |config| config.ai.gemini_base_url = base_url)
        .await;
    let follow = |last_event_id: Option<String>| {
        let input = json!({ "messageId": reply });
        let restarted = &restarted;
        let token = chat.token.clone();
        async move {
            restarted
                .subscribe_as(
                    &token,
                    "chat.follow",
                    Some(&input),
                    last_event_id.as_deref(),
                )
                .await
                .collect()
                .await
        }
    };
    let replayed = follow(None).await;
    assert_eq!(ids(&replayed), [1, 2]);
    let replayed = payloads(&replayed);
    assert_eq!(replayed[0]["type"], "userMessage");
    assert_eq!(replayed[0]["message"], sent["userMessage"]);
    assert_eq!(replayed[1], done);

    let resumed = follow(Some(last_live_id.to_string())).await;
    assert_eq!(ids(&resumed), [last_live_id + 1]);
    assert_eq!(payloads(&resumed), std::slice::from_ref(&done));
    assert_eq!(
        resumed.last().and_then(|e| e.event.as_deref()),
        Some("return")
    );

    let (status, body) = restarted
        .mutation_as(&chat.token, "chat.send", Some(input))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        data(&body),
        &sent,
        "a resend after the restart answers alike"
    );
    assert_eq!(chat.streamed_calls(), 1, "no second provider call");
}

/// Not found, no key, bad input: ordinary errors of the mutation, nothing saved.
#[tokio::test]
async fn failures_before_the_reply_are_mutation_errors() {
    let chat = Chat::start(DbKind::Sqlite, "gemini").await;
    let missing_key = json!({ "sessionId": chat.session_id, "content": "hi", "clientMessageId": new_id(), "provider": "openai" });
    let (status, body) = chat.send_message(&missing_key).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    assert_eq!(error_reason(&body), "api_key_missing");
    assert_eq!(body["error"]["data"]["path"], "chat.send");

    let no_session = json!({ "sessionId": new_id(), "content": "hi", "clientMessageId": new_id() });
    let (status, body) = chat.send_message(&no_session).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let too_long = chat.input(&"x".repeat(100_001), &new_id());
    for (input, field) in [
        (chat.input("   ", &new_id()), "content"),
        (too_long, "content"),
        (
            json!({ "sessionId": chat.session_id, "content": "x", "clientMessageId": "nope" }),
            "clientMessageId",
        ),
        (
            json!({ "sessionId": chat.session_id, "content": "x", "clientMessageId": new_id(), "fileIds": [chat.session_id, chat.session_id] }),
            "fileIds",
        ),
        (
            json!({ "sessionId": chat.session_id, "content": "x", "clientMessageId": new_id(), "lastEventId": "3" }),
            "lastEventId",
        ),
    ] {
        let (status, body) = chat.send_message(&input).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {body}");
        assert!(
            body["error"]["data"]["fieldErrors"][field].is_string(),
            "{field}: {body}"
        );
    }
    assert!(chat.messages().await.is_empty(), "nothing saved");
    assert_eq!(chat.streamed_calls(), 0);

    // A retry after the key is set starts the reply (the failed attempt left nothing behind).
    chat.set_key("openai", "key-valid-0000").await;
    let sent = sent(&chat, &missing_key).await;
    let events = chat.follow(&reply_id(&sent), None).await.collect().await;
    assert_eq!(text_of(&payloads(&events)), "Hello from OpenAI.");
}

#[tokio::test]
async fn follow_finds_only_the_callers_replies() {
    let chat = Chat::start(DbKind::Sqlite, "gemini").await;
    let sent = sent(&chat, &chat.input("mine", &new_id())).await;
    let reply = reply_id(&sent);
    chat.follow(&reply, None).await.collect().await;
    let user_message_id = sent["userMessage"]["id"].as_str().expect("id").to_owned();

    let other = chat
        .app
        .register(&unique_email(), "correct horse battery")
        .await;
    let token = other["accessToken"].as_str().expect("token");
    let input = json!({ "messageId": reply });
    let events = chat
        .app
        .subscribe_as(token, "chat.follow", Some(&input), None)
        .await
        .collect()
        .await;
    assert_eq!(
        last_error(&events)["data"]["code"],
        "NOT_FOUND",
        "{events:?}"
    );
    assert!(payloads(&events).is_empty());

    for message_id in [user_message_id, new_id()] {
        let events = chat.follow(&message_id, None).await.collect().await;
        let error = last_error(&events);
        assert_eq!(
            error["data"]["code"], "NOT_FOUND",
            "{message_id}: {events:?}"
        );
    }
    let (status, body) = chat
        .app
        .mutation_as(token, "chat.send", Some(chat.input("sneaky", &new_id())))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "NOT_FOUND");
}

/// A pasted memo: 64k characters travel in the POST body (not the URL) and come back whole.
#[tokio::test]
async fn a_64k_character_message_is_sent_and_followed() {
    let chat = Chat::start(DbKind::Sqlite, "gemini").await;
    let content: String = "Memo line with ünïcödé ✓.\n"
        .repeat(2_500)
        .chars()
        .take(64_000)
        .collect();
    let content = content.trim().to_owned();
    let sent = sent(&chat, &chat.input(&content, &new_id())).await;
    assert_eq!(sent["userMessage"]["content"], content.as_str());
    let events = chat.follow(&reply_id(&sent), None).await.collect().await;
    let payloads = payloads(&events);
    assert_eq!(payloads[0]["message"]["content"], content.as_str());
    assert_eq!(
        payloads.last().expect("done")["message"]["status"],
        "complete"
    );
    assert_eq!(chat.messages().await[0]["content"], content.as_str());
    let call = &chat.providers.requests()[0];
    assert!(call.body.to_string().contains("Memo line with"), "sent on");
}
