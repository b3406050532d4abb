//! A small bounded in-memory cache whose entries expire, safe to fill from a slower source
//! while other tasks invalidate it.
//!
//! Filling races invalidation: a task may read a row, another task change the row and
//! invalidate, and the first task then store what it read. So every invalidation bumps a
//! generation, a filler notes the generation before it reads ([`Cache::generation`]), and
//! [`Cache::insert`] drops the value if anything was invalidated in between.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// When a filler started reading; see the module comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation(u64);

pub struct Cache<K, V> {
    capacity: usize,
    inner: Mutex<Inner<K, V>>,
}

struct Inner<K, V> {
    entries: HashMap<K, (V, Instant)>,
    generation: u64,
}

impl<K: Eq + Hash, V: Clone> Cache<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                generation: 0,
            }),
        }
    }

    /// A copy of the entry, unless it is missing or expired.
    pub fn get(&self, key: &K) -> Option<V> {
        let inner = self.lock();
        let (value, expires_at) = inner.entries.get(key)?;
        (*expires_at > Instant::now()).then(|| value.clone())
    }

    pub fn generation(&self) -> Generation {
        Generation(self.lock().generation)
    }

    /// Stores `value` until `expires_at`, unless the cache was invalidated since `read_at`.
    pub fn insert(&self, key: K, value: V, expires_at: Instant, read_at: Generation) {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.generation != read_at.0 || expires_at <= now {
            return;
        }
        if inner.entries.len() >= self.capacity && !inner.entries.contains_key(&key) {
            inner.entries.retain(|_, (_, at)| *at > now);
            if inner.entries.len() >= self.capacity {
                // Full of live entries: start over. A cache miss costs a lookup, never
                // correctness, and clearing keeps this O(1) amortized.
                inner.entries.clear();
            }
        }
        inner.entries.insert(key, (value, expires_at));
    }

    /// Drops every entry `matches` selects.
    pub fn invalidate(&self, matches: impl Fn(&K, &V) -> bool) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.retain(|key, (value, _)| !matches(key, value));
    }

    fn lock(&self) -> MutexGuard<'_, Inner<K, V>> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters: every operation is a single HashMap call.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn returns_live_entries_only() {
        let cache = Cache::new(10);
        cache.insert(1, "live", later(), cache.generation());
        cache.insert(2, "expired", Instant::now(), cache.generation());
        assert_eq!(cache.get(&1), Some("live"));
        assert_eq!(cache.get(&2), None);
    }

    #[test]
    fn a_fill_that_raced_an_invalidation_is_dropped() {
        let cache = Cache::new(10);
        let read_at = cache.generation();
        cache.invalidate(|key, _| *key == 1);
        cache.insert(1, "stale", later(), read_at);
        assert_eq!(cache.get(&1), None);
        cache.insert(1, "fresh", later(), cache.generation());
        assert_eq!(cache.get(&1), Some("fresh"));
    }

    #[test]
    fn invalidate_drops_matching_entries() {
        let cache = Cache::new(10);
        for key in 0..4 {
            cache.insert(key, key % 2, later(), cache.generation());
        }
        cache.invalidate(|_, parity| *parity == 1);
        assert_eq!(cache.get(&0), Some(0));
        assert_eq!(cache.get(&1), None);
        assert_eq!(cache.get(&2), Some(0));
        assert_eq!(cache.get(&3), None);
    }

    #[test]
    fn stays_within_capacity() {
        let cache = Cache::new(3);
        for key in 0..10 {
            cache.insert(key, key, later(), cache.generation());
            assert!(cache.lock().entries.len() <= 3);
        }
        assert_eq!(cache.get(&9), Some(9));
    }
}
