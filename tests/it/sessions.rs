//! Server-side sessions in Redis: key layout, record content, lifetime, and
//! secrets never leaking into Redis or the logs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::*;
use base64::Engine;

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn ttl(s: &Stack, key: &str) -> i64 {
    redis::cmd("TTL")
        .arg(key)
        .query(&mut s.redis.connection())
        .unwrap()
}

fn session_record(s: &Stack, key: &str) -> serde_json::Value {
    let raw: String = redis::cmd("GET")
        .arg(key)
        .query(&mut s.redis.connection())
        .unwrap();
    serde_json::from_str(&raw).unwrap_or_else(|e| panic!("session value is not JSON ({e}): {raw}"))
}

fn only_session_key(s: &Stack) -> String {
    let keys = s.session_keys();
    assert_eq!(keys.len(), 1, "session keys: {keys:?}");
    keys[0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn login_stores_exactly_one_hashed_session_key() {
    let s = Stack::start().await;
    login_alice(&s.gw).await;
    let key = only_session_key(&s);
    let id = key.strip_prefix("whalefall:session:").expect("prefix");
    assert_eq!(id.len(), 64, "{key}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
}

#[tokio::test(flavor = "multi_thread")]
async fn session_ttl_is_the_idle_timeout() {
    let s = Stack::start_with(|c| c.idle_timeout("30m")).await;
    login_alice(&s.gw).await;
    let t = ttl(&s, &only_session_key(&s));
    assert!(t > 0 && t <= 1800, "TTL {t}");
    assert!(t > 1700, "TTL {t} is far below the 30m idle timeout");
}

#[tokio::test(flavor = "multi_thread")]
async fn session_record_describes_the_user_and_client() {
    let s = Stack::start().await;
    let before = now_unix();
    let resp = client()
        .post(s.gw.url("/login"))
        .header("user-agent", "whalefall-tests/1.0")
        .json(&serde_json::json!({"username": "alice", "password": "alice-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let after = now_unix();

    let v = session_record(&s, &only_session_key(&s));
    assert_eq!(v["user_id"], "1", "{v}");
    assert_eq!(v["username"], "alice", "{v}");
    assert_eq!(v["roles"], serde_json::json!(["admin", "user"]), "{v}");
    assert_eq!(v["ip"], "127.0.0.1", "{v}");
    assert_eq!(v["user_agent"], "whalefall-tests/1.0", "{v}");
    // Times are unix milliseconds.
    for field in ["created_at_ms", "last_seen_ms"] {
        let t = v[field]
            .as_i64()
            .unwrap_or_else(|| panic!("{field} is not an integer: {v}"))
            / 1000;
        assert!(
            t >= before - 5 && t <= after + 5,
            "{field}={t}s not within [{before}, {after}]"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_key_prefix_is_used_for_everything_the_gateway_stores() {
    let s = Stack::start_with(|c| c.key_prefix("tenant42:")).await;
    let cookie = login_alice(&s.gw).await;
    assert_eq!(get_with_cookie(&s.gw, "/x", &cookie).await.status(), 200);

    let keys = s.redis.keys("*");
    assert!(!keys.is_empty());
    assert!(
        keys.iter().all(|k| k.starts_with("tenant42:")),
        "keys: {keys:?}"
    );
    assert_eq!(
        s.redis.keys("tenant42:session:*").len(),
        1,
        "keys: {keys:?}"
    );
}

/// Strings derived from the cookie that must never be stored or logged.
fn cookie_derivatives(cookie: &str) -> Vec<String> {
    let mut out = vec![cookie.to_string()];
    if let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cookie) {
        out.push(hex::encode(&raw));
        for half in raw.chunks(32) {
            out.push(hex::encode(half));
            out.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(half));
            out.push(base64::engine::general_purpose::STANDARD.encode(half));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_never_contains_the_cookie_or_the_raw_session_id() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    assert_eq!(get_with_cookie(&s.gw, "/x", &cookie).await.status(), 200);

    let dump = s.redis.dump_all();
    assert!(!dump.is_empty());
    for secret in cookie_derivatives(&cookie) {
        for (k, v) in &dump {
            assert!(
                !k.contains(&secret),
                "key {k} contains cookie material {secret}"
            );
            assert!(
                !v.contains(&secret),
                "value of {k} contains cookie material {secret}: {v}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn session_deleted_from_redis_is_no_longer_accepted() {
    let s = Stack::start().await;
    let cookie = login_alice(&s.gw).await;
    assert_eq!(get_with_cookie(&s.gw, "/x", &cookie).await.status(), 200);

    // What idle expiry looks like from the gateway's side.
    let key = only_session_key(&s);
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query(&mut s.redis.connection())
        .unwrap();

    assert_eq!(get_with_cookie(&s.gw, "/x", &cookie).await.status(), 401);
    let browser = browser_get_with_cookie(&s.gw, "/x", &cookie).await;
    assert_eq!(browser.status(), 302);
}

#[tokio::test(flavor = "multi_thread")]
async fn session_past_its_absolute_deadline_is_refused() {
    let s = Stack::start_with(|c| c.absolute_timeout("1h")).await;
    let cookie = login_alice(&s.gw).await;
    let key = only_session_key(&s);

    // Backdate the session as if it had been created two hours ago and kept
    // alive since; the idle TTL is still fine but the absolute limit is not.
    // (The contract names the field `created_at`, unix seconds; a millisecond
    // `created_at_ms` is backdated too so the deadline is checked either way.)
    let mut v = session_record(&s, &key);
    let old = now_unix() - 2 * 3600;
    v["created_at"] = serde_json::json!(old);
    if v.get("created_at_ms").is_some() {
        v["created_at_ms"] = serde_json::json!(old * 1000);
    }
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(v.to_string())
        .arg("KEEPTTL")
        .query(&mut s.redis.connection())
        .unwrap();

    assert_eq!(get_with_cookie(&s.gw, "/x", &cookie).await.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn cookies_and_passwords_never_appear_in_the_logs() {
    let mut s = Stack::start().await;
    let json_cookie = login_alice(&s.gw).await;
    let form = login_form(&s.gw, "bob", "bob-password", "/").await;
    let form_cookie = cookie_from(&form, COOKIE_NAME).expect("form login cookie");
    let _ = login_json(&s.gw, "alice", "a-wrong-password-xyzzy").await;
    assert_eq!(
        get_with_cookie(&s.gw, "/x", &json_cookie).await.status(),
        200
    );
    let forged = format!("{}Q", &json_cookie[..85]);
    let _ = get_with_cookie(&s.gw, "/x", &forged).await;
    let _ = client()
        .post(s.gw.url("/logout"))
        .header("cookie", session_cookie_header(&form_cookie))
        .send()
        .await
        .unwrap();

    s.gw.terminate();
    s.gw.wait_exit(Duration::from_secs(20));
    let logs = s.gw.logs();
    assert!(!logs.is_empty(), "expected some log output");
    for cookie in [&json_cookie, &form_cookie] {
        for secret in cookie_derivatives(cookie) {
            assert!(
                !logs.contains(&secret),
                "logs contain cookie material {secret}:\n{logs}"
            );
        }
    }
    assert!(
        !logs.contains(&forged),
        "logs contain the forged cookie:\n{logs}"
    );
    for pw in ["alice-password", "bob-password", "a-wrong-password-xyzzy"] {
        assert!(!logs.contains(pw), "logs contain password {pw}:\n{logs}");
    }
    assert!(
        !logs.contains(TEST_SECRET),
        "logs contain the session secret"
    );
}
