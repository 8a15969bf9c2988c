//! `GET /login` (the sign-in page) and `POST /login` (form or JSON).
//!
//! Forms carry a token bound to a nonce in a SameSite=Strict cookie (double submit), and every
//! post must come from this site (Origin/Referer), so another site can neither log a visitor in
//! as someone else nor probe passwords through their browser. JSON posts need no token: a
//! cross-site page cannot send `application/json` without a CORS preflight, which is refused.
//! Success always creates a brand-new session id.

use std::sync::Arc;

use pingora::http::RequestHeader;
use pingora::proxy::Session;
use serde::Deserialize;

use super::{credentials_unavailable, own_post_body, store_unavailable};
use crate::app::App;
use crate::audit::{AuditEvent, Origin};
use crate::credentials::Verdict;
use crate::http::cookies;
use crate::http::reply::Reply;
use crate::http::request::{form_fields, is_form, is_json, query_param, safe_next};
use crate::pages::{self, LoginPage};
use crate::session::store::CreateOutcome;
use crate::session::{now_ms, token, SessionRecord};
use crate::users::Identity;

const FAILED: &str = "Invalid username or password.";
/// How long a login form stays usable.
const FORM_LIFETIME_SECS: i64 = 3600;

fn nonce_cookie(app: &App) -> String {
    format!("{}_csrf", app.config.session.cookie_name)
}

/// The sign-in page, with a fresh anti-forgery nonce.
pub fn page(app: &App, req: &RequestHeader) -> Reply {
    let next = query_param(req, "next").unwrap_or_default();
    let next = safe_next(&next).unwrap_or("");
    form(app, 200, next, "", None)
}

fn form(app: &App, status: u16, next: &str, username: &str, error: Option<&str>) -> Reply {
    let Ok(nonce) = token::random_token() else {
        return Reply::json_error(503, "unavailable", "no randomness available");
    };
    let csrf = app.keys.csrf_token(&format!("login:{nonce}"));
    let html = pages::login(
        &app.login_template,
        &LoginPage {
            action: &app.config.login.path,
            csrf_token: &csrf,
            next,
            username,
            error,
        },
    );
    Reply::html(status, html).header(
        "set-cookie",
        app.cookies
            .strict(&nonce_cookie(app), &nonce, FORM_LIFETIME_SECS),
    )
}

#[derive(Deserialize)]
struct JsonLogin {
    username: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
}

struct Attempt {
    username: String,
    password: String,
    next: String,
    json: bool,
}

pub async fn submit(app: &Arc<App>, session: &mut Session, origin: &Origin) -> Reply {
    let body = match own_post_body(session).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let req = session.req_header();
    let attempt = if is_json(req) {
        match serde_json::from_slice::<JsonLogin>(&body) {
            Ok(j) => Attempt {
                username: j.username,
                password: j.password,
                next: j.next.unwrap_or_default(),
                json: true,
            },
            Err(_) => {
                return Reply::json_error(
                    400,
                    "bad_request",
                    "expected {\"username\": ..., \"password\": ...}",
                )
            }
        }
    } else if is_form(req) {
        let mut fields = form_fields(&body);
        let nonce = cookies::values(&req.headers, &nonce_cookie(app))
            .first()
            .map(|v| v.to_string())
            .unwrap_or_default();
        let token = fields.remove("csrf_token").unwrap_or_default();
        let next = fields.remove("next").unwrap_or_default();
        if nonce.is_empty() || !app.keys.csrf_valid(&format!("login:{nonce}"), &token) {
            let next = safe_next(&next).unwrap_or("");
            return form(
                app,
                403,
                next,
                "",
                Some("This sign-in form has expired. Please try again."),
            );
        }
        Attempt {
            username: fields.remove("username").unwrap_or_default(),
            password: fields.remove("password").unwrap_or_default(),
            next,
            json: false,
        }
    } else {
        return Reply::json_error(
            415,
            "unsupported_media_type",
            "post a form or application/json",
        );
    };
    let Attempt {
        username,
        password,
        next,
        json,
    } = attempt;
    let next = safe_next(&next).unwrap_or("/").to_string();

    match app.throttle.refusal(&username, origin.ip).await {
        Ok(None) => {}
        Ok(Some(wait)) => {
            app.metrics.login("throttled");
            app.audit.record(
                AuditEvent::new("login_failure", "user", origin)
                    .username(&username)
                    .reason("too_many_failures"),
            );
            let minutes = wait.as_secs().div_ceil(60);
            let message =
                format!("Too many failed sign-in attempts. Try again in {minutes} minute(s).");
            let reply = if json {
                Reply::json_error(429, "too_many_attempts", &message)
            } else {
                form(app, 429, &next, &username, Some(&message))
            };
            return reply.header("retry-after", wait.as_secs().to_string());
        }
        Err(e) => {
            log::error!("login throttle unavailable: {e}");
            return store_unavailable(session.req_header());
        }
    }

    let verdict = if username.is_empty() || password.is_empty() || username.len() > 256 {
        None
    } else {
        match app.auth.authenticate(&username, password).await {
            Ok(v) => Some(v),
            Err(e) => {
                log::error!("login unavailable: {e}");
                return credentials_unavailable(session.req_header());
            }
        }
    };
    let identity = match verdict {
        Some(Verdict::Accepted(identity)) => identity,
        other => {
            let reason = match other {
                Some(Verdict::Rejected(r)) => r.as_str(),
                _ => "missing_credentials",
            };
            app.metrics.login("rejected");
            if let Err(e) = app.throttle.record_failure(&username, origin.ip).await {
                log::warn!("failed login not counted: {e}");
            }
            app.audit.record(
                AuditEvent::new("login_failure", "user", origin)
                    .username(&username)
                    .reason(reason),
            );
            return if json {
                Reply::json_error(401, "invalid_credentials", FAILED)
            } else {
                form(app, 401, &next, &username, Some(FAILED))
            };
        }
    };
    start_session(app, session.req_header(), origin, identity, &next, json).await
}

async fn start_session(
    app: &Arc<App>,
    req: &RequestHeader,
    origin: &Origin,
    identity: Identity,
    next: &str,
    json: bool,
) -> Reply {
    let now = now_ms();
    let record = SessionRecord {
        user_id: identity.id.clone(),
        username: identity.username.clone(),
        roles: identity.roles.clone(),
        created_at_ms: now,
        last_seen_ms: now,
        ip: origin.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        user_agent: origin.user_agent_text(),
    };
    let (id, handle, evicted) = match app.store.create(&record).await {
        Ok(CreateOutcome::Created {
            id,
            handle,
            evicted,
        }) => (id, handle, evicted),
        Ok(CreateOutcome::LimitReached) => {
            app.metrics.login("limit_reached");
            app.audit.record(
                AuditEvent::new("login_failure", "user", origin)
                    .username(&identity.username)
                    .user_id(&identity.id)
                    .reason("session_limit"),
            );
            let max = app.config.session.max_per_user.unwrap_or(0);
            let message = format!(
                "You already have {max} active session(s), the most allowed. \
                 Sign out on another device first."
            );
            return if json {
                Reply::json_error(409, "session_limit", &message)
            } else {
                form(app, 409, next, &identity.username, Some(&message))
            };
        }
        Err(e) => {
            log::error!("login could not store session: {e}");
            return store_unavailable(req);
        }
    };
    app.metrics.login("accepted");
    if let Err(e) = app.throttle.record_success(&identity.username).await {
        log::warn!("failed-login counter not cleared: {e}");
    }
    app.audit.record(
        AuditEvent::new("login_success", "user", origin)
            .username(&identity.username)
            .user_id(&identity.id)
            .handle(&handle),
    );
    for old in evicted {
        app.audit.record(
            AuditEvent::new("session_evicted", "gateway", origin)
                .username(&identity.username)
                .user_id(&identity.id)
                .handle(&old)
                .reason("max_per_user"),
        );
    }

    let cookie = app
        .cookies
        .session(&app.config.session.cookie_name, &app.keys.seal(&id));
    let reply = if json {
        Reply::json(
            200,
            &serde_json::json!({"user": {
                "id": identity.id, "username": identity.username, "roles": identity.roles
            }}),
        )
    } else {
        Reply::redirect(303, next)
    };
    reply
        .header("set-cookie", cookie)
        .header("set-cookie", app.cookies.expired(&nonce_cookie(app)))
}
