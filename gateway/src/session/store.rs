//! The session store: ids, deadlines and touches over a [`SessionBackend`] (Redis in
//! production, memory in unit tests).
//!
//! A record's TTL is the idle timeout, refreshed at most once per touch interval, and never set
//! past the absolute deadline, so the backend itself drops a session when either limit passes.
//! Lookups check both deadlines again against the [`Clock`]. Index entries of sessions that
//! expired are removed lazily (when the index is read, and by age on every login), so the
//! indexes stay bounded by the sessions created within one absolute timeout. A request costs
//! one read; sliding the idle timeout costs one conditional write per touch interval.

use std::sync::Arc;
use std::time::Duration;

use super::backend::{Created, Listing, SessionBackend, UserLimit};
use super::cache::ValidationCache;
use super::claims::OncePerInterval;
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
    recent_touches: OncePerInterval,
    /// Sessions read recently, while Redis's invalidations are proven to reach us.
    cache: Option<Arc<ValidationCache>>,
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
            recent_touches: OncePerInterval::new(RECENT_TOUCHES_PRUNE_AT),
            cache: None,
        }
    }

    /// Answers lookups from `cache` while it is live.
    pub fn with_cache(mut self, cache: Arc<ValidationCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    pub fn cache(&self) -> Option<&Arc<ValidationCache>> {
        self.cache.as_ref()
    }

    /// When a record read now stops being usable: its idle or absolute deadline, whichever
    /// comes first.
    fn usable_until_ms(&self, record: &SessionRecord) -> u64 {
        record
            .last_seen_ms
            .saturating_add(self.idle.as_millis() as u64)
            .min(record.absolute_deadline_ms(self.absolute))
    }

    /// Now, by the store's clock (the one every deadline is measured on).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Whether the backend answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.backend.ping().await
    }

    /// Time to live for a record just written (last seen now): until it stops being usable.
    fn ttl_ms(&self, record: &SessionRecord) -> u64 {
        self.usable_until_ms(record)
            .saturating_sub(record.last_seen_ms)
            .max(1)
    }

    /// Stores a brand-new session for the user in `record`.
    pub async fn create(&self, record: &SessionRecord) -> Result<CreateOutcome, StoreError> {
        let id = SessionId::generate().map_err(|e| StoreError::Internal(e.to_string()))?;
        let handle = id.handle();
        let ttl = self.ttl_ms(record);
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
        let now = self.clock.now_ms();
        if let Some(record) = self.cache.as_ref().and_then(|c| c.get(&handle, now)) {
            return Ok(Lookup::Live(LiveSession { handle, record }));
        }
        let ticket = self.cache.as_ref().map(|c| c.ticket());
        let Some(live) = self.get(&handle).await? else {
            return self.missing(handle).await;
        };
        let now = self.clock.now_ms();
        if now >= self.usable_until_ms(&live.record) {
            self.delete(&live).await?;
            return Ok(Lookup::Expired {
                handle: live.handle.clone(),
                session: Some(live),
            });
        }
        if let (Some(cache), Some(ticket)) = (&self.cache, ticket) {
            let until = self.usable_until_ms(&live.record);
            cache.insert(ticket, &live.handle, &live.record, until);
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
        now.saturating_sub(session.record.last_seen_ms) >= interval
            && self.recent_touches.claim(&session.handle, now, interval)
    }

    /// Slides the idle timeout: rewrites last-seen and the TTL, only if the session still exists.
    pub async fn touch(&self, session: &LiveSession, now: u64) -> Result<(), StoreError> {
        let mut record = SessionRecord::clone(&session.record);
        record.last_seen_ms = now;
        let ttl = self.ttl_ms(&record);
        self.backend.replace(&session.handle, &record, ttl).await?;
        if let Some(cache) = &self.cache {
            cache.invalidate([&session.handle]);
        }
        Ok(())
    }

    /// Writes a changed record (the user's roles or name, after a refresh) in place, keeping
    /// its deadlines; only if the session still exists.
    pub async fn rewrite(&self, session: &LiveSession) -> Result<(), StoreError> {
        let ttl = self.ttl_ms(&session.record);
        self.backend
            .replace(&session.handle, &session.record, ttl)
            .await?;
        if let Some(cache) = &self.cache {
            cache.invalidate([&session.handle]);
        }
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
        Ok(self.backend.get(handle).await?.map(|record| LiveSession {
            handle: handle.clone(),
            record: record.into(),
        }))
    }

    /// Live sessions of one user (or of everyone), oldest first.
    pub async fn list(&self, user_id: Option<&str>) -> Result<Listing, StoreError> {
        self.backend.list(user_id).await
    }

    /// Ends every session in `sessions`; returns how many it was given (callers pass sessions
    /// they just read as live).
    pub async fn delete_all(&self, sessions: &[LiveSession]) -> Result<usize, StoreError> {
        self.backend.delete_all(sessions).await?;
        // This instance stops accepting them at once; the others when Redis tells them.
        if let Some(cache) = &self.cache {
            cache.invalidate(sessions.iter().map(|s| &s.handle));
        }
        Ok(sessions.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    const MIN: u64 = 60_000;

    fn app(session: &'static str) -> TestApp {
        TestApp::with(Settings {
            session,
            ..Settings::default()
        })
    }

    /// Idle 10 minutes, absolute 15, touches at most once a minute.
    fn short() -> TestApp {
        app("idle_timeout = \"10m\"\nabsolute_timeout = \"15m\"\ntouch_interval = \"1m\"")
    }

    fn record(user_id: &str, at_ms: u64) -> SessionRecord {
        SessionRecord {
            user_id: user_id.to_string(),
            username: format!("user{user_id}"),
            roles: vec!["user".to_string()],
            created_at_ms: at_ms,
            last_seen_ms: at_ms,
            ip: CLIENT_IP.to_string(),
            user_agent: "test".to_string(),
        }
    }

    async fn create(t: &TestApp, user_id: &str) -> (SessionId, LiveSession) {
        let rec = record(user_id, t.clock.now_ms());
        match t.app.store.create(&rec).await.unwrap() {
            CreateOutcome::Created { id, handle, .. } => (
                id,
                LiveSession {
                    handle,
                    record: rec.into(),
                },
            ),
            CreateOutcome::LimitReached => panic!("no limit expected"),
        }
    }

    fn advance(t: &TestApp, ms: u64) {
        t.advance(Duration::from_millis(ms));
    }

    async fn stored(t: &TestApp, s: &LiveSession) -> bool {
        t.app.store.get(&s.handle).await.unwrap().is_some()
    }

    #[tokio::test]
    async fn a_touch_never_stretches_a_session_past_its_absolute_deadline() {
        let t = short();
        let (_, s) = create(&t, "1").await;
        advance(&t, 9 * MIN);
        t.app.store.touch(&s, t.clock.now_ms()).await.unwrap();
        advance(&t, 6 * MIN - 1);
        assert!(
            stored(&t, &s).await,
            "touched: alive past the first idle deadline"
        );
        advance(&t, 1);
        // The idle timeout would allow four more minutes; the record itself is gone.
        assert!(!stored(&t, &s).await);
        assert_eq!(t.sessions.stored(), 0);
    }

    #[tokio::test]
    async fn a_touch_slides_the_idle_deadline_from_now() {
        let t = short();
        let (id, s) = create(&t, "1").await;
        advance(&t, 5 * MIN);
        let now = t.clock.now_ms();
        t.app.store.touch(&s, now).await.unwrap();
        let stored = t.app.store.get(&s.handle).await.unwrap().unwrap();
        assert_eq!(stored.record.last_seen_ms, now);
        assert_eq!(stored.record.created_at_ms, s.record.created_at_ms);
        advance(&t, 10 * MIN - 1);
        assert!(matches!(
            t.app.store.lookup(&id).await.unwrap(),
            Lookup::Live(_)
        ));
        advance(&t, 1);
        assert!(matches!(
            t.app.store.lookup(&id).await.unwrap(),
            Lookup::Expired { .. }
        ));
    }

    #[tokio::test]
    async fn an_expired_session_is_told_from_a_revoked_one_once() {
        let t = short();
        let (expired, _) = create(&t, "1").await;
        let (revoked, live) = create(&t, "1").await;
        t.app.store.delete(&live).await.unwrap();
        advance(&t, 10 * MIN);
        match t.app.store.lookup(&expired).await.unwrap() {
            Lookup::Expired { handle, session } => {
                assert_eq!(handle, expired.handle());
                assert!(session.is_none(), "the backend already dropped the record");
            }
            other => panic!("expected expired, got {other:?}"),
        }
        // Reported once: the next look is plain missing.
        assert!(matches!(
            t.app.store.lookup(&expired).await.unwrap(),
            Lookup::Missing
        ));
        assert!(matches!(
            t.app.store.lookup(&revoked).await.unwrap(),
            Lookup::Missing
        ));
        let never = SessionId::generate().unwrap();
        assert!(matches!(
            t.app.store.lookup(&never).await.unwrap(),
            Lookup::Missing
        ));
    }

    #[tokio::test]
    async fn a_record_past_its_deadline_by_our_clock_is_expired_and_deleted() {
        // Written by an instance whose clock runs 11 minutes behind ours: the backend keeps it
        // for the idle timeout, but by our clock it is already past.
        let t = short();
        let rec = record("1", t.clock.now_ms() - 11 * MIN);
        let CreateOutcome::Created { id, handle, .. } = t.app.store.create(&rec).await.unwrap()
        else {
            panic!("no limit");
        };
        match t.app.store.lookup(&id).await.unwrap() {
            Lookup::Expired {
                session: Some(s), ..
            } => assert_eq!(*s.record, rec),
            other => panic!("expected expired with its record, got {other:?}"),
        }
        assert!(t.app.store.get(&handle).await.unwrap().is_none());
        assert!(matches!(
            t.app.store.lookup(&id).await.unwrap(),
            Lookup::Missing
        ));
    }

    #[tokio::test]
    async fn a_touch_never_brings_back_a_deleted_or_expired_session() {
        let t = short();
        let (_, deleted) = create(&t, "1").await;
        let (_, expired) = create(&t, "1").await;
        t.app.store.delete(&deleted).await.unwrap();
        t.app.store.touch(&deleted, t.clock.now_ms()).await.unwrap();
        assert!(!stored(&t, &deleted).await);
        advance(&t, 10 * MIN);
        t.app.store.touch(&expired, t.clock.now_ms()).await.unwrap();
        assert!(!stored(&t, &expired).await);
        assert!(t.app.store.list(None).await.unwrap().live.is_empty());
    }

    #[tokio::test]
    async fn listing_is_oldest_first_and_leaves_out_the_dead() {
        let t = short();
        let (_, a) = create(&t, "1").await;
        advance(&t, MIN);
        let (_, b) = create(&t, "2").await;
        advance(&t, MIN);
        let (_, c) = create(&t, "1").await;
        advance(&t, MIN);
        let (_, d) = create(&t, "1").await;
        t.app.store.delete(&c).await.unwrap();
        let handles = |v: Vec<LiveSession>| v.into_iter().map(|s| s.handle).collect::<Vec<_>>();
        assert_eq!(
            handles(t.app.store.list(None).await.unwrap().live),
            [a.handle.clone(), b.handle.clone(), d.handle.clone()]
        );
        assert_eq!(
            handles(t.app.store.list(Some("1")).await.unwrap().live),
            [a.handle.clone(), d.handle.clone()]
        );
        advance(&t, 7 * MIN); // a is 10 minutes idle
        assert_eq!(
            handles(t.app.store.list(None).await.unwrap().live),
            [b.handle.clone(), d.handle.clone()]
        );
        assert!(t.app.store.list(Some("3")).await.unwrap().live.is_empty());
    }

    #[tokio::test]
    async fn delete_all_ends_exactly_the_sessions_given() {
        let t = short();
        let (_, a1) = create(&t, "1").await;
        let (_, a2) = create(&t, "1").await;
        let (_, b) = create(&t, "2").await;
        let n = t
            .app
            .store
            .delete_all(&[a1.clone(), a2.clone()])
            .await
            .unwrap();
        assert_eq!(n, 2);
        assert!(!stored(&t, &a1).await && !stored(&t, &a2).await);
        assert!(stored(&t, &b).await);
        assert_eq!(t.app.store.delete_all(&[]).await.unwrap(), 0);
        t.sessions.set_down(true);
        assert!(t
            .app
            .store
            .delete_all(std::slice::from_ref(&b))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn the_per_user_limit_evicts_the_oldest_live_sessions() {
        let t = app("max_per_user = 2");
        let (_, first) = create(&t, "1").await;
        t.advance(Duration::from_secs(1));
        let (_, second) = create(&t, "1").await;
        t.advance(Duration::from_secs(1));
        let (_, other_user) = create(&t, "2").await;
        let rec = record("1", t.clock.now_ms());
        let CreateOutcome::Created {
            evicted, handle, ..
        } = t.app.store.create(&rec).await.unwrap()
        else {
            panic!("evict_oldest never refuses");
        };
        assert_eq!(evicted.as_slice(), std::slice::from_ref(&first.handle));
        assert!(!stored(&t, &first).await);
        assert!(stored(&t, &second).await);
        assert!(t.app.store.get(&handle).await.unwrap().is_some());
        assert!(stored(&t, &other_user).await, "the limit is per user");
    }

    #[tokio::test]
    async fn the_per_user_limit_can_refuse_and_counts_only_live_sessions() {
        let t = app("max_per_user = 1\non_limit = \"reject\"\nidle_timeout = \"10m\"");
        let (_, first) = create(&t, "1").await;
        let rec = record("1", t.clock.now_ms());
        assert!(matches!(
            t.app.store.create(&rec).await.unwrap(),
            CreateOutcome::LimitReached
        ));
        assert_eq!(t.app.store.list(Some("1")).await.unwrap().live.len(), 1);
        assert!(stored(&t, &first).await);
        create(&t, "2").await;
        // Once the first has expired it no longer holds the user's place.
        advance(&t, 10 * MIN);
        create(&t, "1").await;
    }

    #[tokio::test]
    async fn a_burst_of_requests_claims_one_touch() {
        let t = short();
        let (_, s) = create(&t, "1").await;
        let (_, other) = create(&t, "2").await;
        let now = t.clock.now_ms();
        assert!(!t.app.store.claim_touch(&s, now + MIN - 1), "not due yet");
        let wins = (0..50)
            .filter(|_| t.app.store.claim_touch(&s, now + MIN))
            .count();
        assert_eq!(wins, 1);
        assert!(
            t.app.store.claim_touch(&other, now + MIN),
            "each session has its own"
        );
        // Requests still reading the old last-seen a little later do not write again…
        assert!(!t.app.store.claim_touch(&s, now + MIN + MIN / 2));
        // …but after another interval the claim is due again.
        assert!(t.app.store.claim_touch(&s, now + 2 * MIN));
    }

    #[tokio::test]
    async fn concurrent_claims_from_many_tasks_agree_on_one_winner() {
        let t = short();
        let (_, s) = create(&t, "1").await;
        let due = t.clock.now_ms() + MIN;
        let store = t.app.store.clone();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                let s = s.clone();
                std::thread::spawn(move || (0..20).filter(|_| store.claim_touch(&s, due)).count())
            })
            .collect();
        let wins: usize = threads.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(wins, 1);
    }

    /// A cache proven live, as the tracker keeps it in production.
    fn with_live_cache() -> TestApp {
        let t = short();
        let cache = t.app.store.cache().expect("cache on by default");
        cache.proven(std::time::Instant::now());
        t
    }

    #[tokio::test]
    async fn a_live_cache_answers_without_the_store_and_forgets_what_this_instance_ends() {
        let t = with_live_cache();
        let (id, live) = create(&t, "1").await;
        assert!(matches!(t.app.store.lookup(&id).await, Ok(Lookup::Live(_))));
        t.sessions.set_down(true);
        assert!(
            matches!(t.app.store.lookup(&id).await, Ok(Lookup::Live(_))),
            "answered from the cache while the store is down"
        );
        t.sessions.set_down(false);
        t.app.store.delete(&live).await.unwrap();
        assert!(
            matches!(t.app.store.lookup(&id).await, Ok(Lookup::Missing)),
            "ended here: not served from the cache"
        );
    }

    #[tokio::test]
    async fn a_cached_session_still_expires_on_time() {
        let t = with_live_cache();
        let (id, _) = create(&t, "1").await;
        assert!(matches!(t.app.store.lookup(&id).await, Ok(Lookup::Live(_))));
        t.advance(std::time::Duration::from_millis(10 * MIN));
        t.app
            .store
            .cache()
            .unwrap()
            .proven(std::time::Instant::now());
        assert!(
            !matches!(t.app.store.lookup(&id).await, Ok(Lookup::Live(_))),
            "idle past the timeout"
        );
    }
}
