//! The catalogue of machine-readable failure reasons (`error.data.reason`), typed in the
//! bindings as a closed union so the app can switch on them.

use serde::Serialize;

use crate::rpc::ErrorReason;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum Reason {}

impl ErrorReason for Reason {
    fn as_str(&self) -> &'static str {
        match *self {}
    }
}
