//! How each `[section]` of the config file is read and checked: defaults, allowed values, and the
//! message an operator sees for each mistake.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::files::{read_login_template, read_users_file, LoginFileError};
use super::reader::Section;
use super::*;
use crate::access::{AccessRule, Requirement};
use crate::auth::users::UserTable;
use crate::env::{Environment, Secret};
use crate::web::request::has_dot_segments;

pub(super) const SECTIONS: &[&str] = &[
    "server", "upstream", "redis", "session", "login", "access", "admin", "audit", "identity",
    "log",
];

pub(super) struct Ctx<'a> {
    pub(super) env: &'a dyn Environment,
    pub(super) base_dir: &'a Path,
}

impl Ctx<'_> {
    fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The text `key` points at: the value of the variable a `…_env` key names, or the
    /// content of the file a `…_file` key names; `None` (and a problem) if there is none.
    fn indirect(&self, s: &Section, key: &str) -> Option<String> {
        let name = s.get::<String>(key)?;
        if key.ends_with("_env") {
            let value = self.env.var(&name);
            if value.is_none() {
                s.problem(key, format!("environment variable `{name}` is not set"));
            }
            value
        } else {
            let path = self.resolve(&name);
            self.env
                .read_file(&path)
                .map_err(|e| s.problem(key, format!("cannot read `{}`: {e}", path.display())))
                .ok()
        }
    }

    /// A secret given as `<key>`, `<key>_env` or `<key>_file` (exactly one of them).
    fn secret(&self, s: &Section, key: &str, required: bool) -> Option<Secret> {
        let env_key = format!("{key}_env");
        let file_key = format!("{key}_file");
        let given: Vec<&str> = [key, env_key.as_str(), file_key.as_str()]
            .into_iter()
            .filter(|k| s.has(k))
            .collect();
        if given.len() > 1 {
            s.problem(given[1], format!("give only one of {}", given.join(", ")));
            given.iter().for_each(|k| {
                let _: Option<toml::Value> = s.get(k);
            });
            return None;
        }
        if let Some(value) = s.get::<String>(key) {
            return Some(Secret::new(value));
        }
        if s.has(&env_key) {
            return match self.indirect(s, &env_key) {
                Some(v) if v.is_empty() => {
                    let var = s.get::<String>(&env_key).unwrap_or_default();
                    s.problem(&env_key, format!("environment variable `{var}` is not set"));
                    None
                }
                v => v.map(Secret::new),
            };
        }
        if s.has(&file_key) {
            // A trailing newline from `echo > file` is never part of the secret.
            return self
                .indirect(s, &file_key)
                .map(|v| Secret::new(v.trim_end_matches(['\n', '\r'])));
        }
        if required && !given.is_empty() {
            return None;
        }
        if required {
            s.problem(key, format!("is required (or `{env_key}` / `{file_key}`)"));
        }
        None
    }
}

fn socket_addr(s: &Section, key: &str, default: &str) -> SocketAddr {
    let fallback = default
        .parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
    s.parse_with(key, |v| {
        v.parse::<SocketAddr>()
            .map_err(|_| format!("`{v}` is not an address: use IP:PORT, e.g. \"0.0.0.0:8080\""))
    })
    .unwrap_or(fallback)
}

pub(super) fn read_server(s: &Section) -> ServerSettings {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = s.integer_in("threads", 1..=1024, cpus);
    let trusted_proxies = s
        .get::<Vec<String>>("trusted_proxies")
        .unwrap_or_default()
        .iter()
        .filter_map(|cidr| match parse_cidr(cidr) {
            Ok(net) => Some(net),
            Err(message) => {
                s.problem("trusted_proxies", message);
                None
            }
        })
        .collect();
    let settings = ServerSettings {
        listen: socket_addr(s, "listen", "0.0.0.0:8080"),
        admin_listen: socket_addr(s, "admin_listen", "127.0.0.1:9090"),
        threads,
        trusted_proxies,
        drain_delay: s.duration("drain_delay", Duration::from_secs(5)),
        grace_period: s.duration("grace_period", Duration::from_secs(10)),
        shutdown_timeout: s.duration("shutdown_timeout", Duration::from_secs(5)),
    };
    if settings.listen == settings.admin_listen {
        s.problem("admin_listen", "must differ from `listen`");
    }
    s.finish(&[
        "listen",
        "admin_listen",
        "threads",
        "trusted_proxies",
        "drain_delay",
        "grace_period",
        "shutdown_timeout",
    ]);
    settings
}

fn parse_cidr(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is not an IP address or CIDR such as \"10.0.0.0/8\""))
}

pub(super) fn read_upstream(s: &Section) -> UpstreamSettings {
    let servers: Vec<String> = match s.required::<Vec<String>>("servers") {
        Some(list) if list.is_empty() => {
            s.problem("servers", "needs at least one upstream address");
            Vec::new()
        }
        Some(list) => list
            .into_iter()
            .filter(|v| {
                // HOST:PORT, no scheme, and a port the gateway can connect to.
                let ok = !v.contains("://")
                    && v.rsplit_once(':').is_some_and(|(host, port)| {
                        !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
                    });
                if !ok {
                    s.problem(
                        "servers",
                        format!("`{v}` is not HOST:PORT, e.g. \"127.0.0.1:5001\" or \"app:5001\""),
                    );
                    return false;
                }
                // `run` resolves every upstream once at start-up and refuses a name that does
                // not resolve; say so here too, from the same place.
                match std::net::ToSocketAddrs::to_socket_addrs(v.as_str()).map(|mut a| a.next()) {
                    Ok(Some(_)) => true,
                    Ok(None) => {
                        s.problem("servers", format!("`{v}` resolves to no address"));
                        false
                    }
                    Err(e) => {
                        s.problem("servers", format!("`{v}` cannot be resolved: {e}"));
                        false
                    }
                }
            })
            .collect(),
        None => Vec::new(),
    };
    let app_session_cookie =
        s.parse_with("app_session_cookie", |v| cookie_name(v).map(str::to_string));
    let strip_cookies = match s.get::<Vec<String>>("strip_cookies") {
        Some(names) => names
            .into_iter()
            .filter(|name| match cookie_name(name) {
                Ok(_) => true,
                Err(message) => {
                    s.problem("strip_cookies", message);
                    false
                }
            })
            .collect(),
        None => vec!["remember_token".to_string()],
    };
    if strip_cookies.len() > 32 {
        s.problem("strip_cookies", "list at most 32 cookies");
    }
    if let Some(app) = &app_session_cookie {
        if strip_cookies.contains(app) {
            s.problem(
                "strip_cookies",
                format!("`{app}` is the app's session cookie (`app_session_cookie`): stripping it would break the app's CSRF checks"),
            );
        }
    }
    let settings = UpstreamSettings {
        servers,
        app_session_cookie,
        strip_cookies,
        connect_timeout: s.duration("connect_timeout", Duration::from_secs(2)),
        read_timeout: s.duration("read_timeout", Duration::from_secs(60)),
        health_check_interval: s.duration("health_check_interval", Duration::from_secs(5)),
    };
    s.finish(&[
        "servers",
        "app_session_cookie",
        "strip_cookies",
        "connect_timeout",
        "read_timeout",
        "health_check_interval",
    ]);
    settings
}

pub(super) fn read_redis(s: &Section, ctx: &Ctx) -> RedisSettings {
    let ways: Vec<&str> = ["url", "sentinels", "cluster_nodes"]
        .into_iter()
        .filter(|k| s.has(k))
        .collect();
    if ways.len() > 1 {
        s.problem(
            ways[1],
            format!(
                "give exactly one way to reach Redis: `url` (one server), `sentinels` (with \
                 `sentinel_master`) or `cluster_nodes`; found {}",
                ways.join(" and ")
            ),
        );
    }
    let url = s
        .parse_with("url", |v| {
            if !(v.starts_with("redis://")
                || v.starts_with("rediss://")
                || v.starts_with("unix://"))
            {
                return Err("must start with redis://, rediss:// or unix://".to_string());
            }
            // The same parse `run` does, so check-config cannot pass what run refuses (a port
            // past 65535, an unclosed `[::1`, a database that is not a number).
            redis::IntoConnectionInfo::into_connection_info(v)
                .map(|_| v.to_string())
                .map_err(|e| format!("`{v}` is not a usable Redis URL: {e}"))
        })
        .unwrap_or_else(|| {
            if ways.is_empty() {
                "redis://127.0.0.1:6379/0".to_string()
            } else {
                String::new()
            }
        });
    let sentinel = read_sentinel(s, ctx);
    let cluster_nodes = read_cluster_nodes(s);
    if sentinel.is_none() {
        let sentinel_only = [
            "sentinel_master",
            "sentinel_password",
            "sentinel_password_env",
            "sentinel_password_file",
            "database",
        ];
        if let Some(key) = sentinel_only.into_iter().find(|k| s.has(k)) {
            let why = if cluster_nodes.is_empty() {
                "only with `sentinels` (a `url` names its own database)"
            } else {
                "only with `sentinels` (a Redis Cluster has database 0 only)"
            };
            s.problem(key, why);
        }
    }
    let username = s.parse_with("username", |v| {
        if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Err(format!("`{v}` is not an ACL user name"))
        } else {
            Ok(v.to_string())
        }
    });
    let password = ctx.secret(s, "password", false);
    let tls = read_redis_tls(s, ctx, url.starts_with("rediss://"));
    let timeout = s.duration("timeout", Duration::from_millis(250));
    if timeout.is_zero() {
        s.problem("timeout", "must be more than zero");
    }
    let wait_replicas = s.integer_in("wait_replicas", 0..=16, 0);
    let wait_timeout = s.duration("wait_timeout", Duration::from_millis(500));
    if wait_replicas > 0 && wait_timeout.is_zero() {
        s.problem(
            "wait_timeout",
            "must be more than zero (0 would wait forever)",
        );
    }
    let settings = RedisSettings {
        url,
        sentinel,
        cluster_nodes,
        username,
        password,
        tls,
        wait_replicas,
        wait_timeout,
        key_prefix: s.get_or("key_prefix", "gateway:".to_string()),
        timeout,
        connect_timeout: s.duration("connect_timeout", Duration::from_secs(1)),
    };
    s.finish(&[
        "url",
        "sentinels",
        "sentinel_master",
        "sentinel_password",
        "sentinel_password_env",
        "sentinel_password_file",
        "database",
        "cluster_nodes",
        "username",
        "password",
        "password_env",
        "password_file",
        "tls",
        "ca_file",
        "cert_file",
        "key_file",
        "wait_replicas",
        "wait_timeout",
        "key_prefix",
        "timeout",
        "connect_timeout",
    ]);
    settings
}

/// A list of `HOST:PORT` addresses under `key`; `example` shows the form in the message.
fn read_addresses(s: &Section, key: &str, what: &str, example: &str) -> Option<Vec<String>> {
    let addresses: Vec<String> = s.get(key)?;
    if addresses.is_empty() {
        s.problem(key, format!("needs at least one {what} address"));
    }
    for address in &addresses {
        let ok = address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
        if !ok {
            s.problem(
                key,
                format!("`{address}` is not HOST:PORT, e.g. \"{example}\""),
            );
        }
    }
    Some(addresses)
}

/// The seed nodes of a Redis Cluster: any reachable one is enough to learn the rest.
fn read_cluster_nodes(s: &Section) -> Vec<String> {
    let nodes =
        read_addresses(s, "cluster_nodes", "cluster node", "10.0.0.1:7000").unwrap_or_default();
    // The same parse `run` does, so check-config cannot pass what run refuses.
    for node in &nodes {
        if let Err(e) = redis::IntoConnectionInfo::into_connection_info(format!("redis://{node}")) {
            s.problem(
                "cluster_nodes",
                format!("`{node}` is not a usable node address: {e}"),
            );
        }
    }
    nodes
}

fn read_sentinel(s: &Section, ctx: &Ctx) -> Option<SentinelSettings> {
    let sentinels = read_addresses(s, "sentinels", "sentinel", "10.0.0.1:26379")?;
    let master = s.required::<String>("sentinel_master").unwrap_or_default();
    let password = ctx.secret(s, "sentinel_password", false);
    let database = i64::from(s.integer_in("database", 0..=u32::from(u16::MAX), 0));
    Some(SentinelSettings {
        sentinels,
        master,
        password,
        database,
    })
}

fn read_redis_tls(s: &Section, ctx: &Ctx, url_says_tls: bool) -> Option<RedisTls> {
    let tls = match s.get::<bool>("tls") {
        Some(false) if url_says_tls => {
            s.problem("tls", "is false, but the url is rediss:// (TLS)");
            false
        }
        Some(wanted) => wanted,
        None => url_says_tls,
    };
    if tls && s.has("url") && !url_says_tls {
        s.problem(
            "tls",
            "with one server, write the url as rediss://… for TLS",
        );
    }
    let read = |key: &str| -> Option<Vec<u8>> {
        let path = s.get::<String>(key)?;
        if !tls {
            s.problem(key, "only with TLS (`tls = true` or a rediss:// url)");
            return None;
        }
        let full = ctx.resolve(&path);
        match ctx.env.read_file(&full) {
            Ok(pem) if pem.contains("-----BEGIN ") => Some(pem.into_bytes()),
            Ok(_) => {
                s.problem(key, format!("`{}` is not a PEM file", full.display()));
                None
            }
            Err(e) => {
                s.problem(key, format!("cannot read `{}`: {e}", full.display()));
                None
            }
        }
    };
    let ca = read("ca_file");
    let client_cert = read("cert_file");
    let client_key = read("key_file").map(Secret::new);
    if client_cert.is_some() != client_key.is_some() {
        let missing = if client_cert.is_some() {
            "key_file"
        } else {
            "cert_file"
        };
        s.problem(missing, "mutual TLS needs both `cert_file` and `key_file`");
    }
    tls.then_some(RedisTls {
        ca,
        client_cert,
        client_key,
    })
}

/// A cookie name the gateway can set and match: a plain token, no quoting games.
fn cookie_name(name: &str) -> Result<&str, String> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Ok(name)
    } else {
        Err(format!(
            "`{name}` is not a cookie name: use only letters, digits, '-', '_' and '.'"
        ))
    }
}

/// The cookie-name prefix browsers tie to Secure, Path=/ and no Domain.
const HOST_PREFIX: &str = "__Host-";

/// Flask's default session cookie name: an app behind the gateway most likely already uses it.
const FLASK_DEFAULT_COOKIE: &str = "session";

pub(super) fn read_session(s: &Section, ctx: &Ctx, upstream: &UpstreamSettings) -> SessionSettings {
    let cookie_name: String = s.get_or("cookie_name", "gateway_session".to_string());
    if let Err(message) = self::cookie_name(&cookie_name) {
        s.problem("cookie_name", message);
    }
    // The app sets its own session cookie on every response it renders a CSRF token into; a
    // gateway cookie of the same name would be overwritten and the user signed out after a page.
    let csrf_cookie = nonce_cookie_name(&cookie_name);
    for ours in [&cookie_name, &csrf_cookie] {
        if ours == FLASK_DEFAULT_COOKIE {
            s.problem(
                "cookie_name",
                format!("`{ours}` is Flask's default session cookie: the app would overwrite the gateway's cookie; use e.g. \"gateway_session\""),
            );
        } else if upstream.app_session_cookie.as_ref() == Some(ours) {
            s.problem(
                "cookie_name",
                format!("`{ours}` is the app's own session cookie ([upstream] app_session_cookie): the app would overwrite the gateway's cookie; use e.g. \"gateway_session\""),
            );
        } else if upstream.strip_cookies.contains(ours) {
            s.problem(
                "cookie_name",
                format!("`{ours}` is listed in [upstream] strip_cookies"),
            );
        }
    }
    let secret = ctx.secret(s, "secret", true);
    if let Some(message) = secret.as_ref().and_then(weak_key) {
        s.problem("secret", message);
    }
    let previous_secrets = read_previous_secrets(s, ctx);
    let idle_timeout = s.duration("idle_timeout", Duration::from_secs(30 * 60));
    let absolute_timeout = s.duration("absolute_timeout", Duration::from_secs(8 * 3600));
    if idle_timeout < Duration::from_secs(1) {
        s.problem("idle_timeout", "must be at least 1s");
    }
    if absolute_timeout < idle_timeout {
        s.problem("absolute_timeout", "must not be shorter than idle_timeout");
    }
    // A twentieth of the idle timeout: the idle clock is then at most 5% early.
    let default_touch = (idle_timeout / 20)
        .max(Duration::from_secs(1))
        .min(idle_timeout);
    let touch_interval = s.duration("touch_interval", default_touch);
    if touch_interval > idle_timeout {
        s.problem("touch_interval", "must not be longer than idle_timeout");
    }
    // Absent means no limit.
    let max_per_user = s.integer_opt("max_per_user", 1..=u32::MAX);
    let on_limit = s
        .parse_with("on_limit", |v| match v {
            "evict_oldest" => Ok(LimitPolicy::EvictOldest),
            "reject" => Ok(LimitPolicy::Reject),
            _ => Err(format!(
                "`{v}` is not a policy: use \"evict_oldest\" or \"reject\""
            )),
        })
        .unwrap_or(LimitPolicy::EvictOldest);
    let cookie_secure = s.get_or("cookie_secure", true);
    // `__Host-`: browsers take such a cookie only if it is Secure, has Path=/ and no Domain,
    // so a sibling subdomain cannot plant one beside ours (cookie tossing).
    let host_prefix = s.get_or("host_prefix", true);
    let cookie_name = if cookie_secure && host_prefix && !cookie_name.starts_with(HOST_PREFIX) {
        format!("{HOST_PREFIX}{cookie_name}")
    } else {
        cookie_name
    };
    let settings = SessionSettings {
        cookie_name,
        secret: secret.unwrap_or_else(|| Secret::new(Vec::new())),
        previous_secrets,
        idle_timeout,
        absolute_timeout,
        touch_interval,
        cookie_secure,
        cache: s.get_or("cache", true),
        cache_entries: s.integer_in("cache_entries", 1..=10_000_000, 100_000),
        max_per_user,
        on_limit,
    };
    s.finish(&[
        "cookie_name",
        "secret",
        "secret_env",
        "secret_file",
        "previous_secrets",
        "previous_secrets_env",
        "previous_secrets_file",
        "idle_timeout",
        "absolute_timeout",
        "touch_interval",
        "cookie_secure",
        "host_prefix",
        "cache",
        "cache_entries",
        "max_per_user",
        "on_limit",
    ]);
    settings
}

fn url_path(s: &Section, key: &str, default: &str) -> String {
    s.parse_with(key, |v| {
        if v.starts_with('/') && !v.starts_with("//") && !v.contains(['?', '#', ' ']) {
            Ok(v.to_string())
        } else {
            Err(format!(
                "`{v}` must be a path starting with '/', e.g. \"{default}\""
            ))
        }
    })
    .unwrap_or_else(|| default.to_string())
}

pub(super) fn read_login(s: &Section, ctx: &Ctx) -> LoginSettings {
    let users_file = s.get::<String>("users_file").map(|p| ctx.resolve(&p));
    // Read and checked here: `check-config` reports the users file's mistakes (each at its own
    // line in that file) and the gateway starts with the table parsed here. A reload (SIGHUP)
    // reads it again through the same `files::read_users_file`.
    let users = match users_file
        .as_deref()
        .map(|path| read_users_file(path, ctx.env))
    {
        Some(Ok(table)) => table,
        Some(Err(e)) => {
            report_login_file(s, e);
            UserTable::default()
        }
        None => UserTable::default(),
    };
    let database = s.section("database").map(|db| read_database(&db, ctx));
    if users_file.is_none() && database.is_none() {
        s.problem(
            "users_file",
            "is required unless [login.database] is set: where the gateway finds its users",
        );
    }
    let template_file = s.get::<String>("template").map(|p| ctx.resolve(&p));
    let template =
        template_file
            .as_deref()
            .and_then(|path| match read_login_template(path, ctx.env) {
                Ok(text) => Some(text),
                Err(e) => {
                    report_login_file(s, e);
                    None
                }
            });
    let throttle = ThrottleSettings {
        max_failures_per_user: s.integer_or_off("max_failures_per_user", 1..=u32::MAX, Some(10)),
        max_failures_per_ip: s.integer_or_off("max_failures_per_ip", 1..=u32::MAX, Some(50)),
        window: s.duration("failure_window", Duration::from_secs(15 * 60)),
    };
    if throttle.window < Duration::from_secs(1) {
        s.problem("failure_window", "must be at least 1s");
    }
    let path = url_path(s, "path", "/login");
    let logout_path = url_path(s, "logout_path", "/logout");
    let forward_auth_path = url_path(s, "forward_auth_path", "/_gateway/auth");
    let api_path = s
        .has("api_path")
        .then(|| url_path(s, "api_path", "/api/v1/auth/login"));
    let app_logout_paths: Vec<String> = s.get_or("app_logout_paths", Vec::new());
    for p in &app_logout_paths {
        if !p.starts_with('/') || p.starts_with("//") || p.contains(['?', '#', ' ']) {
            s.problem(
                "app_logout_paths",
                format!("`{p}` must be a path starting with '/', e.g. \"/auth/logout\""),
            );
        }
    }
    // Each of the gateway's own endpoints answers one path; two on one path would shadow.
    let mut own: Vec<(&str, &str)> = vec![("path", &path), ("logout_path", &logout_path)];
    if let Some(api) = &api_path {
        own.push(("api_path", api));
    }
    own.push(("forward_auth_path", &forward_auth_path));
    own.push(("(sessions page)", crate::routes::SESSIONS_PATH));
    own.push(("(health check)", crate::routes::HEALTH_PATH));
    for (i, (key, p)) in own.iter().enumerate() {
        if let Some((other, _)) = own[..i].iter().find(|(_, q)| q == p) {
            s.problem(key, format!("`{p}` is already used by `{other}`"));
        }
    }
    for p in &app_logout_paths {
        if let Some((key, _)) = own.iter().find(|(_, q)| q == p) {
            s.problem(
                "app_logout_paths",
                format!("`{p}` is the gateway's own `{key}`, not the app's"),
            );
        }
    }
    let refresh_interval = s
        .parse_with("refresh_interval", |v| match v {
            "off" => Ok(None),
            _ => parse_duration(v).map(Some),
        })
        .unwrap_or(Some(Duration::from_secs(5 * 60)));
    let language = s
        .parse_with("language", LanguageChoice::parse)
        .unwrap_or(LanguageChoice::Auto);
    let settings = LoginSettings {
        path,
        logout_path,
        api_path,
        app_logout_paths,
        forward_auth_path,
        language,
        users_file,
        users: Arc::new(users),
        template_file,
        template,
        database,
        throttle,
        refresh_interval,
    };
    s.finish(&[
        "path",
        "logout_path",
        "api_path",
        "app_logout_paths",
        "forward_auth_path",
        "refresh_interval",
        "language",
        "users_file",
        "template",
        "database",
        "max_failures_per_user",
        "max_failures_per_ip",
        "failure_window",
    ]);
    settings
}

fn report_login_file(s: &Section, e: LoginFileError) {
    match e {
        LoginFileError::AtKey { key, message } => s.problem(key, message),
        LoginFileError::InFile(problems) => s.report_all(problems),
    }
}

pub(super) fn read_database(s: &Section, ctx: &Ctx) -> DatabaseSettings {
    let url = ctx.secret(s, "url", true);
    if let Some(url) = &url {
        let text = url.expose_str();
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            s.problem("url", "must be a postgres:// or postgresql:// URL");
        }
    }
    let query: String = s.get_or("query", DEFAULT_USER_QUERY.to_string());
    if !query.contains("$1") {
        s.problem("query", "must take the username as $1");
    }
    let pool_size = s.integer_in("pool_size", 1..=256, 8);
    let settings = DatabaseSettings {
        url: url.unwrap_or_else(|| Secret::new(Vec::new())),
        query,
        pool_size,
        timeout: s.duration("timeout", Duration::from_secs(2)),
    };
    s.finish(&[
        "url",
        "url_env",
        "url_file",
        "query",
        "pool_size",
        "timeout",
    ]);
    settings
}

/// Fewest distinct byte values an HMAC key may have: 32 spaces, or "aaaa…", are not secrets,
/// while the hex of `openssl rand -hex 32` has 16 and any random text many more.
const MIN_KEY_VARIETY: usize = 8;

/// What is wrong with an HMAC key, if anything.
/// Secrets still accepted during a rotation: a list inline, or one per line (or separated by
/// commas or spaces) in an environment variable or a file. Each must be as strong as `secret`.
fn read_previous_secrets(s: &Section, ctx: &Ctx) -> Vec<Secret> {
    let given: Vec<&str> = [
        "previous_secrets",
        "previous_secrets_env",
        "previous_secrets_file",
    ]
    .into_iter()
    .filter(|k| s.has(k))
    .collect();
    if given.len() > 1 {
        s.problem(given[1], format!("give only one of {}", given.join(", ")));
        return Vec::new();
    }
    let Some(&key) = given.first() else {
        return Vec::new();
    };
    let texts: Vec<String> = if key == "previous_secrets" {
        s.get::<Vec<String>>(key).unwrap_or_default()
    } else {
        // An empty variable is an empty list: no rotation under way.
        ctx.indirect(s, key)
            .unwrap_or_default()
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect()
    };
    texts
        .into_iter()
        .enumerate()
        .filter_map(|(i, text)| {
            let secret = Secret::new(text);
            match weak_key(&secret) {
                Some(message) => {
                    s.problem(key, format!("previous secret #{}: {message}", i + 1));
                    None
                }
                None => Some(secret),
            }
        })
        .collect()
}

fn weak_key(key: &Secret) -> Option<String> {
    let advice = "use at least 32 random bytes, e.g. `openssl rand -hex 32`";
    if key.len() < MIN_SECRET_BYTES {
        return Some(format!("is {} bytes; {advice}", key.len()));
    }
    let mut seen = [false; 256];
    key.expose().iter().for_each(|b| seen[*b as usize] = true);
    let variety = seen.iter().filter(|s| **s).count();
    (variety < MIN_KEY_VARIETY).then(|| {
        format!("has only {variety} different characters, so it is easy to guess; {advice}")
    })
}

pub(super) fn read_identity(s: &Section, ctx: &Ctx) -> IdentitySettings {
    let signing_secret = ctx.secret(s, "signing_secret", false);
    if let Some(message) = signing_secret.as_ref().and_then(weak_key) {
        s.problem("signing_secret", message);
    }
    s.finish(&[
        "signing_secret",
        "signing_secret_env",
        "signing_secret_file",
    ]);
    IdentitySettings { signing_secret }
}

pub(super) fn read_access(s: &Section) -> AccessSettings {
    let public: Vec<String> = s.get_or("public", Vec::new());
    for p in &public {
        if !p.starts_with('/') {
            s.problem("public", format!("`{p}` must start with '/'"));
        }
    }
    let rules: Vec<AccessRule> = s.sections("rules").iter().filter_map(read_rule).collect();
    for (shadowed, by) in crate::access::shadowed(&rules) {
        s.problem_at_line(
            shadowed.line,
            "[[access.rules]]",
            format!(
                "`{}` is shadowed by the rule at line {} (same path and methods): it never decides",
                shadowed.path, by.line
            ),
        );
    }
    s.finish(&["public", "rules"]);
    AccessSettings { public, rules }
}

/// One `[[access.rules]]` table: `path`, optional `methods`, and exactly one of `roles`,
/// `public = true` or `deny = true`.
fn read_rule(r: &Section) -> Option<AccessRule> {
    let path = r.required::<String>("path");
    if let Some(p) = &path {
        let canonical = crate::access::canonical(p);
        if !p.starts_with('/') || canonical != p.as_str() || has_dot_segments(p) {
            r.problem(
                "path",
                format!("`{p}` must be a plain path starting with '/' (no `//`, `%`, `\\` or dot segments)"),
            );
        }
    }
    let methods: Vec<String> = r.get_or("methods", Vec::new());
    for m in &methods {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
            r.problem(
                "methods",
                format!("`{m}` is not a method; write e.g. \"POST\""),
            );
        }
    }
    let roles: Option<Vec<String>> = r.get("roles");
    let public = r.get::<bool>("public").unwrap_or(false);
    let deny = r.get::<bool>("deny").unwrap_or(false);
    let requirement = match (roles, public, deny) {
        (Some(roles), false, false) if !roles.is_empty() => Some(Requirement::Roles(roles)),
        (Some(_), false, false) => {
            r.problem("roles", "needs at least one role (or `deny = true`)");
            None
        }
        (None, true, false) => Some(Requirement::Public),
        (None, false, true) => Some(Requirement::Deny),
        _ => {
            r.problem(
                "path",
                "give exactly one of `roles = [...]`, `public = true` or `deny = true`",
            );
            None
        }
    };
    r.finish(&["path", "methods", "roles", "public", "deny"]);
    Some(AccessRule {
        path: path?,
        methods,
        requirement: requirement?,
        line: r.line(),
    })
}

pub(super) fn read_admin(s: &Section, ctx: &Ctx) -> AdminSettings {
    let token = ctx.secret(s, "token", false);
    if token.as_ref().is_some_and(|t| t.len() < 16) {
        s.problem("token", "use at least 16 random characters");
    }
    s.finish(&["token", "token_env", "token_file"]);
    AdminSettings { token }
}

pub(super) fn read_audit(s: &Section, ctx: &Ctx) -> AuditSettings {
    let sink = s
        .parse_with("sink", |v| match v {
            "stdout" => Ok(LineSink::Stdout),
            "off" => Ok(LineSink::Off),
            "file" => Ok(LineSink::File(PathBuf::new())),
            _ => Err(format!(
                "`{v}` is not a sink: use \"stdout\", \"file\" or \"off\""
            )),
        })
        .unwrap_or(LineSink::Stdout);
    let sink = match (sink, s.get::<String>("file")) {
        (LineSink::File(_), Some(path)) => LineSink::File(writable_file(s, "file", ctx, &path)),
        (LineSink::File(_), None) => {
            s.problem("file", "is required when sink = \"file\"");
            LineSink::Stdout
        }
        (other, _) => other,
    };
    let stream_max_len = s.integer_in("stream_max_len", 1..=u64::MAX, 10_000);
    s.finish(&["sink", "file", "stream_max_len"]);
    AuditSettings {
        sink,
        stream_max_len,
    }
}

/// A file the gateway will append lines to: its folder must exist.
fn writable_file(s: &Section, key: &str, ctx: &Ctx, path: &str) -> PathBuf {
    let path = ctx.resolve(path);
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
    if folder.is_some_and(|f| !f.is_dir()) {
        s.problem(
            key,
            format!("`{}`: its folder does not exist", path.display()),
        );
    }
    path
}

pub(super) fn read_log(s: &Section, ctx: &Ctx) -> LogSettings {
    let format = s
        .parse_with("format", |v| match v {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("`{v}` is not a format: use \"text\" or \"json\"")),
        })
        .unwrap_or(LogFormat::Text);
    let level = s
        .parse_with("level", |v| {
            v.parse::<log::LevelFilter>().map_err(|_| {
                format!("`{v}` is not a level: use error, warn, info, debug, trace or off")
            })
        })
        .unwrap_or(log::LevelFilter::Info);
    let access = s
        .get::<String>("access")
        .map(|v| match v.as_str() {
            "off" => LineSink::Off,
            "stdout" => LineSink::Stdout,
            path if path.starts_with('/') || path.starts_with('.') => {
                LineSink::File(writable_file(s, "access", ctx, path))
            }
            other => {
                s.problem(
                    "access",
                    format!(
                        "`{other}`: use \"off\", \"stdout\" or a file path (starting with `/` or `./`)"
                    ),
                );
                LineSink::Off
            }
        })
        .unwrap_or(LineSink::Off);
    let access_query = s.get_or("access_query", false);
    s.finish(&["format", "level", "access", "access_query"]);
    LogSettings {
        format,
        level,
        access,
        access_query,
    }
}
