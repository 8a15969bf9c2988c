//! Sessions in Redis. Layout, under the configured `key_prefix`:
//! - `session:{handle}`: the [`SessionRecord`] as JSON, with a TTL;
//! - `user:{user_id}:sessions`: sorted set of the user's handles by creation time, so a user's
//!   sessions are listed and revoked without scanning the keyspace;
//! - `sessions`: sorted set of every handle by creation time, for "list all" and "revoke all".
//!
//! A lookup is one `GET`; a touch one `SET ... XX`; creation one Lua script over all three
//! keys, so the per-user limit holds across instances.
//!
//! A Redis Cluster keeps the same keys (a session key cannot share a slot with its user's
//! index: it is found by the cookie alone), so nothing touches two slots at once. Creation
//! there: the record is stored first, then a script on the user's index alone applies the
//! limit atomically (the same guarantee: concurrent logins of one user queue on that key),
//! then the all-sessions index is updated and evicted records deleted, each a command of its
//! own. Which indexed sessions are dead is read beforehand, and a record is always written
//! before its handle is indexed, so an indexed handle without a record is dead for good.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use redis::Script;

use super::{Created, Listing, SessionBackend, UserLimit};
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

/// Cluster only: the per-user part of creation, on the user's index alone. The record is
/// already stored. Drops the handles found dead (ARGV[6..]) and those past the absolute
/// timeout, applies the limit and indexes the new handle. Returns `{created(0|1), evicted
/// handles...}`; the caller deletes the evicted records and, when refused, the new one.
const CLUSTER_LIMIT_SCRIPT: &str = r#"
local user_index = KEYS[1]
local now_ms, absolute_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local handle, max, policy = ARGV[3], tonumber(ARGV[4]), ARGV[5]
redis.call('ZREMRANGEBYSCORE', user_index, '-inf', '(' .. (now_ms - absolute_ms))
for i = 6, #ARGV do
  redis.call('ZREM', user_index, ARGV[i])
end
local result = {1}
if max > 0 then
  local live = redis.call('ZRANGE', user_index, 0, -1)
  if #live >= max then
    if policy == 'reject' then return {0} end
    for i = 1, #live - max + 1 do
      redis.call('ZREM', user_index, live[i])
      table.insert(result, live[i])
    end
  end
end
redis.call('ZADD', user_index, now_ms, handle)
redis.call('PEXPIRE', user_index, absolute_ms)
return result
"#;

pub struct RedisBackend {
    redis: Arc<SharedRedis>,
    prefix: String,
    create_script: Script,
    cluster_limit_script: Script,
}

impl RedisBackend {
    pub fn new(redis: Arc<SharedRedis>, key_prefix: &str) -> RedisBackend {
        RedisBackend {
            redis,
            prefix: key_prefix.to_string(),
            create_script: Script::new(CREATE_SCRIPT),
            cluster_limit_script: Script::new(CLUSTER_LIMIT_SCRIPT),
        }
    }

    /// The record's key; `handle` as a [`Handle`] or as read back from an index.
    fn session_key(&self, handle: impl std::fmt::Display) -> String {
        format!("{}session:{handle}", self.prefix)
    }

    fn user_index(&self, user_id: &str) -> String {
        format!("{}user:{}:sessions", self.prefix, user_id)
    }

    fn all_index(&self) -> String {
        format!("{}sessions", self.prefix)
    }
}

/// What `create` needs besides the record, as the scripts take it.
struct Creation<'a> {
    handle: &'a Handle,
    record: &'a SessionRecord,
    ttl_ms: u64,
    absolute_ms: u64,
    max: u32,
    policy: &'static str,
}

impl RedisBackend {
    /// The single-server (and Sentinel) creation: one script over the three keys.
    async fn create_in_one_script(&self, new: Creation<'_>) -> Result<Vec<String>, StoreError> {
        let mut invocation = self.create_script.prepare_invoke();
        invocation
            .key(self.session_key(new.handle))
            .key(self.user_index(&new.record.user_id))
            .key(self.all_index())
            .arg(to_json(new.record)?)
            .arg(new.ttl_ms)
            .arg(new.record.created_at_ms)
            .arg(new.absolute_ms)
            .arg(new.handle.as_str())
            .arg(new.max)
            .arg(new.policy)
            .arg(format!("{}session:", self.prefix));
        self.redis
            .run_durable(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await
    }

    /// The cluster's creation, one slot per command (see the module doc for why it is safe).
    async fn create_across_slots(&self, new: Creation<'_>) -> Result<Vec<String>, StoreError> {
        let session_key = self.session_key(new.handle);
        let user_index = self.user_index(&new.record.user_id);
        let all_index = self.all_index();
        let record = to_json(new.record)?;
        let now_ms = new.record.created_at_ms;
        let oldest_kept = format!("({}", now_ms.saturating_sub(new.absolute_ms));
        self.redis
            .run_durable(|mut conn| async move {
                let mut dead: Vec<String> = Vec::new();
                if new.max > 0 {
                    let indexed: Vec<String> = redis::cmd("ZRANGE")
                        .arg(&user_index)
                        .arg(0)
                        .arg(-1)
                        .query_async(&mut conn)
                        .await?;
                    let keys: Vec<String> = indexed.iter().map(|h| self.session_key(h)).collect();
                    if !keys.is_empty() {
                        // MGET over many slots: the cluster client splits it per node.
                        let records: Vec<Option<String>> =
                            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
                        dead = indexed
                            .into_iter()
                            .zip(records)
                            .filter(|(_, record)| record.is_none())
                            .map(|(handle, _)| handle)
                            .collect();
                    }
                }
                let _: Option<String> = redis::cmd("SET")
                    .arg(&session_key)
                    .arg(record)
                    .arg("PX")
                    .arg(new.ttl_ms)
                    .arg("NX")
                    .query_async(&mut conn)
                    .await?;
                let mut limit = self.cluster_limit_script.prepare_invoke();
                limit
                    .key(&user_index)
                    .arg(now_ms)
                    .arg(new.absolute_ms)
                    .arg(new.handle.as_str())
                    .arg(new.max)
                    .arg(new.policy)
                    .arg(&dead);
                let reply: Vec<String> = limit.invoke_async(&mut conn).await?;
                if reply.first().map(String::as_str) != Some("1") {
                    let _: i64 = redis::cmd("DEL")
                        .arg(&session_key)
                        .query_async(&mut conn)
                        .await?;
                    return Ok(reply);
                }
                let evicted = &reply[1..];
                if !evicted.is_empty() {
                    let keys: Vec<String> = evicted.iter().map(|h| self.session_key(h)).collect();
                    // DEL over many slots: the cluster client splits it per node.
                    let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
                }
                let mut all = redis::pipe();
                all.cmd("ZREMRANGEBYSCORE")
                    .arg(&all_index)
                    .arg("-inf")
                    .arg(&oldest_kept)
                    .ignore();
                if !dead.is_empty() || !evicted.is_empty() {
                    all.cmd("ZREM")
                        .arg(&all_index)
                        .arg(&dead)
                        .arg(evicted)
                        .ignore();
                }
                all.cmd("ZADD")
                    .arg(&all_index)
                    .arg(now_ms)
                    .arg(new.handle.as_str())
                    .ignore();
                all.query_async::<()>(&mut conn).await?;
                Ok(reply)
            })
            .await
    }

    /// The cluster's `delete_all`: each command within one key's slot (or split per node by
    /// the cluster client), since a pipeline must stay within one slot.
    async fn delete_across_slots(&self, chunk: &[LiveSession]) -> Result<(), StoreError> {
        let keys: Vec<String> = chunk.iter().map(|s| self.session_key(&s.handle)).collect();
        let mut by_user: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for s in chunk {
            by_user
                .entry(s.record.user_id.as_str())
                .or_default()
                .push(s.handle.as_str());
        }
        let handles: Vec<&str> = chunk.iter().map(|s| s.handle.as_str()).collect();
        let all_index = self.all_index();
        self.redis
            .run_durable(|mut conn| async move {
                let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
                for (user_id, handles) in by_user {
                    let _: i64 = redis::cmd("ZREM")
                        .arg(self.user_index(user_id))
                        .arg(handles)
                        .query_async(&mut conn)
                        .await?;
                }
                let _: i64 = redis::cmd("ZREM")
                    .arg(&all_index)
                    .arg(handles)
                    .query_async(&mut conn)
                    .await?;
                Ok(())
            })
            .await
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
        let new = Creation {
            handle,
            record,
            ttl_ms,
            absolute_ms,
            max,
            policy,
        };
        let reply = if self.redis.is_cluster() {
            self.create_across_slots(new).await?
        } else {
            self.create_in_one_script(new).await?
        };
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

    async fn list(&self, user_id: Option<&str>) -> Result<Listing, StoreError> {
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
                    (Some(handle), Some(record)) => sessions.push(LiveSession {
                        handle,
                        record: record.into(),
                    }),
                    _ => dead.push(handle.clone()),
                }
            }
        }
        let mut expired = Vec::new();
        if !dead.is_empty() {
            if user_id.is_some() {
                let _: i64 = self
                    .redis
                    .query(redis::cmd("ZREM").arg(&index).arg(&dead).clone())
                    .await?;
            }
            // One ZREM per handle, so each answer says whether this call removed it: of two
            // listings (or a listing and a returning cookie) racing, one reports the expiry.
            let all = self.all_index();
            let mut pipe = redis::pipe();
            for handle in &dead {
                pipe.cmd("ZREM").arg(&all).arg(handle);
            }
            let removed: Vec<i64> = self.redis.pipeline(pipe).await?;
            expired = dead
                .iter()
                .zip(removed)
                .filter(|(_, n)| *n > 0)
                .filter_map(|(h, _)| Handle::parse(h))
                .collect();
        }
        Ok(Listing {
            live: sessions,
            expired,
        })
    }

    async fn delete_all(&self, sessions: &[LiveSession]) -> Result<(), StoreError> {
        for chunk in sessions.chunks(500) {
            if self.redis.is_cluster() {
                self.delete_across_slots(chunk).await?;
                continue;
            }
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
