//! [`App`]: everything a request needs, built once from the validated config, plus the one
//! question every request asks: which session, if any, does it present?

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pingora::http::RequestHeader;

use crate::audit::{Audit, AuditEvent, Origin};
use crate::config::Config;
use crate::credentials::Authenticator;
use crate::database::UserDatabase;
use crate::env::Environment;
use crate::errors::{ConfigError, StoreError};
use crate::http::cookies::{self, CookiePolicy};
use crate::i18n::Texts;
use crate::identity::AssertionSigner;
use crate::metrics::Metrics;
use crate::pages::DEFAULT_LOGIN_TEMPLATE;
use crate::redis_conn::SharedRedis;
use crate::session::store::Lookup;
use crate::session::{now_ms, Keys, LiveSession, SessionStore};
use crate::throttle::LoginThrottle;
use crate::users::UserTable;

pub struct App {
    pub config: Config,
    pub keys: Keys,
    pub cookies: CookiePolicy,
    pub store: SessionStore,
    pub auth: Authenticator,
    pub throttle: LoginThrottle,
    pub metrics: Metrics,
    pub audit: Audit,
    pub login_template: String,
    /// Signs identity assertions for the app, when `[identity]` is configured.
    pub signer: Option<AssertionSigner>,
    /// The gateway's own cookie names: never passed upstream, and never set by the app.
    pub own_cookies: Vec<String>,
    /// Every cookie taken out of requests before the app sees them: the gateway's own, then
    /// the operator's `[upstream] strip_cookies`.
    pub hidden_cookies: Vec<String>,
    /// Set when shutdown begins, so health checks steer the load balancer away first.
    pub draining: AtomicBool,
}

/// What a request's cookie amounts to.
pub enum Presented {
    /// No session cookie at all.
    Nothing,
    /// A cookie that is not one we issued (forged, damaged, from another secret).
    Forged,
    /// A genuine cookie whose session is gone (logged out, revoked, expired).
    Ended,
    Live(LiveSession),
}

impl App {
    /// Builds the gateway from its config: reads the users file and login template, prepares
    /// (but does not open) the Redis connection, starts the audit writer. Start-up only.
    pub fn new(config: Config, env: &dyn Environment) -> Result<Arc<App>, ConfigError> {
        let users = match &config.login.users_file {
            Some(path) => UserTable::load(path, env)?,
            None => UserTable::default(),
        };
        let login_template = match &config.login.template {
            Some(path) => env.read_file(path).map_err(|e| {
                ConfigError::single(&path.display().to_string(), format!("cannot read: {e}"))
            })?,
            None => DEFAULT_LOGIN_TEMPLATE.to_string(),
        };
        let database = match &config.login.database {
            Some(settings) => Some(
                UserDatabase::new(settings)
                    .map_err(|e| ConfigError::single("[login.database]", e))?,
            ),
            None => None,
        };
        let metrics = Metrics::new();
        let redis = Arc::new(
            SharedRedis::new(&config.redis, metrics.clone())
                .map_err(|e| ConfigError::single("[redis] url", e))?,
        );
        let audit = Audit::start(&config.audit, redis.clone(), &config.redis.key_prefix)
            .map_err(|e| ConfigError::single("[audit] file", format!("cannot open: {e}")))?;
        let throttle = LoginThrottle::new(
            redis.clone(),
            &config.redis.key_prefix,
            &config.login.throttle,
        );
        let store = SessionStore::new(redis, &config.redis.key_prefix, &config.session);
        let own_cookies = vec![
            config.session.cookie_name.clone(),
            format!("{}_csrf", config.session.cookie_name),
        ];
        Ok(Arc::new(App {
            keys: Keys::derive(&config.session.secret),
            cookies: CookiePolicy {
                secure: config.session.cookie_secure,
            },
            store,
            auth: Authenticator::new(users, database),
            throttle,
            metrics,
            audit,
            login_template,
            draining: AtomicBool::new(false),
            signer: config
                .identity
                .signing_secret
                .clone()
                .map(AssertionSigner::new),
            own_cookies: own_cookies.clone(),
            hidden_cookies: own_cookies
                .into_iter()
                .chain(config.upstream.strip_cookies.iter().cloned())
                .collect(),
            config,
        }))
    }

    /// The words for the request's language (`[login] language`, or its Accept-Language).
    pub fn texts(&self, req: &RequestHeader) -> &'static Texts {
        self.config.login.language.texts(req)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The session the request's cookie names, checked against Redis (one `GET`). A forged
    /// cookie is refused without asking Redis. Sliding the idle timeout is done here too, at
    /// most once per touch interval and off the request's path.
    pub async fn presented_session(
        self: &Arc<Self>,
        req: &RequestHeader,
        origin: &Origin,
    ) -> Result<Presented, StoreError> {
        let values = cookies::values(&req.headers, &self.config.session.cookie_name);
        if values.is_empty() {
            return Ok(Presented::Nothing);
        }
        // A browser may hold several cookies of the same name (e.g. set for different paths);
        // only the first few are tried, so junk cannot make us do unbounded work.
        let Some(id) = values.iter().take(4).find_map(|v| self.keys.open(v)) else {
            self.audit.record_limited(
                AuditEvent::new("cookie_rejected", "gateway", origin).reason("bad_signature"),
            );
            return Ok(Presented::Forged);
        };
        match self.store.lookup(&id).await? {
            Lookup::Missing => Ok(Presented::Ended),
            Lookup::Expired { handle, session } => {
                let event = AuditEvent::new("session_expired", "gateway", origin);
                self.audit.record(match &session {
                    Some(session) => event.session(session),
                    None => event.handle(&handle),
                });
                Ok(Presented::Ended)
            }
            Lookup::Live(session) => {
                let now = now_ms();
                if self.store.claim_touch(&session, now) {
                    let app = self.clone();
                    let touched = session.clone();
                    tokio::spawn(async move {
                        if let Err(e) = app.store.touch(&touched, now).await {
                            log::warn!("could not slide session idle timeout: {e}");
                        }
                    });
                }
                Ok(Presented::Live(session))
            }
        }
    }

    /// The request's origin for the audit trail and the session record.
    pub fn origin(&self, client_ip: Option<IpAddr>, req: &RequestHeader) -> Origin {
        Origin {
            ip: client_ip,
            user_agent: req.headers.get("user-agent").cloned(),
        }
    }
}
