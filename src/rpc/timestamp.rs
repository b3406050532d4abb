//! Timestamps as the app receives them: RFC 3339 in UTC with exactly three fractional digits
//! and `Z` (`2025-01-31T09:30:00.120Z`), what `Date.prototype.toISOString` writes, whatever
//! precision the database kept. Every output field holding a time is a [`Timestamp`]; the
//! bindings type it `string`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    /// The text the app receives.
    pub fn to_iso(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(at: DateTime<Utc>) -> Self {
        Self(at)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_iso())
    }
}

impl specta::Type for Timestamp {
    fn definition(types: &mut specta::Types) -> specta::datatype::DataType {
        String::definition(types)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn always_milliseconds_and_z() {
        let Some(whole) = Utc.with_ymd_and_hms(2025, 1, 31, 9, 30, 0).single() else {
            panic!("a valid date");
        };
        assert_eq!(Timestamp(whole).to_iso(), "2025-01-31T09:30:00.000Z");
        let fine = Timestamp(whole + chrono::Duration::nanoseconds(123_456_789));
        assert_eq!(
            serde_json::to_value(fine).unwrap_or_default(),
            serde_json::json!("2025-01-31T09:30:00.123Z")
        );
        let none: Option<Timestamp> = None;
        assert_eq!(
            serde_json::to_value(none).unwrap_or_default(),
            serde_json::Value::Null
        );
    }
}
