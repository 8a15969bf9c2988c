//! Aggregation of the events anyone can cause at will (failed and throttled logins, forged
//! cookies), so that a flood costs the trail a few lines instead of one line per request.
//!
//! The first event of a kind (event, reason, username, client IP) is recorded at once, as
//! it happened. Repeats of it within [`WINDOW_MS`] are only counted; when the window ends they
//! become one line with `count` (how many) and `since` (when the first of them happened).
//! An attacker who varies the username can open at most [`MAX_KINDS`] kinds per window;
//! beyond that, repeats are counted per event and reason with `"ip":"*"` and no username.
//! So a flood of any size writes at most about `2 × MAX_KINDS` lines a minute per instance.

use std::collections::HashMap;
use std::sync::Mutex;

use super::AuditEvent;

/// How long repeats of one kind are folded into one line.
pub const WINDOW_MS: u64 = 60_000;
/// Distinct kinds tracked per window before the rest fold into one line per event and reason.
pub const MAX_KINDS: usize = 256;
/// The client IP written on the lines that stand for many kinds at once.
pub const MANY: &str = "*";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Kind {
    event: &'static str,
    reason: Option<String>,
    username: Option<String>,
    ip: String,
}

impl Kind {
    fn of(event: &AuditEvent) -> Kind {
        Kind {
            event: event.event,
            reason: event.reason.clone(),
            username: event.username.clone(),
            ip: event.ip.clone(),
        }
    }

    fn folded(self) -> Kind {
        Kind {
            username: None,
            ip: MANY.to_string(),
            ..self
        }
    }
}

struct Tally {
    opened_ms: u64,
    /// The event the summary line is made from (the first repeat).
    sample: Option<AuditEvent>,
    repeats: u64,
}

#[derive(Default)]
pub struct AttemptTally {
    kinds: Mutex<HashMap<Kind, Tally>>,
}

impl AttemptTally {
    /// Takes one event; returns it if it must be recorded now (the first of its kind).
    pub fn admit(&self, event: AuditEvent, now_ms: u64) -> Option<AuditEvent> {
        let Ok(mut kinds) = self.kinds.lock() else {
            // A poisoned lock only means another thread panicked mid-count: record unfolded.
            return Some(event);
        };
        let mut kind = Kind::of(&event);
        if !kinds.contains_key(&kind) && kinds.len() >= MAX_KINDS {
            kind = kind.folded();
            let tally = kinds.entry(kind).or_insert_with(|| Tally {
                opened_ms: now_ms,
                sample: None,
                repeats: 0,
            });
            tally.repeats += 1;
            tally.sample.get_or_insert_with(|| folded_sample(event));
            return None;
        }
        match kinds.get_mut(&kind) {
            Some(tally) => {
                tally.repeats += 1;
                tally.sample.get_or_insert(event);
                None
            }
            None => {
                kinds.insert(
                    kind,
                    Tally {
                        opened_ms: now_ms,
                        sample: None,
                        repeats: 0,
                    },
                );
                Some(event)
            }
        }
    }

    /// Closes the windows that have ended (all of them with `everything`, at shutdown) and
    /// returns one summary line for each that saw repeats.
    pub fn close_windows(&self, now_ms: u64, everything: bool) -> Vec<AuditEvent> {
        let Ok(mut kinds) = self.kinds.lock() else {
            return Vec::new();
        };
        let mut summaries = Vec::new();
        kinds.retain(|_, tally| {
            let ended = everything || now_ms.saturating_sub(tally.opened_ms) >= WINDOW_MS;
            if ended {
                if let Some(sample) = tally.sample.take() {
                    summaries.push(sample.summary(tally.repeats));
                }
            }
            !ended
        });
        summaries
    }
}

fn folded_sample(event: AuditEvent) -> AuditEvent {
    AuditEvent {
        username: None,
        user_id: None,
        ip: MANY.to_string(),
        user_agent: String::new(),
        ..event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::request::Origin;

    fn failure(username: &str, ip: &str) -> AuditEvent {
        let origin = Origin {
            ip: ip.parse().ok(),
            user_agent: None,
            request_id: None,
        };
        AuditEvent::new("login_failure", "user", &origin)
            .username(username)
            .reason("wrong_password")
    }

    #[test]
    fn the_first_of_a_kind_is_recorded_and_repeats_become_one_counted_line() {
        let tally = AttemptTally::default();
        assert!(tally.admit(failure("alice", "192.0.2.1"), 0).is_some());
        for t in 1..=500 {
            assert!(tally.admit(failure("alice", "192.0.2.1"), t).is_none());
        }
        assert!(tally.close_windows(WINDOW_MS - 1, false).is_empty());
        let summaries = tally.close_windows(WINDOW_MS, false);
        assert_eq!(summaries.len(), 1);
        assert_eq!(summaries[0].count, Some(500));
        assert_eq!(summaries[0].username.as_deref(), Some("alice"));
        assert!(summaries[0].since.is_some());
        // The window is closed: the next one is recorded at once again.
        assert!(tally
            .admit(failure("alice", "192.0.2.1"), WINDOW_MS)
            .is_some());
    }

    #[test]
    fn a_kind_without_repeats_adds_no_summary() {
        let tally = AttemptTally::default();
        assert!(tally.admit(failure("alice", "192.0.2.1"), 0).is_some());
        assert!(tally.admit(failure("bob", "192.0.2.1"), 0).is_some());
        assert!(tally.admit(failure("alice", "192.0.2.2"), 0).is_some());
        assert!(tally.close_windows(0, true).is_empty());
    }

    #[test]
    fn a_username_spray_is_bounded_per_window() {
        let tally = AttemptTally::default();
        let recorded_now = (0..10_000)
            .filter(|i| {
                tally
                    .admit(failure(&format!("u{i}"), "192.0.2.1"), 0)
                    .is_some()
            })
            .count();
        assert_eq!(recorded_now, MAX_KINDS);
        let summaries = tally.close_windows(WINDOW_MS, false);
        assert_eq!(summaries.len(), 1, "one line for the rest");
        assert_eq!(summaries[0].count, Some(10_000 - MAX_KINDS as u64));
        assert_eq!(summaries[0].ip, MANY);
        assert_eq!(summaries[0].username, None);
    }

    #[test]
    fn shutdown_closes_every_window() {
        let tally = AttemptTally::default();
        tally.admit(failure("alice", "192.0.2.1"), 0);
        tally.admit(failure("alice", "192.0.2.1"), 1);
        assert_eq!(tally.close_windows(2, true).len(), 1);
        assert!(tally.close_windows(WINDOW_MS * 2, true).is_empty());
    }
}
