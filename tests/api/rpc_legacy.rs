//! A mutation that GET also answers as a subscription (`Router::legacy_subscription`), for
//! clients built when the procedure was one: same input plus tRPC's `lastEventId`, kept out
//! of the bindings.

use alias_server::reason::Reason;
use alias_server::rpc::{Context, Resumed, Router, RpcError, Tracked};
use futures::Stream;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::helpers::{SseEvent, TestRpcServer, data, spawn_rpc, test_rpc_options};

#[derive(Deserialize, specta::Type)]
#[serde(deny_unknown_fields)]
struct StartInput {
    to: u32,
}

/// The mutation: starts something and says how far it will count.
async fn start(_: Context<()>, input: StartInput) -> Result<u32, RpcError> {
    Ok(input.to)
}

/// The legacy form: starts it and streams the count, after `lastEventId`.
async fn start_and_follow(
    _: Context<()>,
    resumed: Resumed<StartInput>,
) -> Result<impl Stream<Item = Result<Tracked<u32>, RpcError>>, RpcError> {
    let after = match resumed.last_event_id {
        Some(id) => id
            .parse::<u32>()
            .map_err(|_| RpcError::bad_request("bad lastEventId"))?,
        None => 0,
    };
    let events = (after + 1..=resumed.input.to).map(|n| Ok(Tracked::new(n.to_string(), n)));
    Ok(futures::stream::iter(events.collect::<Vec<_>>()))
}

fn router() -> Router<()> {
    Router::new()
        .mutation("job.start", start)
        .legacy_subscription("job.start", start_and_follow)
}

async fn server() -> TestRpcServer {
    spawn_rpc(router(), (), test_rpc_options()).await
}

#[tokio::test]
async fn post_is_the_mutation_and_get_the_subscription() {
    let server = server().await;
    let (status, body) = server.mutation("job.start", Some(json!({ "to": 3 }))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(data(&body), 3);

    let events = server
        .subscribe("job.start", Some(&json!({ "to": 3 })), None)
        .await
        .collect()
        .await;
    let ids: Vec<_> = events.iter().filter_map(|e| e.id.clone()).collect();
    assert_eq!(ids, ["1", "2", "3"]);
    assert_eq!(
        events.last().and_then(|e| e.event.as_deref()),
        Some("return")
    );

    // Resuming: the Last-Event-ID header, or the input as httpSubscriptionLink sends it.
    let events = server
        .subscribe("job.start", Some(&json!({ "to": 3 })), Some("1"))
        .await
        .collect()
        .await;
    let ids: Vec<_> = events.iter().filter_map(|e| e.id.clone()).collect();
    assert_eq!(ids, ["2", "3"]);
    let input = json!({ "to": 3, "lastEventId": "2" });
    let events = server
        .subscribe("job.start", Some(&input), None)
        .await
        .collect()
        .await;
    let ids: Vec<_> = events.iter().filter_map(|e| e.id.clone()).collect();
    assert_eq!(ids, ["3"]);
}

#[tokio::test]
async fn the_input_is_still_checked_field_by_field() {
    let server = server().await;
    for (input, field) in [
        (json!({ "to": 3, "extra": true }), "extra"),
        (json!({ "to": 3, "lastEventId": 7 }), "lastEventId"),
        (json!({ "to": "three" }), "to"),
    ] {
        let events = server
            .subscribe("job.start", Some(&input), None)
            .await
            .collect()
            .await;
        let error = events
            .iter()
            .find(|e| e.event.as_deref() == Some("serialized-error"))
            .map(SseEvent::json)
            .unwrap_or_default();
        assert_eq!(error["data"]["code"], "BAD_REQUEST", "{input}: {events:?}");
        assert!(
            error["data"]["fieldErrors"][field].is_string(),
            "{input}: {error}"
        );
    }
    // The mutation does not know lastEventId.
    let (status, body) = server
        .mutation("job.start", Some(json!({ "to": 3, "lastEventId": "1" })))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["data"]["fieldErrors"]["lastEventId"].is_string());
    // Batched, a GET is no subscription.
    let (status, body) = server.get_raw("/trpc/job.start?batch=1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body[0]["error"]["data"]["code"], "BAD_REQUEST");
}

#[test]
fn the_bindings_declare_only_the_mutation() {
    let bindings = alias_server::rpc::typescript::render::<_, Reason>(&router()).expect("render");
    assert!(
        bindings.contains(
            "start: TRPCMutationProcedure<{ meta: object; input: StartInput; output: number }>"
        ),
        "{bindings}"
    );
    assert!(
        !bindings.contains("TRPCSubscriptionProcedure<{"),
        "{bindings}"
    );
}

#[test]
#[should_panic(expected = "needs a mutation")]
fn a_legacy_subscription_needs_its_mutation() {
    let _ = Router::<()>::new().legacy_subscription("job.start", start_and_follow);
}
