//! A local stand-in for the Gemini, OpenAI and Anthropic APIs, speaking their wire formats.
//! What it answers depends on the API key: `…valid…` works, `…rejected…` is refused (as each
//! provider refuses), `…forbidden…` gets 403, `…slow…` answers after 3 s, `…broken…` gets 500.
//!
//! Chat completions (streamed and whole) follow a script chosen by the last user message: see
//! `Reply`. Every chat request is recorded for tests to check the wire format, and streamed
//! replies still being sent are counted (`open_streams`), so tests see when one is dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alias_server::providers::AiProvider;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde_json::{Value, json};

/// One request the fake received: which provider's API and the key it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub provider: &'static str,
    pub api_key: String,
}

pub struct FakeProviders {
    pub base_url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    requests: Requests,
    open_streams: Arc<AtomicUsize>,
    reported: Reported,
}

impl FakeProviders {
    pub async fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let requests = Requests::default();
        let open_streams = Arc::new(AtomicUsize::new(0));
        let reported = Reported::default();
        let (gemini, openai, anthropic) = (Arc::clone(&seen), Arc::clone(&seen), Arc::clone(&seen));
        let app = axum::Router::new()
            .route(
                "/v1beta/models",
                get(move |headers: HeaderMap| gemini_models(headers, gemini)),
            )
            .route(
                "/v1/models",
                get(move |headers: HeaderMap| {
                    let seen = if headers.contains_key("x-api-key") {
                        Arc::clone(&anthropic)
                    } else {
                        Arc::clone(&openai)
                    };
                    openai_or_anthropic_models(headers, seen)
                }),
            )
            .merge(chat_routes(&requests, &open_streams, &reported));
        let addr = crate::helpers::serve_in_background(app).await;
        Self {
            base_url: format!("http://{addr}"),
            seen,
            requests,
            open_streams,
            reported,
        }
    }

    /// Streamed replies whose body is still being sent: one the server stops reading is
    /// dropped (and no longer counted) at the next frame it cannot send.
    pub fn open_streams(&self) -> usize {
        self.open_streams.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .map(|seen| seen.clone())
            .unwrap_or_default()
    }
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn verdict(api_key: &str) -> Option<StatusCode> {
    if api_key.contains("slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if api_key.contains("rejected") {
        Some(StatusCode::UNAUTHORIZED)
    } else if api_key.contains("forbidden") {
        Some(StatusCode::FORBIDDEN)
    } else if api_key.contains("broken") {
        Some(StatusCode::INTERNAL_SERVER_ERROR)
    } else {
        None
    }
}

async fn gemini_models(headers: HeaderMap, seen: Arc<Mutex<Vec<Seen>>>) -> Response {
    let api_key = header(&headers, "x-goog-api-key");
    record(&seen, "gemini", &api_key);
    match verdict(&api_key).await {
        Some(StatusCode::UNAUTHORIZED) => gemini_invalid_key(),
        Some(status) => status.into_response(),
        None => {
            axum::Json(json!({ "models": [{ "name": "models/gemini-2.5-flash" }] })).into_response()
        }
    }
}

async fn openai_or_anthropic_models(headers: HeaderMap, seen: Arc<Mutex<Vec<Seen>>>) -> Response {
    let (provider, api_key) = if headers.contains_key("x-api-key") {
        if header(&headers, "anthropic-version").is_empty() {
            return StatusCode::BAD_REQUEST.into_response();
        }
        ("anthropic", header(&headers, "x-api-key"))
    } else {
        let bearer = header(&headers, "authorization");
        (
            "openai",
            bearer
                .strip_prefix("Bearer ")
                .unwrap_or_default()
                .to_owned(),
        )
    };
    record(&seen, provider, &api_key);
    match verdict(&api_key).await {
        Some(status) => (
            status,
            axum::Json(json!({ "error": { "message": "invalid key" } })),
        )
            .into_response(),
        None => axum::Json(json!({ "data": [{ "id": "model-1" }] })).into_response(),
    }
}

fn record(seen: &Mutex<Vec<Seen>>, provider: &'static str, api_key: &str) {
    if let Ok(mut seen) = seen.lock() {
        seen.push(Seen {
            provider,
            api_key: api_key.to_owned(),
        });
    }
}

/// Gemini refuses a bad key with 400 INVALID_ARGUMENT, not 401.
fn gemini_invalid_key() -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
        } })),
    )
        .into_response()
}

/// One chat request the fake received: which API, where (path and query), the key it carried
/// and its JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatCall {
    pub provider: AiProvider,
    pub path: String,
    pub api_key: String,
    pub body: Value,
}

type Requests = Arc<Mutex<Vec<ChatCall>>>;

/// The token usage one streamed reply reported, in its provider's own fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportedUsage {
    pub provider: AiProvider,
    pub input_tokens: u32,
    pub output_tokens: u32,
}

type Reported = Arc<Mutex<Vec<ReportedUsage>>>;

impl FakeProviders {
    /// Every chat request so far, in order.
    pub fn requests(&self) -> Vec<ChatCall> {
        self.requests
            .lock()
            .map(|requests| requests.clone())
            .unwrap_or_default()
    }

    /// Streamed chat requests so far (titles are not streamed).
    pub fn streamed_calls(&self) -> usize {
        self.requests()
            .iter()
            .filter(|call| {
                call.body["stream"] == true || call.path.contains("streamGenerateContent")
            })
            .count()
    }

    /// The usage of every streamed reply sent whole so far (not of titles), in order.
    pub fn reported_usage(&self) -> Vec<ReportedUsage> {
        self.reported
            .lock()
            .map(|reported| reported.clone())
            .unwrap_or_default()
    }
}

/// What a whole (non-streamed) reply says: the app asks for those only for titles.
pub const TITLE: &str = "Test Chat Title";
/// The input and output tokens a whole reply (a title) reports.
pub const TITLE_USAGE: (u32, u32) = (12, 3);

fn chat_routes(
    requests: &Requests,
    open_streams: &Arc<AtomicUsize>,
    reported: &Reported,
) -> axum::Router {
    let route = |provider: AiProvider| {
        let requests = Arc::clone(requests);
        let open_streams = Arc::clone(open_streams);
        let reported = Arc::clone(reported);
        post(
            move |uri: Uri, headers: HeaderMap, body: axum::Json<Value>| {
                let call = Call {
                    provider,
                    uri,
                    api_key: chat_key(provider, &headers),
                    body: body.0,
                };
                chat(call, headers, requests, open_streams, Arc::clone(&reported))
            },
        )
    };
    axum::Router::new()
        .route("/v1beta/models/{model_action}", route(AiProvider::Gemini))
        .route("/v1/chat/completions", route(AiProvider::Openai))
        .route("/v1/messages", route(AiProvider::Anthropic))
        // Providers take requests of 20 MB and more (inline images and PDFs); axum's default
        // is 2 MB.
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
}

/// A chat request as the fake's routes received it.
struct Call {
    provider: AiProvider,
    uri: Uri,
    api_key: String,
    body: Value,
}

async fn chat(
    call: Call,
    headers: HeaderMap,
    requests: Requests,
    open_streams: Arc<AtomicUsize>,
    reported: Reported,
) -> Response {
    let Call {
        provider,
        ref uri,
        ref api_key,
        ref body,
    } = call;
    if let Ok(mut requests) = requests.lock() {
        requests.push(ChatCall {
            provider,
            path: uri
                .path_and_query()
                .map(ToString::to_string)
                .unwrap_or_default(),
            api_key: api_key.clone(),
            body: body.clone(),
        });
    }
    if provider == AiProvider::Anthropic && header(&headers, "anthropic-version").is_empty() {
        return StatusCode::BAD_REQUEST.into_response();
    }
    match verdict(api_key).await {
        Some(StatusCode::UNAUTHORIZED) if provider == AiProvider::Gemini => gemini_invalid_key(),
        Some(status) => (
            status,
            axum::Json(json!({ "error": { "message": "invalid key" } })),
        )
            .into_response(),
        None => chat_reply(&call, open_streams, &reported).await,
    }
}

fn chat_key(provider: AiProvider, headers: &HeaderMap) -> String {
    match provider {
        AiProvider::Gemini => header(headers, "x-goog-api-key"),
        AiProvider::Openai => header(headers, "authorization")
            .strip_prefix("Bearer ")
            .unwrap_or_default()
            .to_owned(),
        AiProvider::Anthropic => header(headers, "x-api-key"),
    }
}

async fn chat_reply(call: &Call, open_streams: Arc<AtomicUsize>, reported: &Reported) -> Response {
    let Call {
        provider,
        uri,
        api_key,
        body,
    } = call;
    let provider = *provider;
    let streaming = match provider {
        AiProvider::Gemini => uri.path().ends_with(":streamGenerateContent"),
        AiProvider::Openai | AiProvider::Anthropic => body["stream"] == true,
    };
    if !streaming {
        // A title for a conversation that asked for a slow one takes a minute.
        if body.to_string().contains("slow title") {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        return axum::Json(whole_reply(provider, TITLE)).into_response();
    }
    // Without `alt=sse` Gemini streams a JSON array instead, which nothing here speaks.
    if provider == AiProvider::Gemini && uri.query() != Some("alt=sse") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let said = LastSaid::of(provider, body);
    if said.text.contains("rate limit") {
        return rate_limited(provider);
    }
    if said.text.contains("overloaded") {
        return overloaded(provider);
    }
    if said.text.contains("slow start") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let reports = provider != AiProvider::Openai || body["stream_options"]["include_usage"] == true;
    let reply = Reply::to(provider, &said, api_key);
    let usage = Usage::asked(&said.text);
    if reports
        && matches!(reply, Reply::Words { .. } | Reply::ToolCall { .. })
        && let Ok(mut reported) = reported.lock()
    {
        reported.push(ReportedUsage {
            provider,
            input_tokens: usage.input,
            output_tokens: usage.output,
        });
    }
    sse_response(
        frames(provider, &reply, reports.then_some(usage)),
        open_streams,
    )
}

/// The tokens a streamed reply reports: 12 in and 5 out, or as the last user message asks
/// with `[usage IN OUT]` (e.g. "[usage 1000 250]").
#[derive(Debug, Clone, Copy)]
struct Usage {
    input: u32,
    output: u32,
}

impl Usage {
    fn asked(text: &str) -> Self {
        let asked = text.split_once("[usage ").and_then(|(_, rest)| {
            let (numbers, _) = rest.split_once(']')?;
            let mut numbers = numbers.split_whitespace().map(str::parse::<u32>);
            Some(Self {
                input: numbers.next()?.ok()?,
                output: numbers.next()?.ok()?,
            })
        });
        asked.unwrap_or(Self {
            input: 12,
            output: 5,
        })
    }
}

/// The end of the conversation in a request: the last user text, and whether a tool's result
/// came after it.
struct LastSaid {
    text: String,
    tool_answered: bool,
    /// Tool results after the last user text.
    tool_results: usize,
}

impl LastSaid {
    fn of(provider: AiProvider, body: &Value) -> Self {
        let mut said = Self {
            text: String::new(),
            tool_answered: false,
            tool_results: 0,
        };
        let (messages, content) = match provider {
            AiProvider::Gemini => ("contents", "parts"),
            AiProvider::Openai | AiProvider::Anthropic => ("messages", "content"),
        };
        for message in body[messages].as_array().into_iter().flatten() {
            match (message["role"].as_str(), &message[content]) {
                (Some("tool"), _) => said.answered(),
                (Some("user"), Value::String(text)) => said.user(text),
                (Some("user"), Value::Array(parts)) => {
                    parts.iter().for_each(|part| said.part(part))
                }
                _ => {}
            }
        }
        said
    }

    fn user(&mut self, text: &str) {
        text.clone_into(&mut self.text);
        self.tool_answered = false;
        self.tool_results = 0;
    }

    fn answered(&mut self) {
        self.tool_answered = true;
        self.tool_results += 1;
    }

    /// A Gemini part or an OpenAI or Anthropic content block.
    fn part(&mut self, part: &Value) {
        if let Some(text) = part["text"].as_str() {
            self.user(text);
        } else if part.get("functionResponse").is_some() || part["type"] == "tool_result" {
            self.answered();
        }
    }
}

/// The scripted replies, by the last user message: "use a tool" calls `get_current_time` and,
/// given its result, says "The time is known."; "fail midway" breaks after two words; "error
/// event" says two words, then reports an error (in the provider's own error event) quoting
/// the request's API key; "long reply" is 50 words at 50 ms each; "keep streaming" is a word
/// every 50 ms for a minute; "slow start" waits 3 s before answering; "rate limit" is a 429
/// with Retry-After: 7; "overloaded" is a 503 (Anthropic: 529) with Retry-After: 11; "slow
/// title" makes the title (a whole reply) take a minute; anything else is "Hello from
/// <provider>." at 20 ms a word; "check my email" calls `search_email` for "board deck", then
/// `read_email_thread` of thread `t9`, then says "Dana says the deck is ready."; "mail from
/// ann" calls `search_email` with only `from: "ANN"` and `after: 2025-12-01` ("old mail from
/// ann": `before` it), then says hello.
enum Reply {
    Words {
        words: Vec<String>,
        pause: Duration,
    },
    ToolCall {
        name: &'static str,
        arguments: Value,
    },
    FailMidway,
    ErrorEvent {
        message: String,
    },
}

impl Reply {
    fn to(provider: AiProvider, said: &LastSaid, api_key: &str) -> Self {
        let words = |text: &str, millis| Self::Words {
            words: words(text),
            pause: Duration::from_millis(millis),
        };
        if said.text.contains("fail midway") {
            Self::FailMidway
        } else if said.text.contains("error event") {
            Self::ErrorEvent {
                message: format!("Quota check failed for API key {api_key}; contact support"),
            }
        } else if said.text.contains("keep streaming") {
            let text: Vec<String> = (1..=1200).map(|n| format!("word{n}")).collect();
            words(&text.join(" "), 50)
        } else if said.text.contains("use a tool") && !said.tool_answered {
            Self::ToolCall {
                name: "get_current_time",
                arguments: json!({}),
            }
        } else if said.text.contains("check my email") && said.tool_results < 2 {
            let (name, arguments) = if said.tool_results == 0 {
                (
                    "search_email",
                    json!({ "query": "board deck", "from": "bob" }),
                )
            } else {
                ("read_email_thread", json!({ "threadId": "t9" }))
            };
            Self::ToolCall { name, arguments }
        } else if said.text.contains("check my email") {
            words("Dana says the deck is ready.", 20)
        } else if said.text.contains("mail from ann") && said.tool_results == 0 {
            // Filters alone, no words: sender (any case) and dates.
            let arguments = if said.text.contains("old mail") {
                json!({ "from": "ANN", "before": "2025-12-01" })
            } else {
                json!({ "from": "ANN", "after": "2025-12-01" })
            };
            Self::ToolCall {
                name: "search_email",
                arguments,
            }
        } else if said.text.contains("use a tool") {
            words("The time is known.", 20)
        } else if said.text.contains("long reply") {
            let text: Vec<String> = (1..=50).map(|n| format!("word{n}")).collect();
            words(&text.join(" "), 50)
        } else {
            words(&format!("Hello from {}.", provider.display_name()), 20)
        }
    }
}

/// "Hello from X." as "Hello", " from", " X.": each piece one event.
fn words(text: &str) -> Vec<String> {
    text.split(' ')
        .enumerate()
        .map(|(i, word)| {
            if i == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            }
        })
        .collect()
}

/// One piece of a streamed body, sent after a pause; `None` cuts the connection.
struct Frame {
    pause: Duration,
    text: Option<String>,
}

fn now(text: String) -> Frame {
    Frame {
        pause: Duration::ZERO,
        text: Some(text),
    }
}

/// Counts a streamed reply as open until its body is dropped (sent whole, or cut).
struct OpenStream(Arc<AtomicUsize>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn sse_response(frames: Vec<Frame>, open_streams: Arc<AtomicUsize>) -> Response {
    open_streams.fetch_add(1, Ordering::SeqCst);
    let open = OpenStream(open_streams);
    let body = futures::stream::iter(frames).then(move |frame| {
        let _counted = &open;
        async move {
            tokio::time::sleep(frame.pause).await;
            frame
                .text
                .map(Bytes::from)
                .ok_or_else(|| std::io::Error::other("cut off"))
        }
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(body),
    )
        .into_response()
}

const TIME_CALL_ID: &str = "call_fake_time";

/// `usage`: what the reply reports (`None`: OpenAI asked without `include_usage`).
fn frames(provider: AiProvider, reply: &Reply, usage: Option<Usage>) -> Vec<Frame> {
    let reported = usage.unwrap_or(Usage {
        input: 0,
        output: 0,
    });
    match provider {
        AiProvider::Gemini => gemini_frames(reply, reported),
        AiProvider::Openai => openai_frames(reply, usage),
        AiProvider::Anthropic => anthropic_frames(reply, reported),
    }
}

/// The words, each after its pause, in events `event` makes; then the end (or the break).
fn word_frames(reply: &Reply, event: impl Fn(&str) -> String) -> Vec<Frame> {
    match reply {
        Reply::Words { words, pause } => words
            .iter()
            .map(|word| Frame {
                pause: *pause,
                text: Some(event(word)),
            })
            .collect(),
        Reply::FailMidway | Reply::ErrorEvent { .. } => words("Hello from")
            .iter()
            .map(|word| now(event(word)))
            .collect(),
        Reply::ToolCall { .. } => Vec::new(),
    }
}

pub const GEMINI_THOUGHT_SIGNATURE: &str = "c2lnbmF0dXJlLW9mLWEtdGhvdWdodA==";

/// As Gemini streams: `usageMetadata` in every chunk, counted so far (the prompt whole, the
/// candidates growing), so only the last one is the reply's.
fn gemini_frames(reply: &Reply, reported: Usage) -> Vec<Frame> {
    let data = |chunk: Value| now(format!("data: {chunk}\r\n\r\n"));
    let so_far = |output: u32| json!({ "promptTokenCount": reported.input, "candidatesTokenCount": output, "totalTokenCount": reported.input + output });
    let written = std::cell::Cell::new(0u32);
    let text = |word: &str| {
        written.set((written.get() + 1).min(reported.output));
        let chunk = json!({
            "candidates": [{ "content": { "role": "model", "parts": [{ "text": word }] }, "index": 0 }],
            "usageMetadata": so_far(written.get()),
        });
        format!("data: {chunk}\r\n\r\n")
    };
    let usage = so_far(reported.output);
    let last_parts = match reply {
        // As Gemini 3 sends it: the signature must come back on the call in the next request.
        Reply::ToolCall { name, arguments } => {
            json!([{ "functionCall": { "name": name, "args": arguments }, "thoughtSignature": GEMINI_THOUGHT_SIGNATURE }])
        }
        Reply::Words { .. } | Reply::FailMidway | Reply::ErrorEvent { .. } => {
            json!([{ "text": "" }])
        }
    };
    let mut frames = word_frames(reply, text);
    match reply {
        Reply::FailMidway => {
            frames.extend([now("data: {\r\n\r\n".to_owned()), cut()]);
            return frames;
        }
        Reply::ErrorEvent { message } => {
            let error =
                json!({ "error": { "code": 500, "message": message, "status": "INTERNAL" } });
            frames.push(data(error));
            return frames;
        }
        Reply::Words { .. } | Reply::ToolCall { .. } => {}
    }
    frames.push(data(json!({
        "candidates": [{ "content": { "role": "model", "parts": last_parts }, "finishReason": "STOP", "index": 0 }],
        "usageMetadata": usage,
    })));
    frames
}

fn openai_frames(reply: &Reply, usage: Option<Usage>) -> Vec<Frame> {
    let chunk = |delta: Value, finish: Option<&str>| {
        json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "model": "gpt-4.1-mini",
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        })
    };
    let data = |chunk: Value| now(format!("data: {chunk}\n\n"));
    let mut frames = vec![data(chunk(
        json!({ "role": "assistant", "content": "" }),
        None,
    ))];
    frames.extend(word_frames(reply, |word| {
        format!("data: {}\n\n", chunk(json!({ "content": word }), None))
    }));
    let finish = match reply {
        Reply::FailMidway => {
            frames.extend([now("data: {\n\n".to_owned()), cut()]);
            return frames;
        }
        Reply::ErrorEvent { message } => {
            let error =
                json!({ "error": { "message": message, "type": "server_error", "code": null } });
            frames.push(data(error));
            return frames;
        }
        Reply::ToolCall { name, arguments } => {
            let call = |function: Value| json!({ "tool_calls": [{ "index": 0, "id": TIME_CALL_ID, "type": "function", "function": function }] });
            frames.push(data(chunk(
                call(json!({ "name": name, "arguments": "" })),
                None,
            )));
            frames.push(data(chunk(
                json!({ "tool_calls": [{ "index": 0, "function": { "arguments": arguments.to_string() } }] }),
                None,
            )));
            "tool_calls"
        }
        Reply::Words { .. } => "stop",
    };
    frames.push(data(chunk(json!({}), Some(finish))));
    if let Some(usage) = usage {
        frames.push(data(json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": {
                "prompt_tokens": usage.input,
                "completion_tokens": usage.output,
                "total_tokens": usage.input + usage.output,
                "prompt_tokens_details": { "cached_tokens": 0 },
                "completion_tokens_details": { "reasoning_tokens": 0 },
            },
        })));
    }
    frames.push(now("data: [DONE]\n\n".to_owned()));
    frames
}

/// As Anthropic streams: the input tokens in `message_start` (with the first output token),
/// the output tokens so far in `message_delta`.
fn anthropic_frames(reply: &Reply, reported: Usage) -> Vec<Frame> {
    let event = |data: Value| {
        let name = data["type"].as_str().unwrap_or_default().to_owned();
        format!("event: {name}\ndata: {data}\n\n")
    };
    let mut frames = vec![now(event(json!({
        "type": "message_start",
        "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "content": [],
            "model": "claude-sonnet-4-5", "stop_reason": null, "stop_sequence": null,
            "usage": {
                "input_tokens": reported.input,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": reported.output.min(1),
            },
        },
    })))];
    let block = match reply {
        Reply::ToolCall { name, .. } => {
            json!({ "type": "tool_use", "id": TIME_CALL_ID, "name": name, "input": {} })
        }
        Reply::Words { .. } | Reply::FailMidway | Reply::ErrorEvent { .. } => {
            json!({ "type": "text", "text": "" })
        }
    };
    frames.push(now(event(
        json!({ "type": "content_block_start", "index": 0, "content_block": block }),
    )));
    frames.push(now(event(json!({ "type": "ping" }))));
    frames.extend(word_frames(reply, |word| {
        event(json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": word } }))
    }));
    let stop_reason = match reply {
        Reply::FailMidway => {
            let error = json!({ "type": "error", "error": { "type": "api_error", "message": "Internal server error" } });
            frames.push(now(event(error)));
            return frames;
        }
        Reply::ErrorEvent { message } => {
            let error =
                json!({ "type": "error", "error": { "type": "api_error", "message": message } });
            frames.push(now(event(error)));
            return frames;
        }
        Reply::ToolCall { arguments, .. } => {
            for partial_json in [String::new(), arguments.to_string()] {
                let delta = json!({ "type": "input_json_delta", "partial_json": partial_json });
                frames.push(now(event(
                    json!({ "type": "content_block_delta", "index": 0, "delta": delta }),
                )));
            }
            "tool_use"
        }
        Reply::Words { .. } => "end_turn",
    };
    frames.extend([
        now(event(json!({ "type": "content_block_stop", "index": 0 }))),
        now(event(json!({
            "type": "message_delta",
            "delta": { "stop_reason": stop_reason, "stop_sequence": null },
            "usage": { "output_tokens": reported.output },
        }))),
        now(event(json!({ "type": "message_stop" }))),
    ]);
    frames
}

fn cut() -> Frame {
    Frame {
        pause: Duration::ZERO,
        text: None,
    }
}

fn whole_reply(provider: AiProvider, text: &str) -> Value {
    match provider {
        AiProvider::Gemini => json!({
            "candidates": [{ "content": { "role": "model", "parts": [{ "text": text }] }, "finishReason": "STOP", "index": 0 }],
            "usageMetadata": { "promptTokenCount": TITLE_USAGE.0, "candidatesTokenCount": TITLE_USAGE.1, "totalTokenCount": TITLE_USAGE.0 + TITLE_USAGE.1 },
        }),
        AiProvider::Openai => json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": "gpt-4.1-mini",
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": "stop" }],
            "usage": { "prompt_tokens": TITLE_USAGE.0, "completion_tokens": TITLE_USAGE.1, "total_tokens": TITLE_USAGE.0 + TITLE_USAGE.1 },
        }),
        AiProvider::Anthropic => json!({
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [{ "type": "text", "text": text }],
            "stop_reason": "end_turn",
            "usage": { "input_tokens": TITLE_USAGE.0, "output_tokens": TITLE_USAGE.1 },
        }),
    }
}

fn overloaded(provider: AiProvider) -> Response {
    let (status, body) = match provider {
        AiProvider::Anthropic => (
            StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            json!({ "type": "error", "error": { "type": "overloaded_error", "message": "Overloaded" } }),
        ),
        AiProvider::Gemini | AiProvider::Openai => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": { "code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE" } }),
        ),
    };
    (status, [(header::RETRY_AFTER, "11")], axum::Json(body)).into_response()
}

fn rate_limited(provider: AiProvider) -> Response {
    let body = match provider {
        AiProvider::Gemini => {
            json!({ "error": { "code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED" } })
        }
        AiProvider::Openai => {
            json!({ "error": { "message": "Rate limit reached for requests", "type": "requests", "code": "rate_limit_exceeded" } })
        }
        AiProvider::Anthropic => {
            json!({ "type": "error", "error": { "type": "rate_limit_error", "message": "Number of requests has exceeded your rate limit." } })
        }
    };
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, "7")],
        axum::Json(body),
    )
        .into_response()
}

/// The server's provider clients against this fake: the wire formats agree, and each script
/// ends as the app will see it.
mod tests {
    use alias_server::config::AiConfig;
    use alias_server::providers::{
        ChatRequest, EventStream, ProviderError, StreamEvent, ToolCallRequest, ToolSpec, Turn,
        Upstream, complete_chat, stream_chat,
    };
    use futures::future::join_all;

    use super::*;

    const KEY: &str = "test-valid-key";

    struct Client {
        http: reqwest::Client,
        config: AiConfig,
    }

    impl Client {
        fn new(providers: &FakeProviders) -> Self {
            let base_url = providers.base_url.clone();
            Self {
                http: reqwest::Client::new(),
                config: AiConfig {
                    gemini_base_url: base_url.clone(),
                    openai_base_url: base_url.clone(),
                    anthropic_base_url: base_url,
                    validate_timeout: Duration::from_secs(5),
                    first_byte_timeout: Duration::from_secs(5),
                    stream_idle_timeout: Duration::from_secs(5),
                },
            }
        }

        fn upstream<'a>(&'a self, provider: AiProvider, api_key: &'a str) -> Upstream<'a> {
            Upstream {
                http: &self.http,
                config: &self.config,
                provider,
                api_key,
            }
        }

        async fn stream(
            &self,
            provider: AiProvider,
            request: &ChatRequest,
        ) -> Result<Vec<Result<StreamEvent, ProviderError>>, ProviderError> {
            let stream: EventStream = stream_chat(&self.upstream(provider, KEY), request).await?;
            Ok(stream.collect().await)
        }
    }

    fn request(provider: AiProvider, turns: Vec<Turn>) -> ChatRequest {
        ChatRequest {
            model: provider.default_model().to_owned(),
            system: "Be brief.".to_owned(),
            turns,
            temperature: 0.2,
            max_tokens: 256,
            tools: vec![ToolSpec {
                name: "get_current_time",
                description: "The current time.",
                parameters: json!({ "type": "object", "properties": {} }),
            }],
        }
    }

    fn saying(provider: AiProvider, text: &str) -> ChatRequest {
        request(provider, vec![Turn::User(text.to_owned())])
    }

    fn text_of(events: &[Result<StreamEvent, ProviderError>]) -> String {
        events
            .iter()
            .filter_map(|event| match event {
                Ok(StreamEvent::Text(text)) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn each_provider_streams_its_greeting_word_by_word() {
        let providers = FakeProviders::start().await;
        let client = Client::new(&providers);
        for provider in AiProvider::ALL {
            let events = client
                .stream(provider, &saying(provider, "Hi"))
                .await
                .expect("a stream");
            let greeting = format!("Hello from {}.", provider.display_name());
            assert_eq!(text_of(&events), greeting);
            assert_eq!(
                events
                    .iter()
                    .filter(|e| matches!(e, Ok(StreamEvent::Text(_))))
                    .count(),
                3
            );
            assert!(events.contains(&Ok(StreamEvent::Usage {
                input_tokens: 12,
                output_tokens: 5
            })));
            assert!(matches!(
                events.last(),
                Some(Ok(StreamEvent::Finished { .. }))
            ));
        }
        let requests = providers.requests();
        let paths: Vec<(AiProvider, &str)> = requests
            .iter()
            .map(|request| (request.provider, request.path.as_str()))
            .collect();
        assert_eq!(
            paths,
            vec![
                (
                    AiProvider::Gemini,
                    "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
                ),
                (AiProvider::Openai, "/v1/chat/completions"),
                (AiProvider::Anthropic, "/v1/messages"),
            ]
        );
        assert!(requests.iter().all(|request| request.api_key == KEY));
        assert_eq!(requests[1].body["stream"], true);
        assert_eq!(requests[2].body["model"], "claude-sonnet-4-5");
        assert!(providers.seen().is_empty(), "chat calls are not key checks");
    }

    /// Usage in each provider's own fields (Gemini's in every chunk, counted so far; OpenAI's
    /// in a last chunk without choices; Anthropic's split over `message_start` and
    /// `message_delta`) reaches the server as one total per reply.
    #[tokio::test]
    async fn each_provider_reports_the_usage_asked_for() {
        let providers = FakeProviders::start().await;
        let client = Client::new(&providers);
        for provider in AiProvider::ALL {
            let events = client
                .stream(provider, &saying(provider, "Hi [usage 1234 56]"))
                .await
                .expect("a stream");
            let usage: Vec<&StreamEvent> = events
                .iter()
                .filter_map(|event| match event {
                    Ok(usage @ StreamEvent::Usage { .. }) => Some(usage),
                    _ => None,
                })
                .collect();
            assert_eq!(
                usage,
                vec![&StreamEvent::Usage {
                    input_tokens: 1234,
                    output_tokens: 56
                }],
                "{provider:?}"
            );
        }
        let reported: Vec<(u32, u32)> = providers
            .reported_usage()
            .iter()
            .map(|usage| (usage.input_tokens, usage.output_tokens))
            .collect();
        assert_eq!(reported, vec![(1234, 56); 3]);
    }

    #[tokio::test]
    async fn a_tool_call_and_its_result_make_two_calls() {
        let providers = FakeProviders::start().await;
        let client = Client::new(&providers);
        for provider in AiProvider::ALL {
            let question = Turn::User("What time is it? Please use a tool.".to_owned());
            let first = client
                .stream(provider, &request(provider, vec![question.clone()]))
                .await
                .expect("a stream");
            let call: Vec<ToolCallRequest> = first
                .iter()
                .filter_map(|event| match event {
                    Ok(StreamEvent::ToolCall(call)) => Some(call.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(call.len(), 1, "{provider:?}: {first:?}");
            assert_eq!(call[0].name, "get_current_time");
            assert_eq!(call[0].arguments, json!({}));
            let turns = vec![
                question,
                Turn::Assistant {
                    text: String::new(),
                    tool_calls: call.clone(),
                },
                Turn::ToolResult {
                    call_id: call[0].id.clone(),
                    name: "get_current_time".to_owned(),
                    result: json!({ "time": "12:00" }),
                },
            ];
            let second = client
                .stream(provider, &request(provider, turns))
                .await
                .expect("a stream");
            assert_eq!(text_of(&second), "The time is known.");
        }
        let requests = providers.requests();
        assert_eq!(requests.len(), 6);
        let answers = [&requests[1].body, &requests[3].body, &requests[5].body];
        assert_eq!(
            answers[0]["contents"][2]["parts"][0]["functionResponse"],
            json!({ "name": "get_current_time", "response": { "time": "12:00" } })
        );
        assert_eq!(answers[1]["messages"][3]["role"], "tool");
        assert_eq!(answers[1]["messages"][3]["tool_call_id"], TIME_CALL_ID);
        assert_eq!(
            answers[2]["messages"][2]["content"][0]["tool_use_id"],
            TIME_CALL_ID
        );
    }

    #[tokio::test]
    async fn a_stream_failing_midway_ends_in_an_upstream_error() {
        let providers = FakeProviders::start().await;
        let client = Client::new(&providers);
        for provider in AiProvider::ALL {
            let events = client
                .stream(provider, &saying(provider, "Please fail midway"))
                .await
                .expect("a stream");
            assert_eq!(text_of(&events), "Hello from", "{provider:?}");
            assert!(
                matches!(events.last(), Some(Err(ProviderError::Upstream(_)))),
                "{provider:?}: {events:?}"
            );
        }
    }

    #[tokio::test]
    async fn refusals_are_told_apart() {
        let providers = FakeProviders::start().await;
        let client = Client::new(&providers);
        for provider in AiProvider::ALL {
            let limited = client
                .stream(provider, &saying(provider, "rate limit me"))
                .await;
            assert_eq!(
                limited.err(),
                Some(ProviderError::RateLimited {
                    retry_after_seconds: 7
                }),
                "{provider:?}"
            );
            let upstream = client.upstream(provider, "test-rejected-key");
            let request = saying(provider, "Hi");
            let refused = stream_chat(&upstream, &request).await;
            assert_eq!(
                refused.err(),
                Some(ProviderError::KeyRejected),
                "{provider:?}"
            );
            assert_eq!(
                complete_chat(&upstream, &request).await,
                Err(ProviderError::KeyRejected)
            );
            let broken = client.upstream(provider, "test-broken-key");
            assert!(matches!(
                complete_chat(&broken, &request).await,
                Err(ProviderError::Upstream(message)) if message.contains("500")
            ));
        }
    }

    #[tokio::test]
    async fn a_slow_start_or_a_quiet_stream_times_out() {
        let providers = FakeProviders::start().await;
        let mut client = Client::new(&providers);
        client.config.first_byte_timeout = Duration::from_millis(500);
        client.config.stream_idle_timeout = Duration::from_millis(10);
        let client = &client;
        let slow = join_all(AiProvider::ALL.map(|provider| async move {
            client
                .stream(provider, &saying(provider, "slow start"))
                .await
                .err()
        }))
        .await;
        assert_eq!(slow, vec![Some(ProviderError::Timeout); 3]);
        let quiet = join_all(AiProvider::ALL.map(|provider| async move {
            let events = client
                .stream(provider, &saying(provider, "long reply"))
                .await;
            events.expect("a stream").pop()
        }))
        .await;
        assert_eq!(quiet, vec![Some(Err(ProviderError::Timeout)); 3]);
    }

    #[tokio::test]
    async fn a_long_reply_streams_within_the_idle_timeout() {
        let providers = FakeProviders::start().await;
        let mut client = Client::new(&providers);
        client.config.stream_idle_timeout = Duration::from_millis(500);
        let client = &client;
        let replies = join_all(AiProvider::ALL.map(|provider| async move {
            let events = client
                .stream(provider, &saying(provider, "a long reply please"))
                .await
                .expect("a stream");
            (text_of(&events).split(' ').count(), events.last().cloned())
        }))
        .await;
        for (words, last) in replies {
            assert_eq!(words, 50);
            assert!(matches!(last, Some(Ok(StreamEvent::Finished { .. }))));
        }
    }

    #[tokio::test]
    async fn titles_come_from_a_whole_reply() {
        let providers = FakeProviders::start().await;
        let client = Client::new(&providers);
        for provider in AiProvider::ALL {
            let mut request = saying(provider, "Name this chat: use a tool");
            request.tools.clear();
            let title = complete_chat(&client.upstream(provider, KEY), &request)
                .await
                .expect("a title");
            assert_eq!(title.text, TITLE);
            assert_eq!(title.usage, Some(TITLE_USAGE), "{provider:?}");
        }
        let requests = providers.requests();
        assert_eq!(
            requests[0].path,
            "/v1beta/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(requests[1].body["stream"], false);
        assert_eq!(requests[2].body["stream"], false);
        assert!(
            requests
                .iter()
                .all(|request| request.body.get("tools").is_none())
        );
    }
}
