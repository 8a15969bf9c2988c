//! The admin listener (health, readiness, metrics) and process lifecycle.

use std::time::Duration;

use crate::support::*;

async fn metrics(gw: &Gateway) -> String {
    let resp = client().get(gw.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

/// Sum of all samples of a counter family (any labels).
fn counter_total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_answers_ok() {
    let s = Stack::start().await;
    let resp = client()
        .get(s.gw.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap().trim(), "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_is_ok_while_redis_answers() {
    let s = Stack::start().await;
    wait_for_status(&s.gw.admin_url("/readyz"), 200, READY_TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoints_are_not_on_the_public_listener() {
    let s = Stack::start().await;
    let resp = client().get(s.gw.url("/metrics")).send().await.unwrap();
    // Without a session this is just another protected path.
    assert_eq!(resp.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_by_outcome() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    for _ in 0..3 {
        assert_eq!(get_with_cookie(&s.gw, "/x", &cookie).await.status(), 200);
    }
    assert_eq!(
        client().get(s.gw.url("/y")).send().await.unwrap().status(),
        401
    );

    // A request is counted when pingora logs it, just after its answer went out.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut text = metrics(&s.gw).await;
    while counter_total(&text, "gateway_requests_total") < 4.0
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        text = metrics(&s.gw).await;
    }
    assert!(text.contains("gateway_requests_total{"), "{text}");
    assert!(text.contains("outcome=\""), "no outcome label:\n{text}");
    assert!(
        counter_total(&text, "gateway_requests_total") >= 4.0,
        "{text}"
    );
    assert!(text.contains("gateway_redis_duration_seconds"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_redis_errors_during_an_outage() {
    let mut s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    s.redis.stop();
    let resp = client_with_timeout(Duration::from_secs(10))
        .get(s.gw.url("/x"))
        .header("cookie", session_cookie_header(&cookie))
        .send()
        .await
        .expect("answered during outage");
    assert_eq!(resp.status(), 503);

    let text = metrics(&s.gw).await;
    assert!(
        counter_total(&text, "gateway_redis_errors_total") >= 1.0,
        "no redis error counted:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_gateway_cleanly() {
    let mut s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    assert_eq!(get_with_cookie(&s.gw, "/x", &cookie).await.status(), 200);

    s.gw.terminate();
    let status =
        s.gw.wait_exit(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("still running 30s after SIGTERM; logs:\n{}", s.gw.logs()));
    assert!(
        status.success(),
        "exit status {status}; logs:\n{}",
        s.gw.logs()
    );
    assert!(!s.gw.logs().contains("panicked"), "{}", s.gw.logs());

    // The listener is gone.
    assert!(client_with_timeout(Duration::from_secs(5))
        .get(s.gw.url("/x"))
        .send()
        .await
        .is_err());
}
