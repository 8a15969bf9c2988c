//! The one question every protected request asks: which session, if any, does its cookie
//! present? A forged cookie is refused without asking the store; a genuine one costs one read.
//! Sliding the idle timeout happens here too, at most once per touch interval and off the
//! request's path.

use std::sync::Arc;

use pingora::http::RequestHeader;

use super::store::Lookup;
use super::{Keys, LiveSession, SessionStore};
use crate::audit::{Audit, AuditEvent};
use crate::errors::StoreError;
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
}

impl SessionGate<'_> {
    pub async fn presented(
        &self,
        req: &RequestHeader,
        origin: &Origin,
    ) -> Result<Presented, StoreError> {
        let values = cookies::values(&req.headers, self.cookie_name);
        if values.is_empty() {
            return Ok(Presented::Nothing);
        }
        let Some(id) = values
            .iter()
            .take(MAX_COOKIES_TRIED)
            .find_map(|v| self.keys.open(v))
        else {
            self.audit.record_limited(
                AuditEvent::new("cookie_rejected", "gateway", origin).reason("bad_signature"),
            );
            return Ok(Presented::Forged);
        };
        match self.store.lookup(&id).await? {
            Lookup::Missing => Ok(Presented::Ended),
            Lookup::Expired { handle, session } => {
                let event = AuditEvent::new("session_expired", "gateway", origin);
                self.audit.record(match &session {
                    Some(session) => event.session(session),
                    None => event.handle(&handle),
                });
                Ok(Presented::Ended)
            }
            Lookup::Live(session) => {
                let now = self.store.now_ms();
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
