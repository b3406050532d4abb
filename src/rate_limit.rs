//! Counting attempts per key in fixed windows. In memory for one instance; with
//! `ALIAS_REDIS_URL`, every instance counts in Redis behind the same trait
//! ([`RedisRateLimits`]).

mod shared;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use shared::RedisRateLimits;

use crate::cluster::Unavailable;
use crate::rpc::RpcError;

/// Over the limit: the caller may try again after this many seconds (at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub u32);

/// Why an attempt was not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the limit.
    Limited(RetryAfter),
    /// The shared store (Redis) cannot be reached, so the attempt cannot be counted: the call
    /// is refused rather than let through unlimited.
    Unavailable,
}

impl Refusal {
    /// The error to answer: `limited` builds the call's own TOO_MANY_REQUESTS; an unavailable
    /// store is SERVICE_UNAVAILABLE (`shared_state_unavailable`).
    pub fn into_error(self, limited: impl FnOnce(RetryAfter) -> RpcError) -> RpcError {
        match self {
            Self::Limited(retry) => limited(retry),
            Self::Unavailable => Unavailable.into(),
        }
    }
}

/// An attempt counted by [`RateLimitStore::hit_and_read`], and the key read with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    /// `Err` when over the limit (the attempt was not counted).
    pub allowed: Result<(), RetryAfter>,
    /// The value of the read key, `None` when it has none (always without a shared store:
    /// nothing else writes there).
    pub read: Option<String>,
}

#[async_trait::async_trait]
pub trait RateLimitStore: Send + Sync {
    /// Counts one attempt for `key`; refuses it when `limit` attempts were already counted in
    /// the current `window`.
    async fn hit(&self, key: &str, limit: u32, window: Duration) -> Result<(), Refusal>;

    /// [`Self::hit`], also reading the key `read` (a name under the deployment's key prefix,
    /// `cluster::Redis::key`) in the same step: one round trip for both. `Err` only when the
    /// shared store cannot be reached (nothing counted, nothing read).
    async fn hit_and_read(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        read: &str,
    ) -> Result<Counted, Unavailable>;
}

impl dyn RateLimitStore {
    /// Counts one attempt of `subject` (a user id, an address) against the limit `name`,
    /// keyed `name:subject`. A refusal is counted in the metrics under `name`, a name from
    /// the code, never input.
    pub async fn check(
        &self,
        name: &'static str,
        subject: impl std::fmt::Display,
        limit: u32,
        window: Duration,
    ) -> Result<(), Refusal> {
        let result = self.hit(&format!("{name}:{subject}"), limit, window).await;
        if let Err(Refusal::Limited(_)) = result {
            count_refusal(name);
        }
        result
    }

    /// [`Self::check`] through [`RateLimitStore::hit_and_read`].
    pub async fn check_and_read(
        &self,
        name: &'static str,
        subject: impl std::fmt::Display,
        limit: u32,
        window: Duration,
        read: &str,
    ) -> Result<Counted, Unavailable> {
        let key = format!("{name}:{subject}");
        let counted = self.hit_and_read(&key, limit, window, read).await;
        if let Ok(Counted {
            allowed: Err(_), ..
        }) = counted
        {
            count_refusal(name);
        }
        counted
    }
}

fn count_refusal(name: &'static str) {
    metrics::counter!("alias_rate_limit_refusals_total", "limit" => name).increment(1);
}

pub fn describe_metrics() {
    metrics::describe_counter!(
        "alias_rate_limit_refusals_total",
        "Attempts refused for going over a limit, by limit (ip: ALIAS_AUTH_IP_LIMIT_PER_MINUTE, user_calls, chat_sends, chat_search, api_key_checks, ...)."
    );
}

/// Keys beyond which expired windows are swept before a new key is added, so a flood of
/// distinct keys cannot grow memory without bound.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Default)]
pub struct InMemoryRateLimits {
    windows: Mutex<HashMap<String, Window>>,
}

struct Window {
    started: Instant,
    length: Duration,
    count: u32,
}

impl Window {
    fn is_over(&self, now: Instant) -> bool {
        now.duration_since(self.started) >= self.length
    }

    fn retry_after(&self, now: Instant) -> RetryAfter {
        let remaining = self.length.saturating_sub(now.duration_since(self.started));
        RetryAfter(
            u32::try_from(remaining.as_secs())
                .unwrap_or(u32::MAX)
                .saturating_add(1),
        )
    }
}

impl InMemoryRateLimits {
    fn with_window<T>(
        &self,
        key: &str,
        window: Duration,
        f: impl FnOnce(&mut Window, Instant) -> T,
    ) -> T {
        let now = Instant::now();
        // A poisoned lock only means another request panicked mid-update; the counts are
        // still usable.
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if windows.len() >= SWEEP_ABOVE && !windows.contains_key(key) {
            windows.retain(|_, w| !w.is_over(now));
        }
        let entry = windows.entry(key.to_owned()).or_insert(Window {
            started: now,
            length: window,
            count: 0,
        });
        if entry.is_over(now) {
            *entry = Window {
                started: now,
                length: window,
                count: 0,
            };
        }
        f(entry, now)
    }

    fn count(&self, key: &str, limit: u32, window: Duration) -> Result<(), RetryAfter> {
        self.with_window(key, window, |w, now| {
            if w.count >= limit {
                return Err(w.retry_after(now));
            }
            w.count += 1;
            Ok(())
        })
    }
}

#[async_trait::async_trait]
impl RateLimitStore for InMemoryRateLimits {
    async fn hit(&self, key: &str, limit: u32, window: Duration) -> Result<(), Refusal> {
        self.count(key, limit, window).map_err(Refusal::Limited)
    }

    async fn hit_and_read(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        _read: &str,
    ) -> Result<Counted, Unavailable> {
        Ok(Counted {
            allowed: self.count(key, limit, window),
            read: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_past_the_limit_until_the_window_ends() {
        let limits = InMemoryRateLimits::default();
        let window = Duration::from_millis(200);
        for _ in 0..3 {
            assert!(limits.hit("k", 3, window).await.is_ok());
        }
        let refused = limits.hit("k", 3, window).await;
        assert_eq!(refused, Err(Refusal::Limited(RetryAfter(1))));
        assert!(limits.hit("other", 3, window).await.is_ok());
        tokio::time::sleep(window).await;
        assert!(limits.hit("k", 3, window).await.is_ok());
    }
}
