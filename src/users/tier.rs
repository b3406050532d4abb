//! The account's subscription plan, which sets its daily quotas (`usage`). Until billing
//! exists, an operator sets it: `alias-server users set-tier EMAIL TIER`.

use chrono::Utc;
use entity::users;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};

use super::Email;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, specta::Type)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    #[default]
    Free,
    Plus,
    Pro,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Self::Free, Self::Plus, Self::Pro];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Plus => "plus",
            Self::Pro => "pro",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|tier| tier.as_str() == text)
    }

    /// The stored tier of an account (an unknown value, which only a hand edit makes, is
    /// the most limited).
    pub fn of(user: &users::Model) -> Self {
        Self::parse(&user.tier).unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetTierError {
    #[error("{0:?} is not a tier: use free, plus or pro")]
    UnknownTier(String),
    #[error("{0:?} is not an email address")]
    InvalidEmail(String),
    #[error("no account has the email {0}")]
    UnknownEmail(String),
    #[error(transparent)]
    Database(#[from] sea_orm::DbErr),
}

/// Sets the tier of the account with this email (the admin command). Signed-in calls on a
/// running server see it once their cached session expires (`ALIAS_SESSION_CACHE_SECONDS`).
pub async fn set_tier(
    db: &DatabaseConnection,
    email: &str,
    tier: &str,
) -> Result<Tier, SetTierError> {
    let tier = Tier::parse(&tier.trim().to_lowercase())
        .ok_or_else(|| SetTierError::UnknownTier(tier.to_owned()))?;
    let email = Email::parse(email).map_err(|_| SetTierError::InvalidEmail(email.to_owned()))?;
    let updated = users::Entity::update_many()
        .col_expr(users::Column::Tier, Expr::value(tier.as_str()))
        .col_expr(users::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(users::Column::Email.eq(email.as_str()))
        .exec(db)
        .await?;
    if updated.rows_affected == 0 {
        return Err(SetTierError::UnknownEmail(email.into_string()));
    }
    Ok(tier)
}
