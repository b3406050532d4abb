use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub email: String,
    pub name: String,
    /// A picture from Google or Apple sign-in (shown when no avatar was uploaded).
    pub avatar_url: Option<String>,
    /// The uploaded avatar (a file of purpose `avatar`).
    pub avatar_file_id: Option<Uuid>,
    /// argon2id PHC string; `None` for accounts that only sign in with Google or Apple.
    pub password_hash: Option<String>,
    /// When the account proved it receives mail at `email` (a link or code, a password reset,
    /// or Google/Apple vouching for it); `None`: not yet.
    pub email_verified_at: Option<DateTimeUtc>,
    /// The subscription plan: "free" (the default), "plus" or "pro"; sets the daily quotas.
    pub tier: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    #[sea_orm(has_many)]
    pub identities: HasMany<super::user_identities::Entity>,
    #[sea_orm(has_many)]
    pub sessions: HasMany<super::auth_sessions::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}
