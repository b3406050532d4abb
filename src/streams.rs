//! Server-owned event streams: a task (a chat reply) runs to the end whether or not a
//! connection is watching, keeps its events, and any number of subscribers replay what
//! they missed and follow it live. Keyed by (scope, idempotency key), which makes starting
//! one idempotent. Events are kept as serialized JSON, so nothing here knows what they are.
//!
//! With Redis (`ALIAS_REDIS_URL`), a stream whose subject is known is also copied into Redis,
//! so another instance can follow it ([`Streams::follow_elsewhere`]) and stop it
//! ([`Streams::stop_elsewhere`]); see `shared.rs`.

mod shared;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::Stream;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use self::shared::{Copied, Shared};
use crate::cluster::Redis;
use crate::rpc::{RpcError, Serialized, Tracked};

/// How long a finished stream stays in memory for clients that reconnect late; after that,
/// its owner replays what it saved.
const RETENTION: Duration = Duration::from_secs(10 * 60);

/// (scope, idempotency key): a chat session and the client's message id.
type Key = (Uuid, Uuid);

type Entry = Result<Tracked<Arc<RawValue>>, RpcError>;

pub struct LiveStream {
    /// Who may follow and stop it.
    pub owner: Uuid,
    /// What the stream produces, once known (a reply's message id, for stopping it).
    subject: Mutex<Option<Uuid>>,
    log: Mutex<Vec<Entry>>,
    /// How many log entries exist; subscribers wait for it to change.
    length: watch::Sender<usize>,
    finished: AtomicBool,
    finished_at: Mutex<Option<Instant>>,
    /// What the stream is about was deleted: it ended at once, its task must write nothing.
    revoked: AtomicBool,
    /// Cancelled by a stop request or shutdown (the task ends early and saves what it has)
    /// or by revocation (it ends without saving).
    pub stop: CancellationToken,
    shared: Option<Arc<Shared>>,
    /// Copies events into Redis once the subject is known (with Redis).
    copier: Mutex<Option<mpsc::UnboundedSender<Copied>>>,
}

impl LiveStream {
    fn new(owner: Uuid, stop: CancellationToken, shared: Option<Arc<Shared>>) -> Self {
        Self {
            owner,
            subject: Mutex::new(None),
            log: Mutex::new(Vec::new()),
            length: watch::Sender::new(0),
            finished: AtomicBool::new(false),
            finished_at: Mutex::new(None),
            revoked: AtomicBool::new(false),
            stop,
            shared,
            copier: Mutex::new(None),
        }
    }

    /// Names what the stream produces; with Redis, its events (those so far, then every
    /// later one) are copied there from now on, for other instances.
    pub fn set_subject(&self, id: Uuid) {
        *self.subject.lock().unwrap_or_else(PoisonError::into_inner) = Some(id);
        let Some(shared) = &self.shared else {
            return;
        };
        // Under the log's lock, so copies keep the log's order.
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let copier = shared.copier(id);
        for entry in log.iter() {
            let _ = copier.send(Self::copy_of(entry));
        }
        *self.copier.lock().unwrap_or_else(PoisonError::into_inner) = Some(copier);
    }

    fn copy_of(entry: &Entry) -> Copied {
        match entry {
            Ok(event) => match event.id.parse() {
                Ok(position) => Copied::Event(position, Arc::clone(&event.data)),
                Err(_) => Copied::Failed,
            },
            Err(_) => Copied::Failed,
        }
    }

    fn copy(&self, copy: impl FnOnce() -> Copied) {
        if let Some(copier) = &*self.copier.lock().unwrap_or_else(PoisonError::into_inner) {
            let _ = copier.send(copy());
        }
    }

    fn subject(&self) -> Option<Uuid> {
        *self.subject.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends an event; its id is its 1-based position.
    pub fn push<T: Serialize>(&self, event: &T) {
        match serde_json::to_string(event).and_then(RawValue::from_string) {
            Ok(json) => self.append(|position| Ok(Tracked::new(position.to_string(), json.into()))),
            Err(error) => {
                tracing::error!(%error, "a stream event failed to serialize");
                self.fail(RpcError::internal());
            }
        }
    }

    /// Ends the stream with an error (the subscription's last word).
    pub fn fail(&self, error: RpcError) {
        self.append(|_| Err(error));
        self.finish();
    }

    pub fn finish(&self) {
        *self
            .finished_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        self.finished.store(true, Ordering::SeqCst);
        self.copy(|| Copied::End);
        // Wake subscribers so they see the end.
        self.length.send_modify(|_| {});
    }

    /// Ends the stream now (subscribers see a normal end) and stops its task, which must
    /// then write nothing: what it worked for was deleted. Later events are dropped.
    fn revoke(&self) {
        self.revoked.store(true, Ordering::SeqCst);
        self.stop.cancel();
        self.finish();
    }

    /// Whether the stream was revoked: its task must end without writing anything.
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::SeqCst)
    }

    fn append(&self, entry: impl FnOnce(usize) -> Entry) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        // Under the log's lock, so no event slips in after a revocation's end.
        if self.is_revoked() {
            return;
        }
        let position = log.len() + 1;
        let entry = entry(position);
        self.copy(|| Self::copy_of(&entry));
        log.push(entry);
        self.length.send_replace(log.len());
    }

    fn is_finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    fn is_stale(&self) -> bool {
        self.is_finished()
            && self
                .finished_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some_and(|at| at.elapsed() > RETENTION)
    }

    /// The events after `last_event_id` (all of them without one), then live ones until the
    /// stream ends, typed as the `T` its producer pushed. Dropping it leaves the task running.
    pub fn subscribe<T>(
        self: Arc<Self>,
        last_event_id: Option<&str>,
    ) -> impl Stream<Item = Result<Tracked<Serialized<T>>, RpcError>> + Send + 'static {
        let start = last_event_id
            .and_then(|id| id.parse::<usize>().ok())
            .unwrap_or(0);
        let receiver = self.length.subscribe();
        futures::stream::unfold(
            (self, start, receiver),
            |(stream, next, mut receiver)| async move {
                loop {
                    let entry = {
                        let log = stream.log.lock().unwrap_or_else(PoisonError::into_inner);
                        log.get(next).cloned()
                    };
                    if let Some(entry) = entry {
                        let typed = entry
                            .map(|event| Tracked::new(event.id, Serialized::assume(event.data)));
                        return Some((typed, (stream, next + 1, receiver)));
                    }
                    if stream.is_finished() {
                        return None;
                    }
                    // Err: the stream is gone; the loop then sees it finished or ends.
                    if receiver.changed().await.is_err() {
                        return None;
                    }
                }
            },
        )
    }
}

type ByKey = Arc<Mutex<HashMap<Key, Arc<LiveStream>>>>;

/// The registry of running and recently finished streams.
pub struct Streams {
    by_key: ByKey,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// With Redis: copies for, and stop requests from, the other instances.
    shared: Option<Arc<Shared>>,
}

pub enum Reservation {
    /// A new stream: the caller starts its task.
    New(Arc<LiveStream>),
    /// The same key was used before: follow that stream.
    Existing(Arc<LiveStream>),
}

impl Streams {
    /// `shutdown` is the server's: when it fires, running streams stop and save. With
    /// `redis`, other instances can follow and stop the streams this one runs.
    pub fn new(shutdown: CancellationToken, redis: Option<&Redis>) -> Self {
        let by_key = ByKey::default();
        let shared = redis.map(|redis| {
            let by_key = Arc::clone(&by_key);
            Arc::new(Shared::new(redis, &shutdown, move |subject| {
                let by_key = by_key.lock().unwrap_or_else(PoisonError::into_inner);
                for stream in by_key.values() {
                    if stream.subject() == Some(subject) && !stream.is_finished() {
                        stream.stop.cancel();
                    }
                }
            }))
        });
        Self {
            by_key,
            tasks: TaskTracker::new(),
            shutdown,
            shared,
        }
    }

    /// The stream for this key, created if there is none; atomic, so two concurrent starts
    /// with one key never run two tasks.
    pub fn reserve(&self, scope: Uuid, key: Uuid, owner: Uuid) -> Reservation {
        let mut by_key = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        by_key.retain(|_, stream| !stream.is_stale());
        if let Some(existing) = by_key.get(&(scope, key)) {
            return Reservation::Existing(Arc::clone(existing));
        }
        let stream = Arc::new(LiveStream::new(
            owner,
            self.shutdown.child_token(),
            self.shared.clone(),
        ));
        by_key.insert((scope, key), Arc::clone(&stream));
        Reservation::New(stream)
    }

    /// Forgets a stream that failed before it stored anything, so a retry starts afresh.
    pub fn release(&self, scope: Uuid, key: Uuid) {
        self.by_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(scope, key));
    }

    /// Revokes every stream of `scope` (a deleted chat session).
    pub fn revoke_scope(&self, scope: Uuid) {
        self.revoke_where(|(stream_scope, _), _| *stream_scope == scope);
    }

    /// Revokes every stream `owner` started (a deleted account).
    pub fn revoke_owner(&self, owner: Uuid) {
        self.revoke_where(|_, stream| stream.owner == owner);
    }

    /// Ends and forgets the matching streams: their subscribers see them end normally, their
    /// tasks stop at once (dropping any provider request) and write nothing more, and
    /// following them afterwards finds nothing in memory.
    fn revoke_where(&self, doomed: impl Fn(&Key, &LiveStream) -> bool) {
        let mut by_key = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        by_key.retain(|key, stream| {
            if doomed(key, stream) {
                stream.revoke();
                false
            } else {
                true
            }
        });
    }

    /// The running stream producing `subject` for `owner`.
    pub fn running(&self, owner: Uuid, subject: Uuid) -> Option<Arc<LiveStream>> {
        self.producing(owner, subject).filter(|s| !s.is_finished())
    }

    /// The stream producing `subject` for `owner`, running or finished and still retained.
    pub fn producing(&self, owner: Uuid, subject: Uuid) -> Option<Arc<LiveStream>> {
        let by_key = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        by_key
            .values()
            .find(|s| s.owner == owner && s.subject() == Some(subject) && !s.is_stale())
            .cloned()
    }

    /// Another instance's stream producing `subject`, followed through Redis: its events after
    /// `last_event_id`, then live ones until it ends. `None` without Redis or when no
    /// instance produces it now (or did within the retention); the caller checked that the
    /// caller may follow `subject`.
    #[allow(clippy::type_complexity)]
    pub async fn follow_elsewhere<T>(
        &self,
        subject: Uuid,
        last_event_id: Option<&str>,
    ) -> Result<
        Option<impl Stream<Item = Result<Tracked<Serialized<T>>, RpcError>> + Send + 'static>,
        RpcError,
    > {
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        let after = last_event_id
            .and_then(|id| id.parse::<usize>().ok())
            .unwrap_or(0);
        let Some(entries) = shared.follow(subject, after).await? else {
            return Ok(None);
        };
        Ok(Some(futures::StreamExt::map(entries, |entry| {
            entry.map(|event| Tracked::new(event.id, Serialized::assume(event.data)))
        })))
    }

    /// Asks the other instances to stop the stream producing `subject` (the caller checked
    /// that the caller may). `false` without Redis: there are no other instances to ask.
    pub async fn stop_elsewhere(&self, subject: Uuid) -> Result<bool, RpcError> {
        match &self.shared {
            None => Ok(false),
            Some(shared) => shared
                .request_stop(subject)
                .await
                .map(|()| true)
                .map_err(Into::into),
        }
    }

    /// Whether other instances share the streams (Redis).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Of `subjects`, those no instance runs now: its lease lapsed, so the instance running
    /// it died. Empty without Redis (this instance alone knows what it runs).
    pub async fn orphaned(&self, subjects: &[Uuid]) -> Result<Vec<Uuid>, RpcError> {
        match &self.shared {
            None => Ok(Vec::new()),
            Some(shared) => Ok(shared.unleased(subjects).await?),
        }
    }

    /// Ends the copy in Redis of an orphaned stream (see `orphaned`) with `last`, so that
    /// its followers on other instances end too, having seen it.
    pub async fn end_orphan<T: Serialize>(&self, subject: Uuid, last: &T) -> Result<(), RpcError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let json = serde_json::to_string(last)
            .and_then(RawValue::from_string)
            .map_err(|error| {
                tracing::error!(%error, "a stream event failed to serialize");
                RpcError::internal()
            })?;
        Ok(shared.end_orphan(subject, &json).await?)
    }

    /// How long a running stream's lease lasts unless renewed.
    pub const LEASE: Duration = shared::LEASE;

    /// Runs a stream's task, tracked so shutdown can wait for it.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// After the server's shutdown fired (which stops every running stream), waits for
    /// their tasks to save what they have, at most `grace`.
    pub async fn wait_for_saves(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("stream tasks still saving when the shutdown grace ended");
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn subscribers_replay_then_follow_live() {
        let streams = Streams::new(CancellationToken::new(), None);
        let (scope, key, owner) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let Reservation::New(stream) = streams.reserve(scope, key, owner) else {
            panic!("first reservation is new");
        };
        assert!(matches!(
            streams.reserve(scope, key, owner),
            Reservation::Existing(_)
        ));
        stream.push(&"a");
        stream.push(&"b");
        let late = Arc::clone(&stream).subscribe::<String>(Some("1"));
        let producer = Arc::clone(&stream);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            producer.push(&"c");
            producer.finish();
        });
        let events: Vec<(String, String)> = late
            .filter_map(|e| async move {
                e.ok()
                    .map(|t| (t.id, serde_json::to_string(&t.data).unwrap_or_default()))
            })
            .collect()
            .await;
        assert_eq!(
            events,
            [
                ("2".to_owned(), r#""b""#.to_owned()),
                ("3".to_owned(), r#""c""#.to_owned())
            ]
        );
    }

    #[tokio::test]
    async fn revoking_ends_streams_by_scope_or_owner_and_forgets_them() {
        let streams = Streams::new(CancellationToken::new(), None);
        let (scope, other_scope, owner) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let reserve = |scope, owner| match streams.reserve(scope, Uuid::now_v7(), owner) {
            Reservation::New(stream) => stream,
            Reservation::Existing(_) => panic!("a new key"),
        };
        let (in_scope, elsewhere, other_owner) = (
            reserve(scope, owner),
            reserve(other_scope, owner),
            reserve(other_scope, Uuid::now_v7()),
        );
        in_scope.push(&"a");
        let followed = Arc::clone(&in_scope).subscribe::<String>(None);
        streams.revoke_scope(scope);
        assert!(in_scope.is_revoked() && in_scope.stop.is_cancelled());
        in_scope.push(&"late");
        assert_eq!(
            followed.count().await,
            1,
            "ended, nothing after the revocation"
        );
        assert!(!elsewhere.is_revoked() && !other_owner.is_revoked());
        streams.revoke_owner(owner);
        assert!(elsewhere.is_revoked() && !other_owner.is_revoked());
        assert_eq!(
            streams.by_key.lock().map(|by_key| by_key.len()).ok(),
            Some(1)
        );
    }
}
