//! Answering the links [`super::Storage`] signs: `GET /storage/<key>?…` serves an object,
//! `PUT /storage/<key>?…` stores exactly the declared bytes (what a presigned S3 PUT that signs
//! the type and checksum accepts; wrong bytes, type or size, or an expired link, are refused and
//! nothing is stored).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;
use chrono::Utc;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use super::signing::{Expiry, LinkError, ROUTE_PREFIX, SignedDownload};
use super::{Storage, StorageError};

/// Types shown in place; anything else (PDF, text, and whatever else may ever be stored) is a
/// download, so a browser never renders stored content as a page of this origin.
const INLINE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/webp", "image/gif"];

pub fn routes(storage: Arc<Storage>) -> axum::Router {
    let path = format!("{ROUTE_PREFIX}{{*key}}");
    axum::Router::new()
        .route(&path, get(download).put(upload))
        .with_state(storage)
}

fn refuse(status: StatusCode, message: &'static str) -> Response {
    let mut response = (status, message).into_response();
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn link_refused(error: LinkError) -> Response {
    match error {
        LinkError::Forged => refuse(StatusCode::FORBIDDEN, "This link is not valid."),
        LinkError::Expired => refuse(
            StatusCode::FORBIDDEN,
            "This link expired; ask the app for a new one.",
        ),
    }
}

fn storage_failed(error: &StorageError) -> Response {
    match error {
        StorageError::NotFound => refuse(StatusCode::NOT_FOUND, "This file no longer exists."),
        StorageError::Failed(error) => {
            tracing::warn!(%error, "storage failed");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "Storage is unavailable; try again shortly.",
            )
        }
    }
}

async fn download(
    State(storage): State<Arc<Storage>>,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let signed = match storage.signer.check_download(&key, &query, Utc::now()) {
        Ok(signed) => signed,
        Err(error) => return link_refused(error),
    };
    match storage.get(&signed.key).await {
        Ok(bytes) => {
            let mut response = Response::new(Body::from(bytes));
            served_headers(response.headers_mut(), &signed);
            response
        }
        Err(error) => storage_failed(&error),
    }
}

fn served_headers(headers: &mut HeaderMap, signed: &SignedDownload) {
    let content_type = HeaderValue::from_str(&signed.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    let disposition = if INLINE_TYPES.contains(&signed.content_type.as_str()) {
        "inline"
    } else {
        "attachment"
    };
    let name: String =
        percent_encoding::utf8_percent_encode(&signed.filename, percent_encoding::NON_ALPHANUMERIC)
            .collect();
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{disposition}; filename=\"file\"; filename*=UTF-8''{name}"
    )) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    let cache = match signed.expiry {
        // The key never changes content: a new picture gets a new key.
        Expiry::Never => "public, max-age=31536000, immutable".to_owned(),
        Expiry::At(at) => {
            let left = (at - Utc::now()).num_seconds().max(0);
            format!("private, max-age={left}")
        }
    };
    if let Ok(value) = HeaderValue::from_str(&cache) {
        headers.insert(header::CACHE_CONTROL, value);
    }
}

async fn upload(
    State(storage): State<Arc<Storage>>,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let signed = match storage.signer.check_upload(&key, &query, Utc::now()) {
        Ok(signed) => signed,
        Err(error) => return closing(link_refused(error)),
    };
    let sent_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    if sent_type != Some(signed.content_type.as_str()) {
        return closing(refuse(
            StatusCode::FORBIDDEN,
            "Send the Content-Type the upload was created with.",
        ));
    }
    let mut bytes = BytesMut::new();
    let mut hasher = Sha256::new();
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return closing(refuse(
                StatusCode::BAD_REQUEST,
                "The upload did not arrive whole.",
            ));
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if (bytes.len() + data.len()) as u64 > signed.size {
            return closing(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The upload is larger than the size it was created with.",
            ));
        }
        hasher.update(&data);
        bytes.extend_from_slice(&data);
    }
    if bytes.len() as u64 != signed.size {
        return refuse(
            StatusCode::BAD_REQUEST,
            "The upload is smaller than the size it was created with.",
        );
    }
    if STANDARD.encode(hasher.finalize()) != signed.sha256 {
        return refuse(
            StatusCode::BAD_REQUEST,
            "The upload's SHA-256 differs from the one it was created with.",
        );
    }
    match storage.put(&signed.key, bytes.freeze()).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(error) => storage_failed(&error),
    }
}

/// The client may still be sending a body we will not read.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
