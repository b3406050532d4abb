//! Spawning servers and talking to them like a client would.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use alias_server::config::Config;
use alias_server::context::App;
use alias_server::rpc::{Router, RpcOptions, RpcService};
use alias_server::startup::Application;
use futures::StreamExt;
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Runs `$test` (an `async fn(TestApp)`) once per database: `$test::sqlite` and `$test::postgres`.
/// Without `ALIAS_TEST_POSTGRES_URL` (when the tests were built) the PostgreSQL variant is
/// ignored, so the run reports it skipped.
#[macro_export]
macro_rules! both_databases {
    ($test:ident) => {
        mod $test {
            #[tokio::test]
            async fn sqlite() {
                let app = $crate::helpers::TestApp::spawn($crate::helpers::DbKind::Sqlite).await;
                super::$test(app).await;
            }

            #[tokio::test]
            #[cfg_attr(
                not(alias_test_postgres),
                ignore = "ALIAS_TEST_POSTGRES_URL is not set"
            )]
            async fn postgres() {
                let app = $crate::helpers::TestApp::spawn($crate::helpers::DbKind::Postgres).await;
                super::$test(app).await;
            }
        }
    };
}

/// Like `both_databases!`, for a `$test` (an `async fn(DbKind)`) that spawns its own server
/// (with its own configuration).
#[macro_export]
macro_rules! each_database {
    ($test:ident) => {
        mod $test {
            #[tokio::test]
            async fn sqlite() {
                super::$test($crate::helpers::DbKind::Sqlite).await;
            }

            #[tokio::test]
            #[cfg_attr(
                not(alias_test_postgres),
                ignore = "ALIAS_TEST_POSTGRES_URL is not set"
            )]
            async fn postgres() {
                super::$test($crate::helpers::DbKind::Postgres).await;
            }
        }
    };
}

/// An `async fn` test needing PostgreSQL and Redis (several instances): without both
/// (`ALIAS_TEST_POSTGRES_URL`, `ALIAS_TEST_REDIS_URL` when the tests were built) it is
/// reported ignored.
#[macro_export]
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

/// The application, running in this process on its own port and database.
pub struct TestApp {
    pub client: TestClient,
    /// The running server's shared state (its database pool, say).
    pub state: App,
    pub db_kind: DbKind,
    pub database_url: String,
    pub data_dir: tempfile::TempDir,
    pub shutdown: CancellationToken,
    /// Where `/metrics` is served, when the test set `metrics_bind`.
    pub metrics_addr: Option<SocketAddr>,
    _database: Option<PostgresDatabase>,
}

impl TestApp {
    pub async fn spawn(db_kind: DbKind) -> Self {
        Self::spawn_with(db_kind, |_| {}).await
    }

    /// Like `spawn`, with a chance to adjust the configuration first.
    pub async fn spawn_with(db_kind: DbKind, adjust: impl FnOnce(&mut Config)) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let database = match db_kind {
            DbKind::Sqlite => None,
            DbKind::Postgres => Some(PostgresDatabase::create().await),
        };
        let data_path = data_dir.path().display().to_string();
        let database_url = database.as_ref().map(|db| db.url.clone());
        let mut config = Config::from_lookup(|name| match name {
            "ALIAS_BIND" => Some("127.0.0.1:0".to_owned()),
            "ALIAS_DATA_DIR" => Some(data_path.clone()),
            "DATABASE_URL" => database_url.clone(),
            "ALIAS_LOG" => Some("warn".to_owned()),
            _ => None,
        })
        .expect("test configuration is valid");
        adjust(&mut config);
        let database_url = config.database_url.clone();
        let app = Application::build(config)
            .await
            .expect("the application starts");
        let addr = app.local_addr().expect("bound address");
        let metrics_addr = app.metrics_addr();
        let shutdown = app.shutdown_token();
        let state = app.state();
        tokio::spawn(app.run_until_stopped());
        Self {
            client: TestClient::new(addr),
            state,
            db_kind,
            database_url,
            data_dir,
            shutdown,
            metrics_addr,
            _database: database,
        }
    }
}

impl TestApp {
    /// Another instance of the server on this one's database and data directory (so the
    /// same signing key), as after a restart or behind a load balancer.
    pub async fn spawn_beside(&self, adjust: impl FnOnce(&mut Config)) -> TestApp {
        let database_url = self.database_url.clone();
        let data_dir = self.data_dir.path().to_path_buf();
        // Sqlite: spawn_with creates no database of its own; the URL is replaced anyway.
        let mut app = TestApp::spawn_with(DbKind::Sqlite, move |config| {
            config.database_url = database_url;
            config.data_dir = data_dir;
            adjust(config);
        })
        .await;
        app.db_kind = self.db_kind;
        app
    }

    /// A connection of the test's own to the application's database, to check what is stored.
    pub async fn db(&self) -> sea_orm::DatabaseConnection {
        Database::connect(&self.database_url)
            .await
            .expect("connect to the test database")
    }

    /// Registers a fresh account and returns its access token.
    pub async fn new_user(&self) -> String {
        let session = self
            .register(&unique_email(), "correct horse battery")
            .await;
        session["accessToken"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Registers a fresh account and returns its `AuthSession`.
    pub async fn register(&self, email: &str, password: &str) -> Value {
        let input =
            serde_json::json!({ "email": email, "password": password, "name": "Test User" });
        let (status, body) = self.mutation("auth.register", Some(input)).await;
        assert_eq!(status, StatusCode::OK, "register {email}: {body}");
        body["result"]["data"].clone()
    }
}

impl std::ops::Deref for TestApp {
    type Target = TestClient;
    fn deref(&self) -> &TestClient {
        &self.client
    }
}

/// Serves a stand-in for another service (a provider, a key server) on a free local port.
pub async fn serve_in_background(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A bare RPC service over a router built in the test, for testing the protocol layer itself.
pub struct TestRpcServer {
    pub client: TestClient,
    pub shutdown: CancellationToken,
}

impl std::ops::Deref for TestRpcServer {
    type Target = TestClient;
    fn deref(&self) -> &TestClient {
        &self.client
    }
}

pub fn test_rpc_options() -> RpcOptions {
    RpcOptions {
        max_body_bytes: 4096,
        max_batch_size: 5,
        sse_ping_interval: Duration::from_millis(300),
        trust_proxy: false,
    }
}

pub async fn spawn_rpc<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    state: S,
    options: RpcOptions,
) -> TestRpcServer {
    let shutdown = CancellationToken::new();
    let service = RpcService::new(router, state, options, shutdown.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = service
        .into_axum()
        .into_make_service_with_connect_info::<SocketAddr>();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    TestRpcServer {
        client: TestClient::new(addr),
        shutdown,
    }
}

/// An HTTP client that speaks tRPC's wire format.
pub struct TestClient {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
}

impl TestClient {
    pub fn new(addr: SocketAddr) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        Self { addr, http }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    pub fn trpc_url(&self, path: &str, input: Option<&Value>) -> String {
        match input {
            None => self.url(&format!("/trpc/{path}")),
            Some(input) => self.url(&format!(
                "/trpc/{path}?input={}",
                encode(&input.to_string())
            )),
        }
    }

    /// A tRPC query: `GET /trpc/<path>?input=<json>`.
    pub async fn query(&self, path: &str, input: Option<Value>) -> (StatusCode, Value) {
        json_of(
            self.http
                .get(self.trpc_url(path, input.as_ref()))
                .send()
                .await,
        )
        .await
    }

    /// A tRPC mutation: `POST /trpc/<path>` with the input as JSON body.
    pub async fn mutation(&self, path: &str, input: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.http.post(self.trpc_url(path, None));
        if let Some(input) = input {
            request = request.json(&input);
        }
        json_of(request.send().await).await
    }

    /// A query as a signed-in user.
    pub async fn query_as(
        &self,
        token: &str,
        path: &str,
        input: Option<Value>,
    ) -> (StatusCode, Value) {
        let request = self
            .http
            .get(self.trpc_url(path, input.as_ref()))
            .bearer_auth(token);
        json_of(request.send().await).await
    }

    /// A mutation as a signed-in user.
    pub async fn mutation_as(
        &self,
        token: &str,
        path: &str,
        input: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.post(self.trpc_url(path, None)).bearer_auth(token);
        if let Some(input) = input {
            request = request.json(&input);
        }
        json_of(request.send().await).await
    }

    /// GET with a raw query string, for malformed inputs.
    pub async fn get_raw(&self, path_and_query: &str) -> (StatusCode, Value) {
        json_of(self.http.get(self.url(path_and_query)).send().await).await
    }

    /// POST with a raw body and content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let request = self
            .http
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body);
        json_of(request.send().await).await
    }

    /// Opens a subscription (`GET` with `Accept: text/event-stream`).
    pub async fn subscribe(
        &self,
        path: &str,
        input: Option<&Value>,
        last_event_id: Option<&str>,
    ) -> SseStream {
        open_subscription(self.http.get(self.trpc_url(path, input)), last_event_id).await
    }

    /// A subscription as a signed-in user.
    pub async fn subscribe_as(
        &self,
        token: &str,
        path: &str,
        input: Option<&Value>,
        last_event_id: Option<&str>,
    ) -> SseStream {
        let request = self.http.get(self.trpc_url(path, input)).bearer_auth(token);
        open_subscription(request, last_event_id).await
    }
}

async fn open_subscription(
    request: reqwest::RequestBuilder,
    last_event_id: Option<&str>,
) -> SseStream {
    let mut request = request.header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().await.expect("subscription request");
    SseStream::from_response(response)
}

async fn json_of(response: reqwest::Result<reqwest::Response>) -> (StatusCode, Value) {
    let response = response.expect("request reached the server");
    let status = response.status();
    let text = response.text().await.expect("response body");
    let json =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("response is not JSON: {text:?}"));
    (status, json)
}

pub fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The `error.data.code` of a single-call error response.
pub fn error_code(body: &Value) -> &str {
    body["error"]["data"]["code"]
        .as_str()
        .unwrap_or("<no error code>")
}

/// The `error.data.reason` of a single-call error response.
pub fn error_reason(body: &Value) -> &str {
    body["error"]["data"]["reason"]
        .as_str()
        .unwrap_or("<no reason>")
}

/// The `result.data` of a single-call success response.
pub fn data(body: &Value) -> &Value {
    &body["result"]["data"]
}

/// Polls `check` until it holds (at most 15 s, then the test fails naming `what`).
pub async fn until<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    until_within(Duration::from_secs(15), what, check).await;
}

/// Polls `check` every 50 ms until it holds (at most `limit`, then the test fails naming `what`).
pub async fn until_within<F, Fut>(limit: Duration, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = std::time::Instant::now() + limit;
    while !check().await {
        assert!(
            std::time::Instant::now() < give_up,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Redis of the tests that need one (`ALIAS_TEST_REDIS_URL`).
pub fn test_redis_url() -> String {
    std::env::var("ALIAS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A unique email per call, so tests never collide.
pub fn unique_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// Reads a `text/event-stream` response event by event.
pub struct SseStream {
    pub status: StatusCode,
    pub content_type: String,
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl SseStream {
    pub fn from_response(response: reqwest::Response) -> Self {
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Self {
            status: response.status(),
            content_type,
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event, or `None` when the server closed the stream. Fails the test after 10 s.
    pub async fn next(&mut self) -> Option<SseEvent> {
        tokio::time::timeout(Duration::from_secs(10), self.next_inner())
            .await
            .expect("an SSE event within 10 s")
    }

    async fn next_inner(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_event(&block) {
                    return Some(event);
                }
                continue;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Collects events until the stream closes.
    pub async fn collect(mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

fn parse_event(block: &str) -> Option<SseEvent> {
    let mut event = SseEvent {
        event: None,
        data: String::new(),
        id: None,
    };
    let mut seen = false;
    for line in block.lines() {
        let (field, value) = line
            .split_once(':')
            .map_or((line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
        match field {
            "event" => event.event = Some(value.to_owned()),
            "data" => event.data.push_str(value),
            "id" => event.id = Some(value.to_owned()),
            _ => continue,
        }
        seen = true;
    }
    seen.then_some(event)
}

/// A database of its own on the PostgreSQL server, dropped when the test ends (even on panic).
pub struct PostgresDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PostgresDatabase {
    pub async fn create() -> Self {
        let admin_url = std::env::var("ALIAS_TEST_POSTGRES_URL").expect("ALIAS_TEST_POSTGRES_URL");
        let name = format!("alias_test_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(&admin_url)
            .await
            .expect("connect to ALIAS_TEST_POSTGRES_URL");
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create test database");
        admin.close().await.ok();
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        Self {
            admin_url,
            name,
            url,
        }
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let admin = Database::connect(&admin_url).await.ok()?;
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}
