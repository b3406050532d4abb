//! Reading a request body within limits: the declared length checked before anything is
//! read, at most the limit read (a little reserved up front, so half-sent bodies cannot hold
//! memory), and what to do with a body left unread (drain a little so the connection can be
//! kept, or close it).

use axum::body::Body;
use axum::http::{HeaderMap, header};
use http_body_util::BodyExt;

use super::error::{ErrorCode, RpcError};
use super::form::timed_out;

/// Why a request body was refused, and whether the connection must close after the answer
/// (the client may still be sending a body we stopped reading).
pub(super) struct BodyRefusal {
    pub(super) error: RpcError,
    pub(super) close_connection: bool,
}

impl From<RpcError> for BodyRefusal {
    fn from(error: RpcError) -> Self {
        Self {
            error,
            close_connection: false,
        }
    }
}

/// How much of an over-limit body is read and thrown away before answering 413. A client
/// writes its whole body before it reads the answer: answering and closing earlier resets
/// the connection under it (EPIPE/ECONNRESET instead of the 413).
const DISCARD_BYTES: usize = 16 << 20;

pub(super) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Option<String>, BodyRefusal> {
    let declared = declared_length(headers);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    if let Some(content_type) = content_type
        && !content_type
            .to_ascii_lowercase()
            .starts_with("application/json")
    {
        let error = RpcError::new(
            ErrorCode::UnsupportedMediaType,
            format!("Send the input as application/json, not {content_type}."),
        );
        return Err(refuse_unread(body, headers, declared, error).await);
    }
    if declared.is_some_and(|length| length > limit) {
        return Err(refuse_unread(body, headers, declared, too_large(limit)).await);
    }
    let expected = declared.unwrap_or_default();
    let bytes = match read_at_most(body, limit, expected).await {
        BodyRead::Complete(bytes) => bytes,
        BodyRead::TooLarge { ended } => {
            return Err(BodyRefusal {
                error: too_large(limit),
                close_connection: !ended,
            });
        }
        BodyRead::Broken => {
            return Err(RpcError::bad_request("The request body could not be read.").into());
        }
        BodyRead::TimedOut => {
            return Err(BodyRefusal {
                error: RpcError::new(
                    ErrorCode::Timeout,
                    "The request body did not arrive in time.",
                ),
                close_connection: true,
            });
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    String::from_utf8(bytes).map(Some).map_err(|_| {
        RpcError::new(ErrorCode::ParseError, "The request body is not UTF-8 text.").into()
    })
}

enum BodyRead {
    Complete(Vec<u8>),
    /// Past the limit; the rest was discarded up to [`DISCARD_BYTES`] (`ended`: all of it).
    TooLarge {
        ended: bool,
    },
    /// The connection failed while reading.
    Broken,
    /// The server's connection layer gave up waiting for the rest (its body timeout).
    TimedOut,
}

/// What a body's announced length reserves before any of it arrives: enough for the usual
/// call at once, never so much that many half-sent bodies (a slowloris) hold the memory.
const UPFRONT_RESERVE_BYTES: usize = 64 * 1024;

pub(super) fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok())
}

/// Reads at most `limit` bytes (`expected` of them announced; part reserved at once).
async fn read_at_most(mut body: Body, limit: usize, expected: usize) -> BodyRead {
    let mut bytes = Vec::with_capacity(expected.min(limit).min(UPFRONT_RESERVE_BYTES));
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) if timed_out(&error) => return BodyRead::TimedOut,
            Err(_) => return BodyRead::Broken,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if bytes.len() + data.len() > limit {
            let budget = DISCARD_BYTES.saturating_sub(bytes.len() + data.len());
            return BodyRead::TooLarge {
                ended: discard(body, budget).await,
            };
        }
        bytes.extend_from_slice(&data);
    }
    BodyRead::Complete(bytes)
}

fn too_large(limit: usize) -> RpcError {
    RpcError::new(
        ErrorCode::PayloadTooLarge,
        format!("The request body is larger than the limit of {limit} bytes."),
    )
}

/// Reads and drops up to `budget` bytes; true when the body ended within it.
async fn discard(mut body: Body, mut budget: usize) -> bool {
    loop {
        let frame = match body.frame().await {
            None => return true,
            Some(Err(_)) => return false,
            Some(Ok(frame)) => frame,
        };
        if let Ok(data) = frame.into_data() {
            let Some(left) = budget.checked_sub(data.len()) else {
                return false;
            };
            budget = left;
        }
    }
}

/// Refuses a body without using it. A client waiting for `100 Continue` has sent nothing and
/// sends nothing after a final answer. Any other is still sending: its body is discarded
/// when that is cheap enough, so it reads the answer; past that the connection closes.
async fn refuse_unread(
    body: Body,
    headers: &HeaderMap,
    declared: Option<usize>,
    error: RpcError,
) -> BodyRefusal {
    BodyRefusal {
        error,
        close_connection: !finish_unread(body, headers, declared).await,
    }
}

/// Ends the exchange over a body that will not be used: true when the connection can stay
/// open (nothing more is coming, or the rest was cheap enough to read and drop).
pub(super) async fn finish_unread(
    body: Body,
    headers: &HeaderMap,
    declared: Option<usize>,
) -> bool {
    if expects_continue(headers) {
        true
    } else if declared.is_some_and(|length| length > DISCARD_BYTES) {
        false
    } else {
        discard(body, DISCARD_BYTES).await
    }
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}
