//! Sessions in a `HashMap`, with the Redis backend's semantics (TTLs on a [`Clock`], indexes
//! that outlive expired records, the per-user limit applied atomically), for unit tests of
//! everything above the store. It can be switched off to play a Redis outage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::{Created, SessionBackend, UserLimit};
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

    async fn list(&self, user_id: Option<&str>) -> Result<Vec<LiveSession>, StoreError> {
        let now = self.clock.now_ms();
        let data = self.data()?;
        let mut entries: Vec<&(u64, Handle)> = data.index.iter().collect();
        entries.sort();
        Ok(entries
            .into_iter()
            .filter_map(|(_, handle)| {
                let record = data.live(handle, now)?;
                (user_id.is_none_or(|id| id == record.user_id)).then(|| LiveSession {
                    handle: handle.clone(),
                    record: record.clone(),
                })
            })
            .collect())
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
