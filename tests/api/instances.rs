//! Several instances behind one address, the cases that look inside an instance: two servers
//! in this process on one fresh PostgreSQL database and one Redis (`ALIAS_TEST_REDIS_URL`, a
//! key prefix of their own per test). Redis failing mid-test (through a proxy the test cuts or
//! freezes) is answered SERVICE_UNAVAILABLE quickly, reported by `/ready`, and recovered from
//! without a restart; a quiet reply whose lease is held is not taken for an orphan. What two
//! real processes show over HTTP (limits, revocation, replies followed, stopped and orphaned
//! across instances) is in `instance_processes.rs`. Without both services these tests are
//! reported ignored.

use std::time::{Duration, Instant};

use alias_server::config::{Config, RedisConfig, Secret};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::{Chat, new_id, payloads};
use crate::helpers::{
    DbKind, TestApp, data, error_code, error_reason, test_redis_url, unique_email, until,
};
use crate::needs_postgres_and_redis;
use crate::tcp_proxy::TcpProxy;

const PASSWORD: &str = "correct horse battery";

/// `redis_url` through another address (a proxy the test can cut).
fn redis_url_via(addr: &str) -> String {
    let url = reqwest::Url::parse(&test_redis_url()).expect("ALIAS_TEST_REDIS_URL is a URL");
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
        url: Secret(url),
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
        config.redis = Some(shared_a(a_redis.unwrap_or_else(test_redis_url)));
        adjust_a(config);
    })
    .await;
    let b = a
        .spawn_beside(move |config| {
            config.redis = Some(shared_b(test_redis_url()));
            adjust(config);
        })
        .await;
    until_subscribed([&a, &b]).await;
    Pair { a, b }
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
    let url = reqwest::Url::parse(&test_redis_url()).expect("ALIAS_TEST_REDIS_URL is a URL");
    format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(6379)
    )
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
    /// A reply quiet for a minute whose lease is held (its instance lives, its provider is
    /// slow) is left `streaming` by the orphan sweep; one beside it without a lease, the
    /// control, is marked failed (a real instance killed mid-reply: `instance_processes.rs`).
    async fn a_quiet_reply_whose_lease_is_held_is_not_taken_for_an_orphan() {
        let shared = shared_redis();
        let chat = Chat::start_with(DbKind::Postgres, "gemini", move |config| {
            config.redis = Some(shared(test_redis_url()));
        })
        .await;
        let mut replies = Vec::new();
        for content in ["Hi there", "Hi again"] {
            let (status, body) = chat.send_message(&chat.input(content, &new_id())).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let reply = data(&body)["replyMessageId"].as_str().expect("reply").to_owned();
            let events = chat.follow(&reply, None).await.collect().await;
            assert_eq!(payloads(&events).last().expect("done")["type"], "done");
            as_if_left_streaming(&chat, &reply).await;
            replies.push(reply);
        }
        let (orphan, quiet) = (&replies[0], &replies[1]);
        let prefix = chat.app.state.config.redis.as_ref().expect("redis").key_prefix.clone();
        let mut redis = redis::Client::open(test_redis_url())
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
            status_of(&chat, orphan).await["status"] == "error"
        })
        .await;
        // Another round of the sweep (every 5 s) leaves the leased one alone.
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(status_of(&chat, quiet).await["status"], "streaming");
    }
}
