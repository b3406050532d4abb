//! A tRPC v11-compatible RPC layer: procedures declared in Rust as plain async functions,
//! served over tRPC's HTTP wire protocol and typed for TypeScript with specta.
//!
//! Shared infrastructure: nothing in here knows about users, keys or chats.

mod body;
mod call;
mod error;
mod form;
mod http;
mod input;
mod json;
mod jsonl;
mod router;
mod sse;
mod timestamp;
pub mod typescript;

pub use call::describe_metrics;
pub use error::{
    ErrorCode, ErrorReason, FieldErrors, RpcError, TransientCheck, internal, recognise_transient,
};
pub use form::{FormBody, FormData, FormLimits, FormPart};
pub use http::{RpcOptions, RpcService};
pub use input::present;
pub use json::{JsonValue, Serialized};
pub use router::{Context, Guarded, Kind, ProcedureFn, RequestInfo, Resumed, Router, Tracked};
pub use timestamp::Timestamp;
