//! [`App`]: wiring only. Everything a request needs, built once from the validated config: the
//! session store and throttle over their Redis backends (or, in unit tests, over memory and a
//! settable clock: [`Parts`]), the credential sources, the audit trail, metrics and keys.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use pingora::http::RequestHeader;

use crate::assertion::AssertionSigner;
use crate::audit::{Audit, AuditEvent, EventStream, RedisStream};
use crate::auth::credentials::Authenticator;
use crate::auth::database::UserDatabase;
use crate::auth::throttle::{FailureCounters, LoginThrottle, RedisCounters};
use crate::auth::users::UserTable;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::errors::{ConfigError, StoreError};
use crate::i18n::Texts;
use crate::logs::access::AccessLog;
use crate::metrics::{EndReason, Metrics};
use crate::pages::DEFAULT_LOGIN_TEMPLATE;
use crate::redis_conn::SharedRedis;
use crate::session::backend::{RedisBackend, SessionBackend};
use crate::session::cache::ValidationCache;
use crate::session::refresh::Refresher;
use crate::session::{Keys, LiveSession, SealedWith, SessionGate, SessionStore};
use crate::web::cookies::CookiePolicy;
use crate::web::request::Origin;

/// How many of [`App::hidden_cookies`] are the gateway's own: the session and the login nonce.
pub const OWN_COOKIES: usize = 2;

pub struct App {
    pub config: Config,
    pub clock: Arc<dyn Clock>,
    pub keys: Keys,
    pub cookies: CookiePolicy,
    pub store: Arc<SessionStore>,
    pub auth: Authenticator,
    /// When sessions' users are read again (`[login] refresh_interval`).
    pub refresher: Refresher,
    pub throttle: LoginThrottle,
    pub metrics: Metrics,
    pub audit: Audit,
    /// `[log] access`: one line per request.
    pub access_log: AccessLog,
    /// The shared Redis connection, for the operator commands that read it directly.
    pub redis: Arc<SharedRedis>,
    /// The login page's template; replaced whole by a reload (SIGHUP). Read only when the
    /// login page is rendered: see [`App::login_template`].
    login_template: RwLock<Arc<String>>,
    /// Signs identity assertions for the app, when `[identity]` is configured.
    pub signer: Option<AssertionSigner>,
    /// Every cookie taken out of requests before the app sees them: the gateway's own
    /// ([`OWN_COOKIES`] of them: the session and the login nonce, see [`App::own_cookies`]),
    /// then the operator's `[upstream] strip_cookies`.
    pub hidden_cookies: Vec<String>,
    /// Set when shutdown begins, so health checks steer the load balancer away first.
    pub draining: AtomicBool,
}

/// What the health checks (`/_gateway/health`, `/readyz`) report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Draining,
    StoreUnavailable,
}

/// The replaceable parts: what production takes from Redis and the system clock, and unit
/// tests from memory and a clock they set.
pub struct Parts {
    pub clock: Arc<dyn Clock>,
    pub sessions: Arc<dyn SessionBackend>,
    pub counters: Arc<dyn FailureCounters>,
    pub events: Arc<dyn EventStream>,
}

impl App {
    /// Builds the gateway from its config: prepares (but does not open) the Redis connection
    /// and the database pool, starts the audit writer. Start-up only.
    pub fn new(config: Config) -> Result<Arc<App>, ConfigError> {
        let metrics = Metrics::new();
        let redis = Arc::new(
            SharedRedis::new(&config.redis, metrics.clone()).map_err(|e| {
                let place = if config.redis.cluster_nodes.is_empty() {
                    "[redis] url"
                } else {
                    "[redis] cluster_nodes"
                };
                ConfigError::single(place, e)
            })?,
        );
        let prefix = &config.redis.key_prefix;
        let parts = Parts {
            clock: Arc::new(SystemClock),
            sessions: Arc::new(RedisBackend::new(redis.clone(), prefix)),
            counters: Arc::new(RedisCounters::new(redis.clone())),
            events: Arc::new(RedisStream::new(
                redis.clone(),
                prefix,
                config.audit.stream_max_len,
            )),
        };
        App::with_parts(config, parts, redis, metrics)
    }

    /// Builds the gateway over the given parts.
    pub fn with_parts(
        config: Config,
        parts: Parts,
        redis: Arc<SharedRedis>,
        metrics: Metrics,
    ) -> Result<Arc<App>, ConfigError> {
        let users = UserTable::clone(&config.login.users);
        let login_template = config
            .login
            .template
            .clone()
            .unwrap_or_else(|| DEFAULT_LOGIN_TEMPLATE.to_string());
        let database = match &config.login.database {
            Some(settings) => Some(
                UserDatabase::new(settings)
                    .map_err(|e| ConfigError::single("[login.database]", e))?,
            ),
            None => None,
        };
        let audit = Audit::start(&config.audit, parts.events, metrics.lines_dropped("audit"))
            .map_err(|e| ConfigError::single("[audit] file", format!("cannot open: {e}")))?;
        let access_log = AccessLog::start(&config.log, metrics.lines_dropped("access"))
            .map_err(|e| ConfigError::single("[log] access", format!("cannot open: {e}")))?;
        let throttle = LoginThrottle::new(
            parts.counters,
            &config.redis.key_prefix,
            &config.login.throttle,
        );
        let mut store = SessionStore::new(parts.sessions, parts.clock.clone(), &config.session);
        if config.session.cache {
            let cache = ValidationCache::new(config.session.cache_entries, metrics.cache.clone());
            store = store.with_cache(Arc::new(cache));
        }
        let store = Arc::new(store);
        let hidden_cookies = [
            config.session.cookie_name.clone(),
            config.session.nonce_cookie_name(),
        ]
        .into_iter()
        .chain(config.upstream.strip_cookies.iter().cloned())
        .collect();
        Ok(Arc::new(App {
            clock: parts.clock,
            keys: Keys::with_previous(&config.session.secret, &config.session.previous_secrets),
            cookies: CookiePolicy {
                secure: config.session.cookie_secure,
            },
            store,
            auth: Authenticator::new(users, database),
            refresher: Refresher::new(config.login.refresh_interval),
            throttle,
            metrics,
            audit,
            access_log,
            redis,
            login_template: RwLock::new(Arc::new(login_template)),
            draining: AtomicBool::new(false),
            signer: config
                .identity
                .signing_secret
                .clone()
                .map(AssertionSigner::new),
            hidden_cookies,
            config,
        }))
    }

    /// The gateway's own cookie names: never passed upstream, and never set by the app.
    pub fn own_cookies(&self) -> &[String] {
        &self.hidden_cookies[..OWN_COOKIES]
    }

    /// The words for the request's language (`[login] language`, or its Accept-Language).
    pub fn texts(&self, req: &RequestHeader) -> &'static Texts {
        self.config.login.language.texts(req)
    }

    /// The login template in force: the operator's (`[login] template`, as last (re)loaded) or
    /// the built-in one.
    pub fn login_template(&self) -> Arc<String> {
        // A poisoned lock only means a panic elsewhere while it was held; the Arc inside is
        // whole either way.
        self.login_template
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts a freshly read and checked login template in force (a reload).
    pub fn replace_login_template(&self, template: String) {
        *self
            .login_template
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(template);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Whether this instance should get traffic: not draining, and its session store answers.
    pub async fn readiness(&self) -> Readiness {
        if self.is_draining() {
            Readiness::Draining
        } else if self.store.ping().await.is_err() {
            Readiness::StoreUnavailable
        } else {
            Readiness::Ready
        }
    }

    /// During a secret rotation (`previous_secrets`): the `Set-Cookie` that re-issues the
    /// request's session cookie under the current secret, when a previous one sealed it.
    /// Without previous secrets it costs nothing.
    pub fn resealed_cookie(&self, req: &RequestHeader) -> Option<String> {
        if !self.keys.rotating() {
            return None;
        }
        let name = &self.config.session.cookie_name;
        crate::web::cookies::values(&req.headers, name)
            .into_iter()
            .find_map(|value| self.keys.open_sealed(value))
            .filter(|(_, sealed)| *sealed == SealedWith::Previous)
            .map(|(id, _)| self.cookies.session(name, &self.keys.seal(&id)))
    }

    /// Live sessions, of one user or of everyone, oldest first. Sessions the listing found
    /// expired (and was the first to notice) are reported as the returning cookie would have:
    /// audited as `session_expired` and counted.
    pub async fn live_sessions(
        &self,
        user_id: Option<&str>,
        origin: &Origin,
    ) -> Result<Vec<LiveSession>, StoreError> {
        let listing = self.store.list(user_id).await?;
        self.metrics
            .sessions_ended(EndReason::Expired, listing.expired.len());
        for handle in &listing.expired {
            // Waited for: the command line lists and exits at once.
            self.audit
                .record_and_wait(
                    AuditEvent::new("session_expired", "gateway", origin)
                        .handle(handle)
                        .reason("found_by_listing"),
                )
                .await;
        }
        Ok(listing.live)
    }

    /// Which session, if any, a request presents.
    pub fn sessions(&self) -> SessionGate<'_> {
        SessionGate {
            cookie_name: &self.config.session.cookie_name,
            keys: &self.keys,
            store: &self.store,
            audit: &self.audit,
            metrics: &self.metrics,
            auth: &self.auth,
            refresher: &self.refresher,
        }
    }
}
