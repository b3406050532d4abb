//! `preferences.*`: how the app looks and how the assistant answers, per user.

use std::str::FromStr as _;

use chrono::Utc;
use entity::preferences;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, QuerySelect, Set};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::context::{App, Ctx};
use crate::guard::{SignedIn, signed_in};
use crate::providers::AiProvider;
use crate::rpc::{FieldErrors, Router, RpcError, internal};

pub fn router() -> Router<App> {
    Router::new()
        .query("get", signed_in(get))
        .mutation("update", signed_in(update))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "lowercase")]
pub enum Theme {
    Light,
    Dark,
    System,
}

impl Theme {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "light" => Ok(Self::Light),
            "dark" => Ok(Self::Dark),
            "system" => Ok(Self::System),
            _ => Err("use light, dark or system".to_owned()),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Light => "light",
            Self::Dark => "dark",
            Self::System => "system",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
#[serde(rename_all = "camelCase")]
pub struct Preferences {
    pub theme: Theme,
    /// BCP 47 language tag, e.g. "en" or "pt-BR".
    pub language: String,
    /// IANA time zone, e.g. "Europe/Paris".
    pub timezone: String,
    pub ai_provider: AiProvider,
    /// The chosen model, or the provider's default.
    pub ai_model: String,
    /// 0 to 2.
    #[specta(type = specta_typescript::Number)]
    pub temperature: f64,
    /// 1 to 65536.
    pub max_tokens: u32,
    /// When false, chats are not kept after the reply ends.
    pub save_conversations: bool,
    pub notifications_enabled: bool,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            theme: Theme::System,
            language: "en".to_owned(),
            timezone: "UTC".to_owned(),
            ai_provider: AiProvider::Gemini,
            ai_model: AiProvider::Gemini.default_model().to_owned(),
            temperature: 0.7,
            max_tokens: 1024,
            save_conversations: true,
            notifications_enabled: true,
        }
    }
}

impl Preferences {
    fn from_row(row: preferences::Model) -> Self {
        let defaults = Self::default();
        let ai_provider = AiProvider::parse(&row.ai_provider).unwrap_or(defaults.ai_provider);
        Self {
            theme: Theme::parse(&row.theme).unwrap_or(defaults.theme),
            language: row.language,
            timezone: row.timezone,
            ai_provider,
            ai_model: row
                .ai_model
                .unwrap_or_else(|| ai_provider.default_model().to_owned()),
            temperature: row.temperature,
            max_tokens: u32::try_from(row.max_tokens).unwrap_or(defaults.max_tokens),
            save_conversations: row.save_conversations,
            notifications_enabled: row.notifications_enabled,
        }
    }
}

/// The user's preferences, defaults for what was never set.
pub async fn for_user(
    db: &sea_orm::DatabaseConnection,
    user_id: Uuid,
) -> Result<Preferences, RpcError> {
    let row = preferences::Entity::find_by_id(user_id)
        .one(db)
        .await
        .map_err(internal("load preferences"))?;
    Ok(row.map(Preferences::from_row).unwrap_or_default())
}

/// `preferences.get`
async fn get(ctx: Ctx, caller: SignedIn, _: ()) -> Result<Preferences, RpcError> {
    for_user(&ctx.state.db, caller.user.id).await
}

/// Any subset of the fields; omitted ones stay as they are. Every invalid field is reported.
#[derive(Deserialize, specta::Type)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdatePreferencesInput {
    #[serde(default)]
    #[specta(type = Theme, optional)]
    theme: Option<String>,
    #[serde(default)]
    #[specta(type = String, optional)]
    language: Option<String>,
    #[serde(default)]
    #[specta(type = String, optional)]
    timezone: Option<String>,
    /// Changing the provider without naming a model picks that provider's default model.
    #[serde(default)]
    #[specta(type = AiProvider, optional)]
    ai_provider: Option<String>,
    #[serde(default)]
    #[specta(type = String, optional)]
    ai_model: Option<String>,
    #[serde(default)]
    #[specta(type = specta_typescript::Number, optional)]
    temperature: Option<f64>,
    #[serde(default)]
    #[specta(type = specta_typescript::Number, optional)]
    max_tokens: Option<i64>,
    #[serde(default)]
    #[specta(type = bool, optional)]
    save_conversations: Option<bool>,
    #[serde(default)]
    #[specta(type = bool, optional)]
    notifications_enabled: Option<bool>,
}

/// `preferences.update`: read, merge and write in one transaction that holds the row, so two
/// concurrent partial updates both land.
async fn update(
    ctx: Ctx,
    caller: SignedIn,
    input: UpdatePreferencesInput,
) -> Result<Preferences, RpcError> {
    let db = &ctx.state.db;
    let transaction = crate::db::begin_write(db)
        .await
        .map_err(internal("begin a transaction"))?;
    // A write first: on SQLite the transaction takes the database's write lock before it
    // reads; on PostgreSQL the row exists for `FOR UPDATE` below.
    save(
        &transaction,
        caller.user.id,
        &Preferences::default(),
        OnExisting::Keep,
    )
    .await?;
    let mut query = preferences::Entity::find_by_id(caller.user.id);
    if db.get_database_backend() == DbBackend::Postgres {
        query = query.lock_exclusive();
    }
    let current = query
        .one(&transaction)
        .await
        .map_err(internal("load preferences"))?
        .map(Preferences::from_row)
        .unwrap_or_default();
    let updated = apply(current, input)?;
    save(&transaction, caller.user.id, &updated, OnExisting::Replace).await?;
    transaction
        .commit()
        .await
        .map_err(internal("save preferences"))?;
    Ok(updated)
}

fn apply(current: Preferences, input: UpdatePreferencesInput) -> Result<Preferences, RpcError> {
    let mut errors = FieldErrors::default();
    let mut next = current.clone();
    if let Some(theme) = input
        .theme
        .and_then(|t| errors.check("theme", Theme::parse(&t)))
    {
        next.theme = theme;
    }
    if let Some(language) = input
        .language
        .and_then(|l| errors.check("language", parse_language(&l)))
    {
        next.language = language;
    }
    if let Some(timezone) = input
        .timezone
        .and_then(|t| errors.check("timezone", parse_timezone(&t)))
    {
        next.timezone = timezone;
    }
    let provider = input.ai_provider.and_then(|p| {
        let parsed =
            AiProvider::parse(&p).ok_or_else(|| "use gemini, openai or anthropic".to_owned());
        errors.check("aiProvider", parsed)
    });
    if let Some(provider) = provider.filter(|p| *p != current.ai_provider) {
        next.ai_provider = provider;
        next.ai_model = provider.default_model().to_owned();
    }
    if let Some(model) = input
        .ai_model
        .and_then(|m| errors.check("aiModel", parse_model(&m)))
    {
        next.ai_model = model;
    }
    if let Some(temperature) = input
        .temperature
        .and_then(|t| errors.check("temperature", parse_temperature(t)))
    {
        next.temperature = temperature;
    }
    if let Some(max_tokens) = input
        .max_tokens
        .and_then(|m| errors.check("maxTokens", parse_max_tokens(m)))
    {
        next.max_tokens = max_tokens;
    }
    if let Some(save) = input.save_conversations {
        next.save_conversations = save;
    }
    if let Some(enabled) = input.notifications_enabled {
        next.notifications_enabled = enabled;
    }
    if errors.is_empty() {
        Ok(next)
    } else {
        Err(errors.into_error())
    }
}

/// BCP 47 shape: a 2–3 (or 5–8) letter language, then 1–8 character alphanumeric subtags.
fn parse_language(raw: &str) -> Result<String, String> {
    let tag = raw.trim();
    let mut subtags = tag.split('-');
    let language_ok = subtags.next().is_some_and(|l| {
        matches!(l.len(), 2 | 3 | 5..=8) && l.chars().all(|c| c.is_ascii_alphabetic())
    });
    let rest_ok =
        subtags.all(|s| (1..=8).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric()));
    if language_ok && rest_ok && tag.len() <= 35 {
        Ok(tag.to_owned())
    } else {
        Err("use a language tag such as en, fr or pt-BR".to_owned())
    }
}

fn parse_timezone(raw: &str) -> Result<String, String> {
    chrono_tz::Tz::from_str(raw.trim())
        .map(|tz| tz.name().to_owned())
        .map_err(|_| "use an IANA time zone such as Europe/Paris".to_owned())
}

/// A model name as the providers spell them; `chat.send` checks its `model` the same way.
pub fn parse_model(raw: &str) -> Result<String, String> {
    let model = raw.trim();
    let valid = (1..=100).contains(&model.len())
        && model
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '/'));
    if valid {
        Ok(model.to_owned())
    } else {
        Err("use a model name such as gemini-2.5-flash".to_owned())
    }
}

fn parse_temperature(value: f64) -> Result<f64, String> {
    if value.is_finite() && (0.0..=2.0).contains(&value) {
        Ok(value)
    } else {
        Err("use a number from 0 to 2".to_owned())
    }
}

fn parse_max_tokens(value: i64) -> Result<u32, String> {
    u32::try_from(value)
        .ok()
        .filter(|n| (1..=65_536).contains(n))
        .ok_or_else(|| "use a whole number from 1 to 65536".to_owned())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OnExisting {
    Keep,
    Replace,
}

async fn save(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    preferences: &Preferences,
    on_existing: OnExisting,
) -> Result<(), RpcError> {
    let model_is_default = preferences.ai_model == preferences.ai_provider.default_model();
    let row = preferences::ActiveModel {
        user_id: Set(user_id),
        theme: Set(preferences.theme.as_str().to_owned()),
        language: Set(preferences.language.clone()),
        timezone: Set(preferences.timezone.clone()),
        ai_provider: Set(preferences.ai_provider.as_str().to_owned()),
        ai_model: Set((!model_is_default).then(|| preferences.ai_model.clone())),
        temperature: Set(preferences.temperature),
        max_tokens: Set(i32::try_from(preferences.max_tokens).unwrap_or(i32::MAX)),
        save_conversations: Set(preferences.save_conversations),
        notifications_enabled: Set(preferences.notifications_enabled),
        updated_at: Set(Utc::now()),
    };
    use preferences::Column as C;
    let mut conflict = OnConflict::column(C::UserId);
    match on_existing {
        OnExisting::Keep => conflict.do_nothing(),
        OnExisting::Replace => conflict.update_columns([
            C::Theme,
            C::Language,
            C::Timezone,
            C::AiProvider,
            C::AiModel,
            C::Temperature,
            C::MaxTokens,
            C::SaveConversations,
            C::NotificationsEnabled,
            C::UpdatedAt,
        ]),
    };
    preferences::Entity::insert(row)
        .on_conflict(conflict.to_owned())
        .exec_without_returning(db)
        .await
        .map_err(internal("save preferences"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_tags_are_checked_for_shape() {
        for good in ["en", "pt-BR", "zh-Hant-TW", "es-419"] {
            assert!(parse_language(good).is_ok(), "{good}");
        }
        for bad in ["", "e", "en-subtagtoolong", "en_US", "en--US", "12"] {
            assert!(parse_language(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timezones_are_iana_names() {
        assert_eq!(
            parse_timezone("Europe/Paris"),
            Ok("Europe/Paris".to_owned())
        );
        assert!(parse_timezone("Mars/Olympus").is_err());
    }
}
