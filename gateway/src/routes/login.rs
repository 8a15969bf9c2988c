//! `GET /login` (the sign-in page), `POST /login` (form or JSON), and `POST` to
//! `[login] api_path` (JSON for SPAs, answered in a `{"success", "data": {"user"}}` envelope).
//!
//! Forms carry a token bound to a nonce in a SameSite=Strict cookie (double submit), and every
//! post must come from this site (Origin/Referer), so another site can neither log a visitor in
//! as someone else nor probe passwords through their browser. JSON posts need no token: a
//! cross-site page cannot send `application/json` without a CORS preflight, and preflights to the
//! gateway's own paths are refused (405) even though those to the app's paths are passed on.
//! Success always creates a brand-new session id.

use pingora::http::RequestHeader;
use serde::Deserialize;

use super::{post_body, Handled, Refusal, RequestView};
use crate::app::App;
use crate::audit::AuditEvent;
use crate::auth::credentials::Verdict;
use crate::i18n::Texts;
use crate::identity::Identity;
use crate::metrics::EndReason;
use crate::pages::{self, LoginPage};
use crate::session::store::CreateOutcome;
use crate::session::{token, Presented, SessionRecord};
use crate::web::cookies;
use crate::web::reply::Reply;
use crate::web::request::{form_fields, is_form, is_json, query_param, safe_next, Origin};

/// How long a login form stays usable.
const FORM_LIFETIME_SECS: i64 = 3600;

fn nonce_cookie(app: &App) -> String {
    app.config.session.nonce_cookie_name()
}

/// The sign-in page, with a fresh anti-forgery nonce.
pub fn page(app: &App, req: &RequestHeader) -> Reply {
    let next = query_param(req, "next").unwrap_or_default();
    let next = safe_next(&next).unwrap_or("");
    form(app, req, 200, next, "", None)
}

fn form(
    app: &App,
    req: &RequestHeader,
    status: u16,
    next: &str,
    username: &str,
    error: Option<&str>,
) -> Reply {
    let Ok(nonce) = token::random_token() else {
        log::error!("no randomness for a login form nonce");
        return super::upstream_error(app, 500, req);
    };
    let csrf = app.keys.login_form_token(&nonce);
    let html = pages::login(
        &app.login_template(),
        app.texts(req),
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

/// How the client logged in, and so how it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// The HTML form: answered with the form again, or a redirect.
    Form,
    /// JSON posted to the login page: `{"user": ...}` or `{"error", "message"}`.
    Json,
    /// JSON posted to `[login] api_path`, for an SPA: the same with `"success"` and `"data"`,
    /// the envelope such apps' consoles read.
    Api,
}

struct Attempt {
    username: String,
    password: String,
    next: String,
    shape: Shape,
}

/// A login refused, in the shape the client asked in: `code` for programs, `message` (in the
/// page's language) for people.
fn refuse(
    app: &App,
    req: &RequestHeader,
    shape: Shape,
    status: u16,
    code: &str,
    message: &str,
    attempt: (&str, &str),
) -> Reply {
    let (next, username) = attempt;
    match shape {
        Shape::Form => form(app, req, status, next, username, Some(message)),
        Shape::Json => Reply::json_error(status, code, message),
        Shape::Api => Reply::json(
            status,
            &serde_json::json!({"success": false, "error": code, "message": message}),
        ),
    }
}

/// `submit(…, api)`: `api` is true on `[login] api_path`, which takes JSON only.
pub async fn submit(app: &App, view: &RequestView<'_>, api: bool) -> Handled {
    let started = std::time::Instant::now();
    let handled = check_and_sign_in(app, view, api).await;
    app.metrics.observe_login(started.elapsed());
    handled
}

async fn check_and_sign_in(app: &App, view: &RequestView<'_>, api: bool) -> Handled {
    let body = post_body(view)?;
    let req = view.head;
    let origin = &view.origin;
    let texts = app.texts(req);
    let attempt = if is_json(req) {
        let shape = if api { Shape::Api } else { Shape::Json };
        match serde_json::from_slice::<JsonLogin>(body) {
            Ok(j) => Attempt {
                username: j.username,
                password: j.password,
                next: j.next.unwrap_or_default(),
                shape,
            },
            Err(_) => {
                return Ok(refuse(
                    app,
                    req,
                    shape,
                    400,
                    "bad_request",
                    texts.expected_credentials,
                    ("", ""),
                ))
            }
        }
    } else if is_form(req) && !api {
        let mut fields = form_fields(body);
        let nonce = cookies::values(&req.headers, &nonce_cookie(app))
            .first()
            .map(|v| v.to_string())
            .unwrap_or_default();
        let token = fields.remove("csrf_token").unwrap_or_default();
        let next = fields.remove("next").unwrap_or_default();
        if !app.keys.login_form_valid(&nonce, &token) {
            let next = safe_next(&next).unwrap_or("");
            return Ok(form(app, req, 403, next, "", Some(texts.form_expired)));
        }
        Attempt {
            username: fields.remove("username").unwrap_or_default(),
            password: fields.remove("password").unwrap_or_default(),
            next,
            shape: Shape::Form,
        }
    } else {
        let wanted = if api {
            texts.post_json
        } else {
            texts.post_form_or_json
        };
        return Ok(Reply::json_error(415, "unsupported_media_type", wanted));
    };
    let Attempt {
        username,
        password,
        next,
        shape,
    } = attempt;
    let next = safe_next(&next).unwrap_or("/").to_string();

    match app.throttle.refusal(&username, origin.ip).await {
        Ok(None) => {}
        Ok(Some(wait)) => {
            app.metrics.login("throttled");
            app.audit.record_attempt(
                AuditEvent::new("login_failure", "user", origin)
                    .username(&username)
                    .reason("too_many_failures"),
            );
            let seconds = (wait.as_millis() as u64).div_ceil(1000);
            let minutes = seconds.div_ceil(60);
            let message = Texts::with_number(texts.too_many_attempts, minutes);
            let reply = refuse(
                app,
                req,
                shape,
                429,
                "too_many_attempts",
                &message,
                (&next, &username),
            );
            return Ok(reply.header("retry-after", seconds.to_string()));
        }
        Err(e) => return Err(Refusal::Store(e)),
    }
    // Counted before the password is checked: an attempt that cannot be counted is refused
    // unchecked, the same for a right and a wrong password.
    if let Err(e) = app.throttle.count_attempt(&username, origin.ip).await {
        log::error!("login attempt could not be counted; refused unchecked: {e}");
        return Err(Refusal::Store(e));
    }

    let verdict = if username.is_empty() || password.is_empty() || username.len() > 256 {
        None
    } else {
        match app.auth.authenticate(&username, password).await {
            Ok(v) => Some(v),
            Err(e) => {
                log::error!("login unavailable: {e}");
                return Err(Refusal::CredentialsUnavailable);
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
            app.audit.record_attempt(
                AuditEvent::new("login_failure", "user", origin)
                    .username(&username)
                    .reason(reason),
            );
            return Ok(refuse(
                app,
                req,
                shape,
                401,
                "invalid_credentials",
                texts.invalid_credentials,
                (&next, &username),
            ));
        }
    };
    // The right password: the attempt counted above is taken back (for the user and the IP),
    // whatever becomes of the session, so a session limit cannot lock the user out.
    if let Err(e) = app
        .throttle
        .record_success(&identity.username, origin.ip)
        .await
    {
        log::warn!("failed-login counter not cleared: {e}");
    }
    start_session(app, req, origin, identity, &next, shape).await
}

async fn start_session(
    app: &App,
    req: &RequestHeader,
    origin: &Origin,
    identity: Identity,
    next: &str,
    shape: Shape,
) -> Handled {
    let now = app.clock.now_ms();
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
            let message = Texts::with_number(app.texts(req).session_limit, max.into());
            return Ok(refuse(
                app,
                req,
                shape,
                409,
                "session_limit",
                &message,
                (next, &identity.username),
            ));
        }
        Err(e) => return Err(Refusal::Store(e)),
    };
    app.metrics.login("accepted");
    app.metrics.session_created();
    app.metrics
        .sessions_ended(EndReason::Evicted, evicted.len());
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
    // A login made while presenting a live session replaces it: the browser drops the old
    // cookie for the new one, and a session nobody holds any more must not stay valid.
    match app.sessions().presented(req, origin).await {
        Ok(Presented::Live(old)) => match app.store.delete(&old).await {
            Ok(()) => {
                app.metrics.sessions_ended(EndReason::Logout, 1);
                app.audit.record(
                    AuditEvent::new("logout", "user", origin)
                        .session(&old)
                        .reason("replaced_by_login"),
                )
            }
            Err(e) => log::warn!("the session replaced by a login could not be ended: {e}"),
        },
        Ok(_) => {}
        Err(e) => log::warn!("the session replaced by a login could not be checked: {e}"),
    }

    let cookie = app
        .cookies
        .session(&app.config.session.cookie_name, &app.keys.seal(&id));
    let user = serde_json::json!({
        "id": identity.id,
        "username": identity.username,
        "role": identity.roles.first().map_or("", String::as_str),
        "roles": identity.roles,
    });
    let reply = match shape {
        Shape::Form => Reply::redirect(303, next),
        Shape::Json => Reply::json(200, &serde_json::json!({ "user": user })),
        Shape::Api => Reply::json(
            200,
            &serde_json::json!({
                "success": true,
                "message": app.texts(req).signed_in,
                "data": { "user": user },
            }),
        ),
    };
    Ok(reply
        .header("set-cookie", cookie)
        .header("set-cookie", app.cookies.expired(&nonce_cookie(app))))
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use serde_json::json;

    /// GET the login page, then post its form with the nonce cookie it set.
    async fn form_login(
        t: &TestApp,
        user: &str,
        password: &str,
        next: &str,
    ) -> crate::web::reply::Reply {
        let page = t.serve(Req::page(&format!("/login?next={next}"))).await;
        let token = page.form_field("csrf_token").expect("csrf field");
        let nonce_name = t.app.config.session.nonce_cookie_name();
        let nonce = page.cookie(&nonce_name).expect("nonce cookie");
        t.serve(
            Req::post_form(
                "/login",
                &[
                    ("username", user),
                    ("password", password),
                    ("csrf_token", &token),
                    ("next", next),
                ],
            )
            .cookie(&format!("{nonce_name}={nonce}")),
        )
        .await
    }

    #[tokio::test]
    async fn a_form_login_redirects_to_next_with_a_fresh_session() {
        let t = TestApp::new();
        let reply = form_login(&t, "alice", "alice-pw", "/reports?x=1").await;
        assert_eq!(reply.status, 303, "{}", reply.text());
        assert_eq!(reply.header_value("location"), Some("/reports?x=1"));
        assert!(reply.cookie("gateway_session").is_some());
        assert!(
            reply.expires_cookie("gateway_session_csrf"),
            "the nonce is spent"
        );
        assert_eq!(t.sessions.stored(), 1);
        assert_eq!(t.events_named("login_success").len(), 1);
    }

    #[tokio::test]
    async fn a_json_login_answers_the_user() {
        let t = TestApp::new();
        let reply = t.post_login("alice", "alice-pw").await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.body_json(),
            json!({"user": {"id": "1", "username": "alice", "role": "admin", "roles": ["admin", "user"]}})
        );
    }

    #[tokio::test]
    async fn every_login_makes_a_new_session_id() {
        let t = TestApp::new();
        let first = t.login("alice").await;
        let second = t.login("alice").await;
        assert_ne!(first, second);
        assert_eq!(t.sessions.stored(), 2);
    }

    #[tokio::test]
    async fn a_wrong_password_is_401_and_counted() {
        let t = TestApp::new();
        let reply = t.post_login("alice", "nope").await;
        assert_eq!(reply.status, 401);
        assert_eq!(reply.body_json()["error"], "invalid_credentials");
        assert!(reply.cookie("gateway_session").is_none());
        let failures = t.events_named("login_failure");
        assert_eq!(failures[0]["reason"], "wrong_password");
        assert!(
            !failures[0].to_string().contains("nope"),
            "no password in the audit"
        );
    }

    #[tokio::test]
    async fn unknown_and_disabled_users_get_the_same_answer_as_a_wrong_password() {
        let t = TestApp::new();
        let mut answers = Vec::new();
        for (user, password) in [("alice", "nope"), ("nobody", "x"), ("carol", "carol-pw")] {
            let reply = t.post_login(user, password).await;
            answers.push((reply.status, reply.text()));
        }
        assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
        let reasons: Vec<_> = t
            .events_named("login_failure")
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(reasons, ["wrong_password", "unknown_user", "disabled"]);
    }

    #[tokio::test]
    async fn a_form_without_its_nonce_is_refused_as_expired() {
        let t = TestApp::new();
        let page = t.serve(Req::page("/login")).await;
        let token = page.form_field("csrf_token").unwrap();
        let reply = t
            .serve(Req::post_form(
                "/login",
                &[
                    ("username", "alice"),
                    ("password", "alice-pw"),
                    ("csrf_token", &token),
                ],
            ))
            .await;
        assert_eq!(reply.status, 403);
        assert!(reply.text().contains("This sign-in form has expired"));
        assert_eq!(t.sessions.stored(), 0);
    }

    #[tokio::test]
    async fn a_token_from_another_form_is_refused() {
        let t = TestApp::new();
        let one = t.serve(Req::page("/login")).await;
        let other = t.serve(Req::page("/login")).await;
        let nonce = other.cookie("gateway_session_csrf").unwrap();
        let reply = t
            .serve(
                Req::post_form(
                    "/login",
                    &[
                        ("username", "alice"),
                        ("password", "alice-pw"),
                        ("csrf_token", &one.form_field("csrf_token").unwrap()),
                    ],
                )
                .cookie(&format!("gateway_session_csrf={nonce}")),
            )
            .await;
        assert_eq!(reply.status, 403);
    }

    #[tokio::test]
    async fn a_cross_site_post_is_refused_before_any_password_is_checked() {
        let t = TestApp::new();
        let reply = t
            .serve(
                Req::post_json(
                    "/login",
                    json!({"username": "alice", "password": "alice-pw"}),
                )
                .header("origin", "https://evil.example"),
            )
            .await;
        assert_eq!(reply.status, 403);
        assert_eq!(reply.body_json()["error"], "cross_site_request");
        assert!(t.events_named("login_failure").is_empty());
        assert_eq!(t.sessions.stored(), 0);
    }

    #[tokio::test]
    async fn next_never_leaves_the_site() {
        let t = TestApp::new();
        for bad in ["//evil.example", "https://evil.example/", "/\\evil.example"] {
            let encoded: String = form_urlencoded::byte_serialize(bad.as_bytes()).collect();
            let reply = form_login(&t, "alice", "alice-pw", &encoded).await;
            assert_eq!(reply.status, 303, "{bad}");
            assert_eq!(reply.header_value("location"), Some("/"), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_page_keeps_a_safe_next_and_drops_an_unsafe_one() {
        let t = TestApp::new();
        let page = t.serve(Req::page("/login?next=%2Fadmin%3Ftab%3D1")).await;
        assert_eq!(page.form_field("next").as_deref(), Some("/admin?tab=1"));
        let page = t.serve(Req::page("/login?next=%2F%2Fevil.example")).await;
        assert_eq!(page.form_field("next").as_deref(), Some(""));
    }

    #[tokio::test]
    async fn too_many_failures_lock_the_username_before_the_password_is_checked() {
        let t = TestApp::with(Settings {
            login: "max_failures_per_user = 3\nfailure_window = \"10m\"",
            ..Settings::default()
        });
        for _ in 0..3 {
            let r = t.post_login("bob", "x").await;
            assert_eq!(r.status, 401);
        }
        let reply = t.post_login("bob", "bob-pw").await;
        assert_eq!(reply.status, 429, "even the right password waits");
        assert_eq!(reply.header_value("retry-after"), Some("600"));
        assert_eq!(reply.body_json()["error"], "too_many_attempts");
        // Retry-After is the time left in the window, not the whole window.
        t.advance(std::time::Duration::from_secs(240));
        let reply = t.post_login("bob", "bob-pw").await;
        assert_eq!(reply.status, 429);
        assert_eq!(reply.header_value("retry-after"), Some("360"));
        assert!(reply.body_json()["message"]
            .as_str()
            .unwrap()
            .contains("6 minute"));
        t.advance(std::time::Duration::from_secs(361));
        t.login("bob").await;
    }

    #[tokio::test]
    async fn a_throttle_that_cannot_be_read_is_503_not_a_password_check() {
        let t = TestApp::new();
        t.counters.set_down(true);
        let reply = t.post_login("bob", "bob-pw").await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.header_value("retry-after"), Some("1"));
        assert_eq!(t.sessions.stored(), 0);
    }

    #[tokio::test]
    async fn a_store_outage_at_login_is_503() {
        let t = TestApp::new();
        t.sessions.set_down(true);
        let reply = t.post_login("bob", "bob-pw").await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.body_json()["error"], "session_store_unavailable");
    }

    #[tokio::test]
    async fn the_per_user_limit_evicts_the_oldest_session() {
        let t = TestApp::with(Settings {
            session: "max_per_user = 2",
            ..Settings::default()
        });
        let first = t.login("alice").await;
        t.advance(std::time::Duration::from_secs(1));
        t.login("alice").await;
        t.advance(std::time::Duration::from_secs(1));
        t.login("alice").await;
        let evicted = t.events_named("session_evicted");
        assert_eq!(evicted.len(), 1);
        let live = t.app.store.list(Some("1")).await.unwrap().live;
        assert_eq!(live.len(), 2);
        let first_handle = t.app.keys.open(&first).unwrap().handle();
        assert!(live.iter().all(|s| s.handle != first_handle));
        assert_eq!(evicted[0]["handle"], first_handle.as_str());
    }

    #[tokio::test]
    async fn the_per_user_limit_can_refuse_the_new_login() {
        let t = TestApp::with(Settings {
            session: "max_per_user = 1\non_limit = \"reject\"",
            ..Settings::default()
        });
        t.login("alice").await;
        let reply = t.post_login("alice", "alice-pw").await;
        assert_eq!(reply.status, 409);
        assert_eq!(reply.body_json()["error"], "session_limit");
        // Another user is not affected.
        t.login("bob").await;
    }

    #[tokio::test]
    async fn the_api_path_answers_in_an_envelope_and_takes_json_only() {
        let t = TestApp::with(Settings {
            login: "api_path = \"/api/v1/auth/login\"",
            ..Settings::default()
        });
        let ok = t
            .serve(Req::post_json(
                "/api/v1/auth/login",
                json!({"username": "bob", "password": "bob-pw"}),
            ))
            .await;
        assert_eq!(ok.status, 200);
        assert_eq!(ok.body_json()["success"], true);
        assert_eq!(ok.body_json()["data"]["user"]["role"], "user");
        let wrong = t
            .serve(Req::post_json(
                "/api/v1/auth/login",
                json!({"username": "bob", "password": "x"}),
            ))
            .await;
        assert_eq!(wrong.body_json()["success"], false);
        let form = t
            .serve(Req::post_form("/api/v1/auth/login", &[("username", "bob")]))
            .await;
        assert_eq!(form.status, 415);
        let get = t.serve(Req::get("/api/v1/auth/login")).await;
        assert_eq!(get.status, 405);
        assert_eq!(get.header_value("allow"), Some("POST"));
    }

    #[tokio::test]
    async fn malformed_bodies_are_4xx_not_errors() {
        let t = TestApp::new();
        let reply = t
            .serve(
                Req::new("POST", "/login")
                    .header("content-type", "application/json")
                    .body("{"),
            )
            .await;
        assert_eq!(reply.status, 400);
        let reply = t
            .serve(
                Req::new("POST", "/login")
                    .header("content-type", "text/plain")
                    .body("x"),
            )
            .await;
        assert_eq!(reply.status, 415);
        let reply = t.post_login("", "").await;
        assert_eq!(reply.status, 401);
    }

    #[tokio::test]
    async fn attempts_that_cannot_be_counted_are_refused_before_the_password_is_checked() {
        // A Redis that answers reads but refuses writes: a demoted primary, or out of memory.
        let t = TestApp::with(Settings {
            login: "max_failures_per_user = 5",
            ..Settings::default()
        });
        t.counters.set_read_only(true);
        let mut answers = Vec::new();
        for password in ["wrong"; 12].into_iter().chain(["bob-pw"]) {
            let reply = t.post_login("bob", password).await;
            answers.push((reply.status, reply.body_json()["error"].clone()));
        }
        // Never a 401 (an uncounted guess), never a 200: the right password looks the same.
        assert!(
            answers
                .iter()
                .all(|a| a.0 == 503 && a.1 == "session_store_unavailable"),
            "{answers:?}"
        );
        assert_eq!(t.sessions.stored(), 0);
        t.counters.set_read_only(false);
        t.login("bob").await;
    }

    #[tokio::test]
    async fn a_login_ends_the_session_it_replaces() {
        let t = TestApp::new();
        let old = t.login("alice").await;
        let reply = t
            .serve(
                Req::post_json("/login", json!({"username": "bob", "password": "bob-pw"}))
                    .cookie(&t.cookie(&old)),
            )
            .await;
        assert_eq!(reply.status, 200);
        assert_eq!(t.sessions.stored(), 1, "only the new session is left");
        let replaced = t.events_named("logout");
        assert_eq!(replaced[0]["reason"], "replaced_by_login");
        assert_eq!(replaced[0]["username"], "alice");
    }
}
