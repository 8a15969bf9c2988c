//! Every way a session can be ended takes effect on the very next request, on
//! any instance: two gateways share one Redis, the session is ended through
//! instance A (or the CLI) and the next request goes to instance B.
//!
//! Also the user's own session page, `/_gateway/sessions`.

use crate::session_helpers::*;
use crate::support::*;
use reqwest::Method;

async fn sessions_page_html(gw: &Gateway, cookie: &str) -> String {
    let resp = browser_get_with_cookie(gw, "/_gateway/sessions", cookie).await;
    assert_eq!(resp.status(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(ct.starts_with("text/html"), "content-type {ct}");
    resp.text().await.unwrap()
}

/// POST /_gateway/sessions as the browser form does.
async fn end_session_form(
    gw: &Gateway,
    cookie: &str,
    fields: &[(&str, &str)],
    origin: Option<&str>,
) -> reqwest::Response {
    let mut req = client()
        .post(gw.url("/_gateway/sessions"))
        .header("accept", BROWSER_ACCEPT)
        .header("cookie", session_cookie_header(cookie))
        .form(fields);
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    req.send().await.expect("POST /_gateway/sessions")
}

// ---------------------------------------------------------------------------
// Logout
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn logout_on_a_is_refused_on_b_at_the_next_request() {
    let p = Pair::start(|c| c).await;
    let cookie = alice(&p.a).await;
    assert_live(&p.b, &cookie, "alice", "before logout").await;

    // No body, JSON accept, no Origin: a plain API logout.
    let resp = logout_json(&p.a, "/logout", &cookie).await;
    assert_eq!(resp.status(), 200);
    let expired = set_cookie_header(&resp, COOKIE_NAME).expect("cookie is expired");
    assert!(
        cookie_attributes(&expired).contains(&("max-age".to_string(), "0".to_string())),
        "{expired}"
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "logged_out", "{body}");

    assert_refused(&p.b, &cookie, "next request on B after logout on A").await;
    assert_refused(&p.a, &cookie, "and on A").await;
    assert!(p.session_keys().is_empty(), "{:?}", p.session_keys());
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_scope_all_ends_every_session_of_the_user_only() {
    let p = Pair::start(|c| c).await;
    let a1 = alice(&p.a).await;
    let a2 = alice(&p.b).await;
    let a3 = login_as(&p.a, "alice", "alice-password", "Phone/9").await;
    let b1 = bob(&p.b).await;
    for c in [&a1, &a2, &a3] {
        assert_live(&p.b, c, "alice", "before scope=all").await;
    }

    let resp = logout_json(&p.a, "/logout?scope=all", &a1).await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "logged_out", "{body}");
    if let Some(n) = body.get("ended") {
        assert_eq!(n, 3, "{body}");
    }

    for (c, what) in [
        (&a1, "the session used"),
        (&a2, "alice on B"),
        (&a3, "alice's phone"),
    ] {
        assert_refused(&p.b, c, what).await;
    }
    assert_live(&p.b, &b1, "bob", "bob is untouched by alice's scope=all").await;
    assert_eq!(p.session_keys().len(), 1, "{:?}", p.session_keys());
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_form_with_scope_all_from_the_sessions_page_works() {
    let p = Pair::start(|c| c).await;
    let a1 = alice(&p.a).await;
    let a2 = alice(&p.b).await;
    let html = sessions_page_html(&p.a, &a1).await;
    let token = hidden_input_value(&html, "csrf_token").expect("csrf token on sessions page");
    let resp = client()
        .post(p.a.url("/logout"))
        .header("accept", BROWSER_ACCEPT)
        .header("origin", p.a.origin())
        .header("cookie", session_cookie_header(&a1))
        .form(&[("csrf_token", token.as_str()), ("scope", "all")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_refused(&p.b, &a1, "a1").await;
    assert_refused(&p.b, &a2, "a2").await;
}

// ---------------------------------------------------------------------------
// The user's own sessions page
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn sessions_page_lists_own_sessions_with_ip_and_browser() {
    let s = Stack::start().await;
    let a1 = alice(&s.gw).await;
    let a2 = login_as(&s.gw, "alice", "alice-password", "AlicePhone/7.2").await;
    let b1 = bob(&s.gw).await;
    let bob_handle = handle_of(&s.gw, &b1).await;
    let a2_handle = handle_of(&s.gw, &a2).await;

    let html = sessions_page_html(&s.gw, &a1).await;
    assert!(html.contains("127.0.0.1"), "IP shown:\n{html}");
    assert!(html.contains("AliceBrowser/1.0"), "browser shown:\n{html}");
    assert!(
        html.contains("AlicePhone/7.2"),
        "other browser shown:\n{html}"
    );
    assert!(
        !html.contains("BobBrowser"),
        "bob's session must not be listed:\n{html}"
    );
    assert!(
        !html.contains(&bob_handle),
        "bob's handle must not appear:\n{html}"
    );
    assert!(
        html.contains(&a2_handle),
        "the other session can be ended:\n{html}"
    );
    assert!(hidden_input_value(&html, "csrf_token").is_some(), "{html}");
    for c in [&a1, &a2, &b1] {
        assert!(!html.contains(c.as_str()), "page shows a cookie value");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_page_json_flags_the_current_session() {
    let s = Stack::start().await;
    let a1 = alice(&s.gw).await;
    let a2 = login_as(&s.gw, "alice", "alice-password", "AlicePhone/7.2").await;
    let _b1 = bob(&s.gw).await;

    let items = own_sessions(&s.gw, &a1).await;
    assert_eq!(items.len(), 2, "alice's two sessions only: {items:#?}");
    for item in &items {
        assert_eq!(item["user_id"], "1", "{item}");
        assert_eq!(item["username"], "alice", "{item}");
        assert_eq!(item["ip"], "127.0.0.1", "{item}");
        assert!(item["current"].is_boolean(), "{item}");
    }
    let current: Vec<_> = items.iter().filter(|i| i["current"] == true).collect();
    assert_eq!(current.len(), 1, "{items:#?}");
    assert_eq!(current[0]["user_agent"], "AliceBrowser/1.0");
    let other: Vec<_> = items.iter().filter(|i| i["current"] == false).collect();
    assert_eq!(other[0]["user_agent"], "AlicePhone/7.2");

    // From the other session the flags flip.
    let from_a2 = own_sessions(&s.gw, &a2).await;
    let current2: Vec<_> = from_a2.iter().filter(|i| i["current"] == true).collect();
    assert_eq!(current2.len(), 1);
    assert_eq!(current2[0]["user_agent"], "AlicePhone/7.2");
    assert_ne!(current2[0]["handle"], current[0]["handle"]);

    let text = serde_json::to_string(&items).unwrap();
    for c in [&a1, &a2] {
        assert!(!text.contains(c.as_str()), "JSON shows a cookie value");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_page_needs_a_session() {
    let s = Stack::start().await;
    let resp = client()
        .get(s.gw.url("/_gateway/sessions"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = client()
        .get(s.gw.url("/_gateway/sessions"))
        .header("accept", BROWSER_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
}

#[tokio::test(flavor = "multi_thread")]
async fn ending_another_own_session_on_the_page_is_honoured_by_b() {
    let p = Pair::start(|c| c).await;
    let a1 = alice(&p.a).await;
    let a2 = login_as(&p.b, "alice", "alice-password", "AlicePhone/7.2").await;
    let a2_handle = handle_of(&p.b, &a2).await;
    assert_live(&p.b, &a2, "alice", "before").await;

    let html = sessions_page_html(&p.a, &a1).await;
    let token = hidden_input_value(&html, "csrf_token").expect("csrf token");
    let origin = p.a.origin();
    let resp = end_session_form(
        &p.a,
        &a1,
        &[
            ("csrf_token", token.as_str()),
            ("handle", a2_handle.as_str()),
        ],
        Some(&origin),
    )
    .await;
    assert_eq!(resp.status(), 303, "{:?}", resp.text().await);

    assert_refused(&p.b, &a2, "the ended session on B").await;
    assert_live(&p.b, &a1, "alice", "the session that ended the other").await;
    let left = own_sessions(&p.a, &a1).await;
    assert_eq!(left.len(), 1, "{left:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ending_someone_elses_handle_does_nothing() {
    let s = Stack::start().await;
    let a1 = alice(&s.gw).await;
    let b1 = bob(&s.gw).await;
    let bob_handle = handle_of(&s.gw, &b1).await;

    let html = sessions_page_html(&s.gw, &a1).await;
    let token = hidden_input_value(&html, "csrf_token").expect("csrf token");
    let origin = s.gw.origin();
    let resp = end_session_form(
        &s.gw,
        &a1,
        &[
            ("csrf_token", token.as_str()),
            ("handle", bob_handle.as_str()),
        ],
        Some(&origin),
    )
    .await;
    // Reads exactly like a handle that no longer exists; either way nothing happens to bob.
    assert!(
        [303u16, 200, 404].contains(&resp.status().as_u16()),
        "status {}",
        resp.status()
    );
    assert_live(
        &s.gw,
        &b1,
        "bob",
        "bob's session after alice tried to end it",
    )
    .await;
    assert!(key_exists(
        &s.redis,
        &session_key("whalefall:", &bob_handle)
    ));
    assert_live(&s.gw, &a1, "alice", "alice herself").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ending_a_session_without_the_csrf_token_is_refused() {
    let s = Stack::start().await;
    let a1 = alice(&s.gw).await;
    let a2 = alice(&s.gw).await;
    let a2_handle = handle_of(&s.gw, &a2).await;
    let origin = s.gw.origin();

    let resp = end_session_form(&s.gw, &a1, &[("handle", a2_handle.as_str())], Some(&origin)).await;
    assert_eq!(resp.status(), 403, "no token");
    let resp = end_session_form(
        &s.gw,
        &a1,
        &[
            ("csrf_token", "not-the-token"),
            ("handle", a2_handle.as_str()),
        ],
        Some(&origin),
    )
    .await;
    assert_eq!(resp.status(), 403, "wrong token");

    // A token from another session's page is no good either.
    let a2_html = sessions_page_html(&s.gw, &a2).await;
    let a2_token = hidden_input_value(&a2_html, "csrf_token").unwrap();
    let a1_handle = handle_of(&s.gw, &a1).await;
    let resp = end_session_form(
        &s.gw,
        &a1,
        &[
            ("csrf_token", a2_token.as_str()),
            ("handle", a1_handle.as_str()),
        ],
        Some(&origin),
    )
    .await;
    assert_eq!(resp.status(), 403, "token of another session");

    // Right token, but posted from another site.
    let html = sessions_page_html(&s.gw, &a1).await;
    let token = hidden_input_value(&html, "csrf_token").unwrap();
    let resp = end_session_form(
        &s.gw,
        &a1,
        &[
            ("csrf_token", token.as_str()),
            ("handle", a2_handle.as_str()),
        ],
        Some("https://evil.example"),
    )
    .await;
    assert_eq!(resp.status(), 403, "cross-site");

    assert_live(&s.gw, &a2, "alice", "target survives refused attempts").await;
    assert_live(&s.gw, &a1, "alice", "actor survives refused attempts").await;
}

// ---------------------------------------------------------------------------
// Admin API
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn admin_delete_one_handle_is_honoured_by_b() {
    let p = Pair::start(with_admin_token).await;
    let a1 = alice(&p.a).await;
    let a2 = alice(&p.b).await;
    let h1 = handle_of(&p.a, &a1).await;

    let (status, body) = admin_delete(&p.a, &format!("/sessions/{h1}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked"], 1, "{body}");

    assert_refused(&p.b, &a1, "revoked handle on B").await;
    assert_live(&p.b, &a2, "alice", "alice's other session").await;

    // Revoking it again: nothing there any more.
    let (status, _) = admin_delete(&p.a, &format!("/sessions/{h1}")).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_delete_user_sessions_is_honoured_by_b() {
    let p = Pair::start(with_admin_token).await;
    let a1 = alice(&p.a).await;
    let a2 = alice(&p.b).await;
    let b1 = bob(&p.a).await;

    let (status, body) = admin_delete(&p.a, "/users/1/sessions").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked"], 2, "{body}");

    assert_refused(&p.b, &a1, "alice 1 on B").await;
    assert_refused(&p.b, &a2, "alice 2 on B").await;
    assert_live(&p.b, &b1, "bob", "bob is untouched").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_delete_all_sessions_is_honoured_by_b() {
    let p = Pair::start(with_admin_token).await;
    let a1 = alice(&p.a).await;
    let b1 = bob(&p.b).await;

    let (status, body) = admin_delete(&p.a, "/sessions").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked"], 2, "{body}");

    assert_refused(&p.b, &a1, "alice on B").await;
    assert_refused(&p.b, &b1, "bob on B").await;
    assert!(p.session_keys().is_empty(), "{:?}", p.session_keys());
    // Signing in again works as usual.
    let again = alice(&p.b).await;
    assert_live(&p.a, &again, "alice", "new login after revoke-all").await;
}

// ---------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn cli_revoke_handle_is_honoured_by_b() {
    let p = Pair::start(|c| c).await;
    let a1 = alice(&p.a).await;
    let a2 = alice(&p.a).await;
    let h1 = handle_of(&p.a, &a1).await;

    let out = cli_for(&p.a, &["sessions", "revoke"], &["--handle", &h1]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("revoked 1"),
        "{}",
        describe(&out)
    );

    assert_refused(&p.b, &a1, "revoked by CLI, checked on B").await;
    assert_live(&p.b, &a2, "alice", "the other session").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_revoke_user_is_honoured_by_b() {
    let p = Pair::start(|c| c).await;
    let a1 = alice(&p.a).await;
    let a2 = alice(&p.b).await;
    let b1 = bob(&p.a).await;

    let out = cli_for(&p.a, &["sessions", "revoke"], &["--user", "1"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("revoked 2"),
        "{}",
        describe(&out)
    );

    assert_refused(&p.b, &a1, "alice 1").await;
    assert_refused(&p.b, &a2, "alice 2").await;
    assert_live(&p.b, &b1, "bob", "bob untouched").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_revoke_all_is_honoured_by_b() {
    let p = Pair::start(|c| c).await;
    let a1 = alice(&p.a).await;
    let b1 = bob(&p.b).await;

    let out = cli_for(&p.a, &["sessions", "revoke"], &["--all"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("revoked 2"),
        "{}",
        describe(&out)
    );

    assert_refused(&p.b, &a1, "alice").await;
    assert_refused(&p.b, &b1, "bob").await;
    assert!(p.session_keys().is_empty(), "{:?}", p.session_keys());
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_revocation_needs_the_right_token() {
    let p = Pair::start(with_admin_token).await;
    let a1 = alice(&p.a).await;
    let h1 = handle_of(&p.a, &a1).await;
    let (status, _) = admin_request(
        &p.a,
        Method::DELETE,
        &format!("/sessions/{h1}"),
        Some("wrong-token-0123456789abcdef"),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = admin_request(&p.a, Method::DELETE, "/sessions", None).await;
    assert_eq!(status, 401);
    assert_live(&p.b, &a1, "alice", "nothing revoked without the token").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_touch_never_brings_a_revoked_session_back() {
    tolerate_clock_jumps(|| async {
        // Every request on B is due a touch (written off the request path) while A logs the
        // session out at the same moment: the session must stay gone.
        let p = Pair::start(|c| {
            session_settings(
                c.idle_timeout("30s").absolute_timeout("1h"),
                "touch_interval = \"100ms\"",
            )
        })
        .await;
        for round in 0..8 {
            let cookie = alice(&p.a).await;
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            let (_, resp) = tokio::join!(
                status_with(&p.b, &cookie),
                logout_json(&p.a, "/logout", &cookie)
            );
            assert_eq!(resp.status(), 200, "round {round}");
            // Let any touch spawned by B's request land.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            assert!(
                p.session_keys().is_empty(),
                "round {round}: revoked session came back: {:?}",
                p.session_keys()
            );
            assert_refused(&p.b, &cookie, "after logout").await;
        }
    })
    .await;
}
