//! Login throttling: after too many failed logins for one username, or from one client IP,
//! within `[login] failure_window`, further attempts are refused (429 with `Retry-After`)
//! before any password is checked, until the window has passed.
//!
//! Counters live in Redis (`{prefix}fail:user:{sha256(username)}`, `{prefix}fail:ip:{ip}`), so
//! every instance enforces the same limits. Checking costs one `MGET`; a failure one pipelined
//! `INCR` + `EXPIRE NX` per counter; a success clears the username's counter (not the IP's, so
//! an attacker holding one valid account cannot reset their budget for guessing others).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::ThrottleSettings;
use crate::errors::StoreError;
use crate::redis_conn::SharedRedis;

pub struct LoginThrottle {
    redis: Arc<SharedRedis>,
    prefix: String,
    settings: ThrottleSettings,
}

impl LoginThrottle {
    pub fn new(redis: Arc<SharedRedis>, key_prefix: &str, settings: &ThrottleSettings) -> Self {
        LoginThrottle {
            redis,
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
    fn counters(&self, username: &str, ip: Option<IpAddr>) -> Vec<(String, u32)> {
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
        let counters = self.counters(username, ip);
        if counters.is_empty() {
            return Ok(None);
        }
        let keys: Vec<&String> = counters.iter().map(|(k, _)| k).collect();
        let counts: Vec<Option<u32>> = self
            .redis
            .query(redis::cmd("MGET").arg(&keys).clone())
            .await?;
        let exceeded = counts
            .iter()
            .zip(&counters)
            .any(|(count, (_, limit))| count.unwrap_or(0) >= *limit);
        Ok(exceeded.then_some(self.settings.window))
    }

    pub async fn record_failure(
        &self,
        username: &str,
        ip: Option<IpAddr>,
    ) -> Result<(), StoreError> {
        let counters = self.counters(username, ip);
        if counters.is_empty() {
            return Ok(());
        }
        let window = self.settings.window.as_secs().max(1);
        let mut pipe = redis::pipe();
        for (key, _) in &counters {
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

    pub async fn record_success(&self, username: &str) -> Result<(), StoreError> {
        if let Some((key, _)) = self.user_counter(username) {
            let _: i64 = self.redis.query(redis::cmd("DEL").arg(key).clone()).await?;
        }
        Ok(())
    }
}
