//! Sessions in Redis. Layout, under the configured `key_prefix`:
//! - `session:{handle}`: the [`SessionRecord`] as JSON, with a TTL;
//! - `user:{user_id}:sessions`: sorted set of the user's handles by creation time, so a user's
//!   sessions are listed and revoked without scanning the keyspace;
//! - `sessions`: sorted set of every handle by creation time, for "list all" and "revoke all".
//!
//! A lookup is one `GET`; a touch one `SET ... XX`; creation one Lua script, so the per-user
//! limit holds across instances.

use std::sync::Arc;

use async_trait::async_trait;
use redis::Script;

use super::{Created, SessionBackend, UserLimit};
use crate::config::LimitPolicy;
use crate::errors::StoreError;
use crate::redis_conn::SharedRedis;
use crate::session::{Handle, LiveSession, SessionRecord};

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

pub struct RedisBackend {
    redis: Arc<SharedRedis>,
    prefix: String,
    create_script: Script,
}

impl RedisBackend {
    pub fn new(redis: Arc<SharedRedis>, key_prefix: &str) -> RedisBackend {
        RedisBackend {
            redis,
            prefix: key_prefix.to_string(),
            create_script: Script::new(CREATE_SCRIPT),
        }
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
}

fn to_json(record: &SessionRecord) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|e| StoreError::Internal(e.to_string()))
}

#[async_trait]
impl SessionBackend for RedisBackend {
    async fn create(
        &self,
        handle: &Handle,
        record: &SessionRecord,
        ttl_ms: u64,
        absolute_ms: u64,
        limit: Option<UserLimit>,
    ) -> Result<Created, StoreError> {
        let (max, policy) = match limit {
            Some(UserLimit { max, policy }) => (
                max,
                match policy {
                    LimitPolicy::EvictOldest => "evict",
                    LimitPolicy::Reject => "reject",
                },
            ),
            None => (0, "evict"),
        };
        let mut invocation = self.create_script.prepare_invoke();
        invocation
            .key(self.session_key(handle))
            .key(self.user_index(&record.user_id))
            .key(self.all_index())
            .arg(to_json(record)?)
            .arg(ttl_ms)
            .arg(record.created_at_ms)
            .arg(absolute_ms)
            .arg(handle.as_str())
            .arg(max)
            .arg(policy)
            .arg(format!("{}session:", self.prefix));
        let reply: Vec<String> = self
            .redis
            .run_durable(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        if reply.first().map(String::as_str) != Some("1") {
            return Ok(Created::LimitReached);
        }
        let evicted = reply[1..].iter().filter_map(|h| Handle::parse(h)).collect();
        Ok(Created::Stored { evicted })
    }

    async fn get(&self, handle: &Handle) -> Result<Option<SessionRecord>, StoreError> {
        let raw: Option<String> = self
            .redis
            .query(redis::cmd("GET").arg(self.session_key(handle)).clone())
            .await?;
        Ok(raw.and_then(|r| serde_json::from_str::<SessionRecord>(&r).ok()))
    }

    async fn unindex(&self, handle: &Handle) -> Result<bool, StoreError> {
        let removed: i64 = self
            .redis
            .query(
                redis::cmd("ZREM")
                    .arg(self.all_index())
                    .arg(handle.as_str())
                    .clone(),
            )
            .await?;
        Ok(removed > 0)
    }

    async fn replace(
        &self,
        handle: &Handle,
        record: &SessionRecord,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        let _: Option<String> = self
            .redis
            .query(
                redis::cmd("SET")
                    .arg(self.session_key(handle))
                    .arg(to_json(record)?)
                    .arg("PX")
                    .arg(ttl_ms)
                    .arg("XX")
                    .clone(),
            )
            .await?;
        Ok(())
    }

    async fn list(&self, user_id: Option<&str>) -> Result<Vec<LiveSession>, StoreError> {
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

    async fn delete_all(&self, sessions: &[LiveSession]) -> Result<(), StoreError> {
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
            self.redis
                .run_durable(|mut conn| async move { pipe.query_async::<()>(&mut conn).await })
                .await?;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.redis.ping().await
    }
}
