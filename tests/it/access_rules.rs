//! `[[access.rules]]` on the proxy path and through forward-auth: a signed-in user without the
//! role gets the gateway's 403 (a page or JSON) and the app never sees the request, whatever
//! spelling of the path; public and deny-all rules; the most specific rule wins; denials are
//! audited. And the session secret's rotation: old cookies keep working and are re-issued.

use std::time::Duration;

use crate::session_helpers::*;
use crate::support::*;

const RULES: &str = r#"
[[access.rules]]
path = "/admin"
roles = ["admin"]

[[access.rules]]
path = "/admin/status"
public = true

[[access.rules]]
path = "/reports"
methods = ["DELETE"]
deny = true

[[access.rules]]
path = "/closed"
deny = true
"#;

async fn get(gw: &Gateway, path: &str, cookie: Option<&str>, accept: &str) -> reqwest::Response {
    let mut req = client().get(gw.url(path)).header("accept", accept);
    if let Some(c) = cookie {
        req = req.header("cookie", session_cookie_header(c));
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_decide_by_role_and_cannot_be_dodged() {
    let s = Stack::start_with(|c| c.extra(RULES)).await;
    let alice = login_alice(&s.gw).await; // admin, user
    let bob = session_cookie_or_panic(
        login_json_response(&s.gw, "bob", "bob-password", None).await,
        &s.gw,
        "bob",
    )
    .await; // user
    let json = "application/json";

    let before = s.upstream.request_count();
    for path in [
        "/admin",
        "/admin/users",
        "//admin/users",
        "/admin//users",
        "/%61dmin/users",
        "/admin%2Fusers",
    ] {
        let resp = get(&s.gw, path, Some(&bob), json).await;
        assert_eq!(resp.status(), 403, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "forbidden", "{path}");
    }
    // A navigation gets a page.
    let resp = get(&s.gw, "/admin/users", Some(&bob), "text/html").await;
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("does not have access"));
    assert_eq!(
        s.upstream.request_count(),
        before,
        "the app saw none of them"
    );

    // The admin passes; the rule stops at the segment boundary; the public sub-path is open.
    assert_eq!(
        get(&s.gw, "/admin/users", Some(&alice), json)
            .await
            .status(),
        200
    );
    assert_eq!(get(&s.gw, "/adminx", Some(&bob), json).await.status(), 200);
    assert_eq!(get(&s.gw, "/admin/status", None, json).await.status(), 200);
    // Without a session, a role rule means: sign in first.
    assert_eq!(get(&s.gw, "/admin/users", None, json).await.status(), 401);

    // Method rules: DELETE is closed, GET is not.
    let delete = client()
        .delete(s.gw.url("/reports/7"))
        .header("accept", json)
        .header("cookie", session_cookie_header(&alice))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 403);
    assert_eq!(
        get(&s.gw, "/reports/7", Some(&alice), json).await.status(),
        200
    );
    // Closed to everyone, signed in or not.
    assert_eq!(
        get(&s.gw, "/closed/x", Some(&alice), json).await.status(),
        403
    );
    assert_eq!(get(&s.gw, "/closed/x", None, json).await.status(), 403);

    // Denials of signed-in users are in the security trail, with who and what.
    let events = poll_until(
        "access_denied events",
        Duration::from_secs(10),
        || security_stream_events(&s.redis, "whalefall:"),
        |ev| events_named(ev, "access_denied").len() >= 7,
    )
    .await;
    let denied = events_named(&events, "access_denied");
    assert!(denied
        .iter()
        .any(|e| e["username"] == "bob" && e["reason"] == "GET /admin/users"));
    // Deny-all rules refuse before any session check: anyone can hit them, so they are counted
    // with the attempts, not in the security trail.
    assert!(denied.iter().all(|e| e["username"] == "bob"), "{denied:?}");
    let attempts = stream_events(&s.redis, "whalefall:");
    assert!(events_named(&attempts, "access_denied")
        .iter()
        .any(|e| e["reason"] == "deny_rule"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_session_secret_keeps_sessions_and_reissues_their_cookies() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let old_secret = "old-secret-0123456789abcdef-0123456789";
    let new_secret = "new-secret-fedcba9876543210-fedcba9876";
    let config = |secret: &str, previous: &[&str]| {
        let mut c = TestConfig::new(&redis.url(), upstream.addr());
        c.secret = secret.to_string();
        let list: Vec<String> = previous.iter().map(|p| format!("\"{p}\"")).collect();
        c.replace(
            "cookie_secure = false",
            &format!(
                "cookie_secure = false\nprevious_secrets = [{}]",
                list.join(", ")
            ),
        )
    };

    let before = Gateway::start(&config(old_secret, &[])).await;
    let old_cookie = login_alice(&before).await;
    drop(before);

    // Rotated: the old cookie still works, and comes back re-issued under the new secret.
    let rotating = Gateway::start(&config(new_secret, &[old_secret])).await;
    let resp = get_with_cookie(&rotating, "/app/x", &old_cookie).await;
    assert_eq!(resp.status(), 200);
    let new_cookie = cookie_from(&resp, COOKIE_NAME).expect("the cookie is re-issued");
    assert_ne!(new_cookie, old_cookie);
    // A cookie already under the new secret is not re-issued again.
    let resp = get_with_cookie(&rotating, "/app/x", &new_cookie).await;
    assert_eq!(resp.status(), 200);
    assert!(cookie_from(&resp, COOKIE_NAME).is_none());
    drop(rotating);

    // The old secret dropped: what it sealed is refused, the re-issued cookie lives on.
    let after = Gateway::start(&config(new_secret, &[])).await;
    assert_eq!(
        get_with_cookie(&after, "/app/x", &old_cookie)
            .await
            .status(),
        401
    );
    assert_eq!(
        get_with_cookie(&after, "/app/x", &new_cookie)
            .await
            .status(),
        200
    );
}
