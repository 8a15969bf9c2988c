//! The gateway as a drop-in in front of a Flask app shaped like WhaleFall: the app keeps its
//! own session cookie (CSRF tokens), legacy auth cookies never reach it, its logout ends the
//! gateway session, SPAs log in at the app's API path, CORS preflights reach the app, and the
//! gateway's pages speak the user's language. Real redis-server, real echo upstream, real
//! gateway binary.

use crate::session_helpers::*;
use crate::support::*;

const APP_COOKIE: &str = "whalefall_session";

/// The WhaleFall settings from the README's "In front of WhaleFall" section.
fn whalefall(cfg: TestConfig) -> TestConfig {
    cfg.replace(
        "read_timeout = \"60s\"\n",
        "read_timeout = \"60s\"\napp_session_cookie = \"whalefall_session\"\n",
    )
    .replace(
        "path = \"/login\"\n",
        "path = \"/auth/login\"\napi_path = \"/api/v1/auth/login\"\n\
         app_logout_paths = [\"/auth/logout\", \"/api/v1/auth/logout\"]\n",
    )
}

async fn drop_in_stack() -> Stack {
    Stack::start_with(whalefall).await
}

async fn login_at_api(gw: &Gateway, user: &str, pass: &str) -> reqwest::Response {
    client()
        .post(gw.url("/api/v1/auth/login"))
        .json(&serde_json::json!({"username": user, "password": pass}))
        .send()
        .await
        .expect("POST /api/v1/auth/login")
}

async fn api_login_cookie(gw: &Gateway, user: &str, pass: &str) -> String {
    let resp = login_at_api(gw, user, pass).await;
    session_cookie_or_panic(resp, gw, user).await
}

/// Every request carries the app's session cookie beside ours, as a browser would.
async fn get_with_both(gw: &Gateway, path: &str, ours: &str) -> reqwest::Response {
    client()
        .get(gw.url(path))
        .header(
            "cookie",
            format!("{APP_COOKIE}=eyJjc3JmIjoiYWJjIn0; {COOKIE_NAME}={ours}"),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_apps_session_cookie_cannot_sign_the_user_out() {
    let s = drop_in_stack().await;
    let cookie = api_login_cookie(&s.gw, "alice", "alice-password").await;

    // A page that sets the app's cookie, and (wrongly) the gateway's names too.
    let resp = get_with_both(&s.gw, "/auth/set-session", &cookie).await;
    assert_eq!(resp.status(), 200);
    let set = set_cookies(&resp);
    assert!(
        set.iter().any(|c| c.starts_with("whalefall_session=eyJj")),
        "the app's own cookie must reach the browser: {set:?}"
    );
    assert!(
        !set.iter().any(|c| c.starts_with(&format!("{COOKIE_NAME}="))
            || c.starts_with(&format!("{CSRF_COOKIE_NAME}="))),
        "the app must not overwrite the gateway's cookies: {set:?}"
    );
    // The app saw its own cookie verbatim and nothing of ours.
    let seen = echo(resp).await;
    assert_eq!(
        seen.cookie_pairs(),
        [format!("{APP_COOKIE}=eyJjc3JmIjoiYWJjIn0")]
    );
    assert_eq!(seen.header("x-auth-user").as_deref(), Some("alice"));

    // Still signed in on the next page.
    let resp = get_with_both(&s.gw, "/dashboard/", &cookie).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        echo(resp).await.header("x-auth-user").as_deref(),
        Some("alice")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_remember_cookies_never_reach_the_app_and_are_cleared() {
    let s = drop_in_stack().await;
    let bob = api_login_cookie(&s.gw, "bob", "bob-password").await;
    let resp = client()
        .get(s.gw.url("/api/v1/auth/me"))
        .header(
            "cookie",
            format!("remember_token=1|alices-signature; {COOKIE_NAME}={bob}; theme=dark"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cleared = set_cookie_header(&resp, "remember_token").expect("remember_token cleared");
    let attrs = cookie_attributes(&cleared);
    assert!(
        attrs.iter().any(|(k, v)| k == "max-age" && v == "0"),
        "{cleared}"
    );
    assert!(
        attrs.iter().any(|(k, v)| k == "path" && v == "/"),
        "{cleared}"
    );
    let seen = echo(resp).await;
    assert_eq!(seen.cookie_pairs(), ["theme=dark"]);
    assert_eq!(seen.header("x-auth-user").as_deref(), Some("bob"));

    // A request without the legacy cookie gets no Set-Cookie at all.
    let resp = get_with_cookie(&s.gw, "/api/v1/auth/me", &bob).await;
    assert_eq!(resp.status(), 200);
    assert!(set_cookies(&resp).is_empty(), "{:?}", set_cookies(&resp));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_apps_logout_ends_the_gateway_session_and_still_reaches_the_app() {
    let s = drop_in_stack().await;
    for path in ["/auth/logout", "/api/v1/auth/logout"] {
        let cookie = api_login_cookie(&s.gw, "alice", "alice-password").await;
        let before = s.upstream.request_count();
        let resp = client()
            .post(s.gw.url(path))
            .header("origin", s.gw.origin())
            .header(
                "cookie",
                format!("{APP_COOKIE}=eyJjc3JmIjoiYWJjIn0; {COOKIE_NAME}={cookie}"),
            )
            .form(&[("csrf_token", "the-apps-own-token")])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let expired = set_cookie_header(&resp, COOKIE_NAME).expect("gateway cookie expired");
        assert!(expired.contains("Max-Age=0"), "{expired}");
        // The app got the request, signed as the user who logged out, with its own cookie
        // and CSRF token, so it can clear its state and answer as it always did.
        assert_eq!(s.upstream.request_count(), before + 1, "{path}");
        let seen = echo(resp).await;
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.header("x-auth-user").as_deref(), Some("alice"));
        assert_eq!(
            seen.cookie_pairs(),
            [format!("{APP_COOKIE}=eyJjc3JmIjoiYWJjIn0")]
        );

        assert_refused(&s.gw, &cookie, path).await;
    }
    // Logging out again with the ended session: a browser lands on the login page.
    let resp = client()
        .post(s.gw.url("/auth/logout"))
        .header("origin", s.gw.origin())
        .header("accept", BROWSER_ACCEPT)
        .header(
            "cookie",
            session_cookie_header(&api_login_cookie(&s.gw, "bob", "bob-password").await),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client()
        .post(s.gw.url("/auth/logout"))
        .header("origin", s.gw.origin())
        .header("accept", BROWSER_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/auth/login");
    let events = stdout_events(&s.gw);
    let app_logouts = events
        .iter()
        .filter(|e| e["event"] == "logout" && e["reason"] == "app_logout")
        .count();
    assert_eq!(app_logouts, 3, "{events:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logout_the_app_refuses_does_not_end_the_session() {
    // The echo app answers /status/NNN with NNN: a logout path whose app refuses it (e.g. an
    // expired CSRF token), and one whose app redirects after logging out.
    let s = Stack::start_with(|c| {
        whalefall(c).replace(
            "app_logout_paths = [\"/auth/logout\", \"/api/v1/auth/logout\"]",
            "app_logout_paths = [\"/status/400\", \"/status/302\"]",
        )
    })
    .await;
    let cookie = api_login_cookie(&s.gw, "alice", "alice-password").await;
    let logout = |path: &'static str| {
        client()
            .post(s.gw.url(path))
            .header("origin", s.gw.origin())
            .header("cookie", session_cookie_header(&cookie))
            .send()
    };
    let resp = logout("/status/400").await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(set_cookie_header(&resp, COOKIE_NAME).is_none());
    assert_live(&s.gw, &cookie, "alice", "after a refused logout").await;

    let resp = logout("/status/302").await.unwrap();
    assert_eq!(resp.status(), 302);
    assert!(set_cookie_header(&resp, COOKIE_NAME).is_some_and(|c| c.contains("Max-Age=0")));
    assert_refused(&s.gw, &cookie, "after the app redirected from its logout").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cross_site_post_to_the_apps_logout_does_not_end_the_session() {
    let s = drop_in_stack().await;
    let cookie = api_login_cookie(&s.gw, "alice", "alice-password").await;
    let resp = client()
        .post(s.gw.url("/auth/logout"))
        .header("origin", "https://evil.example")
        .header("cookie", session_cookie_header(&cookie))
        .send()
        .await
        .unwrap();
    // The app decides about its own state (its CSRF check refuses this); ours is untouched.
    assert!(set_cookie_header(&resp, COOKIE_NAME).is_none());
    assert_live(&s.gw, &cookie, "alice", "after a cross-site logout post").await;
    // A GET to the logout path is a page, not a logout.
    let resp = get_with_cookie(&s.gw, "/auth/logout", &cookie).await;
    assert!(set_cookie_header(&resp, COOKIE_NAME).is_none());
    assert_live(&s.gw, &cookie, "alice", "after GET /auth/logout").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spa_login_at_the_api_path() {
    let s = drop_in_stack().await;
    let resp = login_at_api(&s.gw, "alice", "alice-password").await;
    assert_eq!(resp.status(), 200);
    let cookie = cookie_from(&resp, COOKIE_NAME).expect("session cookie");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["data"]["user"]["username"], "alice", "{body}");
    assert_eq!(body["data"]["user"]["role"], "admin", "{body}");
    assert_eq!(body["data"]["user"]["id"], "1", "{body}");
    assert_live(&s.gw, &cookie, "alice", "after the API login").await;

    let resp = login_at_api(&s.gw, "alice", "wrong").await;
    assert_eq!(resp.status(), 401);
    assert!(cookie_from(&resp, COOKIE_NAME).is_none());
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"], "invalid_credentials", "{body}");

    // The API path takes JSON only, and only by POST; nothing of it reaches the app.
    let before = s.upstream.request_count();
    let form = client()
        .post(s.gw.url("/api/v1/auth/login"))
        .form(&[("username", "alice"), ("password", "alice-password")])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 415);
    let get = client()
        .get(s.gw.url("/api/v1/auth/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(s.upstream.request_count(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_login_page_lives_at_the_apps_url() {
    let s = drop_in_stack().await;
    let resp = client()
        .get(s.gw.url("/instances/?page=2"))
        .header("accept", BROWSER_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers()["location"],
        "/auth/login?next=%2Finstances%2F%3Fpage%3D2"
    );
    let page = client()
        .get(s.gw.url("/auth/login?next=%2Finstances%2F"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("action=\"/auth/login\""), "{html}");
    assert_eq!(s.upstream.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_preflights_reach_the_app_without_a_session() {
    let s = drop_in_stack().await;
    let resp = client()
        .request(reqwest::Method::OPTIONS, s.gw.url("/api/v1/instances"))
        .header("origin", "https://console.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, x-csrftoken",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = echo(resp).await;
    assert_eq!(seen.method, "OPTIONS");
    assert!(
        seen.x_auth_headers().is_empty(),
        "{:?}",
        seen.x_auth_headers()
    );

    // A plain OPTIONS is an ordinary request and needs a session.
    let resp = client()
        .request(reqwest::Method::OPTIONS, s.gw.url("/api/v1/instances"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // Preflights to the gateway's own login are not passed on: a cross-site page must not be
    // able to post JSON logins.
    let resp = client()
        .request(reqwest::Method::OPTIONS, s.gw.url("/api/v1/auth/login"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    assert_eq!(s.upstream.request_count(), 1);
}

/// The login page as a browser preferring `accept_language` gets it.
async fn login_page_in(gw: &Gateway, accept_language: &str) -> String {
    let resp = client()
        .get(gw.url("/auth/login"))
        .header("accept-language", accept_language)
        .send()
        .await
        .expect("GET /auth/login");
    assert_eq!(resp.status(), 200);
    resp.text().await.expect("login page body")
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_speak_chinese_when_the_browser_asks() {
    let s = drop_in_stack().await;
    let zh = login_page_in(&s.gw, "zh-CN,zh;q=0.9,en;q=0.8").await;
    for text in [
        "<html lang=\"zh-CN\">",
        "<title>登录</title>",
        ">用户名<",
        ">密码<",
    ] {
        assert!(zh.contains(text), "{text} missing from:\n{zh}");
    }
    let en = login_page_in(&s.gw, "en-GB,en;q=0.9").await;
    assert!(en.contains("<title>Sign in</title>"), "{en}");

    // Errors in Chinese from the JSON API too; the codes stay the same.
    let resp = client()
        .get(s.gw.url("/api/v1/instances"))
        .header("accept-language", "zh-CN")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "unauthenticated", "{body}");
    assert_eq!(body["message"], "请先登录。", "{body}");
    let resp = client()
        .post(s.gw.url("/api/v1/auth/login"))
        .header("accept-language", "zh-CN")
        .json(&serde_json::json!({"username": "alice", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "用户名或密码错误。", "{body}");
    assert_eq!(body["error"], "invalid_credentials", "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fixed_language_overrides_the_browser() {
    let s = Stack::start_with(|c| {
        whalefall(c).replace(
            "users_file = \"users.toml\"\n",
            "users_file = \"users.toml\"\nlanguage = \"zh-CN\"\n",
        )
    })
    .await;
    let cookie = api_login_cookie(&s.gw, "alice", "alice-password").await;
    let page = client()
        .get(s.gw.url("/logout"))
        .header("accept-language", "en-US")
        .header("cookie", session_cookie_header(&cookie))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("退出所有设备"), "{page}");
    assert!(page.contains("<strong>alice</strong>"), "{page}");
}
