//! [`OncePerInterval`]: of the requests that find a session's periodic work due at the same
//! moment (sliding its idle timeout, reading its user again), one does it and the others go on
//! with what they have. Per instance: each instance does the work at most once per interval.

use std::collections::HashMap;
use std::sync::Mutex;

use super::Handle;

pub struct OncePerInterval {
    /// When each session's work was last claimed here.
    claimed: Mutex<HashMap<Handle, u64>>,
    /// Past this many sessions remembered, the claims older than an interval are forgotten.
    prune_at: usize,
}

impl OncePerInterval {
    pub fn new(prune_at: usize) -> OncePerInterval {
        OncePerInterval {
            claimed: Mutex::new(HashMap::new()),
            prune_at,
        }
    }

    /// Claims `handle`'s work at `now`, unless it was claimed less than `interval` ago.
    pub fn claim(&self, handle: &Handle, now: u64, interval: u64) -> bool {
        let Ok(mut claimed) = self.claimed.lock() else {
            // A poisoned map only costs a duplicate write.
            return true;
        };
        if claimed
            .get(handle)
            .is_some_and(|at| now.saturating_sub(*at) < interval)
        {
            return false;
        }
        if claimed.len() >= self.prune_at {
            claimed.retain(|_, at| now.saturating_sub(*at) < interval);
        }
        claimed.insert(handle.clone(), now);
        true
    }

    /// Gives a claim back (the work failed), so the next request claims it again.
    pub fn release(&self, handle: &Handle) {
        if let Ok(mut claimed) = self.claimed.lock() {
            claimed.remove(handle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionId;

    #[test]
    fn one_claim_per_interval_and_a_released_one_is_claimed_again() {
        let once = OncePerInterval::new(100);
        let h = SessionId::generate().unwrap().handle();
        assert!(once.claim(&h, 1_000, 500));
        assert!(!once.claim(&h, 1_499, 500));
        assert!(once.claim(&h, 1_500, 500));
        once.release(&h);
        assert!(once.claim(&h, 1_501, 500));
    }

    #[test]
    fn stale_claims_are_forgotten_past_the_bound() {
        let once = OncePerInterval::new(3);
        let handles: Vec<Handle> = (0..3)
            .map(|_| SessionId::generate().unwrap().handle())
            .collect();
        for h in &handles {
            assert!(once.claim(h, 0, 10));
        }
        let late = SessionId::generate().unwrap().handle();
        assert!(once.claim(&late, 100, 10));
        assert_eq!(
            once.claimed.lock().unwrap().len(),
            1,
            "the stale three swept"
        );
    }
}
