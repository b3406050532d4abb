//! The `mail_messages` table.

use chrono::Utc;
use entity::mail_messages;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, Set};
use uuid::Uuid;

use super::parse::Parsed;

/// Saves a synced message, replacing the stored copy of the same Gmail message.
pub async fn upsert(db: &DatabaseConnection, user_id: Uuid, message: Parsed) -> Result<(), DbErr> {
    let row = mail_messages::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        gmail_id: Set(message.gmail_id),
        thread_id: Set(message.thread_id),
        from_addr: Set(message.from),
        to_addr: Set(message.to),
        cc: Set(message.cc),
        subject: Set(message.subject),
        date: Set(message.date),
        labels: Set(message.labels),
        snippet: Set(message.snippet),
        body: Set(message.body),
        updated_at: Set(Utc::now()),
    };
    use mail_messages::Column as C;
    mail_messages::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([C::UserId, C::GmailId])
                .update_columns([
                    C::ThreadId,
                    C::FromAddr,
                    C::ToAddr,
                    C::Cc,
                    C::Subject,
                    C::Date,
                    C::Labels,
                    C::Snippet,
                    C::Body,
                    C::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

pub async fn delete(db: &DatabaseConnection, user_id: Uuid, gmail_id: &str) -> Result<(), DbErr> {
    mail_messages::Entity::delete_many()
        .filter(mail_messages::Column::UserId.eq(user_id))
        .filter(mail_messages::Column::GmailId.eq(gmail_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Every stored message of the user (before a full resync).
pub async fn delete_all(db: &DatabaseConnection, user_id: Uuid) -> Result<(), DbErr> {
    mail_messages::Entity::delete_many()
        .filter(mail_messages::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn set_labels(
    db: &DatabaseConnection,
    user_id: Uuid,
    gmail_id: &str,
    labels: &[String],
) -> Result<(), DbErr> {
    mail_messages::Entity::update_many()
        .col_expr(mail_messages::Column::Labels, Expr::value(labels.join(" ")))
        .col_expr(mail_messages::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(mail_messages::Column::UserId.eq(user_id))
        .filter(mail_messages::Column::GmailId.eq(gmail_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Adds `labels` to (or removes them from) a stored message's labels.
pub async fn change_labels(
    db: &DatabaseConnection,
    user_id: Uuid,
    gmail_id: &str,
    labels: &[String],
    added: bool,
) -> Result<(), DbErr> {
    let Some(row) = mail_messages::Entity::find()
        .filter(mail_messages::Column::UserId.eq(user_id))
        .filter(mail_messages::Column::GmailId.eq(gmail_id))
        .one(db)
        .await?
    else {
        // Not synced (older than the window, or past the cap): nothing to change.
        return Ok(());
    };
    let mut current: Vec<String> = row.labels.split_whitespace().map(str::to_owned).collect();
    current.retain(|label| !labels.contains(label));
    if added {
        current.extend(labels.iter().cloned());
    }
    set_labels(db, user_id, gmail_id, &current).await
}

/// Labels of mail no search or thread shows: moved to the bin or to spam, or an unsent draft.
pub const HIDDEN_LABELS: [&str; 3] = ["TRASH", "SPAM", "DRAFT"];

/// SQL keeping only messages without a [`HIDDEN_LABELS`] label (`labels` is space-separated).
pub fn visible(labels_column: &str) -> String {
    HIDDEN_LABELS
        .iter()
        .map(|label| format!("(' ' || {labels_column} || ' ') NOT LIKE '% {label} %'"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The user's stored messages of one Gmail thread, oldest first.
pub async fn thread(
    db: &DatabaseConnection,
    user_id: Uuid,
    thread_id: &str,
) -> Result<Vec<mail_messages::Model>, DbErr> {
    mail_messages::Entity::find()
        .filter(mail_messages::Column::UserId.eq(user_id))
        .filter(mail_messages::Column::ThreadId.eq(thread_id))
        .filter(Expr::cust(visible("labels")))
        .order_by_asc(mail_messages::Column::Date)
        .order_by_asc(mail_messages::Column::GmailId)
        .all(db)
        .await
}
