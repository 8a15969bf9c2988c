//! Login throttling: after too many failed logins for one username, or from one client IP,
//! within `[login] failure_window`, further attempts are refused (429 with `Retry-After`)
//! before any password is checked, until the window has passed.
//!
//! Counters live in a [`FailureCounters`] store: Redis in production
//! (`{prefix}fail:user:{sha256(username)}`, `{prefix}fail:ip:{ip}`), so every instance enforces
//! the same limits; memory in unit tests. Checking costs one `MGET` (split per node by the
//! cluster client in a Redis Cluster); a failure one pipelined `INCR` + `EXPIRE NX` per counter; a success clears the username's counter (not the IP's, so
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
    /// Takes one back from `key`, if it is still counting (never below zero, never creates it).
    async fn decrement(&self, key: &str) -> Result<(), StoreError>;
    /// How long until `key`'s window ends, if it is counting.
    async fn time_left(&self, key: &str) -> Result<Option<Duration>, StoreError>;
}

/// `DECR` only while the key exists: a counter whose window just ended must not come back as
/// a key without expiry.
const DECREMENT_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 and tonumber(redis.call('GET', KEYS[1])) > 0 then
  return redis.call('DECR', KEYS[1])
end
return 0
"#;

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
        // A pipeline per counter: in a Redis Cluster the username's and the IP's counters sit
        // in different slots, and a pipeline must stay within one.
        for key in keys {
            let mut pipe = redis::pipe();
            pipe.incr(key, 1)
                .ignore()
                .cmd("EXPIRE")
                .arg(key)
                .arg(window)
                .arg("NX")
                .ignore();
            self.redis.pipeline::<()>(pipe).await?;
        }
        Ok(())
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        let _: i64 = self.redis.query(redis::cmd("DEL").arg(key).clone()).await?;
        Ok(())
    }

    async fn time_left(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let ms: i64 = self
            .redis
            .query(redis::cmd("PTTL").arg(key).clone())
            .await?;
        Ok((ms > 0).then(|| Duration::from_millis(ms as u64)))
    }

    async fn decrement(&self, key: &str) -> Result<(), StoreError> {
        let mut eval = redis::cmd("EVAL");
        eval.arg(DECREMENT_SCRIPT).arg(1).arg(key);
        let _: i64 = self.redis.query(eval).await?;
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
    read_only: AtomicBool,
}

impl MemoryCounters {
    pub fn new(clock: Arc<dyn Clock>) -> MemoryCounters {
        MemoryCounters {
            clock,
            counts: Mutex::new(HashMap::new()),
            down: AtomicBool::new(false),
            read_only: AtomicBool::new(false),
        }
    }

    /// Plays a Redis that answers reads but refuses writes (a demoted primary, out of memory).
    pub fn set_read_only(&self, read_only: bool) {
        self.read_only.store(read_only, Ordering::SeqCst);
    }

    fn writable(&self) -> Result<(), StoreError> {
        if self.read_only.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("READONLY memory counters".into()));
        }
        Ok(())
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
        self.writable()?;
        let ends = self.clock.now_ms() + window.as_millis() as u64;
        let mut counts = self.live_counts()?;
        for key in keys {
            counts.entry(key.clone()).or_insert((0, ends)).0 += 1;
        }
        Ok(())
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        self.writable()?;
        self.live_counts()?.remove(key);
        Ok(())
    }

    async fn time_left(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let now = self.clock.now_ms();
        Ok(self
            .live_counts()?
            .get(key)
            .map(|(_, ends)| Duration::from_millis(ends.saturating_sub(now))))
    }

    async fn decrement(&self, key: &str) -> Result<(), StoreError> {
        self.writable()?;
        if let Some((n, _)) = self.live_counts()?.get_mut(key) {
            *n = n.saturating_sub(1);
        }
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

    /// The client address's counter and its limit, unless that limit is off or there is no
    /// address.
    fn ip_counter(&self, ip: Option<IpAddr>) -> Option<(String, u32)> {
        let limit = self.settings.max_failures_per_ip?;
        Some((format!("{}fail:ip:{}", self.prefix, ip?), limit))
    }

    /// The counters that apply to an attempt, each with its limit.
    fn counters_for(&self, username: &str, ip: Option<IpAddr>) -> Vec<(String, u32)> {
        self.user_counter(username)
            .into_iter()
            .chain(self.ip_counter(ip))
            .collect()
    }

    /// `Some(wait)` if this attempt must be refused without checking the password: how long
    /// until the counter that refuses it stops counting.
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
        let mut wait = None;
        for (count, (key, limit)) in counts.iter().zip(&counters) {
            if count >= limit {
                // Refused until the last window that refuses it ends.
                let left = self
                    .counters
                    .time_left(key)
                    .await?
                    .unwrap_or(self.settings.window);
                wait = Some(wait.map_or(left, |w: Duration| w.max(left)));
            }
        }
        Ok(wait)
    }

    /// Counts this attempt as a failure *before* its password is checked. If it cannot be
    /// counted (Redis read-only during a failover, out of memory), the caller must refuse the
    /// attempt unchecked: otherwise guesses go uncounted, and a right password answered
    /// differently from a wrong one would tell the attacker which guess was right.
    pub async fn count_attempt(
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

    /// The attempt was right: the username's count starts over, and the client IP's loses the
    /// one this attempt added (not more, so an attacker holding one valid account cannot reset
    /// their budget for guessing others).
    pub async fn record_success(
        &self,
        username: &str,
        ip: Option<IpAddr>,
    ) -> Result<(), StoreError> {
        if let Some((key, _)) = self.user_counter(username) {
            self.counters.clear(&key).await?;
        }
        if let Some((key, _)) = self.ip_counter(ip) {
            self.counters.decrement(&key).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const WINDOW: Duration = Duration::from_secs(600);

    struct Fixture {
        clock: Arc<ManualClock>,
        counters: Arc<MemoryCounters>,
        throttle: LoginThrottle,
    }

    fn throttle(per_user: Option<u32>, per_ip: Option<u32>) -> Fixture {
        let clock = Arc::new(ManualClock::at(1_800_000_000_000));
        let counters = Arc::new(MemoryCounters::new(clock.clone()));
        let settings = ThrottleSettings {
            max_failures_per_user: per_user,
            max_failures_per_ip: per_ip,
            window: WINDOW,
        };
        let throttle = LoginThrottle::new(counters.clone(), "t:", &settings);
        Fixture {
            clock,
            counters,
            throttle,
        }
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    impl Fixture {
        async fn fail(&self, user: &str, from: Option<IpAddr>, times: u32) {
            for _ in 0..times {
                self.throttle.count_attempt(user, from).await.unwrap();
            }
        }

        async fn refused(&self, user: &str, from: Option<IpAddr>) -> bool {
            self.throttle.refusal(user, from).await.unwrap().is_some()
        }
    }

    #[tokio::test]
    async fn a_username_is_locked_at_its_limit_in_any_spelling() {
        let f = throttle(Some(3), None);
        f.fail("Alice", ip("192.0.2.1"), 1).await;
        f.fail(" alice ", ip("192.0.2.2"), 1).await;
        assert!(!f.refused("alice", None).await, "two of three");
        f.fail("ALICE", None, 1).await;
        for spelling in ["alice", "Alice", "  ALICE\t"] {
            assert_eq!(
                f.throttle
                    .refusal(spelling, ip("198.51.100.1"))
                    .await
                    .unwrap(),
                Some(WINDOW),
                "{spelling:?}"
            );
        }
        assert!(
            !f.refused("bob", ip("192.0.2.1")).await,
            "other users are not locked"
        );
        assert!(!f.refused("alice2", None).await);
    }

    #[tokio::test]
    async fn an_address_is_locked_across_usernames() {
        let f = throttle(None, Some(4));
        for user in ["a", "b", "c", "d"] {
            f.fail(user, ip("192.0.2.9"), 1).await;
        }
        assert!(f.refused("never-tried", ip("192.0.2.9")).await);
        assert!(
            !f.refused("a", ip("192.0.2.10")).await,
            "another address is fine"
        );
        assert!(!f.refused("a", None).await, "no address, no address limit");
        let v6 = ip("2001:db8::1");
        f.fail("x", v6, 4).await;
        assert!(f.refused("y", v6).await);
    }

    #[tokio::test]
    async fn success_clears_the_users_count_but_not_the_addresss() {
        let f = throttle(Some(3), Some(5));
        let from = ip("192.0.2.1");
        f.fail("alice", from, 2).await;
        f.throttle.record_success("ALICE", None).await.unwrap();
        f.fail("alice", from, 2).await;
        assert!(
            !f.refused("alice", None).await,
            "the user's count restarted"
        );
        // Four failures from the address count still: one more locks it for everyone.
        f.fail("bob", from, 1).await;
        assert!(f.refused("carol", from).await);
    }

    #[tokio::test]
    async fn the_lock_lifts_when_the_window_from_the_first_failure_passes() {
        let f = throttle(Some(2), None);
        f.fail("alice", None, 1).await;
        f.clock.advance(WINDOW - Duration::from_secs(1));
        f.fail("alice", None, 1).await;
        assert!(f.refused("alice", None).await);
        f.clock.advance(Duration::from_secs(1));
        assert!(
            !f.refused("alice", None).await,
            "the window runs from the first failure"
        );
        f.fail("alice", None, 1).await;
        assert!(
            !f.refused("alice", None).await,
            "a fresh window, one failure"
        );
    }

    #[tokio::test]
    async fn limits_that_are_off_never_refuse_or_count() {
        let f = throttle(None, None);
        f.fail("alice", ip("192.0.2.1"), 100).await;
        assert!(!f.refused("alice", ip("192.0.2.1")).await);
        // Nothing was even asked of the store.
        f.counters.set_down(true);
        assert_eq!(f.throttle.refusal("alice", ip("192.0.2.1")).await, Ok(None));
        assert!(f.throttle.count_attempt("alice", None).await.is_ok());
    }

    #[tokio::test]
    async fn zero_in_the_config_switches_a_limit_off() {
        use crate::testing::{Req, Settings, TestApp};
        let t = TestApp::with(Settings {
            login: "max_failures_per_user = 0\nmax_failures_per_ip = 0",
            ..Settings::default()
        });
        // Past both default limits (10 per user, 50 per address).
        for _ in 0..60 {
            let reply = t
                .serve(Req::post_json(
                    "/login",
                    serde_json::json!({"username": "bob", "password": "guess"}),
                ))
                .await;
            assert_eq!(reply.status, 401);
        }
        t.login("bob").await;
    }

    #[tokio::test]
    async fn counters_that_cannot_be_reached_are_an_error_not_a_pass() {
        let f = throttle(Some(3), Some(3));
        f.counters.set_down(true);
        assert!(f.throttle.refusal("alice", ip("192.0.2.1")).await.is_err());
        assert!(f.throttle.count_attempt("alice", None).await.is_err());
        assert!(f.throttle.record_success("alice", None).await.is_err());
    }

    #[tokio::test]
    async fn a_right_password_takes_back_only_its_own_attempt_from_the_address() {
        let f = throttle(Some(3), Some(3));
        let from = ip("192.0.2.9");
        f.fail("bob", from, 2).await;
        // alice's attempt is counted first, then taken back when her password was right.
        f.throttle.count_attempt("alice", from).await.unwrap();
        f.throttle.record_success("alice", from).await.unwrap();
        assert!(
            !f.refused("carol", from).await,
            "still two failures from it"
        );
        f.fail("bob", from, 1).await;
        assert!(f.refused("carol", from).await, "the third failure locks it");
    }

    #[tokio::test]
    async fn taking_back_never_goes_below_zero_or_outlives_the_window() {
        let f = throttle(Some(3), Some(3));
        let from = ip("192.0.2.10");
        f.throttle.record_success("alice", from).await.unwrap();
        f.fail("bob", from, 2).await;
        assert!(!f.refused("carol", from).await);
        f.fail("bob", from, 1).await;
        assert!(
            f.refused("carol", from).await,
            "the earlier take-back gave no credit"
        );
    }
}
