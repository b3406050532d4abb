//! Batches answered as JSON lines for `httpBatchStreamLink` (`trpc-accept: application/jsonl`):
//! tRPC's framing byte for byte, each call sent as it ends, errors per call.

use std::collections::BTreeMap;
use std::sync::Arc;

use alias_server::rpc::{Context, Router, RpcError};
use futures::StreamExt;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::helpers::{TestRpcServer, encode, spawn_rpc, test_rpc_options};

/// A gate the test opens: `wait` blocks until `open` is called.
type Gate = Arc<Semaphore>;

async fn wait(ctx: Context<Gate>, _: ()) -> Result<&'static str, RpcError> {
    let permit = ctx
        .state
        .acquire()
        .await
        .map_err(|_| RpcError::internal())?;
    permit.forget();
    Ok("opened")
}

async fn open(ctx: Context<Gate>, _: ()) -> Result<(), RpcError> {
    ctx.state.add_permits(1);
    Ok(())
}

#[derive(Deserialize, specta::Type)]
#[serde(deny_unknown_fields)]
struct TextInput {
    text: String,
}

async fn echo(_: Context<Gate>, input: TextInput) -> Result<String, RpcError> {
    Ok(input.text)
}

async fn shout(_: Context<Gate>, input: TextInput) -> Result<String, RpcError> {
    Ok(input.text.to_uppercase())
}

async fn nothing(_: Context<Gate>, _: ()) -> Result<(), RpcError> {
    Ok(())
}

async fn server() -> TestRpcServer {
    let router = Router::new()
        .query("wait", wait)
        .mutation("open", open)
        .query("echo", echo)
        .query("nothing", nothing)
        .mutation("shout", shout);
    spawn_rpc(router, Arc::new(Semaphore::new(0)), test_rpc_options()).await
}

/// Reads a JSON-lines body line by line as it streams.
struct Lines {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl Lines {
    fn of(response: reqwest::Response) -> Self {
        Self {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    async fn next(&mut self) -> Option<String> {
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                if let Some(end) = self.buffer.find('\n') {
                    let line: String = self.buffer.drain(..=end).collect();
                    return Some(line.trim_end_matches('\n').to_owned());
                }
                match self.body.next().await {
                    Some(Ok(chunk)) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                    Some(Err(_)) | None => return None,
                }
            }
        })
        .await
        .expect("a line within 10 s")
    }

    async fn rest(mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(line) = self.next().await {
            lines.push(line);
        }
        lines
    }
}

/// Settles chunks as `jsonlStreamConsumer` does, and tells what each call answered.
#[derive(Default)]
struct Decoder {
    chunks: BTreeMap<u64, Value>,
}

impl Decoder {
    fn feed(&mut self, line: &str) {
        let chunk: Value = serde_json::from_str(line).expect("a JSON line");
        let id = chunk[0].as_u64().expect("a chunk id");
        assert_eq!(chunk[1], 0, "promises are fulfilled: {line}");
        let previous = self.chunks.insert(id, chunk[2].clone());
        assert!(previous.is_none(), "chunk {id} settled twice");
    }

    /// `{ result: { data } }` or `{ error }` for call `index`, once settled.
    fn call(&self, index: u64) -> Option<Value> {
        let value = self.decode(self.chunks.get(&index)?)?;
        if let Some(error) = value.get("error") {
            return Some(json!({ "error": error }));
        }
        Some(value)
    }

    fn decode(&self, encoded: &Value) -> Option<Value> {
        let mut data = encoded[0][0].clone();
        for definition in encoded.as_array()?.iter().skip(1) {
            let key = definition[0].as_str()?;
            assert_eq!(definition[1], 0, "a promise");
            let chunk = definition[2].as_u64()?;
            data[key] = self.decode(self.chunks.get(&chunk)?)?;
        }
        Some(data)
    }
}

async fn stream_batch(server: &TestRpcServer, paths: &str, input: &Value) -> reqwest::Response {
    server
        .http
        .get(server.url(&format!(
            "/trpc/{paths}?batch=1&input={}",
            encode(&input.to_string())
        )))
        .header("trpc-accept", "application/jsonl")
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn one_call_is_framed_exactly_as_trpc_frames_it() {
    let server = server().await;
    let response = stream_batch(&server, "echo", &json!({ "0": { "text": "hi" } })).await;
    assert_eq!(response.status(), StatusCode::OK);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(header("transfer-encoding"), "chunked");
    assert_eq!(header("vary"), "trpc-accept, accept");
    assert_eq!(
        response.text().await.expect("body"),
        "{\"0\":[[0],[null,0,0]]}\n\
         [0,0,[[{\"result\":0}],[\"result\",0,1]]]\n\
         [1,0,[[{\"data\":0}],[\"data\",0,2]]]\n\
         [2,0,[[\"hi\"]]]\n"
    );

    let response = stream_batch(&server, "nope", &json!({})).await;
    assert_eq!(response.status(), StatusCode::OK, "errors travel per call");
    assert_eq!(
        response.text().await.expect("body"),
        "{\"0\":[[0],[null,0,0]]}\n\
         [0,0,[[{\"error\":{\"message\":\"No procedure found on path \\\"nope\\\"\",\"code\":-32004,\"data\":{\"code\":\"NOT_FOUND\",\"httpStatus\":404,\"path\":\"nope\"}}}]]]\n"
    );
}

/// A slow call does not hold back the others: their lines arrive while it still runs.
#[tokio::test]
async fn each_call_is_sent_when_it_ends() {
    let server = server().await;
    let input = json!({ "1": { "text": "fast" }, "2": { "text": 5 } });
    let response = stream_batch(&server, "wait,echo,echo,nothing,nope", &input).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut lines = Lines::of(response);
    assert_eq!(
        lines.next().await.as_deref(),
        Some(
            "{\"0\":[[0],[null,0,0]],\"1\":[[0],[null,0,1]],\"2\":[[0],[null,0,2]],\"3\":[[0],[null,0,3]],\"4\":[[0],[null,0,4]]}"
        )
    );
    let mut decoder = Decoder::default();
    while (1..5).any(|index| decoder.call(index).is_none()) {
        let line = lines.next().await.expect("the fast calls' lines");
        decoder.feed(&line);
    }
    assert_eq!(decoder.call(0), None, "the gated call is still running");
    assert_eq!(
        decoder.call(1),
        Some(json!({ "result": { "data": "fast" } }))
    );
    let bad_input = decoder.call(2).expect("call 2");
    assert_eq!(bad_input["error"]["data"]["code"], "BAD_REQUEST");
    assert_eq!(bad_input["error"]["data"]["path"], "echo");
    assert!(bad_input["error"]["data"]["fieldErrors"]["text"].is_string());
    assert_eq!(decoder.call(3), Some(json!({ "result": { "data": null } })));
    assert_eq!(
        decoder.call(4).expect("call 4")["error"]["data"]["code"],
        "NOT_FOUND"
    );

    let (status, _) = server.mutation("open", None).await;
    assert_eq!(status, StatusCode::OK);
    for line in lines.rest().await {
        decoder.feed(&line);
    }
    assert_eq!(
        decoder.call(0),
        Some(json!({ "result": { "data": "opened" } }))
    );
    let ids: Vec<u64> = decoder.chunks.keys().copied().collect();
    assert_eq!(
        ids,
        (0..11).collect::<Vec<_>>(),
        "chunk ids are 0, 1, … without gaps"
    );
}

#[tokio::test]
async fn batched_mutations_stream_too_and_accept_may_ask_for_it() {
    let server = server().await;
    let response = server
        .http
        .post(server.url("/trpc/shout,shout?batch=1"))
        .header("accept", "text/plain, application/jsonl")
        .json(&json!({ "0": { "text": "a" }, "1": { "text": "b" } }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let mut decoder = Decoder::default();
    let lines = Lines::of(response).rest().await;
    assert_eq!(lines.len(), 7, "{lines:?}");
    for line in &lines[1..] {
        decoder.feed(line);
    }
    assert_eq!(decoder.call(0), Some(json!({ "result": { "data": "A" } })));
    assert_eq!(decoder.call(1), Some(json!({ "result": { "data": "B" } })));
}

/// What `httpBatchStreamLink` reads from a response that is not 2xx: one error object, which
/// it hands to every call of the batch.
#[tokio::test]
async fn a_refused_request_is_one_error_object() {
    let server = server().await;
    let paths = ["echo"; 6].join(",");
    let response = stream_batch(&server, &paths, &json!({})).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"]["data"]["code"], "PAYLOAD_TOO_LARGE", "{body}");

    let response = server
        .http
        .post(server.url("/trpc/shout?batch=1"))
        .header("trpc-accept", "application/jsonl")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"]["data"]["code"], "PARSE_ERROR", "{body}");
}

/// Without `?batch=1` the header changes nothing: tRPC's link always batches.
#[tokio::test]
async fn a_single_call_asking_for_json_lines_gets_json() {
    let server = server().await;
    let response = server
        .http
        .get(server.url(&format!(
            "/trpc/echo?input={}",
            encode(&json!({ "text": "hi" }).to_string())
        )))
        .header("trpc-accept", "application/jsonl")
        .send()
        .await
        .expect("request");
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body, json!({ "result": { "data": "hi" } }));
}
