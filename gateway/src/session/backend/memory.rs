//! Sessions in a `HashMap`, with the Redis backend's semantics (TTLs on a [`Clock`], indexes
//! that outlive expired records, the per-user limit applied atomically), for unit tests of
//! everything above the store. It can be switched off to play a Redis outage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::{Created, Listing, SessionBackend, UserLimit};
use crate::clock::Clock;
use crate::config::LimitPolicy;
use crate::errors::StoreError;
use crate::session::{Handle, LiveSession, SessionRecord};

#[derive(Default)]
struct Data {
    /// handle -> (record, expires at ms)
    records: HashMap<Handle, (SessionRecord, u64)>,
    /// Every indexed handle with its creation time (the `sessions` sorted set).
    index: Vec<(u64, Handle)>,
}

impl Data {
    fn live(&self, handle: &Handle, now: u64) -> Option<&SessionRecord> {
        self.records
            .get(handle)
            .filter(|(_, expires)| now < *expires)
            .map(|(record, _)| record)
    }

    fn user_of(&self, handle: &Handle) -> Option<&str> {
        self.records.get(handle).map(|(r, _)| r.user_id.as_str())
    }
}

pub struct MemoryBackend {
    clock: Arc<dyn Clock>,
    data: Mutex<Data>,
    down: AtomicBool,
}

impl MemoryBackend {
    pub fn new(clock: Arc<dyn Clock>) -> MemoryBackend {
        MemoryBackend {
            clock,
            data: Mutex::new(Data::default()),
            down: AtomicBool::new(false),
        }
    }

    /// Plays an outage: every call fails until switched back on.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// How many records are stored, expired ones included until something reads them.
    pub fn stored(&self) -> usize {
        self.data.lock().map_or(0, |d| d.records.len())
    }

    fn data(&self) -> Result<MutexGuard<'_, Data>, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("memory store switched off".into()));
        }
        self.data
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store poisoned".into()))
    }
}

#[async_trait]
impl SessionBackend for MemoryBackend {
    async fn create(
        &self,
        handle: &Handle,
        record: &SessionRecord,
        ttl_ms: u64,
        absolute_ms: u64,
        limit: Option<UserLimit>,
    ) -> Result<Created, StoreError> {
        let now = self.clock.now_ms();
        let mut data = self.data()?;
        let oldest_kept = now.saturating_sub(absolute_ms);
        data.index.retain(|(created, _)| *created >= oldest_kept);
        let mut evicted = Vec::new();
        if let Some(UserLimit { max, policy }) = limit {
            let mut live: Vec<(u64, Handle)> = data
                .index
                .iter()
                .filter(|(_, h)| {
                    data.user_of(h) == Some(record.user_id.as_str()) && data.live(h, now).is_some()
                })
                .cloned()
                .collect();
            live.sort();
            if live.len() >= max as usize {
                if policy == LimitPolicy::Reject {
                    return Ok(Created::LimitReached);
                }
                for (_, old) in live.iter().take(live.len() + 1 - max as usize) {
                    data.records.remove(old);
                    data.index.retain(|(_, h)| h != old);
                    evicted.push(old.clone());
                }
            }
        }
        data.records
            .insert(handle.clone(), (record.clone(), now + ttl_ms));
        data.index.push((record.created_at_ms, handle.clone()));
        Ok(Created::Stored { evicted })
    }

    async fn get(&self, handle: &Handle) -> Result<Option<SessionRecord>, StoreError> {
        let now = self.clock.now_ms();
        let mut data = self.data()?;
        let found = data.live(handle, now).cloned();
        if found.is_none() {
            // Expired by TTL: the record goes, the index entry stays (as in Redis).
            data.records.remove(handle);
        }
        Ok(found)
    }

    async fn unindex(&self, handle: &Handle) -> Result<bool, StoreError> {
        let mut data = self.data()?;
        let before = data.index.len();
        data.index.retain(|(_, h)| h != handle);
        Ok(data.index.len() < before)
    }

    async fn replace(
        &self,
        handle: &Handle,
        record: &SessionRecord,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let mut data = self.data()?;
        if data.live(handle, now).is_some() {
            data.records
                .insert(handle.clone(), (record.clone(), now + ttl_ms));
        }
        Ok(())
    }

    async fn list(&self, user_id: Option<&str>) -> Result<Listing, StoreError> {
        let now = self.clock.now_ms();
        let mut data = self.data()?;
        let mut entries: Vec<(u64, Handle)> = data.index.clone();
        entries.sort();
        let mut listing = Listing::default();
        for (_, handle) in entries {
            match data.live(&handle, now) {
                Some(record) if user_id.is_none_or(|id| id == record.user_id) => {
                    listing.live.push(LiveSession {
                        handle,
                        record: record.clone().into(),
                    });
                }
                Some(_) => {}
                // Whose it was is gone with the record: a user's listing prunes the entries of
                // its index, which this store keeps as one with everyone's.
                None if user_id.is_none() || data.user_of(&handle) == user_id => {
                    data.index.retain(|(_, h)| h != &handle);
                    listing.expired.push(handle);
                }
                None => {}
            }
        }
        Ok(listing)
    }

    async fn delete_all(&self, sessions: &[LiveSession]) -> Result<(), StoreError> {
        let mut data = self.data()?;
        for s in sessions {
            data.records.remove(&s.handle);
            data.index.retain(|(_, h)| h != &s.handle);
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.data().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::session::SessionId;

    const MIN: u64 = 60_000;

    fn backend() -> (Arc<ManualClock>, MemoryBackend) {
        let clock = Arc::new(ManualClock::at(1_000_000));
        (clock.clone(), MemoryBackend::new(clock))
    }

    fn record(user_id: &str, at_ms: u64) -> SessionRecord {
        SessionRecord {
            user_id: user_id.to_string(),
            username: format!("user{user_id}"),
            roles: Vec::new(),
            created_at_ms: at_ms,
            last_seen_ms: at_ms,
            ip: String::new(),
            user_agent: String::new(),
        }
    }

    async fn put(b: &MemoryBackend, clock: &ManualClock, user: &str, ttl: u64) -> Handle {
        let handle = SessionId::generate().unwrap().handle();
        let rec = record(user, clock.now_ms());
        let created = b.create(&handle, &rec, ttl, 60 * MIN, None).await.unwrap();
        assert_eq!(created, Created::Stored { evicted: vec![] });
        handle
    }

    #[tokio::test]
    async fn a_record_expires_with_its_ttl_but_its_index_entry_stays() {
        let (clock, b) = backend();
        let h = put(&b, &clock, "1", 10 * MIN).await;
        clock.advance(std::time::Duration::from_millis(10 * MIN - 1));
        assert!(b.get(&h).await.unwrap().is_some());
        clock.advance(std::time::Duration::from_millis(1));
        assert!(b.get(&h).await.unwrap().is_none());
        assert_eq!(b.stored(), 0, "read once expired, the record is gone");
        assert!(b.unindex(&h).await.unwrap(), "still indexed: it expired");
        assert!(!b.unindex(&h).await.unwrap());
        let revoked = put(&b, &clock, "1", 10 * MIN).await;
        let live = LiveSession {
            handle: revoked.clone(),
            record: b.get(&revoked).await.unwrap().unwrap().into(),
        };
        b.delete_all(&[live]).await.unwrap();
        assert!(
            !b.unindex(&revoked).await.unwrap(),
            "revoked: unindexed with it"
        );
    }

    #[tokio::test]
    async fn replace_only_rewrites_a_live_record() {
        let (clock, b) = backend();
        let h = put(&b, &clock, "1", MIN).await;
        let mut newer = record("1", clock.now_ms());
        newer.last_seen_ms += 30_000;
        b.replace(&h, &newer, 5 * MIN).await.unwrap();
        clock.advance(std::time::Duration::from_millis(4 * MIN));
        assert_eq!(
            b.get(&h).await.unwrap(),
            Some(newer.clone()),
            "new TTL applies"
        );
        let unknown = SessionId::generate().unwrap().handle();
        b.replace(&unknown, &newer, 5 * MIN).await.unwrap();
        assert!(b.get(&unknown).await.unwrap().is_none());
        clock.advance(std::time::Duration::from_millis(MIN));
        b.replace(&h, &newer, 5 * MIN).await.unwrap();
        assert!(b.get(&h).await.unwrap().is_none(), "expired stays expired");
    }

    #[tokio::test]
    async fn creation_forgets_index_entries_older_than_the_absolute_timeout() {
        let (clock, b) = backend();
        let old = put(&b, &clock, "1", MIN).await;
        clock.advance(std::time::Duration::from_millis(61 * MIN));
        put(&b, &clock, "2", MIN).await;
        assert!(
            !b.unindex(&old).await.unwrap(),
            "pruned by age at the next login"
        );
    }

    #[tokio::test]
    async fn switched_off_every_call_fails_and_nothing_is_lost() {
        let (clock, b) = backend();
        let h = put(&b, &clock, "1", MIN).await;
        b.set_down(true);
        assert!(b.ping().await.is_err());
        assert!(b.get(&h).await.is_err());
        assert!(b.list(None).await.is_err());
        assert!(b.unindex(&h).await.is_err());
        let rec = record("1", clock.now_ms());
        assert!(b.create(&h, &rec, MIN, MIN, None).await.is_err());
        assert!(b.replace(&h, &rec, MIN).await.is_err());
        b.set_down(false);
        assert!(b.ping().await.is_ok());
        assert_eq!(b.list(None).await.unwrap().live.len(), 1);
    }

    #[tokio::test]
    async fn listing_prunes_dead_index_entries_as_redis_does() {
        let (clock, b) = backend();
        let h = put(&b, &clock, "1", MIN).await;
        clock.advance(std::time::Duration::from_millis(MIN));
        let listing = b.list(None).await.unwrap();
        assert!(listing.live.is_empty());
        assert_eq!(
            listing.expired,
            std::slice::from_ref(&h),
            "the listing reports what it pruned"
        );
        assert!(!b.unindex(&h).await.unwrap(), "list should have pruned it");
        assert!(b.list(None).await.unwrap().expired.is_empty(), "once");
    }

    #[tokio::test]
    async fn a_users_listing_prunes_and_reports_only_that_users_dead_entries() {
        let (clock, b) = backend();
        let mine = put(&b, &clock, "1", MIN).await;
        let theirs = put(&b, &clock, "2", MIN).await;
        clock.advance(std::time::Duration::from_millis(MIN));
        assert_eq!(b.list(Some("1")).await.unwrap().expired, [mine]);
        assert!(
            b.unindex(&theirs).await.unwrap(),
            "another user's entry is left alone"
        );
    }
}
