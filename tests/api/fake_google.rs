//! A local stand-in for Google's OAuth token and revoke endpoints and the Gmail v1 API, with
//! the JSON shapes of Google's discovery document. Tests script it:
//!
//! - token endpoint: code `gmail:<email>` grants `gmail.readonly` with a refresh token,
//!   `nogmail:<email>` grants only `openid email`, anything else is `invalid_grant`;
//! - each mailbox (by email) holds messages, a history log and a `historyId`; changes made
//!   through [`FakeGoogle`] are recorded in the history like Gmail's;
//! - failures can be queued per mailbox (`fail_next`; 429s with `retry_after`), history can
//!   be expired once (`expire_history`) or for good (`break_history`), messages can be made
//!   to hang (`hold`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};

pub const PAGE_SIZE: usize = 2;

#[derive(Clone)]
struct Mail {
    thread_id: String,
    labels: Vec<String>,
    from: String,
    subject: String,
    text: String,
    html: bool,
}

#[derive(Default)]
struct Mailbox {
    messages: BTreeMap<String, Mail>,
    history_id: u64,
    /// (history id, record) in order.
    history: Vec<(u64, Value)>,
    /// Start ids below this answer 404 (history expired).
    history_floor: u64,
    fail_next: VecDeque<u16>,
    always_fail: bool,
    /// Sent as `Retry-After` with 429s.
    retry_after: Option<u64>,
    next_id: u64,
}

#[derive(Default)]
struct State {
    mailboxes: HashMap<String, Mailbox>,
    /// refresh token → email
    refresh_tokens: HashMap<String, String>,
    revoked: Vec<String>,
    token_forms: Vec<HashMap<String, String>>,
    /// Gmail calls made: (email, path with query).
    calls: Vec<(String, String)>,
    held: HashSet<String>,
    issued: u64,
}

#[derive(Clone)]
pub struct FakeGoogle {
    pub base_url: String,
    state: Arc<Mutex<State>>,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FakeGoogle {
    pub async fn start() -> Self {
        let state: Shared = Arc::default();
        let (token, revoke, profile, list, message, history) = (
            Arc::clone(&state),
            Arc::clone(&state),
            Arc::clone(&state),
            Arc::clone(&state),
            Arc::clone(&state),
            Arc::clone(&state),
        );
        let app = axum::Router::new()
            .route(
                "/token",
                post(move |body: String| token_endpoint(Arc::clone(&token), body)),
            )
            .route(
                "/revoke",
                post(move |body: String| revoke_endpoint(Arc::clone(&revoke), body)),
            )
            .route(
                "/gmail/v1/users/me/profile",
                get(move |headers: HeaderMap| profile_endpoint(Arc::clone(&profile), headers)),
            )
            .route(
                "/gmail/v1/users/me/messages",
                get(
                    move |headers: HeaderMap, query: Query<HashMap<String, String>>| {
                        list_endpoint(Arc::clone(&list), headers, query.0)
                    },
                ),
            )
            .route(
                "/gmail/v1/users/me/messages/{id}",
                get(move |headers: HeaderMap, id: Path<String>| {
                    message_endpoint(Arc::clone(&message), headers, id.0)
                }),
            )
            .route(
                "/gmail/v1/users/me/history",
                get(
                    move |headers: HeaderMap, query: Query<HashMap<String, String>>| {
                        history_endpoint(Arc::clone(&history), headers, query.0)
                    },
                ),
            );
        let addr = crate::helpers::serve_in_background(app).await;
        Self {
            base_url: format!("http://{addr}"),
            state,
        }
    }

    /// Points the server's Google settings at this fake.
    pub fn configure(&self, config: &mut alias_server::config::Config) {
        let google = &mut config.google;
        google.client_id = Some("client-id.apps.googleusercontent.com".to_owned());
        google.client_secret = Some("client-secret".to_owned());
        google.token_url = format!("{}/token", self.base_url);
        google.revoke_url = format!("{}/revoke", self.base_url);
        google.gmail_base_url = self.base_url.clone();
        config.jobs.poll_interval = Duration::from_millis(50);
        config.jobs.backoff_base = Duration::from_millis(100);
        config.jobs.backoff_max = Duration::from_millis(400);
        config.jobs.lease = Duration::from_secs(3);
    }

    /// Adds a message (recorded in the history); returns its id.
    pub fn add(&self, email: &str, thread: &str, from: &str, subject: &str, text: &str) -> String {
        self.add_with(email, thread, from, subject, text, false)
    }

    pub fn add_html(
        &self,
        email: &str,
        thread: &str,
        from: &str,
        subject: &str,
        html: &str,
    ) -> String {
        self.add_with(email, thread, from, subject, html, true)
    }

    fn add_with(
        &self,
        email: &str,
        thread: &str,
        from: &str,
        subject: &str,
        text: &str,
        html: bool,
    ) -> String {
        let mut state = lock(&self.state);
        let mailbox = state.mailboxes.entry(email.to_owned()).or_default();
        mailbox.next_id += 1;
        let id = format!("m{:04}{}", mailbox.next_id, email.len());
        mailbox.messages.insert(
            id.clone(),
            Mail {
                thread_id: thread.to_owned(),
                labels: vec!["INBOX".to_owned(), "UNREAD".to_owned()],
                from: from.to_owned(),
                subject: subject.to_owned(),
                text: text.to_owned(),
                html,
            },
        );
        let reference = json!({ "id": id, "threadId": thread, "labelIds": ["INBOX", "UNREAD"] });
        record(
            mailbox,
            json!({ "messagesAdded": [{ "message": reference }] }),
        );
        id
    }

    pub fn delete(&self, email: &str, id: &str) {
        let mut state = lock(&self.state);
        let mailbox = state.mailboxes.entry(email.to_owned()).or_default();
        if let Some(mail) = mailbox.messages.remove(id) {
            let reference =
                json!({ "id": id, "threadId": mail.thread_id, "labelIds": mail.labels });
            record(
                mailbox,
                json!({ "messagesDeleted": [{ "message": reference }] }),
            );
        }
    }

    /// Removes `UNREAD`, as reading the message in Gmail does.
    pub fn mark_read(&self, email: &str, id: &str) {
        self.relabel(email, id, &[], &["UNREAD"]);
    }

    /// Adds and removes labels (`TRASH`, `SPAM`…), recorded like Gmail's history: the change
    /// in the record's `labelIds`, the message without its labels.
    pub fn relabel(&self, email: &str, id: &str, add: &[&str], remove: &[&str]) {
        let mut state = lock(&self.state);
        let mailbox = state.mailboxes.entry(email.to_owned()).or_default();
        let Some(mail) = mailbox.messages.get_mut(id) else {
            return;
        };
        mail.labels
            .retain(|label| !remove.contains(&label.as_str()));
        mail.labels
            .extend(add.iter().map(|label| (*label).to_owned()));
        let reference = json!({ "id": id, "threadId": mail.thread_id });
        if !add.is_empty() {
            let change = json!({ "labelsAdded": [{ "message": reference, "labelIds": add }] });
            record(mailbox, change);
        }
        if !remove.is_empty() {
            let change = json!({ "labelsRemoved": [{ "message": reference, "labelIds": remove }] });
            record(mailbox, change);
        }
    }

    /// History before now is forgotten: `history.list` from an older id answers 404.
    pub fn expire_history(&self, email: &str) {
        let mut state = lock(&self.state);
        let mailbox = state.mailboxes.entry(email.to_owned()).or_default();
        mailbox.history_floor = mailbox.history_id + 1;
    }

    /// Every `history.list` answers 404, whatever the start id.
    pub fn break_history(&self, email: &str) {
        let mut state = lock(&self.state);
        state
            .mailboxes
            .entry(email.to_owned())
            .or_default()
            .history_floor = u64::MAX;
    }

    /// 429s for `email` carry `Retry-After: seconds`.
    pub fn retry_after(&self, email: &str, seconds: u64) {
        let mut state = lock(&self.state);
        state
            .mailboxes
            .entry(email.to_owned())
            .or_default()
            .retry_after = Some(seconds);
    }

    /// The next Gmail calls for `email` answer these statuses (`0`: answer normally).
    pub fn fail_next(&self, email: &str, statuses: &[u16]) {
        let mut state = lock(&self.state);
        let mailbox = state.mailboxes.entry(email.to_owned()).or_default();
        mailbox.fail_next.extend(statuses);
    }

    pub fn always_fail(&self, email: &str) {
        lock(&self.state)
            .mailboxes
            .entry(email.to_owned())
            .or_default()
            .always_fail = true;
    }

    /// `messages.get` of `id` hangs until `release`.
    pub fn hold(&self, id: &str) {
        lock(&self.state).held.insert(id.to_owned());
    }

    pub fn release(&self, id: &str) {
        lock(&self.state).held.remove(id);
    }

    /// Google forgets every refresh token of `email` (as when the user revokes access).
    pub fn revoke_all(&self, email: &str) {
        lock(&self.state)
            .refresh_tokens
            .retain(|_, owner| owner != email);
    }

    pub fn revoked(&self) -> Vec<String> {
        lock(&self.state).revoked.clone()
    }

    pub fn token_forms(&self) -> Vec<HashMap<String, String>> {
        lock(&self.state).token_forms.clone()
    }

    /// Refresh tokens issued so far.
    pub fn refresh_tokens(&self) -> Vec<String> {
        lock(&self.state).refresh_tokens.keys().cloned().collect()
    }

    /// Every Gmail call so far, in order: (email, path with query).
    pub fn all_calls(&self) -> Vec<(String, String)> {
        lock(&self.state).calls.clone()
    }

    pub fn calls(&self, email: &str) -> Vec<String> {
        lock(&self.state)
            .calls
            .iter()
            .filter(|(owner, _)| owner == email)
            .map(|(_, path)| path.clone())
            .collect()
    }
}

fn record(mailbox: &mut Mailbox, mut change: Value) {
    mailbox.history_id += 1;
    let id = mailbox.history_id;
    change["id"] = json!(id.to_string());
    let first = change
        .as_object()
        .and_then(|object| object.values().find_map(|value| value.get(0)))
        .map(|item| item["message"].clone())
        .unwrap_or(Value::Null);
    change["messages"] = json!([first]);
    mailbox.history.push((id, change));
}

fn google_error(status: u16, reason: &str, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({ "error": {
        "code": status,
        "message": message,
        "errors": [{ "message": message, "domain": "global", "reason": reason }],
        "status": code.canonical_reason().unwrap_or("ERROR").to_uppercase().replace(' ', "_"),
    }});
    (code, axum::Json(body)).into_response()
}

fn oauth_error(error: &str, description: &str) -> Response {
    let body = json!({ "error": error, "error_description": description });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

async fn token_endpoint(state: Shared, body: String) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let mut state = lock(&state);
    state.token_forms.push(form.clone());
    let get = |key: &str| form.get(key).cloned().unwrap_or_default();
    match get("grant_type").as_str() {
        "authorization_code" => {
            let code = get("code");
            let (email, scope) = if let Some(email) = code.strip_prefix("gmail:") {
                (
                    email,
                    "openid https://www.googleapis.com/auth/gmail.readonly https://www.googleapis.com/auth/userinfo.email",
                )
            } else if let Some(email) = code.strip_prefix("nogmail:") {
                (
                    email,
                    "openid https://www.googleapis.com/auth/userinfo.email",
                )
            } else {
                return oauth_error("invalid_grant", "Malformed auth code.");
            };
            state.issued += 1;
            let refresh_token = format!("1//refresh-{}-{}", state.issued, email.replace('@', "-"));
            state
                .refresh_tokens
                .insert(refresh_token.clone(), email.to_owned());
            axum::Json(json!({
                "access_token": format!("ya29.{email}"),
                "expires_in": 3599,
                "refresh_token": refresh_token,
                "scope": scope,
                "token_type": "Bearer",
                "id_token": "header.payload.signature",
            }))
            .into_response()
        }
        "refresh_token" => match state.refresh_tokens.get(&get("refresh_token")) {
            Some(email) => axum::Json(json!({
                "access_token": format!("ya29.{email}"),
                "expires_in": 3599,
                "scope": "https://www.googleapis.com/auth/gmail.readonly",
                "token_type": "Bearer",
            }))
            .into_response(),
            None => oauth_error("invalid_grant", "Token has been expired or revoked."),
        },
        _ => oauth_error("unsupported_grant_type", "Invalid grant_type."),
    }
}

async fn revoke_endpoint(state: Shared, body: String) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let token = form.get("token").cloned().unwrap_or_default();
    let mut state = lock(&state);
    state.revoked.push(token.clone());
    if state.refresh_tokens.remove(&token).is_some() {
        StatusCode::OK.into_response()
    } else {
        oauth_error("invalid_token", "Token expired or revoked")
    }
}

/// The mailbox the bearer token opens, or the failure to answer with.
fn authorize(state: &Shared, headers: &HeaderMap, path: String) -> Result<String, Box<Response>> {
    let email = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer ya29."))
        .map(str::to_owned)
        .ok_or_else(|| Box::new(google_error(401, "authError", "Invalid Credentials")))?;
    let mut state = lock(state);
    state.calls.push((email.clone(), path));
    let mailbox = state.mailboxes.entry(email.clone()).or_default();
    if mailbox.always_fail {
        return Err(Box::new(google_error(500, "backendError", "Backend Error")));
    }
    match mailbox.fail_next.pop_front() {
        Some(429) => {
            let mut response = google_error(429, "rateLimitExceeded", "Rate Limit Exceeded");
            if let Some(seconds) = mailbox.retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", seconds.to_string().parse().expect("header"));
            }
            Err(Box::new(response))
        }
        Some(401) => Err(Box::new(google_error(
            401,
            "authError",
            "Invalid Credentials",
        ))),
        Some(0) | None => Ok(email),
        Some(status) => Err(Box::new(google_error(
            status,
            "backendError",
            "Backend Error",
        ))),
    }
}

async fn profile_endpoint(state: Shared, headers: HeaderMap) -> Response {
    let email = match authorize(&state, &headers, "profile".to_owned()) {
        Ok(email) => email,
        Err(response) => return *response,
    };
    let mut state = lock(&state);
    let mailbox = state.mailboxes.entry(email.clone()).or_default();
    axum::Json(json!({
        "emailAddress": email,
        "messagesTotal": mailbox.messages.len(),
        "threadsTotal": mailbox.messages.len(),
        "historyId": mailbox.history_id.to_string(),
    }))
    .into_response()
}

async fn list_endpoint(
    state: Shared,
    headers: HeaderMap,
    query: HashMap<String, String>,
) -> Response {
    let page_token = query.get("pageToken").cloned();
    let path = format!(
        "messages?pageToken={}",
        page_token.clone().unwrap_or_default()
    );
    let email = match authorize(&state, &headers, path) {
        Ok(email) => email,
        Err(response) => return *response,
    };
    let state = lock(&state);
    let Some(mailbox) = state.mailboxes.get(&email) else {
        return axum::Json(json!({ "resultSizeEstimate": 0 })).into_response();
    };
    let offset: usize = page_token.and_then(|token| token.parse().ok()).unwrap_or(0);
    // Newest first, like Gmail.
    let ids: Vec<(&String, &Mail)> = mailbox.messages.iter().rev().collect();
    let page: Vec<Value> = ids
        .iter()
        .skip(offset)
        .take(PAGE_SIZE)
        .map(|(id, mail)| json!({ "id": id, "threadId": mail.thread_id }))
        .collect();
    let mut body = json!({ "messages": page, "resultSizeEstimate": ids.len() });
    if offset + PAGE_SIZE < ids.len() {
        body["nextPageToken"] = json!((offset + PAGE_SIZE).to_string());
    }
    axum::Json(body).into_response()
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::URL_SAFE.encode(text.as_bytes())
}

async fn message_endpoint(state: Shared, headers: HeaderMap, id: String) -> Response {
    let email = match authorize(&state, &headers, format!("messages/{id}")) {
        Ok(email) => email,
        Err(response) => return *response,
    };
    while lock(&state).held.contains(&id) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let state = lock(&state);
    let Some(mail) = state
        .mailboxes
        .get(&email)
        .and_then(|mailbox| mailbox.messages.get(&id))
    else {
        return google_error(404, "notFound", "Requested entity was not found.");
    };
    let body_part = if mail.html {
        json!({ "partId": "0", "mimeType": "text/html", "filename": "", "headers": [],
                "body": { "size": mail.text.len(), "data": b64(&mail.text) } })
    } else {
        json!({ "partId": "0", "mimeType": "text/plain", "filename": "", "headers": [],
                "body": { "size": mail.text.len(), "data": b64(&mail.text) } })
    };
    axum::Json(json!({
        "id": id,
        "threadId": mail.thread_id,
        "labelIds": mail.labels,
        "snippet": mail.text.chars().take(100).collect::<String>(),
        "historyId": "1",
        "internalDate": "1764633600000",
        "sizeEstimate": 1024,
        "payload": {
            "partId": "",
            "mimeType": "multipart/alternative",
            "filename": "",
            "headers": [
                { "name": "From", "value": mail.from },
                { "name": "To", "value": email },
                { "name": "Subject", "value": mail.subject },
                { "name": "Date", "value": "Tue, 2 Dec 2025 00:00:00 +0000" },
            ],
            "body": { "size": 0 },
            "parts": [body_part],
        },
    }))
    .into_response()
}

async fn history_endpoint(
    state: Shared,
    headers: HeaderMap,
    query: HashMap<String, String>,
) -> Response {
    let start: u64 = query
        .get("startHistoryId")
        .and_then(|id| id.parse().ok())
        .unwrap_or(0);
    let email = match authorize(&state, &headers, format!("history?startHistoryId={start}")) {
        Ok(email) => email,
        Err(response) => return *response,
    };
    let mut state = lock(&state);
    let mailbox = state.mailboxes.entry(email).or_default();
    if start < mailbox.history_floor {
        return google_error(404, "notFound", "Requested entity was not found.");
    }
    let records: Vec<Value> = mailbox
        .history
        .iter()
        .filter(|(id, _)| *id > start)
        .map(|(_, record)| record.clone())
        .collect();
    let mut body = json!({ "historyId": mailbox.history_id.to_string() });
    if !records.is_empty() {
        body["history"] = json!(records);
    }
    axum::Json(body).into_response()
}
