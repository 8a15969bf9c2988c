//! Shared harness for the integration tests.
//!
//! Everything here is real: a `redis-server` process started on a free port,
//! a hyper HTTP/1.1 upstream that echoes what it receives, and the compiled
//! `gateway` binary. Readiness is always established by polling, never by
//! sleeping a fixed amount of time.

use std::collections::HashSet;
use std::convert::Infallible;
use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Generous bound for "the thing came up" on a loaded 2-core machine.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Session cookie name used by every test config.
pub const COOKIE_NAME: &str = "gateway_session";
/// CSRF cookie set by `GET /login`.
pub const CSRF_COOKIE_NAME: &str = "gateway_session_csrf";
/// Shared 32+ byte secret: every gateway started from a `TestConfig` uses it,
/// so several instances can share sessions.
pub const TEST_SECRET: &str = "test-secret-0123456789abcdef-0123456789abcdef";
pub const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();

/// A port that was free a moment ago and that this process has not handed out
/// before (so parallel tests in one binary never pick the same one).
pub fn free_port() -> u16 {
    let handed = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        if handed.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// TCP ports on which process `pid` itself holds a listening socket (Linux
/// /proc). Used to make sure a readiness probe was answered by *our* process and
/// not by another test's server that happened to grab the same port.
pub fn listening_ports(pid: u32) -> HashSet<u16> {
    let mut inodes = HashSet::new();
    if let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) {
        for entry in entries.flatten() {
            if let Ok(target) = fs::read_link(entry.path()) {
                let t = target.to_string_lossy();
                if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    inodes.insert(inode.to_string());
                }
            }
        }
    }
    let mut ports = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != "0A" || !inodes.contains(cols[9]) {
                continue;
            }
            if let Some(port) = cols[1]
                .rsplit(':')
                .next()
                .and_then(|h| u16::from_str_radix(h, 16).ok())
            {
                ports.insert(port);
            }
        }
    }
    ports
}

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

/// A real `redis-server` without persistence, killed on drop.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let mut dir = tempfile::tempdir().expect("tempdir for redis");
        let mut last_err = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let mut server = RedisServer {
                port,
                dir,
                child: None,
            };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) => {
                    last_err = e;
                    dir = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
                }
            }
        }
        panic!("could not start redis-server: {last_err}");
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log_path = self.dir.path().join("redis.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| e.to_string())?;
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let pid = self.child.as_ref().unwrap().id();
            if listening_ports(pid).contains(&self.port) && self.ping() {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!(
                    "redis-server exited with {status} during startup; log:\n{}",
                    fs::read_to_string(&log_path).unwrap_or_default()
                ));
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "redis-server did not answer PING within {READY_TIMEOUT:?}; log:\n{}",
                    fs::read_to_string(&log_path).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
            return false;
        };
        redis::cmd("PING").query::<String>(&mut conn).is_ok()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL the server and wait for it to be gone. Data is lost.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Start again on the same port (empty data set) and wait for PING.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn_and_wait()
            .expect("restart redis-server on the same port");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        let status = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {pid} failed");
    }

    /// SIGSTOP: the server keeps its sockets open but stops answering, i.e. a
    /// hung/slow Redis.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`RedisServer::pause`]; data is intact.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("redis client")
            .get_connection()
            .expect("redis connection")
    }

    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut self.connection())
            .expect("KEYS");
        keys.sort();
        keys
    }

    /// Every key together with a textual rendering of its value, whatever the type.
    pub fn dump_all(&self) -> Vec<(String, String)> {
        let mut conn = self.connection();
        let mut out = Vec::new();
        for key in self.keys("*") {
            let ty: String = redis::cmd("TYPE").arg(&key).query(&mut conn).unwrap();
            let value: Vec<Vec<u8>> = match ty.as_str() {
                "string" => vec![redis::cmd("GET").arg(&key).query(&mut conn).unwrap()],
                "hash" => redis::cmd("HGETALL").arg(&key).query(&mut conn).unwrap(),
                "list" => redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query(&mut conn)
                    .unwrap(),
                "set" => redis::cmd("SMEMBERS").arg(&key).query(&mut conn).unwrap(),
                "zset" => redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query(&mut conn)
                    .unwrap(),
                _ => vec![redis::cmd("DUMP").arg(&key).query(&mut conn).unwrap()],
            };
            let text = value
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect::<Vec<_>>()
                .join("\n");
            out.push((key, text));
        }
        out
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// Upstream (echo server)
// ---------------------------------------------------------------------------

type EchoBody = BoxBody<Bytes, Infallible>;

/// A real HTTP/1.1 application server that echoes every request as JSON.
///
/// * any path: 200 `{"method","uri","headers":[[name,value],..],"body_len","body_sha256"}`
/// * `/big?bytes=N`: N bytes of [`pattern_byte`], streamed, with content-length
/// * `/status/NNN`: the echo JSON with status NNN
/// * `/set-cookie`: the echo JSON plus `Set-Cookie: app_pref=dark; Path=/`
/// * `/auth/set-session`: the echo JSON plus `Set-Cookie` for `whalefall_session` and for the
///   gateway's own cookie names
/// * `/slow?ms=N`: the echo JSON after waiting N milliseconds
pub struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    count: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let (seen2, count2) = (seen.clone(), count.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (seen, count) = (seen2.clone(), count2.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (seen, count) = (seen.clone(), count.clone());
                        async move {
                            count.fetch_add(1, Ordering::SeqCst);
                            seen.lock()
                                .unwrap()
                                .push(format!("{} {}", req.method(), req.uri()));
                            upstream_handle(req).await
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            seen,
            count,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Number of requests that reached the application so far.
    pub fn request_count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// "METHOD URI" of every request that reached the application.
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Byte `i` of the `/big` download.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// Hex sha256 of the first `n` bytes of the `/big` pattern.
pub fn pattern_sha256(n: u64) -> String {
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    let mut chunk = vec![0u8; 64 * 1024];
    while offset < n {
        let len = (n - offset).min(chunk.len() as u64) as usize;
        for (j, b) in chunk[..len].iter_mut().enumerate() {
            *b = pattern_byte(offset + j as u64);
        }
        hasher.update(&chunk[..len]);
        offset += len as u64;
    }
    hex::encode(hasher.finalize())
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

struct PatternBody {
    offset: u64,
    total: u64,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.offset >= self.total {
            return Poll::Ready(None);
        }
        let len = (self.total - self.offset).min(64 * 1024);
        let start = self.offset;
        let chunk: Vec<u8> = (0..len).map(|j| pattern_byte(start + j)).collect();
        self.offset += len;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset >= self.total
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.total - self.offset)
    }
}

fn full(body: impl Into<Bytes>) -> EchoBody {
    Full::new(body.into()).boxed()
}

async fn upstream_handle(req: Request<Incoming>) -> Result<Response<EchoBody>, Infallible> {
    let (parts, mut body) = req.into_parts();
    let path = parts.uri.path().to_string();

    if path == "/slow" {
        // `/slow?ms=N`: wait N milliseconds, then answer with the usual echo.
        let ms: u64 = parts
            .uri
            .query()
            .and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "ms")
                    .and_then(|(_, v)| v.parse().ok())
            })
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    if path == "/big" {
        let n: u64 = parts
            .uri
            .query()
            .and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "bytes")
                    .and_then(|(_, v)| v.parse().ok())
            })
            .unwrap_or(0);
        // Drain any request body first.
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                break;
            }
        }
        let resp = Response::builder()
            .status(200)
            .header("content-type", "application/octet-stream")
            .header("content-length", n.to_string())
            .body(
                PatternBody {
                    offset: 0,
                    total: n,
                }
                .boxed(),
            )
            .unwrap();
        return Ok(resp);
    }

    let mut hasher = Sha256::new();
    let mut body_len: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    hasher.update(&data);
                    body_len += data.len() as u64;
                }
            }
            Err(e) => {
                return Ok(Response::builder()
                    .status(400)
                    .body(full(format!("body error: {e}")))
                    .unwrap());
            }
        }
    }
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let echo = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "headers": headers,
        "body_len": body_len,
        "body_sha256": hex::encode(hasher.finalize()),
    });
    let status = path
        .strip_prefix("/status/")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if path == "/set-cookie" {
        builder = builder.header("set-cookie", "app_pref=dark; Path=/");
    }
    if path == "/auth/set-session" {
        // What a Flask app answers on every page that renders a CSRF token, and an app that
        // (wrongly) writes cookies named like the gateway's.
        builder = builder
            .header(
                "set-cookie",
                "whalefall_session=eyJjc3JmIjoiYWJjIn0; HttpOnly; Path=/",
            )
            .header(
                "set-cookie",
                format!("{COOKIE_NAME}=set-by-the-app; Path=/"),
            )
            .header(
                "set-cookie",
                format!("{CSRF_COOKIE_NAME}=set-by-the-app; Path=/"),
            );
    }
    Ok(builder.body(full(echo.to_string())).unwrap())
}

/// What the upstream saw, parsed from its echo JSON.
#[derive(Debug, Clone, Deserialize)]
pub struct Echo {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    pub body_sha256: String,
}

impl Echo {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers_named(name).into_iter().next()
    }

    /// Every value of a header (case-insensitive name), repeated ones included.
    pub fn headers_named(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Header names that, read like the gateway reads them (case-insensitive,
    /// `_` as `-`), start with `x-auth-`.
    pub fn x_auth_headers(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(k, _)| {
                k.to_ascii_lowercase()
                    .replace('_', "-")
                    .starts_with("x-auth-")
            })
            .cloned()
            .collect()
    }

    /// Cookie pairs (`name=value`) of every Cookie header the upstream received.
    pub fn cookie_pairs(&self) -> Vec<String> {
        self.headers_named("cookie")
            .iter()
            .flat_map(|h| h.split(';').map(|p| p.trim().to_string()))
            .filter(|p| !p.is_empty())
            .collect()
    }
}

pub async fn echo(resp: reqwest::Response) -> Echo {
    let status = resp.status();
    let text = resp.text().await.expect("read upstream echo body");
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("response (status {status}) is not the upstream echo JSON ({e}): {text}")
    })
}

// ---------------------------------------------------------------------------
// Users file
// ---------------------------------------------------------------------------

/// Argon2id hash with modest parameters, so that logins are quick in debug builds.
pub fn argon2_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt_bytes = [0u8; 16];
    getrandom::fill(&mut salt_bytes).expect("random salt");
    let salt = SaltString::encode_b64(&salt_bytes).expect("salt");
    let params = argon2::Params::new(8 * 1024, 1, 1, None).expect("argon2 params");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .expect("hash password")
        .to_string()
}

/// TOML basic string literal.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One `[[users]]` entry.
pub fn user_entry(username: &str, id: &str, hash: &str, roles: &[&str], disabled: bool) -> String {
    let roles = roles
        .iter()
        .map(|r| toml_str(r))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[[users]]\nusername = {}\nid = {}\npassword_hash = {}\nroles = [{}]\ndisabled = {}\n\n",
        toml_str(username),
        toml_str(id),
        toml_str(hash),
        roles,
        disabled
    )
}

/// alice (admin,user), bob (user), carol (disabled). Hashed once per test binary.
pub fn default_users_toml() -> String {
    static USERS: OnceLock<String> = OnceLock::new();
    USERS
        .get_or_init(|| {
            let mut s = String::new();
            s += &user_entry(
                "alice",
                "1",
                &argon2_hash("alice-password"),
                &["admin", "user"],
                false,
            );
            s += &user_entry("bob", "2", &argon2_hash("bob-password"), &["user"], false);
            s += &user_entry(
                "carol",
                "3",
                &argon2_hash("carol-password"),
                &["user"],
                true,
            );
            s
        })
        .clone()
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

/// Builder for a complete gateway config (per the contract) plus its users file.
#[derive(Clone, Debug)]
pub struct TestConfig {
    pub listen_port: u16,
    pub admin_port: u16,
    pub upstreams: Vec<String>,
    pub redis_url: String,
    pub key_prefix: String,
    pub redis_timeout: String,
    pub secret: String,
    pub idle_timeout: String,
    pub absolute_timeout: String,
    pub cookie_secure: bool,
    pub public: Vec<String>,
    pub trusted_proxies: Vec<String>,
    /// Raw TOML appended at the end (start it with a `[section]` header).
    pub extra: String,
    /// `(from, to)` textual replacements applied to the rendered TOML.
    pub replacements: Vec<(String, String)>,
    /// Content of users.toml; defaults to alice/bob/carol.
    pub users_toml: String,
    /// Extra environment for the gateway process.
    pub env: Vec<(String, String)>,
}

impl TestConfig {
    pub fn new(redis_url: &str, upstream: SocketAddr) -> TestConfig {
        TestConfig {
            listen_port: free_port(),
            admin_port: free_port(),
            upstreams: vec![upstream.to_string()],
            redis_url: redis_url.to_string(),
            key_prefix: "whalefall:".to_string(),
            // The contract's example uses 200ms; on a loaded 2-core machine that
            // produced spurious 503s (a login's first Redis round trip can take
            // longer), so tests allow 1s. Outage tests use a 10s hang guard.
            redis_timeout: "1s".to_string(),
            secret: TEST_SECRET.to_string(),
            idle_timeout: "30m".to_string(),
            absolute_timeout: "8h".to_string(),
            cookie_secure: false,
            public: vec!["/static/".to_string(), "/favicon.ico".to_string()],
            trusted_proxies: vec![],
            extra: String::new(),
            replacements: vec![],
            users_toml: default_users_toml(),
            env: vec![],
        }
    }

    pub fn idle_timeout(mut self, d: &str) -> Self {
        self.idle_timeout = d.to_string();
        self
    }
    pub fn absolute_timeout(mut self, d: &str) -> Self {
        self.absolute_timeout = d.to_string();
        self
    }
    pub fn public(mut self, prefixes: &[&str]) -> Self {
        self.public = prefixes.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn key_prefix(mut self, p: &str) -> Self {
        self.key_prefix = p.to_string();
        self
    }
    pub fn cookie_secure(mut self, on: bool) -> Self {
        self.cookie_secure = on;
        self
    }
    pub fn trusted_proxies(mut self, cidrs: &[&str]) -> Self {
        self.trusted_proxies = cidrs.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn users(mut self, users_toml: &str) -> Self {
        self.users_toml = users_toml.to_string();
        self
    }
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }
    pub fn replace(mut self, from: &str, to: &str) -> Self {
        self.replacements.push((from.to_string(), to.to_string()));
        self
    }
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Fresh listen/admin ports (used when a port was taken meanwhile).
    pub fn reassign_ports(&mut self) {
        self.listen_port = free_port();
        self.admin_port = free_port();
    }

    pub fn to_toml(&self) -> String {
        let list = |v: &[String]| v.iter().map(|s| toml_str(s)).collect::<Vec<_>>().join(", ");
        let mut s = format!(
            r#"[server]
listen = "127.0.0.1:{listen}"
admin_listen = "127.0.0.1:{admin}"
threads = 2
trusted_proxies = [{trusted}]
grace_period = "1s"
shutdown_timeout = "1s"

[upstream]
servers = [{servers}]
connect_timeout = "2s"
read_timeout = "60s"

[redis]
url = {redis_url}
key_prefix = {prefix}
timeout = {redis_timeout}
connect_timeout = "1s"

[session]
cookie_name = "{cookie}"
secret = {secret}
idle_timeout = {idle}
absolute_timeout = {absolute}
cookie_secure = {secure}

[login]
path = "/login"
logout_path = "/logout"
users_file = "users.toml"

[access]
public = [{public}]
"#,
            listen = self.listen_port,
            admin = self.admin_port,
            trusted = list(&self.trusted_proxies),
            servers = list(&self.upstreams),
            redis_url = toml_str(&self.redis_url),
            prefix = toml_str(&self.key_prefix),
            redis_timeout = toml_str(&self.redis_timeout),
            cookie = COOKIE_NAME,
            secret = toml_str(&self.secret),
            idle = toml_str(&self.idle_timeout),
            absolute = toml_str(&self.absolute_timeout),
            secure = self.cookie_secure,
            public = list(&self.public),
        );
        if !self.extra.is_empty() {
            s.push('\n');
            s.push_str(&self.extra);
        }
        for (from, to) in &self.replacements {
            assert!(
                s.contains(from.as_str()),
                "replacement target {from:?} not in config"
            );
            s = s.replace(from.as_str(), to);
        }
        s
    }

    /// Writes `gateway.toml` and `users.toml` into `dir`; returns the config path.
    pub fn write_to(&self, dir: &Path) -> PathBuf {
        let cfg = dir.join("gateway.toml");
        fs::write(&cfg, self.to_toml()).expect("write config");
        fs::write(dir.join("users.toml"), &self.users_toml).expect("write users");
        cfg
    }
}

// ---------------------------------------------------------------------------
// Gateway process
// ---------------------------------------------------------------------------

pub fn gateway_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gateway")
}

/// Runs a gateway subcommand to completion (e.g. `check-config`), with optional stdin.
pub fn run_gateway_cli(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(gateway_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gateway");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).expect("write stdin");
        drop(pipe);
    }
    // Hang guard: the CLI commands are expected to finish quickly.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("gateway {args:?} did not exit within 60s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("gateway output")
}

/// A running `gateway run --config ...`, killed on drop.
pub struct Gateway {
    pub config: TestConfig,
    dir: tempfile::TempDir,
    child: Option<Child>,
    listen: SocketAddr,
    admin: SocketAddr,
}

impl Gateway {
    /// Starts the gateway and waits until admin `/healthz` answers 200 and the
    /// public listener accepts connections. Retries with fresh ports if the
    /// chosen ones were taken in the meantime.
    pub async fn start(config: &TestConfig) -> Gateway {
        let mut config = config.clone();
        for attempt in 0..3 {
            match Gateway::try_start(&config).await {
                Ok(gw) => return gw,
                Err((logs, port_clash)) => {
                    if port_clash && attempt < 2 {
                        config.reassign_ports();
                        continue;
                    }
                    panic!("gateway did not become ready:\n{logs}");
                }
            }
        }
        unreachable!()
    }

    async fn try_start(config: &TestConfig) -> Result<Gateway, (String, bool)> {
        let dir = tempfile::tempdir().unwrap();
        config.write_to(dir.path());
        Gateway::spawn_in(dir, config.clone(), &config.env).await
    }

    async fn spawn_in(
        dir: tempfile::TempDir,
        config: TestConfig,
        env: &[(String, String)],
    ) -> Result<Gateway, (String, bool)> {
        let cfg_path = dir.path().join("gateway.toml");
        let stdout = fs::File::create(dir.path().join("stdout.log")).unwrap();
        let stderr = fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut cmd = Command::new(gateway_bin());
        cmd.arg("run")
            .arg("--config")
            .arg(&cfg_path)
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn gateway binary");
        let mut gw = Gateway {
            listen: SocketAddr::from(([127, 0, 0, 1], config.listen_port)),
            admin: SocketAddr::from(([127, 0, 0, 1], config.admin_port)),
            config,
            dir,
            child: Some(child),
        };
        let probe = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = gw.child.as_mut().unwrap().try_wait().unwrap() {
                gw.child = None;
                let logs = gw.logs();
                let clash = logs.contains("in use") || logs.contains("os error 98");
                return Err((
                    format!("gateway exited early with {status}; logs:\n{logs}"),
                    clash,
                ));
            }
            let pid = gw.child.as_ref().unwrap().id();
            let ours = listening_ports(pid);
            if ours.contains(&gw.listen.port()) && ours.contains(&gw.admin.port()) {
                let healthy = matches!(
                    probe.get(gw.admin_url("/healthz")).send().await,
                    Ok(r) if r.status() == 200
                );
                if healthy {
                    return Ok(gw);
                }
            } else if gw.logs().contains(" is in use") {
                // Another process took one of our ports; pingora would keep
                // retrying. Start over on fresh ports.
                let logs = gw.logs();
                gw.kill();
                return Err((format!("port clash; logs:\n{logs}"), true));
            }
            if Instant::now() > deadline {
                let logs = gw.logs();
                return Err((
                    format!("gateway not ready after {READY_TIMEOUT:?}; logs:\n{logs}"),
                    false,
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listen, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// `http://127.0.0.1:PORT`, i.e. the same-site Origin.
    pub fn origin(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// The Host header value clients send.
    pub fn host(&self) -> String {
        self.listen.to_string()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        let out = fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default();
        let err = fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
        format!("{out}{err}")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -TERM {pid} failed");
        }
    }

    /// Waits for the process to exit; `None` if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------

/// reqwest client that never follows redirects and ignores proxy env vars.
pub fn client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(60))
}

pub fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .build()
        .unwrap()
}

/// Every `Set-Cookie` header of a response.
pub fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// The full `Set-Cookie` header that sets cookie `name`, if any.
pub fn set_cookie_header(resp: &reqwest::Response, name: &str) -> Option<String> {
    set_cookies(resp).into_iter().find(|h| {
        h.split(';')
            .next()
            .and_then(|pair| pair.split_once('='))
            .map(|(n, _)| n.trim() == name)
            .unwrap_or(false)
    })
}

/// The value of cookie `name` as set by the response.
pub fn cookie_from(resp: &reqwest::Response, name: &str) -> Option<String> {
    set_cookie_header(resp, name).map(|h| {
        let pair = h.split(';').next().unwrap();
        pair.split_once('=').unwrap().1.trim().to_string()
    })
}

/// Attributes of a Set-Cookie header, lower-cased names: `[("httponly",""),("path","/"),..]`.
pub fn cookie_attributes(set_cookie: &str) -> Vec<(String, String)> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|a| {
            let a = a.trim();
            match a.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), v.trim().to_string()),
                None => (a.to_ascii_lowercase(), String::new()),
            }
        })
        .collect()
}

pub fn session_cookie_header(value: &str) -> String {
    format!("{COOKIE_NAME}={value}")
}

/// `POST /login` with JSON; returns the session cookie value on success.
pub async fn login_json(gw: &Gateway, user: &str, pass: &str) -> Option<String> {
    let resp = login_json_response(gw, user, pass, None).await;
    if resp.status() != 200 {
        return None;
    }
    cookie_from(&resp, COOKIE_NAME)
}

/// Logs alice in and panics with context if that fails.
pub async fn login_alice(gw: &Gateway) -> String {
    let resp = login_json_response(gw, "alice", "alice-password", None).await;
    session_cookie_or_panic(resp, gw, "alice").await
}

/// The session cookie a successful login set; otherwise panics with the answer and the logs.
pub async fn session_cookie_or_panic(resp: reqwest::Response, gw: &Gateway, who: &str) -> String {
    let status = resp.status();
    let cookie = cookie_from(&resp, COOKIE_NAME);
    let body = resp.text().await.unwrap_or_default();
    match cookie {
        Some(c) if status == 200 => c,
        _ => panic!(
            "login as {who} failed: status {status}, body {body}\nlogs:\n{}",
            gw.logs()
        ),
    }
}

/// `POST /login` with JSON, optionally sending an existing Cookie header.
pub async fn login_json_response(
    gw: &Gateway,
    user: &str,
    pass: &str,
    cookie_header: Option<&str>,
) -> reqwest::Response {
    let mut req = client()
        .post(gw.url("/login"))
        .header("accept", "application/json")
        .json(&serde_json::json!({"username": user, "password": pass}));
    if let Some(c) = cookie_header {
        req = req.header("cookie", c);
    }
    req.send().await.expect("POST /login")
}

/// `POST path` (`/logout`, `/logout?scope=all`) as an API client would; the answer.
pub async fn logout_json(gw: &Gateway, path: &str, cookie: &str) -> reqwest::Response {
    client()
        .post(gw.url(path))
        .header("accept", "application/json")
        .header("cookie", session_cookie_header(cookie))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

pub async fn get_with_cookie(gw: &Gateway, path: &str, cookie_value: &str) -> reqwest::Response {
    client()
        .get(gw.url(path))
        .header("cookie", session_cookie_header(cookie_value))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Like [`get_with_cookie`] but as a browser navigation (Accept: text/html).
pub async fn browser_get_with_cookie(
    gw: &Gateway,
    path: &str,
    cookie_value: &str,
) -> reqwest::Response {
    client()
        .get(gw.url(path))
        .header("accept", BROWSER_ACCEPT)
        .header("cookie", session_cookie_header(cookie_value))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The `value` attribute of the `<input>` whose name is `field`, HTML entities decoded.
pub fn hidden_input_value(html: &str, field: &str) -> Option<String> {
    let needle_dq = format!("name=\"{field}\"");
    let needle_sq = format!("name='{field}'");
    let mut rest = html;
    while let Some(start) = rest.find("<input") {
        let tag_rest = &rest[start..];
        let end = tag_rest.find('>')?;
        let tag = &tag_rest[..end];
        if tag.contains(&needle_dq) || tag.contains(&needle_sq) {
            for quote in ['"', '\''] {
                let key = format!("value={quote}");
                if let Some(v) = tag.find(&key) {
                    let after = &tag[v + key.len()..];
                    let close = after.find(quote)?;
                    return Some(html_unescape(&after[..close]));
                }
            }
            return Some(String::new());
        }
        rest = &tag_rest[end..];
    }
    None
}

pub fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#x2F;", "/")
        .replace("&#47;", "/")
        .replace("&amp;", "&")
}

/// Result of `GET /login`: the CSRF cookie and the token embedded in the form.
#[derive(Debug, Clone)]
pub struct LoginPage {
    pub status: u16,
    pub csrf_cookie: Option<String>,
    pub csrf_cookie_header: Option<String>,
    pub csrf_token: Option<String>,
    pub next_field: Option<String>,
    pub html: String,
}

pub async fn get_login_page(gw: &Gateway, query: &str) -> LoginPage {
    let resp = client()
        .get(gw.url(&format!("/login{query}")))
        .header("accept", BROWSER_ACCEPT)
        .send()
        .await
        .expect("GET /login");
    let status = resp.status().as_u16();
    let csrf_cookie = cookie_from(&resp, CSRF_COOKIE_NAME);
    let csrf_cookie_header = set_cookie_header(&resp, CSRF_COOKIE_NAME);
    let html = resp.text().await.unwrap();
    LoginPage {
        status,
        csrf_cookie,
        csrf_cookie_header,
        csrf_token: hidden_input_value(&html, "csrf_token"),
        next_field: hidden_input_value(&html, "next"),
        html,
    }
}

/// Full browser-style form login: GET /login, then POST the form with the CSRF
/// cookie, the token and a same-site Origin. Returns the POST response.
pub async fn login_form(gw: &Gateway, user: &str, pass: &str, next: &str) -> reqwest::Response {
    let page = get_login_page(gw, "").await;
    let csrf_cookie = page.csrf_cookie.unwrap_or_else(|| {
        panic!(
            "GET /login set no {CSRF_COOKIE_NAME} cookie; html:\n{}",
            page.html
        )
    });
    let token = page
        .csrf_token
        .unwrap_or_else(|| panic!("no csrf_token input in login page:\n{}", page.html));
    client()
        .post(gw.url("/login"))
        .header("accept", BROWSER_ACCEPT)
        .header("origin", gw.origin())
        .header("cookie", format!("{CSRF_COOKIE_NAME}={csrf_cookie}"))
        .form(&[
            ("username", user),
            ("password", pass),
            ("csrf_token", token.as_str()),
            ("next", next),
        ])
        .send()
        .await
        .expect("POST /login")
}

/// Parses `/login?next=...` and returns the decoded `next` value.
pub fn next_param_of_login_redirect(location: &str) -> Option<String> {
    let query = location.strip_prefix("/login?")?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned())
}

pub fn location(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
}

/// Polls `url` until it answers `status` (hang-guarded per request), or panics after `timeout`.
pub async fn wait_for_status(url: &str, status: u16, timeout: Duration) {
    let probe = client_with_timeout(Duration::from_secs(5));
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe.get(url).send().await {
            Ok(r) if r.status().as_u16() == status => return,
            Ok(r) => format!("status {}", r.status()),
            Err(e) => format!("error {e}"),
        };
        if Instant::now() > deadline {
            panic!("{url} did not answer {status} within {timeout:?}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Everything a test usually needs: redis, upstream, one gateway.
pub struct Stack {
    pub redis: RedisServer,
    pub upstream: Upstream,
    pub gw: Gateway,
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::start_with(|c| c).await
    }

    pub async fn start_with(f: impl FnOnce(TestConfig) -> TestConfig) -> Stack {
        let redis = RedisServer::start();
        let upstream = Upstream::start().await;
        let cfg = f(TestConfig::new(&redis.url(), upstream.addr()));
        let gw = Gateway::start(&cfg).await;
        Stack {
            redis,
            upstream,
            gw,
        }
    }

    /// Session keys currently in Redis.
    pub fn session_keys(&self) -> Vec<String> {
        self.redis
            .keys(&format!("{}session:*", self.gw.config.key_prefix))
    }
}

/// Runs a scenario whose outcome depends on wall-clock deadlines of a few seconds (session
/// expiry, throttle windows: the gateway and Redis measure those on the wall clock, as they must
/// across instances). If the scenario fails while the machine's wall clock jumped (a paused or
/// re-synced VM, seen on CI machines), the failure says nothing about the gateway, so the
/// scenario runs again, up to three times in all; any other failure fails the test at once.
pub async fn tolerate_clock_jumps<F, Fut>(scenario: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    const ATTEMPTS: usize = 3;
    for attempt in 1..=ATTEMPTS {
        let (wall, mono) = (std::time::SystemTime::now(), Instant::now());
        let outcome = tokio::spawn(scenario()).await;
        let wall_elapsed = wall.elapsed().unwrap_or_default();
        let jump = wall_elapsed.abs_diff(mono.elapsed());
        match outcome {
            Ok(()) => return,
            Err(e) if e.is_panic() && jump > Duration::from_millis(500) && attempt < ATTEMPTS => {
                eprintln!(
                    "wall clock jumped {jump:?} during attempt {attempt}; running the scenario again"
                );
            }
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("scenario did not finish: {e}"),
        }
    }
}

/// Sends `head` (request line and headers, without the blank line), `Connection: close` and
/// `body` verbatim over a plain socket (reqwest would normalise them); returns the status and
/// the whole response text.
pub fn raw_request(addr: &str, head: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    write!(stream, "{head}\r\nConnection: close\r\n\r\n{body}").expect("send");
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in response: {text:?}"));
    (status, text)
}
