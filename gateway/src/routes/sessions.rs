//! `/_gateway/sessions`: the signed-in user's own active sessions (when, where, which browser),
//! each of which they can end. Users only ever see and end their own sessions.

use super::{post_body, Handled, Refusal, RequestView, SESSIONS_PATH};
use crate::app::App;
use crate::audit::AuditEvent;
use crate::pages::{self, SessionRow};
use crate::session::view::{session_json, timestamp};
use crate::session::{Handle, LiveSession, Presented};
use crate::web::reply::Reply;
use crate::web::request::{form_fields, wants_json};

async fn signed_in(app: &App, view: &RequestView<'_>) -> Result<LiveSession, Refusal> {
    match app.sessions().presented(view.head, &view.origin).await? {
        Presented::Live(live) => Ok(live),
        Presented::Nothing => Err(Refusal::Unauthenticated {
            clear_cookie: false,
        }),
        _ => Err(Refusal::Unauthenticated { clear_cookie: true }),
    }
}

pub async fn list(app: &App, view: &RequestView<'_>) -> Handled {
    let live = signed_in(app, view).await?;
    let req = view.head;
    let sessions = app.store.list(Some(&live.record.user_id)).await?;
    if wants_json(req) {
        let items: Vec<serde_json::Value> = sessions
            .iter()
            .map(|s| {
                let mut v = session_json(s);
                v["current"] = serde_json::Value::Bool(s.handle == live.handle);
                v
            })
            .collect();
        return Ok(Reply::json(200, &serde_json::Value::Array(items)));
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
    Ok(Reply::html(
        200,
        pages::sessions(
            app.texts(req),
            SESSIONS_PATH,
            &app.config.login.logout_path,
            &app.keys.session_form_token(&live.handle),
            &rows,
        ),
    ))
}

/// Ends one of the user's own sessions (form field `handle`).
pub async fn end_one(app: &App, view: &RequestView<'_>) -> Handled {
    let body = post_body(view)?;
    let live = signed_in(app, view).await?;
    let req = view.head;
    let fields = form_fields(body);
    let token = fields.get("csrf_token").map_or("", String::as_str);
    if !app.keys.session_form_valid(&live.handle, token) {
        return Err(Refusal::CrossSite);
    }
    let Some(handle) = fields.get("handle").and_then(|h| Handle::parse(h)) else {
        return Ok(Reply::json_error(
            400,
            "bad_request",
            app.texts(req).which_session,
        ));
    };
    // Someone else's handle reads exactly like one that no longer exists.
    let target = app.store.get(&handle).await?;
    if let Some(target) = target.filter(|t| t.record.user_id == live.record.user_id) {
        app.store.delete(&target).await?;
        app.audit
            .record(AuditEvent::new("session_ended", "user", &view.origin).session(&target));
    }
    Ok(if wants_json(req) {
        Reply::json(200, &serde_json::json!({"status": "ended"}))
    } else {
        Reply::redirect(303, SESSIONS_PATH)
    })
}
