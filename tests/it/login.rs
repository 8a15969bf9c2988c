//! Login: the HTML form flow (CSRF, Origin, `next` handling) and the JSON API.

use crate::support::*;

const OPEN_REDIRECTS: &[&str] = &[
    "//evil.com",
    "/\\evil.com",
    "https://evil.com",
    "/%5Cevil.com",
    "javascript:alert(1)",
    "\\\\evil",
    "evil.com/path",
];

#[tokio::test(flavor = "multi_thread")]
async fn login_page_is_a_form_with_csrf_token_and_strict_csrf_cookie() {
    let s = Stack::start().await;
    let page = get_login_page(&s.gw, "").await;

    assert_eq!(page.status, 200, "GET /login: {}", page.html);
    assert!(
        page.html.contains("name=\"username\""),
        "no username field: {}",
        page.html
    );
    assert!(
        page.html.contains("name=\"password\""),
        "no password field: {}",
        page.html
    );
    let token = page.csrf_token.expect("hidden csrf_token input");
    assert!(!token.is_empty(), "csrf_token is empty");
    assert!(
        page.next_field.is_some(),
        "no hidden next input: {}",
        page.html
    );

    let set_cookie = page
        .csrf_cookie_header
        .expect("GET /login sets the csrf cookie");
    let attrs = cookie_attributes(&set_cookie);
    assert!(
        attrs.iter().any(|(k, _)| k == "httponly"),
        "csrf cookie not HttpOnly: {set_cookie}"
    );
    assert!(
        attrs
            .iter()
            .any(|(k, v)| k == "samesite" && v.eq_ignore_ascii_case("strict")),
        "csrf cookie not SameSite=Strict: {set_cookie}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn login_page_carries_next_into_the_hidden_field() {
    let s = Stack::start().await;
    let page = get_login_page(&s.gw, "?next=%2Freports%3Fx%3D1").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.next_field.as_deref(),
        Some("/reports?x=1"),
        "html: {}",
        page.html
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn login_page_does_not_reflect_markup_from_next() {
    let s = Stack::start().await;
    let page = get_login_page(&s.gw, "?next=%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E").await;
    assert!(page.status < 500, "status {}", page.status);
    assert!(
        !page.html.contains("<script>alert(1)"),
        "next was reflected unescaped into the page: {}",
        page.html
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn form_login_redirects_to_next_with_a_working_session_cookie() {
    let s = Stack::start().await;
    let resp = login_form(&s.gw, "alice", "alice-password", "/dashboard").await;

    assert_eq!(resp.status(), 303, "logs:\n{}", s.gw.logs());
    assert_eq!(location(&resp).as_deref(), Some("/dashboard"));
    let cookie = cookie_from(&resp, COOKIE_NAME).expect("session cookie set");

    let after = get_with_cookie(&s.gw, "/dashboard", &cookie).await;
    assert_eq!(after.status(), 200);
    let e = echo(after).await;
    assert_eq!(e.uri, "/dashboard");
    assert_eq!(e.header("x-auth-user").as_deref(), Some("alice"));
}

#[tokio::test(flavor = "multi_thread")]
async fn form_login_keeps_a_safe_relative_next_with_query() {
    let s = Stack::start().await;
    let resp = login_form(&s.gw, "alice", "alice-password", "/reports?x=1").await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp).as_deref(), Some("/reports?x=1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn form_login_without_next_redirects_to_root() {
    let s = Stack::start().await;
    let resp = login_form(&s.gw, "alice", "alice-password", "").await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp).as_deref(), Some("/"));
}

#[tokio::test(flavor = "multi_thread")]
async fn form_login_sends_open_redirect_attempts_to_root() {
    let s = Stack::start().await;
    let mut wrong = Vec::new();
    for next in OPEN_REDIRECTS {
        let resp = login_form(&s.gw, "alice", "alice-password", next).await;
        let status = resp.status().as_u16();
        let loc = location(&resp);
        if status != 303 || loc.as_deref() != Some("/") {
            wrong.push(format!("next={next:?} -> {status} Location {loc:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "unsafe next values not replaced by \"/\":\n{}",
        wrong.join("\n")
    );
}

/// Posts the login form with a fresh CSRF cookie/token pair, letting the
/// caller choose the extra headers.
async fn post_login_form(
    gw: &Gateway,
    headers: &[(&str, String)],
    with_cookie: bool,
    token_override: Option<&str>,
) -> reqwest::Response {
    let page = get_login_page(gw, "").await;
    let csrf_cookie = page.csrf_cookie.expect("csrf cookie");
    let token = token_override
        .map(str::to_string)
        .unwrap_or_else(|| page.csrf_token.expect("csrf token"));
    let mut req = client()
        .post(gw.url("/login"))
        .header("accept", BROWSER_ACCEPT);
    if with_cookie {
        req = req.header("cookie", format!("{CSRF_COOKIE_NAME}={csrf_cookie}"));
    }
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.form(&[
        ("username", "alice"),
        ("password", "alice-password"),
        ("csrf_token", token.as_str()),
        ("next", "/"),
    ])
    .send()
    .await
    .unwrap()
}

fn assert_refused(resp: &reqwest::Response, what: &str) {
    let status = resp.status().as_u16();
    assert!(
        (400..500).contains(&status),
        "{what}: expected a 4xx refusal, got {status}"
    );
    assert!(
        cookie_from(resp, COOKIE_NAME).is_none(),
        "{what}: a session cookie was issued"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn form_login_from_a_cross_site_origin_is_forbidden() {
    let s = Stack::start().await;
    let resp = post_login_form(
        &s.gw,
        &[("origin", "http://evil.example".into())],
        true,
        None,
    )
    .await;
    assert_eq!(resp.status(), 403);
    assert!(cookie_from(&resp, COOKIE_NAME).is_none());
    assert!(
        s.session_keys().is_empty(),
        "a session was created: {:?}",
        s.session_keys()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn form_login_with_cross_site_referer_and_no_origin_is_forbidden() {
    let s = Stack::start().await;
    let resp = post_login_form(
        &s.gw,
        &[("referer", "http://evil.example/phish".into())],
        true,
        None,
    )
    .await;
    assert_eq!(resp.status(), 403);
    assert!(cookie_from(&resp, COOKIE_NAME).is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn form_login_with_same_site_referer_and_no_origin_is_accepted() {
    let s = Stack::start().await;
    let referer = format!("{}/login?next=%2F", s.gw.origin());
    let resp = post_login_form(&s.gw, &[("referer", referer)], true, None).await;
    assert_eq!(resp.status(), 303);
    assert!(cookie_from(&resp, COOKIE_NAME).is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn form_login_without_the_csrf_cookie_is_refused() {
    let s = Stack::start().await;
    let resp = post_login_form(&s.gw, &[("origin", s.gw.origin())], false, None).await;
    assert_refused(&resp, "no csrf cookie");
    assert!(s.session_keys().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn form_login_with_a_mismatched_csrf_token_is_refused() {
    let s = Stack::start().await;
    // A token from a different login page does not match this page's cookie.
    let other = get_login_page(&s.gw, "").await.csrf_token.expect("token");
    let resp = post_login_form(&s.gw, &[("origin", s.gw.origin())], true, Some(&other)).await;
    assert_refused(&resp, "mismatched token");
    assert!(s.session_keys().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn form_login_with_an_empty_csrf_token_is_refused() {
    let s = Stack::start().await;
    let resp = post_login_form(&s.gw, &[("origin", s.gw.origin())], true, Some("")).await;
    assert_refused(&resp, "empty token");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_login_returns_the_user_and_a_session_cookie() {
    let s = Stack::start().await;
    let resp = login_json_response(&s.gw, "alice", "alice-password", None).await;
    assert_eq!(resp.status(), 200);
    assert!(
        cookie_from(&resp, COOKIE_NAME).is_some(),
        "no session cookie"
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body["user"],
        serde_json::json!({"id": "1", "username": "alice", "role": "admin", "roles": ["admin", "user"]}),
        "body: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_login_from_a_cross_site_origin_is_forbidden() {
    let s = Stack::start().await;
    let resp = client()
        .post(s.gw.url("/login"))
        .header("origin", "https://evil.example")
        .json(&serde_json::json!({"username": "alice", "password": "alice-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(cookie_from(&resp, COOKIE_NAME).is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_json_logins_are_indistinguishable() {
    let s = Stack::start().await;
    let mut bodies = Vec::new();
    for (user, pass) in [
        ("alice", "wrong-password"),
        ("mallory", "alice-password"),
        ("carol", "carol-password"), // disabled
    ] {
        let resp = login_json_response(&s.gw, user, pass, None).await;
        assert_eq!(resp.status(), 401, "{user}");
        assert!(
            cookie_from(&resp, COOKIE_NAME).is_none(),
            "{user} got a session cookie"
        );
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_credentials", "{user}: {body}");
        bodies.push(body);
    }
    assert_eq!(
        bodies[0], bodies[1],
        "unknown user answered differently from wrong password"
    );
    assert_eq!(
        bodies[0], bodies[2],
        "disabled user answered differently from wrong password"
    );
    assert!(s.session_keys().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_form_logins_show_the_same_message() {
    let s = Stack::start().await;
    for (user, pass) in [
        ("alice", "wrong-password"),
        ("mallory", "alice-password"),
        ("carol", "carol-password"),
    ] {
        let resp = login_form(&s.gw, user, pass, "/").await;
        assert_eq!(resp.status(), 401, "{user}");
        assert!(
            cookie_from(&resp, COOKIE_NAME).is_none(),
            "{user} got a session cookie"
        );
        let html = resp.text().await.unwrap();
        assert!(
            html.contains("Invalid username or password"),
            "{user}: page lacks the generic message: {html}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn login_issues_a_new_session_id_instead_of_reusing_the_clients() {
    let s = Stack::start().await;
    let first = login_alice(&s.gw).await;

    let resp = login_json_response(
        &s.gw,
        "bob",
        "bob-password",
        Some(&session_cookie_header(&first)),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let second = cookie_from(&resp, COOKIE_NAME).expect("new session cookie");
    assert_ne!(second, first, "login reused the session id the client sent");

    let e = echo(get_with_cookie(&s.gw, "/whoami", &second).await).await;
    assert_eq!(e.header("x-auth-user").as_deref(), Some("bob"));
}

#[tokio::test(flavor = "multi_thread")]
async fn login_ignores_an_attacker_chosen_session_cookie() {
    let s = Stack::start().await;
    let planted = "A".repeat(86);
    let resp = login_json_response(
        &s.gw,
        "alice",
        "alice-password",
        Some(&session_cookie_header(&planted)),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let issued = cookie_from(&resp, COOKIE_NAME).expect("session cookie");
    assert_ne!(issued, planted);

    let resp = get_with_cookie(&s.gw, "/private", &planted).await;
    assert_eq!(resp.status(), 401, "planted cookie became a valid session");
}
