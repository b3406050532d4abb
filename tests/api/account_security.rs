//! Account takeover defences, as an attacker meets them over HTTP: a squatter's pending
//! mails die when the address is proved, and planted sign-ins when the owner proves it
//! (Google/Apple reclaim, password reset), a reclaim hands over a clean account once however many
//! sign-ins race, codes are stored keyed, `ALIAS_REQUIRE_VERIFIED_EMAIL` is enforced,
//! email changes are limited and audited, a reset ends the lock, and old rows are pruned.

use entity::{audit_events, email_tokens, password_attempts, users};
use futures::future::join_all;
use reqwest::StatusCode;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::each_database;
use crate::email::{access, code, link_token, login, mail_app, me};
use crate::helpers::{DbKind, TestApp, data, error_code, error_reason, unique_email};
use crate::id_provider::{self, FakeIdProvider, google_claims, sign};
use crate::smtp_server::TestSmtp;

const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "a brand new passphrase";

/// A server with Google sign-in and a real SMTP server.
async fn app_with_mail_and_google(
    db_kind: DbKind,
    provider: &FakeIdProvider,
) -> (TestApp, TestSmtp) {
    let smtp = TestSmtp::start().await;
    let url = smtp.url.clone();
    let app = id_provider::spawn_app_with(db_kind, provider, move |config| {
        config.mail.smtp_url = Some(alias_server::config::Secret(url));
    })
    .await;
    (app, smtp)
}

fn user_id(session: &Value) -> Uuid {
    session["user"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("user id")
}

async fn audit_count(app: &TestApp, action: &str) -> u64 {
    audit_events::Entity::find()
        .filter(audit_events::Column::Action.eq(action))
        .count(&app.db().await)
        .await
        .expect("count audit rows")
}

async fn google(app: &TestApp, id_token: &str) -> (StatusCode, Value) {
    app.mutation("auth.google", Some(json!({ "idToken": id_token })))
        .await
}

/// The squatter asks to move the account to an address they read.
async fn squatter_changes_email(
    app: &TestApp,
    smtp: &TestSmtp,
    squatter: &Value,
    password: Option<&str>,
) -> (String, String) {
    let elsewhere = unique_email();
    let mut input = json!({ "newEmail": elsewhere });
    if let Some(password) = password {
        input["password"] = json!(password);
    }
    let (status, body) = app
        .mutation_as(&access(squatter), "users.changeEmail", Some(input))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mail = smtp.nth_mail_to(&elsewhere, "new email", 0).await;
    (elsewhere, code(&mail))
}

async fn assert_code_refused(app: &TestApp, email: &str, code: &str) {
    let (status, body) = app
        .mutation(
            "auth.verifyEmail",
            Some(json!({ "email": email, "code": code })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_reason(&body), "invalid_code");
}

/// The review's attack: a squatter registers the victim's address, asks to change it to one
/// they read, and waits for the victim to sign in with Google; then confirms the change. The
/// reclaim gave the victim a fresh account and killed the pending change.
async fn a_pending_email_change_dies_with_the_reclaim(db_kind: DbKind) {
    let provider = FakeIdProvider::start().await;
    let (app, smtp) = app_with_mail_and_google(db_kind, &provider).await;
    let victim = unique_email();
    let squatter = app.register(&victim, PASSWORD).await;
    let squatter_id = user_id(&squatter);
    let (status, body) = app
        .mutation_as(
            &access(&squatter),
            "preferences.update",
            Some(json!({ "language": "fr" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (elsewhere, change_code) =
        squatter_changes_email(&app, &smtp, &squatter, Some(PASSWORD)).await;

    let id_token = sign(0, &google_claims("g-victim", &victim, true));
    let (status, body) = google(&app, &id_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let owner = data(&body).clone();
    let owner_id = user_id(&owner);
    assert_ne!(owner_id, squatter_id, "a fresh account");

    assert_code_refused(&app, &elsewhere, &change_code).await;
    let (status, body) = me(&app, &access(&owner)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(data(&body)["email"], victim);
    assert_eq!(data(&body)["authProviders"], json!(["google"]));
    let (status, body) = app.query_as(&access(&owner), "preferences.get", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(data(&body)["language"], "fr", "nothing of the squatter's");

    let db = app.db().await;
    let gone = users::Entity::find_by_id(squatter_id).one(&db).await;
    assert!(
        gone.expect("query").is_none(),
        "the squatted row is deleted"
    );
    let reclaimed = audit_events::Entity::find()
        .filter(audit_events::Column::Action.eq("account_reclaimed"))
        .all(&db)
        .await
        .expect("audit rows");
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].user_id, Some(owner_id));
    let (status, _) = me(&app, &access(&squatter)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = login(&app, &victim, PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the squatter's password is gone"
    );
}
each_database!(a_pending_email_change_dies_with_the_reclaim);

/// A squatter signs up with Google under the victim's address (the provider did not verify
/// it) and asks to change the address; the victim resets the password. The squatter's
/// Google sign-in, session and pending change all stop working.
async fn a_reset_removes_what_the_squatter_planted(db_kind: DbKind) {
    let provider = FakeIdProvider::start().await;
    let (app, smtp) = app_with_mail_and_google(db_kind, &provider).await;
    let victim = unique_email();
    let squatter_token = sign(0, &google_claims("g-squatter", &victim, false));
    let (status, body) = google(&app, &squatter_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let squatter = data(&body).clone();
    assert_eq!(squatter["user"]["emailVerified"], false);
    let (elsewhere, change_code) = squatter_changes_email(&app, &smtp, &squatter, None).await;

    app.mutation(
        "auth.requestPasswordReset",
        Some(json!({ "email": victim })),
    )
    .await;
    let token = link_token(&smtp.nth_mail_to(&victim, "Reset", 0).await);
    let (status, body) = app
        .mutation(
            "auth.resetPassword",
            Some(json!({ "token": token, "newPassword": NEW_PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    assert_code_refused(&app, &elsewhere, &change_code).await;
    let (status, _) = me(&app, &access(&squatter)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = google(&app, &squatter_token).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "the planted sign-in is gone: {body}"
    );
    assert_eq!(error_reason(&body), "email_not_verified");
    let (status, body) = login(&app, &victim, NEW_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(data(&body)["user"]["authProviders"], json!(["password"]));
    assert_eq!(data(&body)["user"]["email"], victim);
}
each_database!(a_reset_removes_what_the_squatter_planted);

/// The victim follows the verification link of an account a squatter registered with their
/// address: the squatter's pending email change dies with it (every earlier mail does). The
/// sessions stay: whoever registered knows the password anyway, and the person who really
/// registered is usually confirming from the app they are signed in to; the squatter is put
/// out by a reset or a Google/Apple sign-in (tests above).
async fn a_first_verification_retires_earlier_mails(db_kind: DbKind) {
    let (app, smtp) = mail_app(db_kind).await;
    let victim = unique_email();
    let squatter = app.register(&victim, PASSWORD).await;
    let (elsewhere, change_code) =
        squatter_changes_email(&app, &smtp, &squatter, Some(PASSWORD)).await;
    let token = link_token(&smtp.nth_mail_to(&victim, "Confirm", 0).await);
    let response = app
        .http
        .get(app.url(&format!("/auth/verify?token={token}")))
        .send()
        .await
        .expect("open the link");
    assert_eq!(response.status(), StatusCode::OK);

    assert_code_refused(&app, &elsewhere, &change_code).await;
    let (status, body) = me(&app, &access(&squatter)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(data(&body)["emailVerified"], true);
}
each_database!(a_first_verification_retires_earlier_mails);

/// An email change applies only while the account has the address it was asked from (no
/// procedure changes it meanwhile without retiring the token, so the address is changed
/// behind the server's back here).
async fn an_email_change_needs_the_address_it_was_asked_from(db_kind: DbKind) {
    let (app, smtp) = mail_app(db_kind).await;
    let first = unique_email();
    let session = app.register(&first, PASSWORD).await;
    let (second, second_code) = squatter_changes_email(&app, &smtp, &session, Some(PASSWORD)).await;
    let db = app.db().await;
    let row = email_tokens::Entity::find()
        .filter(email_tokens::Column::Email.eq(&second))
        .one(&db)
        .await
        .expect("query")
        .expect("a token row");
    assert_eq!(row.issued_for_email.as_deref(), Some(first.as_str()));
    users::Entity::update_many()
        .col_expr(users::Column::Email, Expr::value(unique_email()))
        .filter(users::Column::Id.eq(user_id(&session)))
        .exec(&db)
        .await
        .expect("change the address directly");
    assert_code_refused(&app, &second, &second_code).await;
    assert_eq!(audit_count(&app, "email_changed").await, 0);
}
each_database!(an_email_change_needs_the_address_it_was_asked_from);

/// Codes and links are stored as keyed hashes: the database alone cannot test a code.
async fn codes_are_stored_keyed(db_kind: DbKind) {
    let (app, smtp) = mail_app(db_kind).await;
    let email = unique_email();
    app.register(&email, PASSWORD).await;
    let mail = smtp.nth_mail_to(&email, "Confirm", 0).await;
    let (code, token) = (code(&mail), link_token(&mail));
    let row = email_tokens::Entity::find()
        .filter(email_tokens::Column::Email.eq(&email))
        .one(&app.db().await)
        .await
        .expect("query")
        .expect("a token row");
    let sha256 = |text: &str| hex(&Sha256::digest(text.as_bytes()));
    assert_ne!(row.code_hash, sha256(&format!("{}:{code}", row.id)));
    assert_ne!(row.token_hash, sha256(&token));
    assert!(!row.code_hash.contains(&code) && !row.token_hash.contains(&token));
    let (status, body) = app
        .mutation(
            "auth.verifyEmail",
            Some(json!({ "email": email, "code": code })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the code still works: {body}");
}
each_database!(codes_are_stored_keyed);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Many first sign-ins to a squatted address at once: one reclaim, one account, every caller
/// signed in to it with a live session.
async fn concurrent_sign_ins_reclaim_once(db_kind: DbKind) {
    let provider = FakeIdProvider::start().await;
    let app = id_provider::spawn_app(db_kind, &provider).await;
    let victim = unique_email();
    app.register(&victim, PASSWORD).await;
    let id_token = sign(0, &google_claims("g-racer", &victim, true));
    let answers = join_all((0..8).map(|_| google(&app, &id_token))).await;
    let mut ids = Vec::new();
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        ids.push(user_id(data(body)));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one account: {ids:?}");
    for (_, body) in &answers {
        let (status, me_body) = me(&app, &access(data(body))).await;
        assert_eq!(status, StatusCode::OK, "every session lives: {me_body}");
    }
    assert_eq!(audit_count(&app, "account_reclaimed").await, 1);
}
each_database!(concurrent_sign_ins_reclaim_once);

/// With `ALIAS_REQUIRE_VERIFIED_EMAIL`, an unverified account may only see and fix itself.
async fn unverified_accounts_are_refused_when_verification_is_required(db_kind: DbKind) {
    let smtp = TestSmtp::start().await;
    let url = smtp.url.clone();
    let app = TestApp::spawn_with(db_kind, move |config| {
        config.mail.smtp_url = Some(alias_server::config::Secret(url));
        config.mail.require_verified_email = true;
    })
    .await;
    let email = unique_email();
    let session = app.register(&email, PASSWORD).await;
    let token = access(&session);
    for path in [
        "preferences.get",
        "apiKeys.list",
        "chat.sessions.list",
        "audit.list",
    ] {
        let (status, body) = app.query_as(&token, path, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(error_code(&body), "FORBIDDEN");
        assert_eq!(error_reason(&body), "email_not_verified", "{path}");
    }
    for path in ["users.me", "auth.sessions.list"] {
        let (status, body) = app.query_as(&token, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let (status, body) = app
        .mutation_as(&token, "users.update", Some(json!({ "name": "Ada" })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .mutation_as(&token, "auth.resendVerification", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let code = code(&smtp.nth_mail_to(&email, "Confirm", 1).await);
    let (status, body) = app
        .mutation(
            "auth.verifyEmail",
            Some(json!({ "email": email, "code": code })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = login(&app, &email, PASSWORD).await;
    let (status, body) = app
        .query_as(&access(data(&body)), "preferences.get", None)
        .await;
    assert_eq!(status, StatusCode::OK, "verified: {body}");
}
each_database!(unverified_accounts_are_refused_when_verification_is_required);

/// `users.changeEmail`: 5 per hour per account, each audited, the change audited when it
/// applies.
async fn email_changes_are_limited_and_audited(db_kind: DbKind) {
    let (app, smtp) = mail_app(db_kind).await;
    let session = app.register(&unique_email(), PASSWORD).await;
    let mut last = None;
    for _ in 0..5 {
        last = Some(squatter_changes_email(&app, &smtp, &session, Some(PASSWORD)).await);
    }
    let (status, body) = app
        .mutation_as(
            &access(&session),
            "users.changeEmail",
            Some(json!({ "newEmail": unique_email(), "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(error_reason(&body), "rate_limited");
    assert_eq!(audit_count(&app, "email_change_requested").await, 5);
    let (new_email, code) = last.expect("a change");
    let (status, body) = app
        .mutation(
            "auth.verifyEmail",
            Some(json!({ "email": new_email, "code": code })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(audit_count(&app, "email_changed").await, 1);
}
each_database!(email_changes_are_limited_and_audited);

/// `users.delete` (and `users.changeEmail`) password checks count against the per-IP
/// sign-in limit, shared with `auth.login`.
async fn password_checks_count_against_the_ip_limit(db_kind: DbKind) {
    let app = TestApp::spawn_with(db_kind, |config| {
        config.auth.ip_limit_per_minute = 3;
    })
    .await;
    let token = access(&app.register(&unique_email(), PASSWORD).await);
    let delete = || {
        app.mutation_as(
            &token,
            "users.delete",
            Some(json!({ "password": "wrong password" })),
        )
    };
    for _ in 0..3 {
        let (status, body) = delete().await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (status, body) = delete().await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let (status, _) = login(&app, &unique_email(), PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the same budget");
}
each_database!(password_checks_count_against_the_ip_limit);

/// A locked account's owner resets the password and signs in at once.
async fn a_reset_ends_the_lock(db_kind: DbKind) {
    let (app, smtp) = mail_app(db_kind).await;
    let email = unique_email();
    app.register(&email, PASSWORD).await;
    for _ in 0..5 {
        let (status, _) = login(&app, &email, "wrong password").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = login(&app, &email, PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "locked");
    app.mutation("auth.requestPasswordReset", Some(json!({ "email": email })))
        .await;
    let code = code(&smtp.nth_mail_to(&email, "Reset", 0).await);
    let (status, body) = app
        .mutation(
            "auth.resetPassword",
            Some(json!({ "email": email, "code": code, "newPassword": NEW_PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = login(&app, &email, NEW_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
each_database!(a_reset_ends_the_lock);

/// The hourly prune deletes used or expired tokens after a day, and ended attempt windows.
async fn old_tokens_and_attempts_are_pruned(db_kind: DbKind) {
    let app = TestApp::spawn(db_kind).await;
    let email = unique_email();
    app.register(&email, PASSWORD).await;
    let (status, _) = login(&app, &email, "wrong password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let db = app.db().await;
    let now = chrono::Utc::now();
    let pruned = alias_server::users::prune(&app.state, now)
        .await
        .expect("prune");
    assert_eq!(
        pruned,
        alias_server::users::Pruned::default(),
        "nothing old yet"
    );
    let later = now + chrono::Duration::days(3);
    let pruned = alias_server::users::prune(&app.state, later)
        .await
        .expect("prune");
    assert_eq!(pruned.email_tokens, 1);
    assert_eq!(pruned.password_attempts, 1);
    assert_eq!(
        email_tokens::Entity::find()
            .count(&db)
            .await
            .expect("count"),
        0
    );
    assert_eq!(
        password_attempts::Entity::find()
            .count(&db)
            .await
            .expect("count"),
        0
    );
}
each_database!(old_tokens_and_attempts_are_pruned);

/// The migration marks accounts that already had a Google/Apple sign-in verified (their
/// provider vouched for the address), and only those.
async fn the_migration_marks_provider_accounts_verified(db_kind: DbKind) {
    use migration::{Migrator, MigratorTrait};
    use sea_orm::{ActiveModelTrait, Set};

    let app = TestApp::spawn(db_kind).await;
    let db = app.db().await;
    let migrations = Migrator::migrations();
    let position = migrations
        .iter()
        .position(|migration| migration.name() == "m20261202_11_email_token_binding")
        .expect("the migration is listed");
    let steps = u32::try_from(migrations.len() - position).expect("a few");
    Migrator::down(&db, Some(steps))
        .await
        .expect("revert to before it");

    let now = chrono::Utc::now();
    let mut ids = Vec::new();
    for with_identity in [true, false] {
        let id = Uuid::now_v7();
        users::ActiveModel {
            id: Set(id),
            email: Set(unique_email()),
            name: Set("Old account".to_owned()),
            avatar_url: Set(None),
            avatar_file_id: Set(None),
            password_hash: Set(None),
            email_verified_at: Set(None),
            tier: Set("free".to_owned()),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&db)
        .await
        .expect("an old account");
        if with_identity {
            entity::user_identities::ActiveModel {
                id: Set(Uuid::now_v7()),
                user_id: Set(id),
                provider: Set("apple".to_owned()),
                subject: Set(format!("apple-{id}")),
                created_at: Set(now),
            }
            .insert(&db)
            .await
            .expect("its Apple sign-in");
        }
        ids.push(id);
    }
    Migrator::up(&db, None).await.expect("migrate");

    let verified = |id: Uuid| {
        let db = db.clone();
        async move {
            users::Entity::find_by_id(id)
                .one(&db)
                .await
                .expect("query")
                .expect("the account")
                .email_verified_at
        }
    };
    assert!(verified(ids[0]).await.is_some(), "the Apple account");
    assert!(
        verified(ids[1]).await.is_none(),
        "nothing vouched for this one"
    );
}
each_database!(the_migration_marks_provider_accounts_verified);
