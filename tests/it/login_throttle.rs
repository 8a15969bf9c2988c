//! Failed-login throttling: too many failures for one username, or from one client IP, within
//! `[login] failure_window` are refused with 429 before any password is checked, on every
//! instance, until the window passes.

use std::time::Duration;

use crate::support::*;

fn limits(user: u32, ip: u32, window: &str) -> impl FnOnce(TestConfig) -> TestConfig {
    let window = window.to_string();
    move |c| {
        c.replace(
            "users_file = \"users.toml\"",
            &format!(
                "users_file = \"users.toml\"\nmax_failures_per_user = {user}\n\
                 max_failures_per_ip = {ip}\nfailure_window = \"{window}\""
            ),
        )
    }
}

async fn attempt(gw: &Gateway, user: &str, pass: &str) -> reqwest::Response {
    login_json_response(gw, user, pass, None).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guessed_username_is_locked_even_for_the_right_password() {
    let s = Stack::start_with(limits(3, 100, "15m")).await;
    for _ in 0..3 {
        assert_eq!(attempt(&s.gw, "alice", "wrong").await.status(), 401);
    }
    let refused = attempt(&s.gw, "alice", "alice-password").await;
    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(wait, 900);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "too_many_attempts");
    assert!(s.session_keys().is_empty(), "no session may be created");

    // Other users are not affected; the count ignores case and surrounding spaces.
    assert_eq!(attempt(&s.gw, "bob", "bob-password").await.status(), 200);
    let shouted = client()
        .post(s.gw.url("/login"))
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .body(r#"{"username":"ALICE ","password":"alice-password"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        shouted.status(),
        429,
        "the count ignores case and spaces in the name"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_successful_login_resets_the_username_count() {
    let s = Stack::start_with(limits(3, 100, "15m")).await;
    for _ in 0..2 {
        assert_eq!(attempt(&s.gw, "alice", "wrong").await.status(), 401);
    }
    assert_eq!(
        attempt(&s.gw, "alice", "alice-password").await.status(),
        200
    );
    for _ in 0..2 {
        assert_eq!(attempt(&s.gw, "alice", "wrong").await.status(), 401);
    }
    assert_eq!(
        attempt(&s.gw, "alice", "alice-password").await.status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_client_guessing_many_usernames_is_stopped() {
    let s = Stack::start_with(limits(100, 3, "15m")).await;
    for name in ["mallory1", "mallory2", "alice"] {
        assert_eq!(attempt(&s.gw, name, "wrong").await.status(), 401);
    }
    assert_eq!(attempt(&s.gw, "bob", "bob-password").await.status(), 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lock_lifts_after_the_window_and_applies_on_every_instance() {
    tolerate_clock_jumps(|| async {
        let s = Stack::start_with(limits(2, 100, "2s")).await;
        let mut second = s.gw.config.clone();
        second.reassign_ports();
        let other = Gateway::start(&second).await;
        for _ in 0..2 {
            assert_eq!(attempt(&s.gw, "alice", "wrong").await.status(), 401);
        }
        assert_eq!(
            attempt(&other, "alice", "alice-password").await.status(),
            429
        );
        tokio::time::sleep(Duration::from_millis(2600)).await;
        assert_eq!(
            attempt(&other, "alice", "alice-password").await.status(),
            200
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn throttled_attempts_are_audited_without_the_password() {
    let s = Stack::start_with(limits(1, 100, "15m")).await;
    assert_eq!(
        attempt(&s.gw, "alice", "first-guess-x1").await.status(),
        401
    );
    assert_eq!(
        attempt(&s.gw, "alice", "second-guess-y2").await.status(),
        429
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let logs = s.gw.logs();
        if logs.contains("\"too_many_failures\"") {
            assert!(
                !logs.contains("guess-"),
                "a password reached the audit trail"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no audit line: {logs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_switches_the_limits_off() {
    let s = Stack::start_with(limits(0, 0, "15m")).await;
    for _ in 0..12 {
        assert_eq!(attempt(&s.gw, "alice", "wrong").await.status(), 401);
    }
    assert_eq!(
        attempt(&s.gw, "alice", "alice-password").await.status(),
        200
    );
}

/// A Redis that refuses writes (here a replica of a primary that is not there: what a demoted
/// primary is during a failover) must not turn the login into a password oracle: attempts that
/// cannot be counted are refused before any password is checked, the same for right and wrong.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_redis_refuses_every_attempt_alike() {
    let s = Stack::start_with(limits(5, 100, "15m")).await;
    let session = login_alice(&s.gw).await;
    let mut conn = s.redis.connection();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(free_port())
        .query(&mut conn)
        .unwrap();
    let mut answers = Vec::new();
    for password in ["wrong"; 12].into_iter().chain(["alice-password"]) {
        let resp = attempt(&s.gw, "alice", password).await;
        answers.push(resp.status().as_u16());
    }
    assert!(answers.iter().all(|s| *s == 503), "{answers:?}");
    // Sessions already open keep working on the reads Redis still answers.
    assert_eq!(get_with_cookie(&s.gw, "/x", &session).await.status(), 200);

    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut conn)
        .unwrap();
    // None of the refused attempts were counted, so alice is not locked out.
    assert_eq!(
        attempt(&s.gw, "alice", "alice-password").await.status(),
        200
    );
}
