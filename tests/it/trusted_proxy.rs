//! `[server] trusted_proxies`: `X-Forwarded-For` / `-Proto` / `-Host` sent by the client are
//! believed only when the TCP peer is a trusted proxy. Otherwise the peer address is the client
//! address everywhere: in the session record, in the audit trail and in what the app receives.

use std::time::{Duration, Instant};

use crate::support::*;

/// `POST /login` (JSON) as alice with extra request headers; returns the session cookie.
async fn login_alice_with(gw: &Gateway, headers: &[(&str, &str)]) -> String {
    let mut req = client()
        .post(gw.url("/login"))
        .header("accept", "application/json")
        .json(&serde_json::json!({"username": "alice", "password": "alice-password"}));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("POST /login");
    session_cookie_or_panic(resp, gw, "alice").await
}

/// The `ip` of the current session as listed by `GET /_gateway/sessions` (JSON).
async fn current_session_ip(gw: &Gateway, cookie: &str) -> String {
    let resp = client()
        .get(gw.url("/_gateway/sessions"))
        .header("accept", "application/json")
        .header("cookie", session_cookie_header(cookie))
        .send()
        .await
        .expect("GET /_gateway/sessions");
    assert_eq!(resp.status(), 200, "GET /_gateway/sessions");
    let list: serde_json::Value = resp.json().await.expect("sessions JSON");
    let items = list.as_array().expect("sessions JSON is an array");
    let current: Vec<&serde_json::Value> = items
        .iter()
        .filter(|s| s["current"] == serde_json::Value::Bool(true))
        .collect();
    assert_eq!(current.len(), 1, "exactly one current session in {list}");
    current[0]["ip"]
        .as_str()
        .unwrap_or_else(|| panic!("session has no string ip: {list}"))
        .to_string()
}

/// The `ip` of the `login_success` audit line for alice (audit lines go to stdout).
async fn audit_login_ip(gw: &Gateway) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = gw.logs();
        for line in logs.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim()) else {
                continue;
            };
            if v["event"] == "login_success" && v["username"] == "alice" {
                return v["ip"].as_str().unwrap_or_default().to_string();
            }
        }
        if Instant::now() > deadline {
            panic!("no login_success audit line for alice; logs:\n{logs}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get_echo_with(gw: &Gateway, cookie: &str, headers: &[(&str, &str)]) -> Echo {
    let mut req = client()
        .get(gw.url("/whoami"))
        .header("cookie", session_cookie_header(cookie));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("GET /whoami");
    assert_eq!(resp.status(), 200);
    echo(resp).await
}

#[tokio::test(flavor = "multi_thread")]
async fn without_trusted_proxies_forwarded_for_from_the_client_is_ignored() {
    let s = Stack::start().await; // trusted_proxies = []
    let cookie = login_alice_with(&s.gw, &[("x-forwarded-for", "6.6.6.6")]).await;

    assert_eq!(current_session_ip(&s.gw, &cookie).await, "127.0.0.1");
    assert_eq!(audit_login_ip(&s.gw).await, "127.0.0.1");

    let e = get_echo_with(
        &s.gw,
        &cookie,
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ],
    )
    .await;
    assert_eq!(
        e.headers_named("x-forwarded-for"),
        vec!["127.0.0.1".to_string()],
        "client-sent X-Forwarded-For must be replaced by the peer address: {:?}",
        e.headers
    );
    assert_eq!(
        e.headers_named("x-forwarded-proto"),
        vec!["http".to_string()],
        "X-Forwarded-Proto from an untrusted peer must be replaced: {:?}",
        e.headers
    );
    assert_eq!(
        e.headers_named("x-forwarded-host"),
        vec![s.gw.host()],
        "X-Forwarded-Host from an untrusted peer must be the Host header: {:?}",
        e.headers
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn public_paths_get_the_same_forwarded_headers() {
    let s = Stack::start().await;
    let resp = client()
        .get(s.gw.url("/static/app.css"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let e = echo(resp).await;
    assert_eq!(
        e.headers_named("x-forwarded-for"),
        vec!["127.0.0.1".to_string()]
    );
    assert_eq!(
        e.headers_named("x-forwarded-proto"),
        vec!["http".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trusted_proxy_forwarded_for_is_believed() {
    let s = Stack::start_with(|c| c.trusted_proxies(&["127.0.0.1/32"])).await;
    let cookie = login_alice_with(&s.gw, &[("x-forwarded-for", "203.0.113.7")]).await;

    assert_eq!(current_session_ip(&s.gw, &cookie).await, "203.0.113.7");
    assert_eq!(audit_login_ip(&s.gw).await, "203.0.113.7");

    let e = get_echo_with(
        &s.gw,
        &cookie,
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example"),
        ],
    )
    .await;
    assert_eq!(
        e.headers_named("x-forwarded-for"),
        vec!["203.0.113.7, 127.0.0.1".to_string()],
        "{:?}",
        e.headers
    );
    assert_eq!(
        e.headers_named("x-forwarded-proto"),
        vec!["https".to_string()],
        "X-Forwarded-Proto from a trusted peer must be passed on: {:?}",
        e.headers
    );
    assert_eq!(
        e.headers_named("x-forwarded-host"),
        vec!["app.example".to_string()],
        "{:?}",
        e.headers
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trusted_proxy_chain_uses_the_rightmost_untrusted_address() {
    // The client claims to be 1.1.1.1; the (trusted) proxy appended the address it saw.
    let s = Stack::start_with(|c| c.trusted_proxies(&["127.0.0.1/32"])).await;
    let cookie = login_alice_with(&s.gw, &[("x-forwarded-for", "1.1.1.1, 198.51.100.9")]).await;
    assert_eq!(current_session_ip(&s.gw, &cookie).await, "198.51.100.9");
}

#[tokio::test(flavor = "multi_thread")]
async fn trusted_proxy_without_forwarded_headers_is_the_client() {
    let s = Stack::start_with(|c| c.trusted_proxies(&["127.0.0.1/32"])).await;
    let cookie = login_alice_with(&s.gw, &[]).await;
    assert_eq!(current_session_ip(&s.gw, &cookie).await, "127.0.0.1");
    let e = get_echo_with(&s.gw, &cookie, &[]).await;
    assert_eq!(
        e.headers_named("x-forwarded-for"),
        vec!["127.0.0.1".to_string()]
    );
    assert_eq!(
        e.headers_named("x-forwarded-proto"),
        vec!["http".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_network_that_does_not_contain_the_peer_changes_nothing() {
    let s = Stack::start_with(|c| c.trusted_proxies(&["10.0.0.0/8"])).await;
    let cookie = login_alice_with(&s.gw, &[("x-forwarded-for", "203.0.113.7")]).await;
    assert_eq!(current_session_ip(&s.gw, &cookie).await, "127.0.0.1");
    let e = get_echo_with(
        &s.gw,
        &cookie,
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(
        e.headers_named("x-forwarded-for"),
        vec!["127.0.0.1".to_string()]
    );
    assert_eq!(
        e.headers_named("x-forwarded-proto"),
        vec!["http".to_string()]
    );
}
