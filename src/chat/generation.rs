//! Replies as server-owned tasks: a generation runs to the end whether or not a connection
//! is watching, keeps its events, and any number of subscribers replay what they missed
//! and follow it live. Keyed by (session, client message id), which makes `chat.send`
//! idempotent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::types::ChatEvent;
use crate::rpc::{RpcError, Tracked};

/// How long a finished generation stays in memory for clients that reconnect late; after
/// that, a resend replays the saved reply from the database.
const RETENTION: Duration = Duration::from_secs(10 * 60);

type Key = (Uuid, Uuid);

pub struct Generation {
    pub user_id: Uuid,
    /// The reply being written, once known (for `chat.stop`).
    assistant_message_id: Mutex<Option<Uuid>>,
    log: Mutex<Vec<Result<Tracked<ChatEvent>, RpcError>>>,
    /// How many log entries exist; subscribers wait for it to change.
    length: watch::Sender<usize>,
    finished: AtomicBool,
    finished_at: Mutex<Option<Instant>>,
    /// Cancelled by `chat.stop` or shutdown: the reply keeps its text, status "stopped".
    pub stop: CancellationToken,
}

impl Generation {
    fn new(user_id: Uuid, stop: CancellationToken) -> Self {
        Self {
            user_id,
            assistant_message_id: Mutex::new(None),
            log: Mutex::new(Vec::new()),
            length: watch::Sender::new(0),
            finished: AtomicBool::new(false),
            finished_at: Mutex::new(None),
            stop,
        }
    }

    pub fn set_assistant_message(&self, id: Uuid) {
        *self
            .assistant_message_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(id);
    }

    fn assistant_message(&self) -> Option<Uuid> {
        *self
            .assistant_message_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends an event; its id is its 1-based position.
    pub fn push(&self, event: ChatEvent) {
        self.append(|position| Ok(Tracked::new(position.to_string(), event)));
    }

    /// Ends the generation with an error (the subscription's last word).
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
        // Wake subscribers so they see the end.
        self.length.send_modify(|_| {});
    }

    fn append(&self, entry: impl FnOnce(usize) -> Result<Tracked<ChatEvent>, RpcError>) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let position = log.len() + 1;
        log.push(entry(position));
        self.length.send_replace(log.len());
    }

    fn is_stale(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
            && self
                .finished_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some_and(|at| at.elapsed() > RETENTION)
    }

    /// The events after `last_event_id` (all of them without one), then live ones until the
    /// generation ends. Dropping the stream leaves the generation running.
    pub fn subscribe(
        self: Arc<Self>,
        last_event_id: Option<&str>,
    ) -> impl Stream<Item = Result<Tracked<ChatEvent>, RpcError>> + Send + 'static {
        let start = last_event_id
            .and_then(|id| id.parse::<usize>().ok())
            .unwrap_or(0);
        let receiver = self.length.subscribe();
        futures::stream::unfold(
            (self, start, receiver),
            |(generation, next, mut receiver)| async move {
                loop {
                    let entry = {
                        let log = generation
                            .log
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        log.get(next).cloned()
                    };
                    if let Some(entry) = entry {
                        return Some((entry, (generation, next + 1, receiver)));
                    }
                    if generation.finished.load(Ordering::SeqCst) {
                        return None;
                    }
                    // Err: the generation is gone; the loop then sees it finished or ends.
                    if receiver.changed().await.is_err() {
                        return None;
                    }
                }
            },
        )
    }
}

/// The registry of running and recently finished generations.
pub struct Generations {
    by_key: Mutex<HashMap<Key, Arc<Generation>>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Generations {
    /// `shutdown` is the server's: when it fires, running replies stop and save.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            by_key: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            shutdown,
        }
    }
}

pub enum Reservation {
    /// A new generation: the caller starts it.
    New(Arc<Generation>),
    /// The same message was sent before: follow that generation.
    Existing(Arc<Generation>),
}

impl Generations {
    /// The generation for this message, created if there is none; atomic, so two
    /// concurrent sends of one message never start two replies.
    pub fn reserve(&self, session_id: Uuid, client_message_id: Uuid, user_id: Uuid) -> Reservation {
        let mut by_key = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        by_key.retain(|_, generation| !generation.is_stale());
        if let Some(existing) = by_key.get(&(session_id, client_message_id)) {
            return Reservation::Existing(Arc::clone(existing));
        }
        let generation = Arc::new(Generation::new(user_id, self.shutdown.child_token()));
        by_key.insert((session_id, client_message_id), Arc::clone(&generation));
        Reservation::New(generation)
    }

    /// Forgets a generation that failed before it stored anything, so a retry starts afresh.
    pub fn release(&self, session_id: Uuid, client_message_id: Uuid) {
        self.by_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(session_id, client_message_id));
    }

    /// The running generation writing `message_id` for `user_id`.
    pub fn running(&self, user_id: Uuid, message_id: Uuid) -> Option<Arc<Generation>> {
        let by_key = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        by_key
            .values()
            .find(|g| g.user_id == user_id && g.assistant_message() == Some(message_id))
            .filter(|g| !g.finished.load(Ordering::SeqCst))
            .cloned()
    }

    /// Runs a generation's task, tracked so shutdown can wait for it.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// After the server's shutdown fired (which stops every running generation), waits for
    /// their replies to be saved as "stopped", at most `grace`.
    pub async fn wait_for_saves(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("chat replies still saving when the shutdown grace ended");
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn delta(text: &str) -> ChatEvent {
        ChatEvent::Delta {
            text: text.to_owned(),
        }
    }

    #[tokio::test]
    async fn subscribers_replay_then_follow_live() {
        let generations = Generations::new(CancellationToken::new());
        let (session, message, user) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let Reservation::New(generation) = generations.reserve(session, message, user) else {
            panic!("first reservation is new");
        };
        assert!(matches!(
            generations.reserve(session, message, user),
            Reservation::Existing(_)
        ));
        generation.push(delta("a"));
        generation.push(delta("b"));
        let late = Arc::clone(&generation).subscribe(Some("1"));
        let producer = Arc::clone(&generation);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            producer.push(delta("c"));
            producer.finish();
        });
        let ids: Vec<String> = late
            .filter_map(|e| async move { e.ok().map(|t| t.id) })
            .collect()
            .await;
        assert_eq!(ids, ["2", "3"]);
    }
}
