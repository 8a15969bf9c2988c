//! The session store: ids, deadlines and touches over a [`SessionBackend`] (Redis in
//! production, memory in unit tests).
//!
//! A record's TTL is the idle timeout, refreshed at most once per touch interval, and never set
//! past the absolute deadline, so the backend itself drops a session when either limit passes.
//! Lookups check both deadlines again against the [`Clock`]. Index entries of sessions that
//! expired are removed lazily (when the index is read, and by age on every login), so the
//! indexes stay bounded by the sessions created within one absolute timeout. A request costs
//! one read; sliding the idle timeout costs one conditional write per touch interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::backend::{Created, SessionBackend, UserLimit};
use super::{Handle, LiveSession, SessionId, SessionRecord};
use crate::clock::Clock;
use crate::config::SessionSettings;
use crate::errors::StoreError;

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
    backend: Arc<dyn SessionBackend>,
    clock: Arc<dyn Clock>,
    idle: Duration,
    absolute: Duration,
    touch_interval: Duration,
    limit: Option<UserLimit>,
    /// Sessions this process has touched recently (handle -> when), so a burst of parallel
    /// requests that all read the same stale last-seen time writes once, not once each.
    recent_touches: Mutex<HashMap<Handle, u64>>,
}

/// Past this many remembered touches, forget the ones older than a touch interval.
const RECENT_TOUCHES_PRUNE_AT: usize = 10_000;

impl SessionStore {
    pub fn new(
        backend: Arc<dyn SessionBackend>,
        clock: Arc<dyn Clock>,
        settings: &SessionSettings,
    ) -> Self {
        SessionStore {
            backend,
            clock,
            idle: settings.idle_timeout,
            absolute: settings.absolute_timeout,
            touch_interval: settings.touch_interval,
            limit: settings.max_per_user.map(|max| UserLimit {
                max,
                policy: settings.on_limit,
            }),
            recent_touches: Mutex::new(HashMap::new()),
        }
    }

    /// Now, by the store's clock (the one every deadline is measured on).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Whether the backend answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.backend.ping().await
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
        let id = SessionId::generate().map_err(|e| StoreError::Internal(e.to_string()))?;
        let handle = id.handle();
        let ttl = self.ttl_ms(record, record.created_at_ms);
        let absolute = self.absolute.as_millis() as u64;
        match self
            .backend
            .create(&handle, record, ttl, absolute, self.limit)
            .await?
        {
            Created::LimitReached => Ok(CreateOutcome::LimitReached),
            Created::Stored { evicted } => Ok(CreateOutcome::Created {
                id,
                handle,
                evicted,
            }),
        }
    }

    /// The session a request presents, checked against both deadlines. One `GET`.
    pub async fn lookup(&self, id: &SessionId) -> Result<Lookup, StoreError> {
        let handle = id.handle();
        let Some(live) = self.get(&handle).await? else {
            return self.missing(handle).await;
        };
        let now = self.clock.now_ms();
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
        Ok(if self.backend.unindex(&handle).await? {
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
        let ttl = self.ttl_ms(&record, now);
        self.backend.replace(&session.handle, &record, ttl).await
    }

    /// Ends one session everywhere at once.
    pub async fn delete(&self, session: &LiveSession) -> Result<(), StoreError> {
        self.delete_all(std::slice::from_ref(session))
            .await
            .map(|_| ())
    }

    /// The live session under `handle`, if any.
    pub async fn get(&self, handle: &Handle) -> Result<Option<LiveSession>, StoreError> {
        Ok(self.backend.get(handle).await?.map(|record| LiveSession {
            handle: handle.clone(),
            record,
        }))
    }

    /// Live sessions of one user (or of everyone), oldest first.
    pub async fn list(&self, user_id: Option<&str>) -> Result<Vec<LiveSession>, StoreError> {
        self.backend.list(user_id).await
    }

    /// Ends every session in `sessions`; returns how many were still live.
    pub async fn delete_all(&self, sessions: &[LiveSession]) -> Result<usize, StoreError> {
        self.backend.delete_all(sessions).await?;
        Ok(sessions.len())
    }
}
