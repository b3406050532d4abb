//! Images over HTTP: orientation, metadata stripped, thumbnails, decompression bombs, HEIC,
//! avatars; and the sweep.

use std::io::Cursor;

use reqwest::StatusCode;
use sea_orm::EntityTrait;
use serde_json::{Value, json};

use crate::both_databases;
use crate::files::{file_part, png, text_part, upload, upload_ok};
use crate::helpers::{TestApp, data, error_reason};

/// A `width`×`height` JPEG carrying EXIF with orientation 6 (turn 90° clockwise) and GPS.
fn jpeg_with_exif(width: u32, height: u32) -> Vec<u8> {
    let image =
        image::RgbImage::from_fn(width, height, |x, _| image::Rgb([(x * 40) as u8, 90, 160]));
    let mut encoded = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut encoded, image::ImageFormat::Jpeg)
        .expect("encode");
    let jpeg = encoded.into_inner();
    // TIFF, little-endian: IFD0 {Orientation = 6, GPSInfo → GPS IFD}, GPS IFD {LatitudeRef "N"}.
    let mut tiff: Vec<u8> = b"II*\0\x08\0\0\0".to_vec();
    tiff.extend_from_slice(&2u16.to_le_bytes());
    tiff.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0]);
    tiff.extend_from_slice(&[0x25, 0x88, 4, 0, 1, 0, 0, 0, 38, 0, 0, 0]);
    tiff.extend_from_slice(&0u32.to_le_bytes());
    tiff.extend_from_slice(&1u16.to_le_bytes());
    tiff.extend_from_slice(&[0x01, 0x00, 2, 0, 2, 0, 0, 0, b'N', 0, 0, 0]);
    tiff.extend_from_slice(&0u32.to_le_bytes());
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let length = u16::try_from(app1.len() + 2).expect("short segment");
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A tiny PNG whose header claims 100,000×100,000 pixels.
fn decompression_bomb() -> Vec<u8> {
    let mut bytes = png();
    // IHDR's data starts at 16: width, height (big-endian); its CRC covers type and data.
    bytes[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

async fn fetch(app: &TestApp, url: &Value) -> reqwest::Response {
    let response = app
        .http
        .get(url.as_str().expect("a url"))
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), StatusCode::OK);
    response
}

pub async fn images_are_oriented_stripped_and_thumbnailed(app: TestApp) {
    let token = app.new_user().await;
    let jpeg = jpeg_with_exif(8, 4);
    assert!(jpeg.windows(4).any(|w| w == b"Exif"));
    let file = upload_ok(&app, &token, &[file_part("photo.jpg", "image/jpeg", &jpeg)]).await;
    assert_eq!(file["mimeType"], "image/jpeg");
    // Orientation 6 turns an 8×4 picture upright as 4×8.
    assert_eq!(
        (file["width"].clone(), file["height"].clone()),
        (json!(4), json!(8))
    );
    assert!(
        file["thumbhash"]
            .as_str()
            .is_some_and(|hash| !hash.is_empty())
    );

    let served = fetch(&app, &file["url"])
        .await
        .bytes()
        .await
        .expect("bytes");
    assert!(
        !served.windows(4).any(|w| w == b"Exif"),
        "EXIF (and its GPS) is gone"
    );
    let decoded = image::load_from_memory(&served).expect("a JPEG");
    assert_eq!((decoded.width(), decoded.height()), (4, 8));

    let thumbnail = fetch(&app, &file["thumbnailUrl"]).await;
    assert_eq!(thumbnail.headers()["content-type"], "image/jpeg");
    let thumbnail =
        image::load_from_memory(&thumbnail.bytes().await.expect("bytes")).expect("a JPEG");
    assert!(thumbnail.width().max(thumbnail.height()) <= 320);

    let big = image::RgbImage::from_pixel(1000, 500, image::Rgb([10, 200, 30]));
    let mut encoded = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(big)
        .write_to(&mut encoded, image::ImageFormat::Png)
        .expect("encode");
    let file = upload_ok(
        &app,
        &token,
        &[file_part("wide.png", "image/png", encoded.get_ref())],
    )
    .await;
    let thumbnail = fetch(&app, &file["thumbnailUrl"])
        .await
        .bytes()
        .await
        .expect("bytes");
    let thumbnail = image::load_from_memory(&thumbnail).expect("a JPEG");
    assert_eq!((thumbnail.width(), thumbnail.height()), (320, 160));
}
both_databases!(images_are_oriented_stripped_and_thumbnailed);

pub async fn bombs_broken_images_and_heic_are_refused(app: TestApp) {
    let token = app.new_user().await;
    let (status, body) = upload(
        &app,
        &token,
        &[file_part("bomb.png", "image/png", &decompression_bomb())],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(error_reason(&body), "file_too_large");

    let mut broken = png();
    broken.truncate(40);
    let (status, body) = upload(
        &app,
        &token,
        &[file_part("broken.png", "image/png", &broken)],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_reason(&body), "file_content_mismatch");

    let heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic\0\0\0\x08mdat";
    let (status, body) = upload(
        &app,
        &token,
        &[file_part("IMG_0001.HEIC", "image/heic", heic)],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_reason(&body), "file_type_not_allowed");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("JPEG"),
        "{body}"
    );
}
both_databases!(bombs_broken_images_and_heic_are_refused);

pub async fn avatars_are_uploaded_files_with_stable_links(app: TestApp) {
    let token = app.new_user().await;
    let first = upload_ok(
        &app,
        &token,
        &[
            file_part("me.png", "image/png", &png()),
            text_part("purpose", "avatar"),
        ],
    )
    .await;
    assert_eq!(
        first["mimeType"], "image/jpeg",
        "avatars are stored as JPEG"
    );
    let (status, body) = app
        .mutation_as(
            &token,
            "users.update",
            Some(json!({ "avatarFileId": first["id"] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let url = data(&body)["avatarUrl"].clone();
    let (_, me) = app.query_as(&token, "users.me", None).await;
    assert_eq!(
        data(&me)["avatarUrl"],
        url,
        "the same picture keeps its link"
    );
    let served = fetch(&app, &url).await;
    assert_eq!(served.headers()["content-type"], "image/jpeg");
    assert!(
        served.headers()["cache-control"]
            .to_str()
            .unwrap_or_default()
            .contains("immutable")
    );

    // An attachment, another user's file or a missing one cannot be the picture.
    let attachment = upload_ok(&app, &token, &[file_part("a.png", "image/png", &png())]).await;
    let (status, _) = app
        .mutation_as(
            &token,
            "users.update",
            Some(json!({ "avatarFileId": attachment["id"] })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let other = app.new_user().await;
    let (status, _) = app
        .mutation_as(
            &other,
            "users.update",
            Some(json!({ "avatarFileId": first["id"] })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let second = upload_ok(
        &app,
        &token,
        &[
            file_part("me2.png", "image/png", &png()),
            text_part("purpose", "avatar"),
        ],
    )
    .await;
    let (_, body) = app
        .mutation_as(
            &token,
            "users.update",
            Some(json!({ "avatarFileId": second["id"] })),
        )
        .await;
    assert_ne!(
        data(&body)["avatarUrl"],
        url,
        "a new picture has a new link"
    );
    let (status, _) = app
        .query_as(&token, "files.get", Some(json!({ "id": first["id"] })))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the old picture is deleted");
    let gone = app
        .http
        .get(url.as_str().expect("url"))
        .send()
        .await
        .expect("download");
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);

    // Deleting the picture's file removes the picture.
    let (status, _) = app
        .mutation_as(&token, "files.delete", Some(json!({ "id": second["id"] })))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, me) = app.query_as(&token, "users.me", None).await;
    assert_eq!(data(&me)["avatarUrl"], Value::Null);
}
both_databases!(avatars_are_uploaded_files_with_stable_links);

pub async fn the_sweep_removes_abandoned_uploads_and_orphans(app: TestApp) {
    let token = app.new_user().await;
    let kept = upload_ok(
        &app,
        &token,
        &[file_part("keep.txt", "text/plain", b"keep")],
    )
    .await;
    let (status, body) = app
        .mutation_as(
            &token,
            "files.createUpload",
            Some(json!({ "filename": "never.txt", "mimeType": "text/plain", "sizeBytes": 4, "sha256": "iNQmb9TmM40TuEX88olXnSCciXgjuSF9o+Fhk28DFYk=" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let abandoned = data(&body)["fileId"].clone();
    // A chat's files go with it: its rows by cascade, its bytes by the sweep.
    let (_, chat) = app
        .mutation_as(
            &token,
            "chat.sessions.create",
            Some(json!({ "title": "t" })),
        )
        .await;
    let session_id = data(&chat)["id"].as_str().expect("id").to_owned();
    let attached = upload_ok(
        &app,
        &token,
        &[
            file_part("in-chat.txt", "text/plain", b"chat"),
            text_part("sessionId", &session_id),
        ],
    )
    .await;
    let (status, _) = app
        .mutation_as(
            &token,
            "chat.sessions.delete",
            Some(json!({ "id": session_id })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let swept = alias_server::files::sweep(&app.state, chrono::Utc::now())
        .await
        .expect("sweep");
    assert_eq!(swept.orphaned_objects, 0, "young objects are left alone");
    let later = chrono::Utc::now() + chrono::Duration::hours(25);
    let swept = alias_server::files::sweep(&app.state, later)
        .await
        .expect("sweep");
    assert_eq!(swept.abandoned_uploads, 1);
    assert_eq!(swept.orphaned_objects, 1, "the deleted chat's file");
    let (status, _) = app
        .query_as(&token, "files.get", Some(json!({ "id": abandoned })))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let gone = app
        .http
        .get(attached["url"].as_str().expect("url"))
        .send()
        .await
        .expect("download");
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    fetch(&app, &kept["url"]).await;

    // A row whose bytes vanished goes too.
    let key = format!(
        "files/{}/{}",
        data(&app.query_as(&token, "users.me", None).await.1)["id"]
            .as_str()
            .unwrap_or_default(),
        kept["id"].as_str().unwrap_or_default()
    );
    app.state
        .storage
        .delete(&key)
        .await
        .expect("delete the bytes");
    let swept = alias_server::files::sweep(&app.state, later)
        .await
        .expect("sweep");
    assert_eq!(swept.missing_objects, 1);
    let (status, _) = app
        .query_as(&token, "files.get", Some(json!({ "id": kept["id"] })))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let rows = entity::files::Entity::find()
        .all(&app.db().await)
        .await
        .expect("files");
    assert!(rows.is_empty(), "{rows:?}");

    // Every removal is in the owner's audit log, with why.
    let (status, events) = app.query_as(&token, "audit.list", None).await;
    assert_eq!(status, StatusCode::OK, "{events}");
    let removals: Vec<(String, String)> = data(&events)["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|event| event["action"] == "file_deleted")
        .map(|event| {
            (
                event["metadata"]["fileId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                event["metadata"]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    for (file, reason) in [
        (&attached["id"], "chat_deleted"),
        (&abandoned, "upload_abandoned"),
        (&kept["id"], "object_missing"),
    ] {
        let file = file.as_str().expect("id").to_owned();
        assert!(
            removals.contains(&(file, reason.to_owned())),
            "{reason}: {removals:?}"
        );
    }
}
both_databases!(the_sweep_removes_abandoned_uploads_and_orphans);
