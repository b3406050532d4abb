//! Files in chat over HTTP: `chat.send { fileIds }` reaches each fake provider in its real
//! wire format (images inline and resized, PDFs as documents, text files as text), shows as
//! the message's `attachments`, refuses other users' and unfinished files, and keeps a
//! placeholder once a file is deleted; both databases.

use std::io::Cursor;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chat::{Chat, new_id, payloads};
use crate::each_database;
use crate::files::{file_part, png, text_part, upload_ok};
use crate::helpers::{DbKind, data, error_code, error_reason};

/// A PNG wider than the models take (2500×250; small, so debug builds process it quickly).
fn wide_png() -> Vec<u8> {
    let image = image::RgbImage::from_fn(2500, 250, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, 120])
    });
    let mut encoded = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut encoded, image::ImageFormat::Png)
        .expect("encode a PNG");
    encoded.into_inner()
}

/// A minimal PDF (the server sniffs `%PDF-`).
const PDF: &[u8] = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n";

async fn attachment(chat: &Chat, filename: &str, content_type: &str, bytes: &[u8]) -> String {
    let file = upload_ok(
        &chat.app,
        &chat.token,
        &[
            file_part(filename, content_type, bytes),
            text_part("purpose", "attachment"),
        ],
    )
    .await;
    assert_eq!(file["status"], "ready", "{file}");
    file["id"].as_str().unwrap_or_default().to_owned()
}

fn with_files(chat: &Chat, content: &str, file_ids: &[&str]) -> Value {
    let mut input = chat.input(content, &new_id());
    input["fileIds"] = json!(file_ids);
    input
}

/// Sends and waits for the reply's end; the streamed payloads.
async fn send_and_finish(chat: &Chat, input: &Value) -> Vec<Value> {
    let events = chat.send(input, None).await.collect().await;
    let payloads = payloads(&events);
    let done = payloads.last().expect("events");
    assert_eq!(done["type"], "done", "{payloads:?}");
    assert_eq!(done["message"]["status"], "complete", "{done}");
    payloads
}

/// The image in the request's user message, as each provider's wire format carries it:
/// (mime type, decoded bytes).
fn sent_image(provider: &str, body: &Value) -> (String, Vec<u8>) {
    let (list, content) = match provider {
        "gemini" => ("contents", "parts"),
        _ => ("messages", "content"),
    };
    let parts: Vec<&Value> = body[list]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|message| message["role"] == "user")
        .filter_map(|message| message[content].as_array())
        .flatten()
        .collect();
    let (mime_type, data) = match provider {
        "gemini" => {
            let part = parts
                .iter()
                .find(|part| part.get("inlineData").is_some())
                .unwrap_or_else(|| panic!("an inlineData part: {body}"));
            let inline = &part["inlineData"];
            (
                inline["mimeType"].as_str().unwrap_or_default().to_owned(),
                inline["data"].as_str().unwrap_or_default().to_owned(),
            )
        }
        "openai" => {
            let part = parts
                .iter()
                .find(|part| part["type"] == "image_url")
                .unwrap_or_else(|| panic!("an image_url part: {body}"));
            let url = part["image_url"]["url"].as_str().unwrap_or_default();
            let (head, data) = url.split_once(";base64,").expect("a data URL");
            (head.trim_start_matches("data:").to_owned(), data.to_owned())
        }
        _ => {
            let part = parts
                .iter()
                .find(|part| part["type"] == "image")
                .unwrap_or_else(|| panic!("an image block: {body}"));
            let source = &part["source"];
            assert_eq!(source["type"], "base64");
            (
                source["media_type"].as_str().unwrap_or_default().to_owned(),
                source["data"].as_str().unwrap_or_default().to_owned(),
            )
        }
    };
    (mime_type, STANDARD.decode(data).expect("base64 data"))
}

async fn images_reach(db: DbKind, provider: &str) {
    let chat = Chat::start(db, provider).await;
    let small = attachment(&chat, "dot.png", "image/png", &png()).await;
    let wide = attachment(&chat, "wide.png", "image/png", &wide_png()).await;
    let notes = attachment(
        &chat,
        "notes.md",
        "text/markdown",
        b"# Agenda\nBudget review",
    )
    .await;
    let pdf = attachment(&chat, "report.pdf", "application/pdf", PDF).await;
    let input = with_files(&chat, "What is in these?", &[&small, &wide, &notes, &pdf]);
    let payloads = send_and_finish(&chat, &input).await;
    let sent = &payloads[0]["message"]["attachments"];
    assert_eq!(sent.as_array().map(Vec::len), Some(4), "{sent}");
    assert_eq!(sent[0]["id"], small.as_str());
    assert_eq!(sent[1]["filename"], "wide.png");

    let call = chat.providers.requests()[0].clone();
    // The small image as stored; the wide one resized to 2048 px (as JPEG), kept whole for
    // display.
    let (mime_type, bytes) = sent_image(provider, &call.body);
    assert_eq!(mime_type, "image/png");
    let image = image::load_from_memory(&bytes).expect("an image");
    assert_eq!((image.width(), image.height()), (1, 1));
    // The files and the text travel in one user message (OpenAI: text part first).
    let user_message = match provider {
        "gemini" => &call.body["contents"][0]["parts"],
        "openai" => &call.body["messages"][1]["content"],
        _ => &call.body["messages"][0]["content"],
    };
    assert!(
        user_message.to_string().contains("What is in these?"),
        "text beside the files: {user_message}"
    );
    let mut body = call.body.clone();
    let first_image = match provider {
        "gemini" => &mut body["contents"][0]["parts"][0],
        "openai" => &mut body["messages"][1]["content"][1],
        _ => &mut body["messages"][0]["content"][0],
    };
    *first_image = Value::Null;
    let (mime_type, bytes) = sent_image(provider, &body);
    assert_eq!(mime_type, "image/jpeg");
    let image = image::load_from_memory(&bytes).expect("an image");
    assert_eq!(image.width(), 2048);
    assert!((204..=205).contains(&image.height()), "{}", image.height());
    let text = call.body.to_string();
    assert!(text.contains("Budget review"), "the text file as text");
    assert!(text.contains("notes.md"));
    let pdf_sent = match provider {
        "gemini" => text.contains("\"mimeType\":\"application/pdf\""),
        "openai" => text.contains("\"file_data\":\"data:application/pdf;base64,"),
        _ => text.contains("\"type\":\"document\""),
    };
    assert!(pdf_sent, "the PDF as a document: {text}");
    let pdf_b64 = STANDARD.encode(PDF);
    assert!(text.contains(&pdf_b64), "the PDF's bytes");

    // A later turn sends the files again, as history.
    let before = chat.providers.requests().len();
    send_and_finish(&chat, &chat.input("And now?", &new_id())).await;
    let later = chat.providers.requests()[before].clone();
    assert_eq!(sent_image(provider, &later.body).0, "image/png");
    assert!(later.body.to_string().contains("Budget review"));

    // The original is what the message shows.
    let messages = chat.messages().await;
    let shown = &messages[0]["attachments"][1];
    assert_eq!(
        (shown["width"].clone(), shown["height"].clone()),
        (json!(2500), json!(250))
    );
    let original = chat
        .app
        .http
        .get(shown["url"].as_str().expect("a signed link"))
        .send()
        .await
        .expect("served");
    assert_eq!(original.status(), StatusCode::OK);
}

async fn images_reach_gemini(db: DbKind) {
    images_reach(db, "gemini").await;
}
each_database!(images_reach_gemini);

async fn images_reach_openai(db: DbKind) {
    images_reach(db, "openai").await;
}
each_database!(images_reach_openai);

async fn images_reach_anthropic(db: DbKind) {
    images_reach(db, "anthropic").await;
}
each_database!(images_reach_anthropic);

async fn attachments_are_listed_and_outlive_their_files(db: DbKind) {
    let chat = Chat::start(db, "gemini").await;
    let photo = attachment(&chat, "photo.png", "image/png", &png()).await;
    send_and_finish(&chat, &with_files(&chat, "Look", &[&photo])).await;
    let messages = chat.messages().await;
    let shown = &messages[0]["attachments"];
    assert_eq!(shown[0]["status"], "ready");
    assert!(shown[0]["url"].is_string());
    assert!(
        messages[1]["attachments"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );

    let (status, body) = chat
        .app
        .mutation_as(&chat.token, "files.delete", Some(json!({ "id": photo })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let messages = chat.messages().await;
    let placeholder = &messages[0]["attachments"][0];
    assert_eq!(placeholder["status"], "deleted", "{placeholder}");
    assert_eq!(placeholder["id"], photo.as_str());
    assert_eq!(placeholder["filename"], "photo.png");
    assert_eq!(placeholder["mimeType"], "image/png");
    assert!(placeholder["url"].is_null() && placeholder["thumbnailUrl"].is_null());

    // The next reply's history names the deleted file instead of sending it.
    let before = chat.providers.requests().len();
    send_and_finish(&chat, &chat.input("Still there?", &new_id())).await;
    let later = chat.providers.requests()[before].body.to_string();
    assert!(!later.contains("inlineData"), "{later}");
    assert!(later.contains("photo.png"), "{later}");
}
each_database!(attachments_are_listed_and_outlive_their_files);

async fn only_the_callers_ready_files_can_be_sent(db: DbKind) {
    let chat = Chat::start(db, "anthropic").await;
    let other = chat.app.new_user().await;
    let theirs = upload_ok(
        &chat.app,
        &other,
        &[file_part("theirs.png", "image/png", &png())],
    )
    .await["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, body) = chat
        .send_message(&with_files(&chat, "Hi", &[&theirs]))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error_code(&body), "NOT_FOUND");

    let png = png();
    let (_, body) = chat
        .app
        .mutation_as(
            &chat.token,
            "files.createUpload",
            Some(json!({
                "filename": "later.png",
                "mimeType": "image/png",
                "sizeBytes": png.len(),
                "sha256": STANDARD.encode(<sha2::Sha256 as sha2::Digest>::digest(&png)),
            })),
        )
        .await;
    let pending = data(&body)["fileId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, body) = chat
        .send_message(&with_files(&chat, "Hi", &[&pending]))
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    assert_eq!(error_reason(&body), "upload_incomplete");

    let mine = attachment(&chat, "mine.png", "image/png", &png).await;
    let eleven: Vec<&str> = std::iter::repeat_n(mine.as_str(), 11).collect();
    for ids in [eleven, vec![mine.as_str(), mine.as_str()]] {
        let (status, body) = chat.send_message(&with_files(&chat, "Hi", &ids)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.to_string().contains("fileIds"), "{body}");
    }
    assert!(
        chat.providers.requests().is_empty(),
        "nothing reached the model"
    );
    assert!(chat.messages().await.is_empty(), "nothing was saved");
}
each_database!(only_the_callers_ready_files_can_be_sent);

/// A noisy PNG of `side`×`side` pixels: compresses badly, so it is about 3 bytes a pixel.
fn noisy_png(side: u32, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let image = image::RgbImage::from_fn(side, side, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let [r, g, b, _] = state.to_le_bytes();
        image::Rgb([r, g, b])
    });
    let mut encoded = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut encoded, image::ImageFormat::Png)
        .expect("encode a PNG");
    encoded.into_inner()
}

/// Photos without words are a message; every one of them reaches the model even when,
/// as stored, they would not fit one request together (6 × ~3.6 MB > the 12 MB inline budget).
async fn photos_alone_all_reach_the_model(db: DbKind) {
    let chat = Chat::start(db, "gemini").await;
    let mut ids = Vec::new();
    for seed in 0..6 {
        let photo = noisy_png(1100, seed);
        assert!(photo.len() > 3_000_000, "{}", photo.len());
        ids.push(attachment(&chat, &format!("page-{seed}.png"), "image/png", &photo).await);
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (status, body) = chat.send_message(&with_files(&chat, "", &ids)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sent = &data(&body)["userMessage"];
    assert_eq!(sent["content"], "", "{sent}");
    assert_eq!(sent["attachments"].as_array().map(Vec::len), Some(6));
    // Re-encoding six photos in a debug build on a busy machine takes a while: poll rather
    // than hold a stream's per-event timeout.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let messages = chat.messages().await;
        let status = messages.get(1).map(|reply| reply["status"].clone());
        if status.as_ref().is_some_and(|status| status != "streaming") {
            assert_eq!(status, Some(json!("complete")), "{messages:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reply: {messages:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let call = chat.providers.requests()[0].clone();
    let images: Vec<Vec<u8>> = call.body["contents"][0]["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .filter_map(|part| part["inlineData"]["data"].as_str())
        .map(|data| STANDARD.decode(data).expect("base64"))
        .collect();
    assert_eq!(images.len(), 6, "every photo is sent");
    let total: usize = images.iter().map(Vec::len).sum();
    assert!(total <= 12_000_000, "within one request's budget: {total}");
    assert!(
        !call.body.to_string().contains("too large"),
        "no photo left out"
    );

    // Empty words without files are still refused, on `content`.
    let (status, body) = chat.send_message(&chat.input("  ", &new_id())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("content"), "{body}");
}
each_database!(photos_alone_all_reach_the_model);
