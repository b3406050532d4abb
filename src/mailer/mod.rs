//! Sending mail (verification, password reset, notices) over SMTP with lettre. A request only
//! queues a mail: a background task sends it, retrying a failing server, so no request ever
//! waits on the mail server. Without `ALIAS_SMTP_URL` mails are written to the log instead
//! (development). Shared infrastructure: it knows nothing of what the mails say.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::MailConfig;

/// Mails waiting to be picked up at most, and mails picked up (being sent or waiting for a
/// retry) at most: past both a new mail is dropped with an error in the log (the mail server
/// has been failing for a long while). So at most twice this many mails are held in memory.
const QUEUE: usize = 1_000;
/// Mails being sent at once.
const CONCURRENT_SENDS: usize = 4;
/// Waits between the tries of one mail (then it is given up, with an error in the log).
const RETRY_AFTER: [Duration; 3] = [
    Duration::from_secs(2),
    Duration::from_secs(30),
    Duration::from_secs(300),
];
/// Bound on one conversation with the mail server.
const SEND_TIMEOUT: Duration = Duration::from_secs(20);

/// A plain-text mail to one address.
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
}

pub struct Mailer {
    queue: mpsc::Sender<Mail>,
}

impl Mailer {
    /// Starts the sending task; it stops with `shutdown` (mails still queued then are lost:
    /// the links they carried can be asked for again).
    pub fn start(config: &MailConfig, shutdown: &CancellationToken) -> anyhow::Result<Self> {
        let from: Mailbox = config.from.parse().context("ALIAS_MAIL_FROM")?;
        let transport = config
            .smtp_url
            .as_ref()
            .map(|url| {
                AsyncSmtpTransport::<Tokio1Executor>::from_url(&url.0)
                    .map(|builder| builder.timeout(Some(SEND_TIMEOUT)).build())
                    .context("ALIAS_SMTP_URL")
            })
            .transpose()?;
        if transport.is_none() {
            tracing::info!("ALIAS_SMTP_URL is not set: mails are written to the log, not sent");
        }
        let (queue, receiver) = mpsc::channel(QUEUE);
        let sender = Sender {
            from,
            transport,
            permits: Arc::new(Semaphore::new(CONCURRENT_SENDS)),
        };
        tokio::spawn(sender.run(receiver, shutdown.clone()));
        Ok(Self { queue })
    }

    /// Queues `mail` and returns at once.
    pub fn send(&self, mail: Mail) {
        if let Err(error) = self.queue.try_send(mail) {
            tracing::error!(%error, "mail queue full or closed: a mail was dropped");
        }
    }
}

struct Sender {
    from: Mailbox,
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    permits: Arc<Semaphore>,
}

impl Sender {
    async fn run(self, mut receiver: mpsc::Receiver<Mail>, shutdown: CancellationToken) {
        let sender = Arc::new(self);
        let picked_up = Arc::new(Semaphore::new(QUEUE));
        loop {
            // A mail is taken off the queue only when one of the picked-up slots is free, so
            // a failing server fills the queue (and new mails are dropped) instead of piling
            // up retrying tasks.
            let slot = tokio::select! {
                () = shutdown.cancelled() => return,
                slot = Arc::clone(&picked_up).acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
            };
            let mail = tokio::select! {
                () = shutdown.cancelled() => return,
                mail = receiver.recv() => match mail {
                    Some(mail) => mail,
                    None => return,
                },
            };
            let sender = Arc::clone(&sender);
            let stop = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = sender.deliver(mail) => {}
                }
                drop(slot);
            });
        }
    }

    /// Sends `mail`, retrying while the server fails.
    async fn deliver(&self, mail: Mail) {
        let Some(transport) = &self.transport else {
            tracing::info!(to = %mail.to, subject = %mail.subject, text = %mail.text, "mail (not sent: no ALIAS_SMTP_URL)");
            return;
        };
        let message = match self.message(&mail) {
            Ok(message) => message,
            Err(error) => {
                tracing::error!(%error, "could not build a mail");
                return;
            }
        };
        let mut waits = RETRY_AFTER.iter();
        loop {
            let sent = {
                let Ok(_permit) = self.permits.acquire().await else {
                    return;
                };
                transport.send(message.clone()).await
            };
            let Err(error) = sent else {
                return;
            };
            let Some(wait) = waits.next() else {
                tracing::error!(%error, subject = %mail.subject, "could not send a mail; gave up");
                return;
            };
            tracing::warn!(%error, retry_in_seconds = wait.as_secs(), "could not send a mail; will retry");
            tokio::time::sleep(*wait).await;
        }
    }

    fn message(&self, mail: &Mail) -> anyhow::Result<Message> {
        Message::builder()
            .from(self.from.clone())
            .to(mail.to.parse().context("recipient address")?)
            .subject(&mail.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(mail.text.clone())
            .context("mail message")
    }
}
