//! SIGHUP reloads the users file and the login template without dropping a connection: a good
//! pair is put in force together, a broken one (either file) leaves both old ones in force with
//! the problem logged at its line, and every reload is audited and counted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::session_helpers::*;
use crate::support::*;

const PREFIX: &str = "whalefall:";
const OLD_PAGE: &str = "Old sign-in page of ACME";
const NEW_PAGE: &str = "New sign-in page of ACME";

fn template(heading: &str) -> String {
    format!(
        "<!doctype html><html><body><h1>{heading}</h1>{{{{error}}}}\n\
         <form method=\"post\" action=\"{{{{action}}}}\">\n\
         <input type=\"hidden\" name=\"csrf_token\" value=\"{{{{csrf_token}}}}\">\n\
         <input type=\"hidden\" name=\"next\" value=\"{{{{next}}}}\">\n\
         <input name=\"username\" value=\"{{{{username}}}}\"><input type=\"password\" name=\"password\">\n\
         </form></body></html>\n"
    )
}

/// A gateway with alice, bob and carol in its users file, the old login template, and user
/// refreshes on every request.
struct Site {
    s: Stack,
    template: PathBuf,
    _template_dir: tempfile::TempDir,
}

impl Site {
    async fn start() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let template_path = dir.path().join("login.html");
        std::fs::write(&template_path, template(OLD_PAGE)).unwrap();
        let login_lines = format!(
            "users_file = \"users.toml\"\ntemplate = {}\nrefresh_interval = \"0s\"",
            toml_str(template_path.to_str().unwrap())
        );
        let s = Stack::start_with(move |c| c.replace("users_file = \"users.toml\"", &login_lines))
            .await;
        Site {
            s,
            template: template_path,
            _template_dir: dir,
        }
    }

    fn gw(&self) -> &Gateway {
        &self.s.gw
    }

    fn users_file(&self) -> PathBuf {
        self.gw().dir().join("users.toml")
    }

    fn write_users(&self, text: &str) {
        std::fs::write(self.users_file(), text).unwrap();
    }

    fn write_template(&self, text: &str) {
        std::fs::write(&self.template, text).unwrap();
    }

    fn hangup(&self) {
        let pid = self.gw().pid().expect("the gateway is running");
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP {pid} failed");
    }

    /// `gateway_config_reloads_total{result}` as the admin listener reports it now.
    async fn reloads(&self, result: &str) -> u64 {
        let sample = format!("gateway_config_reloads_total{{result=\"{result}\"}}");
        metric(self.gw(), &sample).await as u64
    }

    /// Waits until the gateway has counted `n` reloads with `result`.
    async fn wait_for_reloads(&self, result: &str, n: u64) {
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            let now = self.reloads(result).await;
            if now >= n {
                assert_eq!(now, n, "more {result} reloads than SIGHUPs");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {result} reload #{n} counted; logs:\n{}",
                self.gw().logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn can_log_in(&self, user: &str, password: &str) -> bool {
        login_json(self.gw(), user, password).await.is_some()
    }

    async fn login_page(&self) -> String {
        let page = get_login_page(self.gw(), "").await;
        assert_eq!(page.status, 200);
        page.html
    }

    /// The reasons of the `config_reloaded` events in the security trail, once there are `n`.
    async fn reload_reasons(&self, n: usize) -> Vec<String> {
        let events = poll_until(
            "config_reloaded events in the audit stream",
            READY_TIMEOUT,
            || security_stream_events(&self.s.redis, PREFIX),
            |events| events_named(events, "config_reloaded").len() >= n,
        )
        .await;
        events_named(&events, "config_reloaded")
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// What the gateway wrote to stderr (its log).
    fn log(&self) -> String {
        std::fs::read_to_string(self.gw().dir().join("stderr.log")).unwrap_or_default()
    }
}

/// alice with a new password, bob gone, carol as before, dave new.
fn edited_users() -> String {
    user_entry(
        "alice",
        "1",
        &argon2_hash("alice-new-password"),
        &["admin", "user"],
        false,
    ) + &user_entry(
        "carol",
        "3",
        &argon2_hash("carol-password"),
        &["user"],
        true,
    ) + &user_entry("dave", "4", &argon2_hash("dave-password"), &["user"], false)
}

/// Every `password_hash` value in a users file: none may reach the log or the audit trail.
fn password_hashes(users_toml: &str) -> Vec<String> {
    users_toml
        .lines()
        .filter_map(|l| l.strip_prefix("password_hash = "))
        .map(|quoted| quoted.trim_matches('"').to_string())
        .collect()
}

/// A client's one connection, kept alive across requests.
struct KeepAlive {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    host: String,
}

impl KeepAlive {
    fn open(gw: &Gateway) -> KeepAlive {
        let stream = TcpStream::connect(gw.host()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        KeepAlive {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
            host: gw.host(),
        }
    }

    /// One request on the connection; the answer's status and body. Panics if the gateway
    /// closed the connection or announced it would.
    fn get(&mut self, path: &str) -> (u16, String) {
        write!(
            self.writer,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n\r\n",
            self.host
        )
        .expect("send on the kept-alive connection");
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        assert!(
            status_line.starts_with("HTTP/1.1 "),
            "the connection was closed or answered garbage: {status_line:?}"
        );
        let status = status_line[9..12].parse().unwrap();
        let mut length = None;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = Some(value.parse::<usize>().unwrap()),
                "connection" => assert!(
                    !value.eq_ignore_ascii_case("close"),
                    "the gateway closes the connection: {line}"
                ),
                _ => {}
            }
        }
        let mut body = vec![0; length.expect("a Content-Length")];
        self.reader.read_exact(&mut body).unwrap();
        (status, String::from_utf8(body).unwrap())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_puts_edited_users_and_template_in_force_without_dropping_a_connection() {
    let site = Site::start().await;
    let mut connection = KeepAlive::open(site.gw());
    assert_eq!(connection.get("/_gateway/health").0, 200);
    let bob = login_json(site.gw(), "bob", "bob-password")
        .await
        .expect("bob logs in before the reload");
    assert_eq!(get_with_cookie(site.gw(), "/app", &bob).await.status(), 200);
    assert!(site.login_page().await.contains(OLD_PAGE));

    site.write_users(&edited_users());
    site.write_template(&template(NEW_PAGE));
    site.hangup();
    site.wait_for_reloads("ok", 1).await;

    assert!(site.can_log_in("dave", "dave-password").await, "added");
    assert!(site.can_log_in("alice", "alice-new-password").await);
    assert!(
        !site.can_log_in("alice", "alice-password").await,
        "the old password"
    );
    assert!(!site.can_log_in("bob", "bob-password").await, "removed");
    let page = site.login_page().await;
    assert!(
        page.contains(NEW_PAGE) && !page.contains(OLD_PAGE),
        "{page}"
    );
    assert_eq!(
        connection.get("/_gateway/health"),
        (200, "{\"status\":\"ok\"}".to_string()),
        "the connection opened before the reload still answers"
    );
    // Removed from the file: bob's live session ends at its next refresh (every request here).
    assert_eq!(get_with_cookie(site.gw(), "/app", &bob).await.status(), 401);
    let ended = poll_until(
        "bob's session_ended",
        READY_TIMEOUT,
        || security_stream_events(&site.s.redis, PREFIX),
        |events| !events_named(events, "session_ended").is_empty(),
    )
    .await;
    let ended = events_named(&ended, "session_ended");
    assert_eq!(
        (&ended[0]["username"], &ended[0]["reason"]),
        (&Value::from("bob"), &Value::from("user_removed"))
    );

    let users_file = site.users_file().display().to_string();
    let reasons = site.reload_reasons(1).await;
    assert_eq!(
        reasons,
        [format!(
            "ok: reloaded users_file {users_file} (3 users, changed), template {} (changed)",
            site.template.display()
        )]
    );
    assert_eq!(site.reloads("failed").await, 0);
    assert!(site.log().contains("SIGHUP: reloaded users_file"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_users_file_keeps_the_old_users_until_it_is_fixed() {
    let site = Site::start().await;
    let broken = "[[users]]\nusername = \"alice\"\npassword_hash = \"alice-in-plain-text\"\n\
                  id = \"1\"\n\n"
        .to_string()
        + &edited_users();
    site.write_users(&broken);
    site.hangup();
    site.wait_for_reloads("failed", 1).await;

    assert!(site.can_log_in("alice", "alice-password").await);
    assert!(site.can_log_in("bob", "bob-password").await);
    assert!(!site.can_log_in("dave", "dave-password").await);
    let users_file = site.users_file().display().to_string();
    let log = site.log();
    let error = log
        .lines()
        .find(|l| l.contains("reload failed"))
        .unwrap_or_else(|| panic!("no error logged:\n{log}"));
    assert!(error.contains("ERROR"), "{error}");
    assert!(
        error.contains(&format!(
            "{users_file}:3: password_hash: unrecognised hash format"
        )),
        "{error}"
    );
    for secret in password_hashes(&broken) {
        assert!(!log.contains(&secret), "{secret} in the log:\n{log}");
    }
    let reasons = site.reload_reasons(1).await;
    assert_eq!(
        reasons,
        [format!("failed: {users_file}:3; nothing reloaded")]
    );

    site.write_users(&edited_users());
    site.hangup();
    site.wait_for_reloads("ok", 1).await;
    assert!(site.can_log_in("dave", "dave-password").await);
    assert!(!site.can_log_in("bob", "bob-password").await);
    assert_eq!(site.reloads("failed").await, 1);
    let reasons = site.reload_reasons(2).await;
    assert!(
        reasons[1].starts_with("ok: reloaded users_file"),
        "{reasons:?}"
    );
    let trail = stream_lines(&site.s.redis, PREFIX).join("\n");
    for secret in password_hashes(&broken) {
        assert!(
            !trail.contains(&secret),
            "{secret} in the audit trail:\n{trail}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_template_keeps_the_old_page_and_the_old_users() {
    let site = Site::start().await;
    site.write_users(&edited_users());
    site.write_template("<html><body>\n<h1>{% if %}</h1>\n</body></html>\n");
    site.hangup();
    site.wait_for_reloads("failed", 1).await;

    assert!(site.login_page().await.contains(OLD_PAGE));
    assert!(
        site.can_log_in("bob", "bob-password").await,
        "all or nothing"
    );
    assert!(!site.can_log_in("dave", "dave-password").await);
    let log = site.log();
    let template = site.template.display().to_string();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains(&format!(
                "[login] template: `{template}`: line 2: syntax error"
            ))),
        "{log}"
    );
    assert_eq!(
        site.reload_reasons(1).await,
        ["failed: [login] template; nothing reloaded"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_survives_sighups_in_a_row_and_keeps_serving() {
    let site = Site::start().await;
    let mut connection = KeepAlive::open(site.gw());
    assert_eq!(connection.get("/_gateway/health").0, 200);
    for _ in 0..5 {
        site.hangup();
    }
    // Signals that arrive together may be handled as one: at least one reload, none failed.
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    while site.reloads("ok").await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload after 5 SIGHUPs; logs:\n{}",
            site.gw().logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(site.reloads("failed").await, 0);
    assert_eq!(connection.get("/_gateway/health").0, 200);
    assert!(site.can_log_in("alice", "alice-password").await);
    let mut site = site;
    assert!(
        site.s.gw.wait_exit(Duration::ZERO).is_none(),
        "the gateway is still running"
    );
}
