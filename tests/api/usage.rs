//! Usage over HTTP: the per-user budgets of signed-in calls (each call of a batch counts) and
//! of chat sends, token usage rolled up per user, local day, provider and model (matching what
//! the providers reported), `usage.summary`, tiers' daily quotas refusing a send before any
//! provider call and allowing it again the next day, and `alias-server users set-tier`.

use std::process::Command;

use chrono::{DateTime, Duration as Days, NaiveDate, TimeZone as _, Utc};
use chrono_tz::Tz;
use entity::usage_days;
use futures::future::join_all;
use reqwest::StatusCode;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::chat::{Chat, new_id, payloads};
use crate::each_database;
use crate::fake_providers::{ReportedUsage, TITLE_USAGE};
use crate::helpers::{DbKind, TestApp, data, encode, error_code, error_reason, unique_email};

const PASSWORD: &str = "correct horse battery";

fn refused_for(answer: &Value, reason: &str) -> bool {
    let error = &answer["error"]["data"];
    error["code"] == "TOO_MANY_REQUESTS"
        && error["reason"] == reason
        && error["retryAfterSeconds"].as_u64().is_some_and(|s| s >= 1)
}

/// `GET /trpc/users.me,users.me,…?batch=1`: `count` calls in one request.
async fn me_batch(app: &TestApp, token: &str, count: usize) -> (StatusCode, Vec<Value>) {
    let paths = vec!["users.me"; count].join(",");
    let inputs: serde_json::Map<String, Value> =
        (0..count).map(|i| (i.to_string(), Value::Null)).collect();
    let url = app.url(&format!(
        "/trpc/{paths}?batch=1&input={}",
        encode(&Value::Object(inputs).to_string())
    ));
    let response = app
        .http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("batch");
    let status = response.status();
    let answers = response.json::<Vec<Value>>().await.expect("a batch answer");
    (status, answers)
}

async fn signed_in_calls_share_a_per_user_budget(db_kind: DbKind) {
    let app = TestApp::spawn_with(db_kind, |config| {
        config.usage.calls_per_minute = 10;
    })
    .await;
    let token = app.new_user().await;
    for _ in 0..4 {
        let (status, body) = app.query_as(&token, "users.me", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Each call of a batch counts: 6 of these 10 fit in the minute.
    let (status, answers) = me_batch(&app, &token, 10).await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    let answered = answers.iter().filter(|a| a.get("result").is_some()).count();
    let refused = answers
        .iter()
        .filter(|a| refused_for(a, "rate_limited"))
        .count();
    assert_eq!((answered, refused), (6, 4), "{answers:?}");
    let (status, body) = app.query_as(&token, "preferences.get", None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(error_reason(&body), "rate_limited");
    let retry = body["error"]["data"]["retryAfterSeconds"].as_u64();
    assert!(retry.is_some_and(|s| (1..=60).contains(&s)), "{body}");
    // Calls that sign no one in are not counted; another user has a budget of their own.
    let (status, _) = app.query("system.health", None).await;
    assert_eq!(status, StatusCode::OK);
    let other = app.new_user().await;
    let (status, body) = app.query_as(&other, "users.me", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
each_database!(signed_in_calls_share_a_per_user_budget);

/// Sends `content` (with another provider when given) and waits for the reply's `done`.
async fn send_and_finish(chat: &Chat, content: &str, provider: Option<&str>) -> Value {
    let mut input = chat.input(content, &new_id());
    if let Some(provider) = provider {
        input["provider"] = json!(provider);
    }
    let (status, body) = chat.send_message(&input).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reply = data(&body)["replyMessageId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let events = chat.follow(&reply, None).await.collect().await;
    let done = payloads(&events)
        .into_iter()
        .find(|p| p["type"] == "done")
        .expect("the reply ends with done");
    done["message"].clone()
}

async fn chat_sends_have_their_own_budget(db_kind: DbKind) {
    let chat = Chat::start_with(db_kind, "gemini", |config| {
        config.usage.chat_sends_per_minute = 3;
    })
    .await;
    for _ in 0..3 {
        send_and_finish(&chat, "Hi", None).await;
    }
    let (status, body) = chat.send_message(&chat.input("Hi", &new_id())).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(refused_for(&body, "rate_limited"), "{body}");
    assert_eq!(
        chat.streamed_calls(),
        3,
        "the refused send reached no provider"
    );
    // Other calls are still within the user's budget.
    let (status, body) = chat
        .app
        .query_as(&chat.token, "chat.sessions.list", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
each_database!(chat_sends_have_their_own_budget);

async fn usage_summary(chat: &Chat, from: NaiveDate, to: NaiveDate) -> Value {
    let input = json!({ "from": from.to_string(), "to": to.to_string() });
    let (status, body) = chat
        .app
        .query_as(&chat.token, "usage.summary", Some(input))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    data(&body).clone()
}

fn today_in(timezone: Tz) -> NaiveDate {
    Utc::now().with_timezone(&timezone).date_naive()
}

fn number(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("a number: {value}"))
}

fn totals(reported: &[ReportedUsage]) -> (u64, u64) {
    reported.iter().fold((0, 0), |(input, output), usage| {
        (
            input + u64::from(usage.input_tokens),
            output + u64::from(usage.output_tokens),
        )
    })
}

async fn usage_sums_match_what_the_providers_reported(db_kind: DbKind) {
    let chat = Chat::start(db_kind, "gemini").await;
    chat.set_key("openai", "key-valid-0000").await;
    chat.set_key("anthropic", "key-valid-0000").await;
    let gemini = send_and_finish(&chat, "Hi [usage 1000 250]", None).await;
    assert_eq!(
        gemini["usage"],
        json!({ "inputTokens": 1000, "outputTokens": 250 })
    );
    send_and_finish(&chat, "Hello [usage 300 40]", Some("openai")).await;
    // Two provider calls (the tool's round and the answer): both count.
    let anthropic =
        send_and_finish(&chat, "Please use a tool [usage 70 9]", Some("anthropic")).await;
    assert_eq!(
        anthropic["usage"],
        json!({ "inputTokens": 140, "outputTokens": 18 })
    );
    // Concurrent replies add up without losing any count.
    let sessions = join_all((0..6).map(|_| chat.create_session())).await;
    let chat = &chat;
    let concurrent = sessions.iter().map(|session_id| async move {
        let input = json!({
            "sessionId": session_id,
            "content": "Together [usage 10 1]",
            "clientMessageId": new_id(),
        });
        let (status, body) = chat.send_message(&input).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let reply = data(&body)["replyMessageId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        chat.follow(&reply, None).await.collect().await
    });
    join_all(concurrent).await;

    let reported = chat.providers.reported_usage();
    assert_eq!(reported.len(), 10, "{reported:?}");
    // The first reply in each of the 7 sessions (all Gemini) was followed by a title, whose
    // tokens count too: in the day's and the model's totals, not in the reply's `usage`.
    let titles = |(input, output): (u64, u64)| {
        (
            input + 7 * u64::from(TITLE_USAGE.0),
            output + 7 * u64::from(TITLE_USAGE.1),
        )
    };
    let (input, output) = titles(totals(&reported));
    let today = today_in(Tz::UTC);
    let summary = usage_summary(chat, today - Days::days(2), today).await;
    let days = summary["days"].as_array().cloned().unwrap_or_default();
    assert_eq!(days.len(), 3);
    assert_eq!(days[0]["date"], (today - Days::days(2)).to_string());
    assert_eq!(
        days[0],
        json!({ "date": days[0]["date"], "inputTokens": 0, "outputTokens": 0, "messages": 0 })
    );
    assert_eq!(
        days[2],
        json!({ "date": today.to_string(), "inputTokens": input, "outputTokens": output, "messages": 9 })
    );
    let by_model = summary["byModel"].as_array().cloned().unwrap_or_default();
    let of = |provider: alias_server::providers::AiProvider| {
        let reported: Vec<ReportedUsage> = reported
            .iter()
            .filter(|usage| usage.provider == provider)
            .copied()
            .collect();
        totals(&reported)
    };
    use alias_server::providers::AiProvider;
    let gemini = titles(of(AiProvider::Gemini));
    assert_eq!(
        by_model,
        vec![
            json!({ "provider": "gemini", "model": "gemini-2.5-flash", "inputTokens": gemini.0, "outputTokens": gemini.1, "messages": 7 }),
            json!({ "provider": "openai", "model": "gpt-4.1-mini", "inputTokens": 300, "outputTokens": 40, "messages": 1 }),
            json!({ "provider": "anthropic", "model": "claude-sonnet-4-5", "inputTokens": 140, "outputTokens": 18, "messages": 1 }),
        ]
    );
    assert_eq!(summary["tier"], "free");
    let quota = &summary["quota"];
    assert_eq!(quota["messagesPerDay"], 100);
    assert_eq!(quota["tokensPerDay"], 1_000_000);
    assert_eq!(
        quota["usedToday"],
        json!({ "messages": 9, "tokens": input + output })
    );
    let midnight = Utc.from_utc_datetime(
        &(today + Days::days(1))
            .and_hms_opt(0, 0, 0)
            .expect("midnight"),
    );
    assert_eq!(
        quota["resetsAt"],
        midnight.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    );
}
each_database!(usage_sums_match_what_the_providers_reported);

fn next_midnight(timezone: Tz) -> DateTime<Utc> {
    let tomorrow = today_in(timezone) + Days::days(1);
    timezone
        .from_local_datetime(&tomorrow.and_hms_opt(0, 0, 0).expect("midnight"))
        .single()
        .expect("no clock change at midnight")
        .with_timezone(&Utc)
}

async fn days_are_the_users_own(db_kind: DbKind) {
    // UTC+14 and UTC-11: at any moment at least one of them is on another date than UTC.
    for name in ["Pacific/Kiritimati", "Pacific/Pago_Pago"] {
        let timezone: Tz = name.parse().expect("a timezone");
        let chat = Chat::start(db_kind, "gemini").await;
        let (status, body) = chat
            .app
            .mutation_as(
                &chat.token,
                "preferences.update",
                Some(json!({ "timezone": name })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        send_and_finish(&chat, "Hi", None).await;
        let today = today_in(timezone);
        let summary = usage_summary(&chat, today - Days::days(1), today + Days::days(1)).await;
        let counted: Vec<&Value> = summary["days"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|day| day["messages"] == 1)
            .collect();
        assert_eq!(counted.len(), 1, "{summary}");
        assert_eq!(counted[0]["date"], today.to_string(), "{name}");
        assert_eq!(summary["quota"]["usedToday"]["messages"], 1);
        let resets_at: DateTime<Utc> = summary["quota"]["resetsAt"]
            .as_str()
            .and_then(|at| at.parse().ok())
            .expect("resetsAt");
        assert_eq!(resets_at, next_midnight(timezone), "{name}");
    }
}
each_database!(days_are_the_users_own);

async fn summary_ranges_are_checked(db_kind: DbKind) {
    let app = TestApp::spawn(db_kind).await;
    let token = app.new_user().await;
    let ask = |from: &str, to: &str| {
        let input = json!({ "from": from, "to": to });
        let (app, token) = (&app, &token);
        async move { app.query_as(token, "usage.summary", Some(input)).await }
    };
    for (from, to, field) in [
        ("2026-03-02", "2026-03-01", "to"),
        ("2026-13-01", "2026-03-01", "from"),
        ("yesterday", "2026-03-01", "from"),
        ("2026-03-01", "2026-3-5", "to"),
        ("2024-01-01", "2025-01-01", "to"),
    ] {
        let (status, body) = ask(from, to).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{from}..{to}: {body}");
        assert_eq!(error_code(&body), "BAD_REQUEST");
        assert!(
            body["error"]["data"]["fieldErrors"][field].is_string(),
            "{from}..{to}: {body}"
        );
    }
    // 366 days (a leap year) is the most.
    let (status, body) = ask("2024-01-01", "2024-12-31").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(data(&body)["days"].as_array().map(Vec::len), Some(366));
    assert_eq!(data(&body)["byModel"], json!([]));
    let (status, body) = ask("2026-03-01", "2026-03-01").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        data(&body)["days"],
        json!([{ "date": "2026-03-01", "inputTokens": 0, "outputTokens": 0, "messages": 0 }])
    );
    let (status, body) = app
        .client
        .query(
            "usage.summary",
            Some(json!({ "from": "2026-03-01", "to": "2026-03-01" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}
each_database!(summary_ranges_are_checked);

/// Moves the user's counts of today to yesterday, as midnight does: today starts from zero.
async fn pass_midnight(chat: &Chat) {
    let db = chat.app.db().await;
    let today = today_in(Tz::UTC);
    let moved = usage_days::Entity::update_many()
        .col_expr(
            usage_days::Column::Day,
            Expr::value((today - Days::days(1)).to_string()),
        )
        .filter(usage_days::Column::Day.eq(today.to_string()))
        .exec(&db)
        .await
        .expect("move today's usage");
    assert_eq!(moved.rows_affected, 1);
}

async fn quota_refused(chat: &Chat, content: &str) -> Value {
    let (status, body) = chat.send_message(&chat.input(content, &new_id())).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(error_reason(&body), "quota_exceeded");
    body
}

async fn a_message_quota_refuses_before_the_provider_until_midnight(db_kind: DbKind) {
    let chat = Chat::start_with(db_kind, "gemini", |config| {
        config.usage.free.messages = Some(2);
    })
    .await;
    let original_session = chat.session_id.clone();
    // A reply the provider refused gives its message back (in a chat of its own, so the
    // others' history does not ask for the refusal again).
    let elsewhere = Chat {
        session_id: chat.create_session().await,
        ..chat
    };
    let failed = send_and_finish(&elsewhere, "rate limit me", None).await;
    assert_eq!(failed["status"], "error");
    let chat = Chat {
        session_id: original_session,
        ..elsewhere
    };
    let first = chat.input("Hi", &new_id());
    let (status, body) = chat.send_message(&first).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first_reply = data(&body)["replyMessageId"].clone();
    let reply_id = first_reply.as_str().unwrap_or_default();
    chat.follow(reply_id, None).await.collect().await;
    send_and_finish(&chat, "Hello again", None).await;
    let calls = chat.streamed_calls();
    assert_eq!(calls, 3);

    let body = quota_refused(&chat, "One more").await;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("midnight"), "{message}");
    assert_eq!(
        chat.streamed_calls(),
        calls,
        "refused before any provider call"
    );
    let retry = number(&body["error"]["data"]["retryAfterSeconds"]);
    let until_midnight = (next_midnight(Tz::UTC) - Utc::now()).num_seconds().max(1);
    let until_midnight = u64::try_from(until_midnight).unwrap_or_default();
    assert!(
        retry.abs_diff(until_midnight) <= 5,
        "{retry} s, midnight in {until_midnight} s"
    );
    // Sending a message again (the app retrying) still answers with its reply.
    let (status, body) = chat.send_message(&first).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(data(&body)["replyMessageId"], first_reply);
    let today = today_in(Tz::UTC);
    let summary = usage_summary(&chat, today, today).await;
    assert_eq!(summary["quota"]["messagesPerDay"], 2);
    assert_eq!(summary["quota"]["usedToday"]["messages"], 2);

    pass_midnight(&chat).await;
    let reply = send_and_finish(&chat, "A new day", None).await;
    assert_eq!(reply["status"], "complete");
    assert_eq!(chat.streamed_calls(), calls + 1);
    let summary = usage_summary(&chat, today - Days::days(1), today).await;
    let messages: Vec<&Value> = summary["days"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|day| &day["messages"])
        .collect();
    assert_eq!(messages, vec![&json!(2), &json!(1)]);
}
each_database!(a_message_quota_refuses_before_the_provider_until_midnight);

async fn racing_sends_get_no_more_than_the_quota(db_kind: DbKind) {
    let chat = Chat::start_with(db_kind, "gemini", |config| {
        config.usage.free.messages = Some(3);
    })
    .await;
    let chat = &chat;
    let sessions = join_all((0..8).map(|_| chat.create_session())).await;
    let sends = sessions.iter().map(|session_id| async move {
        let input = json!({
            "sessionId": session_id,
            "content": "Hi",
            "clientMessageId": new_id(),
        });
        let (status, body) = chat.send_message(&input).await;
        let reply = data(&body)["replyMessageId"].as_str().map(str::to_owned);
        if let Some(reply) = &reply {
            chat.follow(reply, None).await.collect().await;
        } else {
            assert_eq!(error_reason(&body), "quota_exceeded", "{body}");
        }
        status
    });
    let statuses = join_all(sends).await;
    let admitted = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((admitted, refused), (3, 5), "{statuses:?}");
    assert_eq!(chat.streamed_calls(), 3);
}
each_database!(racing_sends_get_no_more_than_the_quota);

async fn a_token_quota_refuses_once_used_and_tiers_lift_it(db_kind: DbKind) {
    let chat = Chat::start_with(db_kind, "openai", |config| {
        config.usage.free.tokens = Some(100);
        config.usage.plus.tokens = None;
        config.auth.session_cache_ttl = std::time::Duration::ZERO;
    })
    .await;
    // Under the quota when sent: the reply may pass it.
    send_and_finish(&chat, "Hi [usage 80 30]", None).await;
    let calls = chat.streamed_calls();
    quota_refused(&chat, "Hi").await;
    assert_eq!(chat.streamed_calls(), calls);

    let (_, me) = chat.app.query_as(&chat.token, "users.me", None).await;
    assert_eq!(data(&me)["tier"], "free");
    let email = data(&me)["email"].as_str().unwrap_or_default().to_owned();
    alias_server::users::set_tier(&chat.app.state.db, &email, "plus")
        .await
        .expect("set the tier");
    let (_, me) = chat.app.query_as(&chat.token, "users.me", None).await;
    assert_eq!(data(&me)["tier"], "plus");
    let reply = send_and_finish(&chat, "Hi", None).await;
    assert_eq!(reply["status"], "complete");
    let today = today_in(Tz::UTC);
    let summary = usage_summary(&chat, today, today).await;
    assert_eq!(summary["tier"], "plus");
    assert_eq!(summary["quota"]["tokensPerDay"], Value::Null);
    // 110 and 17 for the replies, and the title after the first.
    let title = u64::from(TITLE_USAGE.0 + TITLE_USAGE.1);
    assert_eq!(summary["quota"]["usedToday"]["tokens"], 127 + title);
}
each_database!(a_token_quota_refuses_once_used_and_tiers_lift_it);

fn set_tier(app: &TestApp, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_alias-server"))
        .args(["users", "set-tier"])
        .args(args)
        .env("DATABASE_URL", &app.database_url)
        .env("ALIAS_DATA_DIR", app.data_dir.path())
        .env("ALIAS_LOG", "warn")
        .output()
        .expect("run users set-tier")
}

async fn the_set_tier_command_changes_an_accounts_tier(db_kind: DbKind) {
    let app = TestApp::spawn_with(db_kind, |config| {
        config.auth.session_cache_ttl = std::time::Duration::ZERO;
    })
    .await;
    let email = unique_email();
    let session = app.register(&email, PASSWORD).await;
    let token = session["accessToken"].as_str().unwrap_or_default();

    let output = set_tier(&app, &[&email.to_uppercase(), "pro"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("is now on the pro tier"), "{stdout}");
    let (_, me) = app.query_as(token, "users.me", None).await;
    assert_eq!(data(&me)["tier"], "pro");

    for (args, says) in [
        (
            vec!["nobody@example.com", "plus"],
            "no account has the email nobody@example.com",
        ),
        (
            vec![email.as_str(), "gold"],
            "\"gold\" is not a tier: use free, plus or pro",
        ),
        (vec!["not an email", "plus"], "is not an email address"),
    ] {
        let output = set_tier(&app, &args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let (_, me) = app.query_as(token, "users.me", None).await;
    assert_eq!(data(&me)["tier"], "pro", "a failed command changes nothing");
}
each_database!(the_set_tier_command_changes_an_accounts_tier);
