//! Session expiry: the idle timeout slides with use, the absolute timeout does
//! not, and sliding costs at most one Redis write per touch interval.

use std::time::{Duration, Instant};

use crate::session_helpers::*;
use crate::support::*;

const PREFIX: &str = "whalefall:";
/// Wall clock (the gateway's) versus monotonic clock (ours): allow a little drift.
const CLOCK_SLACK: Duration = Duration::from_millis(100);

fn ticker(period: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// Waits until Redis's TTL alone has removed every session record.
async fn until_session_keys_expire(s: &Stack) {
    poll_until(
        "the idle session keys to expire in Redis",
        Duration::from_secs(10),
        || s.session_keys(),
        |keys| keys.is_empty(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_timeout_slides_while_used_and_ends_when_unused() {
    tolerate_clock_jumps(|| async {
        let s = Stack::start_with(|c| c.idle_timeout("2s").absolute_timeout("60s")).await;
        let cookie = alice(&s.gw).await;
        let handle = handle_of(&s.gw, &cookie).await;
        let key = session_key(PREFIX, &handle);
        assert!(key_exists(&s.redis, &key));

        // Used every 0.7s for well over twice the idle timeout: never expires.
        let started = Instant::now();
        let mut tick = ticker(Duration::from_millis(700));
        let mut uses = 0;
        while started.elapsed() < Duration::from_millis(5000) {
            tick.tick().await;
            let status = status_with(&s.gw, &cookie).await;
            uses += 1;
            assert_eq!(
                status,
                200,
                "use #{uses} after {:?} of activity was refused; logs:\n{}",
                started.elapsed(),
                s.gw.logs()
            );
        }
        assert!(uses >= 7, "only {uses} uses");
        assert!(
            key_exists(&s.redis, &key),
            "session key vanished while in use"
        );

        // Then left alone for longer than the idle timeout.
        tokio::time::sleep(Duration::from_millis(2600)).await;
        let api = get_with_cookie(&s.gw, "/app/after-idle", &cookie).await;
        assert_eq!(api.status(), 401, "idle session must be refused");
        let browser = browser_get_with_cookie(&s.gw, "/app/after-idle", &cookie).await;
        assert_eq!(browser.status(), 302);
        assert!(
            location(&browser)
                .unwrap_or_default()
                .starts_with("/login?next="),
            "{:?}",
            location(&browser)
        );
        assert!(
            !key_exists(&s.redis, &key),
            "expired session key still in Redis"
        );
        assert!(
            s.session_keys().is_empty(),
            "session keys left: {:?}",
            s.session_keys()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_session_key_disappears_from_redis_by_itself() {
    tolerate_clock_jumps(|| async {
        let s = Stack::start_with(|c| c.idle_timeout("2s").absolute_timeout("60s")).await;
        let cookie = alice(&s.gw).await;
        assert_eq!(status_with(&s.gw, &cookie).await, 200);
        assert_eq!(s.session_keys().len(), 1);
        // No request at all: Redis' TTL alone removes the record.
        until_session_keys_expire(&s).await;
        assert_eq!(status_with(&s.gw, &cookie).await, 401);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expiry_nobody_came_back_for_is_reported_by_the_next_listing_once() {
    let s =
        Stack::start_with(|c| with_admin_token(c.idle_timeout("2s").absolute_timeout("60s"))).await;
    let cookie = alice(&s.gw).await;
    let handle = handle_of(&s.gw, &cookie).await;
    until_session_keys_expire(&s).await;
    // An operator's listing is the first to notice: it reports the expiry.
    assert_eq!(
        admin_get_json(&s.gw, "/sessions").await,
        serde_json::json!([])
    );
    let expired = |events: &[serde_json::Value]| -> Vec<serde_json::Value> {
        events_named(events, "session_expired")
            .into_iter()
            .cloned()
            .collect()
    };
    let events = stream_events(&s.redis, PREFIX);
    let found = expired(&events);
    assert_eq!(found.len(), 1, "{events:?}");
    assert_eq!(found[0]["handle"], handle.as_str());
    assert_eq!(found[0]["reason"], "found_by_listing");
    assert_eq!(
        metric(&s.gw, "gateway_sessions_ended_total{reason=\"expired\"}").await,
        1.0
    );
    // The cookie coming back, or another listing, does not report it again.
    assert_eq!(status_with(&s.gw, &cookie).await, 401);
    assert_eq!(
        admin_get_json(&s.gw, "/sessions").await,
        serde_json::json!([])
    );
    assert_eq!(expired(&stream_events(&s.redis, PREFIX)).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn absolute_timeout_ends_a_session_however_active() {
    tolerate_clock_jumps(|| async {
        let s = Stack::start_with(|c| c.idle_timeout("2s").absolute_timeout("5s")).await;
        let before_login = Instant::now();
        let cookie = alice(&s.gw).await;
        let after_login = Instant::now();
        let handle = handle_of(&s.gw, &cookie).await;
        let key = session_key(PREFIX, &handle);

        let absolute = Duration::from_secs(5);
        let mut tick = ticker(Duration::from_millis(500));
        let mut accepted = 0;
        let mut refused_at = None;
        while before_login.elapsed() < absolute + Duration::from_millis(2500) {
            tick.tick().await;
            let sent = Instant::now();
            let status = status_with(&s.gw, &cookie).await;
            let answered = Instant::now();
            match status {
                200 => {
                    assert!(
                        refused_at.is_none(),
                        "accepted again after being refused at {refused_at:?}"
                    );
                    // Sent after the absolute deadline had certainly passed (the session was
                    // created before `after_login`): must be refused.
                    assert!(
                        sent < after_login + absolute + CLOCK_SLACK,
                        "request sent {:?} after login completed was still accepted",
                        sent - after_login
                    );
                    accepted += 1;
                }
                401 => {
                    // Answered before the deadline could have passed (the session was created
                    // after `before_login`): must have been accepted.
                    assert!(
                        answered + CLOCK_SLACK >= before_login + absolute,
                        "refused only {:?} after login started although in use; logs:\n{}",
                        answered - before_login,
                        s.gw.logs()
                    );
                    refused_at.get_or_insert(sent - before_login);
                }
                other => panic!("unexpected status {other}"),
            }
        }
        assert!(accepted >= 5, "only {accepted} accepted uses");
        assert!(refused_at.is_some(), "never refused");
        assert!(
            !key_exists(&s.redis, &key),
            "session key outlived the absolute timeout"
        );
        let browser = browser_get_with_cookie(&s.gw, "/app/x", &cookie).await;
        assert_eq!(browser.status(), 302);

        // The user can simply sign in again.
        let again = alice(&s.gw).await;
        assert_live(&s.gw, &again, "alice", "fresh login after absolute expiry").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ttl_is_capped_at_the_absolute_deadline_when_touched() {
    tolerate_clock_jumps(|| async {
        let s = Stack::start_with(|c| {
            session_settings(
                c.idle_timeout("4s").absolute_timeout("4s"),
                "touch_interval = \"1s\"",
            )
        })
        .await;
        let cookie = alice(&s.gw).await;
        let handle = handle_of(&s.gw, &cookie).await;
        let key = session_key(PREFIX, &handle);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(status_with(&s.gw, &cookie).await, 200);
        // The touch is written off the request path; wait for last_seen to move.
        let created = get_json(&s.redis, &key)["created_at_ms"].as_u64().unwrap();
        poll_until(
            "the touch to be written",
            Duration::from_secs(5),
            || get_json(&s.redis, &key)["last_seen_ms"].as_u64().unwrap(),
            |seen| *seen > created,
        )
        .await;
        let pttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query(&mut s.redis.connection())
            .unwrap();
        // Touched at least 1.5s after creation: an uncapped TTL would be the full 4s idle
        // timeout, the capped one is at most 4s - 1.5s.
        assert!(
            pttl > 0 && pttl <= 2600,
            "TTL after a touch must not reach past the absolute deadline: {pttl}ms"
        );
    })
    .await;
}

/// Write commands seen in `INFO commandstats` (everything but reads and our own probes).
fn writes(calls: &std::collections::BTreeMap<String, u64>) -> u64 {
    const NOT_WRITES: &[&str] = &[
        "get",
        "mget",
        "exists",
        "ttl",
        "pttl",
        "type",
        "keys",
        "zrange",
        "info",
        "config",
        "ping",
        "hello",
        "client",
        "client|setinfo",
        "client|setname",
        "config|resetstat",
        "select",
        "command",
        "command|docs",
        "xrange",
    ];
    calls
        .iter()
        .filter(|(name, _)| !NOT_WRITES.contains(&name.as_str()))
        .map(|(_, n)| *n)
        .sum()
}

/// A logged-in session whose login writes (and audit XADD) have landed, with Redis's command
/// statistics reset, so what follows counts only the requests a test makes. The validation
/// cache is off: these tests count what each request costs Redis without it.
async fn session_with_quiet_stats(idle: &str, touch_interval: &str) -> (Stack, String) {
    let touch = format!("touch_interval = \"{touch_interval}\"\ncache = false");
    let idle = idle.to_string();
    let s = Stack::start_with(move |c| {
        session_settings(c.idle_timeout(&idle).absolute_timeout("1h"), &touch)
    })
    .await;
    let cookie = alice(&s.gw).await;
    assert_eq!(status_with(&s.gw, &cookie).await, 200);
    poll_until(
        "the login audit event",
        Duration::from_secs(5),
        || stream_events(&s.redis, PREFIX).len(),
        |n| *n >= 1,
    )
    .await;
    reset_stats(&s.redis);
    (s, cookie)
}

#[tokio::test(flavor = "multi_thread")]
async fn sliding_costs_at_most_one_write_per_touch_interval() {
    tolerate_clock_jumps(|| async {
        let (s, cookie) = session_with_quiet_stats("30s", "1s").await;

        let started = Instant::now();
        for i in 0..50 {
            let status = status_with(&s.gw, &cookie).await;
            assert_eq!(status, 200, "request #{i}");
        }
        let elapsed = started.elapsed();
        // Let touches that were spawned off the request path land.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let calls = command_calls(&s.redis);
        let gets = calls.get("get").copied().unwrap_or(0);
        let sets = calls.get("set").copied().unwrap_or(0);
        assert_eq!(gets, 50, "one GET per request; commandstats: {calls:?}");
        // At most one touch per started touch interval (plus one in flight while the
        // next request already read the old record).
        let intervals = elapsed.as_secs() + 1;
        assert!(
            sets <= 2 * intervals,
            "{sets} SETs for 50 requests in {elapsed:?} (touch interval 1s); commandstats: {calls:?}"
        );
        assert!(sets <= 10, "{sets} SETs for 50 requests: {calls:?}");
        assert_eq!(
            writes(&calls),
            sets,
            "the only writes should be the touches' SETs: {calls:?}"
        );

        // After a quiet spell longer than the touch interval, one request = one write.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        reset_stats(&s.redis);
        assert_eq!(status_with(&s.gw, &cookie).await, 200);
        let calls = poll_until(
            "the touch SET",
            Duration::from_secs(5),
            || command_calls(&s.redis),
            |c| c.get("set").copied().unwrap_or(0) >= 1,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let calls_after = command_calls(&s.redis);
        assert_eq!(
            calls_after.get("set").copied().unwrap_or(0),
            1,
            "exactly one SET for one request after the touch interval; before settle {calls:?}, after {calls_after:?}"
        );
        assert_eq!(calls_after.get("get").copied().unwrap_or(0), 1);
        assert_eq!(writes(&calls_after), 1, "{calls_after:?}");

        // And that write did slide the session: TTL back near the full idle timeout.
        let handle = handle_of(&s.gw, &cookie).await;
        let pttl: i64 = redis::cmd("PTTL")
            .arg(session_key(PREFIX, &handle))
            .query(&mut s.redis.connection())
            .unwrap();
        assert!(pttl > 25_000, "TTL after touch: {pttl}ms");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_within_the_touch_interval_do_not_write() {
    tolerate_clock_jumps(|| async {
        let (s, cookie) = session_with_quiet_stats("10m", "5m").await;
        for _ in 0..20 {
            assert_eq!(status_with(&s.gw, &cookie).await, 200);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let calls = command_calls(&s.redis);
        assert_eq!(calls.get("get").copied().unwrap_or(0), 20, "{calls:?}");
        assert_eq!(
            writes(&calls),
            0,
            "no writes inside the touch interval: {calls:?}"
        );
    })
    .await;
}
