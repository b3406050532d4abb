//! A small SMTP server speaking the real protocol (the part of RFC 5321 a client such as
//! lettre uses: EHLO/HELO, MAIL, RCPT, DATA with dot-stuffing, RSET, NOOP, QUIT), keeping the
//! mails it receives so tests can read the links and codes in them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// A received mail, decoded.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
}

#[derive(Clone)]
pub struct TestSmtp {
    /// `smtp://127.0.0.1:<port>`, for `ALIAS_SMTP_URL`.
    pub url: String,
    mails: Arc<Mutex<Vec<ReceivedMail>>>,
    arrived: Arc<Notify>,
    /// Mails still to refuse with a temporary failure (451), as a struggling server would.
    refuse: Arc<AtomicUsize>,
}

impl TestSmtp {
    pub async fn start() -> Self {
        Self::refusing(0).await
    }

    /// A server that answers the first `mails` mails "451 try again later".
    pub async fn refusing(mails: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind SMTP");
        let port = listener.local_addr().expect("SMTP address").port();
        let server = Self {
            url: format!("smtp://127.0.0.1:{port}"),
            mails: Arc::default(),
            arrived: Arc::default(),
            refuse: Arc::new(AtomicUsize::new(mails)),
        };
        let accepting = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let session = accepting.clone();
                tokio::spawn(async move { session.serve(stream).await });
            }
        });
        server
    }

    /// Every mail received so far to `to`.
    pub fn mails_to(&self, to: &str) -> Vec<ReceivedMail> {
        self.mails
            .lock()
            .expect("mails")
            .iter()
            .filter(|mail| mail.to.iter().any(|address| address == to))
            .cloned()
            .collect()
    }

    /// Waits (10 s at most) for the `nth` (0-based) mail to `to` whose subject contains
    /// `subject` (mails are sent concurrently: their order is not the order they were asked
    /// for).
    pub async fn nth_mail_to(&self, to: &str, subject: &str, nth: usize) -> ReceivedMail {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let arrived = self.arrived.notified();
            let matching: Vec<ReceivedMail> = self
                .mails_to(to)
                .into_iter()
                .filter(|mail| mail.subject.contains(subject))
                .collect();
            if let Some(mail) = matching.get(nth) {
                return mail.clone();
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "no mail #{nth} about {subject:?} to {to}; got {:?}",
                    self.mails_to(to)
                );
            }
        }
    }

    async fn serve(&self, stream: TcpStream) {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let mut reply = async |text: &str| {
            let _ = write.write_all(format!("{text}\r\n").as_bytes()).await;
        };
        reply("220 test.local ESMTP ready").await;
        let mut to = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            let upper = line.to_ascii_uppercase();
            if upper.starts_with("EHLO") {
                reply("250-test.local greets you\r\n250-8BITMIME\r\n250 SMTPUTF8").await;
            } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
                reply("250 OK").await;
            } else if upper.starts_with("MAIL FROM:") || upper.starts_with("RSET") {
                to.clear();
                reply("250 OK").await;
            } else if upper.starts_with("RCPT TO:") {
                let address = line[8..].trim().trim_start_matches('<');
                let address = address.split('>').next().unwrap_or_default();
                to.push(address.to_owned());
                reply("250 OK").await;
            } else if upper == "DATA" {
                reply("354 End data with <CR><LF>.<CR><LF>").await;
                let mut data = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line == "." {
                        break;
                    }
                    let unstuffed = line.strip_prefix('.').filter(|_| line.starts_with(".."));
                    data.push(unstuffed.unwrap_or(&line).to_owned());
                }
                let refused = self
                    .refuse
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if refused {
                    reply("451 Local error, try again later").await;
                } else {
                    self.keep(std::mem::take(&mut to), &data);
                    reply("250 OK: queued").await;
                }
            } else if upper == "QUIT" {
                reply("221 Bye").await;
                return;
            } else {
                reply("500 Unrecognized command").await;
            }
        }
    }

    fn keep(&self, to: Vec<String>, data: &[String]) {
        let split = data.iter().position(String::is_empty).unwrap_or(data.len());
        let (headers, body) = data.split_at(split);
        let header = |name: &str| {
            headers
                .iter()
                .find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    key.eq_ignore_ascii_case(name)
                        .then(|| value.trim().to_owned())
                })
                .unwrap_or_default()
        };
        let body = body.iter().skip(1).cloned().collect::<Vec<_>>();
        let body = match header("Content-Transfer-Encoding")
            .to_ascii_lowercase()
            .as_str()
        {
            "base64" => String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(body.concat())
                    .expect("base64 body"),
            )
            .expect("UTF-8 body"),
            "quoted-printable" => decode_quoted_printable(&body.join("\n")),
            _ => body.join("\n"),
        };
        let mail = ReceivedMail {
            to,
            subject: header("Subject"),
            body,
        };
        self.mails.lock().expect("mails").push(mail);
        self.arrived.notify_waiters();
    }
}

fn decode_quoted_printable(text: &str) -> String {
    let joined = text.replace("=\n", "");
    let mut bytes = Vec::new();
    let mut rest = joined.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'='
            && let Some(hex) = tail.get(..2)
            && let Ok(value) = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("zz"), 16)
        {
            bytes.push(value);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).expect("UTF-8 body")
}
