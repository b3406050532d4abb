//! The `jobs` table's queries.

use std::time::Duration;

use chrono::Utc;
use entity::jobs;
use sea_orm::sea_query::{Expr, ExprTrait as _, Func, LockBehavior, LockType, OnConflict};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, TransactionTrait,
};
use uuid::Uuid;

use super::Job;
use crate::db::Backend;

fn after(duration: Duration) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// Queues a job of `kind` to run at `run_at`. A job already queued under `unique_key` is
/// moved to `run_at` (and given this payload) instead: one job per key; but a job backing
/// off after failures (a `Retry-After`, say) keeps its later time. A job running now keeps
/// running, and runs again at `run_at` once it ends, whatever it decides then.
pub async fn enqueue(
    db: &DatabaseConnection,
    kind: &str,
    unique_key: &str,
    payload: serde_json::Value,
    run_at: chrono::DateTime<Utc>,
) -> Result<(), DbErr> {
    let now = Utc::now();
    let row = jobs::ActiveModel {
        id: Set(Uuid::now_v7()),
        kind: Set(kind.to_owned()),
        unique_key: Set(unique_key.to_owned()),
        payload: Set(payload),
        run_at: Set(run_at),
        attempts: Set(0),
        requests: Set(1),
        locked_until: Set(None),
        locked_by: Set(None),
        last_error: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    };
    use jobs::Column as C;
    jobs::Entity::insert(row)
        .on_conflict(
            OnConflict::column(C::UniqueKey)
                .update_columns([C::Payload, C::UpdatedAt])
                .value(C::Requests, Expr::col((jobs::Entity, C::Requests)).add(1))
                .value(
                    C::RunAt,
                    Expr::cust(
                        "CASE WHEN jobs.attempts > 0 AND jobs.run_at > excluded.run_at \
                         THEN jobs.run_at ELSE excluded.run_at END",
                    ),
                )
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Who holds a job cancelled while it ran, until its handler has stopped.
const CANCELLED: &str = "cancelled";

fn running(now: chrono::DateTime<Utc>) -> Condition {
    Condition::all()
        .add(jobs::Column::LockedUntil.is_not_null())
        .add(jobs::Column::LockedUntil.gte(now))
}

/// Removes the job queued under `unique_key`, if any. A running one is taken from its worker
/// instead (its next lease renewal fails, which stops the handler) and removed once it has
/// stopped, so a job enqueued again under the key meanwhile never runs beside it.
pub async fn cancel(db: &DatabaseConnection, unique_key: &str) -> Result<(), DbErr> {
    let now = Utc::now();
    jobs::Entity::delete_many()
        .filter(jobs::Column::UniqueKey.eq(unique_key))
        .filter(running(now).not())
        .exec(db)
        .await?;
    jobs::Entity::update_many()
        .col_expr(jobs::Column::LockedBy, Expr::value(CANCELLED))
        .col_expr(jobs::Column::Requests, Expr::value(0))
        .filter(jobs::Column::UniqueKey.eq(unique_key))
        .filter(running(now))
        .exec(db)
        .await?;
    Ok(())
}

/// A handler stopped after its job was cancelled: the job goes, unless it was enqueued again
/// since (then it runs at the requested time).
pub(super) async fn cancelled(db: &DatabaseConnection, id: Uuid) -> Result<(), DbErr> {
    jobs::Entity::delete_many()
        .filter(held(id, CANCELLED))
        .filter(jobs::Column::Requests.eq(0))
        .exec(db)
        .await?;
    unlock(db, id, CANCELLED, None).await?;
    Ok(())
}

fn due(now: chrono::DateTime<Utc>, kinds: &[&'static str]) -> Condition {
    Condition::all()
        .add(jobs::Column::Kind.is_in(kinds.iter().copied()))
        .add(jobs::Column::RunAt.lte(now))
        .add(
            Condition::any()
                .add(jobs::Column::LockedUntil.is_null())
                .add(jobs::Column::LockedUntil.lt(now)),
        )
}

/// Takes up to `limit` due jobs of `kinds` for `worker` until `lease` from now.
pub(super) async fn claim(
    db: &DatabaseConnection,
    backend: Backend,
    kinds: &[&'static str],
    limit: usize,
    worker: &str,
    lease: Duration,
) -> Result<Vec<Job>, DbErr> {
    let now = Utc::now();
    let lock = || {
        jobs::Entity::update_many()
            .col_expr(jobs::Column::LockedUntil, Expr::value(after(lease)))
            .col_expr(jobs::Column::LockedBy, Expr::value(worker))
    };
    let candidates = || {
        jobs::Entity::find()
            .filter(due(now, kinds))
            .order_by_asc(jobs::Column::RunAt)
            .limit(limit as u64)
    };
    let claimed = match backend {
        Backend::Postgres => {
            let txn = db.begin().await?;
            let rows = candidates()
                .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
                .all(&txn)
                .await?;
            if !rows.is_empty() {
                lock()
                    .filter(jobs::Column::Id.is_in(rows.iter().map(|row| row.id)))
                    .exec(&txn)
                    .await?;
            }
            txn.commit().await?;
            rows
        }
        Backend::Sqlite => {
            let mut claimed = Vec::new();
            for row in candidates().all(db).await? {
                // Another worker may have taken it since the read: the condition decides.
                let taken = lock()
                    .filter(jobs::Column::Id.eq(row.id))
                    .filter(due(now, kinds))
                    .exec(db)
                    .await?;
                if taken.rows_affected == 1 {
                    claimed.push(row);
                }
            }
            claimed
        }
    };
    Ok(claimed
        .into_iter()
        .map(|row| Job {
            id: row.id,
            kind: row.kind,
            unique_key: row.unique_key,
            payload: row.payload,
            attempts: row.attempts,
            last_error: row.last_error,
            requests: row.requests,
        })
        .collect())
}

fn held(id: Uuid, worker: &str) -> Condition {
    Condition::all()
        .add(jobs::Column::Id.eq(id))
        .add(jobs::Column::LockedBy.eq(worker))
}

/// Extends the lease; `false` when the job is no longer held by `worker` (cancelled, or taken
/// over after the lease ran out).
pub(super) async fn renew(
    db: &DatabaseConnection,
    id: Uuid,
    worker: &str,
    lease: Duration,
) -> Result<bool, DbErr> {
    let renewed = jobs::Entity::update_many()
        .col_expr(jobs::Column::LockedUntil, Expr::value(after(lease)))
        .filter(held(id, worker))
        .exec(db)
        .await?;
    Ok(renewed.rows_affected == 1)
}

/// Gives the job back untouched, for another worker to take at once.
pub(super) async fn release(db: &DatabaseConnection, id: Uuid, worker: &str) -> Result<(), DbErr> {
    unlock(db, id, worker, None).await?;
    Ok(())
}

/// Removes a finished job, unless it was enqueued again while running (then it only unlocks,
/// to run at the requested time).
pub(super) async fn finish(
    db: &DatabaseConnection,
    id: Uuid,
    worker: &str,
    requests: i64,
) -> Result<(), DbErr> {
    let deleted = jobs::Entity::delete_many()
        .filter(held(id, worker))
        .filter(jobs::Column::Requests.eq(requests))
        .exec(db)
        .await?;
    if deleted.rows_affected == 0 {
        unlock(db, id, worker, None).await?;
    }
    Ok(())
}

/// Schedules the next run, unless the job was enqueued again while running (then the
/// requested time stands).
pub(super) async fn reschedule(
    db: &DatabaseConnection,
    id: Uuid,
    worker: &str,
    at: chrono::DateTime<Utc>,
    requests: i64,
) -> Result<(), DbErr> {
    let moved = unlock(db, id, worker, Some((at, requests))).await?;
    if moved == 0 {
        unlock(db, id, worker, None).await?;
    }
    Ok(())
}

pub(super) async fn retry(
    db: &DatabaseConnection,
    id: Uuid,
    worker: &str,
    delay: Duration,
    error: &str,
) -> Result<(), DbErr> {
    jobs::Entity::update_many()
        .col_expr(jobs::Column::RunAt, Expr::value(after(delay)))
        .col_expr(
            jobs::Column::Attempts,
            Expr::col(jobs::Column::Attempts).add(1),
        )
        .col_expr(jobs::Column::LastError, Expr::value(error))
        .col_expr(
            jobs::Column::LockedUntil,
            Expr::value(None::<chrono::DateTime<Utc>>),
        )
        .col_expr(jobs::Column::LockedBy, Expr::value(None::<String>))
        .col_expr(jobs::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(held(id, worker))
        .exec(db)
        .await?;
    Ok(())
}

/// Unlocks the job; with `(run_at, requests)`, also moves it there and clears its failures,
/// provided it was not enqueued again since it was claimed with `requests`. Rows changed.
async fn unlock(
    db: &DatabaseConnection,
    id: Uuid,
    worker: &str,
    next: Option<(chrono::DateTime<Utc>, i64)>,
) -> Result<u64, DbErr> {
    let mut update = jobs::Entity::update_many()
        .col_expr(
            jobs::Column::LockedUntil,
            Expr::value(None::<chrono::DateTime<Utc>>),
        )
        .col_expr(jobs::Column::LockedBy, Expr::value(None::<String>))
        .col_expr(jobs::Column::UpdatedAt, Expr::value(Utc::now()));
    if let Some((at, requests)) = next {
        update = update
            .col_expr(jobs::Column::RunAt, Expr::value(at))
            .col_expr(jobs::Column::Attempts, Expr::value(0))
            .col_expr(jobs::Column::LastError, Expr::value(None::<String>))
            .filter(jobs::Column::Requests.eq(requests));
    }
    Ok(update
        .filter(held(id, worker))
        .exec(db)
        .await?
        .rows_affected)
}

/// Jobs due now that no worker holds, per kind of job in the table (zero when none is due):
/// the queue's backlog.
pub async fn due_by_kind(db: &DatabaseConnection) -> Result<Vec<(String, i64)>, DbErr> {
    let now = Utc::now();
    let due = Condition::all()
        .add(jobs::Column::RunAt.lte(now))
        .add(running(now).not());
    jobs::Entity::find()
        .select_only()
        .column(jobs::Column::Kind)
        .column_as(Expr::from(Func::sum(Expr::case(due, 1).finally(0))), "due")
        .group_by(jobs::Column::Kind)
        .into_tuple()
        .all(db)
        .await
}
