//! `gateway check-config`: a valid file passes; every problem of a broken file
//! is reported with its line; nothing ever panics.

use std::fs;
use std::time::Duration;

use crate::support::*;

fn check(path: &std::path::Path) -> (Option<i32>, String, String) {
    let out = run_gateway_cli(&["check-config", "--config", path.to_str().unwrap()], None);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_no_panic(stderr: &str) {
    assert!(
        !stderr.contains("panicked"),
        "the gateway panicked:\n{stderr}"
    );
}

fn valid_config_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TestConfig::new(
        "redis://127.0.0.1:6379/0",
        "127.0.0.1:5001".parse().unwrap(),
    );
    let path = cfg.write_to(dir.path());
    (dir, path)
}

#[test]
fn valid_config_passes() {
    let (_dir, path) = valid_config_dir();
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("config OK"), "stdout: {stdout}");
    assert!(
        stdout.contains("gateway.toml"),
        "stdout does not name the file: {stdout}"
    );
}

#[test]
fn the_example_from_the_contract_passes() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("users.toml"), default_users_toml()).unwrap();
    let path = dir.path().join("gw.toml");
    fs::write(
        &path,
        r#"[server]
listen = "127.0.0.1:18080"
admin_listen = "127.0.0.1:19090"
threads = 2
trusted_proxies = []
grace_period = "1s"
shutdown_timeout = "1s"

[upstream]
servers = ["127.0.0.1:5001"]
connect_timeout = "2s"
read_timeout = "60s"

[redis]
url = "redis://127.0.0.1:6379/0"
key_prefix = "whalefall:"
timeout = "200ms"
connect_timeout = "500ms"

[session]
cookie_name = "gateway_session"
secret = "0123456789abcdef0123456789abcdef"
idle_timeout = "30m"
absolute_timeout = "8h"
cookie_secure = false

[login]
path = "/login"
logout_path = "/logout"
users_file = "users.toml"

[access]
public = ["/static/", "/favicon.ico"]
"#,
    )
    .unwrap();
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
}

/// Line numbers below are 1-based positions in this text.
const BROKEN: &str = r#"[server]
listen = "not-an-address"
admin_listen = "127.0.0.1:19090"
threads = "two"

[upstream]
servers = ["127.0.0.1:5001"]

[redis]
url = "redis://127.0.0.1:6379/0"

[session]
secret = "too-short"
idle_timout = "30m"
absolute_timeout = "30 minutes"

[login]
users_file = "users.toml"

[bogus]
enabled = true
"#;

/// (acceptable lines, word the message line must contain, description)
const BROKEN_PROBLEMS: &[(&[usize], &str, &str)] = &[
    (&[2], "listen", "bad listen address"),
    (&[4], "threads", "wrong type"),
    (&[13], "secret", "secret shorter than 32 bytes"),
    (&[14], "idle_timout", "misspelled key"),
    (&[15], "absolute_timeout", "bad duration"),
    (&[20, 21], "bogus", "unknown section"),
];

#[test]
fn broken_config_reports_every_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("users.toml"), default_users_toml()).unwrap();
    let path = dir.path().join("gateway.toml");
    fs::write(&path, BROKEN).unwrap();

    let (code, stdout, stderr) = check(&path);
    assert_no_panic(&stderr);
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(!stdout.contains("config OK"), "stdout: {stdout}");

    let mut missing = Vec::new();
    for (lines, word, what) in BROKEN_PROBLEMS {
        let found = stderr.lines().any(|l| {
            l.contains(word)
                && lines
                    .iter()
                    .any(|n| l.contains(&format!("gateway.toml:{n}:")))
        });
        if !found {
            missing.push(format!("{what} (line {lines:?}, mentioning `{word}`)"));
        }
    }
    assert!(
        missing.is_empty(),
        "not reported:\n  {}\nstderr:\n{stderr}",
        missing.join("\n  ")
    );
}

#[test]
fn misspelled_key_gets_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("users.toml"), default_users_toml()).unwrap();
    let path = dir.path().join("gateway.toml");
    fs::write(&path, BROKEN).unwrap();
    let (_, _, stderr) = check(&path);
    let line = stderr
        .lines()
        .find(|l| l.contains("idle_timout"))
        .unwrap_or_else(|| panic!("idle_timout not reported:\n{stderr}"));
    assert!(line.contains("idle_timeout"), "no suggestion in: {line}");
}

#[test]
fn toml_syntax_error_reports_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:18080\"\nthreads = 2\n\nadmin_listen = \"127.0.0.1:19090\n\n[redis]\nurl = \"redis://127.0.0.1/0\"\n",
    )
    .unwrap();
    let (code, _, stderr) = check(&path);
    assert_no_panic(&stderr);
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("gateway.toml:5") || stderr.contains("line 5"),
        "the unterminated string on line 5 is not located:\n{stderr}"
    );
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("does-not-exist.toml");
    let (code, stdout, stderr) = check(&path);
    assert_no_panic(&stderr);
    assert_ne!(code, Some(0), "stdout: {stdout}");
    assert!(code.is_some(), "killed by a signal");
    assert!(
        stderr.contains("does-not-exist.toml"),
        "error does not name the file:\n{stderr}"
    );
}

#[test]
fn empty_config_file_is_rejected_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    fs::write(&path, "").unwrap();
    let (code, _, stderr) = check(&path);
    assert_no_panic(&stderr);
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(!stderr.trim().is_empty());
}

#[test]
fn missing_users_file_is_reported() {
    let (dir, path) = valid_config_dir();
    fs::remove_file(dir.path().join("users.toml")).unwrap();
    let (code, _, stderr) = check(&path);
    assert_no_panic(&stderr);
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(stderr.contains("users"), "{stderr}");
}

#[test]
fn run_refuses_to_start_with_a_broken_config() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("users.toml"), default_users_toml()).unwrap();
    let path = dir.path().join("gateway.toml");
    fs::write(&path, BROKEN).unwrap();
    let mut child = std::process::Command::new(gateway_bin())
        .args(["run", "--config", path.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("gateway run kept running with a broken config");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_no_panic(&stderr);
    assert!(!status.success());
    assert!(
        stderr.contains("idle_timout"),
        "problems not reported:\n{stderr}"
    );
}

/// A users-file hash whose cost would stall or crash the gateway on one unauthenticated login
/// is refused by check-config (and so by `run`), at its line, with the limit.
#[test]
fn absurd_hash_costs_in_the_users_file_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TestConfig::new(
        "redis://127.0.0.1:6379/0",
        "127.0.0.1:5001".parse().unwrap(),
    )
    .users(&format!(
        "[[users]]\nusername = \"ok\"\nid = \"1\"\npassword_hash = {}\n\n\
         [[users]]\nusername = \"slow\"\nid = \"2\"\npassword_hash = \"$2b$31${}\"\n",
        toml_str(&argon2_hash("pw")),
        "a".repeat(53)
    ));
    let path = cfg.write_to(dir.path());
    let (code, stdout, stderr) = check(&path);
    assert_no_panic(&stderr);
    assert_ne!(code, Some(0), "stdout: {stdout}");
    assert!(
        stderr.contains("users.toml:9") && stderr.contains("bcrypt cost 31"),
        "stderr: {stderr}"
    );
}

/// A port another program holds is an operator's mistake to hear about at once, not a gateway
/// that retries binding forever.
#[test]
fn an_occupied_port_stops_run_at_once_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TestConfig::new(
        "redis://127.0.0.1:6379/0",
        "127.0.0.1:5001".parse().unwrap(),
    );
    cfg.listen_port = port;
    let path = cfg.write_to(dir.path());
    let mut child = std::process::Command::new(gateway_bin())
        .args(["run", "--config", path.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the gateway kept running on an occupied port");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains(&format!(
            "[server] listen: cannot listen on 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
    drop(taken);
}

/// `run` resolves its upstreams once at start-up; a name that does not resolve is reported by
/// check-config with its line, and `run` refuses it with the same words.
#[test]
fn an_upstream_name_that_does_not_resolve_is_refused_by_both() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TestConfig::new(
        "redis://127.0.0.1:6379/0",
        "127.0.0.1:5001".parse().unwrap(),
    );
    cfg = cfg.replace("\"127.0.0.1:5001\"", "\"no-such-host.invalid:5001\"");
    let path = cfg.write_to(dir.path());
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(1), "{stderr}");
    let line = fs::read_to_string(&path)
        .unwrap()
        .lines()
        .position(|l| l.contains("no-such-host"))
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!(
            ":{line}: [upstream] servers: `no-such-host.invalid:5001` cannot be resolved"
        )),
        "{stderr}"
    );
    let out = run_gateway_cli(&["run", "--config", path.to_str().unwrap()], None);
    assert!(!out.status.success());
    let run_err = String::from_utf8_lossy(&out.stderr);
    assert!(run_err.contains("cannot be resolved"), "{run_err}");
    assert_no_panic(&run_err);
}
