//! Logout: the confirmation page, the POST that ends the session, and CSRF
//! protection of that POST.

use crate::support::*;

fn cookie_header_with(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn post_logout(gw: &Gateway, cookie: &str) -> reqwest::Response {
    client()
        .post(gw.url("/logout"))
        .header("cookie", session_cookie_header(cookie))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn post_logout_redirects_to_login_and_expires_the_cookie() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    let resp = post_logout(&s.gw, &cookie).await;

    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp).as_deref(), Some("/login"));
    let header = set_cookie_header(&resp, COOKIE_NAME).expect("logout clears the cookie");
    let attrs = cookie_attributes(&header);
    assert!(
        attrs.iter().any(|(k, v)| k == "max-age" && v == "0"),
        "cookie not expired: {header}"
    );
    assert_ne!(cookie_from(&resp, COOKIE_NAME), Some(cookie), "{header}");
}

#[tokio::test(flavor = "multi_thread")]
async fn post_logout_deletes_the_session_from_redis() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    assert_eq!(s.session_keys().len(), 1);
    assert_eq!(post_logout(&s.gw, &cookie).await.status(), 303);
    assert!(
        s.session_keys().is_empty(),
        "left in Redis: {:?}",
        s.session_keys()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replaying_the_cookie_after_logout_is_unauthenticated() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    assert_eq!(post_logout(&s.gw, &cookie).await.status(), 303);

    assert_eq!(
        get_with_cookie(&s.gw, "/api/me", &cookie).await.status(),
        401
    );
    let browser = browser_get_with_cookie(&s.gw, "/home", &cookie).await;
    assert_eq!(browser.status(), 302);
    assert!(location(&browser).unwrap_or_default().starts_with("/login"));
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logout_answers_logged_out() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    let resp = logout_json(&s.gw, "/logout", &cookie).await;
    assert_eq!(resp.status(), 200);
    assert!(
        set_cookie_header(&resp, COOKIE_NAME).is_some(),
        "cookie not cleared"
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "logged_out");
    assert!(s.session_keys().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn same_site_origin_logout_is_accepted() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    let resp = client()
        .post(s.gw.url("/logout"))
        .header("origin", s.gw.origin())
        .header("cookie", session_cookie_header(&cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert!(s.session_keys().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_site_logout_is_refused_and_the_session_survives() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    let resp = client()
        .post(s.gw.url("/logout"))
        .header("origin", "http://evil.example")
        .header("cookie", session_cookie_header(&cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(s.session_keys().len(), 1);
    assert_eq!(
        get_with_cookie(&s.gw, "/still-here", &cookie)
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_ends_only_the_current_session() {
    let s = Stack::start().await;
    let laptop = login_alice(&s.gw).await;
    let phone = login_alice(&s.gw).await;
    assert_eq!(post_logout(&s.gw, &laptop).await.status(), 303);
    assert_eq!(get_with_cookie(&s.gw, "/x", &laptop).await.status(), 401);
    assert_eq!(get_with_cookie(&s.gw, "/x", &phone).await.status(), 200);
}

/// GET /logout: the HTML page plus any cookies it set.
async fn logout_page(gw: &Gateway, session: &str) -> (u16, String, Vec<(String, String)>) {
    let resp = browser_get_with_cookie(gw, "/logout", session).await;
    let status = resp.status().as_u16();
    let mut cookies = vec![(COOKIE_NAME.to_string(), session.to_string())];
    for h in set_cookies(&resp) {
        if let Some((k, v)) = h.split(';').next().and_then(|p| p.split_once('=')) {
            let k = k.trim().to_string();
            cookies.retain(|(n, _)| *n != k);
            cookies.push((k, v.trim().to_string()));
        }
    }
    (status, resp.text().await.unwrap(), cookies)
}

#[tokio::test(flavor = "multi_thread")]
async fn get_logout_shows_a_confirmation_form() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    let (status, html, _) = logout_page(&s.gw, &cookie).await;
    assert_eq!(status, 200);
    assert!(html.contains("<form"), "{html}");
    assert!(
        html.contains("action=\"/logout\""),
        "form does not post to /logout: {html}"
    );
    assert!(
        hidden_input_value(&html, "csrf_token").is_some_and(|t| !t.is_empty()),
        "no csrf_token in: {html}"
    );
    // Showing the page does not log anybody out.
    assert_eq!(s.session_keys().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_logout_without_a_session_redirects_to_login() {
    let s = Stack::start().await;
    let resp = client()
        .get(s.gw.url("/logout"))
        .header("accept", BROWSER_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp).as_deref(), Some("/login"));
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_form_with_its_csrf_token_logs_out() {
    let s = Stack::start().await;
    let session = login_alice(&s.gw).await;
    let (_, html, cookies) = logout_page(&s.gw, &session).await;
    let token = hidden_input_value(&html, "csrf_token").expect("csrf_token");

    let resp = client()
        .post(s.gw.url("/logout"))
        .header("accept", BROWSER_ACCEPT)
        .header("origin", s.gw.origin())
        .header("cookie", cookie_header_with(&cookies))
        .form(&[("csrf_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp).as_deref(), Some("/login"));
    assert!(s.session_keys().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_form_with_a_wrong_csrf_token_keeps_the_session() {
    let s = Stack::start().await;
    let session = login_alice(&s.gw).await;
    let (_, _, cookies) = logout_page(&s.gw, &session).await;

    let resp = client()
        .post(s.gw.url("/logout"))
        .header("accept", BROWSER_ACCEPT)
        .header("cookie", cookie_header_with(&cookies))
        .form(&[("csrf_token", "not-the-token")])
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert!((400..500).contains(&status), "status {status}");
    assert_eq!(s.session_keys().len(), 1);
    assert_eq!(get_with_cookie(&s.gw, "/x", &session).await.status(), 200);
}
