//! `users.export`: everything a user owns as one JSON file (the account-portability answer):
//! profile, preferences, projects and every chat with its whole message tree (and the project
//! it is in), never a secret (no
//! password hash, API key or token). The file is written to storage under `exports/` and
//! answered as a signed download link that works for `LINK_LIFETIME`; the user's earlier
//! exports are deleted then, and the sweep deletes every export older than `KEPT_FOR` (so
//! an export outlives a deleted account by an hour at most).
//!
//! A domain above `users`, `preferences`, `chat` and `projects` (it reads them; none reads it).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::chat::export::{ExportedChat, exported_chat, sessions_of};
use crate::context::{App, Ctx};
use crate::guard::{SignedIn, signed_in};
use crate::preferences::{self, Preferences};
use crate::projects::{self, Project};
use crate::rpc::{Router, RpcError, Timestamp, internal};
use crate::storage::{Download, Expiry};
use crate::users::User;

/// Where exports are stored: `exports/<user id>/<export id>.json`.
const PREFIX: &str = "exports/";
/// How long a download link works.
const LINK_LIFETIME: chrono::Duration = chrono::Duration::minutes(15);
/// How long an export is kept in storage.
const KEPT_FOR: chrono::Duration = chrono::Duration::hours(1);
const SWEEP_EVERY: Duration = Duration::from_secs(600);
const FIRST_SWEEP: Duration = Duration::from_secs(90);
/// The `format` field of the file.
const FORMAT: &str = "alias.account";

/// Mounted under `users.`.
pub fn router() -> Router<App> {
    Router::new().mutation("export", signed_in(export))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AccountExport {
    format: &'static str,
    version: u32,
    exported_at: DateTime<Utc>,
    profile: User,
    preferences: Preferences,
    projects: Vec<Project>,
    chats: Vec<ExportedSession>,
}

/// A chat of the account: its own export (`chat.export`'s JSON) with its place in the list.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExportedSession {
    id: Uuid,
    is_pinned: bool,
    is_archived: bool,
    /// One of `projects`, or null.
    project_id: Option<Uuid>,
    #[serde(flatten)]
    chat: ExportedChat,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct AccountDownload {
    /// A signed link to the JSON file (GET, no sign-in needed); it stops working at
    /// `expiresAt`, and the file is deleted within the hour.
    url: String,
    filename: String,
    size_bytes: u32,
    expires_at: Timestamp,
}

/// `users.export`
async fn export(ctx: Ctx, caller: SignedIn, _: ()) -> Result<AccountDownload, RpcError> {
    let db = &ctx.state.db;
    let user_id = caller.user.id;
    let preferences = preferences::for_user(db, user_id).await?;
    let mut chats = Vec::new();
    for session in sessions_of(db, user_id)
        .await
        .map_err(internal("list chats to export"))?
    {
        chats.push(ExportedSession {
            id: session.id,
            is_pinned: session.is_pinned,
            is_archived: session.is_archived,
            project_id: session.project_id,
            chat: exported_chat(db, &session)
                .await
                .map_err(internal("export a chat"))?,
        });
    }
    let now = Utc::now();
    let account = AccountExport {
        format: FORMAT,
        version: 1,
        exported_at: now,
        profile: User::new(&ctx, caller.user, caller.auth_providers),
        preferences,
        projects: projects::all_of(db, user_id)
            .await
            .map_err(internal("list projects to export"))?,
        chats,
    };
    let bytes = serde_json::to_vec_pretty(&account).map_err(internal("export an account"))?;
    let size_bytes = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    let storage = &ctx.state.storage;
    let folder = format!("{PREFIX}{user_id}/");
    for earlier in storage.list(&folder).await.map_err(unavailable)? {
        storage.delete(&earlier.key).await.map_err(unavailable)?;
    }
    let key = format!("{folder}{}.json", Uuid::now_v7());
    storage.put(&key, bytes.into()).await.map_err(unavailable)?;
    let filename = format!("alias-export-{}.json", now.format("%Y-%m-%d"));
    let expires_at = now + LINK_LIFETIME;
    let url = storage.download_url(
        &storage.base_url(ctx.request.header("host")),
        &Download {
            key: &key,
            content_type: "application/json",
            filename: &filename,
            expiry: Expiry::At(expires_at),
        },
    );
    Ok(AccountDownload {
        url,
        filename,
        size_bytes,
        expires_at: expires_at.into(),
    })
}

fn unavailable(error: crate::storage::StorageError) -> RpcError {
    internal("store an account export")(error)
}

/// Deletes exports older than `KEPT_FOR` until `shutdown`.
pub async fn sweep_periodically(state: App, shutdown: CancellationToken) {
    crate::periodic::every("export sweep", FIRST_SWEEP, SWEEP_EVERY, shutdown, || {
        sweep(&state, Utc::now())
    })
    .await;
}

/// One sweep as of `now`: how many exports went.
pub async fn sweep(state: &App, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let mut deleted = 0;
    for object in state.storage.list(PREFIX).await? {
        if object.last_modified < now - KEPT_FOR {
            state.storage.delete(&object.key).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}
