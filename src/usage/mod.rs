//! `usage.*`: what each user's replies cost (tokens per day, provider and model), their tier's
//! daily quotas, and the per-user chat-send budget. `chat` admits every send here before the
//! provider is called and settles the reply's tokens when it ends.

mod quota;
mod store;

use std::collections::BTreeMap;

use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub use quota::{Admitted, LocalDay, admit, limit_sends, release, settle};

use crate::context::{App, Ctx};
use crate::guard::{SignedIn, signed_in};
use crate::preferences;
use crate::rpc::{FieldErrors, Router, RpcError, Timestamp, internal};
use crate::users::Tier;

pub fn router() -> Router<App> {
    Router::new().query("summary", signed_in(summary))
}

/// The longest range `usage.summary` answers, in days.
const MAX_RANGE_DAYS: i64 = 366;

#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SummaryInput {
    /// The first day, `YYYY-MM-DD` (the user's local dates).
    from: String,
    /// The last day, `YYYY-MM-DD`, on or after `from` and at most 366 days later.
    to: String,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct UsageSummary {
    /// Every day of the range, oldest first (days without replies count zero).
    days: Vec<DayUsage>,
    /// The range's totals per provider and model, most tokens first.
    by_model: Vec<ModelUsage>,
    tier: Tier,
    quota: Quota,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct DayUsage {
    /// `YYYY-MM-DD` in the user's timezone.
    date: String,
    #[specta(type = specta_typescript::Number)]
    input_tokens: u64,
    #[specta(type = specta_typescript::Number)]
    output_tokens: u64,
    /// Replies.
    #[specta(type = specta_typescript::Number)]
    messages: u64,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct ModelUsage {
    /// `gemini`, `openai` or `anthropic`.
    provider: String,
    model: String,
    #[specta(type = specta_typescript::Number)]
    input_tokens: u64,
    #[specta(type = specta_typescript::Number)]
    output_tokens: u64,
    #[specta(type = specta_typescript::Number)]
    messages: u64,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    /// Replies allowed per day; null: unlimited.
    #[specta(type = Option<specta_typescript::Number>)]
    messages_per_day: Option<u64>,
    /// Input and output tokens allowed per day; null: unlimited.
    #[specta(type = Option<specta_typescript::Number>)]
    tokens_per_day: Option<u64>,
    used_today: UsedToday,
    /// When today's counts start again from zero: the user's next midnight.
    resets_at: Timestamp,
}

#[derive(Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct UsedToday {
    #[specta(type = specta_typescript::Number)]
    messages: u64,
    /// Input and output tokens together.
    #[specta(type = specta_typescript::Number)]
    tokens: u64,
}

fn parse_date(raw: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d")
        .ok()
        .filter(|_| raw.trim().len() == 10)
        .ok_or_else(|| "use a date as YYYY-MM-DD".to_owned())
}

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// `usage.summary`
async fn summary(
    ctx: Ctx,
    caller: SignedIn,
    input: SummaryInput,
) -> Result<UsageSummary, RpcError> {
    let mut errors = FieldErrors::default();
    let from = errors.check("from", parse_date(&input.from));
    let to = errors.check("to", parse_date(&input.to));
    if let (Some(from), Some(to)) = (from, to) {
        let span = (to - from).num_days();
        if span < 0 {
            errors.check::<()>("to", Err("use a day on or after `from`".to_owned()));
        } else if span >= MAX_RANGE_DAYS {
            errors.check::<()>(
                "to",
                Err(format!("ask for at most {MAX_RANGE_DAYS} days at a time")),
            );
        }
    }
    let (Some(from), Some(to), true) = (from, to, errors.is_empty()) else {
        return Err(errors.into_error());
    };
    let db = &ctx.state.db;
    let user_id = caller.user.id;
    let preferences = preferences::for_user(db, user_id).await?;
    let today = LocalDay::at(&preferences.timezone, Utc::now());
    let key = |date: NaiveDate| date.format("%Y-%m-%d").to_string();
    let rows = store::days(db, user_id, &key(from), &key(to))
        .await
        .map_err(internal("read usage"))?;
    let by_day: BTreeMap<&str, &entity::usage_days::Model> =
        rows.iter().map(|row| (row.day.as_str(), row)).collect();
    let days = from
        .iter_days()
        .take_while(|date| *date <= to)
        .map(|date| {
            let date = key(date);
            let row = by_day.get(date.as_str());
            DayUsage {
                input_tokens: row.map_or(0, |row| count(row.input_tokens)),
                output_tokens: row.map_or(0, |row| count(row.output_tokens)),
                messages: row.map_or(0, |row| count(row.messages)),
                date,
            }
        })
        .collect();
    let used = store::days(db, user_id, &today.key(), &today.key())
        .await
        .map_err(internal("read today's usage"))?;
    let used = used.first();
    let used_today = UsedToday {
        messages: used.map_or(0, |row| count(row.messages)),
        tokens: used.map_or(0, |row| {
            count(row.input_tokens).saturating_add(count(row.output_tokens))
        }),
    };
    let models = store::models(db, user_id, &key(from), &key(to))
        .await
        .map_err(internal("read usage per model"))?;
    let tier = Tier::of(&caller.user);
    let limits = quota::quota_of(&ctx.state.config.usage, tier);
    Ok(UsageSummary {
        days,
        by_model: by_model(models),
        tier,
        quota: Quota {
            messages_per_day: limits.messages,
            tokens_per_day: limits.tokens,
            used_today,
            resets_at: today.resets_at.into(),
        },
    })
}

/// Adds up the days of each provider and model: most tokens first, then by name.
fn by_model(rows: Vec<entity::usage_models::Model>) -> Vec<ModelUsage> {
    let mut totals: BTreeMap<(String, String), ModelUsage> = BTreeMap::new();
    for row in rows {
        let total = totals
            .entry((row.provider.clone(), row.model.clone()))
            .or_insert_with(|| ModelUsage {
                provider: row.provider,
                model: row.model,
                input_tokens: 0,
                output_tokens: 0,
                messages: 0,
            });
        total.input_tokens = total.input_tokens.saturating_add(count(row.input_tokens));
        total.output_tokens = total.output_tokens.saturating_add(count(row.output_tokens));
        total.messages = total.messages.saturating_add(count(row.messages));
    }
    let mut models: Vec<ModelUsage> = totals.into_values().collect();
    models.sort_by_key(|model| {
        std::cmp::Reverse(model.input_tokens.saturating_add(model.output_tokens))
    });
    models
}
