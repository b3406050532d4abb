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
use super::form::FormBody;
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

/// Input arrives as raw JSON text (`None` when the client sent none); the procedure parses it
/// into its type before its body runs (and after its guard, if it has one).
pub(crate) type UnaryFn<S> =
    dyn Fn(Context<S>, Option<&str>) -> BoxFuture<Result<String, RpcError>> + Send + Sync;
pub(crate) type SubscribeFn<S> =
    dyn Fn(Context<S>, Option<&str>) -> BoxFuture<Result<EventStream, RpcError>> + Send + Sync;
/// A mutation whose input is a `FormData` body, handed over unread (see [`FormBody`]).
pub(crate) type FormFn<S> =
    dyn Fn(Context<S>, FormBody) -> BoxFuture<Result<String, RpcError>> + Send + Sync;

/// The raw JSON text of a call's input (`None` when the client sent none).
pub type RawJson = Option<String>;

/// How a procedure's input is read from the call's raw input (JSON text, or a form body).
pub(crate) type Parse<R, I> = fn(R) -> Result<I, RpcError>;

/// What a procedure runs on a call's raw input `R` (JSON text unless said otherwise): a plain
/// `async fn(ctx, input)`, whose input is parsed first, or a [`Guarded`] one.
pub trait ProcedureFn<S, I, T, R = RawJson>: Send + Sync + 'static {
    /// Runs the procedure on the call's raw input, read with `parse`.
    fn run(&self, ctx: Context<S>, raw: R, parse: Parse<R, I>) -> BoxFuture<Result<T, RpcError>>;
}

impl<S, I, T, R, F, Fut> ProcedureFn<S, I, T, R> for F
where
    T: Send + 'static,
    F: Fn(Context<S>, I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, RpcError>> + Send + 'static,
{
    fn run(&self, ctx: Context<S>, raw: R, parse: Parse<R, I>) -> BoxFuture<Result<T, RpcError>> {
        match parse(raw) {
            Ok(input) => Box::pin(self(ctx, input)),
            Err(error) => Box::pin(std::future::ready(Err(error))),
        }
    }
}

/// A procedure behind a guard: `guard(ctx)` runs before the input is parsed, and what it
/// yields (the authenticated caller, say) is handed to `handler(ctx, guarded, input)`. So a
/// caller the guard refuses learns that, and nothing about the input.
pub struct Guarded<G, H> {
    guard: G,
    handler: Arc<H>,
}

impl<G, H> Guarded<G, H> {
    pub fn new(guard: G, handler: H) -> Self {
        Self {
            guard,
            handler: Arc::new(handler),
        }
    }
}

impl<S, C, I, T, R, G, GuardFut, H, HandlerFut> ProcedureFn<S, I, T, R> for Guarded<G, H>
where
    S: Clone + Send + 'static,
    I: 'static,
    R: Send + 'static,
    G: Fn(Context<S>) -> GuardFut + Send + Sync + 'static,
    GuardFut: Future<Output = Result<C, RpcError>> + Send + 'static,
    H: Fn(Context<S>, C, I) -> HandlerFut + Send + Sync + 'static,
    HandlerFut: Future<Output = Result<T, RpcError>> + Send + 'static,
{
    fn run(&self, ctx: Context<S>, raw: R, parse: Parse<R, I>) -> BoxFuture<Result<T, RpcError>> {
        let guarded = (self.guard)(ctx.clone());
        let handler = Arc::clone(&self.handler);
        Box::pin(async move {
            let passed = guarded.await?;
            let input = parse(raw)?;
            handler(ctx, passed, input).await
        })
    }
}

pub(crate) enum Handler<S> {
    Unary(Arc<UnaryFn<S>>),
    Subscribe(Arc<SubscribeFn<S>>),
    Form(Arc<FormFn<S>>),
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
    /// The input is a `FormData` (the TypeScript type, not a declared one).
    pub input_is_form: bool,
    /// The input is the declared one or a `FormData` ([`Router::form_alternative`]).
    pub input_also_form: bool,
}

impl Signature {
    fn of<I: DeserializeOwned + Type + 'static, O: Type>() -> Self {
        Self {
            input: I::definition,
            output: O::definition,
            input_is_unit: TypeId::of::<I>() == TypeId::of::<()>(),
            input_is_optional: parse_input::<I>(None).is_ok(),
            input_is_form: false,
            input_also_form: false,
        }
    }

    fn form<O: Type>() -> Self {
        Self {
            input: <()>::definition,
            output: O::definition,
            input_is_unit: false,
            input_is_optional: false,
            input_is_form: true,
            input_also_form: false,
        }
    }
}

pub(crate) struct Procedure<S> {
    pub kind: Kind,
    pub handler: Handler<S>,
    pub signature: Signature,
    /// A mutation's answer to GET as a subscription, for clients built when it was one.
    pub legacy_subscription: Option<Arc<SubscribeFn<S>>>,
    /// A JSON mutation's answer to a `multipart/form-data` POST ([`Router::form_alternative`]).
    pub form_alternative: Option<Arc<FormFn<S>>>,
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

    pub fn query<I, O, P>(self, path: &str, procedure: P) -> Self
    where
        I: DeserializeOwned + Type + 'static,
        O: Serialize + Type + 'static,
        P: ProcedureFn<S, I, O>,
    {
        self.add(path, Kind::Query, unary(procedure), Signature::of::<I, O>())
    }

    pub fn mutation<I, O, P>(self, path: &str, procedure: P) -> Self
    where
        I: DeserializeOwned + Type + 'static,
        O: Serialize + Type + 'static,
        P: ProcedureFn<S, I, O>,
    {
        self.add(
            path,
            Kind::Mutation,
            unary(procedure),
            Signature::of::<I, O>(),
        )
    }

    /// A mutation whose input is a `FormData` (tRPC v11's non-JSON input: the client posts it as
    /// `multipart/form-data` through `httpLink`). The procedure receives the body unread, after
    /// its guard, and reads it with [`FormBody::read`] within limits of its choosing.
    pub fn form_mutation<O, P>(self, path: &str, procedure: P) -> Self
    where
        O: Serialize + Type + 'static,
        P: ProcedureFn<S, FormBody, O, FormBody>,
    {
        self.add(
            path,
            Kind::Mutation,
            Handler::Form(form_handler(procedure)),
            Signature::form::<O>(),
        )
    }

    /// A subscription streams tracked events over SSE until its stream ends (the client sees
    /// `return`) or yields an error (the client sees `serialized-error`).
    pub fn subscription<I, O, P, St>(self, path: &str, procedure: P) -> Self
    where
        I: DeserializeOwned + Type + 'static,
        O: Serialize + Type + 'static,
        P: ProcedureFn<S, I, St>,
        St: Stream<Item = Result<Tracked<O>, RpcError>> + Send + 'static,
    {
        self.add(
            path,
            Kind::Subscription,
            Handler::Subscribe(subscriber(parse_json::<I>, procedure)),
            Signature::of::<I, O>(),
        )
    }

    /// Lets GET on the mutation at `path` (registered before) answer as a subscription too,
    /// for clients built when the procedure was one. Its input is the mutation's, plus tRPC's
    /// `lastEventId` on reconnect (in [`Resumed`]). It stays out of the TypeScript bindings:
    /// new clients call the mutation.
    pub fn legacy_subscription<I, O, P, St>(mut self, path: &str, procedure: P) -> Self
    where
        I: DeserializeOwned + 'static,
        O: Serialize + 'static,
        P: ProcedureFn<S, Resumed<I>, St>,
        St: Stream<Item = Result<Tracked<O>, RpcError>> + Send + 'static,
    {
        let registered = self.procedures.get_mut(path);
        // Registration is start-up code from literals: a mistake stops the process.
        let Some(registered) = registered.filter(|p| p.kind == Kind::Mutation) else {
            panic!("legacy subscription {path:?} needs a mutation registered at that path first");
        };
        assert!(
            registered.legacy_subscription.is_none(),
            "legacy subscription {path:?} registered twice"
        );
        registered.legacy_subscription = Some(subscriber(parse_resumed::<I>, procedure));
        self
    }

    /// Lets the JSON mutation at `path` (registered before) also take a `FormData` body: a POST
    /// of `multipart/form-data` goes to `procedure` instead (tRPC v11 clients send `FormData`
    /// that way through `httpLink`). For inputs that are sometimes a file, such as an import.
    pub fn form_alternative<O, P>(mut self, path: &str, procedure: P) -> Self
    where
        O: Serialize + Type + 'static,
        P: ProcedureFn<S, FormBody, O, FormBody>,
    {
        let registered = self.procedures.get_mut(path);
        // Registration is start-up code from literals: a mistake stops the process.
        let Some(registered) = registered.filter(|p| p.kind == Kind::Mutation) else {
            panic!("form alternative {path:?} needs a mutation registered at that path first");
        };
        assert!(
            registered.form_alternative.is_none(),
            "form alternative {path:?} registered twice"
        );
        registered.form_alternative = Some(form_handler(procedure));
        registered.signature.input_also_form = true;
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
                form_alternative: None,
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

/// A `FormData` procedure as the HTTP layer calls it: the body handed over unread.
fn form_handler<S, O, P>(procedure: P) -> Arc<FormFn<S>>
where
    S: Clone + Send + Sync + 'static,
    O: Serialize + Type + 'static,
    P: ProcedureFn<S, FormBody, O, FormBody>,
{
    Arc::new(move |ctx, body| {
        let output = procedure.run(ctx, body, Ok);
        Box::pin(async move { serialize_output(&output.await?) })
    })
}

fn unary<S, I, O, P>(procedure: P) -> Handler<S>
where
    I: DeserializeOwned + 'static,
    O: Serialize + 'static,
    P: ProcedureFn<S, I, O>,
{
    Handler::Unary(Arc::new(move |ctx, raw| {
        let output = procedure.run(ctx, raw.map(str::to_owned), parse_json::<I>);
        Box::pin(async move { serialize_output(&output.await?) })
    }))
}

/// A subscription procedure with its input parser.
fn subscriber<S, I, O, P, St>(parse: Parse<RawJson, I>, procedure: P) -> Arc<SubscribeFn<S>>
where
    I: 'static,
    O: Serialize + 'static,
    P: ProcedureFn<S, I, St>,
    St: Stream<Item = Result<Tracked<O>, RpcError>> + Send + 'static,
{
    Arc::new(move |ctx, raw| {
        let events = procedure.run(ctx, raw.map(str::to_owned), parse);
        Box::pin(async move { Ok(Box::pin(events.await?.map(serialize_event)) as EventStream) })
    })
}

/// Parses a call's JSON input as `I`.
fn parse_json<I: DeserializeOwned>(raw: RawJson) -> Result<I, RpcError> {
    parse_input(raw.as_deref())
}

/// Takes tRPC's `lastEventId` out of an input object, then parses the rest as `I` (which
/// still refuses unknown fields).
fn parse_resumed<I: DeserializeOwned>(raw: RawJson) -> Result<Resumed<I>, RpcError> {
    let raw = raw.as_deref();
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
