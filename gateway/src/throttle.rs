//! Login throttling: after too many failed logins for one username, or from one client IP,
//! within `[login] failure_window`, further attempts are refused (429 with `Retry-After`)
//! before any password is checked, until the window has passed.
//!
//! Counters live in a [`FailureCounters`] store: Redis in production
//! (`{prefix}fail:user:{sha256(username)}`, `{prefix}fail:ip:{ip}`), so every instance enforces
//! the same limits; memory in unit tests. Checking costs one `MGET`; a failure one pipelined
//! `INCR` + `EXPIRE NX` per counter; a success clears the username's counter (not the IP's, so
//! an attacker holding one valid account cannot reset their budget for guessing others).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::config::ThrottleSettings;
use crate::errors::StoreError;
use crate::redis_conn::SharedRedis;

/// Counters that expire a fixed window after their first increment.
#[async_trait]
pub trait FailureCounters: Send + Sync {
    /// The current count of each key (0 when absent).
    async fn counts(&self, keys: &[String]) -> Result<Vec<u32>, StoreError>;
    /// Adds one to each key; a key's window starts at its first increment.
    async fn increment(&self, keys: &[String], window: Duration) -> Result<(), StoreError>;
    async fn clear(&self, key: &str) -> Result<(), StoreError>;
}

pub struct RedisCounters {
    redis: Arc<SharedRedis>,
}

impl RedisCounters {
    pub fn new(redis: Arc<SharedRedis>) -> RedisCounters {
        RedisCounters { redis }
    }
}

#[async_trait]
impl FailureCounters for RedisCounters {
    async fn counts(&self, keys: &[String]) -> Result<Vec<u32>, StoreError> {
        let counts: Vec<Option<u32>> = self
            .redis
            .query(redis::cmd("MGET").arg(keys).clone())
            .await?;
        Ok(counts.into_iter().map(|c| c.unwrap_or(0)).collect())
    }

    async fn increment(&self, keys: &[String], window: Duration) -> Result<(), StoreError> {
        let window = window.as_secs().max(1);
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.incr(key, 1)
                .ignore()
                .cmd("EXPIRE")
                .arg(key)
                .arg(window)
                .arg("NX")
                .ignore();
        }
        self.redis.pipeline::<()>(pipe).await
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        let _: i64 = self.redis.query(redis::cmd("DEL").arg(key).clone()).await?;
        Ok(())
    }
}

/// key -> (count, window ends at ms)
type CountTable = HashMap<String, (u32, u64)>;

/// Counters in memory on a [`Clock`], for unit tests; can be switched off to play an outage.
pub struct MemoryCounters {
    clock: Arc<dyn Clock>,
    counts: Mutex<CountTable>,
    down: AtomicBool,
}

impl MemoryCounters {
    pub fn new(clock: Arc<dyn Clock>) -> MemoryCounters {
        MemoryCounters {
            clock,
            counts: Mutex::new(HashMap::new()),
            down: AtomicBool::new(false),
        }
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn live_counts(&self) -> Result<std::sync::MutexGuard<'_, CountTable>, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "memory counters switched off".into(),
            ));
        }
        let now = self.clock.now_ms();
        let mut counts = self
            .counts
            .lock()
            .map_err(|_| StoreError::Unavailable("memory counters poisoned".into()))?;
        counts.retain(|_, (_, ends)| now < *ends);
        Ok(counts)
    }
}

#[async_trait]
impl FailureCounters for MemoryCounters {
    async fn counts(&self, keys: &[String]) -> Result<Vec<u32>, StoreError> {
        let counts = self.live_counts()?;
        Ok(keys
            .iter()
            .map(|k| counts.get(k).map_or(0, |(n, _)| *n))
            .collect())
    }

    async fn increment(&self, keys: &[String], window: Duration) -> Result<(), StoreError> {
        let ends = self.clock.now_ms() + window.as_millis() as u64;
        let mut counts = self.live_counts()?;
        for key in keys {
            counts.entry(key.clone()).or_insert((0, ends)).0 += 1;
        }
        Ok(())
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        self.live_counts()?.remove(key);
        Ok(())
    }
}

pub struct LoginThrottle {
    counters: Arc<dyn FailureCounters>,
    prefix: String,
    settings: ThrottleSettings,
}

impl LoginThrottle {
    pub fn new(
        counters: Arc<dyn FailureCounters>,
        key_prefix: &str,
        settings: &ThrottleSettings,
    ) -> Self {
        LoginThrottle {
            counters,
            prefix: key_prefix.to_string(),
            settings: settings.clone(),
        }
    }

    /// The username's counter and its limit, unless that limit is off.
    fn user_counter(&self, username: &str) -> Option<(String, u32)> {
        let limit = self.settings.max_failures_per_user?;
        // Hashed: usernames are user input of any length and alphabet.
        let name = hex::encode(Sha256::digest(username.trim().to_lowercase().as_bytes()));
        Some((format!("{}fail:user:{name}", self.prefix), limit))
    }

    /// The counters that apply to an attempt, each with its limit.
    fn counters_for(&self, username: &str, ip: Option<IpAddr>) -> Vec<(String, u32)> {
        let by_ip = match (self.settings.max_failures_per_ip, ip) {
            (Some(limit), Some(ip)) => Some((format!("{}fail:ip:{ip}", self.prefix), limit)),
            _ => None,
        };
        self.user_counter(username)
            .into_iter()
            .chain(by_ip)
            .collect()
    }

    /// `Some(wait)` if this attempt must be refused without checking the password.
    pub async fn refusal(
        &self,
        username: &str,
        ip: Option<IpAddr>,
    ) -> Result<Option<Duration>, StoreError> {
        let counters = self.counters_for(username, ip);
        if counters.is_empty() {
            return Ok(None);
        }
        let keys: Vec<String> = counters.iter().map(|(k, _)| k.clone()).collect();
        let counts = self.counters.counts(&keys).await?;
        let exceeded = counts
            .iter()
            .zip(&counters)
            .any(|(count, (_, limit))| count >= limit);
        Ok(exceeded.then_some(self.settings.window))
    }

    pub async fn record_failure(
        &self,
        username: &str,
        ip: Option<IpAddr>,
    ) -> Result<(), StoreError> {
        let counters = self.counters_for(username, ip);
        if counters.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = counters.into_iter().map(|(k, _)| k).collect();
        self.counters.increment(&keys, self.settings.window).await
    }

    pub async fn record_success(&self, username: &str) -> Result<(), StoreError> {
        if let Some((key, _)) = self.user_counter(username) {
            self.counters.clear(&key).await?;
        }
        Ok(())
    }
}
