//! Redis beyond one plain server: TLS with the operator's CA and the minimal ACL user the README
//! gives, and a primary found through Sentinel that is found again after a failover. Every
//! server is a real `redis-server` (or `redis-server --sentinel`) on free ports.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::session_helpers::*;
use crate::support::*;

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

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`{name}-ca.pem`) and a server certificate it signed for 127.0.0.1
/// (`{name}-server.pem`, `{name}-server.key`), all absolute paths.
fn make_certificates(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.pem");
    let key = format!("{name}-server.key");
    let csr = format!("{name}-server.csr");
    let cert = format!("{name}-server.pem");
    let ext = format!("{name}-ext.cnf");
    fs::write(dir.join(&ext), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(dir, &["genrsa", "-out", &ca_key, "2048"]);
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &ca_key,
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} test CA"),
            "-out",
            &ca,
        ],
    );
    openssl(dir, &["genrsa", "-out", &key, "2048"]);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            "/CN=127.0.0.1",
            "-out",
            &csr,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    );
    (dir.join(ca), dir.join(cert), dir.join(key))
}

const PREFIX: &str = "tlsgw:";
const ACL_USER: &str = "gateway";
const ACL_PASSWORD: &str = "acl-password-for-tests-9f2c";

/// A TLS-only Redis whose default user is off and whose one user has the minimal rule.
fn tls_redis(dir: &Path) -> (RedisProcess, PathBuf) {
    let (ca, cert, key) = make_certificates(dir, "good");
    let port = free_port();
    let mut args: Vec<String> = [
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--tls-auth-clients",
        "no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([
        "--tls-port".to_string(),
        port.to_string(),
        "--tls-cert-file".to_string(),
        cert.display().to_string(),
        "--tls-key-file".to_string(),
        key.display().to_string(),
        "--tls-ca-cert-file".to_string(),
        ca.display().to_string(),
        "--dir".to_string(),
        dir.display().to_string(),
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
    let resp = client()
        .post(gw.url("/logout"))
        .header("accept", "application/json")
        .header("cookie", session_cookie_header(&cookie))
        .send()
        .await
        .unwrap();
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
        |l| l.to_ascii_lowercase().contains("certificate"),
    )
    .await;
    assert!(!logs.contains("panicked"), "{logs}");
}
