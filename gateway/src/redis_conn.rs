//! The one shared, multiplexed Redis connection, and the deadline every call runs under.
//!
//! All requests on all of pingora's runtimes pipeline over a single [`ConnectionManager`]: more
//! connections measured no faster. It is created lazily on first use, inside whichever pingora
//! runtime asks first (a connection made before the runtimes start is never driven), and it
//! reconnects by itself after an outage. Every call is bounded by the configured timeout, so a
//! dead or slow Redis turns into a quick [`StoreError`] (answered as 503) instead of a hang.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, IntoConnectionInfo};

use crate::config::RedisSettings;
use crate::errors::StoreError;
use crate::metrics::Metrics;

pub struct SharedRedis {
    client: redis::Client,
    manager: OnceLock<ConnectionManager>,
    timeout: Duration,
    connect_timeout: Duration,
    metrics: Metrics,
}

impl SharedRedis {
    /// Checks the URL; does not connect (the gateway must start even while Redis is down).
    pub fn new(settings: &RedisSettings, metrics: Metrics) -> Result<SharedRedis, String> {
        let mut info = settings
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("invalid redis url: {e}"))?;
        if let Some(password) = &settings.password {
            let redis = info
                .redis_settings()
                .clone()
                .set_password(password.expose_str());
            info = info.set_redis_settings(redis);
        }
        let client = redis::Client::open(info).map_err(|e| format!("invalid redis url: {e}"))?;
        Ok(SharedRedis {
            client,
            manager: OnceLock::new(),
            timeout: settings.timeout,
            connect_timeout: settings.connect_timeout,
            metrics,
        })
    }

    fn manager(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(m) = self.manager.get() {
            return Ok(m.clone());
        }
        // Retries inside the manager would hold a request past our deadline; fail fast and let
        // the next request trigger the next reconnect instead.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(self.manager.get_or_init(|| manager).clone())
    }

    /// Runs one command or pipeline against Redis under the deadline, recording its latency.
    pub async fn run<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let result = match self.manager() {
            Ok(conn) => match tokio::time::timeout(self.timeout, call(conn)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(StoreError::Unavailable(e.to_string())),
                Err(_) => Err(StoreError::Timeout),
            },
            Err(e) => Err(e),
        };
        self.metrics
            .observe_redis(started.elapsed(), result.is_ok());
        result
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
        let info = self.client.get_connection_info().clone();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(resp3))?;
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
