//! `/_gateway/sessions`: the signed-in user's own active sessions (when, where, which browser),
//! each of which they can end. Users only ever see and end their own sessions.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use pingora::proxy::Session;

use super::logout::session_token;
use super::SESSIONS_PATH;
use super::{cross_site, own_post_body, store_unavailable, unauthenticated};
use crate::app::{App, Presented};
use crate::audit::{AuditEvent, Origin};
use crate::http::reply::Reply;
use crate::http::request::{form_fields, wants_json};
use crate::pages::{self, SessionRow};
use crate::session::{Handle, LiveSession};

async fn signed_in(
    app: &Arc<App>,
    session: &Session,
    origin: &Origin,
) -> Result<LiveSession, Reply> {
    let req = session.req_header();
    match app.presented_session(req, origin).await {
        Ok(Presented::Live(live)) => Ok(live),
        Ok(Presented::Nothing) => Err(unauthenticated(app, req, false)),
        Ok(_) => Err(unauthenticated(app, req, true)),
        Err(_) => Err(store_unavailable(app, req)),
    }
}

pub async fn list(app: &Arc<App>, session: &mut Session, origin: &Origin) -> Reply {
    let live = match signed_in(app, session, origin).await {
        Ok(live) => live,
        Err(reply) => return reply,
    };
    let req = session.req_header();
    let sessions = match app.store.list(Some(&live.record.user_id)).await {
        Ok(s) => s,
        Err(_) => return store_unavailable(app, req),
    };
    if wants_json(req) {
        let items: Vec<serde_json::Value> = sessions
            .iter()
            .map(|s| {
                let mut v = session_json(s);
                v["current"] = serde_json::Value::Bool(s.handle == live.handle);
                v
            })
            .collect();
        return Reply::json(200, &serde_json::Value::Array(items));
    }
    let rows: Vec<SessionRow> = sessions
        .iter()
        .map(|s| SessionRow {
            handle: s.handle.to_string(),
            created: timestamp(s.record.created_at_ms),
            last_seen: timestamp(s.record.last_seen_ms),
            ip: s.record.ip.clone(),
            browser: s.record.user_agent.clone(),
            current: s.handle == live.handle,
        })
        .collect();
    Reply::html(
        200,
        pages::sessions(
            app.texts(req),
            SESSIONS_PATH,
            &app.config.login.logout_path,
            &session_token(app, &live),
            &rows,
        ),
    )
}

/// Ends one of the user's own sessions (form field `handle`).
pub async fn end_one(app: &Arc<App>, session: &mut Session, origin: &Origin) -> Reply {
    let body = match own_post_body(app, session).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let live = match signed_in(app, session, origin).await {
        Ok(live) => live,
        Err(reply) => return reply,
    };
    let req = session.req_header();
    let fields = form_fields(&body);
    let token = fields.get("csrf_token").map_or("", String::as_str);
    if !app
        .keys
        .csrf_valid(&format!("session:{}", live.handle), token)
    {
        return cross_site(app, req);
    }
    let Some(handle) = fields.get("handle").and_then(|h| Handle::parse(h)) else {
        return Reply::json_error(400, "bad_request", app.texts(req).which_session);
    };
    let target = match app.store.get(&handle).await {
        Ok(t) => t,
        Err(_) => return store_unavailable(app, req),
    };
    // Someone else's handle reads exactly like one that no longer exists.
    if let Some(target) = target.filter(|t| t.record.user_id == live.record.user_id) {
        if app.store.delete(&target).await.is_err() {
            return store_unavailable(app, req);
        }
        app.audit
            .record(AuditEvent::new("session_ended", "user", origin).session(&target));
    }
    if wants_json(req) {
        Reply::json(200, &serde_json::json!({"status": "ended"}))
    } else {
        Reply::redirect(303, SESSIONS_PATH)
    }
}

/// A session as operators and users see it. Never includes anything usable as a cookie.
pub fn session_json(s: &LiveSession) -> serde_json::Value {
    serde_json::json!({
        "handle": s.handle.as_str(),
        "user_id": s.record.user_id,
        "username": s.record.username,
        "roles": s.record.roles,
        "created_at": timestamp(s.record.created_at_ms),
        "last_seen": timestamp(s.record.last_seen_ms),
        "ip": s.record.ip,
        "user_agent": s.record.user_agent,
    })
}

/// A list of sessions as JSON, for the admin API and the CLI.
pub fn sessions_json(sessions: &[LiveSession]) -> serde_json::Value {
    serde_json::Value::Array(sessions.iter().map(session_json).collect())
}

pub fn timestamp(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
