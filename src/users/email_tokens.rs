//! The single-use links and 6-digit codes mailed to prove an address: for verifying it, for
//! resetting a password, for changing to a new address. Only keyed hashes are stored
//! (HMAC-SHA256 under a server secret: `TokenMac`), so a database dump cannot brute-force a
//! code; a token expires after 24 hours, works once, and its code stops working after 5 wrong
//! tries (each try is reserved in the database before the code is compared, so concurrent
//! guesses get no more). Issuing a new one retires the earlier ones of the same purpose;
//! whatever proves or takes over the address (a confirmation, a reset, a reclaim) retires
//! every one of the account's.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use entity::email_tokens::{self, Column};
use rand::{Rng as _, RngCore as _};
use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, Set,
};
use uuid::Uuid;

use crate::security::TokenMac;

const LIFETIME_HOURS: i64 = 24;
/// Wrong codes a token survives.
const CODE_ATTEMPTS: i32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    VerifyEmail,
    ResetPassword,
    ChangeEmail,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::ResetPassword => "reset_password",
            Self::ChangeEmail => "change_email",
        }
    }

    pub fn of(token: &email_tokens::Model) -> Option<Self> {
        [Self::VerifyEmail, Self::ResetPassword, Self::ChangeEmail]
            .into_iter()
            .find(|purpose| purpose.as_str() == token.purpose)
    }
}

/// What goes in the mail: never stored.
pub struct Issued {
    pub token: String,
    pub code: String,
}

/// Issues a token for `user_id` to prove `email`, retiring its earlier ones of `purpose`.
/// `issued_for`: the account's address when it was asked for; an email change applies only
/// while the account still has it.
pub async fn issue(
    db: &impl ConnectionTrait,
    mac: &TokenMac,
    user_id: Uuid,
    purpose: Purpose,
    email: &str,
    issued_for: &str,
) -> Result<Issued, DbErr> {
    let now = Utc::now();
    email_tokens::Entity::update_many()
        .col_expr(Column::UsedAt, Expr::value(now))
        .filter(Column::UserId.eq(user_id))
        .filter(Column::Purpose.eq(purpose.as_str()))
        .filter(Column::UsedAt.is_null())
        .exec(db)
        .await?;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let code = format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000));
    let id = Uuid::now_v7();
    email_tokens::ActiveModel {
        id: Set(id),
        user_id: Set(user_id),
        purpose: Set(purpose.as_str().to_owned()),
        email: Set(email.to_owned()),
        issued_for_email: Set(Some(issued_for.to_owned())),
        token_hash: Set(link_hash(mac, &token)),
        code_hash: Set(code_hash(mac, id, &code)),
        code_attempts: Set(0),
        expires_at: Set(now + Duration::hours(LIFETIME_HOURS)),
        used_at: Set(None),
        created_at: Set(now),
    }
    .insert(db)
    .await?;
    Ok(Issued { token, code })
}

fn link_hash(mac: &TokenMac, token: &str) -> String {
    mac.hex("email-link", token)
}

fn code_hash(mac: &TokenMac, id: Uuid, code: &str) -> String {
    mac.hex("email-code", &format!("{id}:{code}"))
}

/// The live token of one of `purposes` behind a mailed link, if any.
pub async fn find_by_link(
    db: &DatabaseConnection,
    mac: &TokenMac,
    purposes: &[Purpose],
    token: &str,
) -> Result<Option<email_tokens::Model>, DbErr> {
    live(purposes)
        .filter(Column::TokenHash.eq(link_hash(mac, token.trim())))
        .one(db)
        .await
}

/// The newest live token of one of `purposes` mailed to `email`, if `code` is its code. A
/// try is counted before the code is compared; past the limit the token never matches.
pub async fn find_by_code(
    db: &DatabaseConnection,
    mac: &TokenMac,
    purposes: &[Purpose],
    email: &str,
    code: &str,
) -> Result<Option<email_tokens::Model>, DbErr> {
    let Some(token) = live(purposes)
        .filter(Column::Email.eq(email))
        .order_by_desc(Column::Id)
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let counted = email_tokens::Entity::update_many()
        .col_expr(Column::CodeAttempts, Expr::col(Column::CodeAttempts).add(1))
        .filter(Column::Id.eq(token.id))
        .filter(Column::CodeAttempts.lt(CODE_ATTEMPTS))
        .exec(db)
        .await?
        .rows_affected
        == 1;
    let matches = counted && token.code_hash == code_hash(mac, token.id, code.trim());
    Ok(matches.then_some(token))
}

fn live(purposes: &[Purpose]) -> sea_orm::Select<email_tokens::Entity> {
    email_tokens::Entity::find()
        .filter(Column::Purpose.is_in(purposes.iter().map(|purpose| purpose.as_str())))
        .filter(Column::UsedAt.is_null())
        .filter(Column::ExpiresAt.gt(Utc::now()))
}

/// Uses up `token` inside the transaction that applies it; `false` when a concurrent call
/// used it first (then apply nothing).
pub async fn consume(
    db: &impl ConnectionTrait,
    token: &email_tokens::Model,
) -> Result<bool, DbErr> {
    let used = email_tokens::Entity::update_many()
        .col_expr(Column::UsedAt, Expr::value(Utc::now()))
        .filter(Column::Id.eq(token.id))
        .filter(Column::UsedAt.is_null())
        .exec(db)
        .await?;
    Ok(used.rows_affected == 1)
}

/// Retires every live token of the account, whatever its purpose: inside the transaction
/// that proves or hands over its address, so no link or code mailed before (an email change
/// a squatter asked for, say) works after it.
pub async fn retire_all(db: &impl ConnectionTrait, user_id: Uuid) -> Result<(), DbErr> {
    email_tokens::Entity::update_many()
        .col_expr(Column::UsedAt, Expr::value(Utc::now()))
        .filter(Column::UserId.eq(user_id))
        .filter(Column::UsedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Deletes tokens that expired or were used before `before` (the periodic prune).
pub async fn prune(db: &impl ConnectionTrait, before: DateTime<Utc>) -> Result<u64, DbErr> {
    let deleted = email_tokens::Entity::delete_many()
        .filter(Column::ExpiresAt.lt(before).or(Column::UsedAt.lt(before)))
        .exec(db)
        .await?;
    Ok(deleted.rows_affected)
}
