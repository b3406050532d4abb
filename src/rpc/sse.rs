//! Server-sent events exactly as tRPC's `httpSubscriptionLink` consumes them
//! (`packages/server/src/unstable-core-do-not-import/stream/sse.ts`): a `connected` event with
//! client options, unnamed data events with ids, `ping` while idle, then `return` when the stream
//! ends or `serialized-error` when it fails.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use futures::{Stream, StreamExt, stream};
use tokio_util::sync::CancellationToken;

use super::error::RpcError;
use super::router::{EventStream, SerializedEvent};
use crate::telemetry::metrics::InProgress;

pub(crate) struct SseOptions {
    pub ping_interval: Duration,
    /// Ends open streams without `return`, so clients reconnect (to another instance) and resume.
    pub shutdown: CancellationToken,
}

/// The response for a subscription whose setup succeeded (`Ok`) or failed (`Err`); either way
/// the client first sees `connected`, as with tRPC's own server.
pub(crate) fn response(
    setup: Result<EventStream, RpcError>,
    path: String,
    options: &SseOptions,
) -> Response {
    let connected = connected_frame(options.ping_interval);
    let frames = match setup {
        Ok(events) => live_frames(events, path, options).left_stream(),
        Err(error) => stream::iter([error_frame(&error, &path)]).right_stream(),
    };
    let body = stream::iter([connected])
        .chain(frames)
        .map(Ok::<_, Infallible>);
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

struct Live {
    events: EventStream,
    /// Counts the subscription as open until the stream ends or the client goes.
    _open: InProgress,
    path: String,
    ping_interval: Duration,
    shutdown: CancellationToken,
}

fn live_frames(
    events: EventStream,
    path: String,
    options: &SseOptions,
) -> impl Stream<Item = Bytes> + use<> {
    let events = AssertUnwindSafe(events)
        .catch_unwind()
        .map(|item| {
            item.unwrap_or_else(|_| {
                tracing::error!("subscription panicked while streaming");
                Err(RpcError::internal())
            })
        })
        .boxed();
    let live = Live {
        _open: InProgress::start(metrics::gauge!(
            "alias_rpc_subscriptions_open",
            "procedure" => path.clone(),
        )),
        events,
        path,
        ping_interval: options.ping_interval,
        shutdown: options.shutdown.clone(),
    };
    stream::unfold(Some(live), |state| async move {
        let mut live = state?;
        tokio::select! {
            biased;
            () = live.shutdown.cancelled() => None,
            next = tokio::time::timeout(live.ping_interval, live.events.next()) => match next {
                Err(_idle) => Some((frame(Some("ping"), "", None), Some(live))),
                Ok(Some(Ok(event))) => Some((data_frame(&event), Some(live))),
                Ok(Some(Err(error))) => Some((error_frame(&error, &live.path), None)),
                Ok(None) => Some((frame(Some("return"), "", None), None)),
            },
        }
    })
}

/// Tells the client to reconnect (with its last event id) when nothing, not even a ping, has
/// arrived for three ping intervals: how a phone notices a connection that died silently.
fn connected_frame(ping_interval: Duration) -> Bytes {
    let reconnect_ms = ping_interval.as_millis().saturating_mul(3);
    let options = format!(r#"{{"reconnectAfterInactivityMs":{reconnect_ms}}}"#);
    frame(Some("connected"), &options, None)
}

fn data_frame(event: &SerializedEvent) -> Bytes {
    frame(None, &event.json, Some(&event.id))
}

fn error_frame(error: &RpcError, path: &str) -> Bytes {
    let shape = serde_json::to_string(&error.shape(Some(path))).unwrap_or_else(|_| {
        r#"{"message":"Internal error","code":-32603,"data":{"code":"INTERNAL_SERVER_ERROR","httpStatus":500}}"#
            .to_owned()
    });
    frame(Some("serialized-error"), &shape, None)
}

/// `data` is single-line JSON (serde_json escapes newlines); an id must not break the framing,
/// so line breaks in it are dropped.
fn frame(event: Option<&str>, data: &str, id: Option<&str>) -> Bytes {
    let mut out = String::with_capacity(data.len() + 48);
    if let Some(event) = event {
        out.push_str("event: ");
        out.push_str(event);
        out.push('\n');
    }
    out.push_str("data: ");
    out.push_str(data);
    out.push('\n');
    if let Some(id) = id {
        out.push_str("id: ");
        out.extend(id.chars().filter(|c| !matches!(c, '\r' | '\n')));
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_follow_the_event_stream_format() {
        let event = SerializedEvent {
            id: "7\n8".to_owned(),
            json: r#"{"a":1}"#.to_owned(),
        };
        assert_eq!(
            data_frame(&event),
            Bytes::from("data: {\"a\":1}\nid: 78\n\n")
        );
        assert_eq!(
            connected_frame(Duration::from_secs(10)),
            Bytes::from("event: connected\ndata: {\"reconnectAfterInactivityMs\":30000}\n\n")
        );
    }
}
