//! The usage rows: one per user and local day (`usage_days`, what quotas count) and one per
//! user, day, provider and model (`usage_models`). Every change is one upsert that adds to
//! the row (`INSERT … ON CONFLICT DO UPDATE SET n = n + excluded.n`), atomic on SQLite and
//! PostgreSQL alike, so concurrent replies never lose each other's counts.

use entity::{usage_days, usage_models};
use sea_orm::sea_query::{Alias, Expr, ExprTrait as _, IntoIden, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    Set,
};
use uuid::Uuid;

use crate::config::DailyQuota;

/// What to add to a row.
#[derive(Debug, Clone, Copy, Default)]
pub struct Amounts {
    pub messages: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

/// Where a reply is counted: its user's day when it was sent, its provider and model.
#[derive(Debug, Clone)]
pub struct Place {
    pub user_id: Uuid,
    /// `YYYY-MM-DD`, the user's local date.
    pub day: String,
    pub provider: String,
    pub model: String,
}

fn excluded(column: impl IntoIden) -> Expr {
    Expr::col((Alias::new("excluded"), column))
}

/// Counts one message on `place`'s day unless the day already reached `quota` (messages, or
/// tokens used); `false` when refused. One conditional upsert decides, so racing sends get
/// at most the quota between them.
pub async fn count_message(
    db: &DatabaseConnection,
    place: &Place,
    quota: DailyQuota,
) -> Result<bool, DbErr> {
    use usage_days::{Column, Entity};
    let transaction = crate::db::begin_write(db).await?;
    let under_messages = quota
        .messages
        .map(|limit| Expr::col((Entity, Column::Messages)).lt(clamp(limit)));
    let under_tokens = quota.tokens.map(|limit| {
        Expr::col((Entity, Column::InputTokens))
            .add(Expr::col((Entity, Column::OutputTokens)))
            .lt(clamp(limit))
    });
    let condition = match (under_messages, under_tokens) {
        (Some(a), Some(b)) => Some(a.and(b)),
        (a, b) => a.or(b),
    };
    let row = usage_days::ActiveModel {
        user_id: Set(place.user_id),
        day: Set(place.day.clone()),
        messages: Set(1),
        input_tokens: Set(0),
        output_tokens: Set(0),
    };
    let counted = Entity::insert(row)
        .on_conflict(
            OnConflict::columns([Column::UserId, Column::Day])
                .value(
                    Column::Messages,
                    Expr::col((Entity, Column::Messages)).add(1),
                )
                .action_and_where_option(condition)
                .to_owned(),
        )
        .exec_without_returning(&transaction)
        .await?;
    if counted == 0 {
        transaction.rollback().await?;
        return Ok(false);
    }
    let one = Amounts {
        messages: 1,
        ..Amounts::default()
    };
    add_to_model(&transaction, place, one).await?;
    transaction.commit().await?;
    Ok(true)
}

/// Adds to the counts of `place`'s day and model (a reply's tokens).
pub async fn add(db: &DatabaseConnection, place: &Place, amounts: Amounts) -> Result<(), DbErr> {
    use usage_days::{Column, Entity};
    let transaction = crate::db::begin_write(db).await?;
    let row = usage_days::ActiveModel {
        user_id: Set(place.user_id),
        day: Set(place.day.clone()),
        messages: Set(amounts.messages),
        input_tokens: Set(amounts.input_tokens),
        output_tokens: Set(amounts.output_tokens),
    };
    Entity::insert(row)
        .on_conflict(
            OnConflict::columns([Column::UserId, Column::Day])
                .values([
                    (
                        Column::Messages,
                        added((Entity, Column::Messages), Column::Messages),
                    ),
                    (
                        Column::InputTokens,
                        added((Entity, Column::InputTokens), Column::InputTokens),
                    ),
                    (
                        Column::OutputTokens,
                        added((Entity, Column::OutputTokens), Column::OutputTokens),
                    ),
                ])
                .to_owned(),
        )
        .exec_without_returning(&transaction)
        .await?;
    add_to_model(&transaction, place, amounts).await?;
    transaction.commit().await
}

async fn add_to_model(
    db: &impl ConnectionTrait,
    place: &Place,
    amounts: Amounts,
) -> Result<(), DbErr> {
    use usage_models::{Column, Entity};
    let row = usage_models::ActiveModel {
        user_id: Set(place.user_id),
        day: Set(place.day.clone()),
        provider: Set(place.provider.clone()),
        model: Set(place.model.clone()),
        messages: Set(amounts.messages),
        input_tokens: Set(amounts.input_tokens),
        output_tokens: Set(amounts.output_tokens),
    };
    Entity::insert(row)
        .on_conflict(
            OnConflict::columns([Column::UserId, Column::Day, Column::Provider, Column::Model])
                .values([
                    (
                        Column::Messages,
                        added((Entity, Column::Messages), Column::Messages),
                    ),
                    (
                        Column::InputTokens,
                        added((Entity, Column::InputTokens), Column::InputTokens),
                    ),
                    (
                        Column::OutputTokens,
                        added((Entity, Column::OutputTokens), Column::OutputTokens),
                    ),
                ])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// `row.column + excluded.column`.
fn added<T, C>(current: (T, C), column: C) -> Expr
where
    T: IntoIden,
    C: IntoIden,
{
    Expr::col(current).add(excluded(column))
}

/// Takes back a message counted for a reply the provider never wrote (it refused or failed
/// before reporting any usage), so failures do not eat the quota.
pub async fn take_back_message(db: &DatabaseConnection, place: &Place) -> Result<(), DbErr> {
    let transaction = crate::db::begin_write(db).await?;
    {
        use usage_days::{Column, Entity};
        Entity::update_many()
            .col_expr(Column::Messages, Expr::col(Column::Messages).sub(1))
            .filter(Column::UserId.eq(place.user_id))
            .filter(Column::Day.eq(&place.day))
            .filter(Column::Messages.gt(0))
            .exec(&transaction)
            .await?;
    }
    {
        use usage_models::{Column, Entity};
        Entity::update_many()
            .col_expr(Column::Messages, Expr::col(Column::Messages).sub(1))
            .filter(Column::UserId.eq(place.user_id))
            .filter(Column::Day.eq(&place.day))
            .filter(Column::Provider.eq(&place.provider))
            .filter(Column::Model.eq(&place.model))
            .filter(Column::Messages.gt(0))
            .exec(&transaction)
            .await?;
    }
    transaction.commit().await
}

fn clamp(limit: u64) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The user's rows for the days `from..=to` (`YYYY-MM-DD`), oldest first.
pub async fn days(
    db: &DatabaseConnection,
    user_id: Uuid,
    from: &str,
    to: &str,
) -> Result<Vec<usage_days::Model>, DbErr> {
    use usage_days::{Column, Entity};
    Entity::find()
        .filter(Column::UserId.eq(user_id))
        .filter(Column::Day.between(from, to))
        .order_by_asc(Column::Day)
        .all(db)
        .await
}

/// The user's per-model rows for the days `from..=to`.
pub async fn models(
    db: &DatabaseConnection,
    user_id: Uuid,
    from: &str,
    to: &str,
) -> Result<Vec<usage_models::Model>, DbErr> {
    use usage_models::{Column, Entity};
    Entity::find()
        .filter(Column::UserId.eq(user_id))
        .filter(Column::Day.between(from, to))
        .all(db)
        .await
}
