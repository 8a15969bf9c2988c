//! The one question every protected request asks: which session, if any, does its cookie
//! present? A forged cookie is refused without asking the store; a genuine one costs one read.
//! Sliding the idle timeout happens here too, at most once per touch interval and off the
//! request's path.

use std::sync::Arc;

use pingora::http::RequestHeader;

use super::refresh::Refresher;
use super::store::Lookup;
use super::{Keys, LiveSession, SessionStore};
use crate::audit::{Audit, AuditEvent};
use crate::auth::credentials::{Authenticator, UserNow};
use crate::errors::StoreError;
use crate::metrics::{EndReason, Metrics};
use crate::web::cookies;
use crate::web::request::Origin;

/// A browser may hold several cookies of one name (e.g. set for different paths); only this
/// many are tried, so junk cannot make us do unbounded work.
const MAX_COOKIES_TRIED: usize = 4;

/// What a request's cookie amounts to.
#[derive(Debug)]
pub enum Presented {
    /// No session cookie at all.
    Nothing,
    /// A cookie that is not one we issued (forged, damaged, from another secret).
    Forged,
    /// A genuine cookie whose session is gone (logged out, revoked, expired).
    Ended,
    Live(LiveSession),
}

/// What the check needs: the cookie's name and key, the store, and the audit trail.
pub struct SessionGate<'a> {
    pub cookie_name: &'a str,
    pub keys: &'a Keys,
    pub store: &'a Arc<SessionStore>,
    pub audit: &'a Audit,
    pub metrics: &'a Metrics,
    /// Who the users are now, for `refresh_interval`.
    pub auth: &'a Authenticator,
    pub refresher: &'a Refresher,
}

impl SessionGate<'_> {
    pub async fn presented(
        &self,
        req: &RequestHeader,
        origin: &Origin,
    ) -> Result<Presented, StoreError> {
        let mut values = cookies::each_value(&req.headers, self.cookie_name).peekable();
        if values.peek().is_none() {
            return Ok(Presented::Nothing);
        }
        let Some(id) = values
            .take(MAX_COOKIES_TRIED)
            .find_map(|v| self.keys.open(v))
        else {
            self.audit.record_attempt(
                AuditEvent::new("cookie_rejected", "gateway", origin).reason("bad_signature"),
            );
            return Ok(Presented::Forged);
        };
        match self.store.lookup(&id).await? {
            Lookup::Missing => Ok(Presented::Ended),
            Lookup::Expired { handle, session } => {
                self.metrics.sessions_ended(EndReason::Expired, 1);
                let event = AuditEvent::new("session_expired", "gateway", origin);
                self.audit.record(match &session {
                    Some(session) => event.session(session),
                    None => event.handle(&handle),
                });
                Ok(Presented::Ended)
            }
            Lookup::Live(session) => {
                let now = self.store.now_ms();
                let Some(session) = self.refreshed(session, now, origin).await else {
                    return Ok(Presented::Ended);
                };
                if self.store.claim_touch(&session, now) {
                    let store = self.store.clone();
                    let touched = session.clone();
                    tokio::spawn(async move {
                        if let Err(e) = store.touch(&touched, now).await {
                            log::warn!("could not slide session idle timeout: {e}");
                        }
                    });
                }
                Ok(Presented::Live(session))
            }
        }
    }
}

impl SessionGate<'_> {
    /// The session with its user as the credential sources see them now, when a refresh is
    /// due ([`super::refresh`]); `None` if that ended it.
    async fn refreshed(
        &self,
        mut session: LiveSession,
        now: u64,
        origin: &Origin,
    ) -> Option<LiveSession> {
        if !self.refresher.claim(&session, now) {
            return Some(session);
        }
        let record = &session.record;
        let reason = match self.auth.current(&record.user_id, &record.username).await {
            Ok(UserNow::Active(identity)) => {
                if identity.roles != record.roles || identity.username != record.username {
                    let changed = Arc::make_mut(&mut session.record);
                    changed.roles = identity.roles;
                    changed.username = identity.username;
                    if let Err(e) = self.store.rewrite(&session).await {
                        log::warn!("changed roles not written to the session: {e}");
                    }
                }
                return Some(session);
            }
            Ok(UserNow::Disabled) => "user_disabled",
            Ok(UserNow::Removed) => "user_removed",
            Err(e) => {
                log::warn!("user of a session not re-read, last known state kept: {e}");
                self.refresher.release(&session.handle);
                return Some(session);
            }
        };
        if let Err(e) = self.store.delete(&session).await {
            // Refused now anyway; the next request asks again.
            log::warn!("session of a {reason} user not ended: {e}");
            self.refresher.release(&session.handle);
        } else {
            self.metrics.sessions_ended(EndReason::UserChanged, 1);
            self.audit.record(
                AuditEvent::new("session_ended", "gateway", origin)
                    .session(&session)
                    .reason(reason),
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testing::*;

    const MIN: Duration = Duration::from_secs(60);

    /// Idle 10 minutes, absolute 30, touches at most once a minute.
    fn short_sessions() -> TestApp {
        TestApp::with(Settings {
            session: "idle_timeout = \"10m\"\nabsolute_timeout = \"30m\"\ntouch_interval = \"1m\"",
            ..Settings::default()
        })
    }

    async fn present(t: &TestApp, req: Req) -> Result<Presented, StoreError> {
        t.app.sessions().presented(&req.head, &req.origin()).await
    }

    /// A request with the session, then time for the touch it may have spawned.
    async fn visit(t: &TestApp, cookie: &str) -> Presented {
        let presented = t.presented(cookie).await;
        settle().await;
        presented
    }

    async fn last_seen(t: &TestApp, cookie: &str) -> u64 {
        let live = t.app.store.get(&t.handle_of(cookie)).await.unwrap();
        live.expect("stored").record.last_seen_ms
    }

    #[tokio::test]
    async fn no_cookie_presents_nothing() {
        let t = TestApp::new();
        let other = Req::get("/").cookie("app_session=abc; theme=dark");
        assert!(matches!(
            present(&t, Req::get("/")).await,
            Ok(Presented::Nothing)
        ));
        assert!(matches!(present(&t, other).await, Ok(Presented::Nothing)));
        assert!(t.events.events().is_empty());
    }

    #[tokio::test]
    async fn a_forged_cookie_is_refused_without_asking_the_store() {
        let t = TestApp::new();
        t.sessions.set_down(true);
        let req = Req::get("/")
            .cookie(&t.cookie("made-up"))
            .header("user-agent", "curl/8");
        assert!(matches!(present(&t, req).await, Ok(Presented::Forged)));
        let events = t.events_named("cookie_rejected");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["reason"], "bad_signature");
        assert_eq!(events[0]["ip"], CLIENT_IP);
        assert_eq!(events[0]["user_agent"], "curl/8");
        assert!(
            !events[0].to_string().contains("made-up"),
            "no cookie value in the audit"
        );
    }

    #[tokio::test]
    async fn a_tampered_cookie_is_forged_not_ended() {
        let t = TestApp::new();
        let alice = t.login("alice").await;
        for at in [0, 42, alice.len() - 1] {
            let req = Req::get("/").cookie(&t.cookie(&tampered(&alice, at)));
            assert!(
                matches!(present(&t, req).await, Ok(Presented::Forged)),
                "{at}"
            );
        }
        let other_secret = crate::session::Keys::derive(&crate::env::Secret::new(
            "another-secret-another-secret-0123456789",
        ));
        let id = crate::session::SessionId::generate().unwrap();
        let req = Req::get("/").cookie(&t.cookie(&other_secret.seal(&id)));
        assert!(matches!(present(&t, req).await, Ok(Presented::Forged)));
        assert!(matches!(t.presented(&alice).await, Presented::Live(_)));
    }

    #[tokio::test]
    async fn a_logged_out_cookie_presents_an_ended_session() {
        let t = TestApp::new();
        let alice = t.login("alice").await;
        let reply = t
            .serve(Req::post_json("/logout", serde_json::json!({})).cookie(&t.cookie(&alice)))
            .await;
        assert_eq!(reply.status, 200);
        assert!(matches!(t.presented(&alice).await, Presented::Ended));
        assert!(
            t.events_named("session_expired").is_empty(),
            "a logout is not an expiry"
        );
    }

    #[tokio::test]
    async fn an_idle_session_expires_and_is_reported_once() {
        let t = short_sessions();
        let alice = t.login("alice").await;
        t.advance(Duration::from_secs(30));
        assert!(matches!(visit(&t, &alice).await, Presented::Live(_)));
        // That visit was too soon to slide anything: the idle clock still runs from login.
        t.advance(9 * MIN + Duration::from_secs(30));
        assert!(matches!(t.presented(&alice).await, Presented::Ended));
        assert!(matches!(t.presented(&alice).await, Presented::Ended));
        let expired = t.events_named("session_expired");
        assert_eq!(expired.len(), 1, "{expired:?}");
        assert_eq!(expired[0]["handle"], t.handle_of(&alice).as_str());
        assert_eq!(expired[0]["actor"], "gateway");
    }

    #[tokio::test]
    async fn an_expiry_a_listing_finds_is_reported_once_by_the_listing() {
        let t = short_sessions();
        let alice = t.login("alice").await;
        t.login("bob").await;
        t.advance(10 * MIN + Duration::from_secs(1));
        let by = Req::get("/admin").origin();
        assert!(t.app.live_sessions(None, &by).await.unwrap().is_empty());
        let expired = t.events_named("session_expired");
        assert_eq!(expired.len(), 2, "{expired:?}");
        assert!(expired.iter().all(|e| e["reason"] == "found_by_listing"));
        // Neither another listing nor the returning cookie reports them again.
        assert!(t.app.live_sessions(None, &by).await.unwrap().is_empty());
        assert!(matches!(t.presented(&alice).await, Presented::Ended));
        assert_eq!(t.events_named("session_expired").len(), 2);
        let metrics = String::from_utf8(t.app.metrics.render()).unwrap();
        assert!(
            metrics.contains("gateway_sessions_ended_total{reason=\"expired\"} 2"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn activity_slides_the_idle_deadline() {
        let t = short_sessions();
        let alice = t.login("alice").await;
        t.advance(9 * MIN);
        assert!(matches!(visit(&t, &alice).await, Presented::Live(_)));
        assert_eq!(last_seen(&t, &alice).await, START_MS + 9 * 60_000);
        t.advance(9 * MIN); // 18 minutes in: 8 after the last visit.
        assert!(matches!(visit(&t, &alice).await, Presented::Live(_)));
        t.advance(10 * MIN);
        assert!(matches!(t.presented(&alice).await, Presented::Ended));
    }

    #[tokio::test]
    async fn visits_within_the_touch_interval_write_nothing() {
        let t = short_sessions();
        let alice = t.login("alice").await;
        for _ in 0..5 {
            t.advance(Duration::from_secs(10));
            assert!(matches!(visit(&t, &alice).await, Presented::Live(_)));
            assert_eq!(last_seen(&t, &alice).await, START_MS, "no write yet");
        }
        t.advance(Duration::from_secs(10)); // a minute since login
        assert!(matches!(visit(&t, &alice).await, Presented::Live(_)));
        assert_eq!(last_seen(&t, &alice).await, START_MS + 60_000);
    }

    #[tokio::test]
    async fn the_absolute_timeout_ends_even_a_busy_session() {
        let t = short_sessions();
        let alice = t.login("alice").await;
        for _ in 0..5 {
            t.advance(5 * MIN);
            assert!(matches!(visit(&t, &alice).await, Presented::Live(_)));
        }
        // 25 minutes in, seen just now; the idle timeout would allow 10 more.
        t.advance(5 * MIN);
        assert!(matches!(t.presented(&alice).await, Presented::Ended));
        assert_eq!(t.events_named("session_expired").len(), 1);
    }

    #[tokio::test]
    async fn of_several_cookies_the_first_genuine_one_wins() {
        let t = TestApp::new();
        let alice = t.login("alice").await;
        let bob = t.login("bob").await;
        let name = &t.app.config.session.cookie_name;
        let req = Req::get("/")
            .cookie(&format!("{name}=junk; {name}={alice}"))
            .cookie(&format!("{name}={bob}"));
        let Ok(Presented::Live(live)) = present(&t, req).await else {
            panic!("a genuine cookie among junk still signs in");
        };
        assert_eq!(live.record.username, "alice");
        // Only the first few values are tried, so junk cannot buy unbounded work.
        let mut many = vec!["junk"; MAX_COOKIES_TRIED];
        many.push(&alice);
        let pairs: Vec<String> = many.iter().map(|v| format!("{name}={v}")).collect();
        let req = Req::get("/").cookie(&pairs.join("; "));
        assert!(matches!(present(&t, req).await, Ok(Presented::Forged)));
    }

    #[tokio::test]
    async fn a_store_outage_is_an_error_not_an_ended_session() {
        let t = TestApp::new();
        let alice = t.login("alice").await;
        t.sessions.set_down(true);
        let req = Req::get("/").cookie(&t.cookie(&alice));
        assert!(matches!(
            present(&t, req).await,
            Err(StoreError::Unavailable(_))
        ));
        t.sessions.set_down(false);
        assert!(matches!(t.presented(&alice).await, Presented::Live(_)));
    }

    #[tokio::test]
    async fn a_pending_touch_does_not_bring_back_a_session_ended_meanwhile() {
        let t = short_sessions();
        let alice = t.login("alice").await;
        t.advance(2 * MIN);
        // Due a touch: it is spawned, and the user logs out before it runs.
        let Presented::Live(live) = t.presented(&alice).await else {
            panic!("alice is signed in");
        };
        t.app.store.delete(&live).await.unwrap();
        settle().await;
        assert!(!t.is_stored(&alice).await);
        assert_eq!(t.sessions.stored(), 0);
        assert!(matches!(t.presented(&alice).await, Presented::Ended));
    }
}
