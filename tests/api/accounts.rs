//! Accounts people can trust: registration is all-or-nothing, and concurrent first sign-ins
//! with one Google ID token make one account.

use entity::users;
use futures::future::join_all;
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};

use crate::each_database;
use crate::helpers::{DbKind, TestApp, data, unique_email};
use crate::id_provider::{self, FakeIdProvider, google_claims, sign};

const PASSWORD: &str = "correct horse battery";

async fn accounts_with_email(app: &TestApp, email: &str) -> u64 {
    users::Entity::find()
        .filter(users::Column::Email.eq(email))
        .count(&app.db().await)
        .await
        .expect("count users")
}

/// Makes writing a session fail (as a full disk would), or work again.
async fn break_session_writes(app: &TestApp, broken: bool) {
    let db = app.db().await;
    let statements: &[&str] = match (app.db_kind, broken) {
        (DbKind::Sqlite, true) => &[
            "CREATE TRIGGER fail_sessions BEFORE INSERT ON auth_sessions \
             BEGIN SELECT RAISE(ABORT, 'storage failed'); END",
        ],
        (DbKind::Sqlite, false) => &["DROP TRIGGER fail_sessions"],
        (DbKind::Postgres, true) => &[
            "CREATE FUNCTION fail_sessions() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'storage failed'; END $$",
            "CREATE TRIGGER fail_sessions BEFORE INSERT ON auth_sessions \
             FOR EACH ROW EXECUTE FUNCTION fail_sessions()",
        ],
        (DbKind::Postgres, false) => &["DROP TRIGGER fail_sessions ON auth_sessions"],
    };
    for statement in statements {
        db.execute_unprepared(statement).await.expect(statement);
    }
}

async fn registration_is_all_or_nothing(app: TestApp) {
    let email = unique_email();
    let input = json!({ "email": email, "password": PASSWORD, "name": "Ada" });
    break_session_writes(&app, true).await;
    let (status, body) = app.mutation("auth.register", Some(input.clone())).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(
        accounts_with_email(&app, &email).await,
        0,
        "no half account"
    );

    break_session_writes(&app, false).await;
    let (status, body) = app.mutation("auth.register", Some(input)).await;
    assert_eq!(status, StatusCode::OK, "registering again works: {body}");
    assert_eq!(accounts_with_email(&app, &email).await, 1);
}
crate::both_databases!(registration_is_all_or_nothing);

async fn google(app: &TestApp, id_token: &str) -> (StatusCode, Value) {
    app.mutation("auth.google", Some(json!({ "idToken": id_token })))
        .await
}

async fn concurrent_first_google_sign_ins_make_one_account(db_kind: DbKind) {
    let provider = FakeIdProvider::start().await;
    let app = id_provider::spawn_app(db_kind, &provider).await;
    let email = unique_email();
    let id_token = sign(0, &google_claims("g-race", &email, true));
    let answers = join_all((0..10).map(|_| google(&app, &id_token))).await;
    let mut ids = Vec::new();
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        ids.push(data(body)["user"]["id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one account: {ids:?}");
    assert_eq!(accounts_with_email(&app, &email).await, 1);
}
each_database!(concurrent_first_google_sign_ins_make_one_account);
