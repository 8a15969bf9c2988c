//! Prometheus metrics, served on the admin listener's `/metrics`.
//!
//! - `gateway_requests_total{outcome}`: every request on the public listener, by what the
//!   gateway did with it (see [`Outcome`]).
//! - `gateway_redis_duration_seconds`: latency of each Redis call, failures included.
//! - `gateway_redis_errors_total`: Redis calls that failed or hit the deadline.
//! - `gateway_logins_total{result}`: login attempts by result.
//! - `gateway_session_cache_total{result}`: session checks answered from the validation cache
//!   (`hit`) or from Redis (`miss`, which includes every check while the cache is not usable).
//! - `gateway_session_cache_invalidations_total`: entries dropped because Redis said the session
//!   changed; `gateway_session_cache_flushes_total`: whole-cache flushes (tracking lost or
//!   re-established); `gateway_session_cache_entries`: entries held now.
//! - `gateway_config_reloads_total{result}`: reloads on SIGHUP (`ok`, or `failed` when the old
//!   files stayed in force).

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// What the gateway did with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Proxied,
    Public,
    Unauthenticated,
    StoreUnavailable,
    GatewayPage,
    BadRequest,
    UpstreamError,
    /// Refused by an access rule (403).
    Forbidden,
}

impl Outcome {
    const ALL: [Outcome; 8] = [
        Outcome::Proxied,
        Outcome::Public,
        Outcome::Unauthenticated,
        Outcome::StoreUnavailable,
        Outcome::GatewayPage,
        Outcome::BadRequest,
        Outcome::UpstreamError,
        Outcome::Forbidden,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Proxied => "proxied",
            Outcome::Public => "public",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::StoreUnavailable => "store_unavailable",
            Outcome::GatewayPage => "gateway_page",
            Outcome::BadRequest => "bad_request",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Forbidden => "forbidden",
        }
    }
}

/// Cheap to clone: the collectors are reference-counted.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// One counter per [`Outcome`], resolved once: no label lookup per request.
    requests: [IntCounter; 8],
    logins: IntCounterVec,
    redis_duration: Histogram,
    redis_errors: IntCounter,
    pub cache: CacheMetrics,
    config_reloads: IntCounterVec,
}

/// The validation cache's counters.
#[derive(Clone)]
pub struct CacheMetrics {
    pub hits: IntCounter,
    pub misses: IntCounter,
    pub invalidations: IntCounter,
    pub flushes: IntCounter,
    pub entries: IntGauge,
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric definition: {e}"))
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("gateway_requests_total", "Requests by what the gateway did"),
            &["outcome"],
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        let logins = IntCounterVec::new(
            Opts::new("gateway_logins_total", "Login attempts by result"),
            &["result"],
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        let redis_duration = Histogram::with_opts(
            HistogramOpts::new("gateway_redis_duration_seconds", "Redis call latency").buckets(
                vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0,
                ],
            ),
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        let redis_errors = IntCounter::new(
            "gateway_redis_errors_total",
            "Redis calls that failed or timed out",
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        let cache_results = IntCounterVec::new(
            Opts::new(
                "gateway_session_cache_total",
                "Session checks by where they were answered",
            ),
            &["result"],
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        let cache = CacheMetrics {
            hits: cache_results.with_label_values(&["hit"]),
            misses: cache_results.with_label_values(&["miss"]),
            invalidations: counter(
                "gateway_session_cache_invalidations_total",
                "Cached sessions dropped because Redis said they changed",
            ),
            flushes: counter(
                "gateway_session_cache_flushes_total",
                "Whole-cache flushes: invalidation tracking lost or re-established",
            ),
            entries: IntGauge::new("gateway_session_cache_entries", "Cached sessions held now")
                .unwrap_or_else(|e| panic!("metric definition: {e}")),
        };
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "gateway_config_reloads_total",
                "Reloads on SIGHUP by result",
            ),
            &["result"],
        )
        .unwrap_or_else(|e| panic!("metric definition: {e}"));
        // Both series exist from the start, so a first failure shows as a change from 0.
        for result in ["ok", "failed"] {
            config_reloads.with_label_values(&[result]);
        }
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(config_reloads.clone()),
            Box::new(logins.clone()),
            Box::new(redis_duration.clone()),
            Box::new(redis_errors.clone()),
            Box::new(cache_results),
            Box::new(cache.invalidations.clone()),
            Box::new(cache.flushes.clone()),
            Box::new(cache.entries.clone()),
        ] {
            registry
                .register(c)
                .unwrap_or_else(|e| panic!("metric registration: {e}"));
        }
        let requests = Outcome::ALL.map(|o| requests.with_label_values(&[o.label()]));
        Metrics {
            registry,
            requests,
            logins,
            redis_duration,
            redis_errors,
            cache,
            config_reloads,
        }
    }

    pub fn request(&self, outcome: Outcome) {
        self.requests[outcome as usize].inc();
    }

    pub fn login(&self, result: &str) {
        self.logins.with_label_values(&[result]).inc();
    }

    pub fn observe_redis(&self, took: Duration, ok: bool) {
        self.redis_duration.observe(took.as_secs_f64());
        if !ok {
            self.redis_errors.inc();
        }
    }

    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.config_reloads.with_label_values(&[result]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_counts_under_its_own_label() {
        let m = Metrics::new();
        m.request(Outcome::Proxied);
        m.request(Outcome::Proxied);
        m.request(Outcome::UpstreamError);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains("gateway_requests_total{outcome=\"proxied\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("gateway_requests_total{outcome=\"upstream_error\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("gateway_requests_total{outcome=\"public\"} 0"),
            "{text}"
        );
    }
}
