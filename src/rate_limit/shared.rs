//! Attempt counts shared by every instance: one Lua script per attempt, so counting and
//! checking are one atomic step in Redis, and windows end on Redis' clock (the key's expiry),
//! never on an instance's.

use std::time::Duration;

use redis::Script;
use sha2::{Digest as _, Sha256};

use super::{Counted, RateLimitStore, Refusal, RetryAfter};
use crate::cluster::{Redis, Unavailable};

/// Like the in-memory store: a fixed window starts with a key's first attempt; a refused
/// attempt is not counted. Answers `{-1 when the attempt is counted, else the window's
/// remaining milliseconds; the value of KEYS[2] when given and set, else nil}`.
const HIT: &str = r"
local read = false
if KEYS[2] then
  read = redis.call('GET', KEYS[2])
end
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count >= tonumber(ARGV[1]) then
  local remaining = redis.call('PTTL', KEYS[1])
  if remaining < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    remaining = tonumber(ARGV[2])
  end
  return {remaining, read}
end
redis.call('INCR', KEYS[1])
if count == 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return {-1, read}
";

pub struct RedisRateLimits {
    redis: Redis,
    script: Script,
}

impl RedisRateLimits {
    pub fn new(redis: Redis) -> Self {
        Self {
            redis,
            script: Script::new(HIT),
        }
    }

    /// Runs the script: whether the attempt was counted, and the value of `read` if asked.
    async fn count(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        read: Option<&str>,
    ) -> Result<Counted, Unavailable> {
        // Keys hold client addresses and emails: Redis sees only their digest.
        let digest: String = Sha256::digest(key.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let mut invocation = self.script.key(self.redis.key(&format!("limit:{digest}")));
        if let Some(read) = read {
            invocation.key(self.redis.key(read));
        }
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        invocation.arg(limit).arg(window_ms);
        let invocation = &invocation;
        let (remaining_ms, read): (i64, Option<String>) = self
            .redis
            .run("count an attempt", |mut connection| async move {
                invocation.invoke_async(&mut connection).await
            })
            .await?;
        Ok(Counted {
            allowed: allowed(remaining_ms),
            read,
        })
    }
}

/// The script's first answer: counted (-1), or refused for that many more milliseconds.
fn allowed(remaining_ms: i64) -> Result<(), RetryAfter> {
    if remaining_ms < 0 {
        return Ok(());
    }
    let seconds = u64::try_from(remaining_ms)
        .unwrap_or(0)
        .div_ceil(1000)
        .max(1);
    Err(RetryAfter(u32::try_from(seconds).unwrap_or(u32::MAX)))
}

#[async_trait::async_trait]
impl RateLimitStore for RedisRateLimits {
    async fn hit(&self, key: &str, limit: u32, window: Duration) -> Result<(), Refusal> {
        let counted = self
            .count(key, limit, window, None)
            .await
            .map_err(|_| Refusal::Unavailable)?;
        counted.allowed.map_err(Refusal::Limited)
    }

    async fn hit_and_read(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        read: &str,
    ) -> Result<Counted, Unavailable> {
        self.count(key, limit, window, Some(read)).await
    }
}
