//! Batched calls answered as JSON lines, each call's result sent as soon as it is ready, exactly
//! as `httpBatchStreamLink` reads them (tRPC's `stream/jsonl.ts`: `createBatchStreamProducer`
//! writes, `jsonlStreamConsumer` reads; `resolveResponse` shapes the values).
//!
//! tRPC's server streams `data = [promise of call 0, promise of call 1, …]` with every promise
//! as a numbered chunk. The first line, the head, maps each call index to a placeholder for
//! the promise of chunk `index`: `{"0":[[0],[null,0,0]],"1":[[0],[null,0,1]]}`. When call `i`
//! ends, its chunk resolves (`[chunk, 0 = fulfilled, value]`) to
//! - an error: `[i,0,[[{"error":<shape>}]]]`, or
//! - a result, which tRPC nests as `{ result: Promise<{ data: Promise<data> }> }`, each promise
//!   a new chunk numbered after every chunk so far:
//!   `[i,0,[[{"result":0}],["result",0,a]]]`, `[a,0,[[{"data":0}],["data",0,b]]]`,
//!   `[b,0,[[<data>]]]`.
//!
//! Every line ends with `\n`. The HTTP status is 200 whatever the calls' outcomes (each error
//! carries its own `httpStatus`), as with tRPC.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{StreamExt, stream};

use super::error::RpcError;
use super::router::BoxFuture;

/// The value of `trpc-accept` (or of one of `accept`'s entries) asking for JSON lines.
const JSONL: &str = "application/jsonl";

/// One call of the batch: its path (for its error's shape) and its running procedure.
pub(crate) struct PendingCall {
    pub path: String,
    pub result: BoxFuture<Result<String, RpcError>>,
}

/// `httpBatchStreamLink` sends `trpc-accept: application/jsonl` (or, with
/// `streamHeader: "accept"`, lists it in `Accept`): tRPC's `getAcceptHeader`.
pub(crate) fn is_requested(headers: &HeaderMap) -> bool {
    if let Some(value) = headers.get("trpc-accept") {
        return value.as_bytes() == JSONL.as_bytes();
    }
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|entry| entry.trim() == JSONL)
}

/// The streamed answer to a batch: the head at once, then each call's lines as it ends.
pub(crate) fn response(calls: Vec<PendingCall>) -> Response {
    let head = head(calls.len());
    let mut next_chunk = calls.len();
    let results = calls
        .into_iter()
        .enumerate()
        .map(|(index, call)| async move { (index, call.path, call.result.await) })
        .collect::<FuturesUnordered<_>>()
        .map(move |(index, path, result)| {
            let lines = result_lines(index, &path, &result, next_chunk);
            // A result's two promises take the next chunk ids; an error takes none.
            if result.is_ok() {
                next_chunk += 2;
            }
            lines
        });
    let body = stream::once(async move { head })
        .chain(results)
        .map(Ok::<_, Infallible>);
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    // tRPC's default `jsonl.contentType`.
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// `{"0":[[0],[null,0,0]],…}`: call `i` is the promise of chunk `i`.
fn head(calls: usize) -> Bytes {
    let entries: Vec<String> = (0..calls)
        .map(|index| format!(r#""{index}":[[0],[null,0,{index}]]"#))
        .collect();
    Bytes::from(format!("{{{}}}\n", entries.join(",")))
}

/// The lines that settle call `index`; a result takes chunks `first_free` and the one after.
fn result_lines(
    index: usize,
    path: &str,
    result: &Result<String, RpcError>,
    first_free: usize,
) -> Bytes {
    match result {
        Ok(data) => {
            let (result_chunk, data_chunk) = (first_free, first_free + 1);
            Bytes::from(format!(
                "[{index},0,[[{{\"result\":0}}],[\"result\",0,{result_chunk}]]]\n\
                 [{result_chunk},0,[[{{\"data\":0}}],[\"data\",0,{data_chunk}]]]\n\
                 [{data_chunk},0,[[{data}]]]\n"
            ))
        }
        Err(error) => {
            let shape = serde_json::to_string(&error.shape(Some(path))).unwrap_or_else(|_| {
                r#"{"message":"Internal error","code":-32603,"data":{"code":"INTERNAL_SERVER_ERROR","httpStatus":500}}"#
                    .to_owned()
            });
            Bytes::from(format!("[{index},0,[[{{\"error\":{shape}}}]]]\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::ErrorCode;

    #[test]
    fn the_head_promises_one_chunk_per_call() {
        assert_eq!(
            head(2),
            Bytes::from("{\"0\":[[0],[null,0,0]],\"1\":[[0],[null,0,1]]}\n")
        );
    }

    #[test]
    fn results_and_errors_are_framed_as_trpc_does() {
        assert_eq!(
            result_lines(1, "a.b", &Ok(r#"{"x":1}"#.to_owned()), 2),
            Bytes::from(
                "[1,0,[[{\"result\":0}],[\"result\",0,2]]]\n\
                 [2,0,[[{\"data\":0}],[\"data\",0,3]]]\n\
                 [3,0,[[{\"x\":1}]]]\n"
            )
        );
        let error = RpcError::new(ErrorCode::NotFound, "gone");
        assert_eq!(
            result_lines(0, "a.b", &Err(error), 2),
            Bytes::from(
                "[0,0,[[{\"error\":{\"message\":\"gone\",\"code\":-32004,\"data\":{\"code\":\"NOT_FOUND\",\"httpStatus\":404,\"path\":\"a.b\"}}}]]]\n"
            )
        );
    }

    #[test]
    fn either_header_asks_for_json_lines() {
        let mut headers = HeaderMap::new();
        assert!(!is_requested(&headers));
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/plain, application/jsonl"),
        );
        assert!(is_requested(&headers));
        headers.insert("trpc-accept", HeaderValue::from_static("application/json"));
        assert!(!is_requested(&headers), "trpc-accept wins");
    }
}
