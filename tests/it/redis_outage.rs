//! Redis going away (killed) or hanging (SIGSTOP): protected paths fail closed
//! with 503 quickly, public paths keep working, and the gateway recovers by
//! itself once Redis is back.

use std::time::Duration;

use crate::support::*;

/// Hang guard for requests made while Redis is unavailable; the contract says
/// the gateway answers "within ~timeout" (1 s in the test config).
const HANG_GUARD: Duration = Duration::from_secs(10);

async fn guarded_get(
    gw: &Gateway,
    path: &str,
    cookie: Option<&str>,
    accept: &str,
) -> reqwest::Response {
    let mut req = client_with_timeout(HANG_GUARD)
        .get(gw.url(path))
        .header("accept", accept);
    if let Some(c) = cookie {
        req = req.header("cookie", session_cookie_header(c));
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("GET {path} while Redis is unavailable did not answer: {e}"))
}

fn assert_session_store_unavailable(resp: &reqwest::Response) {
    assert_eq!(
        resp.status(),
        503,
        "expected 503, not a login redirect or 500"
    );
    assert!(
        resp.headers().get("retry-after").is_some(),
        "503 without Retry-After"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn protected_api_request_gets_503_with_retry_after_when_redis_is_down() {
    let mut s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    s.redis.stop();

    let resp = guarded_get(&s.gw, "/api/items", Some(&cookie), "application/json").await;
    assert_session_store_unavailable(&resp);
    let body: serde_json::Value = resp.json().await.expect("JSON body");
    assert_eq!(body["error"], "session_store_unavailable", "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_gets_an_html_503_not_a_login_redirect_when_redis_is_down() {
    let mut s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    s.redis.stop();

    let resp = guarded_get(&s.gw, "/reports", Some(&cookie), BROWSER_ACCEPT).await;
    assert_session_store_unavailable(&resp);
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(ct.starts_with("text/html"), "content-type {ct}");
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_a_cookie_are_still_told_to_log_in_when_redis_is_down() {
    // No cookie means no Redis lookup is needed: the answer is the usual one.
    let mut s = Stack::start().await;
    s.redis.stop();
    let resp = guarded_get(&s.gw, "/api/items", None, "application/json").await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn public_paths_are_still_served_when_redis_is_down() {
    let mut s = Stack::start().await;
    s.redis.stop();
    let resp = guarded_get(&s.gw, "/static/app.js", None, BROWSER_ACCEPT).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(echo(resp).await.uri, "/static/app.js");
}

#[tokio::test(flavor = "multi_thread")]
async fn login_fails_with_503_when_redis_is_down() {
    let mut s = Stack::start().await;
    s.redis.stop();
    let resp = client_with_timeout(Duration::from_secs(30))
        .post(s.gw.url("/login"))
        .json(&serde_json::json!({"username": "alice", "password": "alice-password"}))
        .send()
        .await
        .expect("login answered");
    assert_eq!(resp.status(), 503);
    assert!(cookie_from(&resp, COOKIE_NAME).is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn health_endpoint_reports_redis_outage() {
    let mut s = Stack::start().await;
    wait_for_status(&s.gw.url("/_gateway/health"), 200, READY_TIMEOUT).await;
    s.redis.stop();

    let resp = guarded_get(&s.gw, "/_gateway/health", None, "application/json").await;
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_follows_redis_availability() {
    let mut s = Stack::start().await;
    wait_for_status(&s.gw.admin_url("/readyz"), 200, READY_TIMEOUT).await;

    s.redis.stop();
    let resp = client_with_timeout(HANG_GUARD)
        .get(s.gw.admin_url("/readyz"))
        .send()
        .await
        .expect("readyz answered");
    assert_eq!(resp.status(), 503);
    // Liveness is unaffected.
    wait_for_status(&s.gw.admin_url("/healthz"), 200, READY_TIMEOUT).await;

    s.redis.restart();
    wait_for_status(&s.gw.admin_url("/readyz"), 200, READY_TIMEOUT).await;
}

/// Logs in, retrying while the gateway reconnects to a restarted Redis.
async fn login_when_recovered(gw: &Gateway) -> String {
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    loop {
        let resp = client_with_timeout(Duration::from_secs(30))
            .post(gw.url("/login"))
            .json(&serde_json::json!({"username": "alice", "password": "alice-password"}))
            .send()
            .await;
        let status = resp.as_ref().map(|r| r.status().as_u16()).ok();
        if let Ok(r) = resp {
            if r.status() == 200 {
                return cookie_from(&r, COOKIE_NAME).expect("session cookie");
            }
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "no successful login after Redis restart (last status {status:?}); logs:\n{}",
                gw.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_recovers_after_redis_restarts_without_being_restarted() {
    let mut s = Stack::start().await;
    let old_cookie = login_alice(&s.gw).await;
    s.redis.stop();
    let down = guarded_get(&s.gw, "/x", Some(&old_cookie), "application/json").await;
    assert_eq!(down.status(), 503);

    s.redis.restart();
    wait_for_status(&s.gw.url("/_gateway/health"), 200, READY_TIMEOUT).await;

    let cookie = login_when_recovered(&s.gw).await;
    let resp = get_with_cookie(&s.gw, "/after-restart", &cookie).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        echo(resp).await.header("x-auth-user").as_deref(),
        Some("alice")
    );

    // Redis ran without persistence, so the old session is gone.
    assert_eq!(
        get_with_cookie(&s.gw, "/x", &old_cookie).await.status(),
        401
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hung_redis_gives_a_prompt_503_and_sessions_work_again_after_it_resumes() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    s.redis.pause();

    let resp = guarded_get(&s.gw, "/api/items", Some(&cookie), "application/json").await;
    let status = resp.status();
    let has_retry_after = resp.headers().get("retry-after").is_some();
    let public = guarded_get(&s.gw, "/static/x.css", None, BROWSER_ACCEPT)
        .await
        .status();
    s.redis.resume();

    assert_eq!(status, 503, "protected request while Redis hangs");
    assert!(has_retry_after, "503 without Retry-After");
    assert_eq!(public, 200, "public path while Redis hangs");

    // Same data, same session: once Redis answers again the cookie works.
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    loop {
        let resp = get_with_cookie(&s.gw, "/api/items", &cookie).await;
        if resp.status() == 200 {
            assert_eq!(
                echo(resp).await.header("x-auth-user").as_deref(),
                Some("alice")
            );
            break;
        }
        assert_eq!(resp.status(), 503, "unexpected status while recovering");
        assert!(
            std::time::Instant::now() < deadline,
            "session not usable again after Redis resumed; logs:\n{}",
            s.gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
