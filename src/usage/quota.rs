//! Tiers' daily quotas and the per-user chat-send budget: a send is admitted (and its message
//! counted) before the provider is called, or refused with `quota_exceeded` until the user's
//! midnight; the reply's tokens are added when it ends.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone as _, Utc};
use chrono_tz::Tz;
use entity::users;
use uuid::Uuid;

use super::store::{self, Amounts, Place};
use crate::config::{DailyQuota, UsageConfig};
use crate::context::{AppState, Ctx};
use crate::providers::AiProvider;
use crate::reason::Reason;
use crate::rpc::{ErrorCode, RpcError, internal};
use crate::users::Tier;

pub fn quota_of(config: &UsageConfig, tier: Tier) -> DailyQuota {
    match tier {
        Tier::Free => config.free,
        Tier::Plus => config.plus,
        Tier::Pro => config.pro,
    }
}

/// The user's current day: its date and when it ends (their next midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalDay {
    pub date: NaiveDate,
    pub resets_at: DateTime<Utc>,
}

impl LocalDay {
    /// The day `now` falls on in `timezone` (an IANA name; UTC when it is not one).
    pub fn at(timezone: &str, now: DateTime<Utc>) -> Self {
        let tz: Tz = timezone.parse().unwrap_or(Tz::UTC);
        let date = now.with_timezone(&tz).date_naive();
        Self {
            date,
            resets_at: next_midnight(tz, date).unwrap_or(now + chrono::Duration::days(1)),
        }
    }

    pub fn key(&self) -> String {
        self.date.format("%Y-%m-%d").to_string()
    }

    /// Whole seconds until the reset, at least 1 (rounded up).
    pub fn seconds_left(&self, now: DateTime<Utc>) -> u32 {
        let millis = (self.resets_at - now).num_milliseconds().max(1);
        u32::try_from((millis + 999) / 1000).unwrap_or(u32::MAX)
    }
}

/// The first instant of the day after `date` in `tz`: midnight, or where a daylight-saving
/// change skips midnight, the first hour that exists.
fn next_midnight(tz: Tz, date: NaiveDate) -> Option<DateTime<Utc>> {
    let next = date.succ_opt()?;
    (0..4).find_map(|hour| {
        let local = next.and_hms_opt(hour, 0, 0)?;
        tz.from_local_datetime(&local)
            .earliest()
            .map(|at| at.with_timezone(&Utc))
    })
}

/// A send admitted against its day's quota: where its reply's usage goes.
#[derive(Debug, Clone)]
pub struct Admitted {
    place: Place,
}

/// Admits a send (counting its message on the user's day) or refuses it with
/// TOO_MANY_REQUESTS `quota_exceeded` and the seconds until the user's midnight.
pub async fn admit(
    ctx: &Ctx,
    user: &users::Model,
    timezone: &str,
    provider: AiProvider,
    model: &str,
) -> Result<Admitted, RpcError> {
    let state = &ctx.state;
    let quota = quota_of(&state.config.usage, Tier::of(user));
    let now = Utc::now();
    let today = LocalDay::at(timezone, now);
    let place = Place {
        user_id: user.id,
        day: today.key(),
        provider: provider.as_str().to_owned(),
        model: model.to_owned(),
    };
    let nothing_allowed = quota.messages == Some(0) || quota.tokens == Some(0);
    let admitted = !nothing_allowed
        && store::count_message(&state.db, &place, quota)
            .await
            .map_err(internal("count a message against the quota"))?;
    if admitted {
        return Ok(Admitted { place });
    }
    let seconds = today.seconds_left(now);
    let minutes = seconds.div_ceil(60);
    let (hours, minutes) = (minutes / 60, minutes % 60);
    Err(RpcError::new(
        ErrorCode::TooManyRequests,
        format!(
            "You have used today's messages or tokens of your plan. They renew at midnight, in {hours} h {minutes} min."
        ),
    )
    .with_reason(Reason::QuotaExceeded)
    .with_retry_after(seconds))
}

/// Records how an admitted reply ended: its tokens are added to its day and model; a reply
/// for which the provider reported no usage and that failed gives its message back.
pub async fn settle(
    state: &AppState,
    admitted: &Admitted,
    usage: Option<(u32, u32)>,
    failed: bool,
) {
    let result = match usage {
        Some((input, output)) => {
            let amounts = Amounts {
                messages: 0,
                input_tokens: i64::from(input),
                output_tokens: i64::from(output),
            };
            store::add(&state.db, &admitted.place, amounts).await
        }
        None if failed => store::take_back_message(&state.db, &admitted.place).await,
        None => Ok(()),
    };
    if let Err(error) = result {
        tracing::error!(%error, "could not record a reply's usage");
    }
}

/// Gives back the message of a send that was admitted but not started (saving it failed).
pub async fn release(state: &AppState, admitted: &Admitted) {
    settle(state, admitted, None, true).await;
}

const SEND_WINDOW: Duration = Duration::from_secs(60);

/// Counts a `chat.send` against the user's own budget (`ALIAS_USER_CHAT_SENDS_PER_MINUTE`),
/// on top of the budget of every signed-in call.
pub async fn limit_sends(ctx: &Ctx, user_id: Uuid) -> Result<(), RpcError> {
    let state = &ctx.state;
    state
        .auth
        .rate_limits
        .check(
            "chat_sends",
            user_id,
            state.config.usage.chat_sends_per_minute,
            SEND_WINDOW,
        )
        .await
        .map_err(|refusal| {
            refusal.into_error(|retry| {
                RpcError::new(
                    ErrorCode::TooManyRequests,
                    format!("Too many messages. Try again in {} seconds.", retry.0),
                )
                .with_reason(Reason::RateLimited)
                .with_retry_after(retry.0)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|at| at.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn days_follow_the_users_timezone() {
        let now = at("2026-03-10T23:30:00Z");
        let utc = LocalDay::at("UTC", now);
        assert_eq!(utc.key(), "2026-03-10");
        assert_eq!(utc.resets_at, at("2026-03-11T00:00:00Z"));
        assert_eq!(utc.seconds_left(now), 1800);
        let paris = LocalDay::at("Europe/Paris", now);
        assert_eq!(paris.key(), "2026-03-11");
        assert_eq!(paris.resets_at, at("2026-03-11T23:00:00Z"));
        let new_york = LocalDay::at("America/New_York", now);
        assert_eq!(new_york.key(), "2026-03-10");
        assert_eq!(new_york.resets_at, at("2026-03-11T04:00:00Z"));
        assert_eq!(LocalDay::at("Not/AZone", now), utc);
    }

    #[test]
    fn a_skipped_midnight_resets_at_the_first_hour_of_the_day() {
        // Santiago moved its clocks from 00:00 to 01:00 on 2026-09-06.
        let now = at("2026-09-05T12:00:00Z");
        let santiago = LocalDay::at("America/Santiago", now);
        assert_eq!(santiago.key(), "2026-09-05");
        assert_eq!(santiago.resets_at, at("2026-09-06T04:00:00Z"));
    }

    #[test]
    fn retry_after_rounds_up_and_is_at_least_a_second() {
        let day = LocalDay::at("UTC", at("2026-01-01T12:00:00Z"));
        assert_eq!(day.seconds_left(at("2026-01-01T23:59:59.500Z")), 1);
        assert_eq!(day.seconds_left(at("2026-01-02T00:00:00Z")), 1);
        assert_eq!(day.seconds_left(at("2026-01-01T23:59:58.200Z")), 2);
    }
}
