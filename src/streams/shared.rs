//! Streams other instances follow and stop, through Redis. The instance running a stream
//! copies each event, in order, into a Redis stream named after its subject (capped, expiring
//! [`RETENTION`] after its last event); an instance asked to follow a subject it does not run
//! reads that Redis stream from the start and then blocks for new entries. Stop requests are
//! published to every instance; the one running the subject stops it. While it runs, the
//! running instance holds a lease on the subject ([`LEASE`], renewed every [`RENEW`]): a
//! subject left without one was orphaned by an instance that died.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Entry, RETENTION};
use crate::cluster::{Channel, Delivery, Redis, Unavailable};
use crate::rpc::{RpcError, Tracked};

/// Entries kept per Redis stream at most (a reply has far fewer events).
const MAX_ENTRIES: u32 = 20_000;
/// How long one blocking read waits before it checks the stream still exists.
const BLOCK: Duration = Duration::from_secs(5);
/// The pub/sub channel stop requests travel on.
const STOPS: &str = "stream-stops";
/// How long a subject's lease lasts unless renewed.
pub(super) const LEASE: Duration = Duration::from_secs(10);
/// How often a running stream renews its lease.
const RENEW: Duration = Duration::from_secs(3);

/// `end_orphan`: appends ARGV[1] as the event after the stream's last one, then the end,
/// unless the stream is missing or ended already.
const END_ORPHAN: &str = r"
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last == 0 then return 0 end
local fields = last[1][2]
local position = nil
for i = 1, #fields, 2 do
  if fields[i] == 'end' or fields[i] == 'failed' then return 0 end
  if fields[i] == 'id' then position = tonumber(fields[i + 1]) end
end
if not position then return 0 end
redis.call('XADD', KEYS[1], '*', 'id', position + 1, 'data', ARGV[1])
redis.call('XADD', KEYS[1], '*', 'end', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// What the running instance copies into Redis.
pub(super) enum Copied {
    Event(usize, Arc<RawValue>),
    Failed,
    End,
}

pub(super) struct Shared {
    redis: Redis,
    stops: Channel,
    end_orphan: redis::Script,
}

impl Shared {
    /// `on_stop` runs on this instance for every stop request any instance publishes.
    pub(super) fn new(
        redis: &Redis,
        shutdown: &CancellationToken,
        on_stop: impl Fn(Uuid) + Send + Sync + 'static,
    ) -> Self {
        let stops = Channel::subscribe(redis, STOPS, shutdown.clone(), move |delivery| {
            if let Delivery::Message(message) = delivery {
                match Uuid::parse_str(message) {
                    Ok(subject) => on_stop(subject),
                    Err(_) => tracing::warn!(message, "ignored an unknown stop request"),
                }
            }
        });
        Self {
            redis: redis.clone(),
            stops,
            end_orphan: redis::Script::new(END_ORPHAN),
        }
    }

    fn key(&self, subject: Uuid) -> String {
        self.redis.key(&format!("stream:{subject}"))
    }

    fn lease_key(&self, subject: Uuid) -> String {
        self.redis.key(&format!("lease:{subject}"))
    }

    /// Of `subjects`, those no instance holds a lease on.
    pub(super) async fn unleased(&self, subjects: &[Uuid]) -> Result<Vec<Uuid>, Unavailable> {
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for subject in subjects {
            pipe.cmd("EXISTS").arg(self.lease_key(*subject));
        }
        let leased: Vec<i64> = self
            .redis
            .run("check leases", |mut connection| async move {
                pipe.query_async(&mut connection).await
            })
            .await?;
        Ok(subjects
            .iter()
            .zip(leased)
            .filter(|(_, leased)| *leased == 0)
            .map(|(subject, _)| *subject)
            .collect())
    }

    /// Starts copying a stream's events into Redis, in order, on a task of its own so the
    /// stream never waits for Redis. A copy Redis refuses is dropped (and logged): followers
    /// elsewhere then see the saved outcome instead.
    pub(super) fn copier(&self, subject: Uuid) -> mpsc::UnboundedSender<Copied> {
        let (sender, mut copies) = mpsc::unbounded_channel();
        let (redis, key) = (self.redis.clone(), self.key(subject));
        let lease_key = self.lease_key(subject);
        let retention_ms = u64::try_from(RETENTION.as_millis()).unwrap_or(u64::MAX);
        let lease_ms = u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX);
        tokio::spawn(async move {
            let mut renew = tokio::time::interval(RENEW);
            loop {
                let copy = tokio::select! {
                    copy = copies.recv() => copy,
                    _ = renew.tick() => {
                        let lease = redis::cmd("SET").arg(&lease_key).arg(1).arg("PX").arg(lease_ms).to_owned();
                        let _ = redis
                            .run("renew a lease", |mut connection| async move {
                                lease.query_async::<()>(&mut connection).await
                            })
                            .await;
                        continue;
                    }
                };
                // The stream dropped without an end (its task panicked): the lease lapses.
                let Some(copy) = copy else { break };
                let end = matches!(copy, Copied::End | Copied::Failed);
                let mut pipe = redis::pipe();
                let xadd = pipe
                    .cmd("XADD")
                    .arg(&key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(MAX_ENTRIES)
                    .arg("*");
                match &copy {
                    Copied::Event(position, json) => {
                        xadd.arg("id").arg(*position).arg("data").arg(json.get())
                    }
                    Copied::Failed => xadd.arg("failed").arg(1),
                    Copied::End => xadd.arg("end").arg(1),
                }
                .ignore();
                pipe.cmd("PEXPIRE").arg(&key).arg(retention_ms).ignore();
                if end {
                    pipe.cmd("DEL").arg(&lease_key).ignore();
                }
                let _ = redis
                    .run("copy a stream event", |mut connection| async move {
                        pipe.query_async::<()>(&mut connection).await
                    })
                    .await;
                if end {
                    break;
                }
            }
        });
        sender
    }

    /// Ends `subject`'s copy in Redis with `last` (a final event, numbered after the last one
    /// copied) when its instance died before ending it, so the followers elsewhere see that
    /// event and end. Nothing when there is no copy (expired, never made) or it has ended:
    /// atomic, so of two instances doing this at once one adds the event.
    pub(super) async fn end_orphan(
        &self,
        subject: Uuid,
        last: &RawValue,
    ) -> Result<(), Unavailable> {
        let key = self.key(subject);
        let retention_ms = u64::try_from(RETENTION.as_millis()).unwrap_or(u64::MAX);
        let script = &self.end_orphan;
        self.redis
            .run("end an orphaned stream", |mut connection| async move {
                script
                    .key(key)
                    .arg(last.get())
                    .arg(retention_ms)
                    .invoke_async::<i64>(&mut connection)
                    .await
                    .map(drop)
            })
            .await
    }

    /// Asks every instance to stop the stream producing `subject`.
    pub(super) async fn request_stop(&self, subject: Uuid) -> Result<(), Unavailable> {
        self.stops.publish(&subject.to_string()).await
    }

    /// The events of `subject` after position `after` as another instance copied them, then
    /// live ones until it ends; `None` when no instance copies it (never did, or it expired).
    pub(super) async fn follow(
        &self,
        subject: Uuid,
        after: usize,
    ) -> Result<Option<impl Stream<Item = Entry> + Send + 'static>, Unavailable> {
        let key = self.key(subject);
        let exists = self
            .redis
            .run("look up a stream", |mut connection| {
                let key = key.clone();
                async move {
                    redis::cmd("EXISTS")
                        .arg(key)
                        .query_async::<i64>(&mut connection)
                        .await
                }
            })
            .await?;
        if exists == 0 {
            return Ok(None);
        }
        // Blocking reads hold their connection: each follower has its own, never the shared one.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.redis.timeout()))
            .set_response_timeout(Some(BLOCK + self.redis.timeout()));
        let connection = tokio::time::timeout(
            self.redis.timeout(),
            self.redis
                .client()
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| Unavailable)?
        .map_err(|error| {
            tracing::warn!(%error, "could not open a Redis connection to follow a stream");
            Unavailable
        })?;
        let reader = Reader {
            connection,
            key,
            last_id: "0".to_owned(),
            after,
            pending: VecDeque::new(),
            ended: false,
        };
        Ok(Some(futures::stream::unfold(
            reader,
            |mut reader| async move {
                let entry = reader.next().await?;
                Some((entry, reader))
            },
        )))
    }
}

struct Reader {
    connection: MultiplexedConnection,
    key: String,
    /// The Redis id of the last entry read.
    last_id: String,
    /// Events at or before this position were seen by the follower already.
    after: usize,
    pending: VecDeque<Entry>,
    ended: bool,
}

impl Reader {
    async fn next(&mut self) -> Option<Entry> {
        loop {
            if let Some(entry) = self.pending.pop_front() {
                return Some(entry);
            }
            if self.ended {
                return None;
            }
            let block_ms = u64::try_from(BLOCK.as_millis()).unwrap_or(5000);
            let read: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(500)
                .arg("BLOCK")
                .arg(block_ms)
                .arg("STREAMS")
                .arg(&self.key)
                .arg(&self.last_id)
                .query_async(&mut self.connection)
                .await;
            match read {
                Ok(Some(reply)) => self.take(reply),
                Ok(None) => {
                    // Nothing new for a while: the stream may have expired with its producer gone.
                    let exists: redis::RedisResult<i64> = redis::cmd("EXISTS")
                        .arg(&self.key)
                        .query_async(&mut self.connection)
                        .await;
                    if !matches!(exists, Ok(n) if n > 0) {
                        self.ended = true;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "lost a followed stream in Redis");
                    self.ended = true;
                    self.pending.push_back(Err(Unavailable.into()));
                }
            }
        }
    }

    fn take(&mut self, reply: StreamReadReply) {
        for entry in reply.keys.into_iter().flat_map(|key| key.ids) {
            self.last_id.clone_from(&entry.id);
            if entry.map.contains_key("end") {
                self.ended = true;
                return;
            }
            if entry.map.contains_key("failed") {
                self.ended = true;
                self.pending.push_back(Err(RpcError::internal()));
                return;
            }
            let position = entry
                .get::<usize>("id")
                .filter(|position| *position > self.after);
            let data = entry
                .get::<String>("data")
                .and_then(|json| RawValue::from_string(json).ok());
            if let (Some(position), Some(data)) = (position, data) {
                self.pending
                    .push_back(Ok(Tracked::new(position.to_string(), Arc::from(data))));
            }
        }
    }
}
