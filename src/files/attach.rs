//! Files sent with chat messages (`chat.send { fileIds }`): which may be sent, what a deleted
//! one shows, and what the models receive of each (images within every provider's limits,
//! PDFs inline as documents, text files as text).

use entity::files;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use uuid::Uuid;

use super::types::{File, FilePurpose, FileStatus};
use super::{images, kinds, not_found, store};
use crate::context::Ctx;
use crate::providers::FilePart;
use crate::reason::Reason;
use crate::rpc::{ErrorCode, RpcError, Timestamp, internal};
use crate::storage::Storage;

/// The most bytes of a PDF sent to the models: Gemini takes at most 20 MB per request, in
/// base64.
pub const MAX_MODEL_PDF_BYTES: i64 = 10_000_000;

/// The caller's files with these ids, in order, if every one can be sent: another user's (or a
/// missing) file is NOT_FOUND, one not uploaded yet PRECONDITION_FAILED `upload_incomplete`,
/// a PDF the models cannot take PAYLOAD_TOO_LARGE `file_too_large`.
pub async fn sendable(
    ctx: &Ctx,
    user_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<files::Model>, RpcError> {
    let mut rows = Vec::with_capacity(ids.len());
    for &id in ids {
        let row = store::find_owned(&ctx.state.db, user_id, id)
            .await
            .map_err(internal("load a file"))?
            .ok_or_else(not_found)?;
        if FileStatus::parse(&row.status) != FileStatus::Ready {
            return Err(RpcError::new(
                ErrorCode::PreconditionFailed,
                format!(
                    "\"{}\" is not uploaded yet (or was refused): send it after files.complete \
                     answers it ready.",
                    row.filename
                ),
            )
            .with_reason(Reason::UploadIncomplete));
        }
        if row.mime_type == "application/pdf" && row.size_bytes > MAX_MODEL_PDF_BYTES {
            return Err(RpcError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "\"{}\" is too large for the assistant: PDFs of at most {} MB can be sent.",
                    row.filename,
                    MAX_MODEL_PDF_BYTES / 1_000_000
                ),
            )
            .with_reason(Reason::FileTooLarge));
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The user's files among `ids` (deleted ones are simply absent).
pub async fn find_many(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    ids: Vec<Uuid>,
) -> Result<Vec<files::Model>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    files::Entity::find()
        .filter(files::Column::UserId.eq(user_id))
        .filter(files::Column::Id.is_in(ids))
        .all(db)
        .await
}

/// What a message shows of a file deleted since it was sent.
pub struct Sent<'a> {
    pub id: Uuid,
    pub filename: &'a str,
    pub mime_type: &'a str,
    pub size_bytes: i64,
    pub sent_at: Timestamp,
}

/// The "file deleted" placeholder: status `deleted`, no links.
pub fn deleted(sent: &Sent<'_>) -> File {
    File {
        id: sent.id,
        filename: sent.filename.to_owned(),
        mime_type: sent.mime_type.to_owned(),
        size_bytes: u32::try_from(sent.size_bytes).unwrap_or(u32::MAX),
        purpose: FilePurpose::Attachment,
        status: FileStatus::Deleted,
        width: None,
        height: None,
        thumbhash: None,
        url: None,
        thumbnail_url: None,
        session_id: None,
        created_at: sent.sent_at,
    }
}

/// A file as the models receive it.
pub enum ForModel {
    /// An image or a PDF, inline.
    Inline(FilePart),
    /// A text file's contents (or a note saying why the file could not be read).
    Text(String),
}

/// Reads a file for a model: an image within `images::MODEL_SIDE` and `max_image_bytes`
/// (at most `images::MODEL_IMAGE_BYTES`), a PDF as it is, a text file as text of at most
/// `max_chars` characters (cut with a note; only as many bytes as those characters can take
/// are read). A file that cannot be read becomes a note, so the reply still happens.
pub async fn for_model(
    storage: &Storage,
    row: &files::Model,
    max_chars: usize,
    max_image_bytes: usize,
) -> ForModel {
    let is_text = !kinds::is_image(&row.mime_type) && row.mime_type != "application/pdf";
    let size = u64::try_from(row.size_bytes).unwrap_or(0);
    let read = if is_text {
        // A UTF-8 character is at most 4 bytes.
        let length = u64::try_from(max_chars.saturating_mul(4)).unwrap_or(u64::MAX);
        storage.get_prefix(&row.object_key, size, length).await
    } else {
        storage.get(&row.object_key).await
    };
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::warn!(%error, file = %row.id, "could not read a file for a model");
            return unreadable(row);
        }
    };
    if kinds::is_image(&row.mime_type) {
        let max_bytes = max_image_bytes.min(images::MODEL_IMAGE_BYTES);
        return match images::for_model(row.mime_type.clone(), bytes, max_bytes).await {
            Ok((mime_type, data)) => ForModel::Inline(FilePart {
                filename: row.filename.clone(),
                mime_type,
                data,
            }),
            Err(_) => unreadable(row),
        };
    }
    if !is_text {
        return ForModel::Inline(FilePart {
            filename: row.filename.clone(),
            mime_type: row.mime_type.clone(),
            data: bytes,
        });
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut shown: String = text.chars().take(max_chars).collect();
    if shown.len() < text.len() || u64::try_from(bytes.len()).unwrap_or(u64::MAX) < size {
        shown.push_str("\n[… the rest of the file is not shown]");
    }
    ForModel::Text(format!(
        "<file name=\"{}\" type=\"{}\">\n{shown}\n</file>",
        attribute(&row.filename),
        row.mime_type
    ))
}

fn unreadable(row: &files::Model) -> ForModel {
    ForModel::Text(format!(
        "[The file \"{}\" could not be read.]",
        attribute(&row.filename)
    ))
}

/// A file name inside the markup around a file's text: quotes and angle brackets escaped, so
/// a crafted name cannot close the wrapper early.
fn attribute(filename: &str) -> String {
    filename
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
