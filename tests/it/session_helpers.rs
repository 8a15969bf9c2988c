//! Helpers shared by the session-control tests (expiry, limits, revocation,
//! admin API, CLI, audit). Builds on `support`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use crate::support::*;

/// Admin bearer token used by configs built with [`with_admin_token`].
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

/// Adds lines to the `[session]` section of the rendered config.
pub fn session_settings(cfg: TestConfig, lines: &str) -> TestConfig {
    cfg.replace("\n[login]\n", &format!("{lines}\n\n[login]\n"))
}

/// `[admin] token = ADMIN_TOKEN`.
pub fn with_admin_token(cfg: TestConfig) -> TestConfig {
    cfg.extra(&format!("[admin]\ntoken = {}\n", toml_str(ADMIN_TOKEN)))
}

/// JSON login with a chosen User-Agent; returns the session cookie or panics.
pub async fn login_as(gw: &Gateway, user: &str, pass: &str, user_agent: &str) -> String {
    let resp = login_as_response(gw, user, pass, user_agent).await;
    session_cookie_or_panic(resp, gw, user).await
}

pub async fn login_as_response(
    gw: &Gateway,
    user: &str,
    pass: &str,
    user_agent: &str,
) -> reqwest::Response {
    client()
        .post(gw.url("/login"))
        .header("accept", "application/json")
        .header("user-agent", user_agent)
        .json(&serde_json::json!({"username": user, "password": pass}))
        .send()
        .await
        .expect("POST /login")
}

pub async fn alice(gw: &Gateway) -> String {
    login_as(gw, "alice", "alice-password", "AliceBrowser/1.0").await
}

pub async fn bob(gw: &Gateway) -> String {
    login_as(gw, "bob", "bob-password", "BobBrowser/2.0").await
}

/// Status of an API-style request (no Accept: text/html) to a protected path.
pub async fn status_with(gw: &Gateway, cookie: &str) -> u16 {
    get_with_cookie(gw, "/app/whoami", cookie)
        .await
        .status()
        .as_u16()
}

/// Asserts a protected request with `cookie` is proxied as `user`.
pub async fn assert_live(gw: &Gateway, cookie: &str, user: &str, what: &str) {
    let resp = get_with_cookie(gw, "/app/whoami", cookie).await;
    let status = resp.status();
    if status != 200 {
        let body = resp.text().await.unwrap_or_default();
        panic!(
            "{what}: expected 200 as {user}, got {status}: {body}\nlogs:\n{}",
            gw.logs()
        );
    }
    assert_eq!(
        echo(resp).await.header("x-auth-user").as_deref(),
        Some(user),
        "{what}"
    );
}

/// Asserts a protected request with `cookie` is refused (401). Another instance may have
/// accepted a session ended elsewhere from its validation cache until Redis's invalidation
/// reached it (100 ms at most by design), so a refusal is waited for, briefly; the bench
/// measures the real latency.
pub async fn assert_refused(gw: &Gateway, cookie: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let resp = get_with_cookie(gw, "/app/whoami", cookie).await;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status == 401 {
            return;
        }
        assert!(
            status == 200 && Instant::now() < deadline,
            "{what}: expected 401, got {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `GET /_gateway/sessions` as JSON with `cookie`.
pub async fn own_sessions(gw: &Gateway, cookie: &str) -> Vec<Value> {
    let resp = client()
        .get(gw.url("/_gateway/sessions"))
        .header("accept", "application/json")
        .header("cookie", session_cookie_header(cookie))
        .send()
        .await
        .expect("GET /_gateway/sessions");
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "GET /_gateway/sessions: {text}");
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(items)) => items,
        other => panic!("sessions page JSON is not an array: {other:?}: {text}"),
    }
}

/// The handle of the session `cookie` belongs to (the entry flagged `current`).
pub async fn handle_of(gw: &Gateway, cookie: &str) -> String {
    let items = own_sessions(gw, cookie).await;
    let current: Vec<&Value> = items
        .iter()
        .filter(|v| v["current"] == Value::Bool(true))
        .collect();
    assert_eq!(current.len(), 1, "exactly one current session: {items:?}");
    current[0]["handle"]
        .as_str()
        .expect("handle is a string")
        .to_string()
}

pub fn session_key(prefix: &str, handle: &str) -> String {
    format!("{prefix}session:{handle}")
}

pub fn key_exists(redis: &RedisServer, key: &str) -> bool {
    let n: i64 = redis::cmd("EXISTS")
        .arg(key)
        .query(&mut redis.connection())
        .expect("EXISTS");
    n == 1
}

pub fn get_json(redis: &RedisServer, key: &str) -> Value {
    let raw: String = redis::cmd("GET")
        .arg(key)
        .query(&mut redis.connection())
        .unwrap_or_else(|e| panic!("GET {key}: {e}"));
    serde_json::from_str(&raw).expect("session record is JSON")
}

// ---------------------------------------------------------------------------
// Two instances sharing one Redis
// ---------------------------------------------------------------------------

pub struct Pair {
    pub redis: RedisServer,
    #[allow(dead_code)] // held so the upstream lives as long as the two gateways
    pub upstream: Upstream,
    pub a: Gateway,
    pub b: Gateway,
}

impl Pair {
    pub async fn start(f: impl Fn(TestConfig) -> TestConfig) -> Pair {
        let redis = RedisServer::start();
        let upstream = Upstream::start().await;
        let a = Gateway::start(&f(TestConfig::new(&redis.url(), upstream.addr()))).await;
        let b = Gateway::start(&f(TestConfig::new(&redis.url(), upstream.addr()))).await;
        Pair {
            redis,
            upstream,
            a,
            b,
        }
    }

    pub fn session_keys(&self) -> Vec<String> {
        self.redis
            .keys(&format!("{}session:*", self.a.config.key_prefix))
    }
}

// ---------------------------------------------------------------------------
// Admin API
// ---------------------------------------------------------------------------

pub async fn admin_request(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut req = client()
        .request(method.clone(), gw.admin_url(path))
        .header("user-agent", "AdminConsole/3.1");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path} on admin listener: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

pub async fn admin_get_json(gw: &Gateway, path: &str) -> Value {
    let (status, body) = admin_request(gw, reqwest::Method::GET, path, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path} not JSON ({e}): {body}"))
}

pub async fn admin_delete(gw: &Gateway, path: &str) -> (u16, Value) {
    let (status, body) = admin_request(gw, reqwest::Method::DELETE, path, Some(ADMIN_TOKEN)).await;
    let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, json)
}

// ---------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------

pub fn config_path(gw: &Gateway) -> PathBuf {
    gw.dir().join("gateway.toml")
}

/// Runs `gateway <args>` off the async runtime's worker threads.
pub async fn cli(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run_gateway_cli(&refs, None)
    })
    .await
    .expect("cli task")
}

/// Runs a CLI command against `gw`'s config: `gateway <pre..> --config F <post..>`.
pub async fn cli_for(gw: &Gateway, pre: &[&str], post: &[&str]) -> Output {
    let mut args: Vec<String> = pre.iter().map(|s| s.to_string()).collect();
    args.push("--config".into());
    args.push(config_path(gw).display().to_string());
    args.extend(post.iter().map(|s| s.to_string()));
    cli(args).await
}

pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------
// Redis stats
// ---------------------------------------------------------------------------

/// `INFO commandstats` as `command -> calls`.
pub fn command_calls(redis: &RedisServer) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.connection())
        .expect("INFO commandstats");
    let mut out = BTreeMap::new();
    for line in info.lines() {
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, stats)) = rest.split_once(':') else {
            continue;
        };
        let calls = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        out.insert(name.to_string(), calls);
    }
    out
}

pub fn reset_stats(redis: &RedisServer) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut redis.connection())
        .expect("CONFIG RESETSTAT");
}

// ---------------------------------------------------------------------------
// Audit
// ---------------------------------------------------------------------------

/// The Redis audit trail, oldest first: the security stream `{prefix}audit` and the attempts
/// stream `{prefix}audit:attempts` merged by entry id (field "event" parsed as JSON).
pub fn stream_events(redis: &RedisServer, prefix: &str) -> Vec<Value> {
    parse_events(stream_lines(redis, prefix))
}

/// Events of the security stream `{prefix}audit` alone.
pub fn security_stream_events(redis: &RedisServer, prefix: &str) -> Vec<Value> {
    parse_events(lines_of(&[stream_entries(
        redis,
        &format!("{prefix}audit"),
    )]))
}

/// Raw text of the `event` field of every entry of both streams, merged by entry id.
pub fn stream_lines(redis: &RedisServer, prefix: &str) -> Vec<String> {
    lines_of(&[
        stream_entries(redis, &format!("{prefix}audit")),
        stream_entries(redis, &format!("{prefix}audit:attempts")),
    ])
}

fn stream_entries(redis: &RedisServer, key: &str) -> Vec<redis::streams::StreamId> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query(&mut redis.connection())
        .expect("XRANGE audit stream");
    reply.ids
}

fn lines_of(streams: &[Vec<redis::streams::StreamId>]) -> Vec<String> {
    let order = |id: &str| -> (u64, u64) {
        let (ms, seq) = id.split_once('-').expect("stream id is ms-seq");
        (ms.parse().unwrap(), seq.parse().unwrap())
    };
    let mut entries: Vec<&redis::streams::StreamId> = streams.iter().flatten().collect();
    entries.sort_by_key(|e| order(&e.id));
    entries
        .iter()
        .map(|entry| {
            entry
                .get::<String>("event")
                .unwrap_or_else(|| panic!("stream entry {} has no `event` field", entry.id))
        })
        .collect()
}

fn parse_events(lines: Vec<String>) -> Vec<Value> {
    lines
        .iter()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("stream event is not JSON ({e}): {line}"))
        })
        .collect()
}

pub fn stdout_text(gw: &Gateway) -> String {
    std::fs::read_to_string(gw.dir().join("stdout.log")).unwrap_or_default()
}

/// Audit events the gateway printed on stdout (every non-empty line must be JSON).
pub fn stdout_events(gw: &Gateway) -> Vec<Value> {
    stdout_text(gw)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stdout line is not a JSON audit event ({e}): {l}"))
        })
        .collect()
}

pub fn events_named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// Polls `get` until `done` holds for its result; panics with the last result after `timeout`.
pub async fn poll_until<T: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    mut get: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let v = get();
        if done(&v) {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}; last: {v:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Strings derived from a session cookie that must never be logged or stored.
pub fn cookie_derivatives(cookie: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let mut out = vec![cookie.to_string()];
    if let Ok(raw) = URL_SAFE_NO_PAD.decode(cookie) {
        out.push(hex::encode(&raw));
        for half in raw.chunks(32) {
            out.push(hex::encode(half));
            out.push(URL_SAFE_NO_PAD.encode(half));
            out.push(STANDARD.encode(half));
        }
    }
    out
}

/// Changes one character in the middle of a cookie value (still base64url, wrong MAC).
pub fn tamper(cookie: &str) -> String {
    let mut chars: Vec<char> = cookie.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// The admin listener's `/metrics`, as text.
pub async fn metrics_text(gw: &Gateway) -> String {
    client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap_or_default()
}

/// The value of one sample line (`name{labels}`) of a `/metrics` text; 0 if absent.
pub fn sample_in(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0)
}

/// The value of one sample line of `/metrics`, e.g. `gateway_session_cache_total{result="hit"}`.
pub async fn metric(gw: &Gateway, sample: &str) -> f64 {
    sample_in(&metrics_text(gw).await, sample)
}

pub const CACHE_HITS: &str = "gateway_session_cache_total{result=\"hit\"}";
pub const CACHE_MISSES: &str = "gateway_session_cache_total{result=\"miss\"}";
pub const CACHE_FLUSHES: &str = "gateway_session_cache_flushes_total";
pub const CACHE_ENTRIES: &str = "gateway_session_cache_entries";

/// Requests with `cookie` on `gw` until one is answered from the cache.
pub async fn until_cached(gw: &Gateway, cookie: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = metric(gw, CACHE_HITS).await;
        assert_eq!(status_with(gw, cookie).await, 200, "session must be live");
        if metric(gw, CACHE_HITS).await > before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never answered from the cache:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until `sample` on `gw` exceeds `floor`.
pub async fn until_metric_above(gw: &Gateway, sample: &str, floor: f64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(gw, sample).await <= floor {
        assert!(Instant::now() < deadline, "{what}:\n{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
