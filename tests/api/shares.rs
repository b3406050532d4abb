//! `chat.shares.*` and the public page `GET /s/{token}`: snapshots (later messages never
//! shared, `upToMessageId` cuts), expiry and revocation (410), another user's ids, sharing
//! turned off, the page's headers and escaping, and tokens never stored.

use entity::shares;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::chat::{Chat, new_id};
use crate::chat_branches::ask;
use crate::each_database;
use crate::fake_providers::TITLE;
use crate::helpers::{DbKind, TestApp, data, error_code, error_reason};

/// A page as a browser gets it.
struct Page {
    status: StatusCode,
    headers: HeaderMap,
    html: String,
}

async fn page(app: &TestApp, url: &str) -> Page {
    // The link names ALIAS_PUBLIC_URL (the configured bind in tests): ask this server.
    let path = url.find("/s/").map_or(url, |at| &url[at..]);
    let response = app
        .http
        .get(app.url(path))
        .send()
        .await
        .expect("page request");
    Page {
        status: response.status(),
        headers: response.headers().clone(),
        html: response.text().await.expect("page body"),
    }
}

async fn create_share(chat: &Chat, input: Value) -> (StatusCode, Value) {
    chat.app
        .mutation_as(&chat.token, "chat.shares.create", Some(input))
        .await
}

/// A share of the chat's session (with `extra` fields): `(id, url)`.
async fn share(chat: &Chat, extra: Value) -> (String, String) {
    let mut input = json!({ "sessionId": chat.session_id });
    if let (Some(input), Some(extra)) = (input.as_object_mut(), extra.as_object()) {
        input.extend(extra.clone());
    }
    let (status, body) = create_share(chat, input).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let created = data(&body);
    let text = |field: &str| created[field].as_str().unwrap_or_default().to_owned();
    (text("id"), text("url"))
}

async fn say(chat: &Chat, content: &str) {
    chat.send(&chat.input(content, &new_id()), None)
        .await
        .collect()
        .await;
}

async fn list_shares(chat: &Chat, input: Value) -> Value {
    let (status, body) = chat
        .app
        .query_as(&chat.token, "chat.shares.list", Some(input))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    data(&body).clone()
}

async fn snapshots_share_only_what_was_there(db: DbKind) {
    let chat = Chat::start(db, "gemini").await;
    say(&chat, "First question with **bold** words").await;
    let (id, url) = share(&chat, json!({})).await;
    let token = url.rsplit('/').next().unwrap_or_default().to_owned();
    assert_eq!(token.len(), 43, "32 random bytes, base64url: {url}");
    assert!(url.starts_with("http://127.0.0.1:0/s/"), "{url}");
    say(&chat, "Second question, after sharing").await;

    let shown = page(&chat.app, &url).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.html);
    assert!(
        shown
            .html
            .contains("First question with <strong>bold</strong> words")
    );
    assert!(shown.html.contains("Hello from Gemini."), "{}", shown.html);
    assert!(
        !shown.html.contains("Second question"),
        "later messages stay out"
    );
    assert!(
        shown
            .html
            .contains(&format!("<meta property=\"og:title\" content=\"{TITLE}\">"))
    );
    assert!(shown.html.contains("name=\"viewport\""));
    assert!(
        shown
            .html
            .contains("<meta name=\"robots\" content=\"noindex")
    );
    let header = |name: &str| {
        shown
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(header("content-type").starts_with("text/html"));
    let csp = header("content-security-policy");
    for part in [
        "default-src 'none'",
        "style-src 'sha256-",
        "img-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{part} in {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert!(header("x-robots-tag").contains("noindex"));
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert_eq!(header("cache-control"), "no-store");

    // Only the token's keyed hash is stored.
    let rows = shares::Entity::find()
        .all(&chat.app.db().await)
        .await
        .expect("read shares");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id.to_string(), id);
    assert_eq!(rows[0].token_hash.len(), 64);
    assert!(!format!("{rows:?}").contains(&token), "no plaintext token");

    // Up to a message: the first question alone.
    let messages = chat.messages().await;
    let first = messages[0]["id"].clone();
    let (_, cut_url) = share(&chat, json!({ "upToMessageId": first })).await;
    let cut = page(&chat.app, &cut_url).await;
    assert!(cut.html.contains("First question"));
    assert!(!cut.html.contains("Hello from Gemini."), "{}", cut.html);
    let listed = list_shares(&chat, json!({ "sessionId": chat.session_id })).await;
    let counts: Vec<&Value> = listed["shares"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| &s["messageCount"])
        .collect();
    assert_eq!(counts, [&json!(1), &json!(2)], "newest first");
    assert_eq!(listed["shares"][0]["status"], "active");
    assert_eq!(listed["shares"][0]["title"], TITLE);
    assert!(listed["shares"][0].get("url").is_none(), "{listed}");
    let first_page = list_shares(&chat, json!({ "limit": 1 })).await;
    let next = list_shares(
        &chat,
        json!({ "limit": 1, "cursor": first_page["nextCursor"] }),
    )
    .await;
    assert_eq!(next["shares"][0]["id"], id);
    assert_eq!(next["nextCursor"], Value::Null);

    // Another chat's message cannot be the cut.
    let other_session = chat.create_session().await;
    let input =
        json!({ "sessionId": other_session, "content": "elsewhere", "clientMessageId": new_id() });
    chat.send(&input, None).await.collect().await;
    let (_, body) = chat
        .app
        .query_as(
            &chat.token,
            "chat.messages.list",
            Some(json!({ "sessionId": other_session })),
        )
        .await;
    let elsewhere = data(&body)["messages"][0]["id"].clone();
    let input = json!({ "sessionId": chat.session_id, "upToMessageId": elsewhere });
    let (status, body) = create_share(&chat, input).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Revoked: 410 at once, and listed so.
    let (status, body) = chat
        .app
        .mutation_as(&chat.token, "chat.shares.revoke", Some(json!({ "id": id })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(data(&body)["status"], "revoked");
    assert!(data(&body)["revokedAt"].is_string());
    let gone = page(&chat.app, &url).await;
    assert_eq!(gone.status, StatusCode::GONE);
    assert!(!gone.html.contains("First question"));
    assert!(gone.headers.contains_key("content-security-policy"));
    let (status, _) = chat
        .app
        .mutation_as(&chat.token, "chat.shares.revoke", Some(json!({ "id": id })))
        .await;
    assert_eq!(status, StatusCode::OK, "revoking twice is harmless");
    let (_, body) = chat.app.query_as(&chat.token, "audit.list", None).await;
    let actions: Vec<&str> = data(&body)["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|event| event["action"].as_str())
        .filter(|action| action.starts_with("share_"))
        .collect();
    assert_eq!(
        actions,
        ["share_revoked", "share_created", "share_created"],
        "newest first, revoked once"
    );

    // Unknown or malformed tokens: 404.
    let unknown = format!("/s/{}", "A".repeat(43));
    assert_eq!(
        page(&chat.app, &unknown).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        page(&chat.app, "/s/not-a-token").await.status,
        StatusCode::NOT_FOUND
    );

    // Deleting the chat deletes its links.
    chat.app
        .mutation_as(
            &chat.token,
            "chat.sessions.delete",
            Some(json!({ "id": chat.session_id })),
        )
        .await;
    assert_eq!(
        page(&chat.app, &cut_url).await.status,
        StatusCode::NOT_FOUND
    );
    let listed = list_shares(&chat, json!({})).await;
    assert_eq!(listed["shares"], json!([]));
}
each_database!(snapshots_share_only_what_was_there);

async fn links_expire(db: DbKind) {
    let chat = Chat::start(db, "gemini").await;
    say(&chat, "Hello").await;
    for (bad, why) in [
        ("2020-01-01T00:00:00Z", "in the past"),
        ("tomorrow", "not a time"),
    ] {
        let input = json!({ "sessionId": chat.session_id, "expiresAt": bad });
        let (status, body) = create_share(&chat, input).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {body}");
        assert!(
            body["error"]["data"]["fieldErrors"]["expiresAt"].is_string(),
            "{body}"
        );
    }
    let (id, url) = share(&chat, json!({ "expiresAt": "2100-01-01T00:00:00+02:00" })).await;
    assert_eq!(page(&chat.app, &url).await.status, StatusCode::OK);
    let listed = list_shares(&chat, json!({})).await;
    assert_eq!(listed["shares"][0]["expiresAt"], "2099-12-31T22:00:00.000Z");

    // Time passes.
    let id: uuid::Uuid = id.parse().expect("uuid");
    shares::Entity::update_many()
        .col_expr(
            shares::Column::ExpiresAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
        )
        .filter(shares::Column::Id.eq(id))
        .exec(&chat.app.db().await)
        .await
        .expect("expire the link");
    let expired = page(&chat.app, &url).await;
    assert_eq!(expired.status, StatusCode::GONE);
    let listed = list_shares(&chat, json!({})).await;
    assert_eq!(listed["shares"][0]["status"], "expired");
}
each_database!(links_expire);

async fn another_users_ids_are_not_found(db: DbKind) {
    let chat = Chat::start(db, "gemini").await;
    say(&chat, "Mine").await;
    let (id, url) = share(&chat, json!({})).await;
    let other = chat.app.new_user().await;
    let message_id = chat.messages().await[0]["id"].clone();
    for (path, input, mutation) in [
        (
            "chat.shares.create",
            json!({ "sessionId": chat.session_id }),
            true,
        ),
        ("chat.shares.revoke", json!({ "id": id }), true),
        (
            "chat.shares.revoke",
            json!({ "id": uuid::Uuid::now_v7() }),
            true,
        ),
        (
            "chat.shares.list",
            json!({ "sessionId": chat.session_id }),
            false,
        ),
    ] {
        let (status, body) = if mutation {
            chat.app.mutation_as(&other, path, Some(input)).await
        } else {
            chat.app.query_as(&other, path, Some(input)).await
        };
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(error_code(&body), "NOT_FOUND");
    }
    // Their own chat with my message as the cut.
    let (_, created) = chat
        .app
        .mutation_as(&other, "chat.sessions.create", None)
        .await;
    let input = json!({ "sessionId": data(&created)["id"], "upToMessageId": message_id });
    let (status, _) = chat
        .app
        .mutation_as(&other, "chat.shares.create", Some(input))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, body) = chat.app.query_as(&other, "chat.shares.list", None).await;
    assert_eq!(data(&body)["shares"], json!([]));
    assert_eq!(page(&chat.app, &url).await.status, StatusCode::OK);

    // Deleting the account deletes its links.
    let (status, _) = chat
        .app
        .mutation_as(
            &chat.token,
            "users.delete",
            Some(json!({ "password": "correct horse battery" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page(&chat.app, &url).await.status, StatusCode::NOT_FOUND);
    let rows = shares::Entity::find()
        .all(&chat.app.db().await)
        .await
        .expect("read shares");
    assert!(rows.is_empty());
}
each_database!(another_users_ids_are_not_found);

/// A hostile title and hostile messages reach the page as text: no markup of theirs survives.
async fn hostile_text_is_escaped(db: DbKind) {
    let chat = Chat::start(db, "gemini").await;
    say(&chat, "<script>window.__pwned = 1</script>").await;
    say(&chat, "Look <img src=x onerror=\"window.__pwned=2\"> here").await;
    let title = "\"><script>alert('title')</script>";
    chat.app
        .mutation_as(
            &chat.token,
            "chat.sessions.update",
            Some(json!({ "id": chat.session_id, "title": title })),
        )
        .await;
    let (_, url) = share(&chat, json!({})).await;
    let shown = page(&chat.app, &url).await;
    assert_eq!(shown.status, StatusCode::OK);
    let html = shown.html.to_lowercase();
    assert!(!html.contains("<script"), "{}", shown.html);
    assert!(!html.contains("<img"), "{}", shown.html);
    assert!(
        shown
            .html
            .contains("&lt;script&gt;window.__pwned = 1&lt;/script&gt;"),
        "{}",
        shown.html
    );
    assert!(
        shown
            .html
            .contains("&lt;img src=x onerror=\"window.__pwned=2\"&gt;"),
        "{}",
        shown.html
    );
    assert!(
        shown.html.contains(
            "<meta property=\"og:title\" content=\"&quot;&gt;&lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt;\">"
        ),
        "{}",
        shown.html
    );
}
each_database!(hostile_text_is_escaped);

async fn sharing_can_be_turned_off(db: DbKind) {
    let chat = Chat::start(db, "gemini").await;
    say(&chat, "Hello").await;
    let (id, url) = share(&chat, json!({})).await;
    let off = chat
        .app
        .spawn_beside(|config| config.sharing.enabled = false)
        .await;
    for (path, input, mutation) in [
        (
            "chat.shares.create",
            json!({ "sessionId": chat.session_id }),
            true,
        ),
        ("chat.shares.revoke", json!({ "id": id }), true),
        ("chat.shares.list", json!({}), false),
    ] {
        let (status, body) = if mutation {
            off.mutation_as(&chat.token, path, Some(input)).await
        } else {
            off.query_as(&chat.token, path, Some(input)).await
        };
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(error_reason(&body), "sharing_disabled");
    }
    assert_eq!(page(&off, &url).await.status, StatusCode::NOT_FOUND);
    assert_eq!(page(&chat.app, &url).await.status, StatusCode::OK);
}
each_database!(sharing_can_be_turned_off);

#[tokio::test]
async fn pages_are_rate_limited_per_ip() {
    let chat = Chat::start_with(DbKind::Sqlite, "gemini", |config| {
        config.sharing.page_views_per_minute = 2;
    })
    .await;
    say(&chat, "Hello").await;
    let (_, url) = share(&chat, json!({})).await;
    assert_eq!(page(&chat.app, &url).await.status, StatusCode::OK);
    assert_eq!(
        page(&chat.app, "/s/guess").await.status,
        StatusCode::NOT_FOUND
    );
    let limited = page(&chat.app, &url).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers.contains_key("retry-after"));
    assert!(limited.headers.contains_key("content-security-policy"));
}

/// With branches, a link holds the chat's current branch, or the branch through
/// `upToMessageId`: never another branch's messages.
async fn a_link_holds_one_branch(db: DbKind) {
    let chat = Chat::start(db, "openai").await;
    let first = ask(
        &chat,
        "chat.send",
        chat.input("Plan a trip to Rome", &new_id()),
    )
    .await;
    let original = first["userMessage"]["id"].clone();
    let edit = json!({ "messageId": original, "content": "Plan a trip to Oslo", "clientMessageId": new_id() });
    ask(&chat, "chat.edit", edit).await;

    let (_, current) = share(&chat, json!({})).await;
    let shown = page(&chat.app, &current).await;
    assert!(shown.html.contains("Plan a trip to Oslo"), "{}", shown.html);
    assert!(!shown.html.contains("Rome"), "{}", shown.html);

    let (_, earlier) = share(&chat, json!({ "upToMessageId": original })).await;
    let shown = page(&chat.app, &earlier).await;
    assert!(shown.html.contains("Plan a trip to Rome"), "{}", shown.html);
    assert!(!shown.html.contains("Oslo"), "{}", shown.html);
    assert!(
        !shown.html.contains("Hello from OpenAI."),
        "cut at the question"
    );
}
each_database!(a_link_holds_one_branch);
