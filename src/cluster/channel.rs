//! Messages every instance hears: a Redis pub/sub channel, with a task per instance that stays
//! subscribed and subscribes again when Redis comes back.
//!
//! Pub/sub delivers only to those subscribed at the moment: whatever was published while an
//! instance was cut off is lost to it. So the listener says when it (re)subscribed
//! ([`Delivery::Subscribed`]) and whether it is subscribed now ([`Channel::is_live`]); a user
//! of the channel trusts what it kept from before only while it is live.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use redis::aio::PubSub;
use tokio_util::sync::CancellationToken;

use super::{Redis, Unavailable};

/// How often an idle subscription checks that Redis still answers: a connection that died
/// without closing (a dropped route) would otherwise look subscribed for minutes.
const HEARTBEAT: Duration = Duration::from_secs(1);
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(2);

pub enum Delivery<'a> {
    /// A message published by some instance (this one included).
    Message(&'a str),
    /// Subscribed (again): every message from now on arrives; any before may have been missed.
    Subscribed,
}

#[derive(Clone)]
pub struct Channel {
    redis: Redis,
    name: String,
    live: Arc<AtomicBool>,
}

impl Channel {
    /// Subscribes to `name` (under the key prefix) until `shutdown`, handing every delivery to
    /// `on_delivery` (called on the listener task: keep it quick).
    pub fn subscribe(
        redis: &Redis,
        name: &str,
        shutdown: CancellationToken,
        on_delivery: impl Fn(Delivery<'_>) + Send + Sync + 'static,
    ) -> Self {
        let channel = Self {
            redis: redis.clone(),
            name: redis.key(name),
            live: Arc::new(AtomicBool::new(false)),
        };
        let listener = Listener {
            redis: redis.clone(),
            name: channel.name.clone(),
            live: Arc::clone(&channel.live),
            on_delivery: Box::new(on_delivery),
        };
        tokio::spawn(listener.run(shutdown));
        channel
    }

    /// Whether this instance is subscribed now (so hears every message).
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Sends `message` to every instance subscribed now.
    pub async fn publish(&self, message: &str) -> Result<(), Unavailable> {
        let name = &self.name;
        self.redis
            .run("publish a message", |mut connection| async move {
                redis::cmd("PUBLISH")
                    .arg(name)
                    .arg(message)
                    .query_async::<i64>(&mut connection)
                    .await
                    .map(drop)
            })
            .await
    }
}

type OnDelivery = Box<dyn Fn(Delivery<'_>) + Send + Sync>;

struct Listener {
    redis: Redis,
    name: String,
    live: Arc<AtomicBool>,
    on_delivery: OnDelivery,
}

impl Listener {
    async fn run(self, shutdown: CancellationToken) {
        let mut retry = FIRST_RETRY;
        let mut lost_once = false;
        loop {
            let connected = tokio::select! {
                () = shutdown.cancelled() => return,
                connected = tokio::time::timeout(self.redis.timeout(), self.connect()) => connected,
            };
            match connected {
                Ok(Ok(pubsub)) => {
                    retry = FIRST_RETRY;
                    (self.on_delivery)(Delivery::Subscribed);
                    self.live.store(true, Ordering::Release);
                    if lost_once {
                        tracing::info!(channel = %self.name, "subscribed to Redis again");
                    }
                    self.follow(pubsub, &shutdown).await;
                    self.live.store(false, Ordering::Release);
                    if shutdown.is_cancelled() {
                        return;
                    }
                    lost_once = true;
                    tracing::warn!(channel = %self.name, "lost the Redis subscription; retrying");
                }
                Ok(Err(error)) => tracing::debug!(%error, "could not subscribe to Redis"),
                Err(_) => tracing::debug!("subscribing to Redis timed out"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(LAST_RETRY);
        }
    }

    async fn connect(&self) -> redis::RedisResult<PubSub> {
        let mut pubsub = self.redis.client().get_async_pubsub().await?;
        pubsub.subscribe(&self.name).await?;
        Ok(pubsub)
    }

    /// Hands on messages until the connection fails (or stops answering) or shutdown.
    async fn follow(&self, pubsub: PubSub, shutdown: &CancellationToken) {
        let (mut sink, mut stream) = pubsub.split();
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                message = stream.next() => {
                    let Some(message) = message else { return };
                    match std::str::from_utf8(message.get_payload_bytes()) {
                        Ok(text) => (self.on_delivery)(Delivery::Message(text)),
                        Err(_) => tracing::warn!(channel = %self.name, "ignored a message that is not UTF-8"),
                    }
                }
                _ = heartbeat.tick() => {
                    let pong = tokio::time::timeout(self.redis.timeout(), sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        return;
                    }
                }
            }
        }
    }
}
