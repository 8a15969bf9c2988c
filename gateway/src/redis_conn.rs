//! The one shared, multiplexed Redis connection, and the deadline every call runs under.
//!
//! All requests on all of pingora's runtimes pipeline over a single [`ConnectionManager`]: more
//! connections measured no faster. It is created lazily on first use, inside whichever pingora
//! runtime asks first (a connection made before the runtimes start is never driven), and it
//! reconnects by itself after an outage. Every call is bounded by the configured timeout, so a
//! dead or slow Redis turns into a quick [`StoreError`] (answered as 503) instead of a hang.
//!
//! Where the server is: one URL, or the primary that Sentinel names, or a Redis Cluster. With
//! Sentinel the primary is asked for on first use, and asked for again after a call fails in a
//! way a failover explains (the connection dropped or refused, a timeout, or `READONLY` from a
//! demoted primary); until a sentinel names a primary that answers, calls fail as 503. With a
//! cluster, the cluster client ([`cluster`]) stands where the manager stands: callers get a
//! [`Connection`] either way and send the same commands, each routed to its key's node.
//! TLS (with the operator's CA and, optionally, a client certificate) and an ACL user apply to
//! every connection, the sentinels' and every cluster node's included.

mod cluster;

pub use self::cluster::{primaries as cluster_primaries, ClusterPrimary};

use std::future::Future;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{ConnectionInfo, FromRedisValue, IntoConnectionInfo};

use crate::config::{RedisSettings, RedisTls, SentinelSettings};
use crate::errors::StoreError;
use crate::metrics::Metrics;

/// Where the primary is.
enum Target {
    Fixed(redis::Client),
    Sentinel(SentinelSettings),
    /// Boxed: it is much larger than the others, and there is one per process.
    Cluster(Box<ClusterClient>),
}

/// What a call talks through: one server's self-healing manager, or the cluster connection
/// (which routes each command to the node owning its key's slot). Cheap to clone: clones share
/// the connection.
#[derive(Clone)]
pub enum Connection {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Connection::Server(conn) => conn.req_packed_command(cmd),
            Connection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Connection::Server(conn) => conn.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Server(conn) => conn.get_db(),
            Connection::Cluster(conn) => conn.get_db(),
        }
    }
}

/// A primary (or the cluster) and the shared connection to it.
struct Primary {
    /// The one server's client, for the tracking connection; none for a cluster, whose
    /// primaries are tracked one by one.
    client: Option<redis::Client>,
    manager: Connection,
    /// A second connection for the writes that `WAIT` for replicas: `WAIT` holds up every
    /// command queued behind it on its connection, and requests must not queue behind it.
    durable: Connection,
    address: String,
}

/// The ACL user, password and TLS settings every connection uses.
struct Credentials {
    username: Option<String>,
    password: Option<String>,
    tls: Option<RedisTls>,
}

/// The tracking connections [`SharedRedis::tracking_connections`] opened.
pub struct TrackedServers {
    pub connections: Vec<redis::aio::MultiplexedConnection>,
    /// The cluster's primaries, one per connection in the same order; empty without a cluster.
    pub cluster_primaries: Vec<ClusterPrimary>,
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
        match self.certificates() {
            Some(certificates) => redis::Client::build_with_tls(info, certificates),
            None => redis::Client::open(info),
        }
    }

    /// The operator's CA and client certificate, when TLS names either (otherwise the system's
    /// roots and no client certificate).
    fn certificates(&self) -> Option<redis::TlsCertificates> {
        let tls = self.tls.as_ref()?;
        if tls.ca.is_none() && tls.client_cert.is_none() {
            return None;
        }
        let client_tls = match (&tls.client_cert, &tls.client_key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.expose().to_vec(),
            }),
            _ => None,
        };
        Some(redis::TlsCertificates {
            client_tls,
            root_cert: tls.ca.clone(),
        })
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
            None if !settings.cluster_nodes.is_empty() => Target::Cluster(Box::new(
                cluster::client(cluster::ClusterOptions {
                    nodes: &settings.cluster_nodes,
                    scheme: credentials.scheme(),
                    username: credentials.username.as_deref(),
                    password: credentials.password.as_deref(),
                    certificates: credentials.certificates(),
                    connect_timeout: settings.connect_timeout,
                    response_timeout: settings.timeout,
                })
                .map_err(|e| format!("invalid cluster_nodes: {e}"))?,
            )),
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
            manager: Connection::Server(lazy(config.clone())?),
            durable: Connection::Server(lazy(config)?),
            client: Some(client),
            address,
        })
    }

    /// Connects to the cluster (the seed nodes, then every node they name). The connection
    /// then heals itself: it reconnects to nodes and re-reads the slot map on its own.
    async fn connect_cluster(&self, client: &ClusterClient) -> Result<Primary, StoreError> {
        let connect = || async {
            let config = redis::cluster::ClusterConfig::new()
                .set_connection_timeout(self.connect_timeout)
                .set_response_timeout(self.timeout);
            client
                .get_async_connection_with_config(config)
                .await
                .map_err(|e| StoreError::Unavailable(format!("redis cluster: {e}")))
        };
        let manager = connect().await?;
        let durable = if self.wait_replicas > 0 {
            connect().await?
        } else {
            manager.clone()
        };
        Ok(Primary {
            client: None,
            manager: Connection::Cluster(manager),
            durable: Connection::Cluster(durable),
            address: "cluster".to_string(),
        })
    }

    /// Whether Redis is a cluster (multi-key commands must then stay within one slot).
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// The primary to talk to: the fixed one, or the last one Sentinel named, or a new answer,
    /// or the cluster once connected.
    async fn primary(&self) -> Result<Arc<Primary>, StoreError> {
        if let Target::Fixed(client) = &self.target {
            if let Some(p) = self.fixed.get() {
                return Ok(p.clone());
            }
            let primary = Arc::new(self.primary_for(client.clone(), String::new())?);
            return Ok(self.fixed.get_or_init(|| primary).clone());
        }
        if let Some(p) = self.known_primary() {
            return Ok(p);
        }
        let _one_at_a_time = self.discovery.lock().await;
        if let Some(p) = self.known_primary() {
            return Ok(p);
        }
        let primary = Arc::new(match &self.target {
            Target::Sentinel(sentinel) => self.primary_named_by_sentinel(sentinel).await?,
            Target::Cluster(client) => {
                let cluster = self.connect_cluster(client).await?;
                log::info!("connected to the redis cluster");
                cluster
            }
            // Answered at the top; here only so the match needs no panic.
            Target::Fixed(client) => self.primary_for(client.clone(), String::new())?,
        });
        if let Ok(mut slot) = self.primary.write() {
            *slot = Some(primary.clone());
        }
        Ok(primary)
    }

    /// The primary a sentinel names now.
    async fn primary_named_by_sentinel(
        &self,
        sentinel: &SentinelSettings,
    ) -> Result<Primary, StoreError> {
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
        let primary = self.primary_for(client, address.clone())?;
        log::info!(
            "redis primary `{}` is {address} (from sentinel)",
            sentinel.master
        );
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
        F: FnOnce(Connection) -> Fut,
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
        F: FnOnce(Connection) -> Fut,
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

    /// Dedicated connections for the validation cache's tracking, never shared with requests:
    /// one to the primary, or one to every primary of the cluster (each node only reports
    /// writes to its own keys). They speak RESP3 and hand the servers' push messages
    /// (invalidations) to `on_push` in the order each server sends them. With a cluster, also
    /// the primaries they were opened to, so the tracker can notice when that set changes.
    pub async fn tracking_connections(
        &self,
        on_push: Arc<dyn Fn(redis::PushInfo) + Send + Sync>,
    ) -> redis::RedisResult<TrackedServers> {
        let primary = self.primary().await.map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Io, "no primary", e.to_string()))
        })?;
        if let Some(client) = &primary.client {
            let info = client.get_connection_info().clone();
            let connection = self.resp3_connection(info, false, on_push).await?;
            return Ok(TrackedServers {
                connections: vec![connection],
                cluster_primaries: Vec::new(),
            });
        }
        let mut cluster = primary.manager.clone();
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut cluster)
            .await?;
        let cluster_primaries = cluster::primaries(&nodes);
        if cluster_primaries.is_empty() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "CLUSTER NODES lists no primary",
            )));
        }
        let mut connections = Vec::with_capacity(cluster_primaries.len());
        for node in &cluster_primaries {
            let info = format!("{}://{}", self.credentials.scheme(), node.address)
                .as_str()
                .into_connection_info()?;
            connections.push(self.resp3_connection(info, true, on_push.clone()).await?);
        }
        Ok(TrackedServers {
            connections,
            cluster_primaries,
        })
    }

    async fn resp3_connection(
        &self,
        info: ConnectionInfo,
        authenticate: bool,
        on_push: Arc<dyn Fn(redis::PushInfo) + Send + Sync>,
    ) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = self
            .credentials
            .client(info.set_redis_settings(resp3), authenticate)?;
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
