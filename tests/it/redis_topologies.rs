//! Redis beyond one plain server: TLS with the operator's CA and the minimal ACL user the README
//! gives, and a primary found through Sentinel that is found again after a failover. Every
//! server is a real `redis-server` (or `redis-server --sentinel`) on free ports.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::session_helpers::*;
use crate::support::*;
use crate::tls_certs::make_certificates;

/// The README's minimal ACL rule for the gateway's user, with the tests' key prefix.
fn minimal_acl(user: &str, password: &str, prefix: &str) -> Vec<String> {
    format!(
        "{user} on >{password} ~{prefix}* resetchannels -@all +@read +@write +@scripting \
         +ping +hello +auth +client|setname +client|tracking +wait -@dangerous"
    )
    .split(' ')
    .map(str::to_string)
    .collect()
}

/// A redis-server (or sentinel) process with arguments of our choosing, killed on drop.
struct RedisProcess {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    args: Vec<String>,
}

impl RedisProcess {
    fn spawn(dir: &Path, name: &str, port: u16, args: &[String]) -> RedisProcess {
        let log = dir.join(format!("{name}.log"));
        let out = fs::File::create(&log).unwrap();
        let child = Command::new("redis-server")
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn redis-server");
        let process = RedisProcess {
            child: Some(child),
            port,
            log,
            args: args.to_vec(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !listening_ports(process.pid()).contains(&port) {
            assert!(
                Instant::now() < deadline,
                "{name} did not listen on {port}:\n{}",
                fs::read_to_string(&process.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        process
    }

    /// Starts the same server again (its data is gone: nothing is persisted).
    fn restart(&mut self, dir: &Path, name: &str) {
        self.kill();
        *self = RedisProcess::spawn(dir, name, self.port, &self.args.clone());
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(sig)
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback redis-server on `port` that keeps nothing on disk, working in `dir`.
fn server_args(port: u16, dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

const PREFIX: &str = "tlsgw:";
const ACL_USER: &str = "gateway";
const ACL_PASSWORD: &str = "acl-password-for-tests-9f2c";

/// A TLS-only Redis whose default user is off and whose one user has the minimal rule.
fn tls_redis(dir: &Path) -> (RedisProcess, PathBuf) {
    let (ca, cert, key) = make_certificates(dir, "good");
    let port = free_port();
    // Port 0: TLS only.
    let mut args = server_args(0, dir);
    args.extend(["--tls-auth-clients".to_string(), "no".to_string()]);
    args.extend([
        "--tls-port".to_string(),
        port.to_string(),
        "--tls-cert-file".to_string(),
        cert.display().to_string(),
        "--tls-key-file".to_string(),
        key.display().to_string(),
        "--tls-ca-cert-file".to_string(),
        ca.display().to_string(),
        "--user".to_string(),
        "default".to_string(),
        "off".to_string(),
        "--user".to_string(),
    ]);
    args.extend(minimal_acl(ACL_USER, ACL_PASSWORD, PREFIX));
    (RedisProcess::spawn(dir, "redis-tls", port, &args), ca)
}

fn tls_config(port: u16, upstream: std::net::SocketAddr, ca: &Path) -> TestConfig {
    let url = format!("rediss://127.0.0.1:{port}/0");
    TestConfig::new(&url, upstream).key_prefix(PREFIX).replace(
        &format!("key_prefix = \"{PREFIX}\""),
        &format!(
            "key_prefix = \"{PREFIX}\"\nusername = \"{ACL_USER}\"\npassword = \"{ACL_PASSWORD}\"\n\
                 ca_file = \"{}\"",
            ca.display()
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_work_over_tls_with_the_minimal_acl_user() {
    let dir = tempfile::tempdir().unwrap();
    let (redis, ca) = tls_redis(dir.path());
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&tls_config(redis.port, upstream.addr(), &ca)).await;
    let other = Gateway::start(&tls_config(redis.port, upstream.addr(), &ca)).await;

    let cookie = login_alice(&gw).await;
    // Twice on the second instance: the second answer may come from its validation cache,
    // whose tracking connection also runs under the ACL user and TLS.
    for _ in 0..2 {
        assert_eq!(
            get_with_cookie(&other, "/app/x", &cookie).await.status(),
            200
        );
    }
    let resp = logout_json(&gw, "/logout", &cookie).await;
    assert_eq!(resp.status(), 200);
    assert_refused(&other, &cookie, "logged out on the other instance").await;
    // Failed logins are counted (the throttle's script runs under the rule too).
    let resp = login_json_response(&gw, "alice", "wrong", None).await;
    assert_eq!(resp.status(), 401);

    for g in [&gw, &other] {
        let logs = g.logs();
        assert!(
            !logs.contains("NOPERM"),
            "a command the rule does not allow:\n{logs}"
        );
        assert!(!logs.contains("panicked"), "{logs}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_certificate_from_another_ca_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (redis, _good_ca) = tls_redis(dir.path());
    let (wrong_ca, _, _) = make_certificates(dir.path(), "wrong");
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&tls_config(redis.port, upstream.addr(), &wrong_ca)).await;

    // Logins answer 503 (never a 500) ...
    let resp = login_json_response(&gw, "alice", "alice-password", None).await;
    assert_eq!(resp.status(), 503);
    // ... and the log says why, naming the certificate problem.
    let logs = poll_until(
        "a certificate error in the log",
        Duration::from_secs(10),
        || gw.logs(),
        |l| l.contains("invalid peer certificate"),
    )
    .await;
    assert!(logs.contains("UnknownIssuer"), "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
}

/// A primary, one replica and three sentinels watching them (failover about 2 s after the
/// primary dies).
struct SentinelSet {
    primary: RedisProcess,
    replica: RedisProcess,
    sentinels: Vec<RedisProcess>,
}

const MASTER: &str = "gwmaster";

fn sentinel_set(dir: &Path) -> SentinelSet {
    let plain = |port: u16, name: &str, extra: &[String]| {
        let data = dir.join(name);
        fs::create_dir_all(&data).unwrap();
        let mut args = server_args(port, &data);
        args.extend_from_slice(extra);
        RedisProcess::spawn(dir, name, port, &args)
    };
    let primary_port = free_port();
    let primary = plain(primary_port, "primary", &[]);
    let replica_port = free_port();
    let replica = plain(
        replica_port,
        "replica",
        &[
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary_port.to_string(),
        ],
    );
    let sentinels = (0..3)
        .map(|i| {
            let port = free_port();
            let conf = dir.join(format!("sentinel{i}.conf"));
            fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} 5000\n",
                    dir.display()
                ),
            )
            .unwrap();
            RedisProcess::spawn(
                dir,
                &format!("sentinel{i}"),
                port,
                &[conf.display().to_string(), "--sentinel".to_string()],
            )
        })
        .collect();
    SentinelSet {
        primary,
        replica,
        sentinels,
    }
}

fn sentinel_config(set: &SentinelSet, upstream: std::net::SocketAddr) -> TestConfig {
    let cfg = TestConfig::new("redis://unused", upstream);
    let sentinels: Vec<String> = set
        .sentinels
        .iter()
        .map(|s| format!("\"127.0.0.1:{}\"", s.port))
        .collect();
    cfg.replace(
        "url = \"redis://unused\"",
        &format!(
            "sentinels = [{}]\nsentinel_master = \"{MASTER}\"\nwait_replicas = 1\nwait_timeout = \"1s\"",
            sentinels.join(", ")
        ),
    )
}

/// Waits until the replica has caught up with the primary (so `WAIT 1` can be satisfied).
fn wait_for_replica(set: &SentinelSet) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let url = format!("redis://127.0.0.1:{}/", set.primary.port);
    loop {
        let info: String = redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("INFO").arg("replication").query(&mut c))
            .unwrap_or_default();
        if info.contains("connected_slaves:1") && info.contains("state=online") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replica never came online:\n{info}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sentinel_failover_under_load_loses_no_session_and_revives_no_revoked_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = sentinel_set(dir.path());
    wait_for_replica(&set);
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&sentinel_config(&set, upstream.addr())).await;
    // A second instance with its validation cache on (the default), to see that its cache
    // follows the failover.
    let other = Gateway::start(&sentinel_config(&set, upstream.addr())).await;

    let alice = login_alice(&gw).await;
    let alice_elsewhere = login_alice(&gw).await;
    assert_eq!(
        get_with_cookie(&other, "/app/x", &alice_elsewhere)
            .await
            .status(),
        200
    );
    let bob = login_json_response(&gw, "bob", "bob-password", None).await;
    let bob = session_cookie_or_panic(bob, &gw, "bob").await;
    // Revoked just before the primary dies: with wait_replicas = 1 the logout answers 200 only
    // once the replica has the deletion.
    let resp = logout_json(&gw, "/logout", &bob).await;
    assert_eq!(resp.status(), 200);

    let statuses = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let looper = {
        let (statuses, stop, url, alice) = (
            statuses.clone(),
            stop.clone(),
            gw.url("/app/x"),
            alice.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status = client()
                    .get(&url)
                    .header("accept", "application/json")
                    .header("cookie", session_cookie_header(&alice))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                statuses.lock().unwrap().push(status);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    set.primary.kill();
    let killed = Instant::now();
    // The same session is back, through the promoted replica.
    let back = loop {
        let last = statuses.lock().unwrap().last().copied();
        let seen_503 = statuses.lock().unwrap().contains(&503);
        if seen_503 && last == Some(200) {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "alice's session not back; statuses {:?}\n{}",
            statuses.lock().unwrap(),
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    looper.await.unwrap();
    let statuses = statuses.lock().unwrap().clone();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "only 200 and 503 during the failover: {statuses:?}"
    );
    assert!(back < Duration::from_secs(10), "back after {back:?}");
    // Bob's revocation survived the failover.
    assert_eq!(get_with_cookie(&gw, "/app/x", &bob).await.status(), 401);
    // The other instance's cache tracks the new primary: it serves alice's second session
    // (from Redis or its cache) and sees it ended on the first instance.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_with_cookie(&other, "/app/x", &alice_elsewhere)
        .await
        .status()
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "the other instance never recovered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..3 {
        assert_eq!(
            get_with_cookie(&other, "/app/x", &alice_elsewhere)
                .await
                .status(),
            200
        );
    }
    assert_eq!(get_with_cookie(&other, "/app/x", &bob).await.status(), 401);
    let metrics = metrics_text(&other).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gateway_session_cache_flushes_total") && !l.ends_with(" 0")),
        "the failover emptied the cache: {metrics}"
    );
    // New logins need a replica to confirm them (wait_replicas = 1): the old primary comes back
    // and the sentinels make it the new primary's replica; then logins work again.
    set.primary.restart(dir.path(), "primary");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let again = login_json_response(&gw, "alice", "alice-password", None).await;
        if again.status() == 200 {
            break;
        }
        assert_eq!(
            again.status(),
            503,
            "a login is refused only as unavailable"
        );
        assert!(
            Instant::now() < deadline,
            "no login after the old primary returned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A revocation on the new primary reaches the other instance's cache.
    let resp = logout_json(&gw, "/logout", &alice_elsewhere).await;
    assert_eq!(resp.status(), 200);
    assert_refused(
        &other,
        &alice_elsewhere,
        "ended on the first instance after the failover",
    )
    .await;
    assert!(!gw.logs().contains("panicked"));
    assert!(!other.logs().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_no_replica_confirmed_is_reported_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let set = sentinel_set(dir.path());
    wait_for_replica(&set);
    let upstream = Upstream::start().await;
    // One server by URL: WAIT works the same without Sentinel.
    let url = format!("redis://127.0.0.1:{}/0", set.primary.port);
    let cfg = TestConfig::new(&url, upstream.addr()).replace(
        &format!("url = \"{url}\""),
        &format!("url = \"{url}\"\nwait_replicas = 1\nwait_timeout = \"300ms\""),
    );
    let gw = Gateway::start(&with_admin_token(cfg)).await;
    let alice = login_alice(&gw).await;
    let other = login_alice(&gw).await;
    let handle = handle_of(&gw, &other).await;

    set.replica.signal("-STOP");
    let logout = logout_json(&gw, "/logout", &alice).await;
    let (admin_status, admin_body) = admin_request(
        &gw,
        reqwest::Method::DELETE,
        &format!("/sessions/{handle}"),
        Some(ADMIN_TOKEN),
    )
    .await;
    let login = login_json_response(&gw, "bob", "bob-password", None).await;
    set.replica.signal("-CONT");
    assert_eq!(
        logout.status(),
        503,
        "an unconfirmed logout is not reported as done"
    );
    assert_eq!(admin_status, 503, "{admin_body}");
    assert_eq!(
        login.status(),
        503,
        "an unconfirmed session is not handed out"
    );

    // With the replica back, writes are confirmed again.
    wait_for_replica(&set);
    let login = login_json_response(&gw, "bob", "bob-password", None).await;
    let bob = session_cookie_or_panic(login, &gw, "bob").await;
    let logout = logout_json(&gw, "/logout", &bob).await;
    assert_eq!(logout.status(), 200);
}
