//! `auth.*` and the signed-in guard, over HTTP, on both databases where storage matters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use entity::audit_events;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use alias_server::config::IdProviderConfig;

use crate::both_databases;
use crate::helpers::{DbKind, TestApp, data, error_code, error_reason, unique_email};
use crate::id_provider::{
    self, FakeIdProvider, GOOGLE_CLIENT_ID, apple_claims, google_claims, sign,
};

const PASSWORD: &str = "correct horse battery";

fn token(session: &Value, field: &str) -> String {
    session[field].as_str().unwrap_or_default().to_owned()
}

async fn refresh(app: &TestApp, refresh_token: &str) -> (StatusCode, Value) {
    app.mutation(
        "auth.refresh",
        Some(json!({ "refreshToken": refresh_token })),
    )
    .await
}

async fn me(app: &TestApp, access_token: &str) -> (StatusCode, Value) {
    app.query_as(access_token, "users.me", None).await
}

async fn register_and_use_the_session(app: TestApp) {
    let email = unique_email();
    let session = app.register(&email.to_uppercase(), PASSWORD).await;
    assert_eq!(session["tokenType"], "Bearer");
    assert_eq!(session["expiresIn"], 900);
    assert_eq!(session["user"]["email"], email, "stored lower-cased");
    assert_eq!(session["user"]["authProviders"], json!(["password"]));
    let (status, body) = me(&app, &token(&session, "accessToken")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(data(&body)["id"], session["user"]["id"]);
    assert_eq!(data(&body)["name"], "Test User");
}
both_databases!(register_and_use_the_session);

#[tokio::test]
async fn register_names_every_invalid_field() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    let input = json!({ "email": "not-an-email", "password": "short", "name": "  " });
    let (status, body) = app.mutation("auth.register", Some(input)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let fields = &body["error"]["data"]["fieldErrors"];
    for field in ["email", "password", "name"] {
        assert!(fields[field].is_string(), "{field}: {body}");
    }
}

async fn register_with_a_taken_email_is_a_conflict(app: TestApp) {
    let email = unique_email();
    app.register(&email, PASSWORD).await;
    let input = json!({ "email": format!("  {}  ", email.to_uppercase()), "password": PASSWORD, "name": "Again" });
    let (status, body) = app.mutation("auth.register", Some(input)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_reason(&body), "email_taken");
}
both_databases!(register_with_a_taken_email_is_a_conflict);

#[tokio::test]
async fn login_succeeds_and_fails_without_saying_why() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    let email = unique_email();
    app.register(&email, PASSWORD).await;

    let (status, body) = app
        .mutation(
            "auth.login",
            Some(json!({ "email": email, "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(data(&body)["accessToken"].is_string());

    let (wrong_status, wrong) = app
        .mutation(
            "auth.login",
            Some(json!({ "email": email, "password": "wrong password" })),
        )
        .await;
    let (unknown_status, unknown) = app
        .mutation(
            "auth.login",
            Some(json!({ "email": unique_email(), "password": PASSWORD })),
        )
        .await;
    assert_eq!(wrong_status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown_status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_reason(&wrong), "invalid_credentials");
    assert_eq!(wrong["error"]["message"], unknown["error"]["message"]);
    assert_eq!(
        wrong["error"]["data"]["reason"],
        unknown["error"]["data"]["reason"]
    );
}

/// The server's signing key and key id, to forge tokens the way an attacker with (or
/// without) the key would.
struct ForgeKit {
    pem: String,
    kid: String,
    claims: Value,
}

impl ForgeKit {
    async fn new(app: &TestApp, access_token: &str) -> Self {
        let pem = std::fs::read_to_string(app.data_dir.path().join("jwt-ed25519.pem"))
            .expect("generated key");
        let jwks: Value = app
            .http
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .expect("jwks")
            .json()
            .await
            .expect("json");
        let kid = jwks["keys"][0]["kid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
        Self {
            pem,
            kid,
            claims: payload(access_token),
        }
    }

    fn sign(&self, claims: &Value, pem: &str) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let key = EncodingKey::from_ed_pem(pem.as_bytes()).expect("ed25519 key");
        jsonwebtoken::encode(&header, claims, &key).expect("sign")
    }
}

fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap_or_default();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap_or_default()).unwrap_or_default()
}

#[tokio::test]
async fn forged_and_broken_access_tokens_are_refused() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    let session = app.register(&unique_email(), PASSWORD).await;
    let access = token(&session, "accessToken");
    let kit = ForgeKit::new(&app, &access).await;
    assert_eq!(kit.claims["iss"], "alias-server");
    assert_eq!(kit.claims["aud"], "alias-app");
    assert!(kit.claims["sid"].is_string());

    let mut expired = kit.claims.clone();
    expired["exp"] = json!(chrono::Utc::now().timestamp() - 60);
    let expired = kit.sign(&expired, &kit.pem);

    let mut tampered_claims = kit.claims.clone();
    tampered_claims["sub"] = json!(uuid::Uuid::new_v4());
    let parts: Vec<&str> = access.split('.').collect();
    let forged_payload = URL_SAFE_NO_PAD.encode(tampered_claims.to_string());
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);

    let other_key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let other_pem =
        ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_pem(&other_key, Default::default())
            .expect("pem");
    let wrong_key = kit.sign(&kit.claims, &other_pem);

    let none_header =
        URL_SAFE_NO_PAD.encode(json!({ "alg": "none", "typ": "JWT", "kid": kit.kid }).to_string());
    let alg_none = format!(
        "{none_header}.{}.",
        URL_SAFE_NO_PAD.encode(kit.claims.to_string())
    );

    // HS256 "signed" with the public key: the classic algorithm-confusion attack.
    let public_x = kit.pem.clone();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(kit.kid.clone());
    let hs256 = jsonwebtoken::encode(
        &hs_header,
        &kit.claims,
        &EncodingKey::from_secret(public_x.as_bytes()),
    )
    .expect("hs256");

    let mut wrong_audience = kit.claims.clone();
    wrong_audience["aud"] = json!("someone-else");
    let wrong_audience = kit.sign(&wrong_audience, &kit.pem);

    for (name, forged, reason) in [
        ("expired", expired.as_str(), "token_expired"),
        ("tampered", tampered.as_str(), "invalid_token"),
        ("wrong key", wrong_key.as_str(), "invalid_token"),
        ("alg none", alg_none.as_str(), "invalid_token"),
        ("HS256", hs256.as_str(), "invalid_token"),
        ("wrong audience", wrong_audience.as_str(), "invalid_token"),
        ("garbage", "not.a.jwt", "invalid_token"),
    ] {
        let (status, body) = me(&app, forged).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: {body}");
        assert_eq!(error_reason(&body), reason, "{name}");
    }

    let (status, body) = app.query("users.me", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_reason(&body), "missing_token");
    let response = app
        .http
        .get(app.url("/trpc/users.me"))
        .header("authorization", format!("Basic {access}"))
        .send()
        .await
        .expect("request");
    let body: Value = response.json().await.expect("json");
    assert_eq!(error_reason(&body), "invalid_token");
}

async fn refresh_rotates_the_refresh_token(app: TestApp) {
    let session = app.register(&unique_email(), PASSWORD).await;
    let (status, body) = refresh(&app, &token(&session, "refreshToken")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let next = data(&body);
    assert_ne!(next["refreshToken"], session["refreshToken"]);
    assert_eq!(next["user"]["id"], session["user"]["id"]);
    let (status, _) = me(&app, &token(next, "accessToken")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = refresh(&app, "not-a-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_reason(&body), "invalid_token");
}
both_databases!(refresh_rotates_the_refresh_token);

/// Supabase's replay test: rotate three times, replay the first token, and every token of
/// the family is dead, the revocation committed although the replaying call failed.
async fn replaying_a_rotated_token_revokes_the_family(app: TestApp) {
    let session = app.register(&unique_email(), PASSWORD).await;
    let first = token(&session, "refreshToken");
    let mut current = session.clone();
    for _ in 0..3 {
        let (status, body) = refresh(&app, &token(&current, "refreshToken")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        current = data(&body).clone();
    }
    let (status, _) = me(&app, &token(&current, "accessToken")).await;
    assert_eq!(status, StatusCode::OK, "the session is now cached");
    let (status, body) = refresh(&app, &first).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_reason(&body), "refresh_token_reused");

    let (status, body) = refresh(&app, &token(&current, "refreshToken")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_reason(&body), "session_revoked");
    let (status, body) = me(&app, &token(&current, "accessToken")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_reason(&body), "session_revoked");

    let reuse_rows = audit_events::Entity::find()
        .filter(audit_events::Column::Action.eq("refresh_token_reused"))
        .all(&app.db().await)
        .await
        .expect("audit rows");
    assert_eq!(reuse_rows.len(), 1);
}
both_databases!(replaying_a_rotated_token_revokes_the_family);

/// A double tap sends the same refresh token twice at once: neither call signs the user out,
/// and the session goes on with whichever answer the app kept.
async fn concurrent_double_refresh_keeps_the_session(app: TestApp) {
    let session = app.register(&unique_email(), PASSWORD).await;
    let refresh_token = token(&session, "refreshToken");
    let (a, b) = tokio::join!(refresh(&app, &refresh_token), refresh(&app, &refresh_token));
    assert_eq!(a.0, StatusCode::OK, "{}", a.1);
    assert_eq!(b.0, StatusCode::OK, "{}", b.1);
    // A retry a moment later is also forgiven.
    let (status, retried) = refresh(&app, &refresh_token).await;
    assert_eq!(status, StatusCode::OK, "{retried}");

    let kept = data(&b.1);
    let (status, body) = refresh(&app, &token(kept, "refreshToken")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = me(&app, &token(data(&body), "accessToken")).await;
    assert_eq!(status, StatusCode::OK);
}
both_databases!(concurrent_double_refresh_keeps_the_session);

#[tokio::test]
async fn a_rotated_token_outside_the_grace_period_is_reuse() {
    let app = TestApp::spawn_with(DbKind::Sqlite, |config| {
        config.auth.refresh_reuse_interval = Duration::ZERO;
    })
    .await;
    let session = app.register(&unique_email(), PASSWORD).await;
    let first = token(&session, "refreshToken");
    let (status, _) = refresh(&app, &first).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, body) = refresh(&app, &first).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_reason(&body), "refresh_token_reused");
}

async fn logout_ends_the_session_at_once(app: TestApp) {
    let session = app.register(&unique_email(), PASSWORD).await;
    let access = token(&session, "accessToken");
    let (status, body) = app
        .mutation_as(&access, "auth.logout", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(data(&body), &Value::Null);
    let (status, body) = me(&app, &access).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_reason(&body), "session_revoked");
    let (_, body) = refresh(&app, &token(&session, "refreshToken")).await;
    assert_eq!(error_reason(&body), "session_revoked");
}
both_databases!(logout_ends_the_session_at_once);

/// Calls with the same token keep filling the session cache while the session ends; every
/// call sent after `auth.logout` answered is refused.
async fn a_session_ended_under_load_stops_at_once(app: TestApp) {
    let session = app.register(&unique_email(), PASSWORD).await;
    let access = token(&session, "accessToken");
    let logged_out = AtomicBool::new(false);
    let calls = || async {
        for _ in 0..40 {
            let sent_after_logout = logged_out.load(Ordering::SeqCst);
            let (status, body) = me(&app, &access).await;
            if sent_after_logout {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
                assert_eq!(error_reason(&body), "session_revoked");
            }
        }
    };
    let logout = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (status, body) = app
            .mutation_as(&access, "auth.logout", Some(json!({})))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        logged_out.store(true, Ordering::SeqCst);
    };
    tokio::join!(calls(), calls(), calls(), calls(), logout);
    let (status, _) = me(&app, &access).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
both_databases!(a_session_ended_under_load_stops_at_once);

/// Another instance learns of a revocation from the database: at once with
/// `ALIAS_SESSION_CACHE_SECONDS=0`, else once its cached copy is older than that.
#[tokio::test]
async fn another_instance_sees_a_revocation_within_its_cache_ttl() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    let uncached = app
        .spawn_beside(|config| config.auth.session_cache_ttl = Duration::ZERO)
        .await;
    let cached = app
        .spawn_beside(|config| config.auth.session_cache_ttl = Duration::from_secs(1))
        .await;
    let session = app.register(&unique_email(), PASSWORD).await;
    let access = token(&session, "accessToken");
    for instance in [&uncached, &cached] {
        let (status, body) = me(instance, &access).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, _) = app
        .mutation_as(&access, "auth.logout", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = me(&uncached, &access).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_reason(&body), "session_revoked");
    let body = me_until_refused(&cached, &access).await;
    assert_eq!(error_reason(&body), "session_revoked");
}

/// Verified tokens are remembered, but never past their expiry.
#[tokio::test]
async fn a_token_verified_earlier_still_expires() {
    let app = TestApp::spawn_with(DbKind::Sqlite, |config| {
        config.auth.access_ttl = Duration::from_secs(1);
    })
    .await;
    let session = app.register(&unique_email(), PASSWORD).await;
    let access = token(&session, "accessToken");
    let (status, _) = me(&app, &access).await;
    assert_eq!(status, StatusCode::OK);
    // Refused after 1 s of validity plus the verifier's 5 s of clock-skew leeway.
    let body = me_until_refused(&app, &access).await;
    assert_eq!(error_reason(&body), "token_expired");
}

/// Calls `users.me` until it is refused (for at most 15 s) and returns the refusal.
async fn me_until_refused(app: &TestApp, access_token: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = me(app, access_token).await;
        if status == StatusCode::UNAUTHORIZED {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepted after 15 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sessions_are_listed_and_revoked_by_their_owner_only(app: TestApp) {
    let email = unique_email();
    let phone = app.register(&email, PASSWORD).await;
    let (_, laptop) = app
        .mutation(
            "auth.login",
            Some(json!({ "email": email, "password": PASSWORD })),
        )
        .await;
    let laptop = data(&laptop).clone();
    let phone_access = token(&phone, "accessToken");

    let (status, body) = app
        .query_as(&phone_access, "auth.sessions.list", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sessions = data(&body).as_array().cloned().unwrap_or_default();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    let laptop_session = sessions
        .iter()
        .find(|s| s["current"] == false)
        .map(|s| s["id"].clone())
        .unwrap_or_default();

    let intruder = app.register(&unique_email(), PASSWORD).await;
    let intruder_access = token(&intruder, "accessToken");
    for id in [laptop_session.clone(), json!(uuid::Uuid::new_v4())] {
        let (status, body) = app
            .mutation_as(
                &intruder_access,
                "auth.sessions.revoke",
                Some(json!({ "id": id })),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
    let (status, _) = me(&app, &token(&laptop, "accessToken")).await;
    assert_eq!(status, StatusCode::OK, "the intruder revoked nothing");

    let (status, body) = app
        .mutation_as(
            &phone_access,
            "auth.sessions.revoke",
            Some(json!({ "id": laptop_session })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = me(&app, &token(&laptop, "accessToken")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_reason(&body), "session_revoked");
    let (_, body) = app
        .query_as(&phone_access, "auth.sessions.list", None)
        .await;
    assert_eq!(data(&body).as_array().map(Vec::len), Some(1));

    let (status, body) = app
        .mutation_as(
            &phone_access,
            "auth.sessions.revoke",
            Some(json!({ "id": "nope" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["data"]["fieldErrors"]["id"].is_string());
}
both_databases!(sessions_are_listed_and_revoked_by_their_owner_only);

async fn deleting_the_account_needs_the_password_and_ends_everything(app: TestApp) {
    let email = unique_email();
    let session = app.register(&email, PASSWORD).await;
    let access = token(&session, "accessToken");
    let (status, body) = app.mutation_as(&access, "users.delete", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["data"]["fieldErrors"]["password"].is_string());
    let (status, body) = app
        .mutation_as(
            &access,
            "users.delete",
            Some(json!({ "password": "wrong one!" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_reason(&body), "invalid_credentials");

    let (status, body) = app
        .mutation_as(
            &access,
            "users.delete",
            Some(json!({ "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = me(&app, &access).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_reason(&body), "session_revoked");
    let (status, _) = refresh(&app, &token(&session, "refreshToken")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .mutation(
            "auth.login",
            Some(json!({ "email": email, "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let user_id: uuid::Uuid = session["user"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("user id");
    let db = app.db().await;
    let owned = audit_events::Entity::find()
        .filter(audit_events::Column::UserId.eq(user_id))
        .all(&db)
        .await
        .expect("audit rows");
    assert!(owned.is_empty(), "the account's rows went with it");
    let deleted = audit_events::Entity::find()
        .filter(audit_events::Column::Action.eq("account_deleted"))
        .all(&db)
        .await
        .expect("audit rows");
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].metadata["userId"], json!(user_id));
    // Registering again with the same email works: nothing of the old account is left.
    app.register(&email, PASSWORD).await;
}
both_databases!(deleting_the_account_needs_the_password_and_ends_everything);

#[tokio::test]
async fn users_update_changes_only_what_is_sent() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    let session = app.register(&unique_email(), PASSWORD).await;
    let access = token(&session, "accessToken");
    let (status, body) = app
        .mutation_as(
            &access,
            "users.update",
            Some(json!({ "name": " Ada Lovelace " })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(data(&body)["name"], "Ada Lovelace");

    let (_, body) = app
        .mutation_as(&access, "users.update", Some(json!({ "name": "Ada" })))
        .await;
    assert_eq!(data(&body)["name"], "Ada");
    let (_, body) = app
        .mutation_as(
            &access,
            "users.update",
            Some(json!({ "avatarFileId": null })),
        )
        .await;
    assert_eq!(data(&body)["avatarUrl"], Value::Null, "null clears");
    assert_eq!(data(&body)["name"], "Ada", "an absent field stays");

    // A picture from elsewhere is no longer taken: avatars are uploaded files.
    let (status, body) = app
        .mutation_as(
            &access,
            "users.update",
            Some(json!({ "name": "", "avatarUrl": "https://cdn.example.com/ada.png" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["data"]["fieldErrors"]["avatarUrl"].is_string());

    let (_, body) = me(&app, &access).await;
    assert_eq!(
        data(&body)["name"],
        "Ada",
        "users.me sees the update at once"
    );
    assert_eq!(data(&body)["avatarUrl"], Value::Null);
}

#[tokio::test]
async fn failed_logins_lock_the_account_until_the_lock_ends() {
    let app = TestApp::spawn_with(DbKind::Sqlite, |config| {
        config.auth.login_lock = Duration::from_secs(2);
    })
    .await;
    let email = unique_email();
    app.register(&email, PASSWORD).await;
    let attempt = |password: &'static str| {
        app.mutation(
            "auth.login",
            Some(json!({ "email": email, "password": password })),
        )
    };
    for _ in 0..5 {
        let (status, _) = attempt("wrong password").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = attempt(PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "locked even with the right password"
    );
    let retry = body["error"]["data"]["retryAfterSeconds"]
        .as_u64()
        .unwrap_or_default();
    assert!((1..=3).contains(&retry), "{body}");
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let (status, body) = attempt(PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "released: {body}");
}

#[tokio::test]
async fn each_client_ip_is_limited() {
    let app = TestApp::spawn_with(DbKind::Sqlite, |config| {
        config.auth.ip_limit_per_minute = 3;
    })
    .await;
    for _ in 0..3 {
        app.register(&unique_email(), PASSWORD).await;
    }
    let input = json!({ "email": unique_email(), "password": PASSWORD, "name": "Four" });
    let (status, body) = app.mutation("auth.register", Some(input)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        body["error"]["data"]["retryAfterSeconds"]
            .as_u64()
            .is_some_and(|s| s >= 1)
    );
    // Another action has its own budget.
    let (status, _) = app
        .mutation(
            "auth.login",
            Some(json!({ "email": unique_email(), "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn sign_in_events_are_audited_without_secrets(app: TestApp) {
    let email = unique_email();
    let session = app.register(&email, PASSWORD).await;
    app.mutation(
        "auth.login",
        Some(json!({ "email": email, "password": "wrong password" })),
    )
    .await;
    app.mutation(
        "auth.login",
        Some(json!({ "email": email, "password": PASSWORD })),
    )
    .await;
    app.mutation_as(&token(&session, "accessToken"), "auth.logout", None)
        .await;
    let rows = audit_events::Entity::find()
        .all(&app.db().await)
        .await
        .expect("audit rows");
    let actions: Vec<&str> = rows.iter().map(|row| row.action.as_str()).collect();
    for action in ["sign_up", "sign_in_failed", "sign_in", "sign_out"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    for row in &rows {
        let text = format!("{row:?}");
        assert!(!text.contains(PASSWORD) && !text.contains("wrong password"));
        assert!(!text.contains(&token(&session, "refreshToken")));
        assert_eq!(row.ip.as_deref(), Some("127.0.0.1"));
    }
}
both_databases!(sign_in_events_are_audited_without_secrets);

async fn id_token_app(provider: &FakeIdProvider) -> TestApp {
    id_provider::spawn_app(DbKind::Sqlite, provider).await
}

async fn google(app: &TestApp, id_token: &str) -> (StatusCode, Value) {
    app.mutation("auth.google", Some(json!({ "idToken": id_token })))
        .await
}

#[tokio::test]
async fn google_sign_in_creates_then_finds_the_account() {
    let provider = FakeIdProvider::start().await;
    let app = id_token_app(&provider).await;
    let email = unique_email();
    let (status, body) = google(&app, &sign(0, &google_claims("g-1", &email, true))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let user = &data(&body)["user"];
    assert_eq!(user["email"], email);
    assert_eq!(user["name"], "Grace Hopper");
    assert_eq!(
        user["avatarUrl"],
        "https://lh3.googleusercontent.com/a/photo.jpg"
    );
    assert_eq!(user["authProviders"], json!(["google"]));

    let (status, again) = google(&app, &sign(0, &google_claims("g-1", &email, true))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(data(&again)["user"]["id"], user["id"]);
    assert_eq!(provider.fetches(), 1, "keys are cached");
}

#[tokio::test]
async fn google_tokens_with_the_wrong_audience_issuer_expiry_or_key_are_refused() {
    let provider = FakeIdProvider::start().await;
    let app = id_token_app(&provider).await;
    let email = unique_email();
    let with = |field: &str, value: Value| {
        let mut claims = google_claims("g-2", &email, true);
        claims[field] = value;
        claims
    };
    for (name, id_token) in [
        ("audience", sign(0, &with("aud", json!("another-app")))),
        (
            "issuer",
            sign(0, &with("iss", json!("https://evil.example.com"))),
        ),
        (
            "expired",
            sign(0, &with("exp", json!(id_provider::now() - 3600))),
        ),
        ("unserved key", sign(1, &google_claims("g-2", &email, true))),
        ("garbage", "abc.def.ghi".to_owned()),
    ] {
        let (status, body) = google(&app, &id_token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: {body}");
        assert_eq!(error_reason(&body), "invalid_token", "{name}");
    }
}

#[tokio::test]
async fn a_rotated_google_key_is_fetched_on_first_use() {
    let provider = FakeIdProvider::start().await;
    let app = id_token_app(&provider).await;
    let (status, _) = google(&app, &sign(0, &google_claims("g-3", &unique_email(), true))).await;
    assert_eq!(status, StatusCode::OK);
    provider.serve_key(1);
    let (status, body) = google(&app, &sign(1, &google_claims("g-4", &unique_email(), true))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(provider.fetches(), 2);
}

#[tokio::test]
async fn a_verified_provider_email_links_to_the_existing_verified_account() {
    let provider = FakeIdProvider::start().await;
    let app = id_token_app(&provider).await;
    let email = unique_email();
    let session = app.register(&email, PASSWORD).await;
    let password_session = token(&session, "accessToken");
    let (_, body) = me(&app, &password_session).await;
    assert_eq!(data(&body)["authProviders"], json!(["password"]));
    // As if the mailed link had been opened (an unverified account is reclaimed instead:
    // `email.rs`).
    entity::users::Entity::update_many()
        .col_expr(
            entity::users::Column::EmailVerifiedAt,
            sea_orm::sea_query::Expr::value(chrono::Utc::now()),
        )
        .filter(entity::users::Column::Email.eq(&email))
        .exec(&app.db().await)
        .await
        .expect("verify the address");

    let (status, body) = google(&app, &sign(0, &google_claims("g-5", &email, false))).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "unverified email does not take over: {body}"
    );
    assert_eq!(error_reason(&body), "email_not_verified");

    let (status, body) = google(
        &app,
        &sign(0, &google_claims("g-5", &email.to_uppercase(), true)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(data(&body)["user"]["id"], session["user"]["id"]);
    assert_eq!(
        data(&body)["user"]["authProviders"],
        json!(["password", "google"])
    );
    let (_, body) = me(&app, &password_session).await;
    assert_eq!(
        data(&body)["authProviders"],
        json!(["password", "google"]),
        "the other session sees the new sign-in method at once"
    );
}

#[tokio::test]
async fn apple_sign_in_takes_the_name_from_the_app() {
    let provider = FakeIdProvider::start().await;
    let app = id_token_app(&provider).await;
    let email = unique_email();
    let input =
        json!({ "idToken": sign(0, &apple_claims("a-1", &email)), "name": "Katherine Johnson" });
    let (status, body) = app.mutation("auth.apple", Some(input)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(data(&body)["user"]["name"], "Katherine Johnson");
    assert_eq!(data(&body)["user"]["authProviders"], json!(["apple"]));

    let google_audience = json!({ "idToken": sign(0, &google_claims("a-1", &email, true)) });
    let (status, _) = app.mutation("auth.apple", Some(google_audience)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a Google token is not an Apple token"
    );
}

#[tokio::test]
async fn provider_sign_in_is_off_without_client_ids() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    let (status, body) = app
        .mutation("auth.google", Some(json!({ "idToken": "x.y.z" })))
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(error_code(&body), "PRECONDITION_FAILED");
    assert_eq!(error_reason(&body), "provider_not_configured");
}

#[tokio::test]
async fn unreachable_provider_keys_are_service_unavailable() {
    let app = TestApp::spawn_with(DbKind::Sqlite, |config| {
        config.auth.google = IdProviderConfig {
            client_ids: vec![GOOGLE_CLIENT_ID.to_owned()],
            jwks_url: "http://127.0.0.1:9/keys".to_owned(),
        };
    })
    .await;
    let (status, body) = google(&app, &sign(0, &google_claims("g-6", &unique_email(), true))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
}

#[tokio::test]
async fn the_signing_key_is_generated_once_and_private() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    let path = app.data_dir.path().join("jwt-ed25519.pem");
    let before = std::fs::read_to_string(&path).expect("key file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let data_dir = app.data_dir.path().to_path_buf();
    let again = TestApp::spawn_with(DbKind::Sqlite, move |config| {
        config.data_dir = data_dir;
    })
    .await;
    let after = std::fs::read_to_string(&path).expect("key file");
    assert_eq!(before, after, "reused, not regenerated");
    drop(again);
}
