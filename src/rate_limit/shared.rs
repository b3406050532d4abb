//! Attempt counts shared by every instance: one Lua script per attempt, so counting and
//! checking are one atomic step in Redis, and windows end on Redis' clock (the key's expiry),
//! never on an instance's.

use std::time::Duration;

use redis::Script;
use sha2::{Digest as _, Sha256};

use super::{RateLimitStore, Refusal, RetryAfter};
use crate::cluster::Redis;

/// Like the in-memory store: a fixed window starts with a key's first attempt; a refused
/// attempt is not counted. Answers -1 when the attempt is counted, else the window's
/// remaining milliseconds.
const HIT: &str = r"
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count >= tonumber(ARGV[1]) then
  local remaining = redis.call('PTTL', KEYS[1])
  if remaining < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    remaining = tonumber(ARGV[2])
  end
  return remaining
end
redis.call('INCR', KEYS[1])
if count == 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return -1
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
}

#[async_trait::async_trait]
impl RateLimitStore for RedisRateLimits {
    async fn hit(&self, key: &str, limit: u32, window: Duration) -> Result<(), Refusal> {
        // Keys hold client addresses and emails: Redis sees only their digest.
        let digest: String = Sha256::digest(key.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let key = self.redis.key(&format!("limit:{digest}"));
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let script = &self.script;
        let remaining_ms: i64 = self
            .redis
            .run("count an attempt", |mut connection| async move {
                script
                    .key(key)
                    .arg(limit)
                    .arg(window_ms)
                    .invoke_async(&mut connection)
                    .await
            })
            .await
            .map_err(|_| Refusal::Unavailable)?;
        if remaining_ms < 0 {
            return Ok(());
        }
        let seconds = u64::try_from(remaining_ms)
            .unwrap_or(0)
            .div_ceil(1000)
            .max(1);
        Err(Refusal::Limited(RetryAfter(
            u32::try_from(seconds).unwrap_or(u32::MAX),
        )))
    }
}
