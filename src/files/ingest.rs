//! Taking bytes in: the type sniffed and checked against the declaration, limits and quota,
//! processing, then the object stored and the row made ready (each step audited).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use entity::files;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::store::{self, NewRow, Processed};
use super::types::{FilePurpose, FileStatus};
use super::{images, kinds};
use crate::audit::{self, AuditAction};
use crate::context::Ctx;
use crate::reason::Reason;
use crate::rpc::{ErrorCode, RpcError, internal};
use crate::storage::StorageError;

/// A file arriving in one call (`files.upload`).
pub struct Incoming {
    pub user_id: Uuid,
    pub session_id: Option<Uuid>,
    pub purpose: FilePurpose,
    pub filename: String,
    /// The part's `Content-Type`, if any: checked against the bytes, never trusted.
    pub declared_type: Option<String>,
}

/// A base64 SHA-256 (32 bytes).
pub fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
    STANDARD
        .decode(text)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| "use the SHA-256 of the bytes, base64 (44 characters)".to_owned())
}

/// Avatars are images.
pub fn check_purpose(purpose: FilePurpose, mime_type: &str) -> Result<(), RpcError> {
    if purpose == FilePurpose::Avatar && !kinds::is_image(mime_type) {
        return Err(
            RpcError::bad_request("An avatar must be a JPEG, PNG, WebP or GIF image.")
                .with_reason(Reason::FileTypeNotAllowed),
        );
    }
    Ok(())
}

/// Creates the row, which reserves its bytes against the quota: past the quota it is removed
/// again and the call refused. Reserving first means two uploads racing cannot both pass.
pub async fn reserve(ctx: &Ctx, row: NewRow) -> Result<files::Model, RpcError> {
    let db = &ctx.state.db;
    let user_id = row.user_id;
    let row = store::insert(db, row)
        .await
        .map_err(internal("reserve a file"))?;
    let used = store::used_bytes(db, user_id)
        .await
        .map_err(internal("sum a user's files"))?;
    let quota = ctx.state.config.files.quota_bytes;
    if used > quota {
        store::delete(db, row.id)
            .await
            .map_err(internal("release a file reservation"))?;
        return Err(RpcError::new(
            ErrorCode::Forbidden,
            format!(
                "Your storage is full ({} MB): delete files to make room.",
                quota / 1_000_000
            ),
        )
        .with_reason(Reason::StorageQuotaExceeded));
    }
    Ok(row)
}

/// The sniffed type of `bytes`, which must agree with the declaration and fit the limits.
fn identify(
    ctx: &Ctx,
    bytes: &[u8],
    filename: &str,
    declared: Option<&str>,
    purpose: FilePurpose,
) -> Result<&'static str, RpcError> {
    let config = &ctx.state.config.files;
    let sniffed = kinds::sniff(bytes, filename, declared)?;
    if !kinds::agrees(declared, sniffed) {
        return Err(kinds::mismatch(format!(
            "The file was declared as {} but its contents are {sniffed}.",
            declared.unwrap_or_default()
        )));
    }
    if bytes.len() as u64 > kinds::max_bytes(config, sniffed) {
        return Err(kinds::too_large(config, sniffed));
    }
    check_purpose(purpose, sniffed)?;
    Ok(sniffed)
}

/// A file's bytes ready to store, and what processing found.
struct Prepared {
    /// What is stored and served (for images: re-encoded without metadata).
    bytes: Bytes,
    /// Whether `bytes` differ from what arrived.
    rewritten: bool,
    thumbnail: Option<Bytes>,
    processed: Processed,
}

async fn prepare(
    mime_type: &'static str,
    purpose: FilePurpose,
    bytes: Bytes,
) -> Result<Prepared, RpcError> {
    if !kinds::is_image(mime_type) {
        return Ok(Prepared {
            processed: Processed {
                mime_type: mime_type.to_owned(),
                size_bytes: bytes.len() as u64,
                width: None,
                height: None,
                thumbhash: None,
                has_thumbnail: false,
            },
            bytes,
            rewritten: false,
            thumbnail: None,
        });
    }
    let as_jpeg = purpose == FilePurpose::Avatar;
    let image = images::process(mime_type, as_jpeg, bytes.clone()).await?;
    Ok(Prepared {
        processed: Processed {
            mime_type: image.mime_type.to_owned(),
            size_bytes: image.bytes.len() as u64,
            width: Some(image.width),
            height: Some(image.height),
            thumbhash: Some(image.thumbhash),
            has_thumbnail: true,
        },
        rewritten: image.bytes != bytes,
        bytes: image.bytes,
        thumbnail: Some(image.thumbnail),
    })
}

/// Stores the prepared bytes (when `original_stored`, only if processing rewrote them) and
/// the thumbnail.
async fn store_objects(
    ctx: &Ctx,
    row: &files::Model,
    prepared: &Prepared,
    original_stored: bool,
) -> Result<(), StorageError> {
    let storage = &ctx.state.storage;
    if !original_stored || prepared.rewritten {
        storage.put(&row.object_key, prepared.bytes.clone()).await?;
    }
    if let Some(thumbnail) = &prepared.thumbnail {
        storage
            .put(
                &store::thumbnail_key(row.user_id, row.id),
                thumbnail.clone(),
            )
            .await?;
    }
    Ok(())
}

/// Stores a file that arrived in the call: identified, processed, reserved, stored, made
/// ready.
pub async fn store_new(
    ctx: &Ctx,
    incoming: Incoming,
    bytes: Bytes,
) -> Result<files::Model, RpcError> {
    let mime_type = identify(
        ctx,
        &bytes,
        &incoming.filename,
        incoming.declared_type.as_deref(),
        incoming.purpose,
    )?;
    let prepared = prepare(mime_type, incoming.purpose, bytes).await?;
    let row = reserve(
        ctx,
        NewRow {
            id: Uuid::now_v7(),
            user_id: incoming.user_id,
            session_id: incoming.session_id,
            purpose: incoming.purpose,
            status: FileStatus::Pending,
            filename: incoming.filename,
            mime_type: prepared.processed.mime_type.clone(),
            size_bytes: prepared.processed.size_bytes,
            sha256: None,
        },
    )
    .await?;
    if let Err(error) = store_objects(ctx, &row, &prepared, false).await {
        // The reservation goes (a crash here instead leaves a pending row for the sweep).
        delete_objects(ctx, &row).await;
        if let Err(error) = store::delete(&ctx.state.db, row.id).await {
            tracing::warn!(%error, "could not release a file reservation");
        }
        return Err(super::storage_unavailable(&error));
    }
    make_ready(ctx, row, prepared.processed).await
}

/// Checks the bytes an upload link received against the declaration (type, size, SHA-256),
/// then makes the file ready; wrong bytes are deleted and the file marked rejected.
pub async fn finish_pending(
    ctx: &Ctx,
    row: files::Model,
    bytes: Bytes,
) -> Result<files::Model, RpcError> {
    let purpose = FilePurpose::parse(&row.purpose).unwrap_or_default();
    let declared_size = u64::try_from(row.size_bytes).unwrap_or_default();
    let checked = if bytes.len() as u64 != declared_size {
        Err(kinds::mismatch(format!(
            "{} bytes arrived instead of the {declared_size} declared.",
            bytes.len()
        )))
    } else if row.sha256.as_deref() != Some(&STANDARD.encode(Sha256::digest(&bytes))) {
        Err(kinds::mismatch(
            "The bytes that arrived do not have the SHA-256 declared.",
        ))
    } else {
        identify(ctx, &bytes, &row.filename, Some(&row.mime_type), purpose)
    };
    let prepared = match checked {
        Ok(mime_type) => prepare(mime_type, purpose, bytes).await,
        Err(error) => Err(error),
    };
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(error) if error.code.http_status() < 500 => {
            reject(ctx, row).await?;
            return Err(error);
        }
        Err(error) => return Err(error),
    };
    store_objects(ctx, &row, &prepared, true)
        .await
        .map_err(|error| super::storage_unavailable(&error))?;
    make_ready(ctx, row, prepared.processed).await
}

async fn reject(ctx: &Ctx, row: files::Model) -> Result<(), RpcError> {
    delete_objects(ctx, &row).await;
    let row = store::mark_rejected(&ctx.state.db, row)
        .await
        .map_err(internal("mark a file rejected"))?;
    audit::record(
        &ctx.state.db,
        &ctx.request,
        Some(row.user_id),
        AuditAction::FileRejected,
        serde_json::json!({ "fileId": row.id, "declaredType": row.mime_type }),
    )
    .await;
    Ok(())
}

async fn make_ready(
    ctx: &Ctx,
    row: files::Model,
    processed: Processed,
) -> Result<files::Model, RpcError> {
    let row = store::mark_ready(&ctx.state.db, row, processed)
        .await
        .map_err(internal("mark a file ready"))?;
    audit::record(
        &ctx.state.db,
        &ctx.request,
        Some(row.user_id),
        AuditAction::FileUploaded,
        serde_json::json!({
            "fileId": row.id,
            "mimeType": row.mime_type,
            "sizeBytes": row.size_bytes,
            "purpose": row.purpose,
        }),
    )
    .await;
    Ok(row)
}

/// Deletes a file's bytes and thumbnail; a failure is logged and left to the sweep.
pub async fn delete_objects(ctx: &Ctx, row: &files::Model) {
    let thumbnail = store::thumbnail_key(row.user_id, row.id);
    for key in [&row.object_key, &thumbnail] {
        if let Err(error) = ctx.state.storage.delete(key).await {
            tracing::warn!(%error, "could not delete a stored file; the sweep will");
        }
    }
}
