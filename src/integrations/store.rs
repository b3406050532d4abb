//! The `google_connections` table: the sealed refresh token and where the sync stands.

use chrono::Utc;
use entity::{google_connections, mail_messages};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter, Set};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::context::AppState;
use crate::crypto::{self, EncryptionContext, Sealed, VaultError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
}

/// Binds the sealed token to its owner: moved to another user's row, it will not open.
fn context(user_id: Uuid) -> EncryptionContext {
    EncryptionContext::new(user_id.to_string(), "google_refresh_token")
}

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "integrations.find"))]
pub async fn find(
    db: &DatabaseConnection,
    user_id: Uuid,
) -> Result<Option<google_connections::Model>, sea_orm::DbErr> {
    google_connections::Entity::find_by_id(user_id)
        .one(db)
        .await
}

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "integrations.message_count"))]
pub async fn message_count(db: &DatabaseConnection, user_id: Uuid) -> Result<u64, sea_orm::DbErr> {
    mail_messages::Entity::find()
        .filter(mail_messages::Column::UserId.eq(user_id))
        .count(db)
        .await
}

/// Saves a new connection, or a new token for the same Google account (keeping the synced
/// mail and where incremental sync stands). Connecting another Google account starts over:
/// the previous account's mail goes with its row. One upsert, so concurrent connects of one
/// user all succeed (the last one stands).
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "integrations.connect"))]
pub async fn connect(
    state: &AppState,
    user_id: Uuid,
    email: &str,
    scopes: &str,
    refresh_token: &str,
) -> Result<(), StoreError> {
    let sealed = crypto::seal(
        state.vault.as_ref(),
        refresh_token.as_bytes(),
        &context(user_id),
    )
    .await?;
    let now = Utc::now();
    if let Some(row) = find(&state.db, user_id).await?
        && !row.email.eq_ignore_ascii_case(email)
    {
        delete(&state.db, user_id).await?;
    }
    use google_connections::Column as C;
    // A row another connect saved meanwhile keeps its sync state only for the same account.
    let same_account_or_null = |column: &str| {
        Expr::cust(format!(
            "CASE WHEN lower(google_connections.email) = lower(excluded.email) \
             THEN google_connections.{column} ELSE NULL END"
        ))
    };
    google_connections::Entity::insert(google_connections::ActiveModel {
        user_id: Set(user_id),
        email: Set(email.to_owned()),
        scopes: Set(scopes.to_owned()),
        status: Set("syncing".to_owned()),
        ciphertext: Set(sealed.ciphertext),
        nonce: Set(sealed.nonce),
        wrapped_key: Set(sealed.wrapped_key),
        key_id: Set(sealed.key_id),
        format_version: Set(sealed.format_version),
        history_id: Set(None),
        sync_page_token: Set(None),
        last_error: Set(None),
        last_sync_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(C::UserId)
            .value(C::HistoryId, same_account_or_null("history_id"))
            .value(C::SyncPageToken, same_account_or_null("sync_page_token"))
            .value(C::LastSyncAt, same_account_or_null("last_sync_at"))
            .update_columns([
                C::Email,
                C::Scopes,
                C::Status,
                C::Ciphertext,
                C::Nonce,
                C::WrappedKey,
                C::KeyId,
                C::FormatVersion,
                C::LastError,
                C::UpdatedAt,
            ])
            .to_owned(),
    )
    .exec_without_returning(&state.db)
    .await?;
    Ok(())
}

/// Opens the connection's refresh token.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "integrations.refresh_token"))]
pub async fn refresh_token(
    state: &AppState,
    row: &google_connections::Model,
) -> Result<Zeroizing<String>, VaultError> {
    let sealed = Sealed {
        ciphertext: row.ciphertext.clone(),
        nonce: row.nonce.clone(),
        wrapped_key: row.wrapped_key.clone(),
        key_id: row.key_id.clone(),
        format_version: row.format_version,
    };
    let plain = crypto::open(state.vault.as_ref(), &sealed, &context(row.user_id)).await?;
    String::from_utf8(plain.to_vec())
        .map(Zeroizing::new)
        .map_err(|_| VaultError::Integrity)
}

/// Deletes the connection and, through the foreign key, its mail.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "integrations.delete"))]
pub async fn delete(db: &DatabaseConnection, user_id: Uuid) -> Result<bool, sea_orm::DbErr> {
    let result = google_connections::Entity::delete_by_id(user_id)
        .exec(db)
        .await?;
    Ok(result.rows_affected > 0)
}

/// Records the connection's status (and why, for `error` and `reconnect_required`).
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "integrations.set_status"))]
pub async fn set_status(
    db: &DatabaseConnection,
    user_id: Uuid,
    status: &str,
    error: Option<&str>,
) -> Result<(), sea_orm::DbErr> {
    google_connections::Entity::update_many()
        .col_expr(google_connections::Column::Status, Expr::value(status))
        .col_expr(google_connections::Column::LastError, Expr::value(error))
        .col_expr(
            google_connections::Column::UpdatedAt,
            Expr::value(Utc::now()),
        )
        .filter(google_connections::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Where the sync stands: Gmail's `historyId` to continue from, and the next page of a full
/// sync in progress (`Some("")`: its first page).
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "integrations.save_progress"))]
pub async fn save_progress(
    db: &DatabaseConnection,
    user_id: Uuid,
    history_id: Option<&str>,
    page_token: Option<&str>,
) -> Result<(), sea_orm::DbErr> {
    google_connections::Entity::update_many()
        .col_expr(
            google_connections::Column::HistoryId,
            Expr::value(history_id),
        )
        .col_expr(
            google_connections::Column::SyncPageToken,
            Expr::value(page_token),
        )
        .col_expr(
            google_connections::Column::UpdatedAt,
            Expr::value(Utc::now()),
        )
        .filter(google_connections::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    Ok(())
}

/// A sync finished: the connection is active as of now.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "integrations.mark_synced"))]
pub async fn mark_synced(db: &DatabaseConnection, user_id: Uuid) -> Result<(), sea_orm::DbErr> {
    let now = Utc::now();
    google_connections::Entity::update_many()
        .col_expr(google_connections::Column::Status, Expr::value("active"))
        .col_expr(
            google_connections::Column::LastError,
            Expr::value(None::<String>),
        )
        .col_expr(google_connections::Column::LastSyncAt, Expr::value(now))
        .col_expr(google_connections::Column::UpdatedAt, Expr::value(now))
        .filter(google_connections::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    Ok(())
}
