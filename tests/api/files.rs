//! `files.*` over HTTP on local storage: FormData uploads, upload links, limits, quota,
//! ownership, serving, deletion; both databases.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use entity::audit_events;
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{DbKind, TestApp, data, error_code, error_reason};
use crate::{both_databases, each_database};

/// A 1×1 PNG.
pub const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

pub fn png() -> Vec<u8> {
    STANDARD.decode(PNG).expect("valid base64")
}

/// One part of a multipart body: name, file name (a file part), content type, bytes.
pub struct Part<'a> {
    pub name: &'a str,
    pub filename: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub bytes: &'a [u8],
}

pub fn file_part<'a>(filename: &'a str, content_type: &'a str, bytes: &'a [u8]) -> Part<'a> {
    Part {
        name: "file",
        filename: Some(filename),
        content_type: Some(content_type),
        bytes,
    }
}

pub fn text_part<'a>(name: &'a str, value: &'a str) -> Part<'a> {
    Part {
        name,
        filename: None,
        content_type: None,
        bytes: value.as_bytes(),
    }
}

/// `multipart/form-data` as a browser's FormData sends it: (content type, body).
pub fn multipart(parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let boundary = "----alias-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let mut disposition = format!("Content-Disposition: form-data; name=\"{}\"", part.name);
        if let Some(filename) = part.filename {
            disposition.push_str(&format!("; filename=\"{filename}\""));
        }
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(b"\r\n");
        if let Some(content_type) = part.content_type {
            body.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(part.bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// `files.upload` with these parts, as `token`.
pub async fn upload(app: &TestApp, token: &str, parts: &[Part<'_>]) -> (StatusCode, Value) {
    let (content_type, body) = multipart(parts);
    let response = app
        .http
        .post(app.trpc_url("files.upload", None))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request reached the server");
    let status = response.status();
    (status, response.json().await.expect("a JSON answer"))
}

/// Uploads a file that must be accepted; its `File`.
pub async fn upload_ok(app: &TestApp, token: &str, parts: &[Part<'_>]) -> Value {
    let (status, body) = upload(app, token, parts).await;
    assert_eq!(status, StatusCode::OK, "files.upload: {body}");
    data(&body).clone()
}

fn sha256(bytes: &[u8]) -> String {
    STANDARD.encode(Sha256::digest(bytes))
}

async fn audited(app: &TestApp, action: &str) -> usize {
    audit_events::Entity::find()
        .filter(audit_events::Column::Action.eq(action))
        .all(&app.db().await)
        .await
        .expect("audit rows")
        .len()
}

pub async fn form_upload_is_sniffed_stored_and_served(app: TestApp) {
    let token = app.new_user().await;
    let bytes = png();
    let file = upload_ok(
        &app,
        &token,
        &[
            file_part("C:\\fakepath\\dot.png", "image/png", &bytes),
            text_part("purpose", "attachment"),
        ],
    )
    .await;
    assert_eq!(file["filename"], "dot.png");
    assert_eq!(file["mimeType"], "image/png");
    assert_eq!(file["status"], "ready");
    assert_eq!(file["purpose"], "attachment");
    // Stored re-encoded, without metadata.
    assert!(file["sizeBytes"].as_u64().is_some_and(|size| size > 0));
    let url = file["url"].as_str().expect("a signed url");
    let served = app.http.get(url).send().await.expect("download");
    assert_eq!(served.status(), StatusCode::OK);
    let header = |name: &str| {
        served
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "image/png");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert!(header("content-disposition").starts_with("inline"));
    assert!(header("cache-control").starts_with("private, max-age="));
    let served = served.bytes().await.expect("bytes");
    assert_eq!(Some(served.len() as u64), file["sizeBytes"].as_u64());
    assert!(served.starts_with(b"\x89PNG"));

    // The type comes from the bytes: a text file named .png is text, served as a download.
    let text = upload_ok(
        &app,
        &token,
        &[file_part("notes.md", "text/markdown", b"# Notes\n")],
    )
    .await;
    assert_eq!(text["mimeType"], "text/markdown");
    let served = app
        .http
        .get(text["url"].as_str().expect("url"))
        .send()
        .await
        .expect("download");
    let disposition = served.headers()["content-disposition"]
        .to_str()
        .unwrap_or_default();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    assert_eq!(audited(&app, "file_uploaded").await, 2);

    // A tampered link is refused.
    let forged = url.replace("image%2Fpng", "text%2Fhtml");
    let refused = app.http.get(forged).send().await.expect("download");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
}
both_databases!(form_upload_is_sniffed_stored_and_served);

pub async fn form_uploads_are_checked(app: TestApp) {
    let token = app.new_user().await;
    let bytes = png();
    let (status, body) = upload(
        &app,
        &token,
        &[file_part("a.pdf", "application/pdf", &bytes)],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_reason(&body), "file_content_mismatch");

    let exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00";
    let (status, body) = upload(
        &app,
        &token,
        &[file_part("a.exe", "application/octet-stream", exe)],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_reason(&body), "file_type_not_allowed");

    let (status, body) = upload(&app, &token, &[text_part("purpose", "attachment")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["data"]["fieldErrors"]["file"].is_string(),
        "{body}"
    );

    let (status, body) = upload(
        &app,
        &token,
        &[
            file_part("a.txt", "text/plain", b"hi"),
            text_part("purpose", "avatar"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_reason(&body), "file_type_not_allowed");

    // Someone else's chat is no chat.
    let (status, body) = upload(
        &app,
        &token,
        &[
            file_part("a.txt", "text/plain", b"hi"),
            text_part("sessionId", &uuid::Uuid::now_v7().to_string()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Signed out: told to sign in, the body never read.
    let (content_type, body) = multipart(&[file_part("a.txt", "text/plain", b"hi")]);
    let (status, answer) = app
        .post_raw("/trpc/files.upload", &content_type, body)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");

    // JSON is not FormData.
    let (status, answer) = app
        .mutation_as(&token, "files.upload", Some(json!({ "file": "x" })))
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{answer}");
}
both_databases!(form_uploads_are_checked);

async fn limits_and_quota_are_enforced(db_kind: DbKind) {
    let app = TestApp::spawn_with(db_kind, |config| {
        config.files.max_image_bytes = 1_000;
        config.files.max_file_bytes = 200;
        config.files.quota_bytes = 300;
    })
    .await;
    let token = app.new_user().await;
    let (status, body) = upload(
        &app,
        &token,
        &[file_part("big.txt", "text/plain", &[b'a'; 201])],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(error_reason(&body), "file_too_large");
    // Past every limit, the body is refused while it is read.
    let (status, body) = upload(
        &app,
        &token,
        &[file_part("huge.txt", "text/plain", &vec![b'a'; 200_000])],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(error_reason(&body), "file_too_large");

    upload_ok(
        &app,
        &token,
        &[file_part("a.txt", "text/plain", &[b'a'; 200])],
    )
    .await;
    let (status, body) = upload(
        &app,
        &token,
        &[file_part("b.txt", "text/plain", &[b'b'; 150])],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(error_reason(&body), "storage_quota_exceeded");
    // Upload links reserve their size too.
    let (status, body) = app
        .mutation_as(
            &token,
            "files.createUpload",
            Some(json!({ "filename": "c.txt", "mimeType": "text/plain", "sizeBytes": 150, "sha256": sha256(&[b'c'; 150]) })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(error_reason(&body), "storage_quota_exceeded");
    let (status, body) = app
        .mutation_as(
            &token,
            "files.createUpload",
            Some(json!({ "filename": "d.png", "mimeType": "image/png", "sizeBytes": 1_001, "sha256": sha256(b"x") })),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(error_reason(&body), "file_too_large");
}
each_database!(limits_and_quota_are_enforced);

/// `files.createUpload`, then a PUT of the bytes; its answer.
async fn create_upload(
    app: &TestApp,
    token: &str,
    filename: &str,
    mime_type: &str,
    bytes: &[u8],
) -> Value {
    let (status, body) = app
        .mutation_as(
            token,
            "files.createUpload",
            Some(json!({
                "filename": filename,
                "mimeType": mime_type,
                "sizeBytes": bytes.len(),
                "sha256": sha256(bytes),
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "files.createUpload: {body}");
    data(&body).clone()
}

/// PUTs `bytes` to an upload link with the headers it asks for, `Content-Type` replaced.
async fn put(app: &TestApp, target: &Value, content_type: &str, bytes: Vec<u8>) -> StatusCode {
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in target["headers"].as_object().expect("headers") {
        let name = reqwest::header::HeaderName::try_from(name.as_str()).expect("a header name");
        let value = value
            .as_str()
            .and_then(|value| value.parse().ok())
            .expect("a header value");
        headers.insert(name, value);
    }
    headers.insert(
        "content-type",
        content_type.parse().expect("a content type"),
    );
    app.http
        .put(target["url"].as_str().expect("url"))
        .headers(headers)
        .body(bytes)
        .send()
        .await
        .expect("upload")
        .status()
}

pub async fn upload_links_take_exactly_the_declared_bytes(app: TestApp) {
    let token = app.new_user().await;
    let bytes = b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n".to_vec();
    let target = create_upload(&app, &token, "report.pdf", "application/pdf", &bytes).await;
    assert_eq!(target["method"], "PUT");
    assert_eq!(target["headers"]["Content-Type"], "application/pdf");
    let file_id = target["fileId"].clone();

    let (status, body) = app
        .mutation_as(&token, "files.complete", Some(json!({ "fileId": file_id })))
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    assert_eq!(error_reason(&body), "upload_incomplete");
    let (_, pending) = app
        .query_as(&token, "files.get", Some(json!({ "id": file_id })))
        .await;
    assert_eq!(data(&pending)["status"], "pending");
    assert!(data(&pending)["url"].is_null());

    // Refused by this server's link, or by the bucket for a presigned S3 one.
    let mut wrong = bytes.clone();
    wrong[3] = b'X';
    let status = put(&app, &target, "application/pdf", wrong).await;
    assert!(status.is_client_error(), "wrong bytes: {status}");
    let status = put(&app, &target, "text/html", bytes.clone()).await;
    assert!(status.is_client_error(), "wrong type: {status}");
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"more");
    let status = put(&app, &target, "application/pdf", longer).await;
    assert!(status.is_client_error(), "wrong size: {status}");
    assert_eq!(
        put(&app, &target, "application/pdf", bytes.clone()).await,
        StatusCode::OK
    );

    let (status, body) = app
        .mutation_as(&token, "files.complete", Some(json!({ "fileId": file_id })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let file = data(&body);
    assert_eq!(file["status"], "ready");
    assert_eq!(file["mimeType"], "application/pdf");
    let served = app
        .http
        .get(file["url"].as_str().expect("url"))
        .send()
        .await
        .expect("download");
    assert_eq!(served.status(), StatusCode::OK);
    assert!(
        served.headers()["content-disposition"]
            .to_str()
            .unwrap_or_default()
            .starts_with("attachment")
    );
    assert_eq!(served.bytes().await.expect("bytes").as_ref(), &bytes[..]);

    // Bytes that are not what was declared are refused at completion.
    let text = b"plain words".to_vec();
    let target = create_upload(&app, &token, "fake.png", "image/png", &text).await;
    assert_eq!(put(&app, &target, "image/png", text).await, StatusCode::OK);
    let (status, body) = app
        .mutation_as(
            &token,
            "files.complete",
            Some(json!({ "fileId": target["fileId"] })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_reason(&body), "file_content_mismatch");
    let (_, rejected) = app
        .query_as(&token, "files.get", Some(json!({ "id": target["fileId"] })))
        .await;
    assert_eq!(data(&rejected)["status"], "rejected");
    assert_eq!(audited(&app, "file_rejected").await, 1);

    let (status, body) = app
        .mutation_as(
            &token,
            "files.createUpload",
            Some(json!({ "filename": "page.html", "mimeType": "text/html", "sizeBytes": 5, "sha256": sha256(b"<b>x") })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_reason(&body), "file_type_not_allowed");
}
both_databases!(upload_links_take_exactly_the_declared_bytes);

async fn expired_upload_links_are_refused(db_kind: DbKind) {
    let app = TestApp::spawn_with(db_kind, |config| {
        config.files.upload_url_ttl = std::time::Duration::from_secs(1);
    })
    .await;
    let token = app.new_user().await;
    let target = create_upload(&app, &token, "a.txt", "text/plain", b"late").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        put(&app, &target, "text/plain", b"late".to_vec()).await,
        StatusCode::FORBIDDEN
    );
}
each_database!(expired_upload_links_are_refused);

pub async fn files_are_private_listed_and_deleted(app: TestApp) {
    let owner = app.new_user().await;
    let other = app.new_user().await;
    let mut ids = Vec::new();
    for index in 0..3 {
        let name = format!("n{index}.txt");
        let file = upload_ok(&app, &owner, &[file_part(&name, "text/plain", b"words")]).await;
        ids.push(file["id"].clone());
    }
    let id = ids[0].clone();
    for (path, query) in [
        ("files.get", true),
        ("files.delete", false),
        ("files.complete", false),
    ] {
        let input = if path == "files.complete" {
            json!({ "fileId": id })
        } else {
            json!({ "id": id })
        };
        let (status, body) = if query {
            app.query_as(&other, path, Some(input)).await
        } else {
            app.mutation_as(&other, path, Some(input)).await
        };
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (_, body) = app.query_as(&other, "files.list", None).await;
    assert_eq!(data(&body)["files"], json!([]));

    let (status, body) = app
        .query_as(&owner, "files.list", Some(json!({ "limit": 2 })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let page = data(&body);
    assert_eq!(page["files"][0]["id"], ids[2]);
    assert_eq!(page["files"][1]["id"], ids[1]);
    let cursor = page["nextCursor"].clone();
    let (_, body) = app
        .query_as(
            &owner,
            "files.list",
            Some(json!({ "limit": 2, "cursor": cursor })),
        )
        .await;
    assert_eq!(data(&body)["files"][0]["id"], ids[0]);
    assert!(data(&body)["nextCursor"].is_null());

    let (_, body) = app
        .query_as(&owner, "files.get", Some(json!({ "id": id })))
        .await;
    let url = data(&body)["url"].as_str().expect("url").to_owned();
    let (status, body) = app
        .mutation_as(&owner, "files.delete", Some(json!({ "id": id })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        app.http.get(url).send().await.expect("download").status(),
        StatusCode::NOT_FOUND
    );
    let (status, body) = app
        .query_as(&owner, "files.get", Some(json!({ "id": id })))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error_code(&body), "NOT_FOUND");
    assert_eq!(audited(&app, "file_deleted").await, 1);
}
both_databases!(files_are_private_listed_and_deleted);
