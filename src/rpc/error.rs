//! tRPC errors: the code table, the JSON error shape, and the error type procedures return.

use std::any::Any;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Serialize;

/// tRPC's error codes (`TRPC_ERROR_CODES_BY_KEY`), with their HTTP statuses and JSON-RPC numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, specta::Type)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    ParseError,
    BadRequest,
    Unauthorized,
    PaymentRequired,
    Forbidden,
    NotFound,
    MethodNotSupported,
    Timeout,
    Conflict,
    PreconditionFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    UnprocessableContent,
    PreconditionRequired,
    TooManyRequests,
    ClientClosedRequest,
    InternalServerError,
    NotImplemented,
    BadGateway,
    ServiceUnavailable,
    GatewayTimeout,
}

impl ErrorCode {
    /// The code as tRPC spells it on the wire (`TOO_MANY_REQUESTS`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ParseError => "PARSE_ERROR",
            Self::BadRequest => "BAD_REQUEST",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::PaymentRequired => "PAYMENT_REQUIRED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotSupported => "METHOD_NOT_SUPPORTED",
            Self::Timeout => "TIMEOUT",
            Self::Conflict => "CONFLICT",
            Self::PreconditionFailed => "PRECONDITION_FAILED",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::UnprocessableContent => "UNPROCESSABLE_CONTENT",
            Self::PreconditionRequired => "PRECONDITION_REQUIRED",
            Self::TooManyRequests => "TOO_MANY_REQUESTS",
            Self::ClientClosedRequest => "CLIENT_CLOSED_REQUEST",
            Self::InternalServerError => "INTERNAL_SERVER_ERROR",
            Self::NotImplemented => "NOT_IMPLEMENTED",
            Self::BadGateway => "BAD_GATEWAY",
            Self::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            Self::GatewayTimeout => "GATEWAY_TIMEOUT",
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            Self::ParseError | Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::PaymentRequired => 402,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotSupported => 405,
            Self::Timeout => 408,
            Self::Conflict => 409,
            Self::PreconditionFailed => 412,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::UnprocessableContent => 422,
            Self::PreconditionRequired => 428,
            Self::TooManyRequests => 429,
            Self::ClientClosedRequest => 499,
            Self::InternalServerError => 500,
            Self::NotImplemented => 501,
            Self::BadGateway => 502,
            Self::ServiceUnavailable => 503,
            Self::GatewayTimeout => 504,
        }
    }

    /// JSON-RPC 2.0 number; tRPC shares -32603 among the 5xx codes, and the client uses it to
    /// decide whether a subscription reconnects.
    pub fn json_rpc_code(self) -> i32 {
        match self {
            Self::ParseError => -32700,
            Self::BadRequest => -32600,
            Self::InternalServerError
            | Self::NotImplemented
            | Self::BadGateway
            | Self::ServiceUnavailable
            | Self::GatewayTimeout => -32603,
            Self::Unauthorized => -32001,
            Self::PaymentRequired => -32002,
            Self::Forbidden => -32003,
            Self::NotFound => -32004,
            Self::MethodNotSupported => -32005,
            Self::Timeout => -32008,
            Self::Conflict => -32009,
            Self::PreconditionFailed => -32012,
            Self::PayloadTooLarge => -32013,
            Self::UnsupportedMediaType => -32015,
            Self::UnprocessableContent => -32022,
            Self::PreconditionRequired => -32028,
            Self::TooManyRequests => -32029,
            Self::ClientClosedRequest => -32099,
        }
    }
}

/// Logs an unexpected failure with what we were doing and answers the generic error:
/// `.map_err(internal("load a chat"))`. A failure the installed [`TransientCheck`] recognises
/// (the database pool exhausted, say) is answered as its "try again shortly" error instead.
pub fn internal<E: std::fmt::Display + 'static>(doing: &'static str) -> impl Fn(E) -> RpcError {
    move |error| {
        if let Some(transient) = TRANSIENT.get().and_then(|check| check(&error)) {
            tracing::warn!(%error, code = ?transient.code, "could not {doing}; the client may retry");
            return transient;
        }
        tracing::error!(%error, "could not {doing}");
        RpcError::internal()
    }
}

/// Recognises, among the errors handed to [`internal`], failures of a shared service that
/// pass by themselves (the database pool exhausted, the database locked or unreachable), and
/// answers them as "try again shortly" rather than as a bug. This layer knows no service: the
/// application installs the check once at start-up ([`recognise_transient`]).
pub type TransientCheck = fn(&dyn Any) -> Option<RpcError>;

static TRANSIENT: OnceLock<TransientCheck> = OnceLock::new();

/// Installs the check [`internal`] consults; the first installed stays (it is the same
/// function for every server in a process).
pub fn recognise_transient(check: TransientCheck) {
    let _ = TRANSIENT.set(check);
}

/// A machine-readable reason the client can switch on (`data.reason`). The application owns the
/// catalogue (an enum whose serde names are the wire strings); this layer only carries the string.
pub trait ErrorReason {
    fn as_str(&self) -> &'static str;
}

/// What a procedure returns on failure. Everything in it is sent to the client, so it must
/// never hold internal details: those go to the log before the error is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    pub reason: Option<&'static str>,
    pub retry_after_seconds: Option<u32>,
    pub field_errors: Option<BTreeMap<String, String>>,
}

impl RpcError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            reason: None,
            retry_after_seconds: None,
            field_errors: None,
        }
    }

    pub fn with_reason(mut self, reason: impl ErrorReason) -> Self {
        self.reason = Some(reason.as_str());
        self
    }

    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after_seconds = Some(seconds);
        self
    }

    pub fn with_field_errors(mut self, field_errors: BTreeMap<String, String>) -> Self {
        self.field_errors = Some(field_errors);
        self
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// The generic failure: the cause is logged by the caller, never sent.
    pub fn internal() -> Self {
        Self::new(
            ErrorCode::InternalServerError,
            "Something went wrong on our side. Please try again.",
        )
    }

    /// The error shape for the wire: `{ message, code, data: { code, httpStatus, path, … } }`.
    pub(crate) fn shape<'a>(&'a self, path: Option<&'a str>) -> ErrorShape<'a> {
        ErrorShape {
            message: &self.message,
            code: self.code.json_rpc_code(),
            data: ErrorData {
                code: self.code,
                http_status: self.code.http_status(),
                path,
                reason: self.reason,
                retry_after_seconds: self.retry_after_seconds,
                field_errors: self.field_errors.as_ref(),
            },
        }
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for RpcError {}

/// Collects a message per invalid field while an input is parsed, so the client learns about
/// every problem at once (`data.fieldErrors`).
#[derive(Debug, Default)]
pub struct FieldErrors(BTreeMap<String, String>);

impl FieldErrors {
    /// Keeps the value of `result`, or records its message under `field`.
    pub fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result
            .map_err(|message| self.0.insert(field.to_owned(), message))
            .ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// BAD_REQUEST naming every recorded field.
    pub fn into_error(self) -> RpcError {
        let summary: Vec<String> = self
            .0
            .iter()
            .map(|(field, message)| format!("{field}: {message}"))
            .collect();
        RpcError::bad_request(format!("Invalid input: {}", summary.join("; ")))
            .with_field_errors(self.0)
    }
}

#[derive(Serialize)]
pub(crate) struct ErrorShape<'a> {
    message: &'a str,
    code: i32,
    data: ErrorData<'a>,
}

/// Field names here are mirrored by `typescript::error_shape`, which types them for the client.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorData<'a> {
    code: ErrorCode,
    http_status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field_errors: Option<&'a BTreeMap<String, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_has_trpc_fields_and_omits_absent_extras() {
        let error = RpcError::new(ErrorCode::TooManyRequests, "slow down").with_retry_after(7);
        let json = serde_json::to_value(error.shape(Some("auth.login"))).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({
                "message": "slow down",
                "code": -32029,
                "data": {
                    "code": "TOO_MANY_REQUESTS",
                    "httpStatus": 429,
                    "path": "auth.login",
                    "retryAfterSeconds": 7
                }
            })
        );
    }
}
