//! The procedure registry: plain async functions registered by dotted tRPC path.

use std::any::TypeId;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::HeaderMap;
use futures::{Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use specta::Type;
use specta::datatype::DataType;

use super::error::RpcError;
use super::input::parse_input;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A subscription's events, already serialized to JSON.
pub(crate) type EventStream = Pin<Box<dyn Stream<Item = Result<SerializedEvent, RpcError>> + Send>>;

/// What every procedure receives besides its input: the application's shared state and what is
/// known about the HTTP request that carried the call.
pub struct Context<S> {
    pub state: S,
    pub request: Arc<RequestInfo>,
}

impl<S: Clone> Clone for Context<S> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            request: Arc::clone(&self.request),
        }
    }
}

#[derive(Debug)]
pub struct RequestInfo {
    /// The socket's peer, or the proxy-reported client when the proxy is trusted.
    pub client_ip: IpAddr,
    pub headers: HeaderMap,
}

impl RequestInfo {
    pub fn user_agent(&self) -> Option<&str> {
        self.header("user-agent")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// One event of a subscription, with the id a reconnecting client sends back as `lastEventId`
/// (tRPC's `tracked(id, data)`).
#[derive(Debug, Clone, PartialEq)]
pub struct Tracked<T> {
    pub id: String,
    pub data: T,
}

impl<T> Tracked<T> {
    pub fn new(id: impl Into<String>, data: T) -> Self {
        Self {
            id: id.into(),
            data,
        }
    }
}

pub(crate) struct SerializedEvent {
    pub id: String,
    pub json: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Query,
    Mutation,
    Subscription,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Mutation => "mutation",
            Self::Subscription => "subscription",
        }
    }
}

/// Input arrives as raw JSON text (`None` when the client sent none); the handler parses it
/// into the procedure's type before any of the procedure runs.
pub(crate) type UnaryFn<S> = dyn Fn(Context<S>, Option<&str>) -> Result<BoxFuture<Result<String, RpcError>>, RpcError>
    + Send
    + Sync;
pub(crate) type SubscribeFn<S> = dyn Fn(Context<S>, Option<&str>) -> Result<BoxFuture<Result<EventStream, RpcError>>, RpcError>
    + Send
    + Sync;

pub(crate) enum Handler<S> {
    Unary(Arc<UnaryFn<S>>),
    Subscribe(Arc<SubscribeFn<S>>),
}

/// The input of a mutation that GET answers as a subscription (see
/// [`Router::legacy_subscription`]): the mutation's own input, and the id of the last event a
/// reconnecting client saw (tRPC's `lastEventId`), which the mutation's input does not declare.
pub struct Resumed<I> {
    pub input: I,
    pub last_event_id: Option<String>,
}

/// The types a procedure exposes, for the TypeScript export.
pub(crate) struct Signature {
    pub input: fn(&mut specta::Types) -> DataType,
    pub output: fn(&mut specta::Types) -> DataType,
    /// `()` input: the client calls it with no argument.
    pub input_is_unit: bool,
    /// The input also accepts "nothing" (every field optional), so the argument may be omitted.
    pub input_is_optional: bool,
}

impl Signature {
    fn of<I: DeserializeOwned + Type + 'static, O: Type>() -> Self {
        Self {
            input: I::definition,
            output: O::definition,
            input_is_unit: TypeId::of::<I>() == TypeId::of::<()>(),
            input_is_optional: parse_input::<I>(None).is_ok(),
        }
    }
}

pub(crate) struct Procedure<S> {
    pub kind: Kind,
    pub handler: Handler<S>,
    pub signature: Signature,
    /// A mutation's answer to GET as a subscription, for clients built when it was one.
    pub legacy_subscription: Option<Arc<SubscribeFn<S>>>,
}

/// The set of procedures, keyed by dotted path (`auth.login`).
pub struct Router<S> {
    pub(crate) procedures: HashMap<String, Procedure<S>>,
}

impl<S> Default for Router<S> {
    fn default() -> Self {
        Self {
            procedures: HashMap::new(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Router<S> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn query<I, O, F, Fut>(self, path: &str, handler: F) -> Self
    where
        I: DeserializeOwned + Type + 'static,
        O: Serialize + Type,
        F: Fn(Context<S>, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, RpcError>> + Send + 'static,
    {
        self.add(path, Kind::Query, unary(handler), Signature::of::<I, O>())
    }

    pub fn mutation<I, O, F, Fut>(self, path: &str, handler: F) -> Self
    where
        I: DeserializeOwned + Type + 'static,
        O: Serialize + Type,
        F: Fn(Context<S>, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, RpcError>> + Send + 'static,
    {
        self.add(
            path,
            Kind::Mutation,
            unary(handler),
            Signature::of::<I, O>(),
        )
    }

    /// A subscription streams tracked events over SSE until its stream ends (the client sees
    /// `return`) or yields an error (the client sees `serialized-error`).
    pub fn subscription<I, O, F, Fut, St>(self, path: &str, handler: F) -> Self
    where
        I: DeserializeOwned + Type + Send + 'static,
        O: Serialize + Type + 'static,
        F: Fn(Context<S>, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<St, RpcError>> + Send + 'static,
        St: Stream<Item = Result<Tracked<O>, RpcError>> + Send + 'static,
    {
        self.add(
            path,
            Kind::Subscription,
            Handler::Subscribe(subscriber(parse_input::<I>, handler)),
            Signature::of::<I, O>(),
        )
    }

    /// Lets GET on the mutation at `path` (registered before) answer as a subscription too,
    /// for clients built when the procedure was one. Its input is the mutation's, plus tRPC's
    /// `lastEventId` on reconnect (in [`Resumed`]). It stays out of the TypeScript bindings:
    /// new clients call the mutation.
    pub fn legacy_subscription<I, O, F, Fut, St>(mut self, path: &str, handler: F) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + 'static,
        F: Fn(Context<S>, Resumed<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<St, RpcError>> + Send + 'static,
        St: Stream<Item = Result<Tracked<O>, RpcError>> + Send + 'static,
    {
        let procedure = self.procedures.get_mut(path);
        // Registration is start-up code from literals: a mistake stops the process.
        let Some(procedure) = procedure.filter(|p| p.kind == Kind::Mutation) else {
            panic!("legacy subscription {path:?} needs a mutation registered at that path first");
        };
        assert!(
            procedure.legacy_subscription.is_none(),
            "legacy subscription {path:?} registered twice"
        );
        procedure.legacy_subscription = Some(subscriber(parse_resumed::<I>, handler));
        self
    }

    /// Mounts every procedure of `other` under `prefix.` (one router per domain).
    pub fn nest(mut self, prefix: &str, other: Router<S>) -> Self {
        for (path, procedure) in other.procedures {
            self = self.insert(format!("{prefix}.{path}"), procedure);
        }
        self
    }

    fn add(self, path: &str, kind: Kind, handler: Handler<S>, signature: Signature) -> Self {
        self.insert(
            path.to_owned(),
            Procedure {
                kind,
                handler,
                signature,
                legacy_subscription: None,
            },
        )
    }

    /// Registration happens once at start-up from literals in our code, so a malformed or
    /// duplicate path is a programming error and stops the process with a clear message.
    fn insert(mut self, path: String, procedure: Procedure<S>) -> Self {
        assert!(is_valid_path(&path), "invalid procedure path {path:?}");
        let previous = self.procedures.insert(path.clone(), procedure);
        assert!(previous.is_none(), "procedure {path:?} registered twice");
        self
    }
}

impl<S> Router<S> {
    pub(crate) fn get(&self, path: &str) -> Option<&Procedure<S>> {
        self.procedures.get(path)
    }

    /// Every path with its kind, sorted, for listings and the TypeScript export.
    pub fn paths(&self) -> Vec<(&str, Kind)> {
        let mut paths: Vec<_> = self
            .procedures
            .iter()
            .map(|(path, procedure)| (path.as_str(), procedure.kind))
            .collect();
        paths.sort_unstable();
        paths
    }
}

fn unary<S, I, O, F, Fut>(handler: F) -> Handler<S>
where
    S: Send + 'static,
    I: DeserializeOwned + 'static,
    O: Serialize,
    F: Fn(Context<S>, I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, RpcError>> + Send + 'static,
{
    Handler::Unary(Arc::new(move |ctx, raw| {
        let input = parse_input::<I>(raw)?;
        let output = handler(ctx, input);
        Ok(Box::pin(async move { serialize_output(&output.await?) }))
    }))
}

/// A subscription handler behind its input parser.
fn subscriber<S, I, O, F, Fut, St>(
    parse: fn(Option<&str>) -> Result<I, RpcError>,
    handler: F,
) -> Arc<SubscribeFn<S>>
where
    S: Send + 'static,
    I: Send + 'static,
    O: Serialize + 'static,
    F: Fn(Context<S>, I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<St, RpcError>> + Send + 'static,
    St: Stream<Item = Result<Tracked<O>, RpcError>> + Send + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(move |ctx, raw| {
        let input = parse(raw)?;
        let handler = Arc::clone(&handler);
        Ok(Box::pin(async move {
            let events = handler(ctx, input).await?;
            Ok(Box::pin(events.map(serialize_event)) as EventStream)
        }))
    })
}

/// Takes tRPC's `lastEventId` out of an input object, then parses the rest as `I` (which
/// still refuses unknown fields).
fn parse_resumed<I: DeserializeOwned>(raw: Option<&str>) -> Result<Resumed<I>, RpcError> {
    let parsed = raw.map(serde_json::from_str::<serde_json::Value>);
    let Some(Ok(serde_json::Value::Object(mut object))) = parsed else {
        // Not an object: parsing it as `I` reports the problem (or accepts "nothing").
        return Ok(Resumed {
            input: parse_input(raw)?,
            last_event_id: None,
        });
    };
    let last_event_id = match object.remove("lastEventId") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(id)) => Some(id),
        Some(_) => {
            let problem = "use the id of the last event received";
            return Err(RpcError::bad_request(format!(
                "Invalid input at `lastEventId`: {problem}"
            ))
            .with_field_errors([("lastEventId".to_owned(), problem.to_owned())].into()));
        }
    };
    let rest = serde_json::Value::Object(object).to_string();
    Ok(Resumed {
        input: parse_input(Some(&rest))?,
        last_event_id,
    })
}

fn serialize_output<O: Serialize>(output: &O) -> Result<String, RpcError> {
    serde_json::to_string(output).map_err(|error| {
        tracing::error!(%error, "procedure output failed to serialize");
        RpcError::internal()
    })
}

fn serialize_event<O: Serialize>(
    event: Result<Tracked<O>, RpcError>,
) -> Result<SerializedEvent, RpcError> {
    let event = event?;
    Ok(SerializedEvent {
        json: serialize_output(&event.data)?,
        id: event.id,
    })
}

fn is_valid_path(path: &str) -> bool {
    path.split('.').all(|segment| {
        let mut chars = segment.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_dotted_identifiers() {
        assert!(is_valid_path("auth.sessions.list"));
        assert!(is_valid_path("system.health"));
        assert!(!is_valid_path(""));
        assert!(!is_valid_path("auth..login"));
        assert!(!is_valid_path("auth.log-in"));
        assert!(!is_valid_path("a,b"));
    }
}
