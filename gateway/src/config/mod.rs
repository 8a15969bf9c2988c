//! The operator's one TOML file, read into the validated [`Config`] the rest of the gateway uses.
//!
//! The file format (section and key names, defaults) is documented in `config/gateway.toml`.
//! Loading never panics: every problem in the file is collected with its line and returned in a
//! single [`ConfigError`], which `gateway check-config` prints and `gateway run` refuses to start on.
//! Secrets may come from the file, an environment variable or a file of their own, read through
//! [`Environment`] so tests never touch the real process environment. The users file the config
//! names is read and checked here too (its problems are reported at its own lines):
//! [`LoginSettings::users`] is the table the gateway starts with. It and the login template are
//! read by [`files`], which a reload on SIGHUP uses too ([`crate::reload`]).

pub mod files;
mod reader;
mod sections;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use toml::de::DeTable;

use crate::auth::users::UserTable;
use crate::env::{Environment, Secret};
use crate::errors::ConfigError;
use crate::i18n::LanguageChoice;
pub use reader::parse_duration;
use reader::Document;
use sections::*;

/// Shortest HMAC key accepted: 256 bits, the size of the SHA-256 block output it protects.
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    pub redis: RedisSettings,
    pub session: SessionSettings,
    pub login: LoginSettings,
    pub access: AccessSettings,
    pub admin: AdminSettings,
    pub audit: AuditSettings,
    pub identity: IdentitySettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub threads: usize,
    pub trusted_proxies: Vec<IpNet>,
    /// After SIGTERM, keep serving (health 503, no keep-alive) this long so the load balancer
    /// moves traffic away before the listener closes.
    pub drain_delay: Duration,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// `host:port` strings; host names are resolved once at start-up.
    pub servers: Vec<String>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub health_check_interval: Duration,
    /// The app's own session cookie (e.g. Flask's `whalefall_session`), which the gateway's
    /// cookie must never share a name with.
    pub app_session_cookie: Option<String>,
    /// Legacy authentication cookies (e.g. Flask-Login's `remember_token`) taken out of every
    /// request before it reaches the app, and cleared in the browser.
    pub strip_cookies: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// One server: the URL without any password (the password travels separately as a
    /// [`Secret`]). With sentinels or a cluster, empty.
    pub url: String,
    /// The primary found through Sentinel instead of one URL.
    pub sentinel: Option<SentinelSettings>,
    /// `host:port` seed nodes of a Redis Cluster instead of one URL; empty when not a cluster.
    pub cluster_nodes: Vec<String>,
    /// ACL user (Redis 6+); none means `default`.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// TLS to Redis (and to the sentinels): `rediss://` or `tls = true`.
    pub tls: Option<RedisTls>,
    /// Session creation and revocations wait until this many replicas have them (`WAIT`).
    pub wait_replicas: u32,
    pub wait_timeout: Duration,
    pub key_prefix: String,
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct SentinelSettings {
    /// `host:port` of each sentinel, asked in this order.
    pub sentinels: Vec<String>,
    /// The monitored primary's name (`sentinel_master`).
    pub master: String,
    pub password: Option<Secret>,
    /// Database number on the primary.
    pub database: i64,
}

#[derive(Debug, Clone, Default)]
pub struct RedisTls {
    /// PEM of the CA that signed the server's certificate; none means the system's roots.
    pub ca: Option<Vec<u8>>,
    /// PEM certificate and key for mutual TLS.
    pub client_cert: Option<Vec<u8>>,
    pub client_key: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitPolicy {
    EvictOldest,
    Reject,
}

#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub cookie_name: String,
    pub secret: Secret,
    /// Secrets of a rotation still accepted (cookies and forms sealed with them are re-issued
    /// under `secret`).
    pub previous_secrets: Vec<Secret>,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub touch_interval: Duration,
    pub cookie_secure: bool,
    pub max_per_user: Option<u32>,
    pub on_limit: LimitPolicy,
    /// The validation cache (`cache`), and its bound in sessions (`cache_entries`).
    pub cache: bool,
    pub cache_entries: usize,
}

#[derive(Debug, Clone)]
pub struct LoginSettings {
    pub path: String,
    pub logout_path: String,
    /// Where an SPA posts JSON logins (e.g. `/api/v1/auth/login`), answered by the gateway.
    pub api_path: Option<String>,
    /// The app's own logout endpoints: a same-origin POST there ends the gateway session too,
    /// then goes on to the app.
    pub app_logout_paths: Vec<String>,
    /// The forward-auth endpoint for another proxy (`/_gateway/auth`).
    pub forward_auth_path: String,
    pub language: LanguageChoice,
    pub users_file: Option<PathBuf>,
    /// The users file, read and checked with the config; empty without a `users_file`. A reload
    /// (SIGHUP) reads the file again into the authenticator, not into this.
    pub users: Arc<UserTable>,
    /// The operator's login page (`[login] template`), and the file's text, read and checked
    /// at start-up. A reload (SIGHUP) reads the file again: the text in force then is
    /// `App::login_template`, not this.
    pub template_file: Option<PathBuf>,
    pub template: Option<String>,
    pub database: Option<DatabaseSettings>,
    pub throttle: ThrottleSettings,
    /// How often a session's user is read again (`refresh_interval`); `None` = never.
    pub refresh_interval: Option<Duration>,
}

/// Failed-login limits; `None` switches a limit off.
#[derive(Debug, Clone)]
pub struct ThrottleSettings {
    pub max_failures_per_user: Option<u32>,
    pub max_failures_per_ip: Option<u32>,
    pub window: Duration,
}

/// The app's own user table as a credential source (`[login.database]`).
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// A PostgreSQL URL; a secret, since it usually carries the password.
    pub url: Secret,
    /// Must take the username as `$1` and return `id, username, password, role, is_active`.
    pub query: String,
    pub pool_size: usize,
    pub timeout: Duration,
}

pub const DEFAULT_USER_QUERY: &str =
    "SELECT id, username, password, role, is_active FROM users WHERE username = $1";

#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// Key for the `X-Auth-Assertion` header; without it no assertion is sent.
    pub signing_secret: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct AccessSettings {
    pub public: Vec<String>,
    /// `[[access.rules]]`, in file order (see [`crate::access`]).
    pub rules: Vec<crate::access::AccessRule>,
}

#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Without a token the admin session endpoints are switched off.
    pub token: Option<Secret>,
}

/// Where a stream of lines (the audit, the access log) is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineSink {
    Stdout,
    File(PathBuf),
    Off,
}

pub type AuditSink = LineSink;

/// How log lines look: text for a terminal, one JSON object per line for a collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// The default level filter (`error` … `trace`, or `off`); `RUST_LOG` overrides it.
    pub level: log::LevelFilter,
    /// One line per request, or nothing.
    pub access: LineSink,
    /// Whether access lines show the query string (it may hold tokens, so not by default).
    pub access_query: bool,
}

#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub sink: AuditSink,
    pub stream_max_len: u64,
}

impl SessionSettings {
    /// The short-lived cookie holding a login form's anti-forgery nonce.
    pub fn nonce_cookie_name(&self) -> String {
        nonce_cookie_name(&self.cookie_name)
    }
}

/// The nonce cookie that goes with session cookie `cookie_name`.
pub fn nonce_cookie_name(cookie_name: &str) -> String {
    format!("{cookie_name}_csrf")
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path, env: &dyn Environment) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = env
            .read_file(path)
            .map_err(|e| ConfigError::single(&name, format!("cannot read config file: {e}")))?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Config::parse(&name, &text, &base, env)
    }

    /// Validates config text; relative paths in it are taken from `base_dir`.
    pub fn parse(
        file: &str,
        text: &str,
        base_dir: &Path,
        env: &dyn Environment,
    ) -> Result<Config, ConfigError> {
        let doc = Document::new(file, text);
        let Some(table) = doc.parse() else {
            return Err(doc.into_result(()).unwrap_err());
        };
        let root = doc.root(&table);
        let empty = DeTable::new();
        let section = |name: &str| {
            root.section(name)
                .unwrap_or_else(|| root.empty(name, &empty))
        };
        let ctx = Ctx { env, base_dir };

        let server = read_server(&section("server"));
        let upstream = read_upstream(&section("upstream"));
        let redis = read_redis(&section("redis"), &ctx);
        let session = read_session(&section("session"), &ctx, &upstream);
        let login = read_login(&section("login"), &ctx);
        let access = read_access(&section("access"));
        let admin = read_admin(&section("admin"), &ctx);
        let audit = read_audit(&section("audit"), &ctx);
        let identity = read_identity(&section("identity"), &ctx);
        let log = read_log(&section("log"), &ctx);
        root.finish(SECTIONS);

        let config = Config {
            server,
            upstream,
            redis,
            session,
            login,
            access,
            admin,
            audit,
            identity,
            log,
        };
        doc.into_result(config)
    }

    /// Whether `path` is one of the app's logout endpoints.
    pub fn is_app_logout(&self, path: &str) -> bool {
        self.login.app_logout_paths.iter().any(|p| p == path)
    }

    /// Whether `path` is served without a session.
    ///
    /// Matching is on segment boundaries: a prefix ending in `/` covers that subtree; one
    /// naming a file (a `.` in its last segment, like `/favicon.ico`) covers exactly that
    /// path; any other (`/api/v1/health`) covers that path and the subtree below it. None
    /// covers `/favicon.icoadmin` or `/favicon.ico/admin`.
    pub fn is_public(&self, path: &str) -> bool {
        self.access.public.iter().any(|p| {
            if p.ends_with('/') {
                return path.starts_with(p.as_str());
            }
            let names_a_file = p.rsplit('/').next().is_some_and(|last| last.contains('.'));
            path.strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || (!names_a_file && rest.starts_with('/')))
        })
    }
}

#[cfg(test)]
mod tests;
