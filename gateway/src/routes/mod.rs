//! Endpoints the gateway answers itself instead of proxying: login, logout, the user's session
//! list, and the load balancer's health check.
//!
//! Each handler is a plain function from a [`RequestView`] to a [`Reply`] (or a [`Refusal`],
//! turned into a reply in one place), so every decision here is tested without sockets. Only
//! proxy.rs touches pingora's `Session`: it builds the view, and sends the reply.

mod login;
mod logout;
mod refusal;
mod sessions;

pub use logout::end_for_app_logout;
pub use refusal::{store_unavailable, unauthenticated, upstream_error, wants_page, Refusal};

use bytes::Bytes;
use http::Method;
use pingora::http::RequestHeader;

use crate::app::{App, Readiness};
use crate::web::reply::Reply;
use crate::web::request::{same_origin, BodyError, Origin};

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

/// What a handler sees of a request.
pub struct RequestView<'r> {
    pub head: &'r RequestHeader,
    /// The body of a `POST`, as read at the edge (capped); empty for other methods.
    pub body: Result<Bytes, BodyError>,
    pub origin: Origin,
}

/// A handler's outcome.
pub type Handled = Result<Reply, Refusal>;

/// Answers a request for one of the gateway's own endpoints.
pub async fn serve(app: &App, route: Route, view: &RequestView<'_>) -> Reply {
    let handled = match (route, &view.head.method) {
        (Route::Health, &Method::GET | &Method::HEAD) => Ok(health(app).await),
        (Route::Login, &Method::GET | &Method::HEAD) => Ok(login::page(app, view.head)),
        (Route::Login, &Method::POST) => login::submit(app, view, false).await,
        (Route::ApiLogin, &Method::POST) => login::submit(app, view, true).await,
        (Route::Logout, &Method::GET | &Method::HEAD) => logout::confirm(app, view).await,
        (Route::Logout, &Method::POST) => logout::submit(app, view).await,
        (Route::Sessions, &Method::GET | &Method::HEAD) => sessions::list(app, view).await,
        (Route::Sessions, &Method::POST) => sessions::end_one(app, view).await,
        (Route::Health, _) => Err(Refusal::MethodNotAllowed { allow: "GET, HEAD" }),
        (Route::ApiLogin, _) => Err(Refusal::MethodNotAllowed { allow: "POST" }),
        _ => Err(Refusal::MethodNotAllowed {
            allow: "GET, HEAD, POST",
        }),
    };
    handled.unwrap_or_else(|refusal| refusal.reply(app, view.head))
}

async fn health(app: &App) -> Reply {
    let (status, word) = match app.readiness().await {
        Readiness::Ready => (200, "ok"),
        Readiness::Draining => (503, "draining"),
        Readiness::StoreUnavailable => (503, "unavailable"),
    };
    Reply::json(status, &serde_json::json!({ "status": word }))
}

/// The body of a state-changing request the gateway answers itself, once the request is known
/// to come from this site.
fn post_body<'v>(view: &'v RequestView<'_>) -> Result<&'v Bytes, Refusal> {
    if !same_origin(view.head) {
        return Err(Refusal::CrossSite);
    }
    view.body.as_ref().map_err(|e| Refusal::Body(*e))
}
