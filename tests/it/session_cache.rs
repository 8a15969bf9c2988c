//! The validation cache, with two instances sharing Redis: sessions are answered without a
//! Redis round trip, and a session ended anywhere (logout, sign out everywhere, admin revoke,
//! eviction, expiry) is refused by the other instance as soon as Redis's invalidation reaches
//! it; a lost tracking connection or a Redis restart empties the cache.

use std::time::{Duration, Instant};

use crate::session_helpers::*;
use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn cached_sessions_cost_redis_nothing() {
    let s = Stack::start().await;
    let cookie = alice(&s.gw).await;
    until_cached(&s.gw, &cookie).await;
    reset_stats(&s.redis);
    let (hits, misses) = (
        metric(&s.gw, CACHE_HITS).await,
        metric(&s.gw, CACHE_MISSES).await,
    );
    for _ in 0..30 {
        assert_eq!(status_with(&s.gw, &cookie).await, 200);
    }
    let calls = command_calls(&s.redis);
    let (hits, misses) = (
        metric(&s.gw, CACHE_HITS).await - hits,
        metric(&s.gw, CACHE_MISSES).await - misses,
    );
    // Every check was answered, from the cache or by one GET. A miss happens only if the
    // tracking proof lapsed (a ping slower than 100 ms on a loaded machine): then the cache
    // steps aside, as it must.
    assert_eq!(hits + misses, 30.0, "{calls:?}");
    assert_eq!(
        calls.get("get").copied().unwrap_or(0) as f64,
        misses,
        "{calls:?}"
    );
    assert!(
        hits >= 20.0,
        "only {hits} of 30 checks from the cache: {calls:?}"
    );
    // The identity still comes from the session.
    assert_live(&s.gw, &cookie, "alice", "from the cache").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_way_of_ending_a_session_reaches_the_other_instance() {
    let p = Pair::start(|c| with_admin_token(session_settings(c, "max_per_user = 2"))).await;

    // Logout on A.
    let cookie = alice(&p.a).await;
    until_cached(&p.b, &cookie).await;
    let token = {
        let page = browser_get_with_cookie(&p.a, "/logout", &cookie).await;
        hidden_input_value(&page.text().await.unwrap(), "csrf_token").expect("token")
    };
    let resp = client()
        .post(p.a.url("/logout"))
        .header("cookie", session_cookie_header(&cookie))
        .form(&[("csrf_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_refused(&p.b, &cookie, "logout on A, cached on B").await;

    // Sign out everywhere on A ends a session cached on B.
    let on_a = alice(&p.a).await;
    let on_b = alice(&p.b).await;
    until_cached(&p.b, &on_b).await;
    let resp = client()
        .post(p.a.url("/logout?scope=all"))
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .header("cookie", session_cookie_header(&on_a))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_refused(&p.b, &on_b, "sign out everywhere on A").await;

    // Admin revoke of one session, and of a user's sessions, on A's admin API.
    let cookie = bob(&p.a).await;
    until_cached(&p.b, &cookie).await;
    let handle = handle_of(&p.b, &cookie).await;
    let (status, _) = admin_delete(&p.a, &format!("/sessions/{handle}")).await;
    assert_eq!(status, 200);
    assert_refused(&p.b, &cookie, "admin revoke on A").await;
    let cookie = bob(&p.a).await;
    until_cached(&p.b, &cookie).await;
    let (status, _) = admin_delete(&p.a, "/users/2/sessions").await;
    assert_eq!(status, 200);
    assert_refused(&p.b, &cookie, "admin revoke of the user on A").await;

    // Eviction by the per-user limit when the user logs in again on A.
    let oldest = bob(&p.a).await;
    until_cached(&p.b, &oldest).await;
    bob(&p.a).await;
    bob(&p.a).await;
    assert_refused(&p.b, &oldest, "evicted by a login on A").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_tracking_connection_empties_the_cache_and_it_comes_back() {
    let s = Stack::start().await;
    let cookie = alice(&s.gw).await;
    until_cached(&s.gw, &cookie).await;
    let flushes = metric(&s.gw, CACHE_FLUSHES).await;

    kill_tracking_connection(&s.redis);
    until_metric_above(&s.gw, CACHE_FLUSHES, flushes, "the cache was not flushed").await;
    assert_eq!(metric(&s.gw, CACHE_ENTRIES).await, 0.0);
    // Tracking is re-established by itself, and the cache is used again.
    until_cached(&s.gw, &cookie).await;
}

/// Kills the gateway's tracking connection, found by its client name.
fn kill_tracking_connection(redis: &RedisServer) {
    let mut conn = redis.connection();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut conn).unwrap();
    let ids: Vec<&str> = list
        .lines()
        .filter(|l| l.contains("name=gateway-cache-tracking"))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .collect();
    assert!(!ids.is_empty(), "no tracking connection in:\n{list}");
    for id in ids {
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query(&mut conn)
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_restart_empties_the_cache() {
    let mut s = Stack::start().await;
    let cookie = alice(&s.gw).await;
    until_cached(&s.gw, &cookie).await;
    let flushes = metric(&s.gw, CACHE_FLUSHES).await;
    // The test Redis keeps nothing on disk: after a restart the session is gone, and a cache
    // that kept it would let it in.
    s.redis.restart();
    until_metric_above(&s.gw, CACHE_FLUSHES, flushes, "no flush after the restart").await;
    // Never let in again: 503 while the gateway reconnects, then 401.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match status_with(&s.gw, &cookie).await {
            401 => break,
            503 if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("a session lost with Redis answered {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn expiry_is_honoured_from_the_cache() {
    tolerate_clock_jumps(|| async {
        let s = Stack::start_with(|c| {
            session_settings(
                c.idle_timeout("2s").absolute_timeout("1h"),
                "touch_interval = \"2s\"",
            )
        })
        .await;
        let cookie = alice(&s.gw).await;
        until_cached(&s.gw, &cookie).await;
        tokio::time::sleep(Duration::from_millis(2300)).await;
        assert_refused(&s.gw, &cookie, "idle past the timeout").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_entry_bound_holds() {
    let s = Stack::start_with(|c| session_settings(c, "cache_entries = 2")).await;
    let mut cookies = Vec::new();
    for _ in 0..3 {
        cookies.push(alice(&s.gw).await);
        cookies.push(bob(&s.gw).await);
    }
    for cookie in &cookies {
        until_cached(&s.gw, cookie).await;
        assert!(metric(&s.gw, CACHE_ENTRIES).await <= 2.0);
    }
    assert_eq!(metric(&s.gw, CACHE_ENTRIES).await, 2.0);
}
