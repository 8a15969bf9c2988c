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

/// An access rule refuses the request (`[[access.rules]]`): a small page for navigations,
/// JSON for API clients. The request never reaches the app.
pub fn forbidden(app: &App, req: &RequestHeader) -> Reply {
    let texts = app.texts(req);
    if wants_page(req) {
        Reply::html(
            403,
            pages::error(texts, texts.access_denied, texts.no_access),
        )
    } else {
        Reply::json_error(403, "forbidden", texts.no_access)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::i18n::{EN, ZH_CN};
    use crate::testing::*;

    fn api(method: &str, path: &str) -> Req {
        Req::new(method, path).header("accept", "application/json")
    }

    fn is_page(reply: &Reply) -> bool {
        reply
            .header_value("content-type")
            .is_some_and(|c| c.starts_with("text/html"))
    }

    #[test]
    fn each_refusal_has_its_status_and_fixed_code() {
        let t = TestApp::new();
        let cases: Vec<(Refusal, u16, &str)> = vec![
            (Refusal::CrossSite, 403, "cross_site_request"),
            (Refusal::Body(BodyError::TooLarge), 413, "body_too_large"),
            (Refusal::Body(BodyError::Unreadable), 400, "bad_request"),
            (
                Refusal::Store(StoreError::Timeout),
                503,
                "session_store_unavailable",
            ),
            (
                Refusal::Store(StoreError::Unavailable("down".into())),
                503,
                "session_store_unavailable",
            ),
            (
                Refusal::Store(StoreError::Internal("no randomness".into())),
                500,
                "error",
            ),
            (
                Refusal::CredentialsUnavailable,
                503,
                "credentials_unavailable",
            ),
            (
                Refusal::MethodNotAllowed { allow: "POST" },
                405,
                "method_not_allowed",
            ),
            (
                Refusal::Unauthenticated {
                    clear_cookie: false,
                },
                401,
                "unauthenticated",
            ),
        ];
        for (refusal, status, code) in cases {
            let what = format!("{refusal:?}");
            let reply = refusal.reply(&t.app, &api("POST", "/x").head);
            assert_eq!(reply.status, status, "{what}");
            let body = reply.body_json();
            assert_eq!(body["error"], code, "{what}");
            assert!(
                body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{what}"
            );
            assert!(
                !body.to_string().contains("no randomness"),
                "internals stay in the log: {what}"
            );
        }
    }

    #[test]
    fn only_outages_say_when_to_retry() {
        let t = TestApp::new();
        for req in [api("GET", "/x"), Req::page("/x")] {
            for refusal in [
                Refusal::Store(StoreError::Timeout),
                Refusal::CredentialsUnavailable,
            ] {
                let reply = refusal.reply(&t.app, &req.head);
                assert_eq!(reply.status, 503);
                assert_eq!(reply.header_value("retry-after"), Some("1"));
            }
            for refusal in [
                Refusal::Store(StoreError::Internal("bug".into())),
                Refusal::CrossSite,
                Refusal::Unauthenticated {
                    clear_cookie: false,
                },
            ] {
                let reply = refusal.reply(&t.app, &req.head);
                assert_eq!(reply.header_value("retry-after"), None, "{}", reply.status);
            }
        }
    }

    #[test]
    fn browsers_get_pages_and_programs_get_json() {
        let t = TestApp::new();
        let page = Req::page("/x");
        let both = Req::get("/x").header("accept", "text/html, application/json");
        let json_body = Req::post_json("/x", serde_json::json!({})).header("accept", "text/html");
        assert!(wants_page(&page.head));
        assert!(!wants_page(&both.head), "asking for JSON too wins");
        assert!(
            !wants_page(&json_body.head),
            "a JSON post is answered in JSON"
        );
        assert!(!wants_page(&Req::get("/x").head));

        let reply = Refusal::Store(StoreError::Timeout).reply(&t.app, &page.head);
        assert!(is_page(&reply));
        assert!(reply.text().contains(EN.temporarily_unavailable));
        assert!(reply.header_value("content-security-policy").is_some());
        let reply = Refusal::CrossSite.reply(&t.app, &page.head);
        assert_eq!(reply.status, 403);
        assert!(is_page(&reply));
        assert!(reply.text().contains(EN.request_refused));
        let reply = Refusal::CrossSite.reply(&t.app, &both.head);
        assert_eq!(reply.body_json()["error"], "cross_site_request");
    }

    #[test]
    fn messages_and_pages_follow_the_browsers_language() {
        let t = TestApp::new();
        let zh = api("GET", "/x").header("accept-language", "zh-CN,zh;q=0.9");
        let reply = Refusal::Unauthenticated {
            clear_cookie: false,
        }
        .reply(&t.app, &zh.head);
        assert_eq!(
            reply.body_json()["error"],
            "unauthenticated",
            "codes stay fixed"
        );
        assert_eq!(reply.body_json()["message"], ZH_CN.sign_in_first);
        let page = Req::page("/x").header("accept-language", "zh-CN");
        let reply = Refusal::Store(StoreError::Timeout).reply(&t.app, &page.head);
        assert!(reply.text().contains("lang=\"zh-CN\""));
        assert!(reply.text().contains(ZH_CN.temporarily_unavailable));
        let en = Refusal::Store(StoreError::Timeout).reply(&t.app, &api("GET", "/x").head);
        assert_eq!(en.body_json()["message"], EN.sessions_unavailable);
    }

    #[test]
    fn a_configured_language_overrides_the_browser() {
        let t = TestApp::with(Settings {
            login: "language = \"zh-CN\"",
            ..Settings::default()
        });
        let en = api("GET", "/x").header("accept-language", "en-US");
        let reply = Refusal::CrossSite.reply(&t.app, &en.head);
        assert_eq!(reply.body_json()["message"], ZH_CN.cross_site_refused);
    }

    #[test]
    fn a_browser_without_a_session_is_sent_to_login_and_back() {
        let t = TestApp::new();
        let req = Req::page("/reports/q1?year=2026&sort=a%20b");
        let reply = unauthenticated(&t.app, &req.head, false);
        assert_eq!(reply.status, 302);
        let location = reply.header_value("location").unwrap();
        let next = location.strip_prefix("/login?next=").expect(location);
        assert!(!next.contains(['&', '?', '/']), "encoded: {location}");
        let decoded: String = form_urlencoded::parse(format!("n={next}").as_bytes())
            .next()
            .unwrap()
            .1
            .into_owned();
        assert_eq!(decoded, "/reports/q1?year=2026&sort=a%20b");
        assert!(!reply.expires_cookie("gateway_session"));
        let cleared = unauthenticated(&t.app, &req.head, true);
        assert!(cleared.expires_cookie("gateway_session"));
        assert_eq!(cleared.status, 302);
    }

    #[test]
    fn a_custom_login_path_is_where_browsers_are_sent() {
        let t = TestApp::with(Settings {
            login: "path = \"/auth/sign-in\"",
            ..Settings::default()
        });
        let reply = unauthenticated(&t.app, &Req::page("/").head, false);
        assert_eq!(
            reply.header_value("location"),
            Some("/auth/sign-in?next=%2F")
        );
    }

    #[test]
    fn programs_without_a_session_get_401_with_a_challenge() {
        let t = TestApp::new();
        for req in [
            Req::get("/api/items"),
            api("GET", "/api/items"),
            // A form post is not a navigation that can be replayed after login.
            Req::new("POST", "/reports").header("accept", "text/html"),
        ] {
            let reply = unauthenticated(&t.app, &req.head, true);
            assert_eq!(reply.status, 401, "{}", req.head.uri);
            assert_eq!(
                reply.header_value("www-authenticate"),
                Some("Cookie realm=\"gateway\"")
            );
            assert_eq!(reply.body_json()["error"], "unauthenticated");
            assert!(reply.expires_cookie("gateway_session"));
        }
    }

    #[test]
    fn logging_out_of_the_app_when_already_signed_out_lands_on_login() {
        let t = TestApp::with(Settings {
            login: "app_logout_paths = [\"/auth/logout\"]",
            ..Settings::default()
        });
        let browser = Req::new("POST", "/auth/logout").header("accept", "text/html");
        let reply = unauthenticated(&t.app, &browser.head, true);
        assert_eq!(reply.status, 303);
        assert_eq!(reply.header_value("location"), Some("/login"));
        assert!(reply.expires_cookie("gateway_session"));
        let spa = Req::new("POST", "/auth/logout").header("accept", "application/json");
        assert_eq!(unauthenticated(&t.app, &spa.head, false).status, 401);
        let other = Req::new("POST", "/auth/logout/now").header("accept", "text/html");
        assert_eq!(unauthenticated(&t.app, &other.head, false).status, 401);
    }

    #[test]
    fn upstream_failures_map_to_their_status_and_words() {
        let t = TestApp::new();
        for (code, error, words) in [
            (502, "service_unavailable", EN.app_unreachable),
            (503, "service_unavailable", EN.try_again_shortly),
            (504, "gateway_timeout", EN.app_too_slow),
            (400, "bad_request", EN.not_understood),
            (500, "error", EN.something_went_wrong),
            (418, "error", EN.something_went_wrong),
        ] {
            let reply = upstream_error(&t.app, code, &api("GET", "/x").head);
            assert_eq!(reply.status, code);
            assert_eq!(reply.body_json()["error"], error, "{code}");
            assert_eq!(reply.body_json()["message"], words, "{code}");
            let page = upstream_error(&t.app, code, &Req::page("/x").head);
            assert_eq!(page.status, code);
            assert!(is_page(&page), "{code}");
            assert!(page.text().contains(words), "{code}");
        }
        let zh = Req::page("/x").header("accept-language", "zh");
        let page = upstream_error(&t.app, 504, &zh.head);
        assert!(page.text().contains(ZH_CN.gateway_timeout));
    }
}
