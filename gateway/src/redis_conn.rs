//! The one shared, multiplexed Redis connection, and the deadline every call runs under.
//!
//! All requests on all of pingora's runtimes pipeline over a single [`ConnectionManager`]: more
//! connections measured no faster. It is created lazily on first use, inside whichever pingora
//! runtime asks first (a connection made before the runtimes start is never driven), and it
//! reconnects by itself after an outage. Every call is bounded by the configured timeout, so a
//! dead or slow Redis turns into a quick [`StoreError`] (answered as 503) instead of a hang.
//!
//! Where the server is: one URL, or the primary that Sentinel names. With Sentinel the
//! primary is asked for on first use, and asked for again after a call fails in a way a
//! failover explains (the connection dropped or refused, a timeout, or `READONLY` from a
//! demoted primary); until a sentinel names a primary that answers, calls fail as 503.
//! TLS (with the operator's CA and, optionally, a client certificate) and an ACL user apply to
//! every connection, the sentinels' included.

use std::future::Future;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionInfo, FromRedisValue, IntoConnectionInfo};

use crate::config::{RedisSettings, RedisTls, SentinelSettings};
use crate::errors::StoreError;
use crate::metrics::Metrics;

/// Where the primary is.
enum Target {
    Fixed(redis::Client),
    Sentinel(SentinelSettings),
}

/// A primary and the shared connection to it.
struct Primary {
    client: redis::Client,
    manager: ConnectionManager,
    /// A second connection for the writes that `WAIT` for replicas: `WAIT` holds up every
    /// command queued behind it on its connection, and requests must not queue behind it.
    durable: ConnectionManager,
    address: String,
}

/// The ACL user, password and TLS settings every connection uses.
struct Credentials {
    username: Option<String>,
    password: Option<String>,
    tls: Option<RedisTls>,
}

pub struct SharedRedis {
    target: Target,
    credentials: Credentials,
    primary: RwLock<Option<Arc<Primary>>>,
    /// One discovery at a time; the others wait for its answer.
    discovery: tokio::sync::Mutex<()>,
    fixed: OnceLock<Arc<Primary>>,
    wait_replicas: u32,
    wait_timeout: Duration,
    timeout: Duration,
    connect_timeout: Duration,
    metrics: Metrics,
}

impl Credentials {
    /// A client for `info` with the TLS settings, and the ACL user and password when
    /// `authenticate` (the sentinels have their own password).
    fn client(
        &self,
        info: ConnectionInfo,
        authenticate: bool,
    ) -> redis::RedisResult<redis::Client> {
        let mut info = info;
        if authenticate {
            let mut redis = info.redis_settings().clone();
            if let Some(user) = &self.username {
                redis = redis.set_username(user);
            }
            if let Some(password) = &self.password {
                redis = redis.set_password(password);
            }
            info = info.set_redis_settings(redis);
        }
        match &self.tls {
            Some(tls) if tls.ca.is_some() || tls.client_cert.is_some() => {
                let client_tls = match (&tls.client_cert, &tls.client_key) {
                    (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                        client_cert: cert.clone(),
                        client_key: key.expose().to_vec(),
                    }),
                    _ => None,
                };
                redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls,
                        root_cert: tls.ca.clone(),
                    },
                )
            }
            _ => redis::Client::open(info),
        }
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        }
    }
}

impl SharedRedis {
    /// Checks the settings; does not connect (the gateway must start even while Redis is down).
    pub fn new(settings: &RedisSettings, metrics: Metrics) -> Result<SharedRedis, String> {
        let credentials = Credentials {
            username: settings.username.clone(),
            password: settings
                .password
                .as_ref()
                .map(|p| p.expose_str().to_string()),
            tls: settings.tls.clone(),
        };
        let target = match &settings.sentinel {
            Some(sentinel) => Target::Sentinel(sentinel.clone()),
            None => {
                let info = settings
                    .url
                    .as_str()
                    .into_connection_info()
                    .map_err(|e| format!("invalid redis url: {e}"))?;
                Target::Fixed(
                    credentials
                        .client(info, true)
                        .map_err(|e| format!("invalid redis url: {e}"))?,
                )
            }
        };
        Ok(SharedRedis {
            target,
            credentials,
            primary: RwLock::new(None),
            discovery: tokio::sync::Mutex::new(()),
            fixed: OnceLock::new(),
            wait_replicas: settings.wait_replicas,
            wait_timeout: settings.wait_timeout,
            timeout: settings.timeout,
            connect_timeout: settings.connect_timeout,
            metrics,
        })
    }

    fn primary_for(&self, client: redis::Client, address: String) -> Result<Primary, StoreError> {
        // Retries inside the manager would hold a request past our deadline; fail fast and let
        // the next request trigger the next reconnect instead.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let lazy = |config| {
            ConnectionManager::new_lazy_with_config(client.clone(), config)
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        };
        Ok(Primary {
            manager: lazy(config.clone())?,
            durable: lazy(config)?,
            client,
            address,
        })
    }

    /// The primary to talk to: the fixed one, or the last one Sentinel named, or a new answer.
    async fn primary(&self) -> Result<Arc<Primary>, StoreError> {
        let sentinel = match &self.target {
            Target::Fixed(client) => {
                if let Some(p) = self.fixed.get() {
                    return Ok(p.clone());
                }
                let primary = Arc::new(self.primary_for(client.clone(), String::new())?);
                return Ok(self.fixed.get_or_init(|| primary).clone());
            }
            Target::Sentinel(sentinel) => sentinel,
        };
        if let Some(p) = self.known_primary() {
            return Ok(p);
        }
        let _one_at_a_time = self.discovery.lock().await;
        if let Some(p) = self.known_primary() {
            return Ok(p);
        }
        let (host, port) = self.ask_sentinels(sentinel).await?;
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let address = format!("{host}:{port}");
        let url = format!(
            "{}://{address}/{}",
            self.credentials.scheme(),
            sentinel.database
        );
        let info = url
            .as_str()
            .into_connection_info()
            .map_err(|e| StoreError::Unavailable(format!("sentinel named {address}: {e}")))?;
        let client = self
            .credentials
            .client(info, true)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let primary = Arc::new(self.primary_for(client, address.clone())?);
        log::info!(
            "redis primary `{}` is {address} (from sentinel)",
            sentinel.master
        );
        if let Ok(mut slot) = self.primary.write() {
            *slot = Some(primary.clone());
        }
        Ok(primary)
    }

    fn known_primary(&self) -> Option<Arc<Primary>> {
        self.primary.read().ok().and_then(|p| p.clone())
    }

    /// Forgets `stale` (if it is still the one in use), so the next call asks Sentinel again.
    fn forget(&self, stale: &Primary) {
        if let Ok(mut slot) = self.primary.write() {
            if slot
                .as_ref()
                .is_some_and(|p| std::ptr::eq(p.as_ref(), stale))
            {
                log::warn!(
                    "redis primary {} lost; asking sentinel again",
                    stale.address
                );
                *slot = None;
            }
        }
    }

    async fn ask_sentinels(
        &self,
        sentinel: &SentinelSettings,
    ) -> Result<(String, u16), StoreError> {
        let mut last_error = String::from("no sentinel configured");
        for address in &sentinel.sentinels {
            let asked = async {
                let mut info = format!("{}://{address}", self.credentials.scheme())
                    .as_str()
                    .into_connection_info()?;
                if let Some(password) = &sentinel.password {
                    let redis = info
                        .redis_settings()
                        .clone()
                        .set_password(password.expose_str());
                    info = info.set_redis_settings(redis);
                }
                let mut conn = self
                    .credentials
                    .client(info, false)?
                    .get_multiplexed_async_connection()
                    .await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&sentinel.master)
                    .query_async::<Option<(String, u16)>>(&mut conn)
                    .await
            };
            match tokio::time::timeout(self.connect_timeout, asked).await {
                Ok(Ok(Some(found))) => return Ok(found),
                Ok(Ok(None)) => {
                    last_error = format!("sentinel {address} does not know `{}`", sentinel.master)
                }
                Ok(Err(e)) => last_error = format!("sentinel {address}: {e}"),
                Err(_) => last_error = format!("sentinel {address}: no answer"),
            }
        }
        Err(StoreError::Unavailable(last_error))
    }

    /// Whether a failed call means the primary may have moved.
    fn failover_sign(error: &redis::RedisError) -> bool {
        error.code() == Some("READONLY")
            || error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_timeout()
    }

    /// Runs one command or pipeline against Redis under the deadline, recording its latency.
    pub async fn run<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, async {
            let primary = self.primary().await?;
            call(primary.manager.clone())
                .await
                .map_err(|e| self.failed(&primary, e))
        })
        .await
        .unwrap_or_else(|_| self.timed_out());
        self.metrics
            .observe_redis(started.elapsed(), result.is_ok());
        result
    }

    /// Runs a write that must survive a failover (a new session, a revocation): with
    /// `wait_replicas = N`, it succeeds only once `WAIT` says N replicas have it. A write that
    /// was not confirmed is an error, reported as failed, never as done.
    pub async fn run_durable<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.wait_replicas == 0 {
            return self.run(call).await;
        }
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout + self.wait_timeout, async {
            let primary = self.primary().await?;
            let mut conn = primary.durable.clone();
            let value = call(conn.clone())
                .await
                .map_err(|e| self.failed(&primary, e))?;
            let confirmed: u32 = redis::cmd("WAIT")
                .arg(self.wait_replicas)
                .arg(self.wait_timeout.as_millis() as u64)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.failed(&primary, e))?;
            if confirmed < self.wait_replicas {
                return Err(StoreError::Unavailable(format!(
                    "the write reached {confirmed} of {} replicas in time",
                    self.wait_replicas
                )));
            }
            Ok(value)
        })
        .await
        .unwrap_or_else(|_| self.timed_out());
        self.metrics
            .observe_redis(started.elapsed(), result.is_ok());
        result
    }

    fn failed(&self, primary: &Primary, error: redis::RedisError) -> StoreError {
        if matches!(self.target, Target::Sentinel(_)) && Self::failover_sign(&error) {
            self.forget(primary);
        }
        StoreError::Unavailable(error.to_string())
    }

    fn timed_out<T>(&self) -> Result<T, StoreError> {
        // A primary that stopped answering may have been replaced.
        if matches!(self.target, Target::Sentinel(_)) {
            if let Some(p) = self.known_primary() {
                self.forget(&p);
            }
        }
        Err(StoreError::Timeout)
    }

    pub async fn query<T: FromRedisValue + Send>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        self.run(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
    }

    pub async fn pipeline<T: FromRedisValue + Send>(
        &self,
        pipe: redis::Pipeline,
    ) -> Result<T, StoreError> {
        self.run(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await
    }

    /// A second connection of the same server and credentials, speaking RESP3 and handing the
    /// server's push messages (invalidations) to `on_push` in the order they arrive. For the
    /// validation cache's tracking; it is never shared with requests.
    pub async fn tracking_connection(
        &self,
        on_push: impl Fn(redis::PushInfo) + Send + Sync + 'static,
    ) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let primary = self.primary().await.map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Io, "no primary", e.to_string()))
        })?;
        let info = primary.client.get_connection_info().clone();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = self
            .credentials
            .client(info.set_redis_settings(resp3), false)?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.timeout))
            .set_push_sender(move |info: redis::PushInfo| -> Result<(), ()> {
                on_push(info);
                Ok(())
            });
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let pong: String = self.query(redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "unexpected PING reply {pong:?}"
            )))
        }
    }
}
