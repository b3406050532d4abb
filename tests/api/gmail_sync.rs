//! Gmail sync, continued: label changes as Gmail's history sends them, mail in the bin, spam
//! or drafts hidden, search filters, job leases and backoff, paging, expired history and
//! refused access tokens (against the fake Google of `fake_google.rs`).

use std::future::Future;
use std::time::Duration;

use entity::jobs;
use reqwest::StatusCode;
use sea_orm::EntityTrait;
use serde_json::{Value, json};

use crate::chat::{Chat, new_id, of_type, payloads};
use crate::each_database;
use crate::fake_google::FakeGoogle;
use crate::gmail::{connect, integration, spawn, spawn_with, stored, synced, wait_for};
use crate::helpers::{DbKind, TestApp, data, error_reason};

/// Waits until `check` holds (10 s at most).
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

async fn labels_of(app: &TestApp, email: &str, id: &str) -> String {
    stored(app, email)
        .await
        .into_iter()
        .find(|message| message.gmail_id == id)
        .map(|message| message.labels)
        .unwrap_or_default()
}

async fn search(app: &TestApp, token: &str, query: &str) -> Vec<String> {
    let (status, body) = app
        .query_as(token, "mail.search", Some(json!({ "query": query })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    data(&body)["messages"]
        .as_array()
        .map(|hits| {
            hits.iter()
                .filter_map(|hit| hit["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn count(calls: &[String], prefix: &str) -> usize {
    calls.iter().filter(|call| call.starts_with(prefix)).count()
}

/// Label changes carry the change in the record's `labelIds` (the message comes without its
/// labels): added and removed labels are applied. Mail moved to the bin or spam, and drafts,
/// stop being found (search and threads) until they move back.
async fn label_changes_and_hidden_mail(db: DbKind) {
    let google = FakeGoogle::start().await;
    let email = "labels@example.com";
    let add = |thread: &str, text: &str| {
        google.add(
            email,
            thread,
            "Ann <ann@example.com>",
            "Quarterly plan",
            text,
        )
    };
    let (read, binned, spam, draft) = (
        add("t1", "one"),
        add("t2", "two"),
        add("t3", "three"),
        add("t4", "four"),
    );
    let app = spawn(db, &google).await;
    let token = app.new_user().await;
    connect(&app, &token, email).await;
    wait_for(&app, &token, synced(4)).await;
    assert_eq!(search(&app, &token, "quarterly").await.len(), 4);

    google.mark_read(email, &read);
    google.relabel(email, &binned, &["TRASH"], &["INBOX"]);
    google.relabel(email, &spam, &["SPAM"], &["INBOX"]);
    google.relabel(email, &draft, &["DRAFT"], &[]);
    let (status, _) = app
        .mutation_as(&token, "integrations.google.syncNow", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    eventually("the draft label arrives", || async {
        labels_of(&app, email, &draft).await == "INBOX UNREAD DRAFT"
    })
    .await;
    assert_eq!(labels_of(&app, email, &read).await, "INBOX");
    assert_eq!(labels_of(&app, email, &binned).await, "UNREAD TRASH");
    assert_eq!(labels_of(&app, email, &spam).await, "UNREAD SPAM");
    assert_eq!(search(&app, &token, "quarterly").await, vec![read.clone()]);
    for thread in ["t2", "t3", "t4"] {
        let (status, body) = app
            .query_as(
                &token,
                "mail.thread.get",
                Some(json!({ "threadId": thread })),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{thread}: {body}");
    }

    // Out of the bin: found again.
    google.relabel(email, &binned, &["INBOX"], &["TRASH"]);
    app.mutation_as(&token, "integrations.google.syncNow", None)
        .await;
    eventually("the message leaves the bin", || async {
        search(&app, &token, "quarterly").await.len() == 2
    })
    .await;
    assert_eq!(labels_of(&app, email, &binned).await, "UNREAD INBOX");
}
each_database!(label_changes_and_hidden_mail);

/// `search_email` with a sender and dates but no words finds by them (sender in any case);
/// mail in the bin is not found.
async fn search_email_by_sender_and_dates(db: DbKind) {
    let google = FakeGoogle::start().await;
    let email = "filters@example.com";
    google.add(email, "t1", "Ann <ann@example.com>", "Lunch", "soup");
    let binned = google.add(email, "t2", "Ann <ann@example.com>", "Old", "gone");
    google.add(email, "t3", "Bob <bob@example.com>", "Deck", "slides");
    let configure = google.clone();
    let chat = Chat::start_with(db, "openai", move |config| configure.configure(config)).await;
    connect(&chat.app, &chat.token, email).await;
    wait_for(&chat.app, &chat.token, synced(3)).await;
    google.relabel(email, &binned, &["TRASH"], &["INBOX"]);
    chat.app
        .mutation_as(&chat.token, "integrations.google.syncNow", None)
        .await;
    eventually("the bin is synced", || async {
        labels_of(&chat.app, email, &binned).await.contains("TRASH")
    })
    .await;

    let found = |text: &'static str| {
        let chat = &chat;
        async move {
            let events = chat.send(&chat.input(text, &new_id()), None).await;
            let payloads = payloads(&events.collect().await);
            let results = of_type(&payloads, "toolResult");
            results
                .first()
                .map(|r| r["result"].clone())
                .unwrap_or_default()
        }
    };
    let result = found("Any mail from ann?").await;
    let hits = result["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(hits.len(), 1, "{result}");
    assert_eq!(hits[0]["threadId"], "t1");
    let result = found("Any old mail from ann?").await;
    assert_eq!(result["results"], json!([]), "{result}");
}
each_database!(search_email_by_sender_and_dates);

/// Disconnecting and connecting again (another account) while a sync runs: the running sync
/// stops at its next lease renewal and the new one starts only then, so no two syncs of one
/// user ever run at once, and the old account's mail never lands in the new connection.
async fn reconnect_while_syncing_never_runs_two_syncs(db: DbKind) {
    let google = FakeGoogle::start().await;
    // (Message ids are per mailbox numbers and the email's length: held ids must differ.)
    let (old, new) = ("old@example.com", "newer@example.com");
    let held = google.add(old, "t1", "a@example.com", "Old account", "a");
    google.add(new, "t2", "b@example.com", "New account", "b");
    google.hold(&held);
    let app = spawn(db, &google).await;
    let token = app.new_user().await;
    connect(&app, &token, old).await;
    let fetching = format!("messages/{held}");
    eventually("the old sync fetches the held message", || async {
        google.calls(old).contains(&fetching)
    })
    .await;
    let (status, body) = app
        .mutation_as(&token, "integrations.google.disconnect", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    connect(&app, &token, new).await;
    let connection = wait_for(&app, &token, synced(1)).await;
    assert_eq!(connection["email"], new);
    // The old sync was dropped: releasing its message now changes nothing.
    google.release(&held);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mail = stored(&app, new).await;
    let subjects: Vec<&str> = mail.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(subjects, ["New account"]);
    assert_eq!(integration(&app, &token).await["messageCount"], 1);
    let queued = jobs::Entity::find()
        .all(&app.db().await)
        .await
        .expect("jobs");
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_ne!(queued[0].locked_by.as_deref(), Some("cancelled"));
}
each_database!(reconnect_while_syncing_never_runs_two_syncs);

/// `syncNow` during a `Retry-After` backoff queues nothing earlier than Google allowed.
async fn sync_now_keeps_the_backoff(db: DbKind) {
    let google = FakeGoogle::start().await;
    let email = "patient@example.com";
    google.add(email, "t1", "a@example.com", "One", "one");
    google.retry_after(email, 60);
    let app = spawn(db, &google).await;
    let token = app.new_user().await;
    connect(&app, &token, email).await;
    wait_for(&app, &token, synced(1)).await;
    google.fail_next(email, &[429]);
    app.mutation_as(&token, "integrations.google.syncNow", None)
        .await;
    wait_for(&app, &token, |c| c["lastError"].is_string()).await;
    let before = google.calls(email).len();
    let (status, body) = app
        .mutation_as(&token, "integrations.google.syncNow", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        google.calls(email).len(),
        before,
        "{:?}",
        google.calls(email)
    );
    let queued = jobs::Entity::find()
        .all(&app.db().await)
        .await
        .expect("jobs");
    let wait = queued[0].run_at - chrono::Utc::now();
    assert!(wait > chrono::Duration::seconds(30), "runs in {wait}");
}
each_database!(sync_now_keeps_the_backoff);

/// A first sync stores one page per job run, so another user's sync gets its turn between
/// pages, and stops at `ALIAS_GMAIL_SYNC_MAX_MESSAGES` (the newest).
async fn first_sync_pages_per_run_and_is_capped(db: DbKind) {
    let google = FakeGoogle::start().await;
    let (big, small) = ("big@example.com", "small@example.com");
    let ids: Vec<String> = (0..6)
        .map(|n| {
            google.add(
                big,
                &format!("t{n}"),
                "a@example.com",
                &format!("M{n}"),
                "x",
            )
        })
        .collect();
    google.add(small, "t1", "a@example.com", "Small", "y");
    // Newest first: the first page starts with the last added.
    google.hold(&ids[5]);
    let app = spawn_with(db, &google, |config| {
        config.jobs.concurrency = 1;
        config.google.sync_max_messages = 3;
    })
    .await;
    let (first, second) = (app.new_user().await, app.new_user().await);
    connect(&app, &first, big).await;
    let fetching = format!("messages/{}", ids[5]);
    eventually("the big sync fetches its first page", || async {
        google.calls(big).contains(&fetching)
    })
    .await;
    connect(&app, &second, small).await;
    google.release(&ids[5]);
    wait_for(&app, &second, synced(1)).await;
    wait_for(&app, &first, synced(3)).await;
    let mut subjects: Vec<String> = stored(&app, big)
        .await
        .into_iter()
        .map(|m| m.subject)
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["M3", "M4", "M5"]);
    assert_eq!(
        count(&google.calls(big), "messages?"),
        2,
        "the cap ends paging"
    );
    let order = google.all_calls();
    let position = |email: &str, call: &str| {
        order
            .iter()
            .position(|(owner, path)| owner == email && path == call)
            .unwrap_or(usize::MAX)
    };
    assert!(
        position(small, "messages?pageToken=") < position(big, "messages?pageToken=2"),
        "the small mailbox synced between the big one's pages: {order:?}"
    );
}
each_database!(first_sync_pages_per_run_and_is_capped);

/// History that stays unknown (404) even right after a resync: one resync, then retries
/// with backoff, never a resync loop.
async fn history_gone_for_good_resyncs_once(db: DbKind) {
    let google = FakeGoogle::start().await;
    let email = "gone@example.com";
    google.add(email, "t1", "a@example.com", "One", "one");
    let app = spawn(db, &google).await;
    let token = app.new_user().await;
    connect(&app, &token, email).await;
    wait_for(&app, &token, synced(1)).await;
    google.break_history(email);
    app.mutation_as(&token, "integrations.google.syncNow", None)
        .await;
    eventually("history is retried a few times", || async {
        count(&google.calls(email), "history?") >= 5
    })
    .await;
    assert_eq!(
        count(&google.calls(email), "messages?"),
        2,
        "the first sync and one resync: {:?}",
        google.calls(email)
    );
    let connection = integration(&app, &token).await;
    assert_eq!(connection["status"], "syncing");
    assert!(connection["lastError"].is_string(), "{connection}");
}
each_database!(history_gone_for_good_resyncs_once);

/// A 401 on a Gmail call gets a fresh access token and the call again; a fresh token
/// refused too means reconnecting, which `integrations.list`, `mail.search`,
/// `mail.thread.get` and the assistant's mail tools all tell (`google_reconnect_required`).
async fn refused_access_token_is_refreshed_once(db: DbKind) {
    let google = FakeGoogle::start().await;
    let email = "expired@example.com";
    google.add(
        email,
        "t9",
        "Bob <bob@example.com>",
        "Board deck",
        "The board deck is ready.",
    );
    // connect's getProfile passes; the sync's first call meets a 401.
    google.fail_next(email, &[0, 401]);
    let configure = google.clone();
    let chat = Chat::start_with(db, "openai", move |config| configure.configure(config)).await;
    let (app, token) = (&chat.app, chat.token.as_str());
    connect(app, token, email).await;
    let connection = wait_for(app, token, synced(1)).await;
    assert_eq!(connection["reason"], Value::Null);
    assert_eq!(connection["lastError"], Value::Null);
    let refreshes = google
        .token_forms()
        .iter()
        .filter(|form| form.get("grant_type").map(String::as_str) == Some("refresh_token"))
        .count();
    assert_eq!(
        refreshes, 2,
        "one at the start of the run, one after the 401"
    );

    google.fail_next(email, &[401, 401]);
    app.mutation_as(token, "integrations.google.syncNow", None)
        .await;
    let connection = wait_for(app, token, |c| c["status"] == "reconnect_required").await;
    assert_eq!(connection["reason"], "google_reconnect_required");
    assert!(connection["lastError"].is_string(), "{connection}");
    for (path, input) in [
        ("mail.search", json!({ "query": "board" })),
        ("mail.thread.get", json!({ "threadId": "t9" })),
    ] {
        let (status, body) = app.query_as(token, path, Some(input)).await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{path}: {body}");
        assert_eq!(error_reason(&body), "google_reconnect_required");
    }
    let events = chat
        .send(&chat.input("Please check my email", &new_id()), None)
        .await
        .collect()
        .await;
    let payloads = payloads(&events);
    let results = of_type(&payloads, "toolResult");
    assert_eq!(results.len(), 2, "{payloads:?}");
    for result in results {
        assert_eq!(
            result["result"]["reason"], "google_reconnect_required",
            "{result}"
        );
    }
}
each_database!(refused_access_token_is_refreshed_once);
