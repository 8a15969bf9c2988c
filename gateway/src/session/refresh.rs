//! User changes reaching live sessions (`[login] refresh_interval`): a session keeps the
//! roles and the active state its user had at login only until the interval passes; then its
//! user is read again from the users file or the app's table.
//!
//! - Deactivated (`disabled`, `is_active = false`), deleted or renamed (the name now belongs to
//!   another id, or to no one): the session ends (audited as `session_ended`, reason
//!   `user_disabled` or `user_removed`) and the request is refused like any ended session.
//! - Roles changed: written into the record, so the identity headers carry them at once.
//! - The source cannot be read (the database down): the last known state is kept, the failure
//!   logged, and the next request tries again.
//!
//! Each instance asks once per interval per session (deduplicated like the touch), counted
//! from the session's creation; `0s` asks on every request.

use std::time::Duration;

use super::claims::OncePerInterval;
use super::{Handle, LiveSession};

/// Most sessions remembered before the stale entries are swept.
const PRUNE_AT: usize = 100_000;

pub struct Refresher {
    interval: Option<Duration>,
    /// When this instance last asked about each session.
    asked: OncePerInterval,
}

impl Refresher {
    pub fn new(interval: Option<Duration>) -> Refresher {
        Refresher {
            interval,
            asked: OncePerInterval::new(PRUNE_AT),
        }
    }

    /// Whether `session`'s user is due to be read again, and if so claims the read: of several
    /// requests that find it due at once, one gets `true`.
    pub fn claim(&self, session: &LiveSession, now: u64) -> bool {
        let Some(interval) = self.interval.map(|i| i.as_millis() as u64) else {
            return false;
        };
        if interval > 0 && now.saturating_sub(session.record.created_at_ms) < interval {
            return false;
        }
        interval == 0 || self.asked.claim(&session.handle, now, interval)
    }

    /// Gives a claim back (the source could not be read), so the next request asks again.
    pub fn release(&self, handle: &Handle) {
        self.asked.release(handle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{SessionId, SessionRecord};
    use std::sync::Arc;

    fn session(created_at_ms: u64) -> LiveSession {
        LiveSession {
            handle: SessionId::generate().unwrap().handle(),
            record: Arc::new(SessionRecord {
                user_id: "1".into(),
                username: "alice".into(),
                roles: vec!["user".into()],
                created_at_ms,
                last_seen_ms: created_at_ms,
                ip: String::new(),
                user_agent: String::new(),
            }),
        }
    }

    const MIN: u64 = 60_000;

    #[test]
    fn asks_once_per_interval_counted_from_the_login() {
        let r = Refresher::new(Some(Duration::from_secs(5 * 60)));
        let s = session(0);
        assert!(!r.claim(&s, 4 * MIN), "fresh from the login");
        assert!(r.claim(&s, 5 * MIN));
        assert!(!r.claim(&s, 5 * MIN), "one request of several asks");
        assert!(!r.claim(&s, 9 * MIN));
        assert!(r.claim(&s, 10 * MIN));
        r.release(&s.handle);
        assert!(
            r.claim(&s, 10 * MIN),
            "a failed read is retried at the next request"
        );
    }

    #[test]
    fn zero_asks_every_time_and_off_never() {
        let every = Refresher::new(Some(Duration::ZERO));
        let never = Refresher::new(None);
        let s = session(0);
        for t in [0, 1, 1, 2] {
            assert!(every.claim(&s, t));
            assert!(!never.claim(&s, t * MIN * 1000));
        }
    }
}
