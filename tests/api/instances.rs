//! Several instances behind one address: two real servers on one fresh PostgreSQL database and
//! one Redis (`ALIAS_TEST_REDIS_URL`, a key prefix of their own per test). Limits count across
//! both, a revocation on one is refused at once by the other, a reply written by one is
//! followed, resumed and stopped through the other, and Redis failing mid-test is answered
//! SERVICE_UNAVAILABLE quickly, reported by `/ready`, and recovered from without a restart.
//! Without both services these tests are reported ignored.

use std::time::{Duration, Instant};

use alias_server::config::{Config, RedisConfig, RedisUrl};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::{Chat, new_id, of_type, payloads, text_of};
use crate::helpers::{
    DbKind, SseEvent, SseStream, TestApp, data, error_code, error_reason, unique_email,
};
use crate::tcp_proxy::TcpProxy;

const PASSWORD: &str = "correct horse battery";

/// Mirrors the attribute every test here carries.
macro_rules! needs_postgres_and_redis {
    ($(#[$meta:meta])* async fn $name:ident() $body:block) => {
        $(#[$meta])*
        #[tokio::test]
        #[cfg_attr(
            not(all(alias_test_postgres, alias_test_redis)),
            ignore = "ALIAS_TEST_POSTGRES_URL and ALIAS_TEST_REDIS_URL are not both set"
        )]
        async fn $name() $body
    };
}

fn redis_url() -> String {
    std::env::var("ALIAS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// `redis_url` through another address (a proxy the test can cut).
fn redis_url_via(addr: &str) -> String {
    let url = reqwest::Url::parse(&redis_url()).expect("ALIAS_TEST_REDIS_URL is a URL");
    let mut via = url.clone();
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    via.set_host(Some(host)).expect("host");
    via.set_port(port.parse().ok()).expect("port");
    via.to_string()
}

/// One Redis configuration per test: a key prefix of its own.
fn shared_redis() -> impl Fn(String) -> RedisConfig + Clone {
    let prefix = format!("alias-test-{}:", uuid::Uuid::new_v4());
    move |url: String| RedisConfig {
        url: RedisUrl(url),
        key_prefix: prefix.clone(),
        timeout: Duration::from_millis(500),
    }
}

async fn until_subscribed(apps: [&TestApp; 2]) {
    for app in apps {
        until("the instance subscribes to evictions", || async {
            app.state.auth.session_cache.hears_other_instances()
        })
        .await;
    }
}

struct Pair {
    a: TestApp,
    b: TestApp,
}

/// Two instances on one new PostgreSQL database and one Redis with a fresh key prefix; `a`
/// reaches Redis at `a_redis` (a proxy, say), `b` directly. `adjust` applies to both.
async fn spawn_pair(a_redis: Option<String>, adjust: impl Fn(&mut Config) + Clone) -> Pair {
    let shared = shared_redis();
    let (shared_a, shared_b) = (shared.clone(), shared);
    let adjust_a = adjust.clone();
    let a = TestApp::spawn_with(DbKind::Postgres, move |config| {
        config.redis = Some(shared_a(a_redis.unwrap_or_else(redis_url)));
        adjust_a(config);
    })
    .await;
    let b = a
        .spawn_beside(move |config| {
            config.redis = Some(shared_b(redis_url()));
            adjust(config);
        })
        .await;
    until_subscribed([&a, &b]).await;
    Pair { a, b }
}

/// Polls `check` until it holds (at most 15 s, then the test fails naming `what`).
async fn until<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < give_up, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn token(session: &Value, field: &str) -> String {
    session[field].as_str().unwrap_or_default().to_owned()
}

async fn me(app: &TestApp, access: &str) -> (StatusCode, Value) {
    app.query_as(access, "users.me", None).await
}

async fn refresh(app: &TestApp, refresh_token: &str) -> (StatusCode, Value) {
    app.mutation(
        "auth.refresh",
        Some(json!({ "refreshToken": refresh_token })),
    )
    .await
}

async fn ready(app: &TestApp) -> (StatusCode, Value) {
    let response = reqwest::get(app.url("/ready")).await.expect("/ready");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

needs_postgres_and_redis! {
    /// Per-IP sign-in limits hold for the pair as for one instance.
    async fn limits_are_counted_across_instances() {
        let Pair { a, b } = spawn_pair(None, |config| config.auth.ip_limit_per_minute = 4).await;
        for app in [&a, &b, &a, &b] {
            let (status, body) = refresh(app, "not-a-token").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        }
        for app in [&a, &b] {
            let (status, body) = refresh(app, "not-a-token").await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
            assert_eq!(error_reason(&body), "rate_limited");
            let retry = body["error"]["data"]["retryAfterSeconds"].as_u64().unwrap_or(0);
            assert!((1..=60).contains(&retry), "{body}");
        }
        // Another action has its own budget.
        let (status, body) = a
            .mutation("auth.login", Some(json!({ "email": unique_email(), "password": PASSWORD })))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
}

needs_postgres_and_redis! {
    /// With a session cache long enough to serve a revoked session for minutes, every kind of
    /// revocation on A is refused by B on its very next call.
    async fn revocations_on_one_instance_are_refused_at_once_on_the_other() {
        let Pair { a, b } = spawn_pair(None, |config| {
            config.auth.session_cache_ttl = Duration::from_secs(300);
            config.auth.refresh_reuse_interval = Duration::ZERO;
        })
        .await;

        // Logout.
        let session = a.register(&unique_email(), PASSWORD).await;
        let access = token(&session, "accessToken");
        assert_eq!(me(&b, &access).await.0, StatusCode::OK, "B caches the session");
        let (status, body) = a.mutation_as(&access, "auth.logout", Some(json!({}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = me(&b, &access).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(error_reason(&body), "session_revoked");

        // Revoking another session.
        let email = unique_email();
        let first = a.register(&email, PASSWORD).await;
        let (status, second) = a
            .mutation("auth.login", Some(json!({ "email": email, "password": PASSWORD })))
            .await;
        assert_eq!(status, StatusCode::OK, "{second}");
        let second = data(&second).clone();
        let first_access = token(&first, "accessToken");
        assert_eq!(me(&b, &first_access).await.0, StatusCode::OK);
        let (status, sessions) = a
            .query_as(&token(&second, "accessToken"), "auth.sessions.list", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{sessions}");
        let first_id = data(&sessions)
            .as_array()
            .and_then(|all| all.iter().find(|s| s["current"] == false))
            .map(|s| s["id"].clone())
            .expect("the other session is listed");
        let (status, body) = a
            .mutation_as(&token(&second, "accessToken"), "auth.sessions.revoke", Some(json!({ "id": first_id })))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = me(&b, &first_access).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

        // A user's change is seen at once.
        let second_access = token(&second, "accessToken");
        assert_eq!(data(&me(&b, &second_access).await.1)["name"], "Test User");
        let (status, body) = a
            .mutation_as(&second_access, "users.update", Some(json!({ "name": "Renamed" })))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(data(&me(&b, &second_access).await.1)["name"], "Renamed");

        // Refresh-token reuse revokes the family everywhere.
        let session = b.register(&unique_email(), PASSWORD).await;
        let (status, rotated) = refresh(&a, &token(&session, "refreshToken")).await;
        assert_eq!(status, StatusCode::OK, "{rotated}");
        let rotated_access = token(data(&rotated), "accessToken");
        assert_eq!(me(&b, &rotated_access).await.0, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (status, body) = refresh(&a, &token(&session, "refreshToken")).await;
        assert_eq!(error_reason(&body), "refresh_token_reused", "{status} {body}");
        let (status, body) = me(&b, &rotated_access).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

        // Deleting the account.
        let (status, body) = a
            .mutation_as(&second_access, "users.delete", Some(json!({ "password": PASSWORD })))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = me(&b, &second_access).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
}

#[derive(Clone, Copy)]
enum Outage {
    /// Connections refused and closed: failures are reported at once.
    Cut,
    /// Connections open but silent: only timeouts tell.
    Frozen,
}

/// A reaches Redis through a proxy the test breaks: calls needing Redis (limited ones, every
/// signed-in one) are refused quickly with SERVICE_UNAVAILABLE, `/ready` says why, a revoked
/// session is still refused as such (A reads sessions from the database while it cannot hear
/// evictions), and all of it recovers when the proxy is restored, without a restart.
async fn redis_outage_on_one_instance(outage: Outage) {
    let proxy = TcpProxy::start(redis_upstream()).await;
    let Pair { a, b } = spawn_pair(Some(redis_url_via(&proxy.addr)), |config| {
        config.auth.session_cache_ttl = Duration::from_secs(300);
    })
    .await;
    let session = a.register(&unique_email(), PASSWORD).await;
    let access = token(&session, "accessToken");
    assert_eq!(
        me(&a, &access).await.0,
        StatusCode::OK,
        "A caches the session"
    );
    assert_eq!(ready(&a).await.0, StatusCode::OK);

    match outage {
        Outage::Cut => proxy.cut(),
        Outage::Frozen => proxy.freeze(),
    }
    for _ in 0..3 {
        let started = Instant::now();
        let (status, body) = refresh(&a, &token(&session, "refreshToken")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(error_code(&body), "SERVICE_UNAVAILABLE");
        assert_eq!(error_reason(&body), "shared_state_unavailable");
        assert!(
            body["error"]["data"]["retryAfterSeconds"]
                .as_u64()
                .is_some(),
            "{body}"
        );
        // A bound against hanging, not a speed target (the timeout is 500 ms).
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    let (status, body) = ready(&a).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["problem"], "redis_unreachable", "{body}");
    assert_eq!(body["redis"], "unreachable", "{body}");
    let (status, body) = ready(&b).await;
    assert_eq!(status, StatusCode::OK, "B reaches Redis: {body}");
    assert_eq!(body["redis"], "ok", "{body}");

    // A stops trusting its cache once it cannot hear evictions: a logout on B is refused by
    // A although the eviction never reached it.
    until("A notices the lost subscription", || async {
        !a.state.auth.session_cache.hears_other_instances()
    })
    .await;
    // Every signed-in call counts against its user's budget, in Redis.
    let (status, body) = me(&a, &access).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_reason(&body), "shared_state_unavailable");
    let (status, body) = b.mutation_as(&access, "auth.logout", Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = me(&a, &access).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    proxy.restore();
    until("/ready on A is 200 again", || async {
        ready(&a).await.0 == StatusCode::OK
    })
    .await;
    until("A subscribes again", || async {
        a.state.auth.session_cache.hears_other_instances()
    })
    .await;
    let session = b.register(&unique_email(), PASSWORD).await;
    let (status, body) = refresh(&a, &token(&session, "refreshToken")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = token(data(&body), "accessToken");
    assert_eq!(me(&a, &access).await.0, StatusCode::OK, "A caches again");
    let (status, _) = b.mutation_as(&access, "auth.logout", Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me(&a, &access).await.0, StatusCode::UNAUTHORIZED);
}

needs_postgres_and_redis! {
    async fn a_redis_refusing_connections_is_an_outage_recovered_from() {
        redis_outage_on_one_instance(Outage::Cut).await;
    }
}

needs_postgres_and_redis! {
    async fn a_redis_gone_silent_is_an_outage_recovered_from() {
        redis_outage_on_one_instance(Outage::Frozen).await;
    }
}

/// `host:port` of the test Redis, for the proxy to forward to.
fn redis_upstream() -> String {
    let url = reqwest::Url::parse(&redis_url()).expect("ALIAS_TEST_REDIS_URL is a URL");
    format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(6379)
    )
}

/// A chat (user, Gemini key, session) on instance A, and instance B beside it, both on the fake
/// providers.
async fn chat_pair() -> (Chat, TestApp) {
    let shared = shared_redis();
    let shared_a = shared.clone();
    let chat = Chat::start_with(DbKind::Postgres, "gemini", move |config| {
        config.redis = Some(shared_a(redis_url()));
    })
    .await;
    let base_url = chat.providers.base_url.clone();
    let b = chat
        .app
        .spawn_beside(move |config| {
            config.ai.gemini_base_url = base_url;
            config.redis = Some(shared(redis_url()));
        })
        .await;
    until_subscribed([&chat.app, &b]).await;
    (chat, b)
}

async fn send_on(app: &TestApp, chat: &Chat, content: &str) -> String {
    let (status, body) = app
        .mutation_as(
            &chat.token,
            "chat.send",
            Some(chat.input(content, &new_id())),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    data(&body)["replyMessageId"]
        .as_str()
        .expect("replyMessageId")
        .to_owned()
}

async fn follow_on(
    app: &TestApp,
    chat: &Chat,
    reply: &str,
    last_event_id: Option<&str>,
) -> SseStream {
    let input = json!({ "messageId": reply });
    app.subscribe_as(&chat.token, "chat.follow", Some(&input), last_event_id)
        .await
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
    async fn a_reply_written_by_one_instance_is_followed_and_resumed_through_the_other() {
        let (chat, b) = chat_pair().await;
        let reply = send_on(&chat.app, &chat, "Give me a long reply").await;
        let mut first = follow_on(&b, &chat, &reply, None).await;
        let seen = data_events(&mut first, 4).await;
        drop(first);
        let seen_payloads = payloads(&seen);
        assert_eq!(seen_payloads[0]["type"], "userMessage", "{seen_payloads:?}");
        assert_eq!(seen_payloads[0]["replyMessageId"], reply.as_str());
        let last_id = seen.iter().rev().find_map(|e| e.id.clone()).expect("an id");
        tokio::time::sleep(Duration::from_millis(300)).await;

        let rest = follow_on(&b, &chat, &reply, Some(&last_id)).await.collect().await;
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
        let whole = follow_on(&b, &chat, &reply, None).await.collect().await;
        assert_eq!(text_of(&payloads(&whole)), text);
        assert_eq!(chat.streamed_calls(), 1, "one provider call");
    }
}

needs_postgres_and_redis! {
    /// `chat.stop` through B ends the reply A writes: followers on either side get `done` with
    /// status `stopped` and the text so far, as saved.
    async fn a_reply_written_by_one_instance_is_stopped_through_the_other() {
        let (chat, b) = chat_pair().await;
        let reply = send_on(&chat.app, &chat, "keep streaming please").await;
        let mut on_b = follow_on(&b, &chat, &reply, None).await;
        let on_a = follow_on(&chat.app, &chat, &reply, None).await;
        data_events(&mut on_b, 3).await;
        let (status, body) = b
            .mutation_as(&chat.token, "chat.stop", Some(json!({ "messageId": reply })))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for stream in [on_a, on_b] {
            let events = stream.collect().await;
            let done = payloads(&events).last().cloned().expect("done");
            assert_eq!(done["type"], "done", "{events:?}");
            assert_eq!(done["message"]["status"], "stopped");
        }
        let messages = chat.messages().await;
        let saved = messages.iter().find(|m| m["id"] == reply.as_str()).expect("the reply");
        assert_eq!(saved["status"], "stopped");
        assert!(saved["content"].as_str().is_some_and(|text| !text.is_empty()));
    }
}

needs_postgres_and_redis! {
    /// One `clientMessageId` sent through both instances at once: both answer the same
    /// message and reply, and the provider is called once.
    async fn a_message_sent_through_both_instances_at_once_is_answered_once() {
        let (chat, b) = chat_pair().await;
        for _ in 0..3 {
            let input = chat.input("Hi there", &new_id());
            let (on_a, on_b) = tokio::join!(
                chat.app.mutation_as(&chat.token, "chat.send", Some(input.clone())),
                b.mutation_as(&chat.token, "chat.send", Some(input.clone())),
            );
            assert_eq!(on_a.0, StatusCode::OK, "{}", on_a.1);
            assert_eq!(on_b.0, StatusCode::OK, "{}", on_b.1);
            assert_eq!(data(&on_a.1), data(&on_b.1));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(chat.streamed_calls(), 3, "one provider call per message");
        assert_eq!(chat.messages().await.len(), 6);
    }
}

/// Makes a finished reply look like one a dead instance left `streaming` a minute ago.
async fn as_if_left_streaming(chat: &Chat, reply: &str) {
    use sea_orm::ConnectionTrait as _;
    let sql = format!(
        "UPDATE chat_messages SET status = 'streaming', error = NULL, \
         updated_at = now() - interval '1 minute' WHERE id = '{reply}'"
    );
    chat.app
        .db()
        .await
        .execute_unprepared(&sql)
        .await
        .expect("update the reply");
}

async fn status_of(chat: &Chat, reply: &str) -> Value {
    let messages = chat.messages().await;
    messages
        .iter()
        .find(|m| m["id"] == reply)
        .cloned()
        .expect("the reply is listed")
}

needs_postgres_and_redis! {
    /// A reply whose instance stopped mid-reply (no lease renewed) is marked `error`
    /// (`interrupted`) by a living instance, its text kept; a quiet reply whose lease is
    /// held is left alone.
    async fn a_reply_orphaned_by_a_dead_instance_is_marked_failed() {
        let (chat, _b) = chat_pair().await;
        let orphan = send_on(&chat.app, &chat, "Hi there").await;
        let quiet = send_on(&chat.app, &chat, "Hi again").await;
        for reply in [&orphan, &quiet] {
            let events = follow_on(&chat.app, &chat, reply, None).await.collect().await;
            assert_eq!(payloads(&events).last().expect("done")["type"], "done");
            as_if_left_streaming(&chat, reply).await;
        }
        let prefix = chat.app.state.config.redis.as_ref().expect("redis").key_prefix.clone();
        let mut redis = redis::Client::open(redis_url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to Redis");
        redis::cmd("SET")
            .arg(format!("{prefix}lease:{quiet}"))
            .arg(1)
            .arg("EX")
            .arg(60)
            .exec_async(&mut redis)
            .await
            .expect("hold a lease");

        until("the orphan is marked failed", || async {
            status_of(&chat, &orphan).await["status"] == "error"
        })
        .await;
        let failed = status_of(&chat, &orphan).await;
        assert_eq!(failed["error"]["reason"], "interrupted", "{failed}");
        assert_eq!(failed["content"], "Hello from Gemini.", "the text so far is kept");
        // Another round of both instances' sweeps (every 5 s) leaves the leased one alone.
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(status_of(&chat, &quiet).await["status"], "streaming");
    }
}
