//! The validation cache: sessions this instance read recently, so a request can be checked
//! without a Redis round trip, and dropped the moment Redis says they changed.
//!
//! Invalidation comes from Redis itself: a tracking connection ([`super::tracking`]) runs
//! `CLIENT TRACKING ON BCAST PREFIX {prefix}session:`, so every write to a session key (a touch,
//! a logout anywhere, a revocation, an eviction, an expiry) sends this instance an invalidation
//! for that key. The cache fails closed:
//! - It is used only while the tracking connection is **proven live**: the tracker pings on it
//!   every [`PROOF_INTERVAL`], and an entry is served only while the latest answered ping was
//!   sent less than [`FRESHNESS`] ago. Invalidations travel on that same connection, ahead of
//!   the answer to any later ping, so a fresh proof means every write Redis handled before that
//!   ping has reached us. A lost, stalled or killed connection stops the cache within
//!   [`FRESHNESS`], and the cache is flushed when tracking is (re-)established.
//! - A read races an invalidation arriving on the other connection: every invalidation bumps a
//!   generation, and what a lookup read is cached only if no invalidation arrived while it was
//!   reading (checked under the same lock).
//! - An entry never outlives the session's idle or absolute deadline as it stood when read.
//!
//! Memory: about 600 bytes per entry with a typical browser user agent (handle, user id, name,
//! roles, IP, user agent, map overhead), so the default 100,000 entries cost about 60 MiB at
//! most. When full, an arbitrary entry makes room.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Handle, SessionRecord};
use crate::metrics::CacheMetrics;

/// How often the tracker proves the tracking connection live.
pub const PROOF_INTERVAL: Duration = Duration::from_millis(25);
/// How old the latest proof may be for the cache to be used: also the longest a session ended
/// elsewhere can still be accepted here.
pub const FRESHNESS: Duration = Duration::from_millis(100);

struct Cached {
    record: Arc<SessionRecord>,
    /// Wall-clock ms: the earlier of the idle and absolute deadlines when it was read.
    usable_until_ms: u64,
}

/// Handles are hex SHA-256 digests of random ids, and only sessions Redis returned get an
/// entry, so nobody can pick keys that collide: a multiply-xor pass spreads them as well as
/// the default SipHash does, for a fraction of its work on every request.
#[derive(Default)]
struct HandleHasher(u64);

impl Hasher for HandleHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(23) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    /// MurmurHash3's finaliser: every input bit reaches the low bits (bucket) and the top
    /// ones (tag).
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

type HandleMap<V> = HashMap<Handle, V, BuildHasherDefault<HandleHasher>>;

struct Entries {
    map: HandleMap<Cached>,
    /// Bumped by every invalidation and flush.
    generation: u64,
}

pub struct ValidationCache {
    entries: Mutex<Entries>,
    max_entries: usize,
    /// Where monotonic time starts for `proven_at_us`.
    epoch: Instant,
    /// Microseconds after `epoch` at which the latest answered proof was sent; 0 = never.
    proven_at_us: AtomicU64,
    metrics: CacheMetrics,
}

/// What a lookup must hand back to [`ValidationCache::insert`]: the generation it started at.
#[derive(Debug, Clone, Copy)]
pub struct ReadTicket(u64);

impl ValidationCache {
    pub fn new(max_entries: usize, metrics: CacheMetrics) -> ValidationCache {
        ValidationCache {
            entries: Mutex::new(Entries {
                map: HandleMap::default(),
                generation: 0,
            }),
            max_entries: max_entries.max(1),
            epoch: Instant::now(),
            proven_at_us: AtomicU64::new(0),
            metrics,
        }
    }

    fn micros_now(&self) -> u64 {
        (self.epoch.elapsed().as_micros() as u64).max(1)
    }

    /// Whether invalidation tracking is proven live right now.
    pub fn is_live(&self) -> bool {
        let proven = self.proven_at_us.load(Ordering::Acquire);
        proven != 0 && self.micros_now().saturating_sub(proven) < FRESHNESS.as_micros() as u64
    }

    /// The tracker sent a ping at `sent` and its answer came back.
    pub fn proven(&self, sent: Instant) {
        let at = (sent.saturating_duration_since(self.epoch).as_micros() as u64).max(1);
        self.proven_at_us.fetch_max(at, Ordering::AcqRel);
    }

    /// Tracking is gone: stop using the cache at once and forget everything in it.
    pub fn lost(&self) {
        self.proven_at_us.store(0, Ordering::Release);
        self.flush();
    }

    /// The cached record under `handle`, if the cache may be used and the entry is still
    /// within its deadlines at `now_ms`. Counts a hit or a miss.
    pub fn get(&self, handle: &Handle, now_ms: u64) -> Option<Arc<SessionRecord>> {
        let found = if self.is_live() {
            self.entries.lock().ok().and_then(|entries| {
                entries
                    .map
                    .get(handle)
                    .filter(|c| now_ms < c.usable_until_ms)
                    .map(|c| c.record.clone())
            })
        } else {
            None
        };
        match found {
            Some(_) => self.metrics.hits.inc(),
            None => self.metrics.misses.inc(),
        }
        found
    }

    /// Taken before reading a session from Redis.
    pub fn ticket(&self) -> ReadTicket {
        ReadTicket(self.entries.lock().map_or(u64::MAX, |e| e.generation))
    }

    /// Keeps what a lookup read, unless an invalidation arrived since its `ticket` or the
    /// cache is not live.
    pub fn insert(
        &self,
        ticket: ReadTicket,
        handle: &Handle,
        record: &Arc<SessionRecord>,
        usable_until_ms: u64,
    ) {
        if !self.is_live() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.generation != ticket.0 {
            return;
        }
        if entries.map.len() >= self.max_entries && !entries.map.contains_key(handle) {
            if let Some(victim) = entries.map.keys().next().cloned() {
                entries.map.remove(&victim);
            }
        }
        entries.map.insert(
            handle.clone(),
            Cached {
                record: record.clone(),
                usable_until_ms,
            },
        );
        self.metrics.entries.set(entries.map.len() as i64);
    }

    /// Redis says these sessions changed (or this instance changed them itself).
    pub fn invalidate<'h>(&self, handles: impl IntoIterator<Item = &'h Handle>) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        entries.generation += 1;
        for handle in handles {
            if entries.map.remove(handle).is_some() {
                self.metrics.invalidations.inc();
            }
        }
        self.metrics.entries.set(entries.map.len() as i64);
    }

    /// Forgets everything (tracking lost, re-established, or Redis flushed its keys).
    pub fn flush(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.generation += 1;
            entries.map.clear();
        }
        self.metrics.flushes.inc();
        self.metrics.entries.set(0);
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.map.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn record(user: &str) -> Arc<SessionRecord> {
        Arc::new(SessionRecord {
            user_id: user.into(),
            username: user.into(),
            roles: vec![],
            created_at_ms: 0,
            last_seen_ms: 0,
            ip: String::new(),
            user_agent: String::new(),
        })
    }

    fn handle(n: u8) -> Handle {
        Handle::parse(&format!("{:064x}", n)).expect("handle")
    }

    fn live_cache(max: usize) -> ValidationCache {
        let cache = ValidationCache::new(max, Metrics::new().cache);
        cache.proven(Instant::now());
        cache
    }

    #[test]
    fn nothing_is_served_until_tracking_is_proven() {
        let cache = ValidationCache::new(10, Metrics::new().cache);
        let ticket = cache.ticket();
        cache.insert(ticket, &handle(1), &record("a"), u64::MAX);
        assert!(cache.is_empty(), "not live: nothing is kept");
        cache.proven(Instant::now());
        cache.insert(cache.ticket(), &handle(1), &record("a"), u64::MAX);
        assert_eq!(
            cache.get(&handle(1), 0).map(|r| r.user_id.clone()),
            Some("a".into())
        );
    }

    #[test]
    fn a_stale_proof_stops_the_cache_within_the_freshness_window() {
        let cache = live_cache(10);
        cache.insert(cache.ticket(), &handle(1), &record("a"), u64::MAX);
        assert!(cache.get(&handle(1), 0).is_some());
        std::thread::sleep(FRESHNESS + Duration::from_millis(20));
        assert!(!cache.is_live());
        assert!(cache.get(&handle(1), 0).is_none(), "unproven: not served");
        cache.proven(Instant::now());
        assert!(cache.get(&handle(1), 0).is_some(), "proven again");
    }

    #[test]
    fn an_invalidation_during_a_read_keeps_the_read_out() {
        let cache = live_cache(10);
        let ticket = cache.ticket();
        // The session is revoked while our GET is in flight; its invalidation lands first.
        cache.invalidate([&handle(1)]);
        cache.insert(ticket, &handle(1), &record("a"), u64::MAX);
        assert!(cache.get(&handle(1), 0).is_none());
    }

    #[test]
    fn invalidation_and_loss_drop_entries() {
        let cache = live_cache(10);
        cache.insert(cache.ticket(), &handle(1), &record("a"), u64::MAX);
        cache.insert(cache.ticket(), &handle(2), &record("b"), u64::MAX);
        cache.invalidate([&handle(1)]);
        assert!(cache.get(&handle(1), 0).is_none());
        assert!(cache.get(&handle(2), 0).is_some());
        cache.lost();
        assert!(cache.is_empty());
        assert!(!cache.is_live());
    }

    #[test]
    fn entries_end_at_their_deadline() {
        let cache = live_cache(10);
        cache.insert(cache.ticket(), &handle(1), &record("a"), 1_000);
        assert!(cache.get(&handle(1), 999).is_some());
        assert!(cache.get(&handle(1), 1_000).is_none());
    }

    #[test]
    fn handles_hash_apart() {
        let hash = |h: &Handle| {
            let mut hasher = HandleHasher::default();
            std::hash::Hash::hash(h, &mut hasher);
            hasher.finish()
        };
        let hashes: std::collections::HashSet<u64> = (0..=255).map(|n| hash(&handle(n))).collect();
        assert_eq!(hashes.len(), 256);
        // hashbrown picks buckets with the low bits and tags entries with the top seven.
        let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 0xff).collect();
        let top: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(
            low.len() > 128 && top.len() > 64,
            "{} {}",
            low.len(),
            top.len()
        );
    }

    #[test]
    fn the_bound_holds() {
        let cache = live_cache(3);
        for n in 0..20 {
            cache.insert(cache.ticket(), &handle(n), &record("a"), u64::MAX);
            assert!(cache.len() <= 3);
        }
        assert_eq!(cache.len(), 3);
    }
}
