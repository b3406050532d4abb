//! The account lock as an attacker meets it: at most 5 password verifications per account
//! per window, whatever the concurrency, batching or source addresses, and every procedure
//! that checks a password (`users.delete` too) draws on the same attempts and is audited.
//! Verifications are counted twice: by the server's own counter of password hashes computed
//! (`Passwords::verifications`), and from the audit rows (each verification writes exactly
//! one), which must agree.

use entity::audit_events;
use futures::future::join_all;
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::each_database;
use crate::helpers::{DbKind, TestApp, data, error_code, error_reason, unique_email};

const PASSWORD: &str = "correct horse battery";
const ATTEMPTS: usize = 50;

/// A proxy-trusting server (its per-IP limits then see each forwarded address) with one
/// account; returns the account's email and id.
async fn app_with_account(db_kind: DbKind) -> (TestApp, String, Uuid) {
    let app = TestApp::spawn_with(db_kind, |config| config.trust_proxy = true).await;
    let email = unique_email();
    let session = app.register(&email, PASSWORD).await;
    let id = session["user"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("user id");
    (app, email, id)
}

/// Password verifications done for the account: the audit rows they wrote.
async fn verifications(app: &TestApp, user_id: Uuid) -> u64 {
    audit_events::Entity::find()
        .filter(audit_events::Column::UserId.eq(user_id))
        .filter(audit_events::Column::Action.is_in([
            "sign_in",
            "sign_in_failed",
            "password_check_failed",
        ]))
        .count(&app.db().await)
        .await
        .expect("count audit rows")
}

fn wrong_login(email: &str, i: usize) -> Value {
    json!({ "email": email, "password": format!("wrong password {i}") })
}

/// Counts the answers by code: (UNAUTHORIZED, TOO_MANY_REQUESTS); nothing else is allowed.
fn tally<'a>(codes: impl IntoIterator<Item = &'a str>) -> (usize, usize) {
    let (mut unauthorized, mut limited) = (0, 0);
    for code in codes {
        match code {
            "UNAUTHORIZED" => unauthorized += 1,
            "TOO_MANY_REQUESTS" => limited += 1,
            other => panic!("unexpected answer {other}"),
        }
    }
    (unauthorized, limited)
}

/// After the attack: at most 5 verified, each audited, and the owner's right password is
/// refused too until the window ends (the lock does not give in to the lucky guess).
/// `before`: verifications done before the attack.
async fn assert_locked(
    app: &TestApp,
    email: &str,
    user_id: Uuid,
    unauthorized: usize,
    before: u64,
) {
    assert!(
        (1..=5).contains(&unauthorized),
        "{unauthorized} guesses verified"
    );
    let verified = before + unauthorized as u64;
    assert_eq!(verifications(app, user_id).await, verified);
    assert_eq!(
        app.state.auth.passwords.verifications(),
        verified,
        "hashes computed"
    );
    let (status, body) = app
        .mutation(
            "auth.login",
            Some(json!({ "email": email, "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(error_reason(&body), "rate_limited");
    assert!(
        body["error"]["data"]["retryAfterSeconds"]
            .as_u64()
            .is_some_and(|seconds| seconds > 800),
        "{body}"
    );
    assert_eq!(verifications(app, user_id).await, verified);
    assert_eq!(app.state.auth.passwords.verifications(), verified);
}

async fn concurrent_logins_verify_at_most_five(db_kind: DbKind) {
    let (app, email, user_id) = app_with_account(db_kind).await;
    let answers =
        join_all((0..ATTEMPTS).map(|i| app.mutation("auth.login", Some(wrong_login(&email, i)))))
            .await;
    let (unauthorized, limited) = tally(answers.iter().map(|(_, body)| error_code(body)));
    assert_eq!(unauthorized + limited, ATTEMPTS);
    assert_locked(&app, &email, user_id, unauthorized, 0).await;
}
each_database!(concurrent_logins_verify_at_most_five);

/// The right password among 40 wrong ones, all at once: still at most 5 hashes computed,
/// whichever order they ran in (a right one gives nothing back), and the lucky guess does not
/// reopen the account.
async fn right_and_wrong_passwords_together_verify_at_most_five(db_kind: DbKind) {
    let (app, email, user_id) = app_with_account(db_kind).await;
    let inputs: Vec<Value> = (0..41)
        .map(|i| {
            if i == 20 {
                json!({ "email": email, "password": PASSWORD })
            } else {
                wrong_login(&email, i)
            }
        })
        .collect();
    let answers = join_all(
        inputs
            .iter()
            .map(|input| app.mutation("auth.login", Some(input.clone()))),
    )
    .await;
    let (mut signed_in, mut refused, mut limited) = (0, 0, 0);
    for (status, body) in &answers {
        match *status {
            StatusCode::OK => signed_in += 1,
            StatusCode::UNAUTHORIZED => refused += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("unexpected answer {other}: {body}"),
        }
    }
    assert_eq!(signed_in + refused + limited, 41);
    assert!(signed_in <= 1);
    let hashed = app.state.auth.passwords.verifications();
    assert!(hashed <= 5, "{hashed} hashes computed");
    assert_eq!(hashed, (signed_in + refused) as u64);
    assert_eq!(
        verifications(&app, user_id).await,
        hashed,
        "one audit row each"
    );
    let (status, _) = app
        .mutation(
            "auth.login",
            Some(json!({ "email": email, "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "5 used: locked");
}
each_database!(right_and_wrong_passwords_together_verify_at_most_five);

async fn one_batch_of_logins_verifies_at_most_five(db_kind: DbKind) {
    let (app, email, user_id) = app_with_account(db_kind).await;
    let paths = vec!["auth.login"; ATTEMPTS].join(",");
    let input: serde_json::Map<String, Value> = (0..ATTEMPTS)
        .map(|i| (i.to_string(), wrong_login(&email, i)))
        .collect();
    let response = app
        .http
        .post(app.url(&format!("/trpc/{paths}?batch=1")))
        .json(&input)
        .send()
        .await
        .expect("batch");
    let answers: Vec<Value> = response.json().await.expect("batch answer");
    assert_eq!(answers.len(), ATTEMPTS);
    let (unauthorized, _) = tally(answers.iter().map(error_code));
    assert_locked(&app, &email, user_id, unauthorized, 0).await;
}
each_database!(one_batch_of_logins_verifies_at_most_five);

async fn logins_from_many_addresses_verify_at_most_five(db_kind: DbKind) {
    let (app, email, user_id) = app_with_account(db_kind).await;
    let answers = join_all((0..ATTEMPTS).map(|i| {
        let request = app
            .http
            .post(app.trpc_url("auth.login", None))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .json(&wrong_login(&email, i))
            .send();
        async move {
            let body: Value = request.await.expect("login").json().await.expect("json");
            body
        }
    }))
    .await;
    let (unauthorized, _) = tally(answers.iter().map(error_code));
    assert_locked(&app, &email, user_id, unauthorized, 0).await;
}
each_database!(logins_from_many_addresses_verify_at_most_five);

/// `users.delete` is no side door: its guesses are limited and audited like sign-ins, and
/// they use up the same attempts (the sign-in form is locked afterwards).
async fn users_delete_shares_the_lock_and_is_audited(db_kind: DbKind) {
    let (app, email, user_id) = app_with_account(db_kind).await;
    let session = app
        .mutation(
            "auth.login",
            Some(json!({ "email": email, "password": PASSWORD })),
        )
        .await
        .1;
    let access = data(&session)["accessToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let answers = join_all((0..20).map(|i| {
        app.mutation_as(
            &access,
            "users.delete",
            Some(json!({ "password": format!("wrong password {i}") })),
        )
    }))
    .await;
    let (unauthorized, limited) = tally(answers.iter().map(|(_, body)| error_code(body)));
    assert_eq!(unauthorized + limited, 20);
    let failed = audit_events::Entity::find()
        .filter(audit_events::Column::UserId.eq(user_id))
        .filter(audit_events::Column::Action.eq("password_check_failed"))
        .count(&app.db().await)
        .await
        .expect("count audit rows");
    assert_eq!(failed, unauthorized as u64);
    // The sign-in above was one verification of the 5 (a right password counts too): the
    // guesses had 4.
    assert_locked(&app, &email, user_id, unauthorized, 1).await;
    let (status, _) = app
        .mutation_as(
            &access,
            "users.delete",
            Some(json!({ "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "still locked");
}
each_database!(users_delete_shares_the_lock_and_is_audited);
