//! The per-account budget of password verifications (`ALIAS_LOGIN_LOCK_SECONDS`), kept in the
//! database so it holds across concurrent requests, batches, client addresses and server
//! instances: an attempt is *reserved* by one conditional statement before the password is
//! hashed, never counted after. Each statement is atomic on its own (SQLite runs one writer at a
//! time; PostgreSQL re-checks an UPDATE's condition on the row it locked), so of any number of
//! racing attempts at most `limit` are granted per window, right passwords included (nothing
//! is given back: a lucky guess among many must not reopen the budget).

use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::password_attempts::{self, Column};
use sea_orm::sea_query::{Expr, ExprTrait as _, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, Set,
};

use super::sha256_hex;
use crate::rate_limit::RetryAfter;

pub enum Reservation {
    Granted,
    Locked(RetryAfter),
}

pub struct AttemptBudget {
    pub limit: u32,
    pub window: Duration,
}

impl AttemptBudget {
    /// Takes one attempt of `account` (a normalized email), or says how long it is locked.
    pub async fn reserve(
        &self,
        db: &DatabaseConnection,
        account: &str,
    ) -> Result<Reservation, DbErr> {
        let key = account_key(account);
        let window = chrono::Duration::from_std(self.window).unwrap_or(chrono::Duration::MAX);
        let limit = i32::try_from(self.limit).unwrap_or(i32::MAX);
        // A row that changes between two statements (another attempt, a window ending) sends
        // the loop round again; three rounds cover every interleaving of one racing change.
        for _ in 0..3 {
            let now = Utc::now();
            let window_open_since = now - window;
            let counted = password_attempts::Entity::update_many()
                .col_expr(Column::Attempts, Expr::col(Column::Attempts).add(1))
                .filter(Column::Account.eq(&key))
                .filter(Column::WindowStartedAt.gt(window_open_since))
                .filter(Column::Attempts.lt(limit))
                .exec(db)
                .await?;
            if counted.rows_affected == 1 {
                return Ok(Reservation::Granted);
            }
            let restarted = password_attempts::Entity::update_many()
                .col_expr(Column::Attempts, Expr::value(1))
                .col_expr(Column::WindowStartedAt, Expr::value(now))
                .filter(Column::Account.eq(&key))
                .filter(Column::WindowStartedAt.lte(window_open_since))
                .exec(db)
                .await?;
            if restarted.rows_affected == 1 {
                return Ok(Reservation::Granted);
            }
            let first = password_attempts::ActiveModel {
                account: Set(key.clone()),
                window_started_at: Set(now),
                attempts: Set(1),
            };
            let inserted = password_attempts::Entity::insert(first)
                .on_conflict(OnConflict::column(Column::Account).do_nothing().to_owned())
                .exec_without_returning(db)
                .await?;
            if inserted == 1 {
                return Ok(Reservation::Granted);
            }
            let row = password_attempts::Entity::find_by_id(key.clone())
                .one(db)
                .await?;
            if let Some(row) = row
                && row.attempts >= limit
                && row.window_started_at > window_open_since
            {
                let remaining = (row.window_started_at + window - now)
                    .to_std()
                    .unwrap_or_default();
                let seconds = u32::try_from(remaining.as_secs()).unwrap_or(u32::MAX);
                return Ok(Reservation::Locked(RetryAfter(seconds.saturating_add(1))));
            }
        }
        // Still changing under us after three rounds: refusing is the safe answer.
        Ok(Reservation::Locked(RetryAfter(1)))
    }

    /// Ends the account's lock (a password reset proved the owner): its next sign-in starts
    /// a new window.
    pub async fn clear(&self, db: &impl ConnectionTrait, account: &str) -> Result<(), DbErr> {
        password_attempts::Entity::delete_by_id(account_key(account))
            .exec(db)
            .await?;
        Ok(())
    }

    /// Deletes the rows of windows that ended before `before` (the periodic prune).
    pub async fn prune(
        &self,
        db: &impl ConnectionTrait,
        before: DateTime<Utc>,
    ) -> Result<u64, DbErr> {
        let window = chrono::Duration::from_std(self.window).unwrap_or(chrono::Duration::MAX);
        let Some(ended_before) = before.checked_sub_signed(window) else {
            return Ok(0);
        };
        let deleted = password_attempts::Entity::delete_many()
            .filter(Column::WindowStartedAt.lt(ended_before))
            .exec(db)
            .await?;
        Ok(deleted.rows_affected)
    }
}

fn account_key(account: &str) -> String {
    sha256_hex(account)
}
