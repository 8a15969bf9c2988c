//! Endpoints the gateway answers itself instead of proxying: login, logout, the user's session
//! list, and the load balancer's health check.
//!
//! Each handler is a plain function from a [`RequestView`] to a [`Reply`] (or a [`Refusal`],
//! turned into a reply in one place), so every decision here is tested without sockets. Only
//! proxy.rs touches pingora's `Session`: it builds the view, and sends the reply.

mod forward_auth;
mod login;
mod logout;
mod refusal;
mod sessions;

pub use logout::end_for_app_logout;
pub use refusal::{
    forbidden, store_unavailable, unauthenticated, upstream_error, wants_page, Refusal,
};

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
    /// `[login] forward_auth_path`: the session check for another proxy.
    ForwardAuth,
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
    } else if path == login.forward_auth_path {
        Some(Route::ForwardAuth)
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
    /// The TCP peer is a trusted proxy (or loopback when none is configured): only then are
    /// forwarded headers about the original request believed.
    pub from_proxy: bool,
}

/// A handler's outcome.
pub type Handled = Result<Reply, Refusal>;

/// Answers a request for one of the gateway's own endpoints.
pub async fn serve(app: &App, route: Route, view: &RequestView<'_>) -> Reply {
    let handled = match (route, &view.head.method) {
        (Route::Health, &Method::GET | &Method::HEAD) => Ok(health(app).await),
        // nginx's auth_request keeps the original method; the answer does not depend on it.
        (Route::ForwardAuth, _) => forward_auth::check(app, view).await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn the_gateway_answers_only_its_own_paths() {
        let t = TestApp::with(Settings {
            login: "path = \"/auth/login\"\nlogout_path = \"/auth/logout\"\n\
                    api_path = \"/api/v1/auth/login\"",
            ..Settings::default()
        });
        let app = &t.app;
        assert_eq!(route_for(app, "/auth/login"), Some(Route::Login));
        assert_eq!(route_for(app, "/api/v1/auth/login"), Some(Route::ApiLogin));
        assert_eq!(route_for(app, "/auth/logout"), Some(Route::Logout));
        assert_eq!(route_for(app, "/_gateway/sessions"), Some(Route::Sessions));
        assert_eq!(route_for(app, "/_gateway/health"), Some(Route::Health));
        for app_path in [
            "/login",
            "/logout",
            "/",
            "/auth/login/",
            "/auth/LOGIN",
            "/_gateway/sessions/x",
            "/_gateway",
            "/api/v1/auth",
        ] {
            assert_eq!(route_for(app, app_path), None, "{app_path} is the app's");
        }
    }

    #[test]
    fn without_an_api_path_no_api_route_exists() {
        let t = TestApp::new();
        assert_eq!(route_for(&t.app, "/login"), Some(Route::Login));
        assert_eq!(route_for(&t.app, "/logout"), Some(Route::Logout));
        assert_eq!(route_for(&t.app, "/api/v1/auth/login"), None);
    }

    #[tokio::test]
    async fn wrong_methods_are_405_with_the_methods_allowed() {
        let t = TestApp::with(Settings {
            login: "api_path = \"/api/login\"",
            ..Settings::default()
        });
        for (method, path, allow) in [
            ("POST", "/_gateway/health", "GET, HEAD"),
            ("DELETE", "/_gateway/health", "GET, HEAD"),
            ("GET", "/api/login", "POST"),
            ("OPTIONS", "/api/login", "POST"),
            ("PUT", "/login", "GET, HEAD, POST"),
            ("DELETE", "/logout", "GET, HEAD, POST"),
            ("OPTIONS", "/_gateway/sessions", "GET, HEAD, POST"),
        ] {
            let reply = t.serve(Req::new(method, path)).await;
            assert_eq!(reply.status, 405, "{method} {path}");
            assert_eq!(reply.header_value("allow"), Some(allow), "{method} {path}");
            assert_eq!(reply.body_json()["error"], "method_not_allowed");
        }
        assert_eq!(t.serve(Req::new("HEAD", "/login")).await.status, 200);
        assert_eq!(
            t.serve(Req::new("HEAD", "/_gateway/health")).await.status,
            200
        );
    }

    #[tokio::test]
    async fn health_follows_the_store_and_draining() {
        let t = TestApp::new();
        let reply = t.serve(Req::get("/_gateway/health")).await;
        assert_eq!(
            (reply.status, reply.body_json()),
            (200, serde_json::json!({"status": "ok"}))
        );

        t.sessions.set_down(true);
        let reply = t.serve(Req::get("/_gateway/health")).await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.body_json()["status"], "unavailable");
        t.sessions.set_down(false);

        t.app.draining.store(true, Ordering::Relaxed);
        let reply = t.serve(Req::get("/_gateway/health")).await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.body_json()["status"], "draining");
        // Draining, the gateway still serves the users it has.
        let alice = t.login("alice").await;
        assert!(t.is_stored(&alice).await);
    }

    #[tokio::test]
    async fn an_oversized_or_unreadable_body_is_refused_by_its_handler() {
        let t = TestApp::new();
        let alice = t.login("alice").await;
        for (error, status) in [(BodyError::TooLarge, 413), (BodyError::Unreadable, 400)] {
            let req = Req::post_json("/logout", serde_json::json!({})).cookie(&t.cookie(&alice));
            let view = RequestView {
                head: &req.head,
                body: Err(error),
                origin: req.origin(),
                from_proxy: false,
            };
            let reply = serve(&t.app, Route::Logout, &view).await;
            assert_eq!(reply.status, status, "{error:?}");
            assert!(t.is_stored(&alice).await);
        }
    }
}
