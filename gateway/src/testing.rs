//! Unit-test harness: a whole [`App`] over in-memory parts (session store, failure counters,
//! audit stream) and a clock that tests move, plus builders for requests and readers for
//! replies. Everything above the store runs exactly as in production; nothing listens on a
//! socket, so a decision is checked in microseconds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pingora::http::RequestHeader;

use crate::app::{App, Parts};
use crate::audit::MemoryStream;
use crate::auth::throttle::MemoryCounters;
use crate::clock::ManualClock;
use crate::config::Config;
use crate::env::StaticEnvironment;
use crate::metrics::Metrics;
use crate::redis_conn::SharedRedis;
use crate::routes::{self, route_for, RequestView};
use crate::session::backend::MemoryBackend;
use crate::session::{Handle, Presented};
use crate::web::reply::Reply;
use crate::web::request::Origin;

pub const SECRET: &str = "unit-test-session-secret-0123456789abcdef";
/// 2027-01-15, a wall-clock time far from any edge.
pub const START_MS: u64 = 1_800_000_000_000;
pub const HOST: &str = "gw.example";
pub const CLIENT_IP: &str = "203.0.113.7";

/// `pbkdf2:sha256:1$salt$hex`: a real Werkzeug hash, at one iteration so tests stay fast.
pub fn cheap_hash(password: &str) -> String {
    use hmac::Hmac;
    use sha2::Sha256;
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2::<Hmac<Sha256>>(password.as_bytes(), b"salt", 1, &mut out)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    format!("pbkdf2:sha256:1$salt${}", hex::encode(out))
}

/// alice (admin, user; "alice-pw"), bob (user; "bob-pw"), carol (disabled; "carol-pw").
pub fn users_toml() -> String {
    let user = |name: &str, id: &str, roles: &str, disabled: bool| {
        format!(
            "[[users]]\nusername = \"{name}\"\nid = \"{id}\"\npassword_hash = \"{}\"\n\
             roles = [{roles}]\ndisabled = {disabled}\n\n",
            cheap_hash(&format!("{name}-pw"))
        )
    };
    user("alice", "1", "\"admin\", \"user\"", false)
        + &user("bob", "2", "\"user\"", false)
        + &user("carol", "3", "\"user\"", true)
}

/// Extra lines for the sections of the test config.
#[derive(Default)]
pub struct Settings {
    pub session: &'static str,
    pub login: &'static str,
    pub upstream: &'static str,
}

pub struct TestApp {
    pub app: Arc<App>,
    pub clock: Arc<ManualClock>,
    pub sessions: Arc<MemoryBackend>,
    pub counters: Arc<MemoryCounters>,
    pub events: Arc<MemoryStream>,
}

impl TestApp {
    pub fn new() -> TestApp {
        TestApp::with(Settings::default())
    }

    pub fn with(settings: Settings) -> TestApp {
        let text = format!(
            "[upstream]\nservers = [\"127.0.0.1:5001\"]\n{}\n\
             [redis]\nurl = \"redis://127.0.0.1:1/0\"\nkey_prefix = \"t:\"\n\
             [session]\nsecret = \"{SECRET}\"\ncookie_secure = false\n{}\n\
             [login]\nusers_file = \"users.toml\"\n{}\n\
             [audit]\nsink = \"off\"\n",
            settings.upstream, settings.session, settings.login
        );
        let dir = PathBuf::from("/unit-test");
        let env = StaticEnvironment {
            vars: HashMap::new(),
            files: HashMap::from([(dir.join("users.toml"), users_toml())]),
        };
        let config = Config::parse("gateway.toml", &text, &dir, &env)
            .unwrap_or_else(|e| panic!("test config rejected:\n{e}\n{text}"));
        TestApp::from_config(config)
    }

    pub fn from_config(config: Config) -> TestApp {
        let clock = Arc::new(ManualClock::at(START_MS));
        let sessions = Arc::new(MemoryBackend::new(clock.clone()));
        let counters = Arc::new(MemoryCounters::new(clock.clone()));
        let events = Arc::new(MemoryStream::default());
        let metrics = Metrics::new();
        // Never connected: nothing in a unit test reaches it.
        let redis = Arc::new(SharedRedis::new(&config.redis, metrics.clone()).expect("redis url"));
        let parts = Parts {
            clock: clock.clone(),
            sessions: sessions.clone(),
            counters: counters.clone(),
            events: events.clone(),
        };
        let app = App::with_parts(config, parts, redis, metrics).expect("test app");
        TestApp {
            app,
            clock,
            sessions,
            counters,
            events,
        }
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Sends `req` to the gateway's own endpoint for its path (which must be one).
    pub async fn serve(&self, req: Req) -> Reply {
        let route = route_for(&self.app, req.head.uri.path())
            .unwrap_or_else(|| panic!("{} is not a gateway endpoint", req.head.uri));
        let origin = req.origin();
        let view = RequestView {
            head: &req.head,
            body: Ok(req.body.clone()),
            origin,
            from_proxy: req.from_proxy,
        };
        routes::serve(&self.app, route, &view).await
    }

    /// Audit events recorded so far with this name.
    pub fn events_named(&self, name: &str) -> Vec<serde_json::Value> {
        self.events
            .events()
            .into_iter()
            .filter(|e| e["event"] == name)
            .collect()
    }

    /// A JSON login attempt at the login path.
    pub async fn post_login(&self, user: &str, password: &str) -> Reply {
        self.serve(Req::post_json(
            "/login",
            serde_json::json!({"username": user, "password": password}),
        ))
        .await
    }

    /// Logs `user` in with JSON; the session cookie's value.
    pub async fn login(&self, user: &str) -> String {
        let reply = self.post_login(user, &format!("{user}-pw")).await;
        assert_eq!(reply.status, 200, "login as {user}: {}", reply.text());
        reply
            .cookie(&self.app.config.session.cookie_name)
            .unwrap_or_else(|| panic!("login as {user} set no cookie"))
    }

    /// The anti-forgery token on the gateway page at `path`, as the browser holding `cookie`
    /// sees it.
    pub async fn form_token(&self, path: &str, cookie: &str) -> String {
        let page = self
            .serve(Req::page(path).cookie(&self.cookie(cookie)))
            .await;
        assert_eq!(page.status, 200, "{}", page.text());
        page.form_field("csrf_token").expect("a token on the page")
    }

    /// `name=value` for the session cookie.
    pub fn cookie(&self, value: &str) -> String {
        format!("{}={value}", self.app.config.session.cookie_name)
    }

    /// The handle of the session behind a cookie value this gateway issued.
    pub fn handle_of(&self, cookie_value: &str) -> Handle {
        self.app
            .keys
            .open(cookie_value)
            .expect("a cookie this gateway sealed")
            .handle()
    }

    /// What a plain request carrying this session cookie value presents.
    pub async fn presented(&self, cookie_value: &str) -> Presented {
        let req = Req::get("/").cookie(&self.cookie(cookie_value));
        self.app
            .sessions()
            .presented(&req.head, &req.origin())
            .await
            .expect("store up")
    }

    /// Whether the session behind this cookie value is still stored (not revoked or expired).
    pub async fn is_stored(&self, cookie_value: &str) -> bool {
        let handle = self.handle_of(cookie_value);
        self.app
            .store
            .get(&handle)
            .await
            .expect("store up")
            .is_some()
    }
}

/// Lets tasks the code under test spawned (the idle-timeout touch) run to completion: the
/// memory backend never waits, so a few turns of the scheduler are enough.
pub async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

/// `value` with the character at `at` changed: a damaged or forged cookie.
pub fn tampered(value: &str, at: usize) -> String {
    let mut bytes = value.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("cookie values are ASCII")
}

/// A request under construction.
pub struct Req {
    pub head: RequestHeader,
    pub body: Bytes,
    pub ip: Option<IpAddr>,
    /// Sent by a trusted proxy (forward-auth).
    pub from_proxy: bool,
}

impl Req {
    pub fn new(method: &str, target: &str) -> Req {
        let mut head = RequestHeader::build(method, target.as_bytes(), None).expect("request");
        head.insert_header("host", HOST).expect("host");
        Req {
            head,
            body: Bytes::new(),
            ip: CLIENT_IP.parse().ok(),
            from_proxy: false,
        }
    }

    pub fn get(target: &str) -> Req {
        Req::new("GET", target)
    }

    /// A browser navigation.
    pub fn page(target: &str) -> Req {
        Req::get(target).header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
    }

    pub fn post_form(target: &str, fields: &[(&str, &str)]) -> Req {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        Req::new("POST", target)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", &format!("https://{HOST}"))
            .body(body)
    }

    pub fn post_json(target: &str, value: serde_json::Value) -> Req {
        Req::new("POST", target)
            .header("content-type", "application/json")
            .body(value.to_string())
    }

    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.head
            .append_header(name.to_string(), value)
            .expect("header");
        self
    }

    /// Sets `name` to `value` alone, replacing what the builder put there (e.g. the same-site
    /// `Origin` of [`Req::post_form`]); [`Req::header`] adds a further value instead.
    pub fn set_header(mut self, name: &str, value: &str) -> Req {
        self.head
            .insert_header(name.to_string(), value)
            .expect("header");
        self
    }

    pub fn cookie(self, pair: &str) -> Req {
        self.header("cookie", pair)
    }

    /// The request as sent from another client address.
    /// As if a trusted proxy (nginx `auth_request`, Caddy `forward_auth`) sent it.
    pub fn via_proxy(mut self) -> Req {
        self.from_proxy = true;
        self
    }

    pub fn sent_from(mut self, ip: &str) -> Req {
        self.ip = Some(ip.parse().expect("an IP address"));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Req {
        self.body = body.into();
        self
    }

    pub fn origin(&self) -> Origin {
        Origin::of(self.ip, &self.head)
    }
}

/// Reading a reply as a client would.
impl Reply {
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.header_values(name).into_iter().next()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The value a `Set-Cookie` gives cookie `name`, unless it expires it.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.header_values("set-cookie").into_iter().find_map(|c| {
            let value = c.strip_prefix(&format!("{name}="))?.split(';').next()?;
            (!value.is_empty() && !c.contains("Max-Age=0")).then(|| value.to_string())
        })
    }

    /// Whether a `Set-Cookie` expires cookie `name`.
    pub fn expires_cookie(&self, name: &str) -> bool {
        self.header_values("set-cookie")
            .iter()
            .any(|c| c.starts_with(&format!("{name}=")) && c.contains("Max-Age=0"))
    }

    /// The value of the hidden form field `name` in an HTML reply.
    pub fn form_field(&self, name: &str) -> Option<String> {
        let text = self.text();
        let marker = format!("name=\"{name}\" value=\"");
        let start = text.find(&marker)? + marker.len();
        let end = text[start..].find('"')?;
        Some(text[start..start + end].replace("&amp;", "&"))
    }
}
