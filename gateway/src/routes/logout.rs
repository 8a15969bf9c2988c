//! `GET /logout` (a confirmation page: link prefetchers must not sign anyone out) and
//! `POST /logout` (ends this session, or with `scope=all` every session of the user), and the
//! gateway's half of the app's own logout.

use super::{post_body, Handled, Refusal, RequestView, SESSIONS_PATH};
use crate::app::App;
use crate::audit::AuditEvent;
use crate::errors::StoreError;
use crate::pages;
use crate::session::{LiveSession, Presented};
use crate::web::reply::Reply;
use crate::web::request::{form_fields, is_form, query_param, wants_json, Origin};

pub async fn confirm(app: &App, view: &RequestView<'_>) -> Handled {
    let req = view.head;
    Ok(match app.sessions().presented(req, &view.origin).await? {
        Presented::Live(live) => Reply::html(
            200,
            pages::logout_confirm(
                app.texts(req),
                &app.config.login.logout_path,
                &app.keys.session_form_token(&live.handle),
                &live.record.username,
                SESSIONS_PATH,
            ),
        ),
        _ => Reply::redirect(303, &app.config.login.path),
    })
}

pub async fn submit(app: &App, view: &RequestView<'_>) -> Handled {
    let body = post_body(view)?;
    let req = view.head;
    let fields = is_form(req).then(|| form_fields(body));
    let everywhere = fields
        .as_ref()
        .and_then(|f| f.get("scope").cloned())
        .or_else(|| query_param(req, "scope"))
        .is_some_and(|s| s == "all");

    let mut ended = 0;
    if let Presented::Live(live) = app.sessions().presented(req, &view.origin).await? {
        // Forms must carry our token; JSON cannot be sent cross-site without a preflight.
        if let Some(fields) = &fields {
            let token = fields.get("csrf_token").map_or("", String::as_str);
            if !app.keys.session_form_valid(&live.handle, token) {
                return Err(Refusal::CrossSite);
            }
        }
        ended = if everywhere {
            end_all_of_user(app, &live, &view.origin).await?
        } else {
            app.store.delete(&live).await?;
            app.audit
                .record(AuditEvent::new("logout", "user", &view.origin).session(&live));
            1
        };
    }
    let reply = if wants_json(req) {
        Reply::json(
            200,
            &serde_json::json!({"status": "logged_out", "ended": ended}),
        )
    } else {
        Reply::redirect(303, &app.config.login.path)
    };
    Ok(reply.header(
        "set-cookie",
        app.cookies.expired(&app.config.session.cookie_name),
    ))
}

/// The app's own logout (`[login] app_logout_paths`) ends this gateway session too; the
/// request then goes on to the app, so this answers nothing itself.
pub async fn end_for_app_logout(
    app: &App,
    live: &LiveSession,
    origin: &Origin,
) -> Result<(), StoreError> {
    app.store.delete(live).await?;
    app.audit.record(
        AuditEvent::new("logout", "user", origin)
            .session(live)
            .reason("app_logout"),
    );
    Ok(())
}

/// "Sign out everywhere": every session of the user behind `live`.
async fn end_all_of_user(
    app: &App,
    live: &LiveSession,
    origin: &Origin,
) -> Result<usize, StoreError> {
    let mut sessions = app.store.list(Some(&live.record.user_id)).await?;
    if !sessions.iter().any(|s| s.handle == live.handle) {
        sessions.push(live.clone());
    }
    let n = app.store.delete_all(&sessions).await?;
    app.audit.record(
        AuditEvent::new("logout_everywhere", "user", origin)
            .session(live)
            .reason(format!("{n} sessions ended")),
    );
    Ok(n)
}
