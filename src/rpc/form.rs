//! tRPC v11's non-JSON inputs: a `FormData` posted as `multipart/form-data` (what `httpLink`
//! sends for a `FormData` input; apps route such calls to it with `splitLink` and
//! `isNonJsonSerializable`). The procedure gets the body unread, after its guard, and reads it
//! within limits of its own, so a caller the guard refuses never makes the server buffer it.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use futures::TryStreamExt;

use super::error::{ErrorCode, RpcError};

/// Limits on reading a form.
#[derive(Debug, Clone, Copy)]
pub struct FormLimits {
    /// The whole body, boundaries and all.
    pub max_body_bytes: u64,
    /// Any one text field (not a file).
    pub max_text_bytes: u64,
    /// Parts at most.
    pub max_fields: usize,
}

/// A form body not read yet. Reading it is the procedure's choice: a call its guard refused
/// leaves it unread, and the HTTP layer then discards or closes as for any refused body.
pub struct FormBody {
    body: Arc<Mutex<Option<Body>>>,
    boundary: Result<String, RpcError>,
    /// Set when reading stopped before the body's end (too large, broken): the connection
    /// closes after the answer, since the client may still be sending.
    stopped_early: Arc<Mutex<bool>>,
}

/// One part of a form: a text field, or a file (with `filename`).
pub struct FormPart {
    pub name: String,
    pub filename: Option<String>,
    /// As the client declared it (never trusted for what a file is).
    pub content_type: Option<String>,
    pub bytes: Bytes,
}

/// A read form, parts in the order sent.
pub struct FormData {
    pub parts: Vec<FormPart>,
}

impl FormData {
    /// The file part named `name` (the first, if sent several times).
    pub fn file(&self, name: &str) -> Option<&FormPart> {
        self.parts
            .iter()
            .find(|part| part.name == name && part.filename.is_some())
    }

    /// The text field named `name`; a file, or text that is not UTF-8, under that name is a
    /// field error.
    pub fn text(&self, name: &str) -> Result<Option<&str>, String> {
        match self.parts.iter().find(|part| part.name == name) {
            None => Ok(None),
            Some(part) if part.filename.is_some() => Err("send text, not a file".to_owned()),
            Some(part) => std::str::from_utf8(&part.bytes)
                .map(Some)
                .map_err(|_| "send UTF-8 text".to_owned()),
        }
    }
}

/// What the HTTP layer keeps of a form body handed to a procedure, to finish the exchange.
pub(crate) struct FormLeftover {
    body: Arc<Mutex<Option<Body>>>,
    stopped_early: Arc<Mutex<bool>>,
}

impl FormLeftover {
    /// The body when the procedure never read it.
    pub(crate) fn unread(&self) -> Option<Body> {
        self.body.lock().ok().and_then(|mut body| body.take())
    }

    pub(crate) fn stopped_early(&self) -> bool {
        self.stopped_early.lock().map(|flag| *flag).unwrap_or(true)
    }
}

impl FormBody {
    /// A body whose `Content-Type` must be `multipart/form-data` with a boundary (checked
    /// when it is read, so the guard still answers first).
    pub(crate) fn new(body: Body, headers: &HeaderMap) -> (Self, FormLeftover) {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let boundary = multer::parse_boundary(content_type).map_err(|_| {
            RpcError::new(
                ErrorCode::UnsupportedMediaType,
                "Send this input as FormData (multipart/form-data), through httpLink.",
            )
        });
        let body = Arc::new(Mutex::new(Some(body)));
        let stopped_early = Arc::new(Mutex::new(false));
        let leftover = FormLeftover {
            body: Arc::clone(&body),
            stopped_early: Arc::clone(&stopped_early),
        };
        (
            Self {
                body,
                boundary,
                stopped_early,
            },
            leftover,
        )
    }

    /// Reads every part within `limits`: past them the call fails with PAYLOAD_TOO_LARGE
    /// (or BAD_REQUEST for too many parts), a malformed body with BAD_REQUEST, a body that
    /// does not arrive in time with TIMEOUT.
    pub async fn read(self, limits: FormLimits) -> Result<FormData, RpcError> {
        let boundary = self.boundary?;
        let body = self
            .body
            .lock()
            .ok()
            .and_then(|mut body| body.take())
            .ok_or_else(|| RpcError::bad_request("The form was already read."))?;
        let stream = body.into_data_stream().map_err(std::io::Error::other);
        let constraints = multer::Constraints::new().size_limit(
            multer::SizeLimit::new()
                .whole_stream(limits.max_body_bytes)
                .per_field(limits.max_body_bytes),
        );
        let mut multipart = multer::Multipart::with_constraints(stream, boundary, constraints);
        let mut parts = Vec::new();
        let result = async {
            while let Some(field) = multipart.next_field().await.map_err(form_error)? {
                if parts.len() == limits.max_fields {
                    return Err(RpcError::bad_request(format!(
                        "A form may hold at most {} fields.",
                        limits.max_fields
                    )));
                }
                let name = field.name().unwrap_or_default().to_owned();
                let filename = field.file_name().map(str::to_owned);
                let content_type = field.content_type().map(ToString::to_string);
                let bytes = field.bytes().await.map_err(form_error)?;
                if filename.is_none() && bytes.len() as u64 > limits.max_text_bytes {
                    return Err(RpcError::new(
                        ErrorCode::PayloadTooLarge,
                        format!(
                            "The form field `{name}` is longer than {} bytes.",
                            limits.max_text_bytes
                        ),
                    ));
                }
                parts.push(FormPart {
                    name,
                    filename,
                    content_type,
                    bytes,
                });
            }
            Ok(FormData { parts })
        }
        .await;
        if result.is_err()
            && let Ok(mut flag) = self.stopped_early.lock()
        {
            *flag = true;
        }
        result
    }
}

fn form_error(error: multer::Error) -> RpcError {
    match error {
        multer::Error::StreamSizeExceeded { limit }
        | multer::Error::FieldSizeExceeded { limit, .. } => RpcError::new(
            ErrorCode::PayloadTooLarge,
            format!("The form is larger than the limit of {limit} bytes."),
        ),
        multer::Error::StreamReadFailed(error) if timed_out(&*error) => RpcError::new(
            ErrorCode::Timeout,
            "The request body did not arrive in time.",
        ),
        multer::Error::StreamReadFailed(_) => {
            RpcError::bad_request("The request body could not be read.")
        }
        other => RpcError::bad_request(format!("The form is malformed: {other}.")),
    }
}

/// The server gave up waiting for the body (its connection layer's body timeout).
pub(crate) fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |error| error.source()).any(|error| {
        error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|error| error.kind() == std::io::ErrorKind::TimedOut)
    })
}
