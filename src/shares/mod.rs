//! `chat.shares.*`: share links to a read-only copy of a chat, and their public page
//! (`GET /s/{token}`, in `page.rs`). A link holds a snapshot made when it was created (later
//! messages are never shared) and is found only by a keyed hash of its token: the token is
//! shown once, in `create`'s `url`, and never stored. Sits above `chat`, whose conversation
//! it copies. `ALIAS_SHARING=false` turns it all off.

mod page;
mod render;
mod snapshot;
mod store;

use chrono::{DateTime, Utc};
use entity::shares;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

pub use page::routes;
use snapshot::SnapshotError;
use store::NewShare;

use crate::audit::{self, AuditAction};
use crate::context::{App, Ctx};
use crate::guard::{SignedIn, signed_in};
use crate::pagination::{Direction, PageRequest, PageSize};
use crate::reason::Reason;
use crate::rpc::{ErrorCode, FieldErrors, Router, RpcError, Timestamp, internal};

/// Mounted under `chat.shares`.
pub fn router() -> Router<App> {
    Router::new()
        .mutation("create", signed_in(create))
        .query("list", signed_in(list))
        .mutation("revoke", signed_in(revoke))
}

const SHARE_PAGE: PageSize = PageSize {
    default: 20,
    max: 100,
};

/// FORBIDDEN (`sharing_disabled`) while `ALIAS_SHARING` is off.
fn require_sharing(ctx: &Ctx) -> Result<(), RpcError> {
    if ctx.state.config.sharing.enabled {
        Ok(())
    } else {
        Err(RpcError::new(
            ErrorCode::Forbidden,
            "Sharing is turned off on this server.",
        )
        .with_reason(Reason::SharingDisabled))
    }
}

fn chat_not_found() -> RpcError {
    RpcError::not_found("No such chat.")
}

fn share_not_found() -> RpcError {
    RpcError::not_found("No such share link.")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, specta::Type)]
#[serde(rename_all = "lowercase")]
pub enum ShareStatus {
    /// The page shows the snapshot.
    Active,
    /// Past `expiresAt`: the page answers 410.
    Expired,
    /// Revoked (`chat.shares.revoke`): the page answers 410.
    Revoked,
}

/// A share link as its owner sees it. Its URL is not here: only its hash is kept, so copy the
/// link when `chat.shares.create` returns it.
#[derive(Debug, Clone, Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct ShareLink {
    pub id: Uuid,
    pub session_id: Uuid,
    /// The chat's title when the link was made.
    pub title: String,
    /// Messages in the snapshot.
    pub message_count: u32,
    pub status: ShareStatus,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

impl ShareLink {
    fn of(row: shares::Model, now: DateTime<Utc>) -> Self {
        let status = if row.revoked_at.is_some() {
            ShareStatus::Revoked
        } else if row.expires_at.is_some_and(|at| at <= now) {
            ShareStatus::Expired
        } else {
            ShareStatus::Active
        };
        Self {
            id: row.id,
            session_id: row.session_id,
            title: row.title,
            message_count: u32::try_from(row.message_count).unwrap_or_default(),
            status,
            created_at: row.created_at.into(),
            expires_at: row.expires_at.map(Timestamp::from),
            revoked_at: row.revoked_at.map(Timestamp::from),
        }
    }
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateShareInput {
    session_id: Uuid,
    /// Share the branch through this message, up to and including it (default: the chat's
    /// current branch, as `chat.messages.list` shows it).
    #[serde(default)]
    up_to_message_id: Option<Uuid>,
    /// When the link stops working (RFC 3339, in the future); default: never.
    #[serde(default)]
    expires_at: Option<String>,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct CreatedShare {
    id: Uuid,
    /// The public page, `<ALIAS_PUBLIC_URL>/s/<token>`: shown this once, never again.
    url: String,
}

fn parse_expiry(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let at = DateTime::parse_from_rfc3339(text.trim())
        .map_err(|_| "use an RFC 3339 time, e.g. 2030-01-31T09:30:00Z".to_owned())?
        .with_timezone(&Utc);
    if at <= now {
        return Err("use a time in the future".to_owned());
    }
    Ok(at)
}

/// `chat.shares.create`: copies the conversation's messages now (text and model; no tool
/// results, files or replies still being written) and returns the link's only copy.
async fn create(
    ctx: Ctx,
    caller: SignedIn,
    input: CreateShareInput,
) -> Result<CreatedShare, RpcError> {
    require_sharing(&ctx)?;
    let mut errors = FieldErrors::default();
    let expires_at = input
        .expires_at
        .map(|text| errors.check("expiresAt", parse_expiry(&text, Utc::now())));
    if !errors.is_empty() {
        return Err(errors.into_error());
    }
    let db = &ctx.state.db;
    let session = crate::chat::find_session(db, caller.user.id, input.session_id)
        .await
        .map_err(internal("load a chat session"))?
        .ok_or_else(chat_not_found)?;
    let conversation = crate::chat::conversation(db, &session, input.up_to_message_id)
        .await
        .map_err(internal("read a chat to share"))?;
    let messages =
        snapshot::take(conversation, input.up_to_message_id).map_err(|error| match error {
            SnapshotError::NoSuchMessage => RpcError::not_found("No such message in this chat."),
            SnapshotError::TooLong => {
                let mut errors = FieldErrors::default();
                errors.check::<()>(
                    "upToMessageId",
                    Err(format!(
                        "a link holds at most {} messages: share up to an earlier message",
                        snapshot::MAX_MESSAGES
                    )),
                );
                errors.into_error()
            }
        })?;
    let (token, token_hash) = snapshot::new_token(&ctx.state.auth.token_mac);
    let share = NewShare {
        user_id: caller.user.id,
        session_id: session.id,
        token_hash,
        title: session.title,
        messages: snapshot::to_json(&messages),
        message_count: i32::try_from(messages.len()).unwrap_or(i32::MAX),
        expires_at: expires_at.flatten(),
    };
    let saved = store::insert(db, share)
        .await
        .map_err(|error| match error.sql_err() {
            // The chat was deleted meanwhile.
            Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_)) => chat_not_found(),
            _ => internal("save a share link")(error),
        })?;
    let metadata = json!({
        "shareId": saved.id,
        "sessionId": saved.session_id,
        "messageCount": saved.message_count,
        "expiresAt": saved.expires_at.map(Timestamp::from),
    });
    audit::record(
        db,
        &ctx.request,
        Some(caller.user.id),
        AuditAction::ShareCreated,
        metadata,
    )
    .await;
    let base = ctx.state.config.mail.public_url.trim_end_matches('/');
    Ok(CreatedShare {
        id: saved.id,
        url: format!("{base}/s/{token}"),
    })
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListSharesInput {
    /// Only the links of this chat.
    #[serde(default)]
    session_id: Option<Uuid>,
    /// 1 to 100 (default 20).
    #[serde(default)]
    limit: Option<u32>,
    /// The `nextCursor` of a previous page; absent or null for the first page.
    #[serde(default)]
    cursor: Option<String>,
    /// `forward` (default): older links after the cursor. `backward`: newer ones.
    #[serde(default)]
    direction: Option<Direction>,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct SharePage {
    /// Newest first, revoked and expired ones included.
    shares: Vec<ShareLink>,
    /// The next page's `cursor`, in the same direction; null at the end.
    next_cursor: Option<String>,
}

/// `chat.shares.list`
async fn list(ctx: Ctx, caller: SignedIn, input: ListSharesInput) -> Result<SharePage, RpcError> {
    require_sharing(&ctx)?;
    let page = PageRequest::<Uuid>::of_input(
        SHARE_PAGE,
        input.limit,
        input.cursor.as_deref(),
        input.direction,
    )?;
    let db = &ctx.state.db;
    if let Some(session_id) = input.session_id {
        crate::chat::find_session(db, caller.user.id, session_id)
            .await
            .map_err(internal("load a chat session"))?
            .ok_or_else(chat_not_found)?;
    }
    let rows = store::list(db, caller.user.id, input.session_id, &page)
        .await
        .map_err(internal("list share links"))?;
    let (rows, next_cursor) = page.finish_in_list_order(rows, |row| row.id);
    let now = Utc::now();
    Ok(SharePage {
        shares: rows
            .into_iter()
            .map(|row| ShareLink::of(row, now))
            .collect(),
        next_cursor,
    })
}

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokeShareInput {
    id: Uuid,
}

/// `chat.shares.revoke`: the page answers 410 from now on. Revoking twice is harmless.
async fn revoke(
    ctx: Ctx,
    caller: SignedIn,
    input: RevokeShareInput,
) -> Result<ShareLink, RpcError> {
    require_sharing(&ctx)?;
    let db = &ctx.state.db;
    let share = store::find_owned(db, caller.user.id, input.id)
        .await
        .map_err(internal("load a share link"))?
        .ok_or_else(share_not_found)?;
    let newly = share.revoked_at.is_none();
    let revoked = store::revoke(db, share)
        .await
        .map_err(|error| match error {
            sea_orm::DbErr::RecordNotUpdated => share_not_found(),
            error => internal("revoke a share link")(error),
        })?;
    if newly {
        let metadata = json!({ "shareId": revoked.id, "sessionId": revoked.session_id });
        audit::record(
            db,
            &ctx.request,
            Some(caller.user.id),
            AuditAction::ShareRevoked,
            metadata,
        )
        .await;
    }
    Ok(ShareLink::of(revoked, Utc::now()))
}
