//! The session store in Redis, and the expiry rules it enforces.
//!
//! Layout, under the configured `key_prefix`:
//! - `session:{handle}`: the [`SessionRecord`] as JSON. Its TTL is the idle timeout, refreshed
//!   at most once per touch interval, and never set past the absolute deadline, so Redis itself
//!   deletes a session when either limit passes.
//! - `user:{user_id}:sessions`: sorted set of the user's handles by creation time, so a user's
//!   sessions are listed and revoked without scanning the keyspace.
//! - `sessions`: sorted set of every handle by creation time, for "list all" and "revoke all".
//!
//! Index entries of sessions that expired are removed lazily (when the index is read, and by
//! age on every login), so the indexes stay bounded by the sessions created within one absolute
//! timeout. A request costs one `GET`; sliding the idle timeout costs one `SET ... XX` per touch
//! interval (`XX`, so a touch can never resurrect a session revoked in the meantime).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Script;

use super::{now_ms, Handle, LiveSession, SessionId, SessionRecord};
use crate::config::{LimitPolicy, SessionSettings};
use crate::errors::StoreError;
use crate::redis_conn::SharedRedis;

/// Creates a session atomically: prunes the user's index, applies the per-user limit, stores the
/// record and indexes it. Returns `{created(0|1), evicted handles...}`.
const CREATE_SCRIPT: &str = r#"
local session_key, user_index, all_index = KEYS[1], KEYS[2], KEYS[3]
local record, ttl_ms, now_ms, absolute_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local handle, max, policy, session_prefix = ARGV[5], tonumber(ARGV[6]), ARGV[7], ARGV[8]
redis.call('ZREMRANGEBYSCORE', user_index, '-inf', '(' .. (now_ms - absolute_ms))
redis.call('ZREMRANGEBYSCORE', all_index, '-inf', '(' .. (now_ms - absolute_ms))
local result = {1}
if max > 0 then
  local live = {}
  for _, h in ipairs(redis.call('ZRANGE', user_index, 0, -1)) do
    if redis.call('EXISTS', session_prefix .. h) == 1 then
      table.insert(live, h)
    else
      redis.call('ZREM', user_index, h)
      redis.call('ZREM', all_index, h)
    end
  end
  if #live >= max then
    if policy == 'reject' then return {0} end
    for i = 1, #live - max + 1 do
      redis.call('DEL', session_prefix .. live[i])
      redis.call('ZREM', user_index, live[i])
      redis.call('ZREM', all_index, live[i])
      table.insert(result, live[i])
    end
  end
end
redis.call('SET', session_key, record, 'PX', ttl_ms, 'NX')
redis.call('ZADD', user_index, now_ms, handle)
redis.call('PEXPIRE', user_index, absolute_ms)
redis.call('ZADD', all_index, now_ms, handle)
return result
"#;

/// What happened when a session was asked for.
pub enum CreateOutcome {
    Created {
        id: SessionId,
        handle: Handle,
        evicted: Vec<Handle>,
    },
    LimitReached,
}

/// What Redis knows about a presented session.
#[derive(Debug, Clone)]
pub enum Lookup {
    Live(LiveSession),
    /// Nothing under that handle: revoked, logged out, or never stored.
    Missing,
    /// Past its idle or absolute deadline. Either the record was still there (it has now been
    /// deleted) or Redis already dropped it by TTL while its handle was still indexed; in that
    /// case only the handle is known.
    Expired {
        handle: Handle,
        session: Option<LiveSession>,
    },
}

pub struct SessionStore {
    redis: Arc<SharedRedis>,
    prefix: String,
    idle: Duration,
    absolute: Duration,
    touch_interval: Duration,
    max_per_user: Option<u32>,
    on_limit: LimitPolicy,
    create_script: Script,
    /// Sessions this process has touched recently (handle -> when), so a burst of parallel
    /// requests that all read the same stale last-seen time writes once, not once each.
    recent_touches: Mutex<HashMap<Handle, u64>>,
}

/// Past this many remembered touches, forget the ones older than a touch interval.
const RECENT_TOUCHES_PRUNE_AT: usize = 10_000;

impl SessionStore {
    pub fn new(redis: Arc<SharedRedis>, key_prefix: &str, settings: &SessionSettings) -> Self {
        SessionStore {
            redis,
            prefix: key_prefix.to_string(),
            idle: settings.idle_timeout,
            absolute: settings.absolute_timeout,
            touch_interval: settings.touch_interval,
            max_per_user: settings.max_per_user,
            on_limit: settings.on_limit,
            create_script: Script::new(CREATE_SCRIPT),
            recent_touches: Mutex::new(HashMap::new()),
        }
    }

    pub fn redis(&self) -> &Arc<SharedRedis> {
        &self.redis
    }

    fn session_key(&self, handle: &Handle) -> String {
        format!("{}session:{}", self.prefix, handle)
    }

    fn user_index(&self, user_id: &str) -> String {
        format!("{}user:{}:sessions", self.prefix, user_id)
    }

    fn all_index(&self) -> String {
        format!("{}sessions", self.prefix)
    }

    /// Time to live for a record last seen at `now`: the idle timeout, cut at the absolute deadline.
    fn ttl_ms(&self, record: &SessionRecord, now: u64) -> u64 {
        let idle = self.idle.as_millis() as u64;
        let left = record
            .absolute_deadline_ms(self.absolute)
            .saturating_sub(now);
        idle.min(left).max(1)
    }

    /// Stores a brand-new session for the user in `record`.
    pub async fn create(&self, record: &SessionRecord) -> Result<CreateOutcome, StoreError> {
        let id = SessionId::generate().map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let handle = id.handle();
        let json =
            serde_json::to_string(record).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let policy = match self.on_limit {
            LimitPolicy::EvictOldest => "evict",
            LimitPolicy::Reject => "reject",
        };
        let mut invocation = self.create_script.prepare_invoke();
        invocation
            .key(self.session_key(&handle))
            .key(self.user_index(&record.user_id))
            .key(self.all_index())
            .arg(json)
            .arg(self.ttl_ms(record, record.created_at_ms))
            .arg(record.created_at_ms)
            .arg(self.absolute.as_millis() as u64)
            .arg(handle.as_str())
            .arg(self.max_per_user.unwrap_or(0))
            .arg(policy)
            .arg(format!("{}session:", self.prefix));
        let reply: Vec<String> = self
            .redis
            .run(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        if reply.first().map(String::as_str) != Some("1") {
            return Ok(CreateOutcome::LimitReached);
        }
        let evicted = reply[1..].iter().filter_map(|h| Handle::parse(h)).collect();
        Ok(CreateOutcome::Created {
            id,
            handle,
            evicted,
        })
    }

    /// The session a request presents, checked against both deadlines. One `GET`.
    pub async fn lookup(&self, id: &SessionId) -> Result<Lookup, StoreError> {
        let handle = id.handle();
        let Some(live) = self.get(&handle).await? else {
            return self.missing(handle).await;
        };
        let now = now_ms();
        let idle_deadline = live
            .record
            .last_seen_ms
            .saturating_add(self.idle.as_millis() as u64);
        if now >= live.record.absolute_deadline_ms(self.absolute) || now >= idle_deadline {
            self.delete(&live).await?;
            return Ok(Lookup::Expired {
                handle: live.handle.clone(),
                session: Some(live),
            });
        }
        Ok(Lookup::Live(live))
    }

    /// A genuine cookie without a record. Revocation removes the handle from the index, expiry
    /// by TTL does not: so a handle still indexed means the session expired. Removing it here
    /// reports each expiry once, however often the old cookie comes back.
    async fn missing(&self, handle: Handle) -> Result<Lookup, StoreError> {
        let removed: i64 = self
            .redis
            .query(
                redis::cmd("ZREM")
                    .arg(self.all_index())
                    .arg(handle.as_str())
                    .clone(),
            )
            .await?;
        Ok(if removed > 0 {
            Lookup::Expired {
                handle,
                session: None,
            }
        } else {
            Lookup::Missing
        })
    }

    /// Whether the idle clock is due to be pushed forward for this session, and if so claims
    /// the write for the caller: of several requests that find it due at once, one gets `true`.
    pub fn claim_touch(&self, session: &LiveSession, now: u64) -> bool {
        let interval = self.touch_interval.as_millis() as u64;
        if now.saturating_sub(session.record.last_seen_ms) < interval {
            return false;
        }
        let Ok(mut recent) = self.recent_touches.lock() else {
            return true;
        };
        if let Some(at) = recent.get(&session.handle) {
            if now.saturating_sub(*at) < interval {
                return false;
            }
        }
        if recent.len() >= RECENT_TOUCHES_PRUNE_AT {
            recent.retain(|_, at| now.saturating_sub(*at) < interval);
        }
        recent.insert(session.handle.clone(), now);
        true
    }

    /// Slides the idle timeout: rewrites last-seen and the TTL, only if the session still exists.
    pub async fn touch(&self, session: &LiveSession, now: u64) -> Result<(), StoreError> {
        let mut record = session.record.clone();
        record.last_seen_ms = now;
        let json =
            serde_json::to_string(&record).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let _: Option<String> = self
            .redis
            .query(
                redis::cmd("SET")
                    .arg(self.session_key(&session.handle))
                    .arg(json)
                    .arg("PX")
                    .arg(self.ttl_ms(&record, now))
                    .arg("XX")
                    .clone(),
            )
            .await?;
        Ok(())
    }

    /// Ends one session everywhere at once.
    pub async fn delete(&self, session: &LiveSession) -> Result<(), StoreError> {
        self.delete_all(std::slice::from_ref(session))
            .await
            .map(|_| ())
    }

    /// The live session under `handle`, if any.
    pub async fn get(&self, handle: &Handle) -> Result<Option<LiveSession>, StoreError> {
        let raw: Option<String> = self
            .redis
            .query(redis::cmd("GET").arg(self.session_key(handle)).clone())
            .await?;
        Ok(raw
            .and_then(|r| serde_json::from_str::<SessionRecord>(&r).ok())
            .map(|record| LiveSession {
                handle: handle.clone(),
                record,
            }))
    }

    /// Live sessions of one user (or of everyone), oldest first. Prunes dead index entries.
    pub async fn list(&self, user_id: Option<&str>) -> Result<Vec<LiveSession>, StoreError> {
        let index = match user_id {
            Some(id) => self.user_index(id),
            None => self.all_index(),
        };
        let handles: Vec<String> = self
            .redis
            .query(redis::cmd("ZRANGE").arg(&index).arg(0).arg(-1).clone())
            .await?;
        let mut sessions = Vec::with_capacity(handles.len());
        let mut dead = Vec::new();
        for chunk in handles.chunks(500) {
            let keys: Vec<String> = chunk
                .iter()
                .filter_map(|h| Handle::parse(h))
                .map(|h| self.session_key(&h))
                .collect();
            if keys.is_empty() {
                continue;
            }
            let raws: Vec<Option<String>> = self
                .redis
                .query(redis::cmd("MGET").arg(&keys).clone())
                .await?;
            for (handle, raw) in chunk.iter().zip(raws) {
                let parsed = raw.and_then(|r| serde_json::from_str::<SessionRecord>(&r).ok());
                match (Handle::parse(handle), parsed) {
                    (Some(handle), Some(record)) => sessions.push(LiveSession { handle, record }),
                    _ => dead.push(handle.clone()),
                }
            }
        }
        if !dead.is_empty() {
            let _: i64 = self
                .redis
                .query(redis::cmd("ZREM").arg(&index).arg(&dead).clone())
                .await?;
        }
        Ok(sessions)
    }

    /// Ends every session in `sessions`; returns how many were still live.
    pub async fn delete_all(&self, sessions: &[LiveSession]) -> Result<usize, StoreError> {
        for chunk in sessions.chunks(500) {
            let mut pipe = redis::pipe();
            for s in chunk {
                pipe.del(self.session_key(&s.handle))
                    .ignore()
                    .zrem(self.user_index(&s.record.user_id), s.handle.as_str())
                    .ignore()
                    .zrem(self.all_index(), s.handle.as_str())
                    .ignore();
            }
            self.redis.pipeline::<()>(pipe).await?;
        }
        Ok(sessions.len())
    }
}
