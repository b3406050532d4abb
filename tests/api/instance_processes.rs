//! Several instances behind one address, as deployed: two `alias-server` processes (the built
//! binary, configured by environment variables alone) on one fresh PostgreSQL database and one
//! Redis (`ALIAS_TEST_REDIS_URL`, a key prefix of their own per test), sharing their secrets,
//! talked to over HTTP only. Limits count across both, a revocation on one is refused at once
//! by the other, a reply written by one is followed, resumed and stopped through the other and
//! claimed once, and a process killed mid-reply leaves the reply to the other, which marks it
//! failed with its text so far. Without both services these tests are reported ignored.
//!
//! Redis failing mid-test, which needs a proxy between one instance and Redis, is in
//! `instances.rs`.

use std::time::Duration;

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::{new_id, of_type, payloads, text_of};
use crate::fake_providers::FakeProviders;
use crate::helpers::{
    PostgresDatabase, SseEvent, SseStream, TestClient, data, error_reason, test_redis_url,
    unique_email, until, until_within,
};
use crate::needs_postgres_and_redis;
use crate::server_process::ServerProcess;

const PASSWORD: &str = "correct horse battery";

/// Two processes, A and B, on one new database, one Redis key prefix and the fake providers.
struct Pair {
    a: ServerProcess,
    b: ServerProcess,
    providers: FakeProviders,
    /// Their Redis key prefix.
    prefix: String,
    // Dropped after the processes, which are killed first.
    _database: PostgresDatabase,
}

/// Starts A, then B with A's signing key (and the same master and link keys), as instances
/// behind one load balancer share them; `extra` variables apply to both. Returns once both
/// are subscribed to the messages instances exchange.
async fn start_pair(extra: &[(&str, &str)]) -> Pair {
    let database = PostgresDatabase::create().await;
    let providers = FakeProviders::start().await;
    let prefix = format!("alias-test-{}:", uuid::Uuid::new_v4());
    let mut env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", database.url.clone()),
        ("ALIAS_REDIS_URL", test_redis_url()),
        ("ALIAS_REDIS_KEY_PREFIX", prefix.clone()),
        ("ALIAS_MASTER_KEY", random_key()),
        ("ALIAS_STORAGE_URL_KEY", random_key()),
        ("ALIAS_GEMINI_BASE_URL", providers.base_url.clone()),
        ("ALIAS_OPENAI_BASE_URL", providers.base_url.clone()),
        ("ALIAS_ANTHROPIC_BASE_URL", providers.base_url.clone()),
    ];
    env.extend(
        extra
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned())),
    );
    let a = ServerProcess::start("A", &env).await;
    let key_file = a.data_dir.path().join("jwt-ed25519.pem");
    env.push(("ALIAS_JWT_PRIVATE_KEY_FILE", key_file.display().to_string()));
    let b = ServerProcess::start("B", &env).await;
    until_subscribed(&prefix, 2).await;
    Pair {
        a,
        b,
        providers,
        prefix,
        _database: database,
    }
}

/// 32 random bytes in base64, as `ALIAS_MASTER_KEY` and `ALIAS_STORAGE_URL_KEY` take them.
fn random_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

/// Waits until `instances` listeners hear each channel the instances publish on (session-cache
/// evictions, stop requests), asking Redis itself.
async fn until_subscribed(prefix: &str, instances: i64) {
    let client = redis::Client::open(test_redis_url()).expect("ALIAS_TEST_REDIS_URL");
    let channels = [
        format!("{prefix}session-cache"),
        format!("{prefix}stream-stops"),
    ];
    until("both processes subscribe", || {
        let (client, channels) = (client.clone(), channels.clone());
        async move {
            let Ok(mut redis) = client.get_multiplexed_async_connection().await else {
                return false;
            };
            let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channels)
                .query_async(&mut redis)
                .await
                .unwrap_or_default();
            counts.len() == channels.len() && counts.iter().all(|(_, n)| *n >= instances)
        }
    })
    .await;
}

async fn register(on: &TestClient) -> Value {
    register_as(on, &unique_email()).await
}

async fn register_as(on: &TestClient, email: &str) -> Value {
    let input = json!({ "email": email, "password": PASSWORD, "name": "Test User" });
    let (status, body) = on.mutation("auth.register", Some(input)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    data(&body).clone()
}

fn token(session: &Value, field: &str) -> String {
    session[field].as_str().unwrap_or_default().to_owned()
}

async fn me(on: &TestClient, access: &str) -> (StatusCode, Value) {
    on.query_as(access, "users.me", None).await
}

async fn refresh(on: &TestClient, refresh_token: &str) -> (StatusCode, Value) {
    on.mutation(
        "auth.refresh",
        Some(json!({ "refreshToken": refresh_token })),
    )
    .await
}

needs_postgres_and_redis! {
    /// The per-user budget of signed-in calls and the per-IP sign-in budget hold for the pair
    /// as for one instance.
    async fn limits_are_counted_across_two_processes() {
        let pair = start_pair(&[
            ("ALIAS_USER_CALLS_PER_MINUTE", "4"),
            ("ALIAS_AUTH_IP_LIMIT_PER_MINUTE", "4"),
        ])
        .await;
        let (a, b) = (&pair.a.client, &pair.b.client);
        let access = token(&register(a).await, "accessToken");
        for on in [a, b, a, b] {
            let (status, body) = me(on, &access).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        for on in [a, b] {
            let (status, body) = me(on, &access).await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
            assert_eq!(error_reason(&body), "rate_limited");
        }
        for on in [a, b, a, b] {
            let (status, body) = refresh(on, "not-a-token").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        }
        for on in [a, b] {
            let (status, body) = refresh(on, "not-a-token").await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
            assert_eq!(error_reason(&body), "rate_limited");
            let retry = body["error"]["data"]["retryAfterSeconds"].as_u64().unwrap_or(0);
            assert!((1..=60).contains(&retry), "{body}");
        }
    }
}

/// Evictions of unknown sessions queued on the eviction channel before the next revocation's
/// own, so pub/sub delivers that one to the instances well after the revoking call answered
/// (as under load): whoever answers the next call cannot have heard it yet.
async fn hold_up_evictions(prefix: &str) {
    const BACKLOG: usize = 20_000;
    let client = redis::Client::open(test_redis_url()).expect("ALIAS_TEST_REDIS_URL");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let mut backlog = redis::pipe();
    for _ in 0..BACKLOG {
        backlog
            .cmd("PUBLISH")
            .arg(format!("{prefix}session-cache"))
            .arg(format!("session:{}", uuid::Uuid::new_v4()))
            .ignore();
    }
    let () = backlog
        .query_async(&mut redis)
        .await
        .expect("publish the backlog");
}

needs_postgres_and_redis! {
    /// With a session cache long enough to serve a revoked session for minutes, every kind of
    /// revocation on A is refused by B's very next call, with no wait, although pub/sub
    /// delivers the eviction to B only later (`hold_up_evictions`): B sees the user's
    /// revocation mark changed when it counts the call.
    async fn revocations_on_one_process_are_refused_at_once_on_the_other() {
        let pair = start_pair(&[
            ("ALIAS_SESSION_CACHE_SECONDS", "300"),
            ("ALIAS_REFRESH_REUSE_SECONDS", "0"),
        ])
        .await;
        let (a, b) = (&pair.a.client, &pair.b.client);

        // Logout.
        let access = token(&register(a).await, "accessToken");
        assert_eq!(me(b, &access).await.0, StatusCode::OK, "B caches the session");
        hold_up_evictions(&pair.prefix).await;
        let (status, body) = a.mutation_as(&access, "auth.logout", Some(json!({}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = me(b, &access).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(error_reason(&body), "session_revoked");

        // Revoking another session.
        let email = unique_email();
        let first = register_as(a, &email).await;
        let (status, second) = a
            .mutation("auth.login", Some(json!({ "email": email, "password": PASSWORD })))
            .await;
        assert_eq!(status, StatusCode::OK, "{second}");
        let second_access = token(data(&second), "accessToken");
        let first_access = token(&first, "accessToken");
        assert_eq!(me(b, &first_access).await.0, StatusCode::OK);
        let (status, sessions) = a.query_as(&second_access, "auth.sessions.list", None).await;
        assert_eq!(status, StatusCode::OK, "{sessions}");
        let first_id = data(&sessions)
            .as_array()
            .and_then(|all| all.iter().find(|s| s["current"] == false))
            .map(|s| s["id"].clone())
            .expect("the other session is listed");
        hold_up_evictions(&pair.prefix).await;
        let (status, body) = a
            .mutation_as(&second_access, "auth.sessions.revoke", Some(json!({ "id": first_id })))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = me(b, &first_access).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(me(b, &second_access).await.0, StatusCode::OK, "the other session lives");

        // A user's change is seen at once.
        assert_eq!(data(&me(b, &second_access).await.1)["name"], "Test User");
        hold_up_evictions(&pair.prefix).await;
        let (status, body) = a
            .mutation_as(&second_access, "users.update", Some(json!({ "name": "Renamed" })))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = me(b, &second_access).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(data(&body)["name"], "Renamed", "{body}");

        // Refresh-token reuse revokes the family everywhere.
        let session = register(b).await;
        let (status, rotated) = refresh(a, &token(&session, "refreshToken")).await;
        assert_eq!(status, StatusCode::OK, "{rotated}");
        let rotated_access = token(data(&rotated), "accessToken");
        assert_eq!(me(b, &rotated_access).await.0, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(50)).await;
        hold_up_evictions(&pair.prefix).await;
        let (status, body) = refresh(a, &token(&session, "refreshToken")).await;
        assert_eq!(error_reason(&body), "refresh_token_reused", "{status} {body}");
        let (status, body) = me(b, &rotated_access).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(error_reason(&body), "session_revoked");

        // Deleting the account.
        hold_up_evictions(&pair.prefix).await;
        let (status, body) = a
            .mutation_as(&second_access, "users.delete", Some(json!({ "password": PASSWORD })))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = me(b, &second_access).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
}

/// A signed-in user with a Gemini key (on the fake) and a chat session.
struct Chatter {
    token: String,
    session_id: String,
}

impl Chatter {
    async fn new(on: &TestClient) -> Self {
        let token = token(&register(on).await, "accessToken");
        let calls = [
            (
                "apiKeys.set",
                json!({ "provider": "gemini", "apiKey": "key-valid-0000", "validate": false }),
            ),
            ("preferences.update", json!({ "aiProvider": "gemini" })),
            ("chat.sessions.create", json!({})),
        ];
        let mut session_id = String::new();
        for (procedure, input) in calls {
            let (status, body) = on.mutation_as(&token, procedure, Some(input)).await;
            assert_eq!(status, StatusCode::OK, "{procedure}: {body}");
            session_id = data(&body)["id"].as_str().unwrap_or_default().to_owned();
        }
        Self { token, session_id }
    }

    fn input(&self, content: &str, client_message_id: &str) -> Value {
        json!({ "sessionId": self.session_id, "content": content, "clientMessageId": client_message_id })
    }

    /// `chat.send` on `on`: the reply's id.
    async fn send(&self, on: &TestClient, content: &str) -> String {
        let input = self.input(content, &new_id());
        let (status, body) = on.mutation_as(&self.token, "chat.send", Some(input)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        data(&body)["replyMessageId"]
            .as_str()
            .expect("replyMessageId")
            .to_owned()
    }

    async fn follow(&self, on: &TestClient, reply: &str, last_event_id: Option<&str>) -> SseStream {
        let input = json!({ "messageId": reply });
        on.subscribe_as(&self.token, "chat.follow", Some(&input), last_event_id)
            .await
    }

    async fn messages(&self, on: &TestClient) -> Vec<Value> {
        let input = json!({ "sessionId": self.session_id });
        let (status, body) = on
            .query_as(&self.token, "chat.messages.list", Some(input))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        data(&body)["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The reply `id` as `on` lists it.
    async fn reply(&self, on: &TestClient, id: &str) -> Value {
        self.messages(on)
            .await
            .into_iter()
            .find(|m| m["id"] == id)
            .expect("the reply is listed")
    }
}

/// Reads events until `count` data events arrived.
async fn data_events(stream: &mut SseStream, count: usize) -> Vec<SseEvent> {
    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|e: &&SseEvent| e.event.is_none())
        .count()
        < count
    {
        seen.push(stream.next().await.expect("an event"));
    }
    seen
}

fn ids(events: &[SseEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| e.id.as_deref()?.parse().ok())
        .collect()
}

needs_postgres_and_redis! {
    /// A reply written by A is followed live through B, dropped, resumed through B after the
    /// last event id with no gap and no duplicate, and costs one provider call.
    async fn a_reply_written_by_one_process_is_followed_and_resumed_through_the_other() {
        let pair = start_pair(&[]).await;
        let (a, b) = (&pair.a.client, &pair.b.client);
        let chatter = Chatter::new(a).await;
        let reply = chatter.send(a, "Give me a long reply").await;
        let mut first = chatter.follow(b, &reply, None).await;
        let seen = data_events(&mut first, 4).await;
        drop(first);
        let seen_payloads = payloads(&seen);
        assert_eq!(seen_payloads[0]["type"], "userMessage", "{seen_payloads:?}");
        assert_eq!(seen_payloads[0]["replyMessageId"], reply.as_str());
        let last_id = seen.iter().rev().find_map(|e| e.id.clone()).expect("an id");
        tokio::time::sleep(Duration::from_millis(300)).await;

        let rest = chatter.follow(b, &reply, Some(&last_id)).await.collect().await;
        let after = payloads(&rest);
        assert!(of_type(&after, "userMessage").is_empty(), "nothing twice");
        let text = text_of(&seen_payloads) + &text_of(&after);
        let done = after.last().expect("done");
        assert_eq!(done["type"], "done", "{after:?}");
        assert_eq!(done["message"]["status"], "complete");
        assert_eq!(done["message"]["content"], text, "no gap, no duplicate");
        assert_eq!(text.split_whitespace().count(), 50);
        let next: u64 = last_id.parse().expect("numeric id");
        let rest_ids = ids(&rest);
        assert_eq!(rest_ids.first(), Some(&(next + 1)));
        assert!(rest_ids.windows(2).all(|w| w[1] == w[0] + 1), "{rest_ids:?}");

        // Finished, it is still replayed event by event through B.
        let whole = chatter.follow(b, &reply, None).await.collect().await;
        assert_eq!(text_of(&payloads(&whole)), text);
        assert_eq!(pair.providers.streamed_calls(), 1, "one provider call");
    }
}

needs_postgres_and_redis! {
    /// The subscription clients built before `chat.follow` use (GET `chat.send`), opened on B
    /// for a message A answers, follows A's reply to its real end.
    async fn the_legacy_send_subscription_follows_a_reply_written_by_the_other_process() {
        let pair = start_pair(&[]).await;
        let (a, b) = (&pair.a.client, &pair.b.client);
        let chatter = Chatter::new(a).await;
        let input = chatter.input("Give me a long reply", &new_id());
        let (status, body) = a.mutation_as(&chatter.token, "chat.send", Some(input.clone())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let events = b
            .subscribe_as(&chatter.token, "chat.send", Some(&input), None)
            .await
            .collect()
            .await;
        let all = payloads(&events);
        assert_eq!(all.first().expect("events")["type"], "userMessage", "{all:?}");
        let done = all.last().expect("done");
        assert_eq!(done["type"], "done", "{all:?}");
        assert_eq!(done["message"]["status"], "complete", "{done}");
        assert_eq!(text_of(&all), done["message"]["content"].as_str().unwrap_or_default());
        assert_eq!(pair.providers.streamed_calls(), 1, "one provider call");
    }
}

needs_postgres_and_redis! {
    /// `chat.stop` through B ends the reply A writes: followers on either side get `done` with
    /// status `stopped` and the text so far, as saved.
    async fn a_reply_written_by_one_process_is_stopped_through_the_other() {
        let pair = start_pair(&[]).await;
        let (a, b) = (&pair.a.client, &pair.b.client);
        let chatter = Chatter::new(a).await;
        let reply = chatter.send(a, "keep streaming please").await;
        let mut on_b = chatter.follow(b, &reply, None).await;
        let on_a = chatter.follow(a, &reply, None).await;
        data_events(&mut on_b, 3).await;
        let (status, body) = b
            .mutation_as(&chatter.token, "chat.stop", Some(json!({ "messageId": reply })))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for stream in [on_a, on_b] {
            let events = stream.collect().await;
            let done = payloads(&events).last().cloned().expect("done");
            assert_eq!(done["type"], "done", "{events:?}");
            assert_eq!(done["message"]["status"], "stopped");
        }
        let saved = chatter.reply(b, &reply).await;
        assert_eq!(saved["status"], "stopped");
        assert!(saved["content"].as_str().is_some_and(|text| !text.is_empty()));
    }
}

needs_postgres_and_redis! {
    /// One `clientMessageId` sent through both processes at once: both answer the same
    /// message and reply, and the provider is called once.
    async fn a_message_sent_through_both_processes_at_once_is_answered_once() {
        let pair = start_pair(&[]).await;
        let (a, b) = (&pair.a.client, &pair.b.client);
        let chatter = Chatter::new(a).await;
        for _ in 0..3 {
            let input = chatter.input("Hi there", &new_id());
            let (on_a, on_b) = tokio::join!(
                a.mutation_as(&chatter.token, "chat.send", Some(input.clone())),
                b.mutation_as(&chatter.token, "chat.send", Some(input.clone())),
            );
            assert_eq!(on_a.0, StatusCode::OK, "{}", on_a.1);
            assert_eq!(on_b.0, StatusCode::OK, "{}", on_b.1);
            assert_eq!(data(&on_a.1), data(&on_b.1));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(pair.providers.streamed_calls(), 3, "one provider call per message");
        assert_eq!(chatter.messages(b).await.len(), 6);
    }
}

needs_postgres_and_redis! {
    /// A is killed (SIGKILL: no shutdown, no last save) while it writes a reply that B's
    /// client follows. Once A's lease on the reply lapses, B marks the reply `error`
    /// (`interrupted`) keeping the text A saved, B's follower gets that `done`, and nobody
    /// asks the provider again.
    async fn a_reply_whose_process_is_killed_is_marked_failed_by_the_other() {
        // Pings every second keep B's follower talking while nothing else happens; the test
        // asks B often.
        let mut pair = start_pair(&[
            ("ALIAS_CHAT_FLUSH_MS", "50"),
            ("ALIAS_SSE_PING_SECONDS", "1"),
            ("ALIAS_USER_CALLS_PER_MINUTE", "100000"),
        ])
        .await;
        let chatter = Chatter::new(&pair.a).await;
        let reply = chatter.send(&pair.a, "keep streaming please").await;
        let mut on_b = chatter.follow(&pair.b, &reply, None).await;
        let before = payloads(&data_events(&mut on_b, 10).await);
        until("A saved some of the reply", || async {
            chatter.reply(&pair.b, &reply).await["content"]
                .as_str()
                .is_some_and(|text| !text.is_empty())
        })
        .await;
        let saved_before = chatter.reply(&pair.b, &reply).await;
        assert_eq!(saved_before["status"], "streaming");
        let saved_before = saved_before["content"].as_str().unwrap_or_default().to_owned();

        pair.a.kill();

        // The lease (10 s) lapses, then B's sweep (every 5 s) finds the reply.
        let b = &pair.b.client;
        until_within(Duration::from_secs(40), "B marks the reply failed", || async {
            chatter.reply(b, &reply).await["status"] == "error"
        })
        .await;
        let failed = chatter.reply(b, &reply).await;
        assert_eq!(failed["error"]["reason"], "interrupted", "{failed}");
        let content = failed["content"].as_str().unwrap_or_default();
        assert!(content.starts_with(&saved_before), "the text so far is kept: {failed}");
        let every_word: Vec<String> = (1..=1200).map(|n| format!("word{n}")).collect();
        assert!(every_word.join(" ").starts_with(content), "{content:?}");

        let rest = payloads(&on_b.collect().await);
        let done = rest.last().expect("B's follower is told how the reply ended");
        assert_eq!(done["type"], "done", "{rest:?}");
        assert_eq!(done["message"]["status"], "error", "{done}");
        assert_eq!(done["message"]["content"], content);
        let streamed = text_of(&before) + &text_of(&rest);
        assert!(every_word.join(" ").starts_with(&streamed), "no gap, no duplicate");
        assert_eq!(pair.providers.streamed_calls(), 1, "the reply was not asked again");
    }
}
