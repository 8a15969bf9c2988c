//! [`Refusal`]: every reason the gateway's own answer is not the one asked for, and the one
//! place where each becomes a status, a page or a JSON body. The proxy path answers with the
//! same functions (`unauthenticated`, `store_unavailable`, `upstream_error`), so a refusal looks
//! the same wherever it happens.
//!
//! Pages or JSON: a browser navigation (`Accept: text/html`, no JSON asked for) gets a small
//! page in its language; anything else gets `{"error": code, "message": text}`, where the code
//! is fixed and the text follows the language.

use http::Method;
use pingora::http::RequestHeader;

use crate::app::App;
use crate::errors::StoreError;
use crate::pages;
use crate::web::reply::Reply;
use crate::web::request::{
    is_page_navigation, path_and_query, prefers_html, wants_json, BodyError,
};

#[derive(Debug)]
pub enum Refusal {
    /// No live session: `clear_cookie` when a cookie was presented that no longer works.
    Unauthenticated { clear_cookie: bool },
    /// A state-changing post from another site.
    CrossSite,
    /// A body the gateway could not or would not read.
    Body(BodyError),
    /// The session store failed.
    Store(StoreError),
    /// The credential source (users file, the app's database) could not be asked.
    CredentialsUnavailable,
    /// The endpoint exists, but not for this method; `allow` lists those it takes.
    MethodNotAllowed { allow: &'static str },
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Refusal {
        Refusal::Store(e)
    }
}

impl From<BodyError> for Refusal {
    fn from(e: BodyError) -> Refusal {
        Refusal::Body(e)
    }
}

impl Refusal {
    /// The answer the client gets.
    pub fn reply(self, app: &App, req: &RequestHeader) -> Reply {
        let texts = app.texts(req);
        match self {
            Refusal::Unauthenticated { clear_cookie } => unauthenticated(app, req, clear_cookie),
            Refusal::CrossSite => {
                if wants_page(req) {
                    let page = pages::error(texts, texts.request_refused, texts.not_from_this_site);
                    Reply::html(403, page)
                } else {
                    Reply::json_error(403, "cross_site_request", texts.cross_site_refused)
                }
            }
            Refusal::Body(BodyError::TooLarge) => {
                Reply::json_error(413, "body_too_large", texts.body_too_large)
            }
            Refusal::Body(BodyError::Unreadable) => {
                Reply::json_error(400, "bad_request", texts.body_unreadable)
            }
            Refusal::Store(StoreError::Internal(why)) => {
                log::error!("gateway internal error: {why}");
                upstream_error(app, 500, req)
            }
            Refusal::Store(e) => {
                log::warn!("session store unavailable: {e}");
                store_unavailable(app, req)
            }
            Refusal::CredentialsUnavailable => temporarily_unavailable(
                app,
                req,
                "credentials_unavailable",
                texts.users_unavailable,
            ),
            Refusal::MethodNotAllowed { allow } => {
                Reply::json_error(405, "method_not_allowed", texts.method_not_allowed)
                    .header("allow", allow)
            }
        }
    }
}

/// Whether the client should get a page rather than JSON.
pub fn wants_page(req: &RequestHeader) -> bool {
    prefers_html(req) && !wants_json(req)
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

fn temporarily_unavailable(app: &App, req: &RequestHeader, code: &str, message: &str) -> Reply {
    let reply = if wants_page(req) {
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

/// What the client sees when proxying fails with `code` (or the gateway itself did: 500).
pub fn upstream_error(app: &App, code: u16, req: &RequestHeader) -> Reply {
    let texts = app.texts(req);
    let (title, message) = match code {
        502 => (texts.service_unavailable, texts.app_unreachable),
        503 => (texts.service_unavailable, texts.try_again_shortly),
        504 => (texts.gateway_timeout, texts.app_too_slow),
        400 => (texts.bad_request, texts.not_understood),
        _ => (texts.error, texts.something_went_wrong),
    };
    if wants_page(req) {
        Reply::html(code, pages::error(texts, title, message))
    } else {
        let error = match code {
            502 | 503 => "service_unavailable",
            504 => "gateway_timeout",
            400 => "bad_request",
            _ => "error",
        };
        Reply::json_error(code, error, message)
    }
}
