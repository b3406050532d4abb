//! What the app sees of files, and the inputs of `files.*`.

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use entity::files;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::FilesConfig;
use crate::pagination::Direction;
use crate::rpc::Timestamp;
use crate::storage::{Download, Expiry, Storage};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "lowercase")]
pub enum FilePurpose {
    /// For a chat (`sessionId`) or to send with messages.
    #[default]
    Attachment,
    /// A profile picture (`users.update { avatarFileId }`); images only.
    Avatar,
}

impl FilePurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attachment => "attachment",
            Self::Avatar => "avatar",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "attachment" => Some(Self::Attachment),
            "avatar" => Some(Self::Avatar),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, specta::Type)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    Ready,
    /// An upload link was handed out; `files.complete` has not succeeded yet.
    Pending,
    /// The uploaded bytes were refused (type, size or checksum); nothing is kept.
    Rejected,
    /// Only in a chat message's `attachments`: the file was deleted since. Its id, name, type
    /// and size are as sent; `url`, `thumbnailUrl`, `width`, `height` and `thumbhash` are
    /// null, and `createdAt` is the message's.
    Deleted,
}

impl FileStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Pending => "pending",
            Self::Rejected => "rejected",
            Self::Deleted => "deleted",
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "ready" => Self::Ready,
            "pending" => Self::Pending,
            _ => Self::Rejected,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct File {
    pub id: Uuid,
    pub filename: String,
    /// The type found in the bytes (declared, while pending).
    pub mime_type: String,
    pub size_bytes: u32,
    pub purpose: FilePurpose,
    pub status: FileStatus,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// A tiny placeholder to show while the image loads (base64 ThumbHash).
    pub thumbhash: Option<String>,
    /// A signed, short-lived link to the bytes (`ALIAS_FILE_URL_SECONDS`; an avatar's never
    /// expires and stays the same for the same picture). Null unless ready.
    pub url: Option<String>,
    /// The same for a thumbnail (longest side at most 320 px), for images.
    pub thumbnail_url: Option<String>,
    pub session_id: Option<Uuid>,
    pub created_at: Timestamp,
}

/// Signs links to rows' bytes, at one base URL and time.
pub struct Links<'a> {
    pub storage: &'a Storage,
    pub config: &'a FilesConfig,
    pub base: String,
}

impl Links<'_> {
    fn expiry(&self, purpose: FilePurpose) -> Expiry {
        match purpose {
            FilePurpose::Avatar => Expiry::Never,
            FilePurpose::Attachment => Expiry::At(
                Utc::now()
                    + Duration::from_std(self.config.url_ttl).unwrap_or(Duration::minutes(15)),
            ),
        }
    }

    pub fn view(&self, row: files::Model) -> File {
        let purpose = FilePurpose::parse(&row.purpose).unwrap_or_default();
        let status = FileStatus::parse(&row.status);
        let ready = status == FileStatus::Ready;
        let expiry = self.expiry(purpose);
        let link = |key: &str, content_type: &str| {
            self.storage.download_url(
                &self.base,
                &Download {
                    key,
                    content_type,
                    filename: &row.filename,
                    expiry,
                },
            )
        };
        let url = ready.then(|| link(&row.object_key, &row.mime_type));
        let thumbnail_url = row
            .thumbnail_key
            .as_deref()
            .filter(|_| ready)
            .map(|key| link(key, super::kinds::THUMBNAIL_TYPE));
        File {
            id: row.id,
            url,
            thumbnail_url,
            filename: row.filename,
            mime_type: row.mime_type,
            size_bytes: u32::try_from(row.size_bytes).unwrap_or(u32::MAX),
            purpose,
            status,
            width: row.width.and_then(|w| u32::try_from(w).ok()),
            height: row.height.and_then(|h| u32::try_from(h).ok()),
            thumbhash: row.thumbhash,
            session_id: row.session_id,
            created_at: row.created_at.into(),
        }
    }
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUploadInput {
    pub filename: String,
    pub mime_type: String,
    pub size_bytes: u32,
    /// SHA-256 of the bytes, base64 (what S3 calls `x-amz-checksum-sha256`).
    pub sha256: String,
    #[serde(default)]
    pub purpose: Option<FilePurpose>,
    #[serde(default)]
    pub session_id: Option<Uuid>,
}

#[derive(Debug, Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct UploadTarget {
    pub file_id: Uuid,
    /// Send the bytes here, with `method` and exactly `headers`; then call `files.complete`.
    pub url: String,
    pub method: UploadMethod,
    pub headers: BTreeMap<String, String>,
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, Copy, Serialize, specta::Type)]
pub enum UploadMethod {
    #[serde(rename = "PUT")]
    Put,
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileIdInput {
    pub file_id: Uuid,
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileRefInput {
    pub id: Uuid,
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListFilesInput {
    /// 1 to 100 (default 50).
    #[serde(default)]
    pub limit: Option<u32>,
    /// The `nextCursor` of a previous page; absent or null for the first page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// `forward` (default): older files than the cursor; `backward`: newer ones.
    #[serde(default)]
    pub direction: Option<Direction>,
    #[serde(default)]
    pub purpose: Option<FilePurpose>,
    #[serde(default)]
    pub session_id: Option<Uuid>,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct FilePage {
    /// Newest first.
    pub files: Vec<File>,
    pub next_cursor: Option<String>,
}
