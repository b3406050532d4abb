//! `voice.*` and `POST /webhooks/livekit` over HTTP: LiveKit tokens checked as LiveKit reads
//! them, transcripts from the app and the agent becoming the chat, webhooks signed as
//! LiveKit signs them (and forged, stale, replayed, out of order), the quiet-call sweep.

use alias_server::config::{Config, LiveKitConfig, Secret};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::chat::{Chat, new_id};
use crate::each_database;
use crate::helpers::{DbKind, TestApp, data, error_code, error_reason};

const API_KEY: &str = "APItestkey";
const API_SECRET: &str = "test-secret-with-at-least-32-characters";
const AGENT: &str = "alias-assistant";

pub(crate) fn livekit(config: &mut Config) {
    config.voice.livekit = Some(LiveKitConfig {
        url: "wss://livekit.example.com".to_owned(),
        api_key: API_KEY.to_owned(),
        api_secret: Secret(API_SECRET.to_owned()),
        agent_name: Some(AGENT.to_owned()),
    });
}

async fn spawn(db: DbKind) -> TestApp {
    TestApp::spawn_with(db, livekit).await
}

/// `voice.start`'s result.
async fn start(app: &TestApp, token: &str, input: Value) -> Value {
    let (status, body) = app.mutation_as(token, "voice.start", Some(input)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    data(&body).clone()
}

/// The claims of a LiveKit token, verified with the API secret as LiveKit does.
fn claims(token: &str) -> Value {
    alias_server::security::install_crypto_provider();
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[API_KEY]);
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(API_SECRET.as_bytes()),
        &validation,
    )
    .expect("a token LiveKit accepts")
    .claims
}

/// The agent's job metadata in a join token.
fn agent_metadata(token: &str) -> Value {
    let claims = claims(token);
    let metadata = claims["roomConfig"]["agents"][0]["metadata"]
        .as_str()
        .expect("dispatch metadata");
    serde_json::from_str(metadata).expect("metadata is JSON")
}

fn segment(id: &str, speaker: &str, text: &str, start_ms: u64) -> Value {
    json!({ "id": id, "speaker": speaker, "text": text, "startMs": start_ms })
}

async fn append(
    app: &TestApp,
    credential: &str,
    call: &str,
    segments: Value,
) -> (StatusCode, Value) {
    let input = json!({ "voiceSessionId": call, "segments": segments });
    app.mutation_as(credential, "voice.transcript.append", Some(input))
        .await
}

/// A webhook body signed as LiveKit's server signs it, with `secret`, valid for `ttl` seconds
/// (negative: already expired).
fn sign(body: &str, secret: &str, ttl: i64) -> String {
    alias_server::security::install_crypto_provider();
    let now = Utc::now().timestamp();
    let claims = json!({
        "iss": API_KEY,
        "nbf": now - 5,
        "exp": now + ttl,
        "sha256": STANDARD.encode(Sha256::digest(body.as_bytes())),
        "video": {},
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

async fn post_webhook(app: &TestApp, body: &str, authorization: Option<&str>) -> StatusCode {
    let mut request = app
        .http
        .post(app.url("/webhooks/livekit"))
        .header("content-type", "application/webhook+json")
        .body(body.to_owned());
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    request.send().await.expect("webhook").status()
}

/// A LiveKit webhook event in protobuf JSON (64-bit numbers as strings).
fn event(id: &str, kind: &str, room: &str, identity: Option<&str>, at: i64) -> String {
    let mut event = json!({
        "event": kind,
        "id": id,
        "createdAt": at.to_string(),
        "room": { "sid": "RM_test", "name": room, "creationTime": at.to_string() },
    });
    if let Some(identity) = identity {
        event["participant"] =
            json!({ "sid": "PA_test", "identity": identity, "joinedAt": at.to_string() });
    }
    event.to_string()
}

async fn deliver(app: &TestApp, body: &str) -> StatusCode {
    post_webhook(app, body, Some(&sign(body, API_SECRET, 300))).await
}

async fn get_call(app: &TestApp, token: &str, id: &str) -> Value {
    let (status, body) = app
        .query_as(token, "voice.sessions.get", Some(json!({ "id": id })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    data(&body).clone()
}

async fn user_id(app: &TestApp, token: &str) -> String {
    let (_, me) = app.query_as(token, "users.me", None).await;
    data(&me)["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn without_livekit_voice_is_not_configured() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    let token = app.new_user().await;
    let (status, body) = app
        .mutation_as(&token, "voice.start", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    assert_eq!(error_reason(&body), "voice_not_configured");
    let body = event("EV_x", "room_started", "alias-voice-x", None, 1);
    assert_eq!(deliver(&app, &body).await, StatusCode::NOT_FOUND);
}

async fn start_mints_a_livekit_token_for_one_room(db: DbKind) {
    let app = spawn(db).await;
    let token = app.new_user().await;
    let me = user_id(&app, &token).await;
    let started = start(&app, &token, json!({})).await;
    let room = started["roomName"].as_str().expect("room");
    assert_eq!(started["serverUrl"], "wss://livekit.example.com");
    let claims = claims(started["token"].as_str().expect("token"));
    assert_eq!(claims["iss"], API_KEY);
    assert_eq!(claims["sub"], me);
    assert_eq!(claims["name"], "Test User");
    assert_eq!(
        claims["video"],
        json!({ "room": room, "roomJoin": true, "canPublish": true, "canSubscribe": true, "canPublishData": true })
    );
    let lifetime = claims["exp"].as_i64().unwrap_or_default() - Utc::now().timestamp();
    assert!((500..=600).contains(&lifetime), "short-lived: {lifetime}");
    assert_eq!(claims["roomConfig"]["name"], room);
    assert_eq!(claims["roomConfig"]["agents"][0]["agentName"], AGENT);
    let metadata = agent_metadata(started["token"].as_str().unwrap_or_default());
    assert_eq!(metadata["voiceSessionId"], started["voiceSessionId"]);
    assert_eq!(metadata["chatSessionId"], started["chatSessionId"]);
    assert!(
        metadata["agentToken"]
            .as_str()
            .is_some_and(|credential| credential.len() > 40)
    );

    // A new chat session was made for the call; an existing one of the user's can be given,
    // another user's cannot.
    let (_, chat) = app
        .query_as(
            &token,
            "chat.sessions.get",
            Some(json!({ "id": started["chatSessionId"] })),
        )
        .await;
    assert_eq!(data(&chat)["title"], "Voice call");
    let again = start(
        &app,
        &token,
        json!({ "chatSessionId": started["chatSessionId"] }),
    )
    .await;
    assert_eq!(again["chatSessionId"], started["chatSessionId"]);
    assert_ne!(
        again["roomName"], started["roomName"],
        "a new room per call"
    );
    let stranger = app.new_user().await;
    let input = json!({ "chatSessionId": started["chatSessionId"] });
    let (status, body) = app.mutation_as(&stranger, "voice.start", Some(input)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = app.mutation_as("", "voice.start", Some(json!({}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
each_database!(start_mints_a_livekit_token_for_one_room);

async fn transcripts_from_app_and_agent_become_the_chat(db: DbKind) {
    let app = spawn(db).await;
    let token = app.new_user().await;
    let started = start(&app, &token, json!({})).await;
    let call = started["voiceSessionId"].as_str().expect("id");
    let agent = agent_metadata(started["token"].as_str().unwrap_or_default())["agentToken"]
        .as_str()
        .expect("agent credential")
        .to_owned();

    // The agent's reply arrives before the user's words it answers: time order wins.
    let (status, body) = append(
        &app,
        &agent,
        call,
        json!([segment(
            "a1",
            "assistant",
            "The quarterly budget meeting is at noon.",
            40
        )]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(data(&body), &json!({ "appended": 1, "duplicates": 0 }));
    let (status, body) = append(
        &app,
        &token,
        call,
        json!([segment("u1", "user", "When is the budget meeting?", 10)]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Sending the same ids again (a retry) changes nothing.
    let (_, body) = append(
        &app,
        &agent,
        call,
        json!([
            segment("a1", "assistant", "Something else entirely", 40),
            segment("u1", "user", "Changed", 10),
        ]),
    )
    .await;
    assert_eq!(data(&body), &json!({ "appended": 0, "duplicates": 2 }));

    let detail = get_call(&app, &token, call).await;
    let texts: Vec<&str> = detail["transcript"]
        .as_array()
        .map(|segments| segments.iter().filter_map(|s| s["text"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        texts,
        [
            "When is the budget meeting?",
            "The quarterly budget meeting is at noon."
        ]
    );
    assert_eq!(detail["transcript"][0]["id"], "u1");
    assert_eq!(detail["transcript"][0]["speaker"], "user");
    assert_eq!(detail["status"], "active");
    assert!(
        detail["transcriptPreview"]
            .as_str()
            .is_some_and(|preview| preview.starts_with("When is the budget meeting?"))
    );

    // The chat session holds them, in time order, as voice messages.
    let input = json!({ "sessionId": started["chatSessionId"] });
    let (_, page) = app
        .query_as(&token, "chat.messages.list", Some(input))
        .await;
    let messages = data(&page)["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let turns: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or_default(),
                m["source"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(turns, [("user", "voice"), ("assistant", "voice")]);
    assert_eq!(messages[1]["id"], detail["transcript"][1]["messageId"]);

    // Search finds what was said, and says it came from a call.
    let (_, found) = app
        .query_as(&token, "chat.search", Some(json!({ "query": "quarterly" })))
        .await;
    let hits = data(&found)["hits"].as_array().cloned().unwrap_or_default();
    assert_eq!(hits.len(), 1, "{found}");
    assert_eq!(hits[0]["source"], "voice");
    assert_eq!(hits[0]["sessionId"], started["chatSessionId"]);

    // Ending it: the agent still appends its last words for a while.
    let (status, body) = app
        .mutation_as(&token, "voice.end", Some(json!({ "voiceSessionId": call })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(data(&body)["status"], "ended");
    assert!(data(&body)["durationSeconds"].is_u64());
    let (status, body) = append(
        &app,
        &agent,
        call,
        json!([segment("a2", "assistant", "Bye.", 60)]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Long after the end, the agent's credential is refused.
    let db = app.db().await;
    let sql = match app.db_kind {
        DbKind::Sqlite => "UPDATE voice_sessions SET ended_at = '2020-01-01T00:00:00+00:00'",
        DbKind::Postgres => "UPDATE voice_sessions SET ended_at = '2020-01-01T00:00:00+00'",
    };
    let backend = match app.db_kind {
        DbKind::Sqlite => DbBackend::Sqlite,
        DbKind::Postgres => DbBackend::Postgres,
    };
    db.execute_raw(Statement::from_string(backend, sql))
        .await
        .expect("age the call");
    let (status, body) = append(
        &app,
        &agent,
        call,
        json!([segment("a3", "assistant", "Late.", 70)]),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_reason(&body), "voice_credential_expired");
    // The user's own token still may (the app uploading what it kept).
    let (status, body) = append(
        &app,
        &token,
        call,
        json!([segment("u3", "user", "Thanks.", 80)]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
each_database!(transcripts_from_app_and_agent_become_the_chat);

async fn credentials_reach_their_own_call_only(db: DbKind) {
    let app = spawn(db).await;
    let owner = app.new_user().await;
    let stranger = app.new_user().await;
    let first = start(&app, &owner, json!({})).await;
    let second = start(&app, &owner, json!({})).await;
    let call = first["voiceSessionId"].as_str().expect("id");
    let first_agent = agent_metadata(first["token"].as_str().unwrap_or_default())["agentToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let line = json!([segment("s1", "user", "hello", 0)]);

    // Another user's call is unknown to them, whatever they do with it.
    let (status, _) = append(&app, &stranger, call, line.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for (path, input) in [
        ("voice.end", json!({ "voiceSessionId": call })),
        ("voice.sessions.delete", json!({ "id": call })),
    ] {
        let (status, body) = app.mutation_as(&stranger, path, Some(input)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (status, _) = app
        .query_as(&stranger, "voice.sessions.get", Some(json!({ "id": call })))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = app.query_as(&stranger, "voice.sessions.list", None).await;
    assert_eq!(data(&list)["sessions"], json!([]));

    // A call's agent credential appends to that call only.
    let other_call = second["voiceSessionId"].as_str().expect("id");
    let (status, body) = append(&app, &first_agent, other_call, line.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = append(&app, "alias_voice_agent_made-up", call, line.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_reason(&body), "invalid_token");
    // It is no access token either.
    let (status, _) = app.query_as(&first_agent, "users.me", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .query_as(&first_agent, "voice.sessions.list", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Bad segments are named.
    let (status, body) = append(
        &app,
        &owner,
        call,
        json!([
            { "id": "", "speaker": "user", "text": "x", "startMs": 0 },
            { "id": "b", "speaker": "user", "text": "  ", "startMs": 0 },
            { "id": "c", "speaker": "user", "text": "x", "startMs": 86_000_000 },
            { "id": "d", "speaker": "user", "text": "x", "startMs": 5, "endMs": 1 },
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let fields = &body["error"]["data"]["fieldErrors"];
    for field in [
        "segments[0].id",
        "segments[1].text",
        "segments[2].startMs",
        "segments[3].endMs",
    ] {
        assert!(fields.get(field).is_some(), "{field}: {body}");
    }
    let (status, body) = append(
        &app,
        &owner,
        call,
        json!([{ "id": "e", "speaker": "robot", "text": "x", "startMs": 0 }]),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "BAD_REQUEST");
}
each_database!(credentials_reach_their_own_call_only);

async fn webhooks_are_verified_deduplicated_and_order_independent(db: DbKind) {
    let app = spawn(db).await;
    let token = app.new_user().await;
    let me = user_id(&app, &token).await;
    let first = start(&app, &token, json!({})).await;
    let second = start(&app, &token, json!({})).await;
    let now = Utc::now().timestamp();

    // Refused: unsigned, tampered, signed with another secret, stale, not a JWT.
    let body = event(
        "EV_a1",
        "room_started",
        first["roomName"].as_str().unwrap_or_default(),
        None,
        now,
    );
    assert_eq!(
        post_webhook(&app, &body, None).await,
        StatusCode::UNAUTHORIZED
    );
    let signature = sign(&body, API_SECRET, 300);
    let tampered = body.replace("room_started", "room_finished");
    assert_eq!(
        post_webhook(&app, &tampered, Some(&signature)).await,
        StatusCode::UNAUTHORIZED
    );
    let forged = sign(&body, "another-secret-with-at-least-32-characters", 300);
    assert_eq!(
        post_webhook(&app, &body, Some(&forged)).await,
        StatusCode::UNAUTHORIZED
    );
    let stale = sign(&body, API_SECRET, -60);
    assert_eq!(
        post_webhook(&app, &body, Some(&stale)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post_webhook(&app, &body, Some("garbage")).await,
        StatusCode::UNAUTHORIZED
    );
    let call = get_call(
        &app,
        &token,
        first["voiceSessionId"].as_str().unwrap_or_default(),
    )
    .await;
    assert_eq!(call["status"], "active", "nothing applied");

    // The same events in opposite orders, one delivered twice: the same call.
    let events = |tag: &str, room: &str| {
        vec![
            event(&format!("EV_{tag}1"), "room_started", room, None, now - 600),
            event(
                &format!("EV_{tag}2"),
                "participant_joined",
                room,
                Some(&me),
                now - 590,
            ),
            event(
                &format!("EV_{tag}3"),
                "participant_joined",
                room,
                Some("agent-AJ_1"),
                now - 589,
            ),
            event(
                &format!("EV_{tag}4"),
                "participant_left",
                room,
                Some(&me),
                now - 290,
            ),
            event(
                &format!("EV_{tag}5"),
                "room_finished",
                room,
                None,
                now - 270,
            ),
        ]
    };
    let in_order = events("a", first["roomName"].as_str().unwrap_or_default());
    for body in &in_order {
        assert_eq!(deliver(&app, body).await, StatusCode::OK);
    }
    let mut reversed = events("b", second["roomName"].as_str().unwrap_or_default());
    reversed.reverse();
    for body in &reversed {
        assert_eq!(deliver(&app, body).await, StatusCode::OK);
    }
    // Redelivered (LiveKit retries): applied once. Events of rooms not ours are accepted.
    assert_eq!(deliver(&app, &reversed[0]).await, StatusCode::OK);
    assert_eq!(
        deliver(
            &app,
            &event("EV_c1", "room_started", "someone-else", None, now)
        )
        .await,
        StatusCode::OK
    );

    let a = get_call(
        &app,
        &token,
        first["voiceSessionId"].as_str().unwrap_or_default(),
    )
    .await;
    let b = get_call(
        &app,
        &token,
        second["voiceSessionId"].as_str().unwrap_or_default(),
    )
    .await;
    assert_eq!(a["status"], "ended");
    assert_eq!(
        a["durationSeconds"], 310,
        "from start to the user's leaving: {a}"
    );
    for field in ["status", "durationSeconds"] {
        assert_eq!(a[field], b[field], "{field}");
    }
    let started = |call: &Value| call["startedAt"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&started(&a))
            .map(|at| at.timestamp())
            .ok(),
        Some(now - 600)
    );
    assert_eq!(started(&a)[..19], started(&b)[..19]);

    // A late room_started cannot reopen an ended call, and voice.end keeps the earlier end.
    let late = event(
        "EV_a9",
        "room_started",
        first["roomName"].as_str().unwrap_or_default(),
        None,
        now,
    );
    assert_eq!(deliver(&app, &late).await, StatusCode::OK);
    let (_, ended) = app
        .mutation_as(
            &token,
            "voice.end",
            Some(json!({ "voiceSessionId": first["voiceSessionId"] })),
        )
        .await;
    assert_eq!(data(&ended)["durationSeconds"], 310, "{ended}");

    // A signed body that is no event.
    assert_eq!(deliver(&app, "{}").await, StatusCode::BAD_REQUEST);
}
each_database!(webhooks_are_verified_deduplicated_and_order_independent);

async fn quiet_calls_are_swept(db: DbKind) {
    let app = spawn(db).await;
    let token = app.new_user().await;
    let quiet = start(&app, &token, json!({})).await;
    let ended = start(&app, &token, json!({})).await;
    app.mutation_as(
        &token,
        "voice.end",
        Some(json!({ "voiceSessionId": ended["voiceSessionId"] })),
    )
    .await;

    let swept = alias_server::voice::sweep(&app.state, Utc::now())
        .await
        .expect("sweep");
    assert_eq!(swept.ended_calls, 0, "nothing is quiet yet");
    let later = Utc::now() + chrono::Duration::hours(3);
    let swept = alias_server::voice::sweep(&app.state, later)
        .await
        .expect("sweep");
    assert_eq!(swept.ended_calls, 1);
    let call = get_call(
        &app,
        &token,
        quiet["voiceSessionId"].as_str().unwrap_or_default(),
    )
    .await;
    assert_eq!(call["status"], "ended");
    assert!(
        call["durationSeconds"]
            .as_u64()
            .is_some_and(|seconds| seconds < 60),
        "ended as of its last activity: {call}"
    );
}
each_database!(quiet_calls_are_swept);

async fn calls_are_listed_in_pages_and_deleted_with_their_words(db: DbKind) {
    let app = spawn(db).await;
    let token = app.new_user().await;
    let chat = start(&app, &token, json!({})).await;
    let mut ids = vec![chat["voiceSessionId"].clone()];
    for _ in 0..3 {
        let call = start(
            &app,
            &token,
            json!({ "chatSessionId": chat["chatSessionId"] }),
        )
        .await;
        ids.push(call["voiceSessionId"].clone());
    }
    ids.reverse(); // newest first
    let (_, first) = app
        .query_as(&token, "voice.sessions.list", Some(json!({ "limit": 2 })))
        .await;
    let page = data(&first);
    let listed: Vec<Value> = page["sessions"]
        .as_array()
        .map(|s| s.iter().map(|c| c["id"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(listed, ids[..2]);
    let cursor = page["nextCursor"].clone();
    let (_, second) = app
        .query_as(
            &token,
            "voice.sessions.list",
            Some(json!({ "limit": 2, "cursor": cursor, "direction": "forward" })),
        )
        .await;
    let page = data(&second);
    let listed: Vec<Value> = page["sessions"]
        .as_array()
        .map(|s| s.iter().map(|c| c["id"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(listed, ids[2..]);
    assert_eq!(page["nextCursor"], Value::Null);
    let (status, body) = app
        .query_as(
            &token,
            "voice.sessions.list",
            Some(json!({ "cursor": "nope" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Deleting a call takes its words out of the chat and search; the chat stays.
    let call = ids[0].as_str().unwrap_or_default();
    append(
        &app,
        &token,
        call,
        json!([segment("x", "user", "pineapple logistics", 0)]),
    )
    .await;
    let (_, found) = app
        .query_as(&token, "chat.search", Some(json!({ "query": "pineapple" })))
        .await;
    assert_eq!(data(&found)["hits"].as_array().map(Vec::len), Some(1));
    let (status, body) = app
        .mutation_as(&token, "voice.sessions.delete", Some(json!({ "id": call })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, found) = app
        .query_as(&token, "chat.search", Some(json!({ "query": "pineapple" })))
        .await;
    assert_eq!(data(&found)["hits"], json!([]));
    let (status, _) = app
        .query_as(&token, "voice.sessions.get", Some(json!({ "id": call })))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, session) = app
        .query_as(
            &token,
            "chat.sessions.get",
            Some(json!({ "id": chat["chatSessionId"] })),
        )
        .await;
    assert_eq!(data(&session)["messageCount"], 0);
}
each_database!(calls_are_listed_in_pages_and_deleted_with_their_words);

/// What was said in a call is in the history of the next written message.
async fn chat_send_continues_from_the_call(db: DbKind) {
    let chat = Chat::start_with(db, "openai", livekit).await;
    let started = start(
        &chat.app,
        &chat.token,
        json!({ "chatSessionId": chat.session_id }),
    )
    .await;
    let call = started["voiceSessionId"].as_str().expect("id");
    let (status, body) = append(
        &chat.app,
        &chat.token,
        call,
        json!([
            segment("1", "user", "Remind me to call Priya about the lease.", 0),
            segment("2", "assistant", "Noted: call Priya about the lease.", 5),
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    chat.send(
        &chat.input("What did I ask you on the call?", &new_id()),
        None,
    )
    .await
    .collect()
    .await;
    let request = chat
        .providers
        .requests()
        .into_iter()
        .last()
        .expect("a reply was asked for");
    let sent = request.body.to_string();
    let asked = sent
        .find("Remind me to call Priya")
        .expect("the user's spoken turn went along");
    let answered = sent
        .find("Noted: call Priya")
        .expect("the assistant's spoken turn too");
    let now = sent
        .find("What did I ask you on the call?")
        .expect("the new message");
    assert!(asked < answered && answered < now, "in time order: {sent}");
    let messages = chat.messages().await;
    let sources: Vec<&str> = messages
        .iter()
        .filter_map(|m| m["source"].as_str())
        .collect();
    assert_eq!(sources, ["voice", "voice", "text", "text"]);
}
each_database!(chat_send_continues_from_the_call);
