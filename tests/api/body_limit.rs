//! An over-limit body always gets a clean 413 the client can read: the server lets the
//! client finish sending (up to a bound) instead of answering and closing under it, which
//! reset the connection (EPIPE/ECONNRESET on the client instead of the answer).

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{DbKind, TestApp, error_code};

const TWO_MB: usize = 2 * 1024 * 1024;

fn two_megabyte_login() -> String {
    json!({ "email": "a@example.com", "password": "x".repeat(TWO_MB) }).to_string()
}

#[tokio::test]
async fn two_megabyte_bodies_always_get_a_clean_413() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    let body = two_megabyte_login();
    for attempt in 0..40 {
        let request = app
            .http
            .post(app.url("/trpc/auth.login"))
            .header("content-type", "application/json");
        // Half with a Content-Length, half chunked (the length is learnt while reading).
        let request = if attempt % 2 == 0 {
            request.body(body.clone())
        } else {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
                .as_bytes()
                .chunks(64 * 1024)
                .map(|chunk| Ok(chunk.to_vec()))
                .collect();
            request.body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        };
        let response = request
            .send()
            .await
            .unwrap_or_else(|error| panic!("attempt {attempt}: no answer: {error:?}"));
        assert_eq!(
            response.status(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "attempt {attempt}"
        );
        let answer: Value = response.json().await.expect("a JSON error");
        assert_eq!(
            error_code(&answer),
            "PAYLOAD_TOO_LARGE",
            "attempt {attempt}"
        );
    }
    let (status, _) = app.query("system.health", None).await;
    assert_eq!(status, StatusCode::OK);
}

/// Reads one HTTP/1.1 response with a Content-Length body: status, headers, body.
async fn read_response(stream: &mut TcpStream) -> (u16, String, String) {
    let mut raw = Vec::new();
    let mut buffer = [0_u8; 8192];
    let head_end = loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let read = stream.read(&mut buffer).await.expect("read");
        assert!(read > 0, "connection closed before the answer");
        raw.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status");
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .expect("a content-length");
    while raw.len() < head_end + length {
        let read = stream.read(&mut buffer).await.expect("read");
        assert!(read > 0, "connection closed inside the answer");
        raw.extend_from_slice(&buffer[..read]);
    }
    let body = String::from_utf8_lossy(&raw[head_end..head_end + length]).into_owned();
    (status, head, body)
}

fn post_head(path: &str, length: usize, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn the_connection_stays_usable_after_a_413() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let body = two_megabyte_login();
    stream
        .write_all(post_head("/trpc/auth.login", body.len(), "").as_bytes())
        .await
        .expect("write head");
    stream
        .write_all(body.as_bytes())
        .await
        .expect("the whole body is taken");
    let (status, head, answer) = read_response(&mut stream).await;
    assert_eq!(status, 413, "{head}{answer}");
    assert!(!head.contains("connection: close"), "{head}");

    stream
        .write_all(b"GET /trpc/system.health HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .expect("write a second request");
    let (status, _, answer) = read_response(&mut stream).await;
    assert_eq!(status, 200, "{answer}");
}

/// A client that waits for `100 Continue` is answered at once and never sends the body.
#[tokio::test]
async fn expect_continue_is_refused_before_the_body() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream
        .write_all(post_head("/trpc/auth.login", TWO_MB, "expect: 100-continue\r\n").as_bytes())
        .await
        .expect("write head");
    let (status, head, answer) = read_response(&mut stream).await;
    assert_eq!(status, 413, "{head}{answer}");
    assert_eq!(
        error_code(&serde_json::from_str(&answer).expect("JSON")),
        "PAYLOAD_TOO_LARGE"
    );
}

/// Past the bound the server stops reading: it answers and closes, saying so.
#[tokio::test]
async fn a_huge_declared_body_is_refused_with_connection_close() {
    let app = TestApp::spawn(DbKind::Sqlite).await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream
        .write_all(post_head("/trpc/auth.login", 1 << 30, "").as_bytes())
        .await
        .expect("write head");
    let (status, head, _) = read_response(&mut stream).await;
    assert_eq!(status, 413);
    assert!(head.contains("connection: close"), "{head}");
}
