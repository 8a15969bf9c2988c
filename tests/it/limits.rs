//! Per-user session limits: `[session] max_per_user` with `on_limit =
//! "evict_oldest"` (the new login wins) or `"reject"` (the new login is refused).

use crate::session_helpers::*;
use crate::support::*;

fn limited(cfg: TestConfig, max: u32, policy: &str) -> TestConfig {
    session_settings(
        cfg,
        &format!("max_per_user = {max}\non_limit = {}", toml_str(policy)),
    )
}

fn user_keys(redis: &RedisServer, user_id: &str) -> Vec<String> {
    let handles: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("whalefall:user:{user_id}:sessions"))
        .arg(0)
        .arg(-1)
        .query(&mut redis.connection())
        .unwrap();
    handles
        .into_iter()
        .map(|h| session_key("whalefall:", &h))
        .filter(|k| key_exists(redis, k))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn evict_oldest_ends_the_first_session_when_the_second_starts() {
    let s = Stack::start_with(|c| limited(c, 1, "evict_oldest")).await;
    let first = alice(&s.gw).await;
    assert_live(
        &s.gw,
        &first,
        "alice",
        "first session before the second login",
    )
    .await;

    let second = login_as(&s.gw, "alice", "alice-password", "SecondDevice/1.0").await;
    assert_ne!(first, second);

    assert_refused(&s.gw, &first, "evicted first session").await;
    assert_live(&s.gw, &second, "alice", "second session").await;
    assert_eq!(
        s.session_keys().len(),
        1,
        "exactly one session of alice left: {:?}",
        s.session_keys()
    );
    // A browser holding the evicted cookie is sent to sign in again.
    let browser = browser_get_with_cookie(&s.gw, "/app/page", &first).await;
    assert_eq!(browser.status(), 302);
}

#[tokio::test(flavor = "multi_thread")]
async fn evict_oldest_counts_per_user() {
    let s = Stack::start_with(|c| limited(c, 1, "evict_oldest")).await;
    let bob1 = bob(&s.gw).await;
    let alice1 = alice(&s.gw).await;
    let alice2 = alice(&s.gw).await;
    assert_refused(&s.gw, &alice1, "alice's first session").await;
    assert_live(&s.gw, &alice2, "alice", "alice's second session").await;
    assert_live(&s.gw, &bob1, "bob", "bob is not affected by alice's limit").await;
    assert_eq!(s.session_keys().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn evict_oldest_with_a_limit_of_two_evicts_only_the_oldest() {
    let s = Stack::start_with(|c| limited(c, 2, "evict_oldest")).await;
    let one = alice(&s.gw).await;
    let two = alice(&s.gw).await;
    assert_live(&s.gw, &one, "alice", "1st of 2 allowed").await;
    let three = alice(&s.gw).await;
    assert_refused(&s.gw, &one, "oldest of three").await;
    assert_live(&s.gw, &two, "alice", "2nd").await;
    assert_live(&s.gw, &three, "alice", "3rd").await;
    assert_eq!(user_keys(&s.redis, "1").len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn ended_sessions_do_not_count_against_the_limit() {
    // A session that already ended does not count against the limit.
    let s = Stack::start_with(|c| limited(c, 1, "reject")).await;
    let first = alice(&s.gw).await;
    let resp = logout_json(&s.gw, "/logout", &first).await;
    assert_eq!(resp.status(), 200);
    let second = alice(&s.gw).await;
    assert_live(
        &s.gw,
        &second,
        "alice",
        "login after logout within the limit",
    )
    .await;

    // Same after the record vanished behind the index's back (e.g. TTL expiry).
    for key in s.session_keys() {
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query(&mut s.redis.connection())
            .unwrap();
    }
    let third = alice(&s.gw).await;
    assert_live(
        &s.gw,
        &third,
        "alice",
        "login after the old session expired",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_refuses_a_second_json_login_with_409_and_a_reason() {
    let s = Stack::start_with(|c| limited(c, 1, "reject")).await;
    let first = alice(&s.gw).await;

    let resp = login_as_response(&s.gw, "alice", "alice-password", "SecondDevice/1.0").await;
    assert_eq!(resp.status(), 409);
    assert!(
        cookie_from(&resp, COOKIE_NAME).is_none_or(|v| v.is_empty()),
        "a refused login must not set a session cookie: {:?}",
        set_cookies(&resp)
    );
    let body: serde_json::Value = resp.json().await.expect("409 body is JSON");
    assert_eq!(body["error"], "session_limit", "{body}");
    let message = body["message"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        message.contains("session") && (message.contains("1") || message.contains("one")),
        "message should say the session limit was reached: {body}"
    );

    assert_live(
        &s.gw,
        &first,
        "alice",
        "first session survives a rejected login",
    )
    .await;
    assert_eq!(s.session_keys().len(), 1, "{:?}", s.session_keys());
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_refuses_a_second_form_login_with_409_and_a_reason() {
    let s = Stack::start_with(|c| limited(c, 1, "reject")).await;
    let first = alice(&s.gw).await;

    let resp = login_form(&s.gw, "alice", "alice-password", "/dashboard").await;
    assert_eq!(resp.status(), 409);
    assert!(
        cookie_from(&resp, COOKIE_NAME).is_none_or(|v| v.is_empty()),
        "a refused login must not set a session cookie: {:?}",
        set_cookies(&resp)
    );
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("active session") && html.contains("Sign out on another device"),
        "page should explain the limit:\n{html}"
    );
    // The form is shown again, ready for another try.
    assert!(hidden_input_value(&html, "csrf_token").is_some(), "{html}");

    assert_live(
        &s.gw,
        &first,
        "alice",
        "first session survives a rejected login",
    )
    .await;
    assert_eq!(s.session_keys().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_is_per_user_and_wrong_passwords_are_still_401() {
    let s = Stack::start_with(|c| limited(c, 1, "reject")).await;
    let _first = alice(&s.gw).await;
    let bob1 = bob(&s.gw).await;
    assert_live(
        &s.gw,
        &bob1,
        "bob",
        "bob may sign in while alice is at her limit",
    )
    .await;
    // The limit is only checked after the password: no hint for a wrong password.
    let resp = login_as_response(&s.gw, "alice", "wrong-password", "X/1").await;
    assert_eq!(resp.status(), 401);
}

/// Logs alice in `n` times at once; returns the statuses.
async fn concurrent_logins(gw: &Gateway, n: usize) -> Vec<u16> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let url = gw.url("/login");
        set.spawn(async move {
            client()
                .post(url)
                .header("accept", "application/json")
                .header("user-agent", format!("Racer/{i}"))
                .json(&serde_json::json!({"username": "alice", "password": "alice-password"}))
                .send()
                .await
                .expect("POST /login")
                .status()
                .as_u16()
        });
    }
    let mut statuses = Vec::new();
    while let Some(r) = set.join_next().await {
        statuses.push(r.unwrap());
    }
    statuses.sort();
    statuses
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_logins_cannot_exceed_the_limit_with_reject() {
    let p = Pair::start(|c| limited(c, 1, "reject")).await;
    let mut statuses = concurrent_logins(&p.a, 4).await;
    statuses.extend(concurrent_logins(&p.b, 2).await);
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!((ok, refused), (1, 5), "statuses {statuses:?}");
    assert_eq!(user_keys(&p.redis, "1").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_logins_leave_at_most_the_limit_with_evict_oldest() {
    let p = Pair::start(|c| limited(c, 1, "evict_oldest")).await;
    let (a, b) = tokio::join!(concurrent_logins(&p.a, 4), concurrent_logins(&p.b, 4));
    assert!(a.iter().chain(&b).all(|s| *s == 200), "{a:?} {b:?}");
    assert_eq!(
        p.session_keys().len(),
        1,
        "one live session of alice: {:?}",
        p.session_keys()
    );
}
