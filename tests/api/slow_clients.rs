//! Slow, stalled and idle clients over raw TCP: they are cut after the header, body and idle
//! timeouts, past the connection cap they make room for others, and none of it touches a
//! long event stream.

use std::time::Duration;

use alias_server::config::Config;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{DbKind, TestApp, data, unique_email};

async fn app(adjust: impl FnOnce(&mut Config)) -> TestApp {
    TestApp::spawn_with(DbKind::Sqlite, adjust).await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.addr).await.expect("connect")
}

/// Everything the server sends until it closes the connection, or `None` if it is still open
/// after `within`.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut received = Vec::new();
    let read = async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok()?;
    Some(String::from_utf8_lossy(&received).into_owned())
}

#[tokio::test]
async fn a_header_sent_byte_by_byte_is_cut_after_the_header_timeout() {
    let app = app(|config| config.connections.header_timeout = Duration::from_secs(1)).await;
    let stream = connect(&app).await;
    let (mut reader, mut writer) = stream.into_split();
    let header = format!(
        "GET /health HTTP/1.1\r\nHost: localhost\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(60)
    );
    // One byte every 100 ms: the whole header would take about 10 s.
    let trickle = tokio::spawn(async move {
        let mut sent = 0;
        for byte in header.as_bytes() {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (sent, header.len())
    });
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut answer))
        .await
        .is_ok();
    assert!(closed, "the server kept the slow header's connection open");
    assert!(answer.is_empty(), "no answer to an incomplete request");
    let (sent, length) = trickle.await.expect("trickle");
    assert!(
        sent < length,
        "cut before the header was complete ({sent} of {length} bytes)"
    );
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_answered_timeout_and_the_connection_closed() {
    let app = app(|config| config.connections.body_timeout = Duration::from_secs(1)).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /trpc/auth.login HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{\"email\":",
        )
        .await
        .expect("write");
    let answer = until_closed(&mut stream, Duration::from_secs(30))
        .await
        .expect("the connection is closed after the answer");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"TIMEOUT\""), "{answer}");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let app = app(|config| config.connections.idle_timeout = Duration::from_secs(1)).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while !String::from_utf8_lossy(&answer).contains("\"status\":\"ok\"") {
        let n = stream.read(&mut buffer).await.expect("read");
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buffer[..n]);
    }
    let rest = until_closed(&mut stream, Duration::from_secs(30)).await;
    assert_eq!(
        rest.as_deref(),
        Some(""),
        "closed, with nothing more sent, once idle"
    );
}

#[tokio::test]
async fn a_slowloris_beyond_the_connection_cap_leaves_the_server_answering() {
    const CAP: usize = 16;
    const SLOW: usize = 48;
    // Timeouts far longer than the test: only the cap can make room.
    let app = app(|config| {
        config.connections.max_connections = CAP;
        config.connections.header_timeout = Duration::from_secs(120);
        config.connections.body_timeout = Duration::from_secs(120);
        config.connections.idle_timeout = Duration::from_secs(120);
    })
    .await;
    let mut slow = Vec::new();
    for index in 0..SLOW {
        let mut stream = connect(&app).await;
        let half_sent: &[u8] = if index % 2 == 0 {
            b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Never: ending"
        } else {
            b"POST /trpc/auth.login HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"email\":"
        };
        stream.write_all(half_sent).await.expect("write");
        slow.push(stream);
    }

    let health = app
        .http
        .get(app.url("/health"))
        .send()
        .await
        .expect("/health answers");
    assert_eq!(health.status(), StatusCode::OK);
    let session = app.register(&unique_email(), "correct horse battery").await;
    let token = session["accessToken"].as_str().unwrap_or_default();
    let (status, body) = app.query_as(token, "users.me", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(data(&body)["email"].is_string());

    let closed = futures::future::join_all(
        slow.iter_mut()
            .map(|stream| until_closed(stream, Duration::from_secs(2))),
    )
    .await
    .iter()
    .filter(|answer| answer.is_some())
    .count();
    assert!(
        closed >= SLOW - CAP,
        "the connections keeping the server waiting made room ({closed} of {SLOW} closed)"
    );
}

#[tokio::test]
async fn event_streams_outlive_every_timeout() {
    let short = Duration::from_millis(300);
    let app = app(|config| {
        config.connections.header_timeout = short;
        config.connections.body_timeout = short;
        config.connections.idle_timeout = short;
    })
    .await;
    // 20 ticks 100 ms apart: the stream lasts about 2 s, several times every timeout.
    let events = app
        .subscribe("system.streamCheck", Some(&json!({ "count": 20 })), None)
        .await
        .collect()
        .await;
    let ticks = events.iter().filter(|event| event.id.is_some()).count();
    assert_eq!(ticks, 20, "{events:?}");
    assert_eq!(
        events.last().and_then(|event| event.event.as_deref()),
        Some("return")
    );
}
