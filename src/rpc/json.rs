//! JSON values with their TypeScript types: arbitrary JSON fields, and values serialized once.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

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

/// A value serialized to JSON once, sent as is to every client that asks for it (the events
/// of a stream replayed to several subscribers), and typed as `T` in TypeScript.
pub struct Serialized<T> {
    json: Arc<RawValue>,
    of: PhantomData<fn() -> T>,
}

impl<T> Clone for Serialized<T> {
    fn clone(&self) -> Self {
        Self {
            json: Arc::clone(&self.json),
            of: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Serialized<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.json.get())
    }
}

impl<T: Serialize> Serialized<T> {
    pub fn new(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self::assume(RawValue::from_string(serde_json::to_string(
            value,
        )?)?))
    }
}

impl<T> Serialized<T> {
    /// JSON the caller knows to be a serialized `T`.
    pub fn assume(json: impl Into<Arc<RawValue>>) -> Self {
        Self {
            json: json.into(),
            of: PhantomData,
        }
    }

    pub fn raw(&self) -> &Arc<RawValue> {
        &self.json
    }
}

impl<T> Serialize for Serialized<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(serializer)
    }
}

impl<T: specta::Type> specta::Type for Serialized<T> {
    fn definition(types: &mut specta::Types) -> specta::datatype::DataType {
        T::definition(types)
    }
}
