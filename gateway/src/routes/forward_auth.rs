//! The forward-auth endpoint (`[login] forward_auth_path`, `/_gateway/auth` by default): for
//! sites that keep their own proxy (nginx `auth_request`, Caddy `forward_auth`, Traefik
//! `ForwardAuth`) and want only the gateway's sessions and login pages.
//!
//! The proxy asks with the browser's cookies and the original request in headers:
//! `X-Original-Method` / `X-Original-URI` (nginx) or `X-Forwarded-Method` / `X-Forwarded-Host`
//! / `X-Forwarded-Uri` (Caddy, Traefik). Those are believed only from a trusted proxy (or from
//! loopback when `trusted_proxies` is empty); anyone else gets 403, so the endpoint cannot be
//! used to mint identity headers or assertions for an arbitrary request. Answers:
//! - 200 with `X-Auth-User`, `X-Auth-User-Id`, `X-Auth-Roles` (and `X-Auth-Assertion`, signed
//!   for the original method and URI, when `[identity]` is configured);
//! - 401 with `Location` (and `X-Auth-Login-Url`): the login page, `next` = the original URI.
//!   nginx redirects on it (`error_page 401`); Caddy and Traefik hand a non-2xx answer to the
//!   browser as it is, so for them (the `X-Forwarded-Uri` style) a page navigation gets the
//!   302 to the login page itself, and API clients still get the 401;
//! - 403 when an access rule refuses it (audited as `access_denied`);
//! - 503 when the session store is down (never a 401: the user may be signed in).
//!
//! The session check is the proxy path's: the same cookie rules, the same sliding touch.

use pingora::http::RequestHeader;

use super::{Handled, Refusal, RequestView};
use crate::access::{self, Verdict};
use crate::app::App;
use crate::audit::AuditEvent;
use crate::session::Presented;
use crate::web::forward::{ROLES, USER, USER_ID};
use crate::web::reply::Reply;
use crate::web::request::{prefers_html, safe_next};

/// The request the proxy is asking about.
struct Original<'r> {
    method: &'r str,
    uri: &'r str,
    /// Described with `X-Forwarded-*` (Caddy, Traefik), whose non-2xx answers reach the
    /// browser unchanged.
    forwarded_style: bool,
}

impl<'r> Original<'r> {
    fn of(head: &'r RequestHeader) -> Original<'r> {
        let header = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| head.headers.get(*n).and_then(|v| v.to_str().ok()))
        };
        Original {
            method: header(&["x-original-method", "x-forwarded-method"]).unwrap_or("GET"),
            uri: header(&["x-original-uri", "x-forwarded-uri"]).unwrap_or("/"),
            forwarded_style: header(&["x-original-uri"]).is_none()
                && header(&["x-forwarded-uri"]).is_some(),
        }
    }
}

pub async fn check(app: &App, view: &RequestView<'_>) -> Handled {
    if !view.from_proxy {
        return Ok(Reply::json_error(
            403,
            "not_a_trusted_proxy",
            "forward-auth answers only the proxies in [server] trusted_proxies",
        ));
    }
    let original = Original::of(view.head);
    let path = original.uri.split('?').next().unwrap_or("/");
    let verdict = access::verdict(&app.config, original.method, path);
    match verdict {
        Verdict::Public => return Ok(Reply::new(200, "text/plain; charset=utf-8", "")),
        Verdict::Deny => {
            app.audit.record_attempt(
                AuditEvent::new("access_denied", "gateway", &view.origin).reason("deny_rule"),
            );
            return Ok(super::forbidden(app, view.head));
        }
        Verdict::SignedIn | Verdict::Roles(_) => {}
    }
    match app
        .sessions()
        .presented(view.head, &view.origin)
        .await
        .map_err(Refusal::Store)?
    {
        Presented::Live(live) if !verdict.admits(&live.record.roles) => {
            app.audit.record(
                AuditEvent::new("access_denied", "gateway", &view.origin)
                    .session(&live)
                    .reason(access::denied_request(original.method, path)),
            );
            Ok(super::forbidden(app, view.head))
        }
        Presented::Live(live) => {
            let identity = live.record.identity();
            let mut reply = Reply::new(200, "text/plain; charset=utf-8", "")
                .header("cache-control", "no-store")
                .header(USER, identity.username.clone())
                .header(USER_ID, identity.id.clone())
                .header(ROLES, identity.roles.join(","));
            if let Some(signer) = &app.signer {
                let now = app.clock.now_ms() / 1000;
                let value = signer.sign(&identity, original.method, original.uri, now);
                reply = reply.header(crate::assertion::ASSERTION, value);
            }
            Ok(reply)
        }
        Presented::Nothing | Presented::Forged | Presented::Ended => {
            let next = safe_next(original.uri).unwrap_or("/");
            let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
            let login = format!("{}?next={next}", app.config.login.path);
            let navigation = matches!(original.method, "GET" | "HEAD") && prefers_html(view.head);
            if original.forwarded_style && navigation {
                return Ok(Reply::redirect(302, &login).header("cache-control", "no-store"));
            }
            Ok(
                Reply::json_error(401, "unauthenticated", app.texts(view.head).sign_in_first)
                    .header("cache-control", "no-store")
                    .header("location", login.clone())
                    .header("x-auth-login-url", login),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;

    fn asking(path: &str, cookie: Option<&str>) -> Req {
        let mut req = Req::get("/_gateway/auth")
            .header("x-original-method", "POST")
            .header("x-original-uri", path)
            .via_proxy();
        if let Some(c) = cookie {
            req = req.cookie(c);
        }
        req
    }

    #[tokio::test]
    async fn a_live_session_gets_its_identity_for_the_original_request() {
        let t = TestApp::new();
        let cookie = t.login("alice").await;
        let reply = t
            .serve(asking("/admin/x?y=1", Some(&t.cookie(&cookie))))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header_value("x-auth-user"), Some("alice"));
        assert!(reply.header_value("x-auth-user-id").is_some());
        assert!(reply.header_value("x-auth-roles").is_some());
    }

    #[tokio::test]
    async fn no_session_gets_the_login_url_back_to_the_original_uri() {
        let t = TestApp::new();
        for cookie in [None, Some("gateway_session=forged")] {
            let reply = t.serve(asking("/admin/x?y=1", cookie)).await;
            assert_eq!(reply.status, 401);
            assert_eq!(
                reply.header_value("location"),
                Some("/login?next=%2Fadmin%2Fx%3Fy%3D1")
            );
        }
        // An off-site original URI never becomes the `next` of the login page.
        let reply = t.serve(asking("//evil.example/x", None)).await;
        assert_eq!(reply.header_value("location"), Some("/login?next=%2F"));
    }

    #[tokio::test]
    async fn caddy_and_traefik_get_the_redirect_for_navigations_and_a_401_for_apis() {
        let t = TestApp::new();
        let forwarded = |accept: &str| {
            Req::get("/_gateway/auth")
                .header("x-forwarded-method", "GET")
                .header("x-forwarded-uri", "/reports")
                .header("accept", accept)
                .via_proxy()
        };
        let page = t.serve(forwarded("text/html,application/xhtml+xml")).await;
        assert_eq!(page.status, 302);
        assert_eq!(
            page.header_value("location"),
            Some("/login?next=%2Freports")
        );
        let api = t.serve(forwarded("application/json")).await;
        assert_eq!(api.status, 401);
        // nginx's style always gets the 401 (auth_request takes no redirect).
        let nginx = t
            .serve(asking("/reports", None).header("accept", "text/html"))
            .await;
        assert_eq!(nginx.status, 401);
    }

    #[tokio::test]
    async fn access_rules_apply_to_the_original_request() {
        let t = TestApp::with(Settings {
            // The rules follow the [login] lines in the test config.
            login: "[[access.rules]]\npath = \"/admin\"\nroles = [\"admin\"]\n\n\
                    [[access.rules]]\npath = \"/open\"\npublic = true\n\n\
                    [[access.rules]]\npath = \"/closed\"\ndeny = true",
            ..Settings::default()
        });
        let bob = t.login("bob").await;
        let alice = t.login("alice").await;
        let denied = t.serve(asking("/admin/x", Some(&t.cookie(&bob)))).await;
        assert_eq!(denied.status, 403);
        assert!(denied.header_value("x-auth-user").is_none());
        assert_eq!(t.events_named("access_denied").len(), 1);
        let allowed = t.serve(asking("/admin/x", Some(&t.cookie(&alice)))).await;
        assert_eq!(allowed.status, 200);
        // Public: no session needed, no identity given; closed: refused to anyone.
        let open = t.serve(asking("/open/x", None)).await;
        assert_eq!(open.status, 200);
        assert!(open.header_value("x-auth-user").is_none());
        let closed = t.serve(asking("/closed", Some(&t.cookie(&alice)))).await;
        assert_eq!(closed.status, 403);
    }

    #[tokio::test]
    async fn only_a_trusted_proxy_is_answered() {
        let t = TestApp::new();
        let cookie = t.login("alice").await;
        let req = Req::get("/_gateway/auth")
            .header("x-original-uri", "/admin")
            .cookie(&t.cookie(&cookie));
        let reply = t.serve(req).await;
        assert_eq!(reply.status, 403);
        assert!(reply.header_value("x-auth-user").is_none());
    }
}
