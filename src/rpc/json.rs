//! The TypeScript type of arbitrary JSON fields.

use std::collections::BTreeMap;

use serde::Serialize;

/// Any JSON value, for fields typed `serde_json::Value` in Rust: annotate them with
/// `#[specta(type = rpc::JsonValue)]`. A plain `unknown` would not do: tRPC's inferred output
/// types turn `unknown` fields optional, so the app's values would not match the bindings.
/// Only its type is used; values are never built.
#[derive(Serialize, specta::Type)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum JsonValue {
    Null(()),
    Bool(bool),
    Number(#[specta(type = specta_typescript::Number)] f64),
    String(String),
    Array(Vec<JsonValue>),
    Object(BTreeMap<String, JsonValue>),
}
