//! The RPC layer against tRPC's wire protocol, with a router of test procedures.

use std::collections::BTreeMap;
use std::time::Duration;

use alias_server::rpc::{Context, ErrorCode, ErrorReason, Router, RpcError, Tracked};
use futures::Stream;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::helpers::{TestRpcServer, encode, error_code, spawn_rpc, test_rpc_options};

type Ctx = Context<()>;

#[derive(Deserialize, Serialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EchoInput {
    text: String,
    times: Option<u8>,
}

async fn echo(_: Ctx, input: EchoInput) -> Result<EchoInput, RpcError> {
    Ok(input)
}

#[derive(Deserialize, specta::Type)]
struct AddInput {
    a: i32,
    b: i32,
}

async fn add(_: Ctx, input: AddInput) -> Result<i32, RpcError> {
    input
        .a
        .checked_add(input.b)
        .ok_or_else(|| RpcError::bad_request("overflow"))
}

struct Throttled;

impl ErrorReason for Throttled {
    fn as_str(&self) -> &'static str {
        "throttled"
    }
}

async fn fail(_: Ctx, _: ()) -> Result<(), RpcError> {
    Err(RpcError::new(ErrorCode::TooManyRequests, "Slow down")
        .with_reason(Throttled)
        .with_retry_after(12)
        .with_field_errors(BTreeMap::from([("email".to_owned(), "taken".to_owned())])))
}

async fn boom(_: Ctx, _: ()) -> Result<(), RpcError> {
    panic!("secret internal detail")
}

#[derive(Deserialize, specta::Type)]
struct SleepInput {
    ms: u32,
}

async fn sleep(_: Ctx, input: SleepInput) -> Result<u32, RpcError> {
    tokio::time::sleep(Duration::from_millis(input.ms.into())).await;
    Ok(input.ms)
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
struct Whoami {
    client_ip: String,
    user_agent: Option<String>,
}

async fn whoami(ctx: Ctx, _: ()) -> Result<Whoami, RpcError> {
    Ok(Whoami {
        client_ip: ctx.request.client_ip.to_string(),
        user_agent: ctx.request.user_agent().map(str::to_owned),
    })
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase")]
struct CountInput {
    to: u32,
    fail_at: Option<u32>,
    panic_at: Option<u32>,
    pause_ms: Option<u32>,
    last_event_id: Option<String>,
}

/// Counts from after `lastEventId` to `to`, failing or panicking at the given numbers.
async fn count(
    _: Ctx,
    input: CountInput,
) -> Result<impl Stream<Item = Result<Tracked<u32>, RpcError>>, RpcError> {
    let start = match input.last_event_id {
        Some(id) => {
            id.parse::<u32>()
                .map_err(|_| RpcError::bad_request("bad lastEventId"))?
                + 1
        }
        None => 1,
    };
    let pause = Duration::from_millis(input.pause_ms.unwrap_or(5).into());
    Ok(futures::stream::unfold(start, move |n| async move {
        if n > input.to {
            return None;
        }
        tokio::time::sleep(pause).await;
        if input.panic_at == Some(n) {
            panic!("stream panicked");
        }
        if input.fail_at == Some(n) {
            return Some((
                Err(RpcError::new(ErrorCode::BadGateway, "upstream went away")),
                input.to + 1,
            ));
        }
        Some((Ok(Tracked::new(n.to_string(), n)), n + 1))
    }))
}

fn test_router() -> Router<()> {
    Router::new()
        .query("echo", echo)
        .mutation("math.add", add)
        .query("fail", fail)
        .query("boom", boom)
        .query("sleep", sleep)
        .query("whoami", whoami)
        .subscription("count", count)
}

async fn server() -> TestRpcServer {
    spawn_rpc(test_router(), (), test_rpc_options()).await
}

#[tokio::test]
async fn query_returns_the_result_envelope() {
    let server = server().await;
    let (status, body) = server
        .query("echo", Some(json!({ "text": "hi", "times": 2 })))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({ "result": { "data": { "text": "hi", "times": 2 } } })
    );
}

#[tokio::test]
async fn mutation_takes_its_input_from_the_body() {
    let server = server().await;
    let (status, body) = server
        .mutation("math.add", Some(json!({ "a": 2, "b": 40 })))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"]["data"], 42);
}

#[tokio::test]
async fn missing_input_reaches_a_unit_procedure() {
    let server = server().await;
    let (status, body) = server.query("whoami", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"]["data"]["clientIp"], "127.0.0.1");
}

#[tokio::test]
async fn wrong_method_is_method_not_supported() {
    let server = server().await;
    let (status, body) = server.mutation("echo", Some(json!({ "text": "x" }))).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&body), "METHOD_NOT_SUPPORTED");
    assert_eq!(body["error"]["code"], -32005);

    let (status, body) = server
        .query("math.add", Some(json!({ "a": 1, "b": 1 })))
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&body), "METHOD_NOT_SUPPORTED");

    let response = server
        .http
        .delete(server.url("/trpc/echo"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn unknown_path_is_not_found() {
    let server = server().await;
    let (status, body) = server.query("nope.nothing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "NOT_FOUND");
    assert_eq!(body["error"]["data"]["path"], "nope.nothing");
}

#[tokio::test]
async fn batch_answers_in_order() {
    let server = server().await;
    let input = json!({ "0": { "text": "a" }, "1": { "text": "b" } });
    let (status, body) = server
        .get_raw(&format!(
            "/trpc/echo,echo?batch=1&input={}",
            encode(&input.to_string())
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body[0]["result"]["data"]["text"], "a");
    assert_eq!(body[1]["result"]["data"]["text"], "b");
}

#[tokio::test]
async fn batch_with_mixed_outcomes_is_multi_status() {
    let server = server().await;
    let input = json!({ "0": { "text": "a" }, "2": { "text": 5 } });
    let (status, body) = server
        .get_raw(&format!(
            "/trpc/echo,nope,echo,whoami?batch=1&input={}",
            encode(&input.to_string())
        ))
        .await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    let body = body.as_array().expect("array");
    assert_eq!(body.len(), 4);
    assert_eq!(body[0]["result"]["data"]["text"], "a");
    assert_eq!(body[1]["error"]["data"]["code"], "NOT_FOUND");
    assert_eq!(body[2]["error"]["data"]["code"], "BAD_REQUEST");
    assert!(body[2]["error"]["data"]["fieldErrors"]["text"].is_string());
    assert_eq!(body[3]["result"]["data"]["clientIp"], "127.0.0.1");
}

#[tokio::test]
async fn batched_mutations_share_one_post() {
    let server = server().await;
    let (status, body) = server
        .post_raw(
            "/trpc/math.add,math.add?batch=1",
            "application/json",
            json!({ "0": { "a": 1, "b": 2 }, "1": { "a": 3, "b": 4 } }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!([{ "result": { "data": 3 } }, { "result": { "data": 7 } }])
    );
}

#[tokio::test]
async fn batch_errors_with_one_status_use_that_status() {
    let server = server().await;
    let (status, body) = server.get_raw("/trpc/nope,nada?batch=1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body.as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn oversized_batch_is_refused_per_call() {
    let server = server().await;
    let paths = ["whoami"; 6].join(",");
    let (status, body) = server.get_raw(&format!("/trpc/{paths}?batch=1")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let calls = body.as_array().expect("one answer per call");
    assert_eq!(calls.len(), 6);
    assert!(
        calls
            .iter()
            .all(|call| call["error"]["data"]["code"] == "PAYLOAD_TOO_LARGE")
    );
}

#[tokio::test]
async fn batch_input_must_be_an_object() {
    let server = server().await;
    let (status, body) = server
        .get_raw(&format!("/trpc/echo?batch=1&input={}", encode("[1,2]")))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body[0]["error"]["data"]["code"], "BAD_REQUEST");
}

#[tokio::test]
async fn malformed_json_is_a_parse_error() {
    let server = server().await;
    let (status, body) = server
        .get_raw(&format!("/trpc/echo?input={}", encode("{\"text\":")))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "PARSE_ERROR");
    assert_eq!(body["error"]["code"], -32700);

    let (status, body) = server
        .post_raw("/trpc/math.add", "application/json", "{not json")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "PARSE_ERROR");
}

#[tokio::test]
async fn wrong_types_name_the_field() {
    let server = server().await;
    let (status, body) = server
        .mutation("math.add", Some(json!({ "a": "two", "b": 1 })))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "BAD_REQUEST");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("`a`"), "{message}");
    assert!(body["error"]["data"]["fieldErrors"]["a"].is_string());

    let (_, body) = server
        .query("echo", Some(json!({ "text": "x", "admin": true })))
        .await;
    assert!(body["error"]["data"]["fieldErrors"]["admin"].is_string());

    let (_, body) = server.mutation("math.add", None).await;
    assert!(body["error"]["data"]["fieldErrors"]["a"].is_string());
}

#[tokio::test]
async fn body_over_the_limit_is_payload_too_large() {
    let server = server().await;
    let big = json!({ "a": 1, "b": 2, "padding": "x".repeat(10_000) }).to_string();
    let (status, body) = server
        .post_raw("/trpc/math.add", "application/json", big.clone())
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&body), "PAYLOAD_TOO_LARGE");

    // Without a Content-Length (chunked), the limit still holds while reading.
    let chunks = futures::stream::iter(
        big.into_bytes()
            .chunks(1000)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let (status, body) = server
        .post_raw(
            "/trpc/math.add",
            "application/json",
            reqwest::Body::wrap_stream(chunks),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&body), "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn non_json_body_is_unsupported_media_type() {
    let server = server().await;
    let (status, body) = server.post_raw("/trpc/math.add", "text/plain", "a=1").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(error_code(&body), "UNSUPPORTED_MEDIA_TYPE");
}

#[tokio::test]
async fn typed_error_extras_reach_the_client_without_internals() {
    let server = server().await;
    let (status, body) = server.query("fail", None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        body,
        json!({ "error": {
            "message": "Slow down",
            "code": -32029,
            "data": {
                "code": "TOO_MANY_REQUESTS",
                "httpStatus": 429,
                "path": "fail",
                "reason": "throttled",
                "retryAfterSeconds": 12,
                "fieldErrors": { "email": "taken" }
            }
        }})
    );
}

#[tokio::test]
async fn a_panicking_procedure_is_an_internal_error_and_the_server_lives_on() {
    let server = server().await;
    let (status, body) = server.query("boom", None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error_code(&body), "INTERNAL_SERVER_ERROR");
    assert!(!body.to_string().contains("secret internal detail"));
    assert!(body["error"]["data"].get("stack").is_none());

    let (status, _) = server.query("whoami", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn concurrent_calls_all_succeed() {
    let server = server().await;
    let calls = (0..64).map(|i| server.mutation("math.add", Some(json!({ "a": i, "b": 1 }))));
    let results = futures::future::join_all(calls).await;
    for (i, (status, body)) in results.into_iter().enumerate() {
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["result"]["data"], i + 1);
    }
}

#[tokio::test]
async fn user_agent_reaches_the_context() {
    let server = server().await;
    let response = server
        .http
        .get(server.url("/trpc/whoami"))
        .header("user-agent", "ALIAS/1.0 (iPhone)")
        .send()
        .await
        .expect("request");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["result"]["data"]["userAgent"], "ALIAS/1.0 (iPhone)");
}

#[tokio::test]
async fn forwarded_address_is_used_only_behind_a_trusted_proxy() {
    let forwarded = |server: &TestRpcServer| {
        server
            .http
            .get(server.url("/trpc/whoami"))
            .header("x-forwarded-for", "203.0.113.9")
            .send()
    };
    let untrusted = server().await;
    let body: Value = forwarded(&untrusted)
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(body["result"]["data"]["clientIp"], "127.0.0.1");

    let mut options = test_rpc_options();
    options.trust_proxy = true;
    let trusted = spawn_rpc(test_router(), (), options).await;
    let body: Value = forwarded(&trusted)
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(body["result"]["data"]["clientIp"], "203.0.113.9");
}

#[tokio::test]
async fn subscription_streams_tracked_events_then_returns() {
    let server = server().await;
    let stream = server
        .subscribe("count", Some(&json!({ "to": 3 })), None)
        .await;
    assert_eq!(stream.status, StatusCode::OK);
    assert_eq!(stream.content_type, "text/event-stream");
    let events = stream.collect().await;
    assert_eq!(events.len(), 5, "{events:?}");
    assert_eq!(events[0].event.as_deref(), Some("connected"));
    assert!(events[0].json()["reconnectAfterInactivityMs"].is_number());
    for (n, event) in events[1..4].iter().enumerate() {
        assert_eq!(event.event, None);
        assert_eq!(event.id.as_deref(), Some((n + 1).to_string().as_str()));
        assert_eq!(event.json(), json!(n + 1));
    }
    assert_eq!(events[4].event.as_deref(), Some("return"));
}

#[tokio::test]
async fn subscription_resumes_after_the_last_event_id() {
    let server = server().await;
    let input = json!({ "to": 5 });
    // A native EventSource reconnect sends the header ...
    let events = server
        .subscribe("count", Some(&input), Some("3"))
        .await
        .collect()
        .await;
    let ids: Vec<_> = events.iter().filter_map(|e| e.id.clone()).collect();
    assert_eq!(ids, ["4", "5"]);
    // ... and httpSubscriptionLink puts it into the input, or tRPC's query parameter.
    let url = format!(
        "/trpc/count?input={}&lastEventId=4",
        encode(&input.to_string())
    );
    let response = server
        .http
        .get(server.url(&url))
        .send()
        .await
        .expect("request");
    let text = response.text().await.expect("body");
    assert!(text.contains("id: 5") && !text.contains("id: 4"), "{text}");
}

#[tokio::test]
async fn subscription_failure_is_a_serialized_error() {
    let server = server().await;
    let events = server
        .subscribe("count", Some(&json!({ "to": 5, "failAt": 2 })), None)
        .await
        .collect()
        .await;
    let last = events.last().expect("events");
    assert_eq!(last.event.as_deref(), Some("serialized-error"));
    assert_eq!(last.json()["data"]["code"], "BAD_GATEWAY");
    assert_eq!(last.json()["data"]["path"], "count");
    assert_eq!(events.iter().filter(|e| e.id.is_some()).count(), 1);
}

#[tokio::test]
async fn subscription_with_bad_input_connects_then_reports_the_error() {
    let server = server().await;
    let events = server
        .subscribe("count", Some(&json!({ "to": "many" })), None)
        .await
        .collect()
        .await;
    let kinds: Vec<_> = events
        .iter()
        .map(|e| e.event.clone().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["connected", "serialized-error"]);
    assert_eq!(events[1].json()["data"]["code"], "BAD_REQUEST");
    assert!(events[1].json()["data"]["fieldErrors"]["to"].is_string());
}

#[tokio::test]
async fn a_panicking_stream_ends_with_an_internal_error() {
    let server = server().await;
    let events = server
        .subscribe("count", Some(&json!({ "to": 5, "panicAt": 2 })), None)
        .await
        .collect()
        .await;
    let last = events.last().expect("events");
    assert_eq!(last.event.as_deref(), Some("serialized-error"));
    assert_eq!(last.json()["data"]["code"], "INTERNAL_SERVER_ERROR");
    let (status, _) = server.query("whoami", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn idle_subscription_sends_pings() {
    let server = server().await;
    let mut stream = server
        .subscribe("count", Some(&json!({ "to": 1, "pauseMs": 1000 })), None)
        .await;
    assert_eq!(
        stream.next().await.and_then(|e| e.event).as_deref(),
        Some("connected")
    );
    assert_eq!(
        stream.next().await.and_then(|e| e.event).as_deref(),
        Some("ping")
    );
}

#[tokio::test]
async fn subscriptions_cannot_be_batched_or_posted() {
    let server = server().await;
    let (status, body) = server.get_raw("/trpc/count,whoami?batch=1").await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    assert_eq!(body[0]["error"]["data"]["code"], "BAD_REQUEST");
    let (status, body) = server.mutation("count", Some(json!({ "to": 1 }))).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&body), "METHOD_NOT_SUPPORTED");
}

#[tokio::test]
async fn shutdown_ends_open_streams_without_return() {
    let server = server().await;
    let mut stream = server
        .subscribe("count", Some(&json!({ "to": 100, "pauseMs": 200 })), None)
        .await;
    assert_eq!(
        stream.next().await.and_then(|e| e.event).as_deref(),
        Some("connected")
    );
    server.shutdown.cancel();
    let rest = stream.collect().await;
    assert!(
        rest.iter().all(|e| e.event.as_deref() != Some("return")),
        "{rest:?}"
    );
}

#[tokio::test]
async fn shutdown_lets_in_flight_calls_finish() {
    let server = server().await;
    let call = server.query("sleep", Some(json!({ "ms": 300 })));
    let stop = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.shutdown.cancel();
    };
    let ((status, body), ()) = tokio::join!(call, stop);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"]["data"], 300);
}
