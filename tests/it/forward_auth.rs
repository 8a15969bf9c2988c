//! The forward-auth endpoint behind a real nginx (`auth_request`) and a real Caddy
//! (`forward_auth`), each in front of the echo app, with the configs from
//! `config/forward-auth/` as the README shows them (only the addresses replaced): a signed-out
//! browser is sent to the gateway's login page, a signed-in one reaches the app with the
//! gateway's identity, and identity headers the client spoofs never reach the app.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const SNIPPET_GATEWAY: &str = "127.0.0.1:8080";
const SNIPPET_APP: &str = "127.0.0.1:5001";

/// A proxy process, killed on drop.
struct ProxyProcess(Child);

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(child: &Child, port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !listening_ports(child.id()).contains(&port) {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port}:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn snippet(name: &str, gateway: &Gateway, app: std::net::SocketAddr) -> String {
    fs::read_to_string(format!("config/forward-auth/{name}"))
        .unwrap()
        .replace(SNIPPET_GATEWAY, &gateway.host())
        .replace(SNIPPET_APP, &app.to_string())
}

fn start_nginx(
    dir: &Path,
    port: u16,
    gateway: &Gateway,
    app: std::net::SocketAddr,
) -> ProxyProcess {
    let server = snippet("nginx.conf", gateway, app)
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
    let d = dir.display();
    // One process, no master: the test's `kill` (SIGKILL) then stops all of nginx, where a
    // killed master would leave its worker running, still holding the port.
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
         events {{}}\nhttp {{\naccess_log off;\nclient_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\nfastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\n\
         scgi_temp_path {d}/scgi;\n{server}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    fs::write(&path, conf).unwrap();
    let log = dir.join("nginx-error.log");
    let child = Command::new(nginx_bin())
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("nginx-stderr.log")).unwrap())
        .spawn()
        .expect("spawn nginx");
    wait_listening(&child, port, "nginx", &log);
    ProxyProcess(child)
}

fn nginx_bin() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

fn start_caddy(
    dir: &Path,
    port: u16,
    gateway: &Gateway,
    app: std::net::SocketAddr,
) -> ProxyProcess {
    let site = snippet("Caddyfile", gateway, app)
        .replace("app.example.com", &format!("http://127.0.0.1:{port}"));
    let path = dir.join("Caddyfile");
    fs::write(&path, format!("{{\n\tadmin off\n}}\n{site}")).unwrap();
    let log = dir.join("caddy.log");
    let child = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&path)
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdout(fs::File::create(&log).unwrap())
        .stderr(fs::File::create(dir.join("caddy-stderr.log")).unwrap())
        .spawn()
        .expect("spawn caddy");
    wait_listening(&child, port, "caddy", &dir.join("caddy-stderr.log"));
    ProxyProcess(child)
}

/// The same scenario through either proxy at `front` (its origin, e.g. http://127.0.0.1:P).
async fn signed_out_then_in_with_spoofing(front: &str, upstream: &Upstream) {
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let spoofed = [
        ("X-Auth-User", "mallory"),
        ("x-auth-user-id", "0"),
        ("X-AUTH-ROLES", "admin"),
        ("X-Auth-Assertion", "v1;t=0;sig=00"),
        ("X_Auth_User", "mallory"),
        ("x_auth_roles", "admin"),
    ];
    let with_spoofs = |req: reqwest::RequestBuilder| {
        spoofed
            .iter()
            .fold(req, |req, (name, value)| req.header(*name, *value))
    };

    // Signed out: a navigation goes to the gateway's login page, back to where it was going.
    let before = upstream.request_count();
    let resp = with_spoofs(
        no_redirects
            .get(format!("{front}/reports/q?year=2026"))
            .header("accept", "text/html"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 302);
    // nginx makes the redirect absolute (its `absolute_redirect`), Caddy keeps it relative.
    let location = resp.headers()["location"].to_str().unwrap();
    let login_next = "/login?next=%2Freports%2Fq%3Fyear%3D2026";
    assert!(
        location == login_next || location == format!("{front}{login_next}"),
        "{location}"
    );
    assert_eq!(upstream.request_count(), before, "nothing reached the app");

    // The login page and the login itself are the gateway's, through the proxy.
    let page = no_redirects
        .get(format!("{front}/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let login = no_redirects
        .post(format!("{front}/login"))
        .header("accept", "application/json")
        .json(&serde_json::json!({"username": "alice", "password": "alice-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200, "{:?}", login.text().await);
    let cookie = cookie_from(&login, COOKIE_NAME).expect("session cookie");

    // Signed in: the app sees the gateway's identity and none of the client's.
    let resp = with_spoofs(
        no_redirects
            .get(format!("{front}/reports/q"))
            .header("cookie", session_cookie_header(&cookie)),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let echo = echo(resp).await;
    assert_eq!(echo.uri, "/reports/q");
    // Every header the app could read as one of the identity headers (any case, `_` as `-`).
    let identity_names = [
        "x-auth-user",
        "x-auth-user-id",
        "x-auth-roles",
        "x-auth-assertion",
    ];
    let mut identity: Vec<(String, String)> = echo
        .x_auth_headers()
        .into_iter()
        .filter(|(k, _)| {
            identity_names.contains(&k.to_ascii_lowercase().replace('_', "-").as_str())
        })
        .collect();
    identity.sort();
    assert_eq!(
        identity,
        vec![
            ("x-auth-roles".to_string(), "admin,user".to_string()),
            ("x-auth-user".to_string(), "alice".to_string()),
            ("x-auth-user-id".to_string(), "1".to_string()),
        ],
        "exactly the gateway's identity headers reach the app"
    );

    // Signed out again (the gateway's logout, through the proxy): refused again.
    let out = no_redirects
        .post(format!("{front}/logout"))
        .header("accept", "application/json")
        .header("cookie", session_cookie_header(&cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
    let resp = no_redirects
        .get(format!("{front}/reports/q"))
        .header("accept", "text/html")
        .header("cookie", session_cookie_header(&cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_auth_request_in_front_of_the_app() {
    let s = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _nginx = start_nginx(dir.path(), port, &s.gw, s.upstream.addr());
    signed_out_then_in_with_spoofing(&format!("http://127.0.0.1:{port}"), &s.upstream).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn caddy_forward_auth_in_front_of_the_app() {
    let s = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _caddy = start_caddy(dir.path(), port, &s.gw, s.upstream.addr());
    signed_out_then_in_with_spoofing(&format!("http://127.0.0.1:{port}"), &s.upstream).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_answers_only_trusted_proxies() {
    // With a trusted_proxies list, a direct client (not on it) cannot ask.
    let s = Stack::start_with(|c| c.trusted_proxies(&["10.9.8.0/24"])).await;
    let cookie = login_alice(&s.gw).await;
    let resp = client()
        .get(s.gw.url("/_gateway/auth"))
        .header("x-original-uri", "/admin")
        .header("cookie", session_cookie_header(&cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get("x-auth-user").is_none());
}

#[test]
fn the_readme_shows_the_snippets_the_tests_use() {
    let readme = fs::read_to_string("README.md").unwrap();
    for name in ["nginx.conf", "Caddyfile"] {
        let text = fs::read_to_string(format!("config/forward-auth/{name}")).unwrap();
        assert!(
            readme.contains(text.trim_end()),
            "README.md does not show config/forward-auth/{name} verbatim"
        );
    }
}
