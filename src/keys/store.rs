//! Queries for sealed API keys, and the envelope around them.

use chrono::Utc;
use entity::api_keys;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::context::AppState;
use crate::crypto::{self, EncryptionContext, KeyVault, Sealed, VaultError};
use crate::providers::AiProvider;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
}

/// Binds a sealed key to its owner and provider: moved to another row, it will not open.
fn context(user_id: Uuid, provider: &str) -> EncryptionContext {
    EncryptionContext::new(user_id.to_string(), format!("api_key:{provider}"))
}

fn hint(api_key: &str) -> String {
    let chars: Vec<char> = api_key.chars().collect();
    let last_four: String = chars[chars.len().saturating_sub(4)..].iter().collect();
    format!("…{last_four}")
}

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "keys.list"))]
pub async fn list(
    db: &DatabaseConnection,
    user_id: Uuid,
) -> Result<Vec<api_keys::Model>, sea_orm::DbErr> {
    api_keys::Entity::find()
        .filter(api_keys::Column::UserId.eq(user_id))
        .order_by_asc(api_keys::Column::Provider)
        .all(db)
        .await
}

async fn find(
    db: &DatabaseConnection,
    user_id: Uuid,
    provider: AiProvider,
) -> Result<Option<api_keys::Model>, sea_orm::DbErr> {
    api_keys::Entity::find()
        .filter(api_keys::Column::UserId.eq(user_id))
        .filter(api_keys::Column::Provider.eq(provider.as_str()))
        .one(db)
        .await
}

/// Seals `api_key` under a fresh data key and stores it, replacing the user's previous key
/// for that provider.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "keys.save"))]
pub async fn save(
    state: &AppState,
    user_id: Uuid,
    provider: AiProvider,
    api_key: &str,
    status: &str,
) -> Result<api_keys::Model, StoreError> {
    let sealed = crypto::seal(
        state.vault.as_ref(),
        api_key.as_bytes(),
        &context(user_id, provider.as_str()),
    )
    .await?;
    let now = Utc::now();
    let validated_at = (status != "unvalidated").then_some(now);
    let row = api_keys::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        provider: Set(provider.as_str().to_owned()),
        ciphertext: Set(sealed.ciphertext),
        nonce: Set(sealed.nonce),
        wrapped_key: Set(sealed.wrapped_key),
        key_id: Set(sealed.key_id),
        format_version: Set(sealed.format_version),
        hint: Set(hint(api_key)),
        status: Set(status.to_owned()),
        created_at: Set(now),
        updated_at: Set(now),
        last_validated_at: Set(validated_at),
    };
    use api_keys::Column as C;
    api_keys::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([C::UserId, C::Provider])
                .update_columns([
                    C::Ciphertext,
                    C::Nonce,
                    C::WrappedKey,
                    C::KeyId,
                    C::FormatVersion,
                    C::Hint,
                    C::Status,
                    C::UpdatedAt,
                    C::LastValidatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(&state.db)
        .await?;
    find(&state.db, user_id, provider).await?.ok_or_else(|| {
        StoreError::Database(sea_orm::DbErr::RecordNotFound("saved API key".to_owned()))
    })
}

/// Opens the user's key for `provider`; `None` when there is none.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "keys.open"))]
pub async fn open(
    state: &AppState,
    user_id: Uuid,
    provider: AiProvider,
) -> Result<Option<Zeroizing<String>>, StoreError> {
    let Some(row) = find(&state.db, user_id, provider).await? else {
        return Ok(None);
    };
    let sealed = Sealed {
        ciphertext: row.ciphertext,
        nonce: row.nonce,
        wrapped_key: row.wrapped_key,
        key_id: row.key_id,
        format_version: row.format_version,
    };
    let opened = crypto::open(
        state.vault.as_ref(),
        &sealed,
        &context(row.user_id, &row.provider),
    )
    .await?;
    let text = String::from_utf8(opened.to_vec()).map_err(|_| VaultError::Integrity)?;
    Ok(Some(Zeroizing::new(text)))
}

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "keys.record_validation"))]
pub async fn record_validation(
    db: &DatabaseConnection,
    user_id: Uuid,
    provider: AiProvider,
    status: &str,
) -> Result<(), sea_orm::DbErr> {
    let now = Utc::now();
    api_keys::Entity::update_many()
        .col_expr(api_keys::Column::Status, Expr::value(status))
        .col_expr(api_keys::Column::LastValidatedAt, Expr::value(now))
        .col_expr(api_keys::Column::UpdatedAt, Expr::value(now))
        .filter(api_keys::Column::UserId.eq(user_id))
        .filter(api_keys::Column::Provider.eq(provider.as_str()))
        .exec(db)
        .await?;
    Ok(())
}

#[tracing::instrument(name = "db", skip_all, fields(db.operation = "keys.delete"))]
pub async fn delete(
    db: &DatabaseConnection,
    user_id: Uuid,
    provider: AiProvider,
) -> Result<bool, sea_orm::DbErr> {
    let result = api_keys::Entity::delete_many()
        .filter(api_keys::Column::UserId.eq(user_id))
        .filter(api_keys::Column::Provider.eq(provider.as_str()))
        .exec(db)
        .await?;
    Ok(result.rows_affected > 0)
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct RewrapReport {
    pub rewrapped: u64,
    pub failed: u64,
}

const REWRAP_BATCH: u64 = 100;

/// Re-wraps every stored data key under the vault's current key (after rotating the master
/// key or the KMS key). Sealed secrets are not touched. Each row is updated on its own and
/// only if unchanged meanwhile, so the command can be interrupted and run again.
#[tracing::instrument(name = "db", skip_all, fields(db.operation = "keys.rewrap_all"))]
pub async fn rewrap_all(
    db: &DatabaseConnection,
    vault: &dyn KeyVault,
) -> anyhow::Result<RewrapReport> {
    let mut report = RewrapReport::default();
    let mut after: Option<Uuid> = None;
    loop {
        let mut query = api_keys::Entity::find()
            .order_by_asc(api_keys::Column::Id)
            .limit(REWRAP_BATCH);
        if let Some(last) = after {
            query = query.filter(api_keys::Column::Id.gt(last));
        }
        let rows = query.all(db).await?;
        let Some(last) = rows.last() else {
            return Ok(report);
        };
        after = Some(last.id);
        for row in rows {
            match rewrap_row(db, vault, &row).await {
                Ok(()) => report.rewrapped += 1,
                Err(error) => {
                    tracing::error!(key = %row.id, %error, "could not rewrap an API key");
                    report.failed += 1;
                }
            }
        }
    }
}

async fn rewrap_row(
    db: &DatabaseConnection,
    vault: &dyn KeyVault,
    row: &api_keys::Model,
) -> Result<(), StoreError> {
    let (wrapped, key_id) = vault
        .rewrap(
            &row.wrapped_key,
            &row.key_id,
            &context(row.user_id, &row.provider),
        )
        .await?;
    api_keys::Entity::update_many()
        .col_expr(api_keys::Column::WrappedKey, Expr::value(wrapped))
        .col_expr(api_keys::Column::KeyId, Expr::value(key_id))
        .filter(api_keys::Column::Id.eq(row.id))
        .filter(api_keys::Column::WrappedKey.eq(row.wrapped_key.clone()))
        .exec(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_show_the_last_four_characters() {
        assert_eq!(hint("AIzaSyExampleWXYZ"), "…WXYZ");
        assert_eq!(hint("abc"), "…abc");
    }
}
