//! Access control in front of the application: who gets proxied, what the
//! application sees, and what unauthenticated clients get instead.

use crate::support::*;

const SPOOFED: &[(&str, &str)] = &[
    ("X-Auth-User", "mallory"),
    ("x-auth-roles", "admin"),
    ("X_Auth_User", "mallory"),
    ("X-AUTH-USER-ID", "0"),
    ("X-Auth-Anything", "y"),
];

fn with_spoofed_headers(mut req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    for (k, v) in SPOOFED {
        req = req.header(*k, *v);
    }
    req
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthenticated_browser_navigation_redirects_to_login_with_next() {
    let s = Stack::start().await;
    let resp = client()
        .get(s.gw.url("/path?q=1"))
        .header("accept", BROWSER_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let loc = location(&resp).expect("Location");
    assert!(loc.starts_with("/login?next="), "Location: {loc}");
    assert_eq!(
        next_param_of_login_redirect(&loc).as_deref(),
        Some("/path?q=1"),
        "Location: {loc}"
    );
    assert_eq!(
        s.upstream.request_count(),
        0,
        "unauthenticated request reached the app"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthenticated_browser_head_redirects_to_login() {
    let s = Stack::start().await;
    let resp = client()
        .head(s.gw.url("/reports"))
        .header("accept", BROWSER_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let loc = location(&resp).expect("Location");
    assert_eq!(
        next_param_of_login_redirect(&loc).as_deref(),
        Some("/reports"),
        "Location: {loc}"
    );
    assert_eq!(s.upstream.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthenticated_api_request_gets_401_json() {
    let s = Stack::start().await;
    let resp = client()
        .get(s.gw.url("/api/items"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.expect("JSON body");
    assert_eq!(body["error"], "unauthenticated", "body: {body}");
    assert_eq!(s.upstream.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthenticated_post_gets_401_even_from_a_browser() {
    let s = Stack::start().await;
    let resp = client()
        .post(s.gw.url("/submit"))
        .header("accept", BROWSER_ACCEPT)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(s.upstream.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn authenticated_request_reaches_upstream_with_identity_headers() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    let resp = get_with_cookie(&s.gw, "/api/items?page=2", &cookie).await;
    assert_eq!(resp.status(), 200);
    let e = echo(resp).await;
    assert_eq!(e.method, "GET");
    assert_eq!(e.uri, "/api/items?page=2");
    assert_eq!(e.headers_named("x-auth-user"), vec!["alice"]);
    assert_eq!(e.headers_named("x-auth-user-id"), vec!["1"]);
    assert_eq!(e.headers_named("x-auth-roles"), vec!["admin,user"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn authenticated_post_body_reaches_upstream_unchanged() {
    let s = Stack::start().await;
    let cookie = login_json(&s.gw, "bob", "bob-password")
        .await
        .expect("bob logs in");
    let body = b"{\"title\":\"hello\"}".to_vec();
    let resp = client()
        .post(s.gw.url("/api/items?draft=1"))
        .header("cookie", session_cookie_header(&cookie))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let e = echo(resp).await;
    assert_eq!(e.method, "POST");
    assert_eq!(e.uri, "/api/items?draft=1");
    assert_eq!(e.body_len, body.len() as u64);
    assert_eq!(e.body_sha256, sha256_hex(&body));
    assert_eq!(e.headers_named("x-auth-user"), vec!["bob"]);
    assert_eq!(e.headers_named("x-auth-roles"), vec!["user"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_identity_headers_are_replaced_on_protected_paths() {
    let s = Stack::start().await;
    let cookie = login_json(&s.gw, "bob", "bob-password")
        .await
        .expect("bob logs in");
    let req = client()
        .get(s.gw.url("/account"))
        .header("cookie", session_cookie_header(&cookie));
    let resp = with_spoofed_headers(req).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let e = echo(resp).await;

    let mut seen = e.x_auth_headers();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("x-auth-roles".to_string(), "user".to_string()),
            ("x-auth-user".to_string(), "bob".to_string()),
            ("x-auth-user-id".to_string(), "2".to_string()),
        ],
        "upstream saw spoofed x-auth headers"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_identity_headers_are_removed_on_public_paths() {
    let s = Stack::start().await;
    let req = client().get(s.gw.url("/static/app.js"));
    let resp = with_spoofed_headers(req).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let e = echo(resp).await;
    assert!(
        e.x_auth_headers().is_empty(),
        "upstream saw: {:?}",
        e.x_auth_headers()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_cookie_is_stripped_and_other_cookies_are_kept_verbatim() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    let resp = client()
        .get(s.gw.url("/prefs"))
        .header(
            "cookie",
            format!("app_pref=dark; {COOKIE_NAME}={cookie}; theme=blue; tracking=a%20b"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let e = echo(resp).await;
    assert_eq!(
        e.cookie_pairs(),
        vec!["app_pref=dark", "theme=blue", "tracking=a%20b"]
    );
    let all_cookie_text = e.headers_named("cookie").join("; ");
    assert!(
        !all_cookie_text.contains(&cookie),
        "session cookie leaked upstream: {all_cookie_text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_gets_no_cookie_when_only_the_gateway_cookie_was_sent() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    let e = echo(get_with_cookie(&s.gw, "/x", &cookie).await).await;
    assert!(
        e.cookie_pairs().is_empty(),
        "upstream cookies: {:?}",
        e.cookie_pairs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_headers_describe_the_client_connection() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    let e = echo(get_with_cookie(&s.gw, "/x", &cookie).await).await;
    assert_eq!(e.headers_named("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(e.headers_named("x-forwarded-proto"), vec!["http"]);
    assert_eq!(e.headers_named("x-forwarded-host"), vec![s.gw.host()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_for_from_an_untrusted_client_ends_with_the_real_peer() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    let resp = client()
        .get(s.gw.url("/x"))
        .header("cookie", session_cookie_header(&cookie))
        .header("x-forwarded-for", "6.6.6.6")
        .send()
        .await
        .unwrap();
    let e = echo(resp).await;
    let xff = e.headers_named("x-forwarded-for").join(", ");
    let last_hop = xff.rsplit(',').next().unwrap_or("").trim().to_string();
    assert_eq!(last_hop, "127.0.0.1", "X-Forwarded-For upstream: {xff:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn application_set_cookie_reaches_the_client() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    let resp = get_with_cookie(&s.gw, "/set-cookie", &cookie).await;
    assert_eq!(resp.status(), 200);
    let header = set_cookie_header(&resp, "app_pref").expect("app Set-Cookie missing");
    assert!(header.starts_with("app_pref=dark"), "{header}");
}

#[tokio::test(flavor = "multi_thread")]
async fn application_error_statuses_pass_through() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    for status in [404u16, 418, 500] {
        let resp = get_with_cookie(&s.gw, &format!("/status/{status}"), &cookie).await;
        assert_eq!(resp.status().as_u16(), status);
        let e = echo(resp).await; // the body is the app's, not a gateway page
        assert_eq!(e.uri, format!("/status/{status}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn public_paths_are_proxied_without_a_session() {
    let s = Stack::start().await;
    for path in ["/static/app.js", "/static/css/site.css?v=3", "/favicon.ico"] {
        let resp = client()
            .get(s.gw.url(path))
            .header("accept", BROWSER_ACCEPT)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(echo(resp).await.uri, path);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn paths_that_merely_resemble_public_prefixes_need_a_session() {
    let s = Stack::start().await;
    for path in [
        "/static",
        "/staticfiles/x",
        "/api/static/x",
        "/api/favicon.ico",
    ] {
        let resp = client().get(s.gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
    }
    assert_eq!(s.upstream.request_count(), 0);
}

/// Sends a request line verbatim (reqwest would normalise the path) and returns
/// (status, body).
fn raw_get(addr: &str, target: &str) -> (u16, String) {
    let head = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json");
    let (status, text) = raw_request(addr, &head, "");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn dot_segments_cannot_escape_a_public_prefix() {
    let s = Stack::start().await;
    let host = s.gw.host();
    let mut escaped = Vec::new();
    for target in [
        "/static/../secret",
        "/static/%2e%2e/secret",
        "/static/./../secret",
        "/static/..%2fsecret",
    ] {
        let (status, body) = tokio::task::spawn_blocking({
            let host = host.clone();
            move || raw_get(&host, target)
        })
        .await
        .unwrap();
        if status == 200 {
            // Proxied: the app must not have been handed a path outside /static/.
            let e: Echo = serde_json::from_str(&body).expect("echo body");
            let decoded = e
                .uri
                .to_ascii_lowercase()
                .replace("%2e", ".")
                .replace("%2f", "/");
            if !e.uri.starts_with("/static/") || decoded.contains("/../") {
                escaped.push(format!("{target} reached the app as {}", e.uri));
            }
        } else if !((400..500).contains(&status) || status == 302) {
            escaped.push(format!("{target}: status {status}"));
        }
    }
    assert!(
        escaped.is_empty(),
        "unauthenticated requests escaped the public prefix:\n{}",
        escaped.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_endpoint_is_ok_without_a_session() {
    let s = Stack::start().await;
    let resp = client()
        .get(s.gw.url("/_gateway/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ok");
}
