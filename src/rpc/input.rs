//! Turning a call's raw JSON input into the procedure's Rust type, with errors that name the
//! offending field.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::error::Category;

use super::error::{ErrorCode, RpcError};

/// For a nullable field of an update input (`#[serde(default, deserialize_with = "present")]`):
/// tells "left out" (`None`, via `default`) from "null" (`Some(None)`).
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Parses `raw` (the JSON text of one call's input; `None` when the client sent none).
///
/// tRPC sends no input at all for `undefined`. We read that as `null`, and when the procedure's
/// type does not accept `null` we try `{}`, so an input whose fields are all optional may be
/// omitted (`list()` instead of `list({})`).
pub(crate) fn parse_input<I: DeserializeOwned>(raw: Option<&str>) -> Result<I, RpcError> {
    match raw {
        Some(text) if text.trim() != "null" => deserialize(text),
        _ => deserialize("null").or_else(|_| deserialize("{}")),
    }
}

fn deserialize<I: DeserializeOwned>(text: &str) -> Result<I, RpcError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(input_error)?;
    deserializer.end().map_err(|error| parse_error(&error))?;
    Ok(value)
}

fn parse_error(error: &serde_json::Error) -> RpcError {
    RpcError::new(
        ErrorCode::ParseError,
        format!("The input is not valid JSON: {}", without_position(error)),
    )
}

fn input_error(error: serde_path_to_error::Error<serde_json::Error>) -> RpcError {
    let inner = error.inner();
    if matches!(
        inner.classify(),
        Category::Syntax | Category::Eof | Category::Io
    ) {
        return parse_error(inner);
    }
    let problem = without_position(inner);
    let field = field_name(&error.path().to_string(), &problem);
    match field {
        Some(field) => RpcError::bad_request(format!("Invalid input at `{field}`: {problem}"))
            .with_field_errors(BTreeMap::from([(field, problem)])),
        None => RpcError::bad_request(format!("Invalid input: {problem}")),
    }
}

/// serde_json appends " at line L column C", which means nothing to the app's user.
fn without_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(index) => text[..index].to_owned(),
        None => text,
    }
}

/// The field a problem is about: the path where it happened, extended by the field a
/// "missing field `x`" or "unknown field `x`" message names (serde reports those at the parent).
fn field_name(path: &str, problem: &str) -> Option<String> {
    let parent = (path != ".").then_some(path);
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| problem.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    match (parent, named) {
        // serde_path_to_error already counts an unknown key as part of the path.
        (Some(parent), Some(name)) if parent.rsplit('.').next() == Some(name) => {
            Some(parent.to_owned())
        }
        (Some(parent), Some(name)) => Some(format!("{parent}.{name}")),
        (None, Some(name)) => Some(name.to_owned()),
        (Some(parent), None) => Some(parent.to_owned()),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Login {
        email: String,
        remember: Option<bool>,
        nested: Option<Nested>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Nested {
        count: u8,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct AllOptional {
        limit: Option<u32>,
    }

    fn error_of<I: DeserializeOwned + std::fmt::Debug>(raw: Option<&str>) -> RpcError {
        match parse_input::<I>(raw) {
            Ok(value) => panic!("expected an error, parsed {value:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn wrong_type_names_the_field() {
        let error = error_of::<Login>(Some(r#"{"email": 5}"#));
        assert_eq!(error.code, ErrorCode::BadRequest);
        assert_eq!(
            error.message,
            "Invalid input at `email`: invalid type: integer `5`, expected a string"
        );
        assert!(error.field_errors.is_some_and(|f| f.contains_key("email")));
    }

    #[test]
    fn missing_and_unknown_fields_are_named() {
        let missing = error_of::<Login>(Some("{}"));
        assert!(
            missing
                .field_errors
                .is_some_and(|f| f.contains_key("email"))
        );
        let unknown = error_of::<Login>(Some(r#"{"email":"a","admin":true}"#));
        assert!(
            unknown
                .field_errors
                .is_some_and(|f| f.contains_key("admin"))
        );
        let nested = error_of::<Login>(Some(r#"{"email":"a","nested":{"count":300}}"#));
        assert!(
            nested
                .field_errors
                .is_some_and(|f| f.contains_key("nested.count"))
        );
    }

    #[test]
    fn malformed_json_is_a_parse_error() {
        assert_eq!(
            error_of::<Login>(Some("{\"email\":")).code,
            ErrorCode::ParseError
        );
        assert_eq!(
            error_of::<AllOptional>(Some("{} trailing")).code,
            ErrorCode::ParseError
        );
    }

    #[test]
    fn missing_input_means_null_or_empty_object() {
        assert!(parse_input::<()>(None).is_ok());
        assert!(parse_input::<AllOptional>(None).is_ok());
        assert!(parse_input::<AllOptional>(Some("null")).is_ok());
        let required = error_of::<Login>(None);
        assert!(
            required
                .field_errors
                .is_some_and(|f| f.contains_key("email"))
        );
    }
}
