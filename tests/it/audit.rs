//! The audit trail: every session event is one JSON line on the gateway's
//! stdout and one entry in the Redis stream `{prefix}audit`, with when, who,
//! which session, from where, and never a cookie, password or secret.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use crate::session_helpers::*;
use crate::support::*;
use reqwest::Method;
use serde_json::Value;

const PREFIX: &str = "whalefall:";
const UA: &str = "AuditAgent/1.0 (tests)";
const ADMIN_UA: &str = "AdminConsole/3.1";
const WRONG_PASSWORD: &str = "wrong-password-Zq81x";

async fn login(gw: &Gateway, user: &str) -> String {
    login_as(gw, user, &format!("{user}-password"), UA).await
}

async fn get_as_agent(gw: &Gateway, cookie: &str) -> u16 {
    client()
        .get(gw.url("/app/page"))
        .header("user-agent", UA)
        .header("cookie", session_cookie_header(cookie))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn logout(gw: &Gateway, path: &str, cookie: &str) {
    let resp = client()
        .post(gw.url(path))
        .header("accept", "application/json")
        .header("user-agent", UA)
        .header("cookie", session_cookie_header(cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "POST {path}");
}

fn count_by_type(events: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(e["event"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    m
}

fn has_at_least(events: &[Value], want: &BTreeMap<&str, usize>) -> bool {
    let have = count_by_type(events);
    want.iter()
        .all(|(k, n)| have.get(*k).copied().unwrap_or(0) >= *n)
}

/// `entries-added` of `XINFO STREAM`: every entry ever added to the audit stream, trimmed or
/// not (Redis 7+).
fn stream_entries_added(redis: &RedisServer, key: &str) -> u64 {
    let info: Result<std::collections::HashMap<String, redis::Value>, _> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(key)
        .query(&mut redis.connection());
    match info.ok().as_ref().and_then(|i| i.get("entries-added")) {
        Some(redis::Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

fn parse_ts(ts: &str) -> SystemTime {
    humantime::parse_rfc3339(ts).unwrap_or_else(|e| panic!("ts {ts:?} is not RFC 3339: {e}"))
}

/// The common fields every event carries.
fn assert_common(e: &Value, started: SystemTime, source: &str) {
    let ts = e["ts"]
        .as_str()
        .unwrap_or_else(|| panic!("{source}: no ts in {e}"));
    let t = parse_ts(ts);
    assert!(
        t + Duration::from_secs(5) >= started && t <= SystemTime::now() + Duration::from_secs(5),
        "{source}: ts {ts} outside the test run: {e}"
    );
    let id = e["event_id"].as_str().unwrap_or_default();
    assert!(!id.is_empty(), "{source}: no event_id in {e}");
    assert_eq!(e["ip"], "127.0.0.1", "{source}: ip in {e}");
    assert!(e["user_agent"].is_string(), "{source}: user_agent in {e}");
    assert!(e["actor"].is_string(), "{source}: actor in {e}");
}

fn one<'a>(events: &'a [Value], name: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    let found: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == name && pred(e))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one matching {name} event; all events:\n{events:#?}"
    );
    found[0]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_session_event_is_recorded_on_stdout_and_in_redis() {
    let started = SystemTime::now();
    let s = Stack::start_with(|c| {
        session_settings(
            with_admin_token(c),
            "max_per_user = 2\non_limit = \"evict_oldest\"",
        )
    })
    .await;
    let mut cookies: Vec<String> = Vec::new();

    // login_success
    let c1 = login(&s.gw, "alice").await;
    let h1 = handle_of(&s.gw, &c1).await;
    cookies.push(c1.clone());
    // login_failure
    let resp = login_as_response(&s.gw, "alice", WRONG_PASSWORD, UA).await;
    assert_eq!(resp.status(), 401);
    // session_evicted: third session of alice with max_per_user = 2
    let c2 = login(&s.gw, "alice").await;
    let h2 = handle_of(&s.gw, &c2).await;
    let c3 = login(&s.gw, "alice").await;
    let h3 = handle_of(&s.gw, &c3).await;
    cookies.extend([c2.clone(), c3.clone()]);
    assert_eq!(get_as_agent(&s.gw, &c1).await, 401, "c1 evicted");
    // logout
    logout(&s.gw, "/logout", &c3).await;
    // logout_everywhere
    let b1 = login(&s.gw, "bob").await;
    let hb1 = handle_of(&s.gw, &b1).await;
    let b2 = login(&s.gw, "bob").await;
    cookies.extend([b1.clone(), b2.clone()]);
    logout(&s.gw, "/logout?scope=all", &b1).await;
    // admin_revoke
    let c4 = login(&s.gw, "alice").await;
    let h4 = handle_of(&s.gw, &c4).await;
    cookies.push(c4.clone());
    let (status, body) = admin_request(
        &s.gw,
        Method::DELETE,
        &format!("/sessions/{h4}"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // session_ended: alice ends another of her sessions on the sessions page
    let c5 = login(&s.gw, "alice").await;
    let h5 = handle_of(&s.gw, &c5).await;
    cookies.push(c5.clone());
    let page = browser_get_with_cookie(&s.gw, "/_gateway/sessions", &c2).await;
    let html = page.text().await.unwrap();
    let token = hidden_input_value(&html, "csrf_token").expect("csrf token");
    let resp = client()
        .post(s.gw.url("/_gateway/sessions"))
        .header("user-agent", UA)
        .header("origin", s.gw.origin())
        .header("cookie", session_cookie_header(&c2))
        .form(&[("csrf_token", token.as_str()), ("handle", h5.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    // session_expired: the record is still there but past its idle deadline (as when
    // another instance's clock is behind); the gateway notices and ends it.
    let c6 = login(&s.gw, "alice").await;
    let h6 = handle_of(&s.gw, &c6).await;
    cookies.push(c6.clone());
    let key6 = session_key(PREFIX, &h6);
    let mut record = get_json(&s.redis, &key6);
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    record["last_seen_ms"] = serde_json::json!(now_ms - 31 * 60 * 1000);
    let _: () = redis::cmd("SET")
        .arg(&key6)
        .arg(record.to_string())
        .arg("KEEPTTL")
        .query(&mut s.redis.connection())
        .unwrap();
    assert_eq!(
        get_as_agent(&s.gw, &c6).await,
        401,
        "idle-expired record refused"
    );
    assert!(
        !key_exists(&s.redis, &key6),
        "expired record deleted when noticed"
    );
    // cookie_rejected
    let forged = tamper(&c2);
    assert_eq!(get_as_agent(&s.gw, &forged).await, 401);

    let want: BTreeMap<&str, usize> = [
        ("login_success", 8),
        ("login_failure", 1),
        ("session_evicted", 1),
        ("logout", 1),
        ("logout_everywhere", 1),
        ("admin_revoke", 1),
        ("session_ended", 1),
        ("session_expired", 1),
        ("cookie_rejected", 1),
    ]
    .into_iter()
    .collect();
    let from_redis = poll_until(
        "all events in the Redis stream",
        Duration::from_secs(10),
        || stream_events(&s.redis, PREFIX),
        |ev| has_at_least(ev, &want),
    )
    .await;
    let from_stdout = poll_until(
        "all events on stdout",
        Duration::from_secs(10),
        || stdout_events(&s.gw),
        |ev| has_at_least(ev, &want),
    )
    .await;

    for (source, events) in [("redis", &from_redis), ("stdout", &from_stdout)] {
        let counts = count_by_type(events);
        for (name, n) in &want {
            assert_eq!(
                counts.get(*name),
                Some(n),
                "{source}: count of {name}: {counts:?}"
            );
        }
        let ids: BTreeSet<&str> = events
            .iter()
            .map(|e| e["event_id"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(ids.len(), events.len(), "{source}: event ids are unique");
        for e in events.iter() {
            assert_common(e, started, source);
        }

        let user_ev = |e: &Value| e["user_agent"] == UA;
        for (h, who) in [(&h1, "1"), (&h2, "1"), (&h3, "1"), (&hb1, "2"), (&h4, "1")] {
            let e = one(events, "login_success", |e| e["handle"] == h.as_str());
            assert_eq!(e["user_id"], who, "{e}");
            assert!(user_ev(e), "{e}");
        }
        let e = one(events, "login_success", |e| e["handle"] == h1.as_str());
        assert_eq!(e["username"], "alice");

        let e = one(events, "login_failure", |_| true);
        assert_eq!(e["username"], "alice", "{e}");
        assert_eq!(e["reason"], "wrong_password", "{e}");
        assert!(e.get("handle").is_none_or(Value::is_null), "{e}");
        assert!(user_ev(e), "{e}");

        let e = one(events, "session_evicted", |_| true);
        assert_eq!(
            e["handle"],
            h1.as_str(),
            "the oldest session was evicted: {e}"
        );
        assert_eq!(e["user_id"], "1", "{e}");

        let e = one(events, "logout", |_| true);
        assert_eq!(e["handle"], h3.as_str(), "{e}");
        assert_eq!(e["user_id"], "1", "{e}");
        assert_eq!(e["username"], "alice", "{e}");
        assert!(user_ev(e), "{e}");

        let e = one(events, "logout_everywhere", |_| true);
        assert_eq!(e["user_id"], "2", "{e}");
        assert_eq!(e["handle"], hb1.as_str(), "{e}");
        assert!(user_ev(e), "{e}");

        let e = one(events, "admin_revoke", |_| true);
        assert_eq!(e["handle"], h4.as_str(), "{e}");
        assert_eq!(e["user_id"], "1", "{e}");
        assert_eq!(e["actor"], "admin", "{e}");
        assert_eq!(e["user_agent"], ADMIN_UA, "{e}");

        let e = one(events, "session_ended", |_| true);
        assert_eq!(e["handle"], h5.as_str(), "{e}");
        assert_eq!(e["user_id"], "1", "{e}");
        assert!(user_ev(e), "{e}");

        let e = one(events, "session_expired", |_| true);
        assert_eq!(e["handle"], h6.as_str(), "{e}");
        assert_eq!(e["user_id"], "1", "{e}");
        assert!(user_ev(e), "{e}");

        let e = one(events, "cookie_rejected", |_| true);
        assert!(e.get("handle").is_none_or(Value::is_null), "{e}");
        assert!(e["reason"].is_string(), "{e}");
        assert!(user_ev(e), "{e}");
    }

    // The same events in both places.
    let ids = |ev: &[Value]| -> BTreeSet<String> {
        ev.iter()
            .map(|e| e["event_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&from_redis), ids(&from_stdout));

    // Nothing secret in any line.
    let mut forbidden: Vec<String> = vec![
        "alice-password".into(),
        "bob-password".into(),
        WRONG_PASSWORD.into(),
        TEST_SECRET.into(),
        ADMIN_TOKEN.into(),
        forged.clone(),
    ];
    for c in &cookies {
        forbidden.extend(cookie_derivatives(c));
    }
    let mut lines = stream_lines(&s.redis, PREFIX);
    lines.extend(stdout_text(&s.gw).lines().map(str::to_string));
    for line in &lines {
        for f in &forbidden {
            assert!(
                !line.contains(f.as_str()),
                "audit line contains {f:?}: {line}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn login_failures_say_why_without_the_password() {
    let s =
        Stack::start_with(|c| session_settings(c, "max_per_user = 1\non_limit = \"reject\"")).await;
    let _ = login_as_response(&s.gw, "nobody-here", "whatever-pw-1", UA).await;
    let _ = login_as_response(&s.gw, "alice", "whatever-pw-2", UA).await;
    let _ = login_as_response(&s.gw, "carol", "carol-password", UA).await;
    let _ = login(&s.gw, "alice").await;
    let resp = login_as_response(&s.gw, "alice", "alice-password", UA).await;
    assert_eq!(resp.status(), 409);

    let events = poll_until(
        "five audit events",
        Duration::from_secs(10),
        || stream_events(&s.redis, PREFIX),
        |ev| ev.len() >= 5,
    )
    .await;
    let reasons: Vec<(String, String)> = events_named(&events, "login_failure")
        .iter()
        .map(|e| {
            (
                e["username"].as_str().unwrap_or("").to_string(),
                e["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expect = |u: &str, r: &str| (u.to_string(), r.to_string());
    assert_eq!(
        reasons,
        vec![
            expect("nobody-here", "unknown_user"),
            expect("alice", "wrong_password"),
            expect("carol", "disabled"),
            expect("alice", "session_limit"),
        ],
        "{events:#?}"
    );
    let text = stream_lines(&s.redis, PREFIX).join("\n") + &stdout_text(&s.gw);
    for pw in [
        "whatever-pw-1",
        "whatever-pw-2",
        "carol-password",
        "alice-password",
    ] {
        assert!(!text.contains(pw), "password {pw} in the audit trail");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn natural_idle_expiry_is_audited_when_the_cookie_comes_back() {
    tolerate_clock_jumps(|| async {
        // The session simply times out (nobody edits Redis): when its cookie is presented
        // again the gateway should record that the session expired.
        let s = Stack::start_with(|c| c.idle_timeout("2s").absolute_timeout("60s")).await;
        let cookie = login(&s.gw, "alice").await;
        let handle = handle_of(&s.gw, &cookie).await;
        // Waiting out the 2s idle timeout is the point of the test (polling with the cookie
        // would keep the session alive), so this sleep stays.
        tokio::time::sleep(Duration::from_millis(2600)).await;
        assert_eq!(get_as_agent(&s.gw, &cookie).await, 401);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let events = stream_events(&s.redis, PREFIX);
            if events_named(&events, "session_expired")
                .iter()
                .any(|e| e["handle"] == handle.as_str())
            {
                break;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "no session_expired event for a session that idled out; events:\n{events:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn file_sink_receives_the_lines_instead_of_stdout() {
    let logs = tempfile::tempdir().unwrap();
    let file = logs.path().join("audit.jsonl");
    let file_text = file.display().to_string();
    let s = Stack::start_with(|c| {
        c.extra(&format!(
            "[audit]\nsink = \"file\"\nfile = {}",
            toml_str(&file_text)
        ))
    })
    .await;
    let cookie = login(&s.gw, "alice").await;
    logout(&s.gw, "/logout", &cookie).await;
    let lines = poll_until(
        "two lines in the audit file",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&file)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        },
        |l| l.len() >= 2,
    )
    .await;
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(events[0]["event"], "login_success");
    assert_eq!(events[1]["event"], "logout");
    assert!(
        stdout_text(&s.gw).trim().is_empty(),
        "stdout: {}",
        stdout_text(&s.gw)
    );
    // The Redis copy is kept regardless of the sink.
    poll_until(
        "the Redis copy",
        Duration::from_secs(10),
        || stream_events(&s.redis, PREFIX).len(),
        |n| *n >= 2,
    )
    .await;
    for line in &lines {
        assert!(!line.contains(&cookie));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_off_prints_nothing() {
    let s = Stack::start_with(|c| c.extra("[audit]\nsink = \"off\"")).await;
    let cookie = login(&s.gw, "alice").await;
    logout(&s.gw, "/logout", &cookie).await;
    assert_eq!(get_as_agent(&s.gw, &cookie).await, 401);
    // The events are still recorded centrally (what `gateway audit tail` reads)...
    poll_until(
        "events in the Redis stream",
        Duration::from_secs(10),
        || stream_events(&s.redis, PREFIX).len(),
        |n| *n >= 2,
    )
    .await;
    // ...but nothing on stdout.
    assert!(
        stdout_text(&s.gw).trim().is_empty(),
        "stdout: {}",
        stdout_text(&s.gw)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_stream_is_capped() {
    // Failed logins under 200 different usernames: each is the first of its kind, so each is
    // written (to the attempts stream), a cheap way to write many entries.
    let s = Stack::start_with(|c| {
        c.extra("[audit]\nstream_max_len = 10").replace(
            "users_file = \"users.toml\"",
            "users_file = \"users.toml\"\nmax_failures_per_ip = 100000",
        )
    })
    .await;
    for i in 0..200 {
        let status = login_json_response(&s.gw, &format!("guess{i}"), "wrong", None)
            .await
            .status();
        assert_eq!(status, 401);
    }
    let stdout_count = poll_until(
        "200 login_failure lines on stdout",
        Duration::from_secs(10),
        || events_named(&stdout_events(&s.gw), "login_failure").len(),
        |n| *n >= 200,
    )
    .await;
    assert_eq!(stdout_count, 200);
    // The XADDs run on spawned tasks: wait until Redis has taken all of them, then the
    // stream must be trimmed (MAXLEN ~ trims whole nodes, so the length is approximate but
    // bounded).
    let key = format!("{PREFIX}audit:attempts");
    poll_until(
        "200 entries added to the attempts stream",
        Duration::from_secs(10),
        || stream_entries_added(&s.redis, &key),
        |n| *n >= 200,
    )
    .await;
    let len: u64 = redis::cmd("XLEN")
        .arg(&key)
        .query(&mut s.redis.connection())
        .unwrap();
    assert!(len >= 10, "at least max_len entries kept: {len}");
    assert!(
        len < 150,
        "stream not trimmed: {len} entries for max_len 10"
    );
}

/// Sends `count` requests built by `request`, 16 at a time; returns the statuses seen.
async fn flood<F>(count: usize, request: F) -> BTreeMap<u16, usize>
where
    F: Fn(usize) -> reqwest::RequestBuilder,
{
    use futures_util::StreamExt;
    let statuses: Vec<u16> = futures_util::stream::iter(0..count)
        .map(|i| {
            let send = request(i).send();
            async move { send.await.map(|r| r.status().as_u16()).unwrap_or(0) }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut by_status = BTreeMap::new();
    for status in statuses {
        *by_status.entry(status).or_default() += 1;
    }
    by_status
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_failed_logins_and_forged_cookies_cannot_push_out_the_security_trail() {
    // The review's finding: a flood of throttled logins pushed every login_success out of the
    // capped stream and wrote one stdout line per request.
    let s = Stack::start_with(|c| {
        with_admin_token(c.extra("[audit]\nstream_max_len = 20").replace(
            "users_file = \"users.toml\"",
            "users_file = \"users.toml\"\nmax_failures_per_user = 3\nmax_failures_per_ip = 100000",
        ))
    })
    .await;
    let cookie = login(&s.gw, "alice").await;
    let handle = handle_of(&s.gw, &cookie).await;
    let forged = tamper(&cookie);
    let gw = &s.gw;

    // Junk cookies, one username hammered (throttled after 3), a spray of 400 usernames.
    let junk = flood(1000, |_| {
        client()
            .get(gw.url("/app/page"))
            .header("cookie", session_cookie_header(&forged))
    })
    .await;
    assert_eq!(junk.get(&401).copied(), Some(1000), "{junk:?}");
    let hammered = flood(2000, |_| {
        client()
            .post(gw.url("/login"))
            .header("accept", "application/json")
            .json(&serde_json::json!({"username": "bob", "password": "guess"}))
    })
    .await;
    // Concurrent attempts can all pass the check before any is counted: a few more than 3 may
    // reach the password check.
    let throttled = hammered.get(&429).copied().unwrap_or(0) as u64;
    assert!(throttled >= 1950, "{hammered:?}");
    let sprayed = flood(400, |i| {
        client()
            .post(gw.url("/login"))
            .header("accept", "application/json")
            .json(&serde_json::json!({"username": format!("spray{i}"), "password": "guess"}))
    })
    .await;
    assert_eq!(sprayed.get(&401).copied(), Some(400), "{sprayed:?}");
    logout(&s.gw, "/logout", &cookie).await;

    // The security stream still holds the login and the logout, however small its cap.
    let security = poll_until(
        "login_success and logout in the security stream",
        Duration::from_secs(10),
        || security_stream_events(&s.redis, PREFIX),
        |ev| !events_named(ev, "logout").is_empty(),
    )
    .await;
    let login_line = one(&security, "login_success", |e| {
        e["handle"] == handle.as_str()
    });
    assert_eq!(login_line["username"], "alice");
    assert!(events_named(&security, "login_failure").is_empty());
    assert!(events_named(&security, "cookie_rejected").is_empty());
    let out = run_gateway_cli(
        &[
            "audit",
            "tail",
            "--config",
            s.gw.dir().join("gateway.toml").to_str().unwrap(),
            "--trail",
            "security",
        ],
        None,
    );
    let tail = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tail}");
    assert!(tail.contains("\"login_success\""), "{tail}");

    // 3,400 attacker requests cost the log a bounded number of lines: one per kind, at most
    // 256 kinds a minute, the rest folded.
    let stdout = stdout_events(&s.gw);
    let attempts = stdout
        .iter()
        .filter(|e| e["event"] == "login_failure" || e["event"] == "cookie_rejected")
        .count();
    assert!(
        attempts <= 256 + 8,
        "{attempts} attempt lines for 3,400 requests"
    );
    assert_eq!(events_named(&stdout, "cookie_rejected").len(), 1);

    // At shutdown every window is closed: each repeated kind becomes one line with its count.
    let mut gw = s.gw;
    gw.terminate();
    assert!(gw.wait_exit(Duration::from_secs(15)).is_some());
    let stdout = stdout_events(&gw);
    let counted = |event: &str, pred: &dyn Fn(&Value) -> bool| -> u64 {
        stdout
            .iter()
            .filter(|e| e["event"] == event && pred(e))
            .map(|e| e["count"].as_u64().unwrap_or(1))
            .sum()
    };
    assert_eq!(counted("cookie_rejected", &|_| true), 1000);
    assert_eq!(
        counted("login_failure", &|e| e["reason"] == "too_many_failures"),
        throttled
    );
    assert_eq!(
        counted("login_failure", &|e| e["username"] == "bob"),
        2000,
        "bob's failures and throttles"
    );
    assert_eq!(
        counted("login_failure", &|e| e["username"]
            .as_str()
            .is_some_and(|u| u.starts_with("spray"))
            || e["ip"] == "*"),
        400
    );
    let folded = stdout
        .iter()
        .find(|e| e["ip"] == "*")
        .expect("the spray beyond 256 kinds is folded into one line");
    assert!(folded["since"].is_string(), "{folded}");
}
