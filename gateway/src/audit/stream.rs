//! The shared copy of the audit trail that every instance appends to and `gateway audit tail`
//! reads: two capped Redis streams in production, lists in memory in unit tests.
//!
//! Two streams, so that what an attacker can write for free can never push out what matters:
//! `{prefix}audit` holds the security trail (logins, logouts, revocations, evictions, expiry),
//! `{prefix}audit:attempts` the failed and throttled logins and rejected cookies (already
//! aggregated, see [`super::attempts`]). Each is capped at `[audit] stream_max_len` on its own.

use std::sync::Arc;

use async_trait::async_trait;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};

use crate::errors::StoreError;
use crate::redis_conn::SharedRedis;

/// Which of the two streams an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trail {
    /// Events only a user with a credential, an admin or the gateway itself can cause.
    Security,
    /// Events anyone can cause at will: failed logins, throttled logins, forged cookies.
    Attempts,
}

impl Trail {
    pub const ALL: [Trail; 2] = [Trail::Security, Trail::Attempts];

    /// The stream's key under the configured prefix.
    pub fn key(self, key_prefix: &str) -> String {
        match self {
            Trail::Security => format!("{key_prefix}audit"),
            Trail::Attempts => format!("{key_prefix}audit:attempts"),
        }
    }
}

#[async_trait]
pub trait EventStream: Send + Sync {
    /// Appends one JSON line without waiting (the request must not).
    fn append(&self, trail: Trail, line: String);
    /// Appends one JSON line and waits for it (one-shot CLI commands).
    async fn append_and_wait(&self, trail: Trail, line: String);
}

/// `XADD {key} MAXLEN ~ N * event <line>`.
pub struct RedisStream {
    redis: Arc<SharedRedis>,
    key_prefix: String,
    max_len: u64,
}

impl RedisStream {
    pub fn new(redis: Arc<SharedRedis>, key_prefix: &str, max_len: u64) -> RedisStream {
        RedisStream {
            redis,
            key_prefix: key_prefix.to_string(),
            max_len,
        }
    }

    fn xadd(&self, trail: Trail, line: String) -> redis::Cmd {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(trail.key(&self.key_prefix))
            .arg("MAXLEN")
            .arg("~")
            .arg(self.max_len)
            .arg("*")
            .arg("event")
            .arg(line);
        xadd
    }
}

#[async_trait]
impl EventStream for RedisStream {
    fn append(&self, trail: Trail, line: String) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let redis = self.redis.clone();
        let xadd = self.xadd(trail, line);
        tokio::spawn(async move {
            if let Err(e) = redis.query::<String>(xadd).await {
                log::warn!("audit event not written to redis: {e}");
            }
        });
    }

    async fn append_and_wait(&self, trail: Trail, line: String) {
        if let Err(e) = self.redis.query::<String>(self.xadd(trail, line)).await {
            log::warn!("audit event not written to redis: {e}");
        }
    }
}

/// The streams as one list, for unit tests to read back.
#[derive(Default)]
pub struct MemoryStream {
    lines: std::sync::Mutex<Vec<(Trail, String)>>,
}

impl MemoryStream {
    /// Every event appended so far to either stream, parsed, oldest first.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.parsed(|_| true)
    }

    /// Every event appended so far to one stream.
    pub fn events_in(&self, trail: Trail) -> Vec<serde_json::Value> {
        self.parsed(|t| t == trail)
    }

    fn parsed(&self, wanted: impl Fn(Trail) -> bool) -> Vec<serde_json::Value> {
        self.lines.lock().map_or_else(
            |_| Vec::new(),
            |lines| {
                lines
                    .iter()
                    .filter(|(trail, _)| wanted(*trail))
                    .filter_map(|(_, l)| serde_json::from_str(l).ok())
                    .collect()
            },
        )
    }
}

#[async_trait]
impl EventStream for MemoryStream {
    fn append(&self, trail: Trail, line: String) {
        if let Ok(mut lines) = self.lines.lock() {
            lines.push((trail, line));
        }
    }

    async fn append_and_wait(&self, trail: Trail, line: String) {
        self.append(trail, line);
    }
}

/// Reads the streams back as one trail, oldest first (for `gateway audit tail`).
pub struct TrailReader<'a> {
    redis: &'a SharedRedis,
    keys: Vec<String>,
    /// Per stream, the id of the newest entry already seen ("0-0" for none).
    seen: Vec<String>,
}

impl<'a> TrailReader<'a> {
    pub fn new(redis: &'a SharedRedis, key_prefix: &str, trails: &[Trail]) -> TrailReader<'a> {
        TrailReader {
            redis,
            keys: trails.iter().map(|t| t.key(key_prefix)).collect(),
            seen: vec!["0-0".to_string(); trails.len()],
        }
    }

    /// The latest `count` lines across the streams.
    pub async fn latest(&mut self, count: usize) -> Result<Vec<String>, StoreError> {
        let mut entries = Vec::new();
        for (key, seen) in self.keys.iter().zip(self.seen.iter_mut()) {
            let reply: StreamRangeReply = self
                .redis
                .query(
                    redis::cmd("XREVRANGE")
                        .arg(key)
                        .arg("+")
                        .arg("-")
                        .arg("COUNT")
                        .arg(count)
                        .clone(),
                )
                .await?;
            if let Some(newest) = reply.ids.first() {
                *seen = newest.id.clone();
            }
            entries.extend(reply.ids);
        }
        Ok(in_order(entries, count))
    }

    /// Lines added since the last call (or since [`TrailReader::latest`]).
    pub async fn newer(&mut self) -> Result<Vec<String>, StoreError> {
        let mut entries = Vec::new();
        // One XREAD per stream: in a Redis Cluster the two streams sit in different slots,
        // and one command must stay within one.
        for (key, seen) in self.keys.iter().zip(self.seen.iter_mut()) {
            let mut xread = redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(100)
                .arg("STREAMS")
                .arg(key)
                .arg(&*seen);
            let reply: Option<StreamReadReply> = self.redis.query(xread).await?;
            for stream in reply.into_iter().flat_map(|r| r.keys) {
                if let Some(newest) = stream.ids.last() {
                    *seen = newest.id.clone();
                }
                entries.extend(stream.ids);
            }
        }
        Ok(in_order(entries, usize::MAX))
    }
}

/// The last `count` entries by id (time, then sequence), oldest first, as their lines.
fn in_order(mut entries: Vec<StreamId>, count: usize) -> Vec<String> {
    entries.sort_by_key(|e| entry_order(&e.id));
    let skip = entries.len().saturating_sub(count);
    entries
        .into_iter()
        .skip(skip)
        .filter_map(|e| e.get::<String>("event"))
        .collect()
}

fn entry_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}
