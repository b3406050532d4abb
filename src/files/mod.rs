//! `files.*`: users' files (chat attachments, avatars). Bytes go to storage (`ALIAS_STORAGE`)
//! either in the call (`files.upload`, a FormData) or through a signed upload link
//! (`files.createUpload`, then `files.complete`). What a file is comes from its bytes; rows
//! hold object keys, and links are signed whenever a file is shown.

pub mod attach;
mod images;
mod ingest;
mod kinds;
mod store;
mod sweep;
mod types;

use entity::files;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

pub use sweep::{Swept, run_periodically as sweep_periodically, sweep};
pub use types::{File, FilePurpose, FileStatus, Links};

use self::ingest::Incoming;
use self::types::{
    CreateUploadInput, FileIdInput, FilePage, FileRefInput, ListFilesInput, UploadMethod,
    UploadTarget,
};
use crate::audit::{self, AuditAction};
use crate::context::{App, Ctx};
use crate::guard::{SignedIn, signed_in};
use crate::pagination::{PageRequest, PageSize};
use crate::reason::Reason;
use crate::rpc::{ErrorCode, FieldErrors, FormBody, FormLimits, Router, RpcError, internal};
use crate::storage::{StorageError, Upload};
use crate::text;

pub fn router() -> Router<App> {
    Router::new()
        .form_mutation("upload", signed_in(upload))
        .mutation("createUpload", signed_in(create_upload))
        .mutation("complete", signed_in(complete))
        .query("list", signed_in(list))
        .query("get", signed_in(get))
        .mutation("delete", signed_in(delete))
}

/// Links to files, signed for the calling client's view of this server.
pub fn links(ctx: &Ctx) -> Links<'_> {
    Links {
        storage: &ctx.state.storage,
        config: &ctx.state.config.files,
        base: ctx.state.storage.base_url(ctx.request.header("host")),
    }
}

/// What an avatar is served as (avatars are stored as JPEG whatever was sent).
const AVATAR_TYPE: &str = "image/jpeg";

/// The link to a user's avatar picture: the same for the same picture (it never expires, and
/// a new picture is a new file), so the app's image cache keeps it.
pub fn avatar_url(ctx: &Ctx, user_id: Uuid, file_id: Uuid) -> String {
    let key = store::object_key(user_id, file_id);
    let storage = &ctx.state.storage;
    storage.download_url(
        &storage.base_url(ctx.request.header("host")),
        &crate::storage::Download {
            key: &key,
            content_type: AVATAR_TYPE,
            filename: "avatar.jpg",
            expiry: crate::storage::Expiry::Never,
        },
    )
}

/// The caller's ready avatar upload with this id, to become their picture.
pub async fn find_avatar(
    ctx: &Ctx,
    user_id: Uuid,
    file_id: Uuid,
) -> Result<files::Model, RpcError> {
    let row = store::find_owned(&ctx.state.db, user_id, file_id)
        .await
        .map_err(internal("load a file"))?
        .ok_or_else(not_found)?;
    let usable = FileStatus::parse(&row.status) == FileStatus::Ready
        && FilePurpose::parse(&row.purpose) == Some(FilePurpose::Avatar);
    if usable {
        Ok(row)
    } else {
        Err(RpcError::bad_request(
            "Use a ready file uploaded with purpose \"avatar\".",
        ))
    }
}

/// Deletes a user's former avatar picture (after another replaced it).
pub async fn remove_avatar(ctx: &Ctx, user_id: Uuid, file_id: Uuid) -> Result<(), RpcError> {
    let row = store::find_owned(&ctx.state.db, user_id, file_id)
        .await
        .map_err(internal("load a file"))?;
    match row {
        Some(row) => remove(ctx, &row).await,
        None => Ok(()),
    }
}

/// Files uploaded into a chat, read before the chat is deleted: their rows go with it by
/// cascade and their bytes with the next sweep, and each is audited as deleted afterwards
/// (`audit_removed_with_chat`).
pub async fn of_session(ctx: &Ctx, session_id: Uuid) -> Result<Vec<files::Model>, RpcError> {
    files::Entity::find()
        .filter(files::Column::SessionId.eq(session_id))
        .all(&ctx.state.db)
        .await
        .map_err(internal("list a chat's files"))
}

/// Audit rows for files deleted with their chat (`of_session`).
pub async fn audit_removed_with_chat(ctx: &Ctx, rows: &[files::Model]) {
    for row in rows {
        audit::record(
            &ctx.state.db,
            &ctx.request,
            Some(row.user_id),
            AuditAction::FileDeleted,
            serde_json::json!({ "fileId": row.id, "purpose": row.purpose, "reason": "chat_deleted" }),
        )
        .await;
    }
}

fn not_found() -> RpcError {
    RpcError::not_found("No such file.")
}

fn storage_unavailable(error: &StorageError) -> RpcError {
    tracing::warn!(%error, "file storage failed");
    RpcError::new(
        ErrorCode::ServiceUnavailable,
        "File storage is unavailable; try again shortly.",
    )
    .with_retry_after(5)
}

/// A file name as shown: its last path component (some clients send a whole path), one line,
/// 1 to 255 characters.
fn parse_filename(raw: &str) -> Result<String, String> {
    let name = raw.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    text::check_single_line(name)?;
    match name.chars().count() {
        0 => Err("give the file a name".to_owned()),
        1..=255 => Ok(name.to_owned()),
        _ => Err("use at most 255 characters".to_owned()),
    }
}

fn parse_session_id(raw: &str) -> Result<Uuid, String> {
    raw.parse()
        .map_err(|_| "use the id of one of your chats".to_owned())
}

/// Checks a file's chat is the caller's (another user's is NOT_FOUND, as a missing one).
async fn check_session(ctx: &Ctx, user_id: Uuid, session_id: Option<Uuid>) -> Result<(), RpcError> {
    let Some(session_id) = session_id else {
        return Ok(());
    };
    let owned = store::owns_session(&ctx.state.db, user_id, session_id)
        .await
        .map_err(internal("check a file's chat"))?;
    if owned {
        Ok(())
    } else {
        Err(RpcError::not_found("No such chat."))
    }
}

/// `files.upload`: a `FormData` with `file`, and optionally `purpose` and `sessionId`.
async fn upload(ctx: Ctx, caller: SignedIn, form: FormBody) -> Result<File, RpcError> {
    let config = &ctx.state.config.files;
    let largest = config.max_file_bytes.max(config.max_image_bytes);
    let form = form
        .read(FormLimits {
            // Room for the boundaries and the small fields.
            max_body_bytes: largest.saturating_add(64 * 1024),
            max_text_bytes: 1024,
            max_fields: 8,
        })
        .await
        .map_err(|error| match error.code {
            ErrorCode::PayloadTooLarge => kinds::too_large(config, "application/octet-stream"),
            _ => error,
        })?;
    let mut errors = FieldErrors::default();
    let file = errors.check(
        "file",
        form.file("file")
            .ok_or_else(|| "attach the file as `file`".to_owned()),
    );
    let filename = file.and_then(|file| {
        errors.check(
            "file",
            parse_filename(file.filename.as_deref().unwrap_or_default()),
        )
    });
    let purpose = errors
        .check(
            "purpose",
            form.text("purpose").and_then(|text| {
                text.map(|text| {
                    FilePurpose::parse(text).ok_or_else(|| "use attachment or avatar".to_owned())
                })
                .transpose()
            }),
        )
        .flatten()
        .unwrap_or_default();
    let session_id = errors
        .check(
            "sessionId",
            form.text("sessionId").and_then(|text| {
                text.filter(|text| !text.is_empty())
                    .map(parse_session_id)
                    .transpose()
            }),
        )
        .flatten();
    let (Some(file), Some(filename)) = (file, filename) else {
        return Err(errors.into_error());
    };
    if !errors.is_empty() {
        return Err(errors.into_error());
    }
    check_session(&ctx, caller.user.id, session_id).await?;
    let incoming = Incoming {
        user_id: caller.user.id,
        session_id,
        purpose,
        filename,
        declared_type: file.content_type.clone(),
    };
    let row = ingest::store_new(&ctx, incoming, file.bytes.clone()).await?;
    Ok(links(&ctx).view(row))
}

/// `files.createUpload`: reserves the file (and its quota) and signs a link that accepts
/// exactly the declared bytes.
async fn create_upload(
    ctx: Ctx,
    caller: SignedIn,
    input: CreateUploadInput,
) -> Result<UploadTarget, RpcError> {
    let config = &ctx.state.config.files;
    let mut errors = FieldErrors::default();
    let filename = errors.check("filename", parse_filename(&input.filename));
    let sha256 = errors.check("sha256", ingest::parse_sha256(&input.sha256));
    if input.size_bytes == 0 {
        errors.check::<()>(
            "sizeBytes",
            Err("an empty file cannot be uploaded".to_owned()),
        );
    }
    let (Some(filename), Some(_)) = (filename, sha256) else {
        return Err(errors.into_error());
    };
    if !errors.is_empty() {
        return Err(errors.into_error());
    }
    kinds::check_declared(&input.mime_type)?;
    if u64::from(input.size_bytes) > kinds::max_bytes(config, &input.mime_type) {
        return Err(kinds::too_large(config, &input.mime_type));
    }
    let purpose = input.purpose.unwrap_or_default();
    ingest::check_purpose(purpose, &input.mime_type)?;
    check_session(&ctx, caller.user.id, input.session_id).await?;
    let row = ingest::reserve(
        &ctx,
        store::NewRow {
            id: Uuid::now_v7(),
            user_id: caller.user.id,
            session_id: input.session_id,
            purpose,
            status: FileStatus::Pending,
            filename,
            mime_type: input.mime_type.clone(),
            size_bytes: u64::from(input.size_bytes),
            sha256: Some(input.sha256.clone()),
        },
    )
    .await?;
    let expires_at = chrono::Utc::now()
        + chrono::Duration::from_std(config.upload_url_ttl)
            .unwrap_or(chrono::Duration::minutes(15));
    let links = links(&ctx);
    let link = ctx
        .state
        .storage
        .upload_url(
            &links.base,
            &Upload {
                key: &row.object_key,
                content_type: &input.mime_type,
                size: u64::from(input.size_bytes),
                sha256: &input.sha256,
                expires_at,
            },
        )
        .await
        .map_err(|error| storage_unavailable(&error))?;
    Ok(UploadTarget {
        file_id: row.id,
        url: link.url,
        method: UploadMethod::Put,
        headers: link.headers,
        expires_at: expires_at.into(),
    })
}

/// `files.complete`: checks what arrived through the upload link and makes the file ready.
/// Completing a ready (or refused) file again answers it as it is.
async fn complete(ctx: Ctx, caller: SignedIn, input: FileIdInput) -> Result<File, RpcError> {
    let row = store::find_owned(&ctx.state.db, caller.user.id, input.file_id)
        .await
        .map_err(internal("load a file"))?
        .ok_or_else(not_found)?;
    if FileStatus::parse(&row.status) != FileStatus::Pending {
        return Ok(links(&ctx).view(row));
    }
    let bytes = match ctx.state.storage.get(&row.object_key).await {
        Ok(bytes) => bytes,
        Err(StorageError::NotFound) => {
            return Err(RpcError::new(
                ErrorCode::PreconditionFailed,
                "Nothing was uploaded yet: send the bytes to the upload link, then complete.",
            )
            .with_reason(Reason::UploadIncomplete));
        }
        Err(error) => return Err(storage_unavailable(&error)),
    };
    let row = ingest::finish_pending(&ctx, row, bytes).await?;
    Ok(links(&ctx).view(row))
}

const FILES_PAGE: PageSize = PageSize {
    default: 50,
    max: 100,
};

/// `files.list`: the caller's files, newest first.
async fn list(ctx: Ctx, caller: SignedIn, input: ListFilesInput) -> Result<FilePage, RpcError> {
    let page = PageRequest::<Uuid>::of_input(
        FILES_PAGE,
        input.limit,
        input.cursor.as_deref(),
        input.direction,
    )?;
    let mut mine = files::Entity::find().filter(files::Column::UserId.eq(caller.user.id));
    if let Some(purpose) = input.purpose {
        mine = mine.filter(files::Column::Purpose.eq(purpose.as_str()));
    }
    if let Some(session_id) = input.session_id {
        mine = mine.filter(files::Column::SessionId.eq(session_id));
    }
    let rows = page
        .newest_first(mine, files::Column::Id)
        .all(&ctx.state.db)
        .await
        .map_err(internal("list files"))?;
    let (rows, next_cursor) = page.finish_in_list_order(rows, |row| row.id);
    let links = links(&ctx);
    Ok(FilePage {
        files: rows.into_iter().map(|row| links.view(row)).collect(),
        next_cursor,
    })
}

/// `files.get`
async fn get(ctx: Ctx, caller: SignedIn, input: FileRefInput) -> Result<File, RpcError> {
    let row = store::find_owned(&ctx.state.db, caller.user.id, input.id)
        .await
        .map_err(internal("load a file"))?
        .ok_or_else(not_found)?;
    Ok(links(&ctx).view(row))
}

/// `files.delete`: the row, then the bytes (a failure there leaves them to the sweep, which
/// removes objects without rows).
async fn delete(ctx: Ctx, caller: SignedIn, input: FileRefInput) -> Result<(), RpcError> {
    let row = store::find_owned(&ctx.state.db, caller.user.id, input.id)
        .await
        .map_err(internal("load a file"))?
        .ok_or_else(not_found)?;
    remove(&ctx, &row).await?;
    audit::record(
        &ctx.state.db,
        &ctx.request,
        Some(caller.user.id),
        AuditAction::FileDeleted,
        serde_json::json!({ "fileId": row.id, "purpose": row.purpose }),
    )
    .await;
    Ok(())
}

/// Deletes a file's row and bytes (for `files.delete`, and a replaced avatar); a deleted
/// avatar stops being the user's picture.
pub async fn remove(ctx: &Ctx, row: &files::Model) -> Result<(), RpcError> {
    if store::clear_avatar(&ctx.state.db, row.user_id, row.id)
        .await
        .map_err(internal("clear an avatar"))?
    {
        ctx.state.auth.session_cache.forget_user(row.user_id).await;
    }
    store::delete(&ctx.state.db, row.id)
        .await
        .map_err(internal("delete a file"))?;
    ingest::delete_objects(ctx, row).await;
    Ok(())
}
