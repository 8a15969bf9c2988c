//! Keeps the validation cache honest: a background service holding a RESP3 connection with
//! `CLIENT TRACKING ON BCAST PREFIX {prefix}session:` to the primary, or to every primary of a
//! Redis Cluster (a node reports writes to its own keys only). Redis pushes an invalidation on
//! it for every write to a session key, from any instance or from Redis itself (expiry); they
//! are applied in arrival order, inline, before the reply to any later command on the
//! connection.
//!
//! Every [`PROOF_INTERVAL`] the tracker pings on every tracking connection; a round in which
//! every ping was answered proves every earlier invalidation has been applied, and the cache
//! is served only while such a proof is fresher than [`FRESHNESS`]. Any failure (a connection
//! lost or killed, Redis restarted, a ping unanswered in time) empties the cache and stops it
//! until tracking is re-established. With a cluster, each round also asks one node (in turn)
//! for the cluster's primaries: a failover or a new primary (a node this instance does not
//! track could now take writes) counts as a failure too, and tracking starts over on the new
//! set of primaries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::{PushInfo, PushKind, Value};

use super::cache::{ValidationCache, FRESHNESS, PROOF_INTERVAL};
use super::Handle;
use crate::redis_conn::{self, SharedRedis};

/// How long to wait before connecting again after tracking failed.
const RETRY_AFTER: Duration = Duration::from_millis(250);
/// The name the tracking connection has in `CLIENT LIST`.
pub const CLIENT_NAME: &str = "gateway-cache-tracking";

pub struct CacheTracker {
    pub cache: Arc<ValidationCache>,
    pub redis: Arc<SharedRedis>,
    pub key_prefix: String,
}

#[async_trait]
impl BackgroundService for CacheTracker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                failure = self.track() => {
                    log::warn!("session cache off until tracking is back: {failure}");
                }
            }
            self.cache.lost();
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(RETRY_AFTER) => {}
            }
        }
    }
}

impl CacheTracker {
    /// Tracks until something fails; returns why.
    async fn track(&self) -> String {
        let cache = self.cache.clone();
        let session_prefix = format!("{}session:", self.key_prefix);
        let prefix = session_prefix.clone();
        let tracked = match self
            .redis
            .tracking_connections(Arc::new(move |push| apply(&cache, &prefix, push)))
            .await
        {
            Ok(tracked) => tracked,
            Err(e) => return format!("cannot connect: {e}"),
        };
        let mut connections = tracked.connections;
        for conn in &mut connections {
            let setup: redis::RedisResult<()> = async {
                redis::cmd("CLIENT")
                    .arg("SETNAME")
                    .arg(CLIENT_NAME)
                    .query_async::<()>(conn)
                    .await?;
                redis::cmd("CLIENT")
                    .arg("TRACKING")
                    .arg("ON")
                    .arg("BCAST")
                    .arg("PREFIX")
                    .arg(&session_prefix)
                    .query_async::<()>(conn)
                    .await
            }
            .await;
            if let Err(e) = setup {
                return format!("cannot turn tracking on: {e}");
            }
        }
        // Whatever was cached before tracking (re)started may have missed an invalidation.
        self.cache.flush();
        if tracked.cluster_primaries.is_empty() {
            log::info!("session cache tracking invalidations of {session_prefix}*");
        } else {
            let nodes: Vec<&str> = tracked
                .cluster_primaries
                .iter()
                .map(|p| p.address.as_str())
                .collect();
            log::info!(
                "session cache tracking invalidations of {session_prefix}* on the cluster's \
                 primaries {}",
                nodes.join(", ")
            );
        }
        let ping_cmd = redis::cmd("PING");
        let mut nodes_cmd = redis::cmd("CLUSTER");
        nodes_cmd.arg("NODES");
        let mut round = 0usize;
        loop {
            round = round.wrapping_add(1);
            let sent = Instant::now();
            let proof = async {
                for conn in &mut connections {
                    ping_cmd.query_async::<String>(conn).await?;
                }
                if tracked.cluster_primaries.is_empty() {
                    return Ok(None);
                }
                let asked = round % connections.len();
                let nodes: String = nodes_cmd.query_async(&mut connections[asked]).await?;
                Ok::<_, redis::RedisError>(Some(redis_conn::cluster_primaries(&nodes)))
            };
            match tokio::time::timeout(FRESHNESS, proof).await {
                Ok(Ok(Some(primaries))) if primaries != tracked.cluster_primaries => {
                    return "the cluster's primaries changed".to_string();
                }
                Ok(Ok(_)) => self.cache.proven(sent),
                Ok(Err(e)) => return format!("tracking connection failed: {e}"),
                Err(_) => return "tracking connection stopped answering".to_string(),
            }
            tokio::time::sleep(PROOF_INTERVAL).await;
        }
    }
}

/// Applies one push message from the tracking connection.
fn apply(cache: &ValidationCache, session_prefix: &str, push: PushInfo) {
    match push.kind {
        PushKind::Invalidate => match push.data.first() {
            Some(Value::Array(keys)) => {
                let handles: Vec<Handle> = keys
                    .iter()
                    .filter_map(|key| match key {
                        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
                        Value::SimpleString(text) => Some(text.as_str()),
                        _ => None,
                    })
                    .filter_map(|key| key.strip_prefix(session_prefix))
                    .filter_map(Handle::parse)
                    .collect();
                cache.invalidate(&handles);
            }
            // A null key list: Redis flushed its keyspace.
            _ => cache.flush(),
        },
        PushKind::Disconnection => cache.lost(),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::session::SessionRecord;

    fn cache_with(handles: &[&Handle]) -> ValidationCache {
        let cache = ValidationCache::new(10, Metrics::new().cache);
        cache.proven(Instant::now());
        for h in handles {
            let record = SessionRecord {
                user_id: "1".into(),
                username: "a".into(),
                roles: vec![],
                created_at_ms: 0,
                last_seen_ms: 0,
                ip: String::new(),
                user_agent: String::new(),
            };
            cache.insert(cache.ticket(), h, &Arc::new(record), u64::MAX);
        }
        cache
    }

    fn push(kind: PushKind, data: Vec<Value>) -> PushInfo {
        PushInfo { kind, data }
    }

    #[test]
    fn invalidations_drop_exactly_the_named_sessions() {
        let (a, b) = (
            Handle::parse(&"a".repeat(64)).unwrap(),
            Handle::parse(&"b".repeat(64)).unwrap(),
        );
        let cache = cache_with(&[&a, &b]);
        let key = format!("t:session:{a}");
        apply(
            &cache,
            "t:session:",
            push(
                PushKind::Invalidate,
                vec![Value::Array(vec![Value::BulkString(key.into_bytes())])],
            ),
        );
        assert!(cache.get(&a, 0).is_none());
        assert!(cache.get(&b, 0).is_some());
        // Keys of other prefixes or shapes are ignored.
        apply(
            &cache,
            "t:session:",
            push(
                PushKind::Invalidate,
                vec![Value::Array(vec![Value::BulkString(
                    b"t:sessions".to_vec(),
                )])],
            ),
        );
        assert!(cache.get(&b, 0).is_some());
    }

    #[test]
    fn a_flush_or_a_disconnection_empties_the_cache() {
        let a = Handle::parse(&"a".repeat(64)).unwrap();
        let cache = cache_with(&[&a]);
        apply(
            &cache,
            "t:session:",
            push(PushKind::Invalidate, vec![Value::Nil]),
        );
        assert!(cache.is_empty());
        let cache = cache_with(&[&a]);
        apply(&cache, "t:session:", push(PushKind::Disconnection, vec![]));
        assert!(cache.is_empty());
        assert!(
            !cache.is_live(),
            "disconnected: not used until tracking is back"
        );
    }
}
