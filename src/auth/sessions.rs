//! Sessions and their refresh-token families (Supabase Auth's design): every refresh rotates
//! the token; presenting a rotated one again revokes the whole session, except when the
//! client raced itself (a double tap or a retry within the reuse interval).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use entity::{auth_sessions, refresh_tokens};
use rand::RngCore as _;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, Set,
};
use uuid::Uuid;

use crate::audit;
use crate::context::AppState;
use crate::rpc::RequestInfo;

/// The credentials a sign-in or refresh hands to the client.
pub struct IssuedTokens {
    pub user_id: Uuid,
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in_seconds: u64,
}

#[derive(Debug)]
pub enum RefreshError {
    /// Not a token we issued.
    Unknown,
    Revoked,
    Expired,
    /// A rotated token presented again: the session is now revoked.
    Reused,
    Internal(anyhow::Error),
}

impl From<sea_orm::DbErr> for RefreshError {
    fn from(error: sea_orm::DbErr) -> Self {
        Self::Internal(error.into())
    }
}

/// Starts a session for a user who just signed in and issues its first tokens; `db` is the
/// caller's transaction (the session is written with the sign-in or sign-up it belongs to).
pub async fn start(
    state: &AppState,
    db: &impl ConnectionTrait,
    user_id: Uuid,
    request: &RequestInfo,
) -> anyhow::Result<IssuedTokens> {
    let now = Utc::now();
    let session = auth_sessions::ActiveModel {
        id: Set(Uuid::new_v4()),
        user_id: Set(user_id),
        user_agent: Set(request.user_agent().map(audit::truncate_user_agent)),
        ip: Set(Some(request.client_ip.to_string())),
        created_at: Set(now),
        last_used_at: Set(now),
        expires_at: Set(now + state.config.auth.refresh_ttl),
        revoked_at: Set(None),
    };
    let session = session.insert(db).await?;
    let refresh_token = insert_refresh_token(db, session.id, None).await?;
    issue(state, user_id, session.id, refresh_token)
}

/// Exchanges a refresh token for new tokens, rotating it.
pub async fn refresh(
    state: &AppState,
    token: &str,
    request: &RequestInfo,
) -> Result<IssuedTokens, RefreshError> {
    let db = &state.db;
    let (presented, session) = find_token(db, token).await?;
    if session.revoked_at.is_some() {
        return Err(RefreshError::Revoked);
    }
    if session.expires_at <= Utc::now() {
        return Err(RefreshError::Expired);
    }
    if !presented.revoked
        && let Some(next) = rotate(db, &presented).await?
    {
        return finish_refresh(state, &session, next).await;
    }
    // Already rotated, by an earlier call or one racing this one: reload to see when.
    let presented = refresh_tokens::Entity::find_by_id(presented.id)
        .one(db)
        .await?
        .ok_or(RefreshError::Revoked)?;
    if is_within_reuse_grace(state, &presented).await? {
        let sibling = insert_refresh_token(db, session.id, Some(presented.id)).await?;
        return finish_refresh(state, &session, sibling).await;
    }
    revoke_family(state, session.user_id, session.id).await?;
    audit::record(
        db,
        request,
        Some(session.user_id),
        audit::AuditAction::RefreshTokenReused,
        serde_json::json!({ "sessionId": session.id }),
    )
    .await;
    Err(RefreshError::Reused)
}

async fn find_token(
    db: &DatabaseConnection,
    token: &str,
) -> Result<(refresh_tokens::Model, auth_sessions::Model), RefreshError> {
    let found = refresh_tokens::Entity::find()
        .filter(refresh_tokens::Column::TokenHash.eq(hash_token(token)))
        .find_also_related(auth_sessions::Entity)
        .one(db)
        .await?;
    match found {
        Some((token, Some(session))) => Ok((token, session)),
        _ => Err(RefreshError::Unknown),
    }
}

/// Rotates `presented` into a new token, in one transaction so a racing refresh sees either
/// neither or both. Conditional on `presented` being active, so of two concurrent refreshes
/// exactly one wins, on SQLite and PostgreSQL alike, without holding locks across calls.
/// Siblings left by an earlier raced refresh are superseded by the rotation.
async fn rotate(
    db: &DatabaseConnection,
    presented: &refresh_tokens::Model,
) -> Result<Option<String>, RefreshError> {
    let now = Utc::now();
    let transaction = crate::db::begin_write(db).await?;
    let rotated = refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::Revoked, Expr::value(true))
        .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(now))
        .filter(refresh_tokens::Column::Id.eq(presented.id))
        .filter(refresh_tokens::Column::Revoked.eq(false))
        .exec(&transaction)
        .await?
        .rows_affected
        == 1;
    if !rotated {
        transaction.rollback().await?;
        return Ok(None);
    }
    revoke_active_tokens(&transaction, presented.session_id, now).await?;
    let next = insert_refresh_token(&transaction, presented.session_id, Some(presented.id)).await?;
    transaction.commit().await?;
    Ok(Some(next))
}

/// A rotated token may be presented again for a short while if it is the parent of the
/// session's active token: the client sent it twice before storing the answer. Anything
/// else (an older token, or later) is reuse.
async fn is_within_reuse_grace(
    state: &AppState,
    presented: &refresh_tokens::Model,
) -> Result<bool, RefreshError> {
    let recent = presented.revoked_at.is_some_and(|at| {
        (Utc::now() - at)
            .to_std()
            .is_ok_and(|age| age <= state.config.auth.refresh_reuse_interval)
    });
    if !recent {
        return Ok(false);
    }
    let active_child = refresh_tokens::Entity::find()
        .filter(refresh_tokens::Column::ParentId.eq(presented.id))
        .filter(refresh_tokens::Column::Revoked.eq(false))
        .one(&state.db)
        .await?;
    Ok(active_child.is_some())
}

async fn finish_refresh(
    state: &AppState,
    session: &auth_sessions::Model,
    refresh_token: String,
) -> Result<IssuedTokens, RefreshError> {
    auth_sessions::Entity::update_many()
        .col_expr(auth_sessions::Column::LastUsedAt, Expr::value(Utc::now()))
        .filter(auth_sessions::Column::Id.eq(session.id))
        .exec(&state.db)
        .await?;
    issue(state, session.user_id, session.id, refresh_token).map_err(RefreshError::Internal)
}

/// Revokes `user_id`'s session `session_id` and every token of its family; access tokens stop
/// working at once because each call checks the session (and the session cache forgets it
/// here).
pub async fn revoke_family(
    state: &AppState,
    user_id: Uuid,
    session_id: Uuid,
) -> Result<(), sea_orm::DbErr> {
    let now = Utc::now();
    let transaction = crate::db::begin_write(&state.db).await?;
    auth_sessions::Entity::update_many()
        .col_expr(auth_sessions::Column::RevokedAt, Expr::value(now))
        .filter(auth_sessions::Column::Id.eq(session_id))
        .filter(auth_sessions::Column::RevokedAt.is_null())
        .exec(&transaction)
        .await?;
    revoke_active_tokens(&transaction, session_id, now).await?;
    transaction.commit().await?;
    state
        .auth
        .session_cache
        .forget_session(user_id, session_id)
        .await;
    Ok(())
}

/// Revokes every session of a user (a password reset, an account reclaimed by its address's
/// owner) inside the caller's transaction; forget the user in the session cache after it
/// commits. Their refresh tokens die with them (a refresh checks its session).
pub async fn revoke_all(db: &impl ConnectionTrait, user_id: Uuid) -> Result<(), sea_orm::DbErr> {
    auth_sessions::Entity::update_many()
        .col_expr(auth_sessions::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(auth_sessions::Column::UserId.eq(user_id))
        .filter(auth_sessions::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

async fn revoke_active_tokens(
    db: &impl ConnectionTrait,
    session_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::Revoked, Expr::value(true))
        .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(now))
        .filter(refresh_tokens::Column::SessionId.eq(session_id))
        .filter(refresh_tokens::Column::Revoked.eq(false))
        .exec(db)
        .await?;
    Ok(())
}

/// The user's sessions that can still be used, most recently used first.
pub async fn list_active(
    db: &DatabaseConnection,
    user_id: Uuid,
) -> Result<Vec<auth_sessions::Model>, sea_orm::DbErr> {
    auth_sessions::Entity::find()
        .filter(auth_sessions::Column::UserId.eq(user_id))
        .filter(auth_sessions::Column::RevokedAt.is_null())
        .filter(auth_sessions::Column::ExpiresAt.gt(Utc::now()))
        .order_by_desc(auth_sessions::Column::LastUsedAt)
        .all(db)
        .await
}

fn issue(
    state: &AppState,
    user_id: Uuid,
    session_id: Uuid,
    refresh_token: String,
) -> anyhow::Result<IssuedTokens> {
    let tokens = &state.auth.access_tokens;
    Ok(IssuedTokens {
        user_id,
        access_token: tokens.issue(user_id, session_id)?,
        refresh_token,
        expires_in_seconds: tokens.ttl().as_secs(),
    })
}

/// 256 random bits, base64url; only its SHA-256 is stored.
async fn insert_refresh_token(
    db: &impl ConnectionTrait,
    session_id: Uuid,
    parent_id: Option<Uuid>,
) -> Result<String, sea_orm::DbErr> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    refresh_tokens::ActiveModel {
        id: Set(Uuid::now_v7()),
        session_id: Set(session_id),
        token_hash: Set(hash_token(&token)),
        parent_id: Set(parent_id),
        revoked: Set(false),
        revoked_at: Set(None),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await?;
    Ok(token)
}

fn hash_token(token: &str) -> String {
    crate::security::sha256_hex(token)
}
