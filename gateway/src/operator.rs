//! What operators can do to sessions, shared by the admin API and the `gateway sessions` CLI so
//! both revoke the same way and leave the same audit trail.

use crate::app::App;
use crate::audit::AuditEvent;
use crate::errors::StoreError;
use crate::metrics::EndReason;
use crate::session::{Handle, LiveSession};
use crate::web::request::Origin;

/// Live sessions, of one user or of everyone, oldest first.
pub async fn list(
    app: &App,
    user_id: Option<&str>,
    by: &Origin,
) -> Result<Vec<LiveSession>, StoreError> {
    app.live_sessions(user_id, by).await
}

/// Revokes one session; `false` if no live session has that handle.
pub async fn revoke_handle(app: &App, handle: &Handle, by: &Origin) -> Result<bool, StoreError> {
    let Some(session) = app.store.get(handle).await? else {
        return Ok(false);
    };
    app.store.delete(&session).await?;
    app.metrics.sessions_ended(EndReason::Revoked, 1);
    app.audit
        .record_and_wait(AuditEvent::new("admin_revoke", "admin", by).session(&session))
        .await;
    Ok(true)
}

/// Revokes every session of one user; returns how many there were.
pub async fn revoke_user(app: &App, user_id: &str, by: &Origin) -> Result<usize, StoreError> {
    let sessions = app.live_sessions(Some(user_id), by).await?;
    revoke(app, &sessions, by, "user").await
}

/// Revokes every session there is (after an incident, or to force everyone to sign in again).
pub async fn revoke_all(app: &App, by: &Origin) -> Result<usize, StoreError> {
    let sessions = app.live_sessions(None, by).await?;
    revoke(app, &sessions, by, "all").await
}

async fn revoke(
    app: &App,
    sessions: &[LiveSession],
    by: &Origin,
    scope: &str,
) -> Result<usize, StoreError> {
    let n = app.store.delete_all(sessions).await?;
    app.metrics.sessions_ended(EndReason::Revoked, n);
    for session in sessions {
        app.audit
            .record_and_wait(
                AuditEvent::new("admin_revoke", "admin", by)
                    .session(session)
                    .reason(format!("scope={scope}")),
            )
            .await;
    }
    Ok(n)
}
