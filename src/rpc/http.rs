//! The tRPC v11 HTTP protocol (`www/docs/further/rpc.md`): queries by GET, mutations by POST,
//! batching with `?batch=1` (answered at once, or as JSON lines for `httpBatchStreamLink`),
//! subscriptions as server-sent events.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::any;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use super::body::{declared_length, finish_unread, read_body};
use super::call::{UNKNOWN_PROCEDURE, count_call, run_guarded};
use super::error::{ErrorCode, RpcError};
use super::form::FormBody;
use super::jsonl::{self, PendingCall};
use super::router::{
    BoxFuture, Context, FormFn, Handler, Kind, RequestInfo, Router, SubscribeFn, UnaryFn,
};
use super::sse::{self, SseOptions};

/// Limits and behaviour of the endpoint, from configuration.
#[derive(Debug, Clone)]
pub struct RpcOptions {
    pub max_body_bytes: usize,
    pub max_batch_size: usize,
    pub sse_ping_interval: Duration,
    /// Take the client address from `X-Forwarded-For` (only behind a proxy that sets it).
    pub trust_proxy: bool,
}

/// A router bound to the application state it serves, ready to mount under `/trpc`.
pub struct RpcService<S> {
    router: Router<S>,
    state: S,
    options: RpcOptions,
    sse: SseOptions,
}

impl<S: Clone + Send + Sync + 'static> RpcService<S> {
    pub fn new(
        router: Router<S>,
        state: S,
        options: RpcOptions,
        shutdown: CancellationToken,
    ) -> Self {
        let sse = SseOptions {
            ping_interval: options.sse_ping_interval,
            shutdown,
        };
        Self {
            router,
            state,
            options,
            sse,
        }
    }

    pub fn into_axum(self) -> axum::Router {
        axum::Router::new()
            .route("/trpc/{*path}", any(handle::<S>))
            .with_state(Arc::new(self))
    }
}

/// How the answer to a request is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// One call: one JSON object.
    Single,
    /// `?batch=1`: a JSON array, sent when every call has ended (`httpBatchLink`).
    Batch,
    /// `?batch=1` asking for JSON lines: each call sent as it ends (`httpBatchStreamLink`).
    BatchStream,
}

impl Framing {
    fn of(batch: bool, headers: &HeaderMap) -> Self {
        match (batch, jsonl::is_requested(headers)) {
            (false, _) => Self::Single,
            (true, false) => Self::Batch,
            (true, true) => Self::BatchStream,
        }
    }

    fn is_batch(self) -> bool {
        self != Self::Single
    }
}

/// One call of a (possibly batched) request, and what answers it.
struct Call<'a, S> {
    path: &'a str,
    target: Result<Target<'a, S>, RpcError>,
}

enum Target<'a, S> {
    Unary {
        handler: &'a Arc<UnaryFn<S>>,
        kind: Kind,
    },
    Subscribe(&'a Arc<SubscribeFn<S>>),
    Form(&'a Arc<FormFn<S>>),
}

async fn handle<S: Clone + Send + Sync + 'static>(
    State(service): State<Arc<RpcService<S>>>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let query = QueryParams::parse(parts.uri.query());
    let framing = Framing::of(query.batch, &parts.headers);
    let raw_paths = parts.uri.path().strip_prefix("/trpc/").unwrap_or_default();
    let joined = percent_encoding::percent_decode_str(raw_paths).decode_utf8_lossy();
    let paths: Vec<&str> = if query.batch {
        joined.split(',').collect()
    } else {
        vec![&joined]
    };

    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
    let client_ip = client_ip(peer, &parts.headers, service.options.trust_proxy);
    let info = Arc::new(RequestInfo {
        client_ip,
        headers: parts.headers,
    });

    if query.batch && paths.len() > service.options.max_batch_size {
        let error = RpcError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "A batch may hold at most {} calls; this one has {}. Lower the client's batch size (httpBatchLink maxItems).",
                service.options.max_batch_size,
                paths.len()
            ),
        );
        return whole_request_error(&paths, framing, &error);
    }
    let is_get = match parts.method {
        Method::GET => true,
        Method::POST => false,
        _ => {
            let error = RpcError::new(
                ErrorCode::MethodNotSupported,
                "Use GET for queries and subscriptions, POST for mutations.",
            );
            return whole_request_error(&paths, framing, &error);
        }
    };

    let calls: Vec<Call<'_, S>> = paths
        .iter()
        .map(|path| Call {
            path,
            target: resolve(
                &service.router,
                path,
                is_get,
                is_form_post(is_get, &info.headers),
            ),
        })
        .collect();

    if let [
        Call {
            path,
            target: Ok(Target::Subscribe(subscribe)),
        },
    ] = calls.as_slice()
        && !query.batch
    {
        let input = with_last_event_id(query.input.as_deref(), last_event_id(&info, &query));
        let ctx = Context {
            state: service.state.clone(),
            request: Arc::clone(&info),
        };
        let setup = run_guarded(path, Kind::Subscription, &info, async {
            subscribe(ctx, input.as_deref()).await
        })
        .await;
        return sse::response(setup, (*path).to_owned(), &service.sse);
    }

    if let [
        Call {
            path,
            target: Ok(Target::Form(form)),
        },
    ] = calls.as_slice()
        && !query.batch
    {
        let ctx = Context {
            state: service.state.clone(),
            request: Arc::clone(&info),
        };
        let (form_body, leftover) = FormBody::new(body, &info.headers);
        let result = run_guarded(path, Kind::Mutation, &info, form(ctx, form_body)).await;
        let close_connection = match leftover.unread() {
            Some(body) => !finish_unread(body, &info.headers, declared_length(&info.headers)).await,
            None => leftover.stopped_early(),
        };
        let mut response = json_response(&paths, &[result], false);
        if close_connection {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        return response;
    }

    let input_text = if is_get {
        query.input
    } else {
        match read_body(body, &info.headers, service.options.max_body_bytes).await {
            Ok(text) => text,
            Err(refusal) => {
                let mut response = whole_request_error(&paths, framing, &refusal.error);
                if refusal.close_connection {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                return response;
            }
        }
    };
    let inputs = match Inputs::parse(input_text.as_deref(), query.batch) {
        Ok(inputs) => inputs,
        Err(error) => return whole_request_error(&paths, framing, &error),
    };

    let ctx = Context {
        state: service.state.clone(),
        request: info,
    };
    let pending = calls
        .iter()
        .enumerate()
        .map(|(index, call)| start_call(call, &service.router, ctx.clone(), inputs.get(index)));
    if framing == Framing::BatchStream {
        let pending = calls
            .iter()
            .zip(pending)
            .map(|(call, result)| PendingCall {
                path: call.path.to_owned(),
                result,
            })
            .collect();
        return with_vary(jsonl::response(pending));
    }
    let results = futures::future::join_all(pending).await;
    json_response(&paths, &results, query.batch)
}

/// A POST whose body is a `FormData` (`multipart/form-data`).
fn is_form_post(is_get: bool, headers: &HeaderMap) -> bool {
    !is_get
        && headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                value
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("multipart/form-data")
            })
}

/// What answers `path` called with this method: a query or subscription by GET, a mutation by
/// POST (its `FormData` alternative when the body is one), or a mutation's legacy subscription
/// by GET.
fn resolve<'a, S>(
    router: &'a Router<S>,
    path: &str,
    is_get: bool,
    is_form: bool,
) -> Result<Target<'a, S>, RpcError> {
    let procedure = router
        .get(path)
        .ok_or_else(|| RpcError::not_found(format!("No procedure found on path \"{path}\"")))?;
    if let (Some(form), true) = (&procedure.form_alternative, is_form) {
        return Ok(Target::Form(form));
    }
    match (&procedure.handler, procedure.kind, is_get) {
        (Handler::Subscribe(subscribe), _, true) => Ok(Target::Subscribe(subscribe)),
        (Handler::Unary(handler), kind @ Kind::Query, true)
        | (Handler::Unary(handler), kind @ Kind::Mutation, false) => {
            Ok(Target::Unary { handler, kind })
        }
        (Handler::Form(form), _, false) => Ok(Target::Form(form)),
        _ => match (&procedure.legacy_subscription, is_get) {
            (Some(subscribe), true) => Ok(Target::Subscribe(subscribe)),
            _ => {
                let expected = if is_get { "POST" } else { "GET" };
                Err(RpcError::new(
                    ErrorCode::MethodNotSupported,
                    format!(
                        "\"{path}\" is a {}; call it with {expected}",
                        procedure.kind.as_str()
                    ),
                ))
            }
        },
    }
}

/// Starts one call of a batch or a single query/mutation; the future owns all it needs, so a
/// streamed batch can send each result as it comes.
fn start_call<S: Clone + Send + Sync + 'static>(
    call: &Call<'_, S>,
    router: &Router<S>,
    ctx: Context<S>,
    input: Option<&str>,
) -> BoxFuture<Result<String, RpcError>> {
    let (handler, kind) = match &call.target {
        Ok(Target::Unary { handler, kind }) => (Arc::clone(handler), *kind),
        // A lone subscription was answered over SSE: this one is in a batch.
        Ok(Target::Subscribe(_)) => {
            let error = RpcError::bad_request(format!(
                "\"{}\" is a subscription and cannot be batched; use httpSubscriptionLink",
                call.path
            ));
            return Box::pin(std::future::ready(Err(error)));
        }
        // A lone form call was answered on its own: this one is in a batch.
        Ok(Target::Form(_)) => {
            let error = RpcError::bad_request(format!(
                "\"{}\" takes FormData and cannot be batched; send it with httpLink (splitLink with isNonJsonSerializable)",
                call.path
            ));
            return Box::pin(std::future::ready(Err(error)));
        }
        Err(error) => {
            // A path no procedure has is counted under one label, never as sent.
            let procedure = router
                .get(call.path)
                .map_or(UNKNOWN_PROCEDURE, |_| call.path);
            count_call(procedure, "unknown", error.code.as_str());
            return Box::pin(std::future::ready(Err(error.clone())));
        }
    };
    let input = input.map(str::to_owned);
    let request = Arc::clone(&ctx.request);
    Box::pin(run_guarded(call.path, kind, &request, async move {
        handler(ctx, input.as_deref()).await
    }))
}

/// The inputs of a request: one raw JSON text, or a batch object keyed "0", "1", ….
enum Inputs {
    Single(Option<String>),
    Batch(HashMap<String, Box<RawValue>>),
}

impl Inputs {
    fn parse(text: Option<&str>, batch: bool) -> Result<Self, RpcError> {
        if !batch {
            return Ok(Self::Single(text.map(str::to_owned)));
        }
        let Some(text) = text else {
            return Ok(Self::Batch(HashMap::new()));
        };
        let value: Box<RawValue> = serde_json::from_str(text).map_err(|error| {
            RpcError::new(
                ErrorCode::ParseError,
                format!("The input is not valid JSON: {error}"),
            )
        })?;
        serde_json::from_str(value.get())
            .map(Self::Batch)
            .map_err(|_| {
                RpcError::bad_request(
                    "\"input\" needs to be an object keyed by call index when doing a batch call",
                )
            })
    }

    fn get(&self, index: usize) -> Option<&str> {
        match self {
            Self::Single(text) => text.as_deref(),
            Self::Batch(map) => map.get(&index.to_string()).map(|raw| raw.get()),
        }
    }
}

struct QueryParams {
    batch: bool,
    input: Option<String>,
    last_event_id: Option<String>,
}

impl QueryParams {
    fn parse(query: Option<&str>) -> Self {
        let mut params = Self {
            batch: false,
            input: None,
            last_event_id: None,
        };
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "batch" => params.batch = value == "1" || value == "true",
                "input" => params.input = Some(value.into_owned()),
                "lastEventId" | "Last-Event-Id" => params.last_event_id = Some(value.into_owned()),
                _ => {}
            }
        }
        params
    }
}

/// A reconnecting EventSource sends `Last-Event-ID`; tRPC also accepts it as a query parameter.
fn last_event_id(info: &RequestInfo, query: &QueryParams) -> Option<String> {
    info.header("last-event-id")
        .map(str::to_owned)
        .or_else(|| query.last_event_id.clone())
        .filter(|id| !id.is_empty())
}

/// Puts the last event id into the input object, where the procedure reads it, as tRPC does.
fn with_last_event_id(input: Option<&str>, last_event_id: Option<String>) -> Option<String> {
    let Some(id) = last_event_id else {
        return input.map(str::to_owned);
    };
    let mut value = match input.map(serde_json::from_str::<serde_json::Value>) {
        None | Some(Ok(serde_json::Value::Null)) => serde_json::Value::Object(Default::default()),
        Some(Ok(value)) => value,
        // Leave malformed input alone: parsing it reports the problem.
        Some(Err(_)) => return input.map(str::to_owned),
    };
    if let Some(object) = value.as_object_mut() {
        object.insert("lastEventId".to_owned(), serde_json::Value::String(id));
    }
    Some(value.to_string())
}

impl RequestInfo {
    /// What a plain axum route (not a procedure) knows of its caller, as a procedure would
    /// see it: the client address (from the connection's `ConnectInfo` in `extensions`) and
    /// the headers.
    pub fn of_route(
        extensions: &axum::http::Extensions,
        headers: HeaderMap,
        trust_proxy: bool,
    ) -> Self {
        let peer = extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
        Self {
            client_ip: client_ip(peer, &headers, trust_proxy),
            headers,
        }
    }
}

/// The client address: the socket peer, or with a trusted proxy the address it appended last
/// to `X-Forwarded-For`. Earlier entries are whatever the client claimed, so they are never
/// used: a last entry that is no address (`unknown`, garbage) means the socket peer.
fn client_ip(peer: IpAddr, headers: &HeaderMap, trust_proxy: bool) -> IpAddr {
    if !trust_proxy {
        return peer;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').next())
        .and_then(forwarded_address)
        .unwrap_or(peer)
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]` or
/// `[2001:db8::1]:443` (proxies differ in adding the port and brackets).
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(address) = entry.parse::<SocketAddr>() {
        return Some(address.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<IpAddr>().ok())
}

/// A failure of the request as a whole: reported once per call of a batch, so a batching
/// client can match every call to its answer; one error object for a streamed batch (what
/// `httpBatchStreamLink` reads from a response that is not 2xx).
fn whole_request_error(paths: &[&str], framing: Framing, error: &RpcError) -> Response {
    if framing == Framing::BatchStream {
        let mut body = Vec::with_capacity(128);
        write_result(&mut body, None, &Err(error.clone()));
        return json_body(error.code.http_status(), body);
    }
    let results: Vec<Result<String, RpcError>> = vec![Err(error.clone()); paths.len()];
    json_response(paths, &results, framing.is_batch())
}

fn json_response(paths: &[&str], results: &[Result<String, RpcError>], batch: bool) -> Response {
    let mut statuses = BTreeSet::new();
    let mut body = Vec::with_capacity(64);
    if batch {
        body.push(b'[');
    }
    for (index, (path, result)) in paths.iter().zip(results).enumerate() {
        if index > 0 {
            body.push(b',');
        }
        statuses.insert(write_result(&mut body, Some(path), result));
    }
    if batch {
        body.push(b']');
    }
    let status = match (statuses.len(), statuses.first()) {
        (1, Some(status)) => *status,
        (0, _) => 200,
        _ => 207,
    };
    json_body(status, body)
}

fn json_body(status: u16, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    with_vary(response)
}

/// Answers differ by `trpc-accept`/`accept` (JSON or JSON lines), as tRPC declares.
fn with_vary(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::VARY,
        HeaderValue::from_static("trpc-accept, accept"),
    );
    response
}

/// Appends `{"result":{"data":…}}` or `{"error":…}` and returns the call's HTTP status.
fn write_result(body: &mut Vec<u8>, path: Option<&str>, result: &Result<String, RpcError>) -> u16 {
    match result {
        Ok(data) => {
            body.extend_from_slice(br#"{"result":{"data":"#);
            body.extend_from_slice(data.as_bytes());
            body.extend_from_slice(b"}}");
            200
        }
        Err(error) => {
            body.extend_from_slice(br#"{"error":"#);
            if serde_json::to_writer(&mut *body, &error.shape(path)).is_err() {
                body.extend_from_slice(b"null");
            }
            body.push(b'}');
            error.code.http_status()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_client_ip_only_with_trusted_proxy() {
        let peer: IpAddr = [10, 0, 0, 1].into();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, 5.6.7.8"),
        );
        assert_eq!(client_ip(peer, &headers, false), peer);
        assert_eq!(client_ip(peer, &headers, true), IpAddr::from([5, 6, 7, 8]));
        assert_eq!(client_ip(peer, &HeaderMap::new(), true), peer);
    }

    #[test]
    fn the_last_forwarded_entry_is_parsed_in_every_form_and_never_skipped() {
        let peer: IpAddr = [10, 0, 0, 1].into();
        let v6: IpAddr = "2001:db8::1".parse().unwrap_or(peer);
        for (last, expected) in [
            ("1.2.3.4:5678", IpAddr::from([1, 2, 3, 4])),
            ("[2001:db8::1]", v6),
            ("[2001:db8::1]:443", v6),
            ("2001:db8::1", v6),
            ("unknown", peer),
            ("", peer),
            ("[not an address]", peer),
        ] {
            let mut headers = HeaderMap::new();
            let value = format!("9.9.9.9, {last}");
            headers.insert(
                "x-forwarded-for",
                HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("")),
            );
            assert_eq!(client_ip(peer, &headers, true), expected, "{value}");
        }
    }

    #[test]
    fn last_event_id_is_merged_into_object_input() {
        let id = || Some("42".to_owned());
        assert_eq!(
            with_last_event_id(None, id()).as_deref(),
            Some(r#"{"lastEventId":"42"}"#)
        );
        assert_eq!(
            with_last_event_id(Some(r#"{"a":1}"#), id()).as_deref(),
            Some(r#"{"a":1,"lastEventId":"42"}"#)
        );
        assert_eq!(with_last_event_id(Some("7"), id()).as_deref(), Some("7"));
        assert_eq!(
            with_last_event_id(Some("{bad"), id()).as_deref(),
            Some("{bad")
        );
    }
}
