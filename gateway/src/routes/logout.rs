//! `GET /logout` (a confirmation page: link prefetchers must not sign anyone out) and
//! `POST /logout` (ends this session, or with `scope=all` every session of the user), and the
//! gateway's half of the app's own logout.

use std::sync::Arc;

use pingora::proxy::Session;

use super::SESSIONS_PATH;
use super::{cross_site, own_post_body, store_unavailable};
use crate::app::{App, Presented};
use crate::audit::{AuditEvent, Origin};
use crate::http::reply::Reply;
use crate::http::request::{form_fields, is_form, query_param, wants_json};
use crate::pages;
use crate::session::LiveSession;

/// The anti-forgery token for forms that act on `session`.
pub fn session_token(app: &App, session: &LiveSession) -> String {
    app.keys.csrf_token(&format!("session:{}", session.handle))
}

pub async fn confirm(app: &Arc<App>, session: &mut Session, origin: &Origin) -> Reply {
    let req = session.req_header();
    match app.presented_session(req, origin).await {
        Ok(Presented::Live(live)) => Reply::html(
            200,
            pages::logout_confirm(
                app.texts(req),
                &app.config.login.logout_path,
                &session_token(app, &live),
                &live.record.username,
                SESSIONS_PATH,
            ),
        ),
        Ok(_) => Reply::redirect(303, &app.config.login.path),
        Err(_) => store_unavailable(app, req),
    }
}

pub async fn submit(app: &Arc<App>, session: &mut Session, origin: &Origin) -> Reply {
    let body = match own_post_body(app, session).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let req = session.req_header();
    let fields = if is_form(req) {
        Some(form_fields(&body))
    } else {
        None
    };
    let everywhere = fields
        .as_ref()
        .and_then(|f| f.get("scope").cloned())
        .or_else(|| query_param(req, "scope"))
        .is_some_and(|s| s == "all");

    let live = match app.presented_session(req, origin).await {
        Ok(Presented::Live(live)) => Some(live),
        Ok(_) => None,
        Err(_) => return store_unavailable(app, req),
    };
    let mut ended = 0;
    if let Some(live) = live {
        if let Some(fields) = &fields {
            let token = fields.get("csrf_token").map_or("", String::as_str);
            if !app
                .keys
                .csrf_valid(&format!("session:{}", live.handle), token)
            {
                return cross_site(app, req);
            }
        }
        let result = if everywhere {
            end_all_of_user(app, &live, origin).await
        } else {
            app.store.delete(&live).await.map(|()| {
                app.audit
                    .record(AuditEvent::new("logout", "user", origin).session(&live));
                1
            })
        };
        match result {
            Ok(n) => ended = n,
            Err(e) => {
                log::error!("logout failed: {e}");
                return store_unavailable(app, req);
            }
        }
    }
    let reply = if wants_json(req) {
        Reply::json(
            200,
            &serde_json::json!({"status": "logged_out", "ended": ended}),
        )
    } else {
        Reply::redirect(303, &app.config.login.path)
    };
    reply.header(
        "set-cookie",
        app.cookies.expired(&app.config.session.cookie_name),
    )
}

/// The app's own logout (`[login] app_logout_paths`) ends this gateway session too; the
/// request then goes on to the app, so this answers nothing itself.
pub async fn end_for_app_logout(
    app: &App,
    live: &LiveSession,
    origin: &Origin,
) -> Result<(), crate::errors::StoreError> {
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
) -> Result<usize, crate::errors::StoreError> {
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
