//! Endpoints the gateway answers itself instead of proxying: login, logout, the user's session
//! list, and the load balancer's health check. Plus the shared answers for "not signed in" and
//! "session store down".

mod login;
mod logout;
mod sessions;

pub use logout::end_for_app_logout;
pub use sessions::{session_json, sessions_json, timestamp};

use std::sync::Arc;

use http::Method;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use crate::app::App;
use crate::audit::Origin;
use crate::http::reply::Reply;
use crate::http::request::{
    is_page_navigation, path_and_query, prefers_html, read_body, same_origin, wants_json,
    BodyError, MAX_OWN_BODY,
};
use crate::i18n::Texts;
use crate::pages;

/// Path of the load balancer's health check on the public listener.
pub const HEALTH_PATH: &str = "/_gateway/health";
/// Path of the signed-in user's own session list.
pub const SESSIONS_PATH: &str = "/_gateway/sessions";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Login,
    /// `[login] api_path`: JSON logins for SPAs.
    ApiLogin,
    Logout,
    Sessions,
    Health,
}

/// Which of the gateway's own endpoints `path` is, if any.
pub fn route_for(app: &App, path: &str) -> Option<Route> {
    let login = &app.config.login;
    if path == login.path {
        Some(Route::Login)
    } else if login.api_path.as_deref() == Some(path) {
        Some(Route::ApiLogin)
    } else if path == login.logout_path {
        Some(Route::Logout)
    } else if path == SESSIONS_PATH {
        Some(Route::Sessions)
    } else if path == HEALTH_PATH {
        Some(Route::Health)
    } else {
        None
    }
}

/// Answers a request for one of the gateway's own endpoints.
pub async fn serve(app: &Arc<App>, route: Route, session: &mut Session, origin: &Origin) -> Reply {
    let method = session.req_header().method.clone();
    match (route, method) {
        (Route::Health, Method::GET | Method::HEAD) => health(app).await,
        (Route::Login, Method::GET | Method::HEAD) => login::page(app, session.req_header()),
        (Route::Login, Method::POST) => login::submit(app, session, origin, false).await,
        (Route::ApiLogin, Method::POST) => login::submit(app, session, origin, true).await,
        (Route::Logout, Method::GET | Method::HEAD) => logout::confirm(app, session, origin).await,
        (Route::Logout, Method::POST) => logout::submit(app, session, origin).await,
        (Route::Sessions, Method::GET | Method::HEAD) => sessions::list(app, session, origin).await,
        (Route::Sessions, Method::POST) => sessions::end_one(app, session, origin).await,
        (Route::Health, _) => method_not_allowed(app, session.req_header(), "GET, HEAD"),
        (Route::ApiLogin, _) => method_not_allowed(app, session.req_header(), "POST"),
        _ => method_not_allowed(app, session.req_header(), "GET, HEAD, POST"),
    }
}

async fn health(app: &App) -> Reply {
    if app.is_draining() {
        return Reply::json(503, &serde_json::json!({"status": "draining"}));
    }
    match app.store.redis().ping().await {
        Ok(()) => Reply::json(200, &serde_json::json!({"status": "ok"})),
        Err(_) => Reply::json(503, &serde_json::json!({"status": "unavailable"})),
    }
}

fn method_not_allowed(app: &App, req: &RequestHeader, allow: &str) -> Reply {
    let message = app.texts(req).method_not_allowed;
    Reply::json_error(405, "method_not_allowed", message).header("allow", allow)
}

/// "Sign in first": browsers are sent to the login page and come back afterwards; API clients
/// get a 401 they can act on. A cookie that failed is cleared so the browser stops sending it.
pub fn unauthenticated(app: &App, req: &RequestHeader, clear_cookie: bool) -> Reply {
    // Someone whose session already ended clicks the app's "Log out": they are signed out
    // already, so the login page is the answer they expect, not an error.
    let logging_out =
        req.method == Method::POST && prefers_html(req) && app.config.is_app_logout(req.uri.path());
    let reply = if logging_out {
        Reply::redirect(303, &app.config.login.path)
    } else if is_page_navigation(req) {
        let next: String =
            form_urlencoded::byte_serialize(path_and_query(req).as_bytes()).collect();
        Reply::redirect(302, &format!("{}?next={next}", app.config.login.path))
    } else {
        Reply::json_error(401, "unauthenticated", app.texts(req).sign_in_first)
            .header("www-authenticate", "Cookie realm=\"gateway\"")
    };
    if clear_cookie {
        reply.header(
            "set-cookie",
            app.cookies.expired(&app.config.session.cookie_name),
        )
    } else {
        reply
    }
}

/// The session store is down: the user may well be signed in, so this is neither a 401 nor a
/// redirect to login, but a 503 the client can retry.
pub fn store_unavailable(app: &App, req: &RequestHeader) -> Reply {
    let message = app.texts(req).sessions_unavailable;
    temporarily_unavailable(app, req, "session_store_unavailable", message)
}

/// The credential source (e.g. the app's database) is down: a login that cannot be checked is
/// not a wrong password, so this is a 503 the user can retry.
pub fn credentials_unavailable(app: &App, req: &RequestHeader) -> Reply {
    let message = app.texts(req).users_unavailable;
    temporarily_unavailable(app, req, "credentials_unavailable", message)
}

fn temporarily_unavailable(app: &App, req: &RequestHeader, code: &str, message: &str) -> Reply {
    let reply = if prefers_html(req) && !wants_json(req) {
        let texts = app.texts(req);
        Reply::html(
            503,
            pages::error(
                texts,
                texts.temporarily_unavailable,
                texts.sign_in_unavailable,
            ),
        )
    } else {
        Reply::json_error(503, code, message)
    };
    reply.header("retry-after", "1")
}

/// The body of a state-changing request the gateway answers itself, once the request is known
/// to come from this site; otherwise the answer to send instead.
async fn own_post_body(app: &App, session: &mut Session) -> Result<bytes::Bytes, Reply> {
    if !same_origin(session.req_header()) {
        return Err(cross_site(app, session.req_header()));
    }
    let texts = app.texts(session.req_header());
    read_body(session, MAX_OWN_BODY)
        .await
        .map_err(|e| bad_body(texts, e))
}

/// A body the gateway could not or would not read.
fn bad_body(texts: &Texts, error: BodyError) -> Reply {
    match error {
        BodyError::TooLarge => Reply::json_error(413, "body_too_large", texts.body_too_large),
        BodyError::Unreadable => Reply::json_error(400, "bad_request", texts.body_unreadable),
    }
}

/// A post from another site, refused.
pub fn cross_site(app: &App, req: &RequestHeader) -> Reply {
    let texts = app.texts(req);
    if wants_json(req) || !prefers_html(req) {
        Reply::json_error(403, "cross_site_request", texts.cross_site_refused)
    } else {
        Reply::html(
            403,
            pages::error(texts, texts.request_refused, texts.not_from_this_site),
        )
    }
}
